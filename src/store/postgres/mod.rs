//! PostgreSQL: the event log, the credential view, the usage table, the relay's checkpoints and
//! the webhook tables. Every statement is checked at compile time against the schema
//! (`sqlx::query!`, offline data in `.sqlx/`).

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
            crate::store::postgres::LoggedRow,
            r#"SELECT position, stream_id, stream_version, event_type, schema_version, recorded_at,
                      payload::text AS "payload!"
                 FROM events "# + $rest
            $(, $argument)*
        )
    };
}

mod append;
mod backup;
mod events;
mod relay;
mod schema;
mod usage;
mod view;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::{DatabaseSettings, StoreError, DEFAULT_QUERY_TIMEOUT};

pub use append::EVENTS_CHANNEL;
pub use events::events_after;
use events::LoggedRow;
pub use relay::{
    open_deadline_session, open_relay_session, ping, relay_checkpoint, save_relay_checkpoint, try_lead_deadlines,
    try_lead_relay, LogProgress,
};
pub use schema::{applied_migrations, prepare, rebuild_projections, RebuildReport};
pub use webhooks::{DueAttempt, DueAttempts};

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
pub struct PgStore {
    pool: PgPool,
    query_timeout: Duration,
    /// The read barrier's connection (see `head_position`), opened at its first read and again
    /// after a failure.
    head_reader: Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        PgStore { pool, query_timeout: DEFAULT_QUERY_TIMEOUT, head_reader: Arc::default() }
    }

    pub fn with_query_timeout(self, query_timeout: Duration) -> Self {
        PgStore { query_timeout, ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection for the writer, its wait recorded: a pool too small for
    /// the load shows there first.
    async fn acquire_timed(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        let asked = std::time::Instant::now();
        let connection = self.pool.acquire().await;
        crate::metrics::metrics().database_acquire_wait.observe(asked.elapsed().as_secs_f64());
        Ok(connection?)
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
