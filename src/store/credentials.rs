//! The caller, and writes of operational usage data.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};

/// Who is calling: an API credential that authenticated, and its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub credential_uuid: Uuid,
    pub server_uuid: Uuid,
}

impl Store {
    /// Records when credentials were last used; an older time never overwrites a newer one.
    pub async fn record_usage(&self, usage: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        let (uuids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = usage.iter().copied().unzip();
        let mut connection = self.pool.acquire().await?;
        let write = sqlx::query!(
            r#"INSERT INTO credential_usage (credential_uuid, last_used_at)
               SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[])
               ON CONFLICT (credential_uuid) DO UPDATE
                  SET last_used_at = GREATEST(credential_usage.last_used_at, EXCLUDED.last_used_at)"#,
            &uuids,
            &times,
        )
        .execute(&mut *connection);
        let outcome = tokio::time::timeout(self.query_timeout, async { Ok(write.await.map(drop)?) }).await;
        self.settle(connection, outcome)
    }
}
