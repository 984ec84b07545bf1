//! The pool's backend seam, proved from outside the crate: a backend that
//! runs jobs on threads of this process, written against the public
//! `Backend` trait only, gives the same results as the local pool — for
//! same-build jobs and for named tasks (what a backend for other machines
//! runs).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mproc::pool::{run_job, Backend, Calls, Event, Events, Job, Pool, PoolError, TaskError};
use mproc_call::{task, Registry};
use mproc_tests::LeakCheck;

/// Jobs on `n` threads; `calls` says which kind.
struct Threads {
    n: usize,
    calls: Calls,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    fn new(n: usize, calls: Calls) -> Threads {
        let (tx, rx) = mpsc::channel();
        Threads {
            n,
            calls,
            tx: Mutex::new(Some(tx)),
            rx: Arc::new(Mutex::new(rx)),
            threads: Mutex::new(Vec::new()),
        }
    }
}

impl Backend for Threads {
    fn calls(&self) -> Calls {
        self.calls.clone()
    }

    fn parallelism(&self) -> usize {
        self.n
    }

    fn start(&self, events: Arc<dyn Events>) -> Result<(), String> {
        let registry = match &self.calls {
            Calls::Named(r) => Some(r.clone()),
            Calls::SameBuild => None,
        };
        for _ in 0..self.n {
            let (rx, events, registry) = (self.rx.clone(), events.clone(), registry.clone());
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::spawn(move || loop {
                    let job = match rx.lock().unwrap().recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    events.event(match run_job(&job.work, registry.as_ref()) {
                        Ok(output) => Event::Done {
                            job: job.id,
                            output,
                        },
                        Err(error) => Event::Failed { job: job.id, error },
                    });
                }));
        }
        Ok(())
    }

    fn submit(&self, job: Job) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(job);
        }
    }

    fn close(&self) {
        self.tx.lock().unwrap().take();
    }

    fn terminate(&self) {
        self.tx.lock().unwrap().take();
    }

    fn join(&self) {
        self.tx.lock().unwrap().take();
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn boom(x: u64) -> u64 {
    assert_ne!(x, 3, "three");
    x
}

fn cube(x: u64) -> u64 {
    x * x * x
}

fn tasks() -> Registry {
    Registry::new()
        .with(task!(square))
        .with(task!(add))
        .with(task!(boom))
}

fn same_results_as_the_local_pool(pool: &Pool) {
    let local = Pool::new(2).unwrap();
    assert_eq!(
        pool.map(square, 0..100).unwrap(),
        local.map(square, 0..100).unwrap()
    );
    let pairs: Vec<(u64, u64)> = (0..50).map(|i| (i, 2 * i)).collect();
    assert_eq!(
        pool.starmap(add, pairs.clone()).unwrap(),
        local.starmap(add, pairs).unwrap()
    );
    let ordered: Vec<u64> = pool.imap(square, 0..40).map(Result::unwrap).collect();
    assert_eq!(ordered, (0..40).map(square).collect::<Vec<_>>());
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..40)
        .map(Result::unwrap)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, ordered);
    let (tx, rx) = mpsc::channel();
    pool.apply_async_with(add, (40, 2), move |r| tx.send(*r).unwrap(), |_| {})
        .unwrap();
    assert_eq!(rx.recv().unwrap(), 42);
    match pool.apply(boom, 3) {
        Err(PoolError::Task(TaskError::Panicked { message })) => assert!(message.contains("three")),
        other => panic!("expected the task's panic, got {other:?}"),
    }
    pool.close();
    pool.join().unwrap();
    assert_eq!(pool.apply(square, 2), Err(PoolError::Closed));
}

#[test]
fn a_thread_backend_of_same_build_jobs_gives_the_local_pools_results() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder()
            .backend(Threads::new(3, Calls::SameBuild))
            .build()
            .unwrap();
        same_results_as_the_local_pool(&pool);
    }
    leaks.assert_clean();
}

#[test]
fn a_thread_backend_of_named_tasks_gives_the_same_results_and_runs_nothing_unregistered() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder()
            .backend(Threads::new(2, Calls::Named(tasks())))
            .build()
            .unwrap();
        assert!(matches!(
            pool.apply(cube, 2),
            Err(PoolError::NotRegistered(name)) if name.ends_with("cube")
        ));
        same_results_as_the_local_pool(&pool);
    }
    leaks.assert_clean();
}
