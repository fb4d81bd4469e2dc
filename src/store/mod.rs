//! Storage, behind one handle whatever the engine: `Store`. Each backend implements the same
//! methods; this module holds what they share (the errors, the settings) and dispatches.
//! Every SQL statement of the service is under this module, `migrations/` or `projections/`.
//! The plan for the second backend (SQLite) is docs/embedded-backend.md.

mod append;
mod backup;
pub mod postgres;
pub mod sqlite;
mod view;
mod webhooks;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Credential, DeliveryStatus, Ledger, StoredEvent, UnreadableEvent};
pub use append::{Appended, ChainHead, Decision, NewEvent};
pub use backup::{ImportBatch, Imported, StoredEndpoint, StoredServer, IN_PROCESS_WEBHOOKS_CHECKPOINT};
pub use postgres::{
    applied_migrations, connect, events_after, open_relay_session, prepare, rebuild_projections, relay_checkpoint,
    save_relay_checkpoint, try_lead_relay, DueAttempt, DueAttempts, LogProgress, PgStore, RebuildReport,
    EVENTS_CHANNEL,
};
pub use sqlite::SqliteStore;
pub use webhooks::{
    AttemptListing, AttemptRecord, DeliveryTarget, EndpointTarget, LockedCredential, NewDelivery, Requeue,
    WebhookEndpoint,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the stored event at position {position} cannot be read: {reason}")]
    Corrupt { position: i64, reason: String },
    #[error("the credential view is inconsistent with the log at position {position}: {reason}")]
    InconsistentView { position: i64, reason: String },
    #[error("{0}")]
    Unavailable(String),
    /// The backend in use does not do this (yet).
    #[error("{0}")]
    Unsupported(&'static str),
    /// Only the scheme is said: the URL may hold a password.
    #[error("DATABASE_URL: unsupported scheme {0:?} (use postgres://… or sqlite://PATH)")]
    UnsupportedUrl(String),
    #[error("cannot open the ledger at {path}: {reason}")]
    CannotOpen { path: String, reason: String },
    #[error("{0} is not a SQLite database")]
    NotALedger(String),
    #[error("{path} belongs to another program (application_id {application_id:#x}); refusing to change it")]
    ForeignDatabase { path: String, application_id: u32 },
    #[error("the ledger's schema (migration {0}) is newer than this build knows: upgrade credential-ledger")]
    NewerSchema(i64),
    /// `import` writes only into an empty ledger.
    #[error("the target ledger is not empty ({0}): import only into a new, empty one")]
    NotEmpty(String),
    /// The database did not answer within the query timeout; a write may or may not have
    /// committed. The connection was discarded.
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
}

impl StoreError {
    /// A migration error, named for what it means to the operator.
    fn migrating(error: sqlx::migrate::MigrateError) -> StoreError {
        match error {
            sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::NewerSchema(version),
            other => StoreError::Migrate(other),
        }
    }
}

impl From<UnreadableEvent> for StoreError {
    fn from(UnreadableEvent { position, reason }: UnreadableEvent) -> Self {
        StoreError::Corrupt { position, reason }
    }
}

/// How long the service's own queries may take by default before their connection is given up.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a pooled connection before it fails with 503.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// How to reach the database.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub query_timeout: Duration,
}

impl DatabaseSettings {
    /// The documented defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseSettings {
            url: url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

/// Signs that the log grew: a notification per commit, in any process on PostgreSQL; in this
/// process on SQLite (other processes' appends are found by polling).
pub enum HeadChanges {
    Postgres(Box<sqlx::postgres::PgListener>),
    Sqlite(tokio::sync::watch::Receiver<i64>),
}

impl HeadChanges {
    /// Waits for the next append.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        match self {
            HeadChanges::Postgres(listener) => {
                listener.recv().await?;
                Ok(())
            }
            HeadChanges::Sqlite(receiver) => {
                receiver.changed().await.map_err(|_| StoreError::Unavailable("the embedded ledger was closed".into()))
            }
        }
    }
}

/// The service's handle on its storage.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    /// The embedded ledger.
    Sqlite(SqliteStore),
}

/// Runs `$body` with `$backend` bound to whichever backend `$store` holds.
macro_rules! on_backend {
    ($store:expr, $backend:ident => $body:expr) => {
        match $store {
            Store::Postgres($backend) => $body,
            Store::Sqlite($backend) => $body,
        }
    };
}

impl Store {
    /// Opens the database `settings` name (creating it if it does not exist), with their query
    /// timeout. The schema is brought up to date by `prepare`.
    pub async fn open(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let scheme = settings.url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Store::Sqlite(SqliteStore::open(settings).await?)),
            "postgres" | "postgresql" => {
                let pool = postgres::connect(settings).await?;
                Ok(Store::new(pool).with_query_timeout(settings.query_timeout))
            }
            other => Err(StoreError::UnsupportedUrl(other.to_owned())),
        }
    }

    /// The PostgreSQL store on `pool`, with the default query timeout.
    pub fn new(pool: PgPool) -> Self {
        Store::Postgres(PgStore::new(pool))
    }

    pub fn with_query_timeout(self, query_timeout: Duration) -> Self {
        match self {
            Store::Postgres(store) => Store::Postgres(store.with_query_timeout(query_timeout)),
            Store::Sqlite(store) => Store::Sqlite(store.with_query_timeout(query_timeout)),
        }
    }

    /// The backend's name, as `/healthz` and the start-up log give it.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Connections open and idle in the pools, for the metrics (the embedded ledger's reader
    /// pool and its writer together).
    pub fn connections(&self) -> (u32, u32) {
        match self {
            Store::Postgres(store) => (store.pool().size(), store.pool().num_idle() as u32),
            Store::Sqlite(store) => store.connections(),
        }
    }

    /// The PostgreSQL store, for what only PostgreSQL does (the relay to RabbitMQ).
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            Store::Postgres(store) => Some(store),
            Store::Sqlite(_) => None,
        }
    }

    /// Notifications of appends, from now on.
    pub async fn head_changes(&self) -> Result<HeadChanges, StoreError> {
        match self {
            Store::Postgres(store) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(store.pool()).await?;
                listener.listen(EVENTS_CHANNEL).await?;
                Ok(HeadChanges::Postgres(Box::new(listener)))
            }
            Store::Sqlite(store) => Ok(HeadChanges::Sqlite(store.head_changes())),
        }
    }

    /// Closes every connection and refuses new ones: on SQLite the last one to close folds the
    /// write-ahead log back into the file.
    pub async fn close(&self) {
        match self {
            Store::Postgres(store) => store.pool().close().await,
            Store::Sqlite(store) => store.close().await,
        }
    }

    /// Migrations, then any projection whose schema changed.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => postgres::prepare(store.pool()).await,
            Store::Sqlite(store) => store.prepare().await,
        }
        .map_err(|error| match error {
            StoreError::Migrate(migrate) => StoreError::migrating(migrate),
            other => other,
        })
    }

    /// How many migrations are applied, and how many this build has.
    pub async fn applied_migrations(&self) -> Result<(i64, i64), StoreError> {
        match self {
            Store::Postgres(store) => postgres::applied_migrations(store.pool()).await,
            Store::Sqlite(store) => store.applied_migrations().await,
        }
    }

    pub async fn rebuild_projections(&self) -> Result<RebuildReport, StoreError> {
        match self {
            Store::Postgres(store) => postgres::rebuild_projections(store.pool()).await,
            Store::Sqlite(store) => store.rebuild_projections().await,
        }
    }

    /// Loads the state of `touched` at the head, lets `decide` decide against it at a time no
    /// earlier than the last append, and appends the result (see `postgres::append`).
    pub async fn append<'a, T>(
        &self,
        head: Option<ChainHead>,
        touched: &[Uuid],
        decide: impl FnMut(&mut Ledger, DateTime<Utc>) -> Decision<'a, T>,
    ) -> Result<Appended<T>, StoreError> {
        on_backend!(self, store => store.append(head, touched, decide).await)
    }

    pub async fn view_snapshot(
        &self,
        starting: impl FnOnce(usize),
        each: impl FnMut(Credential),
    ) -> Result<i64, StoreError> {
        on_backend!(self, store => store.view_snapshot(starting, each).await)
    }

    pub async fn head_position(&self) -> Result<i64, StoreError> {
        on_backend!(self, store => store.head_position().await)
    }

    pub async fn events_after(&self, position: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        on_backend!(self, store => store.events_after(position, limit).await)
    }

    pub async fn credential_history(&self, server_uuid: Uuid, stream_id: Uuid) -> Result<Vec<StoredEvent>, StoreError> {
        on_backend!(self, store => store.credential_history(server_uuid, stream_id).await)
    }

    /// The server's last event: its latest link in the chain.
    pub async fn server_latest_event(&self, server_uuid: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        on_backend!(self, store => store.server_latest_event(server_uuid).await)
    }

    pub async fn server_events(
        &self,
        server_uuid: Uuid,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        on_backend!(self, store => store.server_events(server_uuid, after_position, limit).await)
    }

    pub async fn fold_server_events_until(
        &self,
        server_uuid: Uuid,
        as_of: DateTime<Utc>,
        each: impl FnMut(StoredEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        on_backend!(self, store => store.fold_server_events_until(server_uuid, as_of, each).await)
    }

    /// Every server, for a backup.
    pub async fn backup_servers(&self) -> Result<Vec<StoredServer>, StoreError> {
        on_backend!(self, store => store.backup_servers().await)
    }

    /// Every webhook endpoint, deleted ones included, with its secret, for a backup.
    pub async fn backup_endpoints(&self) -> Result<Vec<StoredEndpoint>, StoreError> {
        on_backend!(self, store => store.backup_endpoints().await)
    }

    /// Writes a verified ledger into this one, which must be empty, in one transaction: its
    /// servers, endpoints and events as they were (positions, hashes, times), the head, the
    /// in-process webhook checkpoint at that head, and the view rebuilt from what was written.
    pub async fn import(&self, batch: ImportBatch<'_>) -> Result<Imported, StoreError> {
        on_backend!(self, store => store.import(batch).await)
    }

    pub async fn log_progress(&self, exchange: &str) -> Result<LogProgress, StoreError> {
        on_backend!(self, store => store.log_progress(exchange).await)
    }

    pub async fn record_usage(&self, usage: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        on_backend!(self, store => store.record_usage(usage).await)
    }

    pub async fn usage_since(&self, since: DateTime<Utc>) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        on_backend!(self, store => store.usage_since(since).await)
    }

    pub async fn create_webhook_endpoint(
        &self,
        server_uuid: Uuid,
        url: &str,
        events: &[String],
        description: Option<&str>,
        secret: &str,
    ) -> Result<WebhookEndpoint, StoreError> {
        on_backend!(self, store => store.create_webhook_endpoint(server_uuid, url, events, description, secret).await)
    }

    pub async fn list_webhook_endpoints(&self, server_uuid: Uuid) -> Result<Vec<WebhookEndpoint>, StoreError> {
        on_backend!(self, store => store.list_webhook_endpoints(server_uuid).await)
    }

    pub async fn delete_webhook_endpoint(&self, server_uuid: Uuid, uuid: Uuid) -> Result<bool, StoreError> {
        on_backend!(self, store => store.delete_webhook_endpoint(server_uuid, uuid).await)
    }

    pub async fn subscribed_endpoints(
        &self,
        server_uuid: Uuid,
        event_type: &str,
    ) -> Result<Vec<EndpointTarget>, StoreError> {
        on_backend!(self, store => store.subscribed_endpoints(server_uuid, event_type).await)
    }

    pub async fn disable_webhook_endpoint(&self, uuid: Uuid, reason: &str) -> Result<(), StoreError> {
        on_backend!(self, store => store.disable_webhook_endpoint(uuid, reason).await)
    }

    pub async fn open_webhook_delivery(
        &self,
        server_uuid: Uuid,
        endpoint_uuid: Uuid,
        event_id: Uuid,
        event_type: &str,
        webhook_id: &str,
        payload: &str,
    ) -> Result<i64, StoreError> {
        on_backend!(self, store => {
            store.open_webhook_delivery(server_uuid, endpoint_uuid, event_id, event_type, webhook_id, payload).await
        })
    }

    pub async fn claim_webhook_attempt(
        &self,
        delivery_id: i64,
        attempt: Option<i32>,
        lease: Duration,
    ) -> Result<Option<DeliveryTarget>, StoreError> {
        on_backend!(self, store => store.claim_webhook_attempt(delivery_id, attempt, lease).await)
    }

    /// Claims up to `room` attempts due at `now` (or held and presumed lost), each held for
    /// `lease`; no attempt is ever claimed by two callers, in any process.
    pub async fn claim_due_attempts(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        presumed_lost_after: Duration,
        room: usize,
    ) -> Result<Vec<DeliveryTarget>, StoreError> {
        on_backend!(self, store => store.claim_due_attempts(now, lease, presumed_lost_after, room).await)
    }

    /// When `claim_due_attempts` may next find something, if anything is under way.
    pub async fn next_due_at(&self, presumed_lost_after: Duration) -> Result<Option<DateTime<Utc>>, StoreError> {
        on_backend!(self, store => store.next_due_at(presumed_lost_after).await)
    }

    /// `held`: whether a message already holds the next attempt (RabbitMQ), or nobody does and
    /// its due time is the schedule (in-process delivery).
    pub async fn record_webhook_attempt(
        &self,
        delivery: &DeliveryTarget,
        record: &AttemptRecord,
        held: bool,
    ) -> Result<(), StoreError> {
        on_backend!(self, store => store.record_webhook_attempt(delivery, record, held).await)
    }

    pub async fn requeue_webhook_delivery(&self, server_uuid: Uuid, delivery_id: i64) -> Result<Requeue, StoreError> {
        on_backend!(self, store => store.requeue_webhook_delivery(server_uuid, delivery_id).await)
    }

    pub async fn list_webhook_attempts(
        &self,
        server_uuid: Uuid,
        endpoint_uuid: Option<Uuid>,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<AttemptListing>, StoreError> {
        on_backend!(self, store => store.list_webhook_attempts(server_uuid, endpoint_uuid, status, limit).await)
    }

    /// Whether `uuid` is, or was (deleted endpoints included), one of the server's endpoints.
    pub async fn webhook_endpoint_exists(&self, server_uuid: Uuid, uuid: Uuid) -> Result<bool, StoreError> {
        on_backend!(self, store => store.webhook_endpoint_exists(server_uuid, uuid).await)
    }

    pub async fn locked_credential(&self, uuid: Uuid) -> Result<Option<LockedCredential>, StoreError> {
        on_backend!(self, store => store.locked_credential(uuid).await)
    }

    /// The position the in-process dispatcher `name` has fanned the log out to.
    pub async fn dispatch_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        on_backend!(self, store => store.dispatch_checkpoint(name).await)
    }

    /// Opens `deliveries` and moves the dispatcher's checkpoint from `from` to `to` in one
    /// transaction; false (nothing written) when another dispatcher moved it first.
    pub async fn commit_dispatch(
        &self,
        name: &str,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_backend!(self, store => store.commit_dispatch(name, from, to, deliveries, now).await)
    }
}
