//! Webhooks end to end: the service's delivery (in-process on SQLite and PostgreSQL, and through
//! the real RabbitMQ), the store's claims and checkpoints on both engines, and a real HTTP
//! receiver on 127.0.0.1 started by each test.

use credential_ledger_test_support::app as helpers;
use credential_ledger_test_support::backend::TestDb;
use credential_ledger_test_support::bus as bus_support;
use credential_ledger_test_support::proxy;
use credential_ledger_test_support::receiver;

use std::time::Duration;

use chrono::Utc;
use credential_ledger::app::provision::provision_server;
use credential_ledger::bus::{BusSettings, RelaySettings};
use credential_ledger::domain::DeliveryStatus;
use credential_ledger::domain::{CredentialName, ServerName};
use credential_ledger::startup::Settings;
use credential_ledger::store::{
    AttemptRecord, DueAttempt, NewDelivery, Requeue, Store, IN_PROCESS_WEBHOOKS_CHECKPOINT,
};
use credential_ledger::webhooks::{WebhookSettings, WebhookWorker};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bus_support::TestBus;
use helpers::{spawn_app, spawn_app_with, test_settings, wait_until, Answer, ChildGuard, TestApp};
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
            // Retries asked for through the API wait for a sweep: keep the tests quick.
            sweep_interval: Duration::from_millis(100),
            ..WebhookSettings::new(Some(bus.settings()))
        },
        run_webhook_worker: true,
        ..test_settings()
    }
}

/// How a test's webhooks travel: in-process (the dispatcher and the database queue), or through
/// RabbitMQ (the relay, the work and retry queues). The same test body holds for both.
enum Delivery {
    InProcess,
    RabbitMq(Box<TestBus>),
}

impl Delivery {
    fn settings(&self, schedule: &[Duration], allow_private: bool) -> Settings {
        match self {
            Delivery::RabbitMq(bus) => settings(bus, schedule, allow_private),
            Delivery::InProcess => in_process(schedule, allow_private),
        }
    }

    async fn teardown(self, mut app: TestApp, schedule: &[Duration]) {
        match self {
            Delivery::RabbitMq(bus) => teardown(app, *bus, schedule).await,
            Delivery::InProcess => app.stop().await,
        }
    }
}

/// The service with in-process delivery (no AMQP_URL), polling the database as often as the
/// RabbitMQ tests sweep.
fn in_process(schedule: &[Duration], allow_private: bool) -> Settings {
    Settings {
        relay: None,
        webhooks: WebhookSettings {
            retry_schedule: schedule.to_vec(),
            timeout: Duration::from_secs(5),
            allow_private,
            prefetch: 8,
            sweep_interval: Duration::from_millis(100),
            ..WebhookSettings::new(None)
        },
        run_webhook_worker: true,
        ..test_settings()
    }
}

/// Runs each named `async fn(TestDb, Delivery)` three times: on SQLite and on PostgreSQL with
/// in-process delivery, and on PostgreSQL with RabbitMQ; each PostgreSQL or RabbitMQ variant says
/// it was skipped when its URL is not set.
macro_rules! on_every_delivery {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            use credential_ledger_test_support::backend::{
                rabbitmq_configured, skip_without_postgres, skip_without_rabbitmq, TestDb,
            };

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_in_process() {
                super::$test(TestDb::sqlite().await, super::Delivery::InProcess).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_in_process() {
                match TestDb::postgres().await {
                    Some(db) => super::$test(db, super::Delivery::InProcess).await,
                    None => skip_without_postgres(),
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_rabbitmq() {
                if !rabbitmq_configured() {
                    return skip_without_rabbitmq();
                }
                match TestDb::postgres().await {
                    Some(db) => super::$test(db, super::Delivery::RabbitMq(Box::new(super::TestBus::new().await))).await,
                    None => skip_without_rabbitmq(),
                }
            }
        }
    )+};
}

/// A webhook worker in this process, beside an app that runs none, so a test can stop it and
/// start another.
struct Worker {
    stop: CancellationToken,
    running: JoinHandle<()>,
}

impl Worker {
    fn start(pool: &PgPool, settings: WebhookSettings) -> Worker {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let worker = WebhookWorker::new(Store::new(pool.clone()), settings, wake).expect("the worker starts");
        let stop = CancellationToken::new();
        let running = tokio::spawn(worker.run(stop.clone()));
        Worker { stop, running }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running.await.expect("the worker stops");
    }
}

/// The attempts `filter` lists once `done` holds for them; panics after `WAIT`.
async fn attempts_once(app: &TestApp, filter: Value, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let attempts = deliveries(app, filter.clone()).await;
        if done(&attempts) {
            return attempts;
        }
        assert!(Instant::now() < deadline, "the attempts never got there: {attempts:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (attempt, response status, outcome, delivery status) of each attempt, newest first.
fn summary(attempts: &[Value]) -> Vec<(i64, Option<i64>, String, String)> {
    attempts
        .iter()
        .map(|a| {
            let text = |field: &str| a[field].as_str().unwrap_or_default().to_owned();
            (a["attempt"].as_i64().unwrap(), a["response_status"].as_i64(), text("outcome"), text("delivery_status"))
        })
        .collect()
}

/// Revokes a fresh credential and waits until its webhook to the only endpoint has failed
/// `attempts` times and for good; the delivery's id.
async fn a_failed_delivery(app: &TestApp, attempts: usize) -> i64 {
    let doomed = app.create_api_key(&app.tenant.key, "Doomed").await;
    app.revoke(&app.tenant.key, doomed["uuid"].as_str().unwrap()).await;
    let failed = attempts_once(app, json!({"status": "failed"}), |listed| listed.len() == attempts).await;
    assert_eq!(failed[0]["outcome"], "failed");
    failed[0]["delivery_id"].as_i64().unwrap()
}

async fn teardown(mut app: TestApp, bus: TestBus, schedule: &[Duration]) {
    app.stop().await;
    let topology =
        WebhookSettings { retry_schedule: schedule.to_vec(), ..WebhookSettings::new(Some(bus.settings())) }.topology();
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

async fn revoke_and_regenerate_deliver_one_signed_webhook_to_each_subscribed_endpoint(db: TestDb, delivery: Delivery) {
    let schedule = [Duration::from_millis(200)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, delivery.settings(&schedule, true)).await;
    let mode = if matches!(delivery, Delivery::InProcess) { "in-process" } else { "rabbitmq" };
    for probe in ["healthz", "readyz"] {
        let answer = helpers::answer(app.client.get(format!("{}/{probe}", app.address)).send().await.unwrap()).await;
        assert_eq!(answer.data()["delivery"]["mode"], mode, "{probe}: {}", answer.body);
    }
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
    delivery.teardown(app, &schedule).await;
}

/// A grace rotation and an expiry send nothing when they commit: each sends one signed
/// CredentialLocked at its deadline, with the reason and the deadline, within a second of it.
async fn deadlines_deliver_their_lock_within_a_second(db: TestDb, delivery: Delivery) {
    let schedule = [Duration::from_millis(200)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, delivery.settings(&schedule, true)).await;
    let key = app.tenant.key.clone();
    let endpoint = register(&app, &key, &receiver.url("deadlines")).await;
    let rotating = app.create_api_key(&key, "Rotating").await;
    let body = json!({"uuid": rotating["uuid"], "grace_period": 2});
    let rotation = app.post("/api/v1/credentials/regenerate", Some(&key), &body).await;
    let rotation = rotation.data().clone();
    let expires_at = Utc::now() + chrono::Duration::seconds(2);
    let expiring = app
        .create(
            &key,
            json!({"name": "Expiring", "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}),
        )
        .await;
    let expiring = expiring.data().clone();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(receiver.received("deadlines").is_empty(), "nothing is sent before a deadline");

    let hooks = receiver.wait_for("deadlines", 2, WAIT).await;
    let mut by_reason = std::collections::HashMap::new();
    for hook in &hooks {
        assert_signed(hook, endpoint["secret"].as_str().unwrap());
        let body = hook.json();
        assert_eq!(body["type"], "CredentialLocked");
        let deadline: chrono::DateTime<Utc> = body["data"]["deadline"].as_str().unwrap().parse().unwrap();
        let recorded: chrono::DateTime<Utc> = body["timestamp"].as_str().unwrap().parse().unwrap();
        let received: chrono::DateTime<Utc> = hook.received_at.into();
        assert!(recorded >= deadline, "locked at {recorded}, before its deadline {deadline}");
        assert!(
            received - deadline < chrono::Duration::seconds(1),
            "received {} after the deadline",
            received - deadline
        );
        by_reason.insert(body["data"]["reason"].as_str().unwrap().to_owned(), (body.clone(), deadline));
    }
    let (rotated, deadline) = &by_reason["rotated"];
    assert_eq!(rotated["data"]["credential"]["uuid"], rotating["uuid"]);
    assert_eq!(rotated["data"]["replaced_by"], json!({"id": rotation["new_id"], "uuid": rotation["new_uuid"]}));
    assert_eq!(*deadline, rotation["old_expires_at"].as_str().unwrap().parse::<chrono::DateTime<Utc>>().unwrap());
    let (expired, deadline) = &by_reason["expired"];
    assert_eq!(expired["data"]["credential"]["uuid"], expiring["uuid"]);
    assert_eq!(expired["data"]["replaced_by"], Value::Null);
    assert_eq!(*deadline, expiring["expires_at"].as_str().unwrap().parse::<chrono::DateTime<Utc>>().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("deadlines").len(), 2, "one webhook per lock");
    delivery.teardown(app, &schedule).await;
}

async fn a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt(db: TestDb, delivery: Delivery) {
    let schedule = [Duration::from_millis(200), Duration::from_millis(200), Duration::from_millis(200)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, delivery.settings(&schedule, true)).await;
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

    let attempts = attempts_once(&app, json!({"uuid": endpoint["uuid"]}), |listed| listed.len() == 3).await;
    // Newest first.
    let summary: Vec<(i64, Option<i64>, &str)> = attempts
        .iter()
        .map(|a| (a["attempt"].as_i64().unwrap(), a["response_status"].as_i64(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [(3, Some(200), "delivered"), (2, Some(503), "retrying"), (1, Some(500), "retrying")]);
    assert!(attempts[1]["next_attempt_at"].is_string() && attempts[0]["next_attempt_at"].is_null());
    assert!(attempts.iter().all(|a| a["delivery_status"] == "delivered"));
    delivery.teardown(app, &schedule).await;
}

async fn a_receiver_that_always_fails_ends_failed_and_retry_delivers_it_once_it_recovers(
    db: TestDb,
    delivery: Delivery,
) {
    let schedule = [Duration::from_millis(100), Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, delivery.settings(&schedule, true)).await;
    let endpoint = register(&app, &app.tenant.key, &receiver.url("down")).await;
    receiver.script("down", &[500, 502, 504]);

    let doomed = app.create_api_key(&app.tenant.key, "Doomed").await;
    app.revoke(&app.tenant.key, doomed["uuid"].as_str().unwrap()).await;
    receiver.wait_for("down", 3, WAIT).await;
    let failed = attempts_once(&app, json!({"status": "failed"}), |listed| listed.len() == 3).await;
    assert_eq!(failed.len(), 3, "three attempts of a failed delivery: {failed:#?}");
    assert_eq!(failed[0]["outcome"], "failed");
    assert_eq!(failed[0]["response_status"], 504);
    if let Delivery::RabbitMq(bus) = &delivery {
        let topology =
            WebhookSettings { retry_schedule: schedule.to_vec(), ..WebhookSettings::new(Some(bus.settings())) }
                .topology();
        assert_eq!(bus.depth(&topology.dead_letter_queue).await, 1, "the delivery is in the dead-letter queue");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("down").len(), 3, "no attempt after the schedule ran out");

    let delivery_id = failed[0]["delivery_id"].clone();
    let retried = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": delivery_id})).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    let hooks = receiver.wait_for("down", 4, WAIT).await;
    assert_eq!(hooks[3].answered, 200);
    assert_signed(&hooks[3], endpoint["secret"].as_str().unwrap());
    let delivered = attempts_once(&app, json!({"status": "delivered"}), |listed| listed.len() == 4).await;
    assert_eq!(delivered[0]["attempt"], 4);
    assert_eq!(delivered[0]["outcome"], "delivered");

    let again: Answer = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": delivery_id})).await;
    assert_eq!((again.status, again.error_code()), (StatusCode::CONFLICT, "delivery_not_failed"));
    let unknown = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": 999_999})).await;
    assert_eq!((unknown.status, unknown.error_code()), (StatusCode::NOT_FOUND, "delivery_not_found"));
    let other = app.new_tenant("Other").await;
    let foreign = app.post("/api/v1/webhooks/retry", Some(&other.key), &json!({"id": delivery_id})).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "another server's delivery does not exist");
    delivery.teardown(app, &schedule).await;
}

async fn an_endpoint_that_answers_410_is_disabled(db: TestDb, delivery: Delivery) {
    let schedule = [Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, delivery.settings(&schedule, true)).await;
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
    let gone = deliveries(&app, json!({})).await;
    assert_eq!(gone[0]["delivery_status"], "failed");
    let retry = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": gone[0]["delivery_id"]})).await;
    assert_eq!((retry.status, retry.error_code()), (StatusCode::CONFLICT, "webhook_endpoint_closed"));
    delivery.teardown(app, &schedule).await;
}

/// What a deleted endpoint was still owed fails at once (nothing would ever be sent), and a retry
/// of it is refused rather than accepted and never made.
async fn deleting_an_endpoint_fails_what_it_was_owed_and_retry_refuses_it(db: TestDb, delivery: Delivery) {
    // The first attempt fails (nothing listens), and the next would come an hour later.
    let schedule = [Duration::from_secs(3600)];
    let app = spawn_app_with(&db, delivery.settings(&schedule, true)).await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = register(&app, &app.tenant.key, &format!("http://127.0.0.1:{closed_port}/hook")).await;
    let made = app.create_api_key(&app.tenant.key, "Owed").await;
    app.revoke(&app.tenant.key, made["uuid"].as_str().unwrap()).await;
    let filter = json!({"uuid": endpoint["uuid"]});
    let retrying = wait_until("the first attempt to fail", WAIT, || async {
        let listed = deliveries(&app, filter.clone()).await;
        listed.first().filter(|row| row["delivery_status"] == "retrying").cloned()
    })
    .await;

    let deleted = app.post("/api/v1/webhooks/delete", Some(&app.tenant.key), &filter).await;
    assert_eq!(deleted.status, StatusCode::OK);
    let after = deliveries(&app, filter.clone()).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["delivery_status"], "failed", "nothing will be sent to a deleted endpoint");
    let retry =
        app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": retrying["delivery_id"]})).await;
    assert_eq!((retry.status, retry.error_code()), (StatusCode::CONFLICT, "webhook_endpoint_closed"));
    delivery.teardown(app, &schedule).await;
}

/// An endpoint deleted while an attempt to it is under way: the attempt's failure, recorded after
/// the delete, leaves the delivery `failed`, not `retrying` for an attempt that would never come.
async fn an_attempt_that_ends_after_its_endpoint_is_deleted_leaves_the_delivery_failed(db: TestDb, delivery: Delivery) {
    let schedule = [Duration::from_secs(3600)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, delivery.settings(&schedule, true)).await;
    let endpoint = register(&app, &app.tenant.key, &receiver.url("slow")).await;
    receiver.script("slow", &[500]);
    receiver.hold("slow", Duration::from_millis(1500));
    let made = app.create_api_key(&app.tenant.key, "Owed").await;
    app.revoke(&app.tenant.key, made["uuid"].as_str().unwrap()).await;
    receiver.wait_for("slow", 1, WAIT).await;
    let filter = json!({"uuid": endpoint["uuid"]});
    let deleted = app.post("/api/v1/webhooks/delete", Some(&app.tenant.key), &filter).await;
    assert_eq!(deleted.status, StatusCode::OK);
    let recorded = wait_until("the held attempt to be recorded", WAIT, || async {
        deliveries(&app, filter.clone()).await.first().cloned()
    })
    .await;
    assert_eq!(recorded["response_status"], 500);
    // The attempt says what it would have done (`retrying`); its delivery is failed, owed nothing.
    assert_eq!(
        (&recorded["outcome"], &recorded["delivery_status"]),
        (&json!("retrying"), &json!("failed")),
        "{recorded}"
    );
    delivery.teardown(app, &schedule).await;
}

async fn internal_destinations_bad_urls_and_unknown_events_are_refused(db: TestDb, delivery: Delivery) {
    let schedule = [Duration::from_millis(100)];
    let app = spawn_app_with(&db, delivery.settings(&schedule, false)).await;
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

    // Deliveries filtered by an endpoint: an unknown one, or another server's, is a 404, not an
    // empty list that reads as "nothing delivered yet"; a deleted one of ours keeps its history.
    let deliveries_of = |uuid: Value| {
        let app = &app;
        let key = key.clone();
        async move { app.post("/api/v1/webhooks/deliveries", Some(&key), &json!({ "uuid": uuid })).await }
    };
    let unknown = deliveries_of(json!(uuid::Uuid::new_v4())).await;
    assert_eq!((unknown.status, unknown.error_code()), (StatusCode::NOT_FOUND, "webhook_not_found"));
    // These endpoints name a public address, so this test locks no credential: nothing is ever
    // sent to them (checked below: no attempt is listed for either server).
    let other = app.new_tenant("Other").await;
    let theirs = app.post("/api/v1/webhooks/create", Some(&other.key), &json!({"url": "http://93.184.216.34/x"})).await;
    let foreign = deliveries_of(theirs.data()["uuid"].clone()).await;
    assert_eq!((foreign.status, foreign.error_code()), (StatusCode::NOT_FOUND, "webhook_not_found"));
    let ours = accepted.data()["uuid"].clone();
    assert_eq!(deliveries_of(ours.clone()).await.status, StatusCode::OK);
    let deleted = app.post("/api/v1/webhooks/delete", Some(&key), &json!({ "uuid": ours })).await;
    assert_eq!(deleted.status, StatusCode::OK);
    let history = deliveries_of(ours).await;
    assert_eq!((history.status, history.data().clone()), (StatusCode::OK, json!([])));
    let attempted = app.post("/api/v1/webhooks/deliveries", Some(&other.key), &json!({})).await;
    assert_eq!(attempted.data(), &json!([]), "no attempt to a public address");
    delivery.teardown(app, &schedule).await;
}

async fn a_worker_killed_mid_delivery_is_replaced_and_the_webhook_still_arrives(db: TestDb) {
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&db, Settings { run_webhook_worker: false, ..settings(&bus, &schedule, true) }).await;
    let endpoint = register(&app, &app.tenant.key, &receiver.url("slow")).await;
    let url = db.url().to_owned();
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
    let attempts = attempts_once(&app, json!({"status": "delivered"}), |listed| !listed.is_empty()).await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["attempt"], 2, "the interrupted attempt counts");
    drop(_second);
    teardown(app, bus, &schedule).await;
}

async fn a_retry_committed_just_before_a_crash_is_made_by_the_next_worker_to_start(db: TestDb) {
    let pool = db.pg_pool().await;
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let settings = settings(&bus, &schedule, true);
    let workers = settings.webhooks.clone();
    let app = spawn_app_with(&db, Settings { run_webhook_worker: false, ..settings }).await;
    register(&app, &app.tenant.key, &receiver.url("down")).await;
    receiver.script("down", &[500, 503]);
    let first = Worker::start(&pool, workers.clone());
    let delivery_id = a_failed_delivery(&app, 2).await;
    first.stop().await;

    // All that `webhooks/retry` writes, and then nothing more: the process dies right after its
    // commit, before anything is queued anywhere (the old handler's crash window).
    let requeued = Store::new(pool.clone()).requeue_webhook_delivery(app.tenant.server_uuid, delivery_id).await;
    assert!(matches!(requeued.unwrap(), Requeue::Requeued));
    assert_eq!(receiver.received("down").len(), 2);

    let second = Worker::start(&pool, workers);
    let hooks = receiver.wait_for("down", 3, WAIT).await;
    assert_eq!(hooks[2].answered, 200);
    let attempts = attempts_once(&app, json!({}), |listed| listed.len() == 3).await;
    assert_eq!(
        summary(&attempts),
        [
            (3, Some(200), "delivered".into(), "delivered".into()),
            (2, Some(503), "failed".into(), "delivered".into()),
            (1, Some(500), "retrying".into(), "delivered".into()),
        ]
    );
    second.stop().await;
    assert_eq!(receiver.received("down").len(), 3, "one attempt for one retry");
    teardown(app, bus, &schedule).await;
}

async fn retry_answers_without_the_broker_and_a_worker_makes_the_attempt(db: TestDb) {
    let pool = db.pg_pool().await;
    let bus = TestBus::new().await;
    let schedule = [Duration::from_millis(100)];
    let receiver = Receiver::start().await;
    let settings = settings(&bus, &schedule, true);
    let workers = settings.webhooks.clone();
    // The API's way to the broker is refused; the relay and the worker have theirs.
    let broker: std::net::SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let refused = proxy::Proxy::start(broker).await;
    refused.set_mode(proxy::Mode::Refuse);
    let unreachable = BusSettings { url: format!("amqp://guest:guest@{}/%2f", refused.addr()), ..bus.settings() };
    let webhooks = WebhookSettings { bus: Some(unreachable), ..settings.webhooks.clone() };
    let app = spawn_app_with(&db, Settings { run_webhook_worker: false, webhooks, ..settings }).await;
    register(&app, &app.tenant.key, &receiver.url("down")).await;
    receiver.script("down", &[500, 503]);
    let worker = Worker::start(&pool, workers);
    let delivery_id = a_failed_delivery(&app, 2).await;

    let retried = app.post("/api/v1/webhooks/retry", Some(&app.tenant.key), &json!({"id": delivery_id})).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body, json!({"status": "success", "data": {"id": delivery_id, "status": "retrying"}}));
    let hooks = receiver.wait_for("down", 3, WAIT).await;
    assert_eq!(hooks[2].answered, 200);
    attempts_once(&app, json!({"status": "delivered"}), |listed| listed.len() == 3 && listed[0]["attempt"] == 3).await;
    assert_eq!(refused.connections(), 0, "the API never reached for the broker");
    worker.stop().await;
    teardown(app, bus, &schedule).await;
}

async fn an_attempt_whose_message_was_lost_is_handed_over_again_once_overdue(db: TestDb) {
    let bus = TestBus::new().await;
    // Long enough for the test to lose the message before it is due.
    let schedule = [Duration::from_secs(3)];
    let receiver = Receiver::start().await;
    let mut settings = settings(&bus, &schedule, true);
    settings.webhooks.presumed_lost_after = Duration::from_millis(500);
    let retry_queue = settings.webhooks.topology().retry_queues[0].clone();
    let app = spawn_app_with(&db, settings).await;
    register(&app, &app.tenant.key, &receiver.url("flaky")).await;
    receiver.script("flaky", &[500]);

    let doomed = app.create_api_key(&app.tenant.key, "Doomed").await;
    app.revoke(&app.tenant.key, doomed["uuid"].as_str().unwrap()).await;
    receiver.wait_for("flaky", 1, WAIT).await;
    attempts_once(&app, json!({"status": "retrying"}), |listed| listed.len() == 1).await;
    let started = Instant::now();
    assert_eq!(bus.purge(&retry_queue).await, 1, "the scheduled attempt was lost before it was due");

    let hooks = receiver.wait_for("flaky", 2, WAIT).await;
    assert!(started.elapsed() >= Duration::from_secs(2), "not before it was due and overdue");
    assert_eq!(hooks[1].answered, 200);
    let attempts = attempts_once(&app, json!({"status": "delivered"}), |listed| listed.len() == 2).await;
    assert_eq!(attempts[0]["attempt"], 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("flaky").len(), 2, "handed over once, attempted once");
    teardown(app, bus, &schedule).await;
}

/// An endpoint and a delivery to it, through the store alone (no broker, no worker).
async fn a_delivery(app: &TestApp, store: &Store) -> i64 {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let events = ["CredentialLocked".to_owned()];
    let server = app.tenant.server_uuid;
    let endpoint =
        store.create_webhook_endpoint(server, "http://127.0.0.1:9/hook", &events, None, secret).await.unwrap();
    let event_id = uuid::Uuid::new_v4();
    let webhook_id = format!("msg_{}", event_id.simple());
    store.open_webhook_delivery(server, endpoint.uuid, event_id, "CredentialLocked", &webhook_id, "{}").await.unwrap()
}

fn record(outcome: DeliveryStatus, next_attempt_in: Option<Duration>) -> AttemptRecord {
    let now = chrono::Utc::now();
    AttemptRecord {
        attempted_at: now,
        duration_ms: 1,
        response_status: Some(if outcome == DeliveryStatus::Delivered { 200 } else { 500 }),
        error: None,
        outcome,
        next_attempt_at: next_attempt_in.map(|delay| now + chrono::Duration::from_std(delay).unwrap()),
    }
}

async fn each_attempt_is_claimed_once_and_a_late_record_does_not_undo_a_later_attempt(db: TestDb) {
    let pool = db.pg_pool().await;
    let app = spawn_app(&db).await;
    let store = Store::new(pool);
    let delivery_id = a_delivery(&app, &store).await;
    let lease = Duration::from_secs(60);

    let first = store.claim_webhook_attempt(delivery_id, Some(1), lease).await.unwrap().expect("attempt 1");
    assert_eq!(first.attempt, 1);
    assert!(store.claim_webhook_attempt(delivery_id, Some(1), lease).await.unwrap().is_none(), "a second message");
    assert!(store.claim_webhook_attempt(delivery_id, Some(3), lease).await.unwrap().is_none(), "not the next one");
    store.record_webhook_attempt(&first, &record(DeliveryStatus::Retrying, Some(lease)), true).await.unwrap();

    let second = store.claim_webhook_attempt(delivery_id, Some(2), lease).await.unwrap().expect("attempt 2");
    // Attempt 2 is presumed lost; a redelivered event takes whichever attempt is next.
    let third = store.claim_webhook_attempt(delivery_id, None, lease).await.unwrap().expect("attempt 3");
    assert_eq!((second.attempt, third.attempt), (2, 3));
    store.record_webhook_attempt(&third, &record(DeliveryStatus::Delivered, None), true).await.unwrap();
    store.record_webhook_attempt(&second, &record(DeliveryStatus::Retrying, Some(lease)), true).await.unwrap();
    assert!(store.claim_webhook_attempt(delivery_id, Some(3), lease).await.unwrap().is_none(), "its retry message");

    let listed = store.list_webhook_attempts(app.tenant.server_uuid, None, None, 10).await.unwrap();
    let outcomes: Vec<(i32, DeliveryStatus, DeliveryStatus)> =
        listed.iter().map(|a| (a.attempt, a.outcome, a.delivery_status)).collect();
    use DeliveryStatus::{Delivered, Retrying};
    assert_eq!(outcomes, [(2, Retrying, Delivered), (3, Delivered, Delivered), (1, Retrying, Delivered)]);
    let retrying = store.list_webhook_attempts(app.tenant.server_uuid, None, Some(Retrying), 10).await.unwrap();
    assert!(retrying.is_empty(), "the delivery is delivered");
}

async fn the_sweep_takes_due_attempts_nobody_holds_and_held_ones_only_once_overdue(db: TestDb) {
    let pool = db.pg_pool().await;
    let app = spawn_app(&db).await;
    let store = Store::new(pool);
    let delivery_id = a_delivery(&app, &store).await;
    let (hour, none) = (Duration::from_secs(3600), Duration::ZERO);
    let due = |presumed_lost_after: Duration| {
        let store = store.clone();
        async move { store.postgres().unwrap().due_webhook_attempts(presumed_lost_after, 10).await.unwrap().attempts }
    };

    assert!(due(hour).await.is_empty(), "the first attempt is the opening worker's");
    let first = store.claim_webhook_attempt(delivery_id, None, hour).await.unwrap().unwrap();
    assert!(due(none).await.is_empty(), "an attempt in progress is held until its lease ends");
    store.record_webhook_attempt(&first, &record(DeliveryStatus::Failed, None), true).await.unwrap();
    assert!(due(none).await.is_empty(), "a failed delivery is due nothing");

    assert!(matches!(store.requeue_webhook_delivery(app.tenant.server_uuid, delivery_id).await, Ok(Requeue::Requeued)));
    let swept = store.postgres().unwrap().due_webhook_attempts(hour, 10).await.unwrap();
    assert_eq!(swept.attempts, [DueAttempt { delivery_id, attempt: 2 }], "a retry nobody holds is due at once");
    assert!(due(hour).await.is_empty(), "another sweep skips it meanwhile");
    swept.hand_over().await.unwrap();
    assert!(due(hour).await.is_empty(), "handed over, it is the broker's");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(due(none).await, [DueAttempt { delivery_id, attempt: 2 }], "until it is overdue: presumed lost");

    let requeued_again = store.requeue_webhook_delivery(app.tenant.server_uuid, delivery_id).await.unwrap();
    assert!(matches!(requeued_again, Requeue::NotFailed), "a retrying delivery is not retried again");
}

/// A server with one endpoint subscribed to `CredentialLocked`, and `count` deliveries to it,
/// opened as the dispatcher opens them (due now, held by nobody); the store, and the server.
async fn due_deliveries(db: &TestDb, count: usize) -> (Store, uuid::Uuid) {
    let store = db.store().await;
    let server = provision_server(&store, &ServerName::parse("Acme").unwrap(), CredentialName::parse("First").unwrap())
        .await
        .unwrap();
    let events = ["CredentialLocked".to_owned()];
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let endpoint = store
        .create_webhook_endpoint(server.server_uuid, "http://127.0.0.1:9/hook", &events, None, secret)
        .await
        .unwrap();
    let deliveries: Vec<NewDelivery> = (0..count)
        .map(|_| {
            let event_id = uuid::Uuid::new_v4();
            NewDelivery {
                server_uuid: server.server_uuid,
                endpoint_uuid: endpoint.uuid,
                event_id,
                event_type: "CredentialLocked".into(),
                webhook_id: format!("msg_{}", event_id.simple()),
                payload: "{}".into(),
            }
        })
        .collect();
    let from = store.dispatch_checkpoint(IN_PROCESS_WEBHOOKS_CHECKPOINT).await.unwrap();
    assert!(store
        .commit_dispatch(IN_PROCESS_WEBHOOKS_CHECKPOINT, from, from + 1, &deliveries, Utc::now())
        .await
        .unwrap());
    (store, server.server_uuid)
}

/// Eight claimers on two handles (two processes' pools) take 40 due attempts a few at a time:
/// each attempt goes to exactly one of them. Held, none is due again until its lease and the
/// presumed-lost delay have passed; then each is taken again, as attempt 2.
async fn two_claimers_never_share_an_attempt(db: TestDb) {
    let (first, _) = due_deliveries(&db, 40).await;
    let second = db.store().await;
    let (lease, lost) = (Duration::from_secs(60), Duration::from_secs(60));
    let claimers = (0..8).map(|n| {
        let store = if n % 2 == 0 { first.clone() } else { second.clone() };
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim_due_attempts(Utc::now(), lease, lost, 3).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|delivery| (delivery.id, delivery.attempt)));
            }
        })
    });
    let mut claimed: Vec<(i64, i32)> = Vec::new();
    for claimer in futures::future::join_all(claimers).await {
        claimed.extend(claimer.unwrap());
    }
    claimed.sort_unstable();
    let ids: std::collections::BTreeSet<i64> = claimed.iter().map(|(id, _)| *id).collect();
    assert_eq!((claimed.len(), ids.len()), (40, 40), "every attempt claimed once: {claimed:?}");
    assert!(claimed.iter().all(|(_, attempt)| *attempt == 1));

    let within = Utc::now() + chrono::Duration::seconds(110);
    assert!(first.claim_due_attempts(within, lease, lost, 100).await.unwrap().is_empty(), "held by their claimers");
    let past = Utc::now() + chrono::Duration::seconds(125);
    let retaken = second.claim_due_attempts(past, lease, lost, 100).await.unwrap();
    assert_eq!(retaken.len(), 40, "presumed lost, each is taken again");
    assert!(retaken.iter().all(|delivery| delivery.attempt == 2));
}

/// Two dispatchers that read the same batch: the checkpoint's compare-and-set lets one of them
/// open its deliveries, and the other finds the checkpoint moved and writes nothing.
async fn of_two_dispatchers_of_one_batch_one_commits(db: TestDb) {
    let (first, server) = due_deliveries(&db, 1).await;
    let second = db.store().await;
    let endpoint = first.subscribed_endpoints(server, "CredentialLocked").await.unwrap()[0].uuid;
    let from = first.dispatch_checkpoint(IN_PROCESS_WEBHOOKS_CHECKPOINT).await.unwrap();
    let batch = |event_id: uuid::Uuid| {
        vec![NewDelivery {
            server_uuid: server,
            endpoint_uuid: endpoint,
            event_id,
            event_type: "CredentialLocked".into(),
            webhook_id: format!("msg_{}", event_id.simple()),
            payload: "{}".into(),
        }]
    };
    // Different event ids: only the checkpoint, not the unique key, can keep one of them out.
    let (one, other) = (batch(uuid::Uuid::new_v4()), batch(uuid::Uuid::new_v4()));
    let now = Utc::now();
    let (a, b) = tokio::join!(
        first.commit_dispatch(IN_PROCESS_WEBHOOKS_CHECKPOINT, from, from + 5, &one, now),
        second.commit_dispatch(IN_PROCESS_WEBHOOKS_CHECKPOINT, from, from + 5, &other, now),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one commits: {a} {b}");
    assert_eq!(second.dispatch_checkpoint(IN_PROCESS_WEBHOOKS_CHECKPOINT).await.unwrap(), from + 5);
    let claimed = first.claim_due_attempts(Utc::now(), Duration::from_secs(60), Duration::from_secs(60), 10).await;
    assert_eq!(claimed.unwrap().len(), 2, "the first batch's delivery and the winner's, not the loser's");
}

/// In-process delivery keeps its schedule in the database: a retry that falls due while the
/// service is stopped is made by the next one to start on the same database.
async fn a_retry_due_while_the_service_was_stopped_is_made_after_it_starts_again(db: TestDb) {
    let schedule = [Duration::from_millis(1500)];
    let receiver = Receiver::start().await;
    let mut first = spawn_app_with(&db, in_process(&schedule, true)).await;
    let endpoint = register(&first, &first.tenant.key, &receiver.url("flaky")).await;
    receiver.script("flaky", &[500]);
    let doomed = first.create_api_key(&first.tenant.key, "Doomed").await;
    first.revoke(&first.tenant.key, doomed["uuid"].as_str().unwrap()).await;
    attempts_once(&first, json!({"status": "retrying"}), |listed| listed.len() == 1).await;
    let tenant = first.tenant.clone();
    first.stop().await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received("flaky").len(), 1, "nothing is sent while the service is stopped");
    let mut second = spawn_app_with(&db, in_process(&schedule, true)).await;
    second.tenant = tenant;
    let hooks = receiver.wait_for("flaky", 2, WAIT).await;
    assert_eq!(hooks.iter().map(|hook| hook.answered).collect::<Vec<_>>(), [500, 200]);
    assert_eq!(hooks[0].header("webhook-id"), hooks[1].header("webhook-id"));
    assert_signed(&hooks[1], endpoint["secret"].as_str().unwrap());
    let attempts = attempts_once(&second, json!({"status": "delivered"}), |listed| listed.len() == 2).await;
    assert_eq!(summary(&attempts)[0], (2, Some(200), "delivered".into(), "delivered".into()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received("flaky").len(), 2, "the history is not sent again");
    second.stop().await;
}

/// Two instances on one database, no broker: each runs a dispatcher and a worker, and each of 20
/// revocations (made through either) reaches the receiver once.
async fn two_instances_without_rabbitmq_send_each_webhook_once(db: TestDb) {
    let schedule = [Duration::from_millis(200)];
    let receiver = Receiver::start().await;
    let mut first = spawn_app_with(&db, in_process(&schedule, true)).await;
    let mut second = spawn_app_with(&db, in_process(&schedule, true)).await;
    let key = first.tenant.key.clone();
    register(&first, &key, &receiver.url("hooks")).await;
    for n in 0..20 {
        let app = if n % 2 == 0 { &first } else { &second };
        let made = app.create_api_key(&key, &format!("Key {n}")).await;
        app.revoke(&key, made["uuid"].as_str().unwrap()).await;
    }
    receiver.wait_for("hooks", 20, WAIT).await;
    // Long enough for a second dispatcher or claimer to send a duplicate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hooks = receiver.received("hooks");
    let ids: std::collections::BTreeSet<&str> = hooks.iter().map(|hook| hook.header("webhook-id")).collect();
    assert_eq!((hooks.len(), ids.len()), (20, 20), "each webhook-id exactly once");
    let attempts = attempts_once(&first, json!({}), |listed| listed.len() == 20).await;
    assert!(attempts.iter().all(|a| a["attempt"] == 1 && a["outcome"] == "delivered"));
    first.stop().await;
    second.stop().await;
}

/// Events that open no delivery move the dispatcher's checkpoint at most once a second, not
/// one write each: it catches up once the log is quiet (health shows no lag), and a restart
/// that reads some of them again opens nothing twice.
async fn quiet_events_are_checkpointed_once_the_log_is_quiet_and_never_dispatched_twice(db: TestDb) {
    let schedule = [Duration::from_millis(200)];
    let receiver = Receiver::start().await;
    let mut first = spawn_app_with(&db, in_process(&schedule, true)).await;
    let key = first.tenant.key.clone();
    register(&first, &key, &receiver.url("hooks")).await;
    let revoked = first.create_api_key(&key, "Revoked first").await;
    first.revoke(&key, revoked["uuid"].as_str().unwrap()).await;
    receiver.wait_for("hooks", 1, WAIT).await;
    for n in 0..30 {
        first.create_api_key(&key, &format!("Quiet {n}")).await;
    }
    let started = std::time::Instant::now();
    let delivery = loop {
        let health =
            helpers::answer(first.client.get(format!("{}/healthz", first.address)).send().await.unwrap()).await;
        let delivery = health.data()["delivery"].clone();
        if delivery["lag"] == 0 || started.elapsed() > Duration::from_secs(5) {
            break delivery;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["lag"], 0, "the checkpoint catches up once the log is quiet: {delivery}");
    let tenant = first.tenant.clone();
    first.stop().await;

    let mut second = spawn_app_with(&db, in_process(&schedule, true)).await;
    second.tenant = tenant;
    let revoked = second.create_api_key(&key, "Revoked second").await;
    second.revoke(&key, revoked["uuid"].as_str().unwrap()).await;
    receiver.wait_for("hooks", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hooks = receiver.received("hooks");
    let ids: std::collections::BTreeSet<&str> = hooks.iter().map(|hook| hook.header("webhook-id")).collect();
    assert_eq!((hooks.len(), ids.len()), (2, 2), "one webhook per revocation, none sent again");
    second.stop().await;
}

credential_ledger_test_support::on_both_backends!(
    two_claimers_never_share_an_attempt,
    of_two_dispatchers_of_one_batch_one_commits,
    a_retry_due_while_the_service_was_stopped_is_made_after_it_starts_again,
    two_instances_without_rabbitmq_send_each_webhook_once,
    quiet_events_are_checkpointed_once_the_log_is_quiet_and_never_dispatched_twice,
);

on_every_delivery!(
    revoke_and_regenerate_deliver_one_signed_webhook_to_each_subscribed_endpoint,
    deadlines_deliver_their_lock_within_a_second,
    a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt,
    a_receiver_that_always_fails_ends_failed_and_retry_delivers_it_once_it_recovers,
    an_endpoint_that_answers_410_is_disabled,
    deleting_an_endpoint_fails_what_it_was_owed_and_retry_refuses_it,
    an_attempt_that_ends_after_its_endpoint_is_deleted_leaves_the_delivery_failed,
    internal_destinations_bad_urls_and_unknown_events_are_refused,
);

credential_ledger_test_support::on_postgres_and_rabbitmq!(
    a_worker_killed_mid_delivery_is_replaced_and_the_webhook_still_arrives,
    a_retry_committed_just_before_a_crash_is_made_by_the_next_worker_to_start,
    retry_answers_without_the_broker_and_a_worker_makes_the_attempt,
    an_attempt_whose_message_was_lost_is_handed_over_again_once_overdue,
    each_attempt_is_claimed_once_and_a_late_record_does_not_undo_a_later_attempt,
    the_sweep_takes_due_attempts_nobody_holds_and_held_ones_only_once_overdue,
);
