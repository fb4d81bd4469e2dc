//! The service process stopped under a steady write load, twice: a rolling restart (SIGTERM,
//! then a new process) and a crash (SIGKILL, then a new process). Nothing acknowledged may be
//! lost, nothing may be half-written, and every committed event must reach the bus. On the
//! embedded ledger the same crash shows that a write acknowledged is a write on disk (WAL with
//! `synchronous=FULL`, committed before the answer).

use credential_ledger_test_support::app as helpers;
use credential_ledger_test_support::backend::TestDb;
use credential_ledger_test_support::bus as bus_support;
use credential_ledger_test_support::load;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use bus_support::{deduplicated_positions, TestBus};
use helpers::{run_ledger, wait_until};
use load::{assert_acknowledged_writes_are_in_the_log, assert_view_equals_a_rebuild, Acknowledged, Load};

struct Service {
    child: Child,
}

impl Service {
    /// `serve` on `database_url`, relaying to `bus` when there is one.
    fn start(database_url: &str, port: u16, bus: Option<&TestBus>) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_credential-ledger"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("NO_WEBHOOKS", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match bus {
            Some(bus) => command
                .env("AMQP_URL", bus_support::amqp_url())
                .env("AMQP_EXCHANGE", &bus.exchange)
                .env("RELAY_NO_WEBHOOK_QUEUE", "true"),
            None => command.env("NO_RELAY", "true"),
        };
        Service { child: command.spawn().expect("the service starts") }
    }

    async fn wait_ready(port: u16) {
        wait_until("the service to become ready", Duration::from_secs(30), || async {
            let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
            ready.is_ok_and(|response| response.status().is_success()).then_some(())
        })
        .await
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_until("the service to stop", Duration::from_secs(30), || std::future::ready(child.try_wait().unwrap()))
            .await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Provisions a tenant on `url`, runs a write load against `serve`, restarts it with SIGTERM and
/// crashes it with SIGKILL, each time starting a new process; returns the service still running
/// and what the load saw acknowledged.
async fn restart_and_crash_under_load(url: &str, bus: Option<&TestBus>) -> (Service, Acknowledged) {
    let provisioned = run_ledger(&["server", "create", "--name", "Load"], url);
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let key =
        serde_json::from_slice::<Value>(&provisioned.stdout).unwrap()["credential"]["key"].as_str().unwrap().to_owned();
    let port = free_port();
    let mut service = Service::start(url, port, bus);
    Service::wait_ready(port).await;
    let load = Load::start(format!("http://127.0.0.1:{port}"), key);

    // A rolling restart: SIGTERM finishes what is in flight, then a new process takes over.
    load.wait_for_acknowledged(100, Duration::from_secs(30)).await;
    service.signal("TERM");
    let stopped = service.wait_exit().await;
    assert!(stopped.success(), "a clean exit on SIGTERM: {stopped:?}");
    service = Service::start(url, port, bus);
    Service::wait_ready(port).await;

    // A crash: SIGKILL in the middle of the load.
    load.wait_for_acknowledged(100, Duration::from_secs(30)).await;
    service.signal("KILL");
    service.wait_exit().await;
    service = Service::start(url, port, bus);
    Service::wait_ready(port).await;
    load.wait_for_acknowledged(100, Duration::from_secs(30)).await;
    (service, load.stop().await)
}

/// What the log must hold after the restarts: every acknowledged write, whole, a view equal to
/// a rebuild, and a chain that verifies.
async fn assert_nothing_acknowledged_was_lost(db: &TestDb, seen: &Acknowledged) {
    let acknowledged = seen.outcomes.iter().filter(|o| o.status == Some(200)).count();
    assert!(acknowledged > 20 && seen.rotated.len() > 5, "the load ran: {acknowledged} acknowledged");
    let store = db.store().await;
    assert_acknowledged_writes_are_in_the_log(&store, seen).await;
    assert_view_equals_a_rebuild(&store).await;
    let verified = run_ledger(&["verify"], db.url());
    assert!(verified.status.success(), "the chain verifies: {}", String::from_utf8_lossy(&verified.stdout));
}

async fn nothing_acknowledged_is_lost_through_a_rolling_restart_and_a_crash(db: TestDb) {
    let pool = db.pg_pool().await;
    let mut bus = TestBus::new().await;
    let url = db.url().to_owned();
    let (mut service, seen) = restart_and_crash_under_load(&url, Some(&bus)).await;

    // Let the relay catch up, then stop the service for good.
    let head: i64 = sqlx::query_scalar("SELECT position FROM chain_head").fetch_one(&pool).await.unwrap();
    wait_until(&format!("the relay to catch up to {head}"), Duration::from_secs(30), || async {
        let relayed: Option<i64> = sqlx::query_scalar("SELECT position FROM relay_checkpoints WHERE exchange = $1")
            .bind(&bus.exchange)
            .fetch_optional(&pool)
            .await
            .unwrap();
        (relayed == Some(head)).then_some(())
    })
    .await;
    service.signal("TERM");
    service.wait_exit().await;
    drop(service);

    assert_nothing_acknowledged_was_lost(&db, &seen).await;
    let acknowledged = seen.outcomes.iter().filter(|o| o.status == Some(200)).count();
    let unanswered = seen.outcomes.iter().filter(|o| o.status.is_none()).count();

    let messages = bus.drain(Duration::from_secs(2)).await;
    assert_eq!(deduplicated_positions(&messages), (1..=head).collect::<Vec<_>>(), "every committed event on the bus");
    println!(
        "{} requests: {acknowledged} acknowledged, {unanswered} unanswered during restarts; {head} events, {} messages",
        seen.outcomes.len(),
        messages.len()
    );
    bus.delete().await;
}

credential_ledger_test_support::on_postgres_and_rabbitmq!(
    #[ignore = "a fault suite: kills service processes under load; .ci/run runs it alone with --ignored"]
    nothing_acknowledged_is_lost_through_a_rolling_restart_and_a_crash,
);

/// The embedded ledger through the same restart and crash: it needs no server, and kills only
/// processes of its own, so it runs with every `cargo test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_ledger_loses_nothing_acknowledged_through_a_restart_and_a_crash() {
    let db = TestDb::sqlite().await;
    let (mut service, seen) = restart_and_crash_under_load(db.url(), None).await;
    service.signal("TERM");
    service.wait_exit().await;
    drop(service);
    assert_nothing_acknowledged_was_lost(&db, &seen).await;
}

/// Every instance killed (SIGKILL) a second before a grace period ends, and started again after
/// it: the first to start appends the deadline's lock, once, recorded then and carrying the
/// deadline it enforces; the others find it held and append nothing.
async fn every_instance_killed_across_a_deadline_leaves_exactly_one_lock(db: TestDb) {
    let url = db.url().to_owned();
    let provisioned = run_ledger(&["server", "create", "--name", "Deadlines"], &url);
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let key =
        serde_json::from_slice::<Value>(&provisioned.stdout).unwrap()["credential"]["key"].as_str().unwrap().to_owned();
    let ports = [free_port(), free_port()];
    let mut services: Vec<Service> = ports.iter().map(|port| Service::start(&url, *port, None)).collect();
    for port in ports {
        Service::wait_ready(port).await;
    }
    let client = reqwest::Client::new();
    let post = |port: u16, path: &str, body: Value| {
        client
            .post(format!("http://127.0.0.1:{port}/api/v1/credentials/{path}"))
            .header("X-Server-API-Key", &key)
            .json(&body)
            .send()
    };
    let created: Value = post(ports[0], "create", serde_json::json!({"name": "Rotating", "type": "API"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = created["data"]["uuid"].as_str().unwrap().to_owned();
    let rotated: Value = post(ports[1], "regenerate", serde_json::json!({"uuid": uuid, "grace_period": 2}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deadline: chrono::DateTime<chrono::Utc> = rotated["data"]["old_expires_at"].as_str().unwrap().parse().unwrap();

    let until = |at: chrono::DateTime<chrono::Utc>| (at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until(deadline - chrono::Duration::seconds(1))).await;
    for service in &mut services {
        service.signal("KILL");
        service.wait_exit().await;
    }
    let store = db.store().await;
    let locks = |events: Vec<credential_ledger::domain::StoredEvent>| {
        events
            .into_iter()
            .filter(|event| event.stream_id.to_string() == uuid && event.event_type == "CredentialLocked")
            .collect::<Vec<_>>()
    };
    tokio::time::sleep(until(deadline + chrono::Duration::seconds(1))).await;
    assert!(locks(store.events_after(0, i64::MAX).await.unwrap()).is_empty(), "no instance ran at the deadline");

    let restarted_at = chrono::Utc::now();
    let services: Vec<Service> = ports.iter().map(|port| Service::start(&url, *port, None)).collect();
    for port in ports {
        Service::wait_ready(port).await;
    }
    let recorded = wait_until("the overdue lock", Duration::from_secs(10), || async {
        let recorded = locks(store.events_after(0, i64::MAX).await.unwrap());
        (!recorded.is_empty()).then_some(recorded)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let recorded_after = locks(store.events_after(0, i64::MAX).await.unwrap());
    assert_eq!(recorded_after.len(), 1, "two instances started, one lock");
    assert!(recorded[0].recorded_at >= restarted_at);
    let payload: Value = serde_json::from_str(&recorded[0].payload).unwrap();
    assert_eq!(payload["deadline"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap(), deadline);
    assert_eq!(payload["reason"], "rotated");
    drop(services);
    let verified = run_ledger(&["verify"], &url);
    assert!(verified.status.success(), "the chain verifies: {}", String::from_utf8_lossy(&verified.stdout));
}

// Kills only processes of its own: it runs with every `cargo test`.
credential_ledger_test_support::on_both_backends!(every_instance_killed_across_a_deadline_leaves_exactly_one_lock);
