//! The relay's state: its leader lock, its session and its checkpoint per exchange.

use sqlx::{PgConnection, PgPool};

use super::{PgStore, StoreError};

/// A connection of its own for the relay leader, out of the pool: the leader lock lives and dies
/// with it, and it reads the log and moves the checkpoint.
pub async fn open_relay_session(pool: &PgPool) -> Result<PgConnection, StoreError> {
    let mut connection = pool.acquire().await?.detach();
    sqlx::query!("SET application_name = 'credential-ledger-relay'").execute(&mut connection).await?;
    // Checkpoints need not wait for the disk: losing the last ones in a PostgreSQL crash only
    // publishes those events again (delivery is at least once, consumers dedupe by event id),
    // while an fsync per batch delays every message behind it.
    sqlx::query!("SET synchronous_commit = off").execute(&mut connection).await?;
    Ok(connection)
}

/// The lock that makes one relay per exchange the leader. Session-scoped: it is released when
/// the leader's connection closes, however the leader died.
pub async fn try_lead_relay(connection: &mut PgConnection, exchange: &str) -> Result<bool, StoreError> {
    let acquired = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock(hashtextextended('credential-ledger relay ' || $1, 0)) AS "acquired!""#,
        exchange,
    )
    .fetch_one(connection)
    .await?;
    Ok(acquired)
}

pub async fn relay_checkpoint(connection: &mut PgConnection, exchange: &str) -> Result<i64, StoreError> {
    let position = sqlx::query_scalar!("SELECT position FROM relay_checkpoints WHERE exchange = $1", exchange)
        .fetch_optional(connection)
        .await?;
    Ok(position.unwrap_or(0))
}

/// Moves the checkpoint forward (never back).
pub async fn save_relay_checkpoint(
    connection: &mut PgConnection,
    exchange: &str,
    position: i64,
) -> Result<(), StoreError> {
    sqlx::query!(
        r#"INSERT INTO relay_checkpoints (exchange, position) VALUES ($1, $2)
           ON CONFLICT (exchange) DO UPDATE
              SET position = GREATEST(relay_checkpoints.position, EXCLUDED.position), updated_at = now()"#,
        exchange,
        position,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Where the log ends and how far the relay to `exchange` has published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogProgress {
    pub head: i64,
    pub relayed: i64,
}

impl PgStore {
    pub async fn log_progress(&self, exchange: &str) -> Result<LogProgress, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let read = async {
            let row = sqlx::query!(
                r#"SELECT (SELECT position FROM chain_head) AS "head!",
                      COALESCE((SELECT position FROM relay_checkpoints WHERE exchange = $1), 0) AS "relayed!""#,
                exchange,
            )
            .fetch_one(&mut *connection)
            .await?;
            Ok(LogProgress { head: row.head, relayed: row.relayed })
        };
        let outcome = tokio::time::timeout(self.query_timeout, read).await;
        self.settle(connection, outcome)
    }
}

/// A connection of its own for the deadline scheduler's leader lock.
pub async fn open_deadline_session(pool: &PgPool) -> Result<PgConnection, StoreError> {
    let mut connection = pool.acquire().await?.detach();
    sqlx::query!("SET application_name = 'credential-ledger-deadlines'").execute(&mut connection).await?;
    Ok(connection)
}

/// The lock that makes one instance's deadline scheduler the first to lock each deadline; the
/// others act only once a deadline is overdue. Session-scoped, like the relay's.
pub async fn try_lead_deadlines(connection: &mut PgConnection) -> Result<bool, StoreError> {
    let acquired = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock(hashtextextended('credential-ledger deadlines', 0)) AS "acquired!""#
    )
    .fetch_one(connection)
    .await?;
    Ok(acquired)
}

/// Whether the leader's session still answers.
pub async fn ping(connection: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query!("SELECT 1 AS one").fetch_one(connection).await?;
    Ok(())
}
