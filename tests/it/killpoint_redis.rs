//! Named points in the Redis client's own threads: a test holds a thread
//! there while the server changes under it, and checks that the pool still
//! answers every task. (Worker hosts are killed for real in `redis`.)

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use mproc::pool::{PoolError, TaskError};
use mproc::shm::fault;
use mproc_tests::redis::RedisServer;
use mproc_tests::LeakCheck;

use crate::redis::{waiting_squares, Cfg};

/// Held at its first look at the server, the keeper learns the server's run
/// only after Redis restarted without persistence: the tasks sent before
/// the restart must still fail as lost, not be waited for for ever. (The
/// keeper used to take the run of its first look as the pool's own, and
/// saw no restart.)
#[test]
fn a_restart_before_the_keepers_first_look_still_fails_the_lost_tasks() {
    let leaks = LeakCheck::start();
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    {
        let (go, held) = mpsc::channel::<()>();
        let held = Mutex::new(held);
        fault::on("redis.keeper-first-look", move || {
            // Released by the test, or by its end when it fails first.
            let _ = held.lock().map(|rx| rx.recv());
        })
        .unwrap();
        let cfg = Cfg::new(&server.url(), "late-look");
        let (pool, backend, pending) = waiting_squares(&cfg, 3);
        server.restart();
        go.send(()).unwrap();
        for p in pending {
            match p.get_timeout(Duration::from_secs(30)) {
                Err(PoolError::Task(TaskError::Lost { deliveries: 0, .. })) => {}
                other => panic!("expected the task lost, got {other:?}"),
            }
        }
        assert_eq!(backend.stats().lost, 3);
        fault::clear("redis.keeper-first-look");
        pool.close();
        pool.join().unwrap();
    }
    drop(server);
    leaks.assert_clean();
}
