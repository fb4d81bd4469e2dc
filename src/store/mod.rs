//! PostgreSQL adapter: the event log, the credential view, the usage table, the relay's
//! checkpoints and the webhook tables.
//! Every SQL statement of the service is in this module, `migrations/` or `projections/`.

/// The one SELECT list of the log, into `StoredEvent`: `select_events!("WHERE …", args…)`.
macro_rules! select_events {
    ($rest:tt $(, $argument:expr)* $(,)?) => {
        sqlx::query_as!(
            crate::domain::StoredEvent,
            r#"SELECT position, stream_id, stream_version, event_id, event_type, schema_version, server_uuid,
                      payload::text AS "payload!", metadata::text AS "metadata!", recorded_at, prev_hash, hash
                 FROM events "# + $rest
            $(, $argument)*
        )
    };
}

/// What folding needs of each event, `select_logged!("WHERE …", args…)`, for the reads that fold
/// many events and nothing else: a rebuild, and the state a batch is decided against. Each row
/// lends a `domain::LoggedEvent` (`row.logged()`).
macro_rules! select_logged {
    ($rest:tt $(, $argument:expr)* $(,)?) => {
        sqlx::query_as!(
            crate::store::LoggedRow,
            r#"SELECT position, stream_id, stream_version, event_type, schema_version, recorded_at,
                      payload::text AS "payload!"
                 FROM events "# + $rest
            $(, $argument)*
        )
    };
}

mod append;
mod events;
mod relay;
mod schema;
mod usage;
mod view;
mod webhooks;

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::domain::UnreadableEvent;

pub use append::{Appended, ChainHead, Decision, NewEvent, EVENTS_CHANNEL};
pub use events::events_after;
use events::LoggedRow;
pub use relay::{open_relay_session, relay_checkpoint, save_relay_checkpoint, try_lead_relay, LogProgress};
pub use schema::{applied_migrations, prepare, rebuild_projections, RebuildReport};
pub use webhooks::{
    AttemptListing, AttemptRecord, DeliveryTarget, DueAttempt, DueAttempts, EndpointTarget, LockedCredential, Requeue,
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
    /// The database did not answer within the query timeout; a write may or may not have
    /// committed. The connection was discarded.
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
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

/// Connects to the database named in the settings, creating it first if it does not exist.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, StoreError> {
    if !Postgres::database_exists(&settings.url).await? {
        Postgres::create_database(&settings.url).await?;
    }
    let options: PgConnectOptions = settings.url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options.application_name("credential-ledger"))
        .await?;
    Ok(pool)
}

/// The service's handle on PostgreSQL.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    query_timeout: Duration,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool, query_timeout: DEFAULT_QUERY_TIMEOUT }
    }

    pub fn with_query_timeout(self, query_timeout: Duration) -> Self {
        Store { query_timeout, ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The outcome of work done on `connection` under `tokio::time::timeout(self.query_timeout)`.
    /// A connection that did not answer in time is closed, not returned to the pool: it may be
    /// dead without knowing it (a network that drops packets silently), and the pool's check on
    /// release would wait on it for ever, holding its slot.
    fn settle<T>(
        &self,
        connection: PoolConnection<Postgres>,
        outcome: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok(result) => result,
            Err(_) => {
                drop(connection.detach());
                crate::metrics::metrics().database_timeouts.inc();
                Err(StoreError::TimedOut(self.query_timeout))
            }
        }
    }
}
