//! Reading the log back: for the relay (and anyone else who follows it in order).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Store, StoreError};

/// One event as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub server_uuid: Uuid,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

pub async fn events_after(
    connection: &mut PgConnection,
    position: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let events = sqlx::query_as!(
        StoredEvent,
        r#"SELECT position, stream_id, stream_version, event_id, event_type, schema_version, server_uuid,
                  payload, metadata, recorded_at
             FROM events WHERE position > $1 ORDER BY position LIMIT $2"#,
        position,
        limit,
    )
    .fetch_all(connection)
    .await?;
    Ok(events)
}

/// One event of a server, as auditors read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl Store {
    /// Every event of one credential of `server_uuid`, in order (none: no such credential there).
    pub async fn credential_history(&self, server_uuid: Uuid, stream_id: Uuid) -> Result<Vec<ServerEvent>, StoreError> {
        let events = sqlx::query_as!(
            ServerEvent,
            r#"SELECT position, event_id, stream_id, stream_version, event_type, schema_version, payload, metadata,
                      recorded_at
                 FROM events WHERE stream_id = $1 AND server_uuid = $2 ORDER BY position"#,
            stream_id,
            server_uuid,
        )
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
    ) -> Result<Vec<ServerEvent>, StoreError> {
        let events = sqlx::query_as!(
            ServerEvent,
            r#"SELECT position, event_id, stream_id, stream_version, event_type, schema_version, payload, metadata,
                      recorded_at
                 FROM events WHERE server_uuid = $1 AND position > $2 ORDER BY position LIMIT $3"#,
            server_uuid,
            after_position,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }

    /// Every event of a server recorded at or before `as_of`, in log order: since `recorded_at`
    /// never decreases along the log, that is a prefix of the server's history.
    /// Feeds `each` a server's events recorded at or before `as_of`, in log order, as they
    /// stream in: none of them is kept.
    pub async fn fold_server_events_until(
        &self,
        server_uuid: Uuid,
        as_of: DateTime<Utc>,
        mut each: impl FnMut(ServerEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut events = sqlx::query_as!(
            ServerEvent,
            r#"SELECT position, event_id, stream_id, stream_version, event_type, schema_version, payload, metadata,
                      recorded_at
                 FROM events WHERE server_uuid = $1 AND recorded_at <= $2 ORDER BY position"#,
            server_uuid,
            as_of,
        )
        .fetch(&self.pool);
        while let Some(event) = events.try_next().await? {
            each(event)?;
        }
        Ok(())
    }
}
