//! Webhooks end to end: the real PostgreSQL, the real RabbitMQ, the service's relay and worker,
//! and a real HTTP receiver started by each test.

#[path = "../support/bus.rs"]
mod bus_support;
#[path = "../support/app.rs"]
mod helpers;
#[path = "../support/receiver.rs"]
mod receiver;

use std::time::Duration;

use credential_ledger::bus::RelaySettings;
use credential_ledger::startup::Settings;
use credential_ledger::webhooks::WebhookSettings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use bus_support::TestBus;
use helpers::{spawn_app_with, Answer, ChildGuard, TestApp};
use receiver::{Hook, Receiver};

const WAIT: Duration = Duration::from_secs(20);

fn settings(bus: &TestBus, schedule: &[Duration], allow_private: bool) -> Settings {
    Settings {
        relay: Some(RelaySettings { declare_webhook_queue: true, ..bus.relay_settings() }),
        webhooks: WebhookSettings {
            retry_schedule: schedule.to_vec(),
            timeout: Duration::from_secs(5),
            allow_private,
            prefetch: 8,
            ..WebhookSettings::new(bus.settings())
        },
        run_webhook_worker: true,
        ..Settings::default()
    }
}

async fn teardown(mut app: TestApp, bus: TestBus, schedule: &[Duration]) {
    app.stop().await;
    helpers::wait_for_processes_to_disconnect(&app.pool).await;
    let topology =
        WebhookSettings { retry_schedule: schedule.to_vec(), ..WebhookSettings::new(bus.settings()) }.topology();
    let mut queues = topology.retry_queues.clone();
    queues.push(topology.work_queue.clone());
    queues.push(topology.dead_letter_queue.clone());
    bus.delete_queues(&queues).await;
    bus.delete().await;
}

async fn register(app: &TestApp, key: &str, url: &str) -> Value {
    let answer = app.post("/api/v1/webhooks/create", Some(key), &json!({ "url": url })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.data().clone()
}

async fn deliveries(app: &TestApp, filter: Value) -> Vec<Value> {
    let answer = app.post("/api/v1/webhooks/deliveries", Some(&app.tenant.key), &filter).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.data().as_array().unwrap().clone()
}

/// Verifies a received webhook with the Standard Webhooks reference library.
fn assert_signed(hook: &Hook, secret: &str) {
    let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    verifier.verify(&hook.body, &hook.headers).expect("the signature verifies");
    assert_eq!(hook.header("content-type"), "application/json");
}

#[sqlx::test]
async fn revoke_and_regenerate_deliver_one_signed_webhook_to_each_subscribed_endpoint(pool: PgPool) {
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(200)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(pool, settings(&bus, &schedule, true)).await;
    let other = app.new_tenant("Other").await;
    let key = app.tenant.key.clone();
    let first = register(&app, &key, &receiver.url("first")).await;
    let second = register(&app, &key, &receiver.url("second")).await;
    let deleted = register(&app, &key, &receiver.url("deleted")).await;
    register(&app, &other.key, &receiver.url("other")).await;
    assert_eq!(first["events"], json!(["CredentialLocked"]));
    let removed = app.post("/api/v1/webhooks/delete", Some(&key), &json!({"uuid": deleted["uuid"]})).await;
    assert_eq!(removed.status, StatusCode::OK);

    let revoked = app.create_api_key(&key, "Revoked").await;
    app.revoke(&key, revoked["uuid"].as_str().unwrap()).await;
    let rotated = app.create_api_key(&key, "Rotated").await;
    let rotation = app.regenerate(&key, rotated["uuid"].as_str().unwrap()).await;
    let rotation = rotation.data().clone();

    for (name, endpoint) in [("first", &first), ("second", &second)] {
        let hooks = receiver.wait_for(name, 2, WAIT).await;
        let mut by_reason = std::collections::HashMap::new();
        for hook in &hooks {
            assert_signed(hook, endpoint["secret"].as_str().unwrap());
            let body = hook.json();
            assert_eq!(body["type"], "CredentialLocked");
            assert!(body["timestamp"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().is_ok());
            assert_eq!(body["data"]["server"], json!({"uuid": app.tenant.server_uuid, "name": "Acme Mail"}));
            assert!(!String::from_utf8_lossy(&hook.body).contains(&key[4..]), "no key in a webhook");
            by_reason.insert(
                body["data"]["reason"].as_str().unwrap().to_owned(),
                (body, hook.header("webhook-id").to_owned()),
            );
        }
        let (revoke_body, revoke_id) = &by_reason["revoked"];
        assert_eq!(
            revoke_body["data"]["credential"],
            json!({"id": revoked["id"], "uuid": revoked["uuid"], "name": "Revoked", "type": "API", "hold": true})
        );
        assert_eq!(revoke_body["data"]["replaced_by"], Value::Null);
        let (rotate_body, rotate_id) = &by_reason["rotated"];
        assert_eq!(rotate_body["data"]["credential"]["uuid"], rotated["uuid"]);
        assert_eq!(rotate_body["data"]["replaced_by"], json!({"id": rotation["new_id"], "uuid": rotation["new_uuid"]}));
        assert_ne!(revoke_id, rotate_id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("first").len(), 2, "exactly one webhook per event");
    assert_eq!(receiver.received("second").len(), 2);
    assert!(receiver.received("other").is_empty(), "another server's endpoint hears nothing");
    assert!(receiver.received("deleted").is_empty(), "a deleted endpoint hears nothing");

    let attempts = deliveries(&app, json!({})).await;
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a["outcome"] == "delivered" && a["response_status"] == 200 && a["attempt"] == 1));
    let listed = app.post("/api/v1/webhooks/list", Some(&key), &json!({})).await;
    let listed = listed.data().as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "the deleted endpoint is gone");
    assert!(listed.iter().all(|endpoint| endpoint.get("secret").is_none()), "the secret is shown only once");
    teardown(app, bus, &schedule).await;
}

#[sqlx::test]
async fn a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt(pool: PgPool) {
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(200), Duration::from_millis(200), Duration::from_millis(200)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(pool, settings(&bus, &schedule, true)).await;
    let endpoint = register(&app, &app.tenant.key, &receiver.url("flaky")).await;
    receiver.script("flaky", &[500, 503]);

    let doomed = app.create_api_key(&app.tenant.key, "Doomed").await;
    app.revoke(&app.tenant.key, doomed["uuid"].as_str().unwrap()).await;
    let hooks = receiver.wait_for("flaky", 3, WAIT).await;
    assert_eq!(hooks.iter().map(|hook| hook.answered).collect::<Vec<_>>(), [500, 503, 200]);
    assert!(hooks.iter().all(|hook| hook.header("webhook-id") == hooks[0].header("webhook-id")), "one webhook-id");
    assert!(hooks.iter().all(|hook| hook.body == hooks[0].body), "the same body every time");
    for hook in &hooks {
        assert_signed(hook, endpoint["secret"].as_str().unwrap());
    }

    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts = deliveries(&app, json!({"uuid": endpoint["uuid"]})).await;
        if attempts.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Newest first.
    let summary: Vec<(i64, Option<i64>, &str)> = attempts
        .iter()
        .map(|a| (a["attempt"].as_i64().unwrap(), a["response_status"].as_i64(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [(3, Some(200), "delivered"), (2, Some(503), "retrying"), (1, Some(500), "retrying")]);
    assert!(attempts[1]["next_attempt_at"].is_string() && attempts[0]["next_attempt_at"].is_null());
    assert!(attempts.iter().all(|a| a["delivery_status"] == "delivered"));
    teardown(app, bus, &schedule).await;
}

#[sqlx::test]
async fn a_receiver_that_always_fails_ends_failed_and_retry_delivers_it_once_it_recovers(pool: PgPool) {
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(100), Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(pool, settings(&bus, &schedule, true)).await;
    let endpoint = register(&app, &app.tenant.key, &receiver.url("down")).await;
    receiver.script("down", &[500, 502, 504]);

    let doomed = app.create_api_key(&app.tenant.key, "Doomed").await;
    app.revoke(&app.tenant.key, doomed["uuid"].as_str().unwrap()).await;
    receiver.wait_for("down", 3, WAIT).await;
    let mut failed = Vec::new();
    for _ in 0..100 {
        failed = deliveries(&app, json!({"status": "failed"})).await;
        if failed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed.len(), 3, "three attempts of a failed delivery: {failed:#?}");
    assert_eq!(failed[0]["outcome"], "failed");
    assert_eq!(failed[0]["response_status"], 504);
    let topology =
        WebhookSettings { retry_schedule: schedule.to_vec(), ..WebhookSettings::new(bus.settings()) }.topology();
    assert_eq!(bus.depth(&topology.dead_letter_queue).await, 1, "the delivery is in the dead-letter queue");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("down").len(), 3, "no attempt after the schedule ran out");

    let delivery_id = failed[0]["delivery_id"].clone();
    let retried = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": delivery_id})).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    let hooks = receiver.wait_for("down", 4, WAIT).await;
    assert_eq!(hooks[3].answered, 200);
    assert_signed(&hooks[3], endpoint["secret"].as_str().unwrap());
    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = deliveries(&app, json!({"status": "delivered"})).await;
        if delivered.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered[0]["attempt"], 4);
    assert_eq!(delivered[0]["outcome"], "delivered");

    let again: Answer = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": delivery_id})).await;
    assert_eq!((again.status, again.error_code()), (StatusCode::CONFLICT, "delivery_not_failed"));
    let unknown = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": 999_999})).await;
    assert_eq!((unknown.status, unknown.error_code()), (StatusCode::NOT_FOUND, "delivery_not_found"));
    let other = app.new_tenant("Other").await;
    let foreign = app.post("/api/v1/webhooks/retry", Some(&other.key), &json!({"id": delivery_id})).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "another server's delivery does not exist");
    teardown(app, bus, &schedule).await;
}

#[sqlx::test]
async fn an_endpoint_that_answers_410_is_disabled(pool: PgPool) {
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(pool, settings(&bus, &schedule, true)).await;
    register(&app, &app.tenant.key, &receiver.url("gone")).await;
    receiver.script("gone", &[410]);
    for name in ["One", "Two"] {
        let made = app.create_api_key(&app.tenant.key, name).await;
        app.revoke(&app.tenant.key, made["uuid"].as_str().unwrap()).await;
        if name == "One" {
            receiver.wait_for("gone", 1, WAIT).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("gone").len(), 1, "no retry, and nothing more after 410");
    let listed = app.post("/api/v1/webhooks/list", Some(&app.tenant.key), &json!({})).await;
    let endpoint = &listed.data()[0];
    assert!(endpoint["disabled_at"].is_string());
    assert_eq!(endpoint["disabled_reason"], "the endpoint answered 410 Gone");
    teardown(app, bus, &schedule).await;
}

#[sqlx::test]
async fn internal_destinations_bad_urls_and_unknown_events_are_refused(pool: PgPool) {
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(100)];
    let app = spawn_app_with(pool, settings(&bus, &schedule, false)).await;
    let key = app.tenant.key.clone();
    let create = |body: Value| {
        let app = &app;
        let key = key.clone();
        async move { app.post("/api/v1/webhooks/create", Some(&key), &body).await }
    };
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/",
        "http://203.0.113.10/documentation-range",
        // IPv6 forms that embed or tunnel to an IPv4 address, and other special-purpose blocks.
        "http://[::127.0.0.1]/ipv4-compatible",
        "http://[2002:7f00:1::]/6to4",
        "http://[::ffff:0:7f00:1]/ipv4-translated",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/teredo",
        "http://[fec0::1]/site-local",
        "http://[100::1]/discard-only",
        "http://192.88.99.1/6to4-relay",
        "http://[64:ff9b::10.0.0.1]/nat64-of-private",
    ] {
        let answer = create(json!({ "url": url })).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "url_not_allowed"),
            "{url}"
        );
    }
    for url in ["ftp://example.com/hook", "not a url", "/relative", "https://user:pw@example.com/", ""] {
        let answer = create(json!({ "url": url })).await;
        assert_eq!((answer.status, answer.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_url"), "{url}");
    }
    for events in [json!(["CredentialCreated"]), json!([]), json!(["credential.locked"])] {
        let answer = create(json!({"url": "http://93.184.216.34/hook", "events": events})).await;
        assert_eq!((answer.status, answer.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_events"));
    }
    let wrong_type = create(json!({"url": "http://93.184.216.34/hook", "events": "CredentialLocked"})).await;
    assert_eq!((wrong_type.status, wrong_type.error_code()), (StatusCode::BAD_REQUEST, "invalid_parameters"));
    let missing = create(json!({})).await;
    assert_eq!((missing.status, missing.error_code()), (StatusCode::BAD_REQUEST, "invalid_parameters"));
    let unauthenticated = app.post("/api/v1/webhooks/create", None, &json!({"url": "http://93.184.216.34/"})).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);

    let accepted = create(json!({"url": "http://93.184.216.34/hook", "description": "billing"})).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert!(accepted.data()["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(accepted.data()["description"], "billing");
    let bad_filter = app.post("/api/v1/webhooks/deliveries", Some(&key), &json!({"status": "lost"})).await;
    assert_eq!(bad_filter.error_code(), "invalid_status");
    let missing_endpoint =
        app.post("/api/v1/webhooks/delete", Some(&key), &json!({"uuid": uuid::Uuid::new_v4()})).await;
    assert_eq!((missing_endpoint.status, missing_endpoint.error_code()), (StatusCode::NOT_FOUND, "webhook_not_found"));
    teardown(app, bus, &schedule).await;
}

#[sqlx::test]
async fn a_worker_killed_mid_delivery_is_replaced_and_the_webhook_still_arrives(pool: PgPool) {
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let app =
        spawn_app_with(pool.clone(), Settings { run_webhook_worker: false, ..settings(&bus, &schedule, true) }).await;
    let endpoint = register(&app, &app.tenant.key, &receiver.url("slow")).await;
    let url = helpers::database_url(&pool).await;
    let worker = |url: &str| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_credential-ledger"))
            .arg("webhook-worker")
            .env("DATABASE_URL", url)
            .env("AMQP_URL", bus_support::amqp_url())
            .env("AMQP_EXCHANGE", &bus.exchange)
            .env("WEBHOOK_RETRY_SCHEDULE", "100ms")
            .env("WEBHOOK_ALLOW_PRIVATE", "true")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("the worker starts");
        ChildGuard(child)
    };

    receiver.hold("slow", Duration::from_secs(30));
    let mut first = worker(&url);
    let doomed = app.create_api_key(&app.tenant.key, "Doomed").await;
    app.revoke(&app.tenant.key, doomed["uuid"].as_str().unwrap()).await;
    receiver.wait_for("slow", 1, WAIT).await;
    // The worker dies with the request in flight and the message unacknowledged.
    first.kill();
    receiver.hold("slow", Duration::ZERO);

    let _second = worker(&url);
    let hooks = receiver.wait_for("slow", 2, WAIT).await;
    assert_eq!(hooks[0].header("webhook-id"), hooks[1].header("webhook-id"), "receivers can deduplicate");
    assert_signed(&hooks[1], endpoint["secret"].as_str().unwrap());
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts = deliveries(&app, json!({"status": "delivered"})).await;
        if !attempts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["attempt"], 2, "the interrupted attempt counts");
    drop(_second);
    teardown(app, bus, &schedule).await;
}
