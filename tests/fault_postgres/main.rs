//! PostgreSQL restarted under a steady write load. This binary runs alone (cargo runs test
//! binaries one after another) and always leaves PostgreSQL running, even when it fails.

use credential_ledger_test_support::app as helpers;
use credential_ledger_test_support::backend::TestDb;
use credential_ledger_test_support::load;

use std::process::Command;
use std::time::{Duration, Instant};

use credential_ledger::store::{self, DatabaseSettings, Store};

use helpers::{spawn_app_on, test_settings};
use load::{assert_acknowledged_writes_are_in_the_log, assert_view_equals_a_rebuild, Load};

fn cluster_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "15".to_owned())
}

fn pg_ctlcluster(action: &str) -> bool {
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &cluster_version(), "main", action])
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// Makes sure PostgreSQL runs again when the test ends, however it ends.
struct RunningAfterwards;

impl Drop for RunningAfterwards {
    fn drop(&mut self) {
        for _ in 0..30 {
            let ready = Command::new("pg_isready").args(["-h", "127.0.0.1", "-q"]).status();
            if ready.map(|status| status.success()).unwrap_or(false) {
                return;
            }
            pg_ctlcluster("start");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

async fn writes_fail_fast_during_a_restart_and_recover_without_restarting_the_service(db: TestDb) {
    let _running_afterwards = RunningAfterwards;
    let settings = DatabaseSettings {
        url: db.url().to_owned(),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(1),
        query_timeout: store::DEFAULT_QUERY_TIMEOUT,
    };
    let service = Store::open(&settings).await.unwrap();
    let mut app = spawn_app_on(&db, service.clone(), test_settings()).await;
    let load = Load::start(app.address.clone(), app.tenant.key.clone());

    load.wait_for_acknowledged(50, Duration::from_secs(10)).await;
    // A restart with a gap long enough for the load to meet the outage.
    let restart_began = Instant::now();
    assert!(tokio::task::spawn_blocking(|| pg_ctlcluster("stop")).await.unwrap(), "pg_ctlcluster stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(tokio::task::spawn_blocking(|| pg_ctlcluster("start")).await.unwrap(), "pg_ctlcluster start");
    let back_up = Instant::now();
    load.wait_for_acknowledged(200, Duration::from_secs(30)).await;
    let seen = load.stop().await;

    let failures: Vec<_> = seen.outcomes.iter().filter(|o| o.status != Some(200)).collect();
    for failure in &failures {
        assert_eq!(failure.status, Some(503), "a failure is a 503: {failure:?}");
        let code = failure.body["data"]["code"].as_str().unwrap_or_default();
        assert!(matches!(code, "service_unavailable" | "request_timeout"), "{failure:?}");
        // The pool's acquire timeout bounds a failure.
        assert!(failure.elapsed < Duration::from_millis(2500), "failures are fast: {failure:?}");
    }
    assert!(failures.len() >= 2, "the load met the outage: {} failures", failures.len());
    let first_success_after = seen
        .outcomes
        .iter()
        .filter(|o| o.status == Some(200) && o.started >= back_up)
        .map(|o| o.started - back_up)
        .min()
        .expect("writes succeed again after the restart");
    assert!(first_success_after < Duration::from_secs(5), "recovered within {first_success_after:?}");
    let last = seen.outcomes.iter().rev().take(10).collect::<Vec<_>>();
    assert!(last.iter().all(|o| o.status == Some(200)), "the service is healthy again: {last:?}");
    let before_restart = seen.outcomes.iter().filter(|o| o.started < restart_began && o.status == Some(200)).count();
    assert!(before_restart > 0, "the load ran before the restart");

    assert_acknowledged_writes_are_in_the_log(&service, &seen).await;
    assert_view_equals_a_rebuild(&service).await;
    let slowest_failure = failures.iter().map(|o| o.elapsed).max().unwrap_or_default();
    println!(
        "{} requests, {} failed during the restart (slowest failure {slowest_failure:?}), first success {:?} after \
         PostgreSQL was back",
        seen.outcomes.len(),
        failures.len(),
        first_success_after
    );
    app.stop().await;
    service.close().await;
}

credential_ledger_test_support::on_postgres!(
    #[ignore = "a fault suite: restarts the machine's PostgreSQL; .ci/run runs it alone with --ignored"]
    writes_fail_fast_during_a_restart_and_recover_without_restarting_the_service,
);
