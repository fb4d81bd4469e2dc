//! Reading the credential view: the snapshot the in-memory replica starts from, and the log's
//! head it keeps up with.

use futures::TryStreamExt;
use sqlx::{ConnectOptions, PgConnection};

use super::{PgStore, StoreError};
use crate::domain::{Credential, StoredEvent};
use crate::store::view::{check_view_size, ViewRow};

impl PgStore {
    /// Reads the credential view in one snapshot, row by row into `each` (a million credentials
    /// never sit in a list on their way), after telling `starting` how many there are. Returns
    /// the log position the view reflects.
    pub async fn view_snapshot(
        &self,
        starting: impl FnOnce(usize),
        mut each: impl FnMut(Credential),
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for every read: the view is updated in the transaction that moves the head.
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        // The lock comes before the snapshot, which the first SELECT takes: a rebuild that has
        // dropped the view commits first, so the snapshot sees the new table and its rows. Taken
        // after, the snapshot would predate the new table's rows and find it empty.
        sqlx::query!("LOCK TABLE credentials IN ACCESS SHARE MODE").execute(&mut *tx).await?;
        let head = sqlx::query!("SELECT position, last_credential_id FROM chain_head").fetch_one(&mut *tx).await?;
        let position = head.position;
        let count = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM credentials"#).fetch_one(&mut *tx).await?;
        check_view_size(count, head.last_credential_id, position)?;
        starting(usize::try_from(count).unwrap_or_default());
        let mut rows = sqlx::query_as!(
            ViewRow,
            r#"SELECT id, uuid, server_uuid, name, type AS credential_type, hold, key_hash, key_prefix, created_at,
                      locked_at, expires_at, replaced_by, version
                 FROM credentials"#
        )
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            each(row.credential(position)?);
        }
        drop(rows);
        tx.commit().await?;
        Ok(position)
    }

    /// The read barrier's query: bounded, since every authenticated request waits for one. It
    /// runs on a connection of its own, outside the pool: the pool tests a connection with a
    /// round trip when it lends it and again when it takes it back, which made each head read
    /// three round trips instead of one (issue 18's profile). Head reads run one at a time.
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        let mut reader = self.head_reader.lock().await;
        let kept = reader.is_some();
        match self.read_head(&mut reader).await {
            // The server may have closed a kept connection since its last read (a restart):
            // that says nothing of now, so once more on a fresh one. A timeout is not retried:
            // the next request's read tries again.
            Err(StoreError::Database(_)) if kept => self.read_head(&mut reader).await,
            outcome => outcome,
        }
    }

    async fn read_head(&self, reader: &mut Option<PgConnection>) -> Result<i64, StoreError> {
        let read = async {
            let connection = match reader {
                Some(connection) => connection,
                None => reader.insert(self.pool.connect_options().connect().await?),
            };
            Ok(sqlx::query_scalar!("SELECT position FROM chain_head").fetch_one(connection).await?)
        };
        match tokio::time::timeout(self.query_timeout, read).await {
            Ok(Ok(position)) => Ok(position),
            Ok(Err(error)) => {
                *reader = None;
                Err(error)
            }
            Err(_) => {
                // It may be dead without knowing it (a network that drops packets silently).
                *reader = None;
                crate::metrics::metrics().database_timeouts.inc();
                Err(StoreError::TimedOut(self.query_timeout))
            }
        }
    }

    /// Up to `limit` events after `position`, in log order.
    pub async fn events_after(&self, position: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let outcome =
            tokio::time::timeout(self.query_timeout, super::events_after(&mut connection, position, limit)).await;
        self.settle(connection, outcome)
    }
}
