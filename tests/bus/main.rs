//! The event bus, against the real RabbitMQ and PostgreSQL on this machine. Every test has an
//! exchange of its own, so tests never see each other's messages.

use credential_ledger_test_support::app as helpers;
use credential_ledger_test_support::backend::TestDb;
use credential_ledger_test_support::bus as bus_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use credential_ledger::bus::Relay;
use credential_ledger::startup::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use bus_support::{deduplicated_positions, TestBus};
use helpers::{spawn_app, spawn_app_with, test_settings, wait_until, ChildGuard};

const WAIT: Duration = Duration::from_secs(20);

async fn every_event_is_published_once_in_log_order_with_the_documented_contract(db: TestDb) {
    let mut bus = TestBus::new().await;
    let app = spawn_app_with(&db, Settings { relay: Some(bus.relay_settings()), ..test_settings() }).await;
    let key = app.tenant.key.clone();
    let created = app.create_api_key(&key, "Rotated").await;
    let rotated = app.regenerate(&key, created["uuid"].as_str().unwrap()).await;
    let rotated = rotated.data().clone();
    let revoked = app.revoke(&key, rotated["new_uuid"].as_str().unwrap()).await;
    assert_eq!(revoked.status, StatusCode::OK);
    let keys = [key.clone(), created["key"].as_str().unwrap().to_owned(), rotated["key"].as_str().unwrap().to_owned()];

    let messages = bus.take(5, WAIT).await;
    let summary: Vec<(i64, &str, &str)> =
        messages.iter().map(|m| (m.position(), m.routing_key.as_str(), m.kind.as_str())).collect();
    assert_eq!(
        summary,
        [
            (1, "credential.created", "CredentialCreated"),
            (2, "credential.created", "CredentialCreated"),
            (3, "credential.created", "CredentialCreated"),
            (4, "credential.locked", "CredentialLocked"),
            (5, "credential.locked", "CredentialLocked"),
        ]
    );

    let stored: Vec<(i64, uuid::Uuid, uuid::Uuid, i32)> =
        sqlx::query_as("SELECT position, event_id, stream_id, stream_version FROM events ORDER BY position")
            .fetch_all(app.pg_pool())
            .await
            .unwrap();
    for (message, (position, event_id, stream_id, stream_version)) in messages.iter().zip(&stored) {
        assert_eq!(message.message_id, event_id.to_string());
        assert_eq!(message.content_type, "application/json");
        assert!(message.persistent);
        assert!(message.timestamp.is_some());
        assert_eq!(message.position_header, Some(*position));
        assert_eq!(message.server_uuid_header.as_deref(), Some(app.tenant.server_uuid.to_string().as_str()));
        let body = &message.body;
        let mut fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, bus_support::MESSAGE_BODY_FIELDS);
        assert_eq!((body["schema_version"].clone(), message.schema_version_header), (json!(1), Some(1)));
        assert_eq!(body["event_id"], json!(event_id));
        assert_eq!(body["stream_id"], json!(stream_id));
        assert_eq!(body["stream_version"], json!(stream_version));
        assert_eq!(body["server_uuid"], json!(app.tenant.server_uuid));
        for issued in &keys {
            assert!(!message.raw.contains(&issued[4..]), "no key on the bus: {}", message.raw);
        }
    }
    // The rotation: the replacement's creation, then the old credential's lock.
    assert_eq!(messages[2].body["data"]["replaces"], created["uuid"]);
    assert_eq!(messages[3].body["stream_id"], created["uuid"]);
    assert_eq!(messages[3].body["data"], json!({"reason": "rotated", "replaced_by": rotated["new_uuid"]}));
    assert_eq!(messages[4].body["data"], json!({"reason": "revoked", "replaced_by": null}));

    assert!(bus.drain(Duration::from_millis(500)).await.is_empty(), "each event exactly once");
    let health: Value = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["data"]["relay"]["lag"], 0);
    assert_eq!(health["data"]["relay"]["relayed"], 5);
    assert_eq!(health["data"]["relay"]["leader"], true);
    bus.delete().await;
}

/// A grace rotation on the bus: the replacement's creation, the old credential's
/// `CredentialReplaced` (routing key `credential.replaced`), and at the deadline its version 2
/// lock with the deadline, within a second of it.
async fn a_grace_rotation_publishes_its_replacement_then_its_lock_at_the_deadline(db: TestDb) {
    let mut bus = TestBus::new().await;
    let app = spawn_app_with(&db, Settings { relay: Some(bus.relay_settings()), ..test_settings() }).await;
    let key = app.tenant.key.clone();
    let created = app.create_api_key(&key, "Rotated").await;
    let body = json!({"uuid": created["uuid"], "grace_period": 1});
    let rotated = app.post("/api/v1/credentials/regenerate", Some(&key), &body).await;
    let rotated = rotated.data().clone();
    let deadline: chrono::DateTime<chrono::Utc> = rotated["old_expires_at"].as_str().unwrap().parse().unwrap();

    let messages = bus.take(5, WAIT).await;
    let summary: Vec<(i64, &str, &str, Option<i32>)> = messages
        .iter()
        .map(|m| (m.position(), m.routing_key.as_str(), m.kind.as_str(), m.schema_version_header))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "credential.created", "CredentialCreated", Some(1)),
            (2, "credential.created", "CredentialCreated", Some(1)),
            (3, "credential.created", "CredentialCreated", Some(1)),
            (4, "credential.replaced", "CredentialReplaced", Some(1)),
            (5, "credential.locked", "CredentialLocked", Some(2)),
        ]
    );
    assert_eq!(messages[2].body["data"]["replaces"], created["uuid"]);
    assert_eq!(messages[3].body["stream_id"], created["uuid"]);
    assert_eq!(
        messages[3].body["data"],
        json!({"replaced_by": rotated["new_uuid"], "locks_at": rotated["old_expires_at"]})
    );
    let lock = &messages[4];
    assert_eq!(lock.body["stream_id"], created["uuid"]);
    assert_eq!(lock.body["schema_version"], 2);
    assert_eq!(
        lock.body["data"],
        json!({"reason": "rotated", "replaced_by": rotated["new_uuid"], "deadline": rotated["old_expires_at"]})
    );
    let received: chrono::DateTime<chrono::Utc> = lock.received_at.into();
    assert!(
        received - deadline < chrono::Duration::seconds(1),
        "on the bus {} after the deadline",
        received - deadline
    );
    assert!(bus.drain(Duration::from_millis(1500)).await.is_empty(), "one lock");
    bus.delete().await;
}

async fn of_two_relays_one_publishes_and_the_other_takes_over_without_gaps(db: TestDb) {
    let pool = db.pg_pool().await;
    let mut bus = TestBus::new().await;
    let app = spawn_app(&db).await;
    let (stop_first, stop_second) = (CancellationToken::new(), CancellationToken::new());
    let first = Relay::new(pool.clone(), bus.relay_settings());
    let second = Relay::new(pool.clone(), bus.relay_settings());
    let (first_status, second_status) = (first.status(), second.status());
    let first_task = tokio::spawn(first.run(stop_first.clone()));
    wait_until("the first relay to lead", WAIT, || std::future::ready(first_status.snapshot().leader.then_some(())))
        .await;
    let second_task = tokio::spawn(second.run(stop_second.clone()));

    for i in 0..5 {
        app.create(&app.tenant.key, json!({"name": format!("before {i}")})).await;
    }
    let mut received = bus.take(6, WAIT).await;
    let (a, b) = (first_status.snapshot(), second_status.snapshot());
    assert!(a.leader ^ b.leader, "exactly one leader: {a:?} {b:?}");
    let (leader_stop, leader_task, standby_status) =
        if a.leader { (stop_first, first_task, second_status) } else { (stop_second, second_task, first_status) };
    assert_eq!(standby_status.snapshot().published, 0, "the standby publishes nothing");

    leader_stop.cancel();
    leader_task.await.unwrap();
    for i in 0..5 {
        app.create(&app.tenant.key, json!({"name": format!("after {i}")})).await;
    }
    received.extend(bus.take(5, WAIT).await);
    assert!(standby_status.snapshot().leader, "the standby took over");
    let positions: Vec<i64> = received.iter().map(|m| m.position()).collect();
    assert_eq!(positions, (1..=11).collect::<Vec<_>>(), "in order, without gaps or repeats");
    assert!(bus.drain(Duration::from_millis(300)).await.is_empty());
    bus.delete().await;
}

async fn checkpoint(pool: &PgPool, bus: &TestBus) -> Option<i64> {
    sqlx::query_scalar("SELECT position FROM relay_checkpoints WHERE exchange = $1")
        .bind(&bus.exchange)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Runs `credential-ledger relay` against the test's database and exchange.
fn relay_process(database_url: &str, bus: &TestBus) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_credential-ledger"))
        .arg("relay")
        .env("DATABASE_URL", database_url)
        .env("AMQP_URL", bus_support::amqp_url())
        .env("AMQP_EXCHANGE", &bus.exchange)
        .env("RELAY_MAX_BACKOFF_MS", "200")
        .env("RELAY_NO_WEBHOOK_QUEUE", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the relay starts");
    ChildGuard(child)
}

async fn a_relay_killed_before_its_checkpoint_repeats_only_unconfirmed_messages(db: TestDb) {
    let pool = db.pg_pool().await;
    let mut bus = TestBus::new().await;
    let app = spawn_app(&db).await;
    let url = db.url().to_owned();
    let mut relay = relay_process(&url, &bus);
    for i in 0..4 {
        app.create(&app.tenant.key, json!({"name": format!("confirmed {i}")})).await;
    }
    let mut received = bus.take(5, WAIT).await;
    wait_until("the checkpoint to reach 5", WAIT, || async {
        (checkpoint(&pool, &bus).await == Some(5)).then_some(())
    })
    .await;

    // Hold the checkpoint row: the relay publishes, gets its confirms, then waits to checkpoint.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT position FROM relay_checkpoints WHERE exchange = $1 FOR UPDATE")
        .bind(&bus.exchange)
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    for i in 0..4 {
        app.create(&app.tenant.key, json!({"name": format!("unconfirmed {i}")})).await;
    }
    // What it managed to publish before it blocked on the checkpoint (it publishes in order and
    // does not go on past an unsaved checkpoint).
    let during_block = bus.drain(Duration::from_millis(500)).await;
    let unconfirmed: Vec<i64> = during_block.iter().map(|m| m.position()).collect();
    assert!(!unconfirmed.is_empty() && unconfirmed[0] == 6, "{unconfirmed:?}");
    received.extend(during_block);

    // Crash: the process dies, and so does its session (with the checkpoint update it was in).
    relay.kill();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'credential-ledger-relay' AND datname = current_database()",
    )
    .execute(&mut *blocker)
    .await
    .unwrap();
    blocker.rollback().await.unwrap();
    assert_eq!(checkpoint(&pool, &bus).await, Some(5), "the checkpoint never moved past the crash");

    let mut relay = relay_process(&url, &bus);
    for i in 0..3 {
        app.create(&app.tenant.key, json!({"name": format!("after {i}")})).await;
    }
    let mut after_restart = bus.take(7, WAIT).await;
    after_restart.extend(bus.drain(Duration::from_millis(500)).await);
    relay.kill();

    let positions: Vec<i64> = after_restart.iter().map(|m| m.position()).collect();
    assert_eq!(positions, (6..=12).collect::<Vec<_>>(), "the new leader resumes at the checkpoint, in order");
    received.extend(after_restart);
    let repeats = received.len() - deduplicated_positions(&received).len();
    assert_eq!(repeats, unconfirmed.len(), "only the messages published after the checkpoint repeat");
    assert_eq!(deduplicated_positions(&received), (1..=12).collect::<Vec<_>>(), "each event exactly once");
    bus.delete().await;
}

async fn events_tail_prints_each_message_as_one_json_line(db: TestDb) {
    let mut bus = TestBus::new().await;
    let app = spawn_app_with(&db, Settings { relay: Some(bus.relay_settings()), ..test_settings() }).await;
    bus.take(1, WAIT).await;

    let mut tail = Command::new(env!("CARGO_BIN_EXE_credential-ledger"))
        .args(["events", "tail", "--limit", "2", "--binding-key", "credential.*"])
        .env("AMQP_URL", bus_support::amqp_url())
        .env("AMQP_EXCHANGE", &bus.exchange)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(tail.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("tailing") {
        line.clear();
    }
    assert!(line.contains("tailing"), "the tail says when it is bound");

    let created = app.create_api_key(&app.tenant.key, "Watched").await;
    app.revoke(&app.tenant.key, created["uuid"].as_str().unwrap()).await;
    let pid = tail.id();
    let waiting = tokio::task::spawn_blocking(move || tail.wait_with_output().unwrap());
    let Ok(output) = tokio::time::timeout(WAIT, waiting).await else {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("the tail did not print two messages");
    };
    let output = output.unwrap();
    assert!(output.status.success());
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["routing_key"], "credential.created");
    assert_eq!(lines[0]["type"], "CredentialCreated");
    assert_eq!(lines[0]["body"]["stream_id"], created["uuid"]);
    assert_eq!(lines[1]["routing_key"], "credential.locked");
    assert_eq!(lines[1]["headers"]["position"], 3);
    assert_eq!(lines[1]["body"]["data"]["reason"], "revoked");
    bus.delete().await;
}

credential_ledger_test_support::on_postgres_and_rabbitmq!(
    every_event_is_published_once_in_log_order_with_the_documented_contract,
    a_grace_rotation_publishes_its_replacement_then_its_lock_at_the_deadline,
    of_two_relays_one_publishes_and_the_other_takes_over_without_gaps,
    a_relay_killed_before_its_checkpoint_repeats_only_unconfirmed_messages,
    events_tail_prints_each_message_as_one_json_line,
);
