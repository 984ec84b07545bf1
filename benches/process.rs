//! mproc-process benches; Python counterparts in `python/process.py`.
//! Spawned children are this bench binary re-executed: the constructor runs
//! the target before criterion's `main` ever starts.

use criterion::{criterion_group, criterion_main, Criterion};
use mproc::{Process, StartMethod};

fn empty(_: ()) {}

fn start_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("process");
    g.sample_size(20);
    // The floor: fork, _exit and waitpid of this same process, no mproc.
    // First, while this process has one thread: once a forkserver start
    // has run, its client's thread makes every fork of this process slower
    // (about 230 -> 330 us on a 2-core VM), and the floor would no longer
    // match `start_join_fork`, which runs before it too.
    g.bench_function("raw_fork_exit_wait", |b| {
        b.iter(|| {
            // SAFETY: the child only calls _exit; the parent reaps its own
            // child by pid.
            unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(0);
                }
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            }
        })
    });
    // The fork benches before the others, for the same reason.
    start_join_one(&mut g, "fork", StartMethod::Fork);
    g.bench_function("start_join_100_fork", |b| {
        b.iter(|| {
            let mut kids: Vec<Process> = (0..100)
                .map(|_| Process::new(empty, ()).start_method(StartMethod::Fork))
                .collect();
            for k in &mut kids {
                k.start().unwrap();
            }
            for k in &kids {
                k.join().unwrap();
            }
        })
    });
    start_join_one(&mut g, "forkserver", StartMethod::Forkserver);
    start_join_one(&mut g, "spawn", StartMethod::Spawn);
    g.finish();
}

fn start_join_one(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    method: StartMethod,
) {
    g.bench_function(format!("start_join_{name}"), |b| {
        b.iter(|| {
            let mut p = Process::new(empty, ()).start_method(method);
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        })
    });
}

criterion_group!(benches, start_join);
criterion_main!(benches);
