//! Reading the log back: the relay, the replica, auditors and exports, all as `StoredEvent`s
//! selected by `select_events!`.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, StoreError};
use crate::domain::{LoggedEvent, StoredEvent};

/// A row of `select_logged!`.
pub(super) struct LoggedRow {
    pub(super) position: i64,
    pub(super) stream_id: Uuid,
    pub(super) stream_version: i32,
    pub(super) event_type: String,
    pub(super) schema_version: i32,
    pub(super) recorded_at: DateTime<Utc>,
    pub(super) payload: String,
}

impl LoggedRow {
    pub(super) fn logged(&self) -> LoggedEvent<'_> {
        LoggedEvent {
            position: self.position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            payload: &self.payload,
        }
    }
}

/// Up to `limit` events after `position`, in log order.
pub async fn events_after(
    connection: &mut PgConnection,
    position: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    Ok(select_events!("WHERE position > $1 ORDER BY position LIMIT $2", position, limit).fetch_all(connection).await?)
}

impl PgStore {
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

    pub async fn server_latest_event(&self, server_uuid: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let event = select_events!("WHERE server_uuid = $1 ORDER BY position DESC LIMIT 1", server_uuid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(event)
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
