//! Kill points of the Manager's server (`failpoints` feature): the server
//! SIGKILLs itself with a request read but not done, or done but not
//! answered, while several threads call it. Every caller gets `ServerGone`
//! within a bound; the owner reaps the server; nothing is left behind.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use mproc::manager::{Manager, ManagerError};
use mproc::process::DIE_AT_ENV;
use mproc::StartMethod;
use mproc_tests::{returns_within, LeakCheck};

#[test]
fn killpoint_manager_server_killed_mid_call_fails_every_caller() {
    let leaks = LeakCheck::start();
    for point in ["manager.request-read", "manager.applied"] {
        // A spawned server reads the variable at boot.
        std::env::set_var(DIE_AT_ENV, point);
        let m = Manager::builder().start_method(StartMethod::Spawn).start();
        std::env::remove_var(DIE_AT_ENV);
        let m = m.unwrap();
        let client = m.client().clone();
        let errors = returns_within(point, Duration::from_secs(20), move || {
            let go = Arc::new(Barrier::new(4));
            let callers: Vec<_> = (0..4)
                .map(|_| {
                    let (client, go) = (client.clone(), Arc::clone(&go));
                    std::thread::spawn(move || {
                        go.wait();
                        client.dict::<u8, u8>().map(|_| ()).unwrap_err()
                    })
                })
                .collect();
            callers
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        for e in &errors {
            assert!(matches!(e, ManagerError::ServerGone), "{point}: {e}");
        }
        let pid = m.pid().unwrap();
        assert!(
            matches!(m.shutdown(), Err(ManagerError::ServerGone)),
            "{point}"
        );
        assert!(
            !mproc_tests::is_running(pid),
            "{point}: the server was not reaped"
        );
    }
    leaks.assert_clean();
}
