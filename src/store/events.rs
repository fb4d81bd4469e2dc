//! Reading the log back: the relay, the replica, auditors and exports, all as `StoredEvent`s
//! selected by `select_events!`.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::StoredEvent;

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

/// Up to `limit` events after `position`, in log order.
pub async fn events_after(
    connection: &mut PgConnection,
    position: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    Ok(select_events!("WHERE position > $1 ORDER BY position LIMIT $2", position, limit).fetch_all(connection).await?)
}

/// Where the log ends and how far the relay to `exchange` has published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogProgress {
    pub head: i64,
    pub relayed: i64,
}

impl Store {
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

impl Store {
    /// Every event of one credential of `server_uuid`, in order (none: no such credential there).
    pub async fn credential_history(&self, server_uuid: Uuid, stream_id: Uuid) -> Result<Vec<StoredEvent>, StoreError> {
        let events =
            select_events!("WHERE stream_id = $1 AND server_uuid = $2 ORDER BY position", stream_id, server_uuid)
                .fetch_all(&self.pool)
                .await?;
        Ok(events)
    }

    /// A page of a server's events after `after_position`, in log order.
    pub async fn server_events(
        &self,
        server_uuid: Uuid,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let events = select_events!(
            "WHERE server_uuid = $1 AND position > $2 ORDER BY position LIMIT $3",
            server_uuid,
            after_position,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }

    /// Feeds `each` a server's events recorded at or before `as_of`, in log order, as they
    /// stream in: none of them is kept. Since `recorded_at` never decreases along the log, that
    /// is a prefix of the server's history.
    pub async fn fold_server_events_until(
        &self,
        server_uuid: Uuid,
        as_of: DateTime<Utc>,
        mut each: impl FnMut(StoredEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut events =
            select_events!("WHERE server_uuid = $1 AND recorded_at <= $2 ORDER BY position", server_uuid, as_of)
                .fetch(&self.pool);
        while let Some(event) = events.try_next().await? {
            each(event)?;
        }
        Ok(())
    }
}
