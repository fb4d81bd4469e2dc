use std::time::Duration;

use credential_ledger::app::provision::provision_server;
use credential_ledger::config::LogFormat;
use credential_ledger::domain::{
    handle, Actor, ApiKey, Command, CredentialName, CredentialType, EventMetadata, KeyMaterial, ServerName,
};
use credential_ledger::domain::{Credential, StoredEvent};
use credential_ledger::startup::{Application, Settings};
use credential_ledger::store::{Decision, NewEvent, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::backend::{view_of, Raw, TestDb};

/// Polls `check` every 20 ms until it gives a value, and returns it; past `deadline`, the test
/// fails, saying it waited for `what`. The one way these tests wait for something to happen.
pub async fn wait_until<T, F>(what: &str, deadline: Duration, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < deadline, "waited {deadline:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const LIST: &str = "/api/v1/credentials/list";
pub const CREATE: &str = "/api/v1/credentials/create";
pub const REGENERATE: &str = "/api/v1/credentials/regenerate";
pub const REVOKE: &str = "/api/v1/credentials/revoke";

/// A server (tenant) and the key of its first API credential.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub server_uuid: Uuid,
    pub credential_uuid: Uuid,
    pub key: String,
}

pub struct TestApp {
    pub address: String,
    /// The mail relays' listener (`Settings::relay_auth`), when it is on.
    pub relay_address: Option<String>,
    pub client: reqwest::Client,
    /// The ledger the service runs on, as the service opened it.
    pub store: Store,
    /// The same ledger through a connection of the test's own.
    pub raw: Raw,
    /// Its `DATABASE_URL`, for the binary.
    pub database_url: String,
    pub tenant: Tenant,
    stop: tokio_util::sync::CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        assert_eq!(self.body["status"], "success", "{} {}", self.status, self.body);
        &self.body["data"]
    }

    pub fn error_code(&self) -> &str {
        assert_eq!(self.body["status"], "error", "{} {}", self.status, self.body);
        self.body["data"]["code"].as_str().unwrap_or_default()
    }
}

/// The service as tests run it, where that differs from `serve`'s defaults: on a free port, with
/// no relay or webhook worker (the suites that need them say so), a failed-authentication limit
/// that tables of refused keys from one address stay under, and usage flushed within 50 ms.
pub fn test_settings() -> Settings {
    Settings {
        listen_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        relay: None,
        run_webhook_worker: false,
        auth_failures_per_minute: 10_000,
        usage_flush_interval: Duration::from_millis(50),
        // A test's ledger is not the default one beside which the default snapshot goes.
        replica_snapshot: None,
        ..Settings::default()
    }
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, test_settings()).await
}

/// Starts the service on `db` on a free port, in this process, and provisions a first tenant.
/// Two apps on one `TestDb` are two instances of the service on one ledger.
pub async fn spawn_app_with(db: &TestDb, settings: Settings) -> TestApp {
    spawn_app_on(db, db.store().await, settings).await
}

/// Starts the service on `store`, a way of its own to `db`'s ledger (through a fault proxy, say).
pub async fn spawn_app_on(db: &TestDb, store: Store, settings: Settings) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        credential_ledger::telemetry::init(LogFormat::Text);
    }
    let application = Application::build(store.clone(), settings).await.expect("the application starts");
    let address = format!("http://{}", application.local_addr().unwrap());
    let relay_address = application.relay_auth_addr().map(|address| format!("http://{address}"));
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let running = tokio::spawn(application.run_until(async move { stopped.cancelled().await }));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut app = TestApp {
        address,
        relay_address,
        client,
        store,
        raw: db.raw().await,
        database_url: db.url().to_owned(),
        tenant: Tenant { server_uuid: Uuid::nil(), credential_uuid: Uuid::nil(), key: String::new() },
        stop,
        running: Some(running),
    };
    app.tenant = app.new_tenant("Acme Mail").await;
    app
}

impl Drop for TestApp {
    /// A test that ends without `stop` still shuts the service down, so that its connections
    /// let go of the test database before it is dropped.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Shuts the service down as SIGTERM would, and waits until it has stopped.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(running) = self.running.take() {
            running.await.expect("the service task").expect("a clean shutdown");
        }
    }

    pub async fn new_tenant(&self, name: &str) -> Tenant {
        let provisioned = provision_server(
            &self.store,
            &ServerName::parse(name).unwrap(),
            CredentialName::parse("Initial API key").unwrap(),
        )
        .await
        .unwrap();
        Tenant {
            server_uuid: provisioned.server_uuid,
            credential_uuid: provisioned.credential.uuid,
            key: provisioned.key.expose_secret().to_owned(),
        }
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Answer {
        let mut request = self.client.post(format!("{}{path}", self.address)).json(body);
        if let Some(key) = key {
            request = request.header("X-Server-API-Key", key);
        }
        answer(request.send().await.expect("the service answers")).await
    }

    pub async fn list(&self, key: &str) -> Answer {
        self.post(LIST, Some(key), &json!({})).await
    }

    pub async fn create(&self, key: &str, body: Value) -> Answer {
        self.post(CREATE, Some(key), &body).await
    }

    pub async fn regenerate(&self, key: &str, uuid: &str) -> Answer {
        self.post(REGENERATE, Some(key), &json!({ "uuid": uuid })).await
    }

    pub async fn revoke(&self, key: &str, uuid: &str) -> Answer {
        self.post(REVOKE, Some(key), &json!({ "uuid": uuid })).await
    }

    /// Creates an API credential and returns its data (with the key).
    pub async fn create_api_key(&self, key: &str, name: &str) -> Value {
        let answer = self.create(key, json!({"name": name, "type": "API"})).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.data().clone()
    }

    /// Adds `count` SMTP credentials to `tenant`'s server through the store's append path (as
    /// an operator at the command line), far faster than as many API calls.
    pub async fn seed_credentials(&self, tenant: &Tenant, count: usize) {
        let store = &self.store;
        let metadata = EventMetadata { actor: Actor::Cli, request_id: None, source_ip: None };
        let mut remaining = count;
        while remaining > 0 {
            let batch: Vec<Command> = (0..remaining.min(2000))
                .map(|i| Command::Create {
                    server_uuid: tenant.server_uuid,
                    credential_uuid: Uuid::new_v4(),
                    name: CredentialName::parse(&format!("Seeded {}", remaining - i)).unwrap(),
                    credential_type: CredentialType::Smtp,
                    hold: false,
                    key: KeyMaterial::from(&ApiKey::generate(&mut rand::thread_rng())),
                    expires_at: None,
                })
                .collect();
            remaining -= batch.len();
            store
                .append(None, &[], |ledger, now| {
                    let events = batch
                        .iter()
                        .flat_map(|command| handle(ledger, command, &metadata.actor, now).unwrap().events)
                        .map(|pending| NewEvent { pending, metadata: &metadata })
                        .collect();
                    Decision { servers: Vec::new(), events, value: () }
                })
                .await
                .unwrap();
        }
    }

    /// The number of events and the head hash: what must not move when a request is refused.
    /// The test's own pool on the PostgreSQL database (the test runs on PostgreSQL only).
    pub fn pg_pool(&self) -> &PgPool {
        match &self.raw {
            Raw::Postgres(pool) => pool,
            Raw::Sqlite(_) => panic!("a PostgreSQL-only test ran on SQLite"),
        }
    }

    pub async fn log_head(&self) -> (i64, Vec<u8>) {
        self.raw.head().await
    }

    /// The whole log, in order.
    pub async fn events(&self) -> Vec<StoredEvent> {
        self.store.events_after(0, i64::MAX).await.expect("the log")
    }

    pub async fn event_types(&self) -> Vec<(String, Uuid)> {
        self.events().await.into_iter().map(|event| (event.event_type, event.stream_id)).collect()
    }

    /// The whole credential view, ordered, for comparisons.
    pub async fn view(&self) -> Vec<Credential> {
        view_of(&self.store).await
    }

    /// Runs `verify` on this app's ledger: whether it passed, and its report.
    pub async fn verify(&self) -> (bool, Value) {
        verify_database(&self.database_url)
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
    Answer { status, body }
}

/// The service's binary. Cargo builds it before it runs integration tests, into the directory
/// above theirs (`target/<profile>/deps/<test>` beside `target/<profile>/credential-ledger`).
pub fn ledger_binary() -> std::path::PathBuf {
    let test = std::env::current_exe().expect("the test executable's path");
    let profile = test.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps/<test>");
    profile.join(format!("credential-ledger{}", std::env::consts::EXE_SUFFIX))
}

/// Runs the `credential-ledger` binary against `database_url`.
pub fn run_ledger(args: &[&str], database_url: &str) -> std::process::Output {
    std::process::Command::new(ledger_binary())
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

/// Runs `verify` on the ledger at `database_url`: whether it passed, and its report.
pub fn verify_database(database_url: &str) -> (bool, Value) {
    let output = run_ledger(&["verify"], database_url);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout} {:?}", output.stderr));
    (output.status.success(), report)
}

/// A child process that is killed when dropped, so a failing test leaves nothing running.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
