//! Keys are secrets: refused wherever they are not valid, and never written anywhere but the
//! one response that hands them out: not in logs, the database, the bus or webhooks.
//! This binary captures every log line it produces (debug level, trace for our own code).

use credential_ledger_test_support::app as helpers;
use credential_ledger_test_support::backend::TestDb;
use credential_ledger_test_support::bus as bus_support;
use credential_ledger_test_support::receiver;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use credential_ledger::bus::RelaySettings;
use credential_ledger::domain::ApiKey;
use credential_ledger::startup::Settings;
use credential_ledger::webhooks::WebhookSettings;
use reqwest::StatusCode;
use serde_json::{json, Value};

use bus_support::TestBus;
use credential_ledger::store::{DatabaseSettings, Store};
use credential_ledger_test_support::proxy::{Mode, Proxy};
use helpers::{spawn_app_on, spawn_app_with, test_settings, TestApp};
use receiver::Receiver;

/// Every log line of this test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,credential_ledger=trace,tower_http=trace")
            .with_writer(move || CapturedWriter(sink.clone()))
            .json()
            .init();
        logs
    })
    .clone()
}

struct CapturedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn settings(bus: &TestBus) -> Settings {
    Settings {
        relay: Some(RelaySettings { declare_webhook_queue: true, ..bus.relay_settings() }),
        webhooks: WebhookSettings {
            retry_schedule: vec![Duration::from_millis(100)],
            allow_private: true,
            ..WebhookSettings::new(Some(bus.settings()))
        },
        run_webhook_worker: true,
        ..test_settings()
    }
}

async fn teardown(mut app: TestApp, bus: TestBus) {
    app.stop().await;
    let topology = WebhookSettings {
        retry_schedule: vec![Duration::from_millis(100)],
        ..WebhookSettings::new(Some(bus.settings()))
    }
    .topology();
    let mut queues = topology.retry_queues.clone();
    queues.extend([topology.work_queue.clone(), topology.dead_letter_queue.clone()]);
    bus.delete_queues(&queues).await;
    bus.delete().await;
}

const AUTHENTICATED: [&str; 12] = [
    "/api/v1/credentials/list",
    "/api/v1/credentials/create",
    "/api/v1/credentials/regenerate",
    "/api/v1/credentials/revoke",
    "/api/v1/credentials/history",
    "/api/v1/events/list",
    "/api/v1/events/head",
    "/api/v1/webhooks/create",
    "/api/v1/webhooks/list",
    "/api/v1/webhooks/delete",
    "/api/v1/webhooks/deliveries",
    "/api/v1/webhooks/retry",
];

/// A body each endpoint would accept from a valid key.
fn body_for(path: &str, uuid: &str) -> Value {
    match path {
        "/api/v1/credentials/create" => json!({"name": "x"}),
        "/api/v1/webhooks/create" => json!({"url": "http://127.0.0.1:9/hook"}),
        "/api/v1/webhooks/retry" => json!({"id": 1}),
        "/api/v1/credentials/list"
        | "/api/v1/events/list"
        | "/api/v1/events/head"
        | "/api/v1/webhooks/list"
        | "/api/v1/webhooks/deliveries" => {
            json!({})
        }
        _ => json!({ "uuid": uuid }),
    }
}

async fn held_rotated_smtp_foreign_and_malformed_keys_are_refused_everywhere(db: TestDb) {
    captured_logs();
    let bus = TestBus::new().await;
    let app = spawn_app_with(&db, settings(&bus)).await;
    let key = app.tenant.key.clone();
    let revoked = app.create_api_key(&key, "Revoked").await;
    app.revoke(&key, revoked["uuid"].as_str().unwrap()).await;
    let rotated = app.create_api_key(&key, "Rotated").await;
    app.regenerate(&key, rotated["uuid"].as_str().unwrap()).await;
    let smtp = app.create(&key, json!({"name": "Relay", "type": "SMTP"})).await;
    let target = app.create_api_key(&key, "Target").await;
    let target_uuid = target["uuid"].as_str().unwrap();
    let flipped = {
        let mut flipped = key.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        flipped
    };
    let refused_keys = [
        ("held", revoked["key"].as_str().unwrap().to_owned()),
        ("rotated away", rotated["key"].as_str().unwrap().to_owned()),
        ("SMTP", smtp.data()["key"].as_str().unwrap().to_owned()),
        ("malformed", "vml_short".to_owned()),
        ("bad checksum", flipped),
        ("never issued", ApiKey::generate(&mut rand::rngs::OsRng).expose_secret().to_owned()),
    ];
    let head = app.log_head().await;
    let mut failures = Vec::new();
    for path in AUTHENTICATED {
        for (kind, refused) in &refused_keys {
            let answer = app.post(path, Some(refused), &body_for(path, target_uuid)).await;
            if answer.status != StatusCode::UNAUTHORIZED || answer.error_code() != "invalid_api_key" {
                failures.push(format!("{path} with a {kind} key: {} {}", answer.status, answer.body));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.log_head().await, head, "no refused request appended anything");

    // Another server's valid key: our credentials do not exist for it.
    let other = app.new_tenant("Other").await;
    for path in ["/api/v1/credentials/regenerate", "/api/v1/credentials/revoke", "/api/v1/credentials/history"] {
        let answer = app.post(path, Some(&other.key), &json!({ "uuid": target_uuid })).await;
        assert_eq!((answer.status, answer.error_code()), (StatusCode::NOT_FOUND, "credential_not_found"), "{path}");
    }
    let theirs = app.list(&other.key).await;
    assert!(!theirs.body.to_string().contains(target_uuid));
    let events = app.post("/api/v1/events/list", Some(&other.key), &json!({})).await;
    assert!(!events.body.to_string().contains(target_uuid), "another server's events are not listed");
    assert_eq!(app.log_head().await.0, head.0 + 1, "only the other server's provisioning was appended");
    teardown(app, bus).await;
}

async fn no_key_reaches_the_logs_the_database_the_bus_or_a_webhook(db: TestDb) {
    let logs = captured_logs();
    let mut bus = TestBus::new().await;
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, settings(&bus)).await;
    let key = app.tenant.key.clone();
    let mut keys = vec![key.clone()];
    let hook = app.post("/api/v1/webhooks/create", Some(&key), &json!({"url": receiver.url("audit")})).await;
    let secret = hook.data()["secret"].as_str().unwrap().to_owned();

    let created = app.create_api_key(&key, "Rotated").await;
    keys.push(created["key"].as_str().unwrap().to_owned());
    let rotation = app.regenerate(&key, created["uuid"].as_str().unwrap()).await;
    keys.push(rotation.data()["key"].as_str().unwrap().to_owned());
    let smtp = app.create(&key, json!({"name": "Relay", "type": "SMTP"})).await;
    keys.push(smtp.data()["key"].as_str().unwrap().to_owned());
    app.revoke(&keys[2], smtp.data()["uuid"].as_str().unwrap()).await;
    // Keys where they do not belong: in a field, a field name, a request id, a wrong header.
    app.create(&key, json!({"name": keys[1], "hold": keys[2]})).await;
    app.post("/api/v1/credentials/create", Some(&key), &json!({ keys[3].clone(): 1 })).await;
    let _ = app
        .client
        .post(format!("{}/api/v1/credentials/list", app.address))
        .header("X-Server-API-Key", &key)
        .header("X-Request-Id", format!("req-{}", keys[1]))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    app.list(&format!("{}x", keys[0])).await;
    // In the path, and as a whole, valid name: the first is logged redacted, the second refused.
    let in_path = app.post(&format!("/api/v1/{}", keys[1]), Some(&key), &json!({})).await;
    assert_eq!(in_path.error_code(), "not_found");
    let as_name = app.create(&key, json!({ "name": format!("copied {}", keys[1]) })).await;
    assert_eq!((as_name.status, as_name.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"));

    receiver.wait_for("audit", 2, Duration::from_secs(20)).await;
    let messages = bus.take(6, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let secret_parts: Vec<&str> = keys.iter().map(|key| &key[4..]).collect();
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("finished processing request"), "the requests were logged");
    // Each request line: its latency as a number of milliseconds, and the client's address.
    let finished: Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "finished processing request")
        .expect("a request line");
    assert!(finished["fields"]["latency_ms"].is_f64(), "{finished}");
    assert_eq!(finished["span"]["client"], "127.0.0.1", "{finished}");
    let refusal_lines = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["status"] == 404 && line["fields"]["code"] == "not_found")
        .count();
    assert_eq!(refusal_lines, 1, "the refusal's request line carries its code");
    assert!(logs.contains("/api/v1/vml_[redacted]"), "the path with a key in it was logged, redacted");
    for part in &secret_parts {
        assert!(!logs.contains(part), "a key is in the logs");
    }
    assert!(!logs.contains(&secret[6..]), "a webhook secret is in the logs");
    for message in &messages {
        assert!(!secret_parts.iter().any(|part| message.raw.contains(part)), "a key is on the bus: {}", message.raw);
    }
    for hook in receiver.received("audit") {
        let body = String::from_utf8_lossy(&hook.body);
        assert!(!secret_parts.iter().any(|part| body.contains(part)), "a key is in a webhook: {body}");
    }
    let dump = std::process::Command::new("pg_dump").arg("--dbname").arg(db.url()).output().unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("webhook_attempts"), "the dump is whole");
    for part in &secret_parts {
        assert!(!dump.contains(part), "a key is in the database");
    }
    teardown(app, bus).await;
}

/// A request the database cannot serve is one log line: its 503, with the refusal's code and
/// the cause, at WARN; nothing else at WARN or above carries its request id.
#[tokio::test]
async fn a_database_outage_is_one_log_line_per_request_with_its_cause() {
    let Some(db) = TestDb::postgres().await else {
        return credential_ledger_test_support::backend::skip_without_postgres();
    };
    let logs = captured_logs();
    let upstream = url::Url::parse(db.url()).unwrap();
    let proxy = Proxy::start(format!("127.0.0.1:{}", upstream.port().unwrap_or(5432)).parse().unwrap()).await;
    let mut proxied = upstream.clone();
    proxied.set_port(Some(proxy.port())).unwrap();
    let timeout = Duration::from_secs(1);
    let settings = DatabaseSettings {
        url: proxied.to_string(),
        max_connections: 4,
        acquire_timeout: timeout,
        query_timeout: timeout,
    };
    let app = spawn_app_on(
        &db,
        Store::open(&settings).await.unwrap(),
        Settings { query_timeout: timeout, ..test_settings() },
    )
    .await;
    proxy.set_mode(Mode::Refuse);

    let request_id = format!("outage-{}", uuid::Uuid::new_v4());
    let answer = app
        .client
        .post(format!("{}/api/v1/credentials/create", app.address))
        .header("X-Server-API-Key", &app.tenant.key)
        .header("X-Request-Id", &request_id)
        .json(&json!({"name": "During the outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == "WARN" || line["level"] == "ERROR")
        .filter(|line| line.to_string().contains(&request_id))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let fields = &lines[0]["fields"];
    assert_eq!((fields["status"].as_u64(), lines[0]["level"].as_str()), (Some(503), Some("WARN")), "{fields}");
    assert!(fields["code"].is_string() && fields["cause"].is_string(), "{fields}");
    proxy.set_mode(Mode::Pass);
}

credential_ledger_test_support::on_postgres_and_rabbitmq!(
    held_rotated_smtp_foreign_and_malformed_keys_are_refused_everywhere,
    no_key_reaches_the_logs_the_database_the_bus_or_a_webhook,
);
