//! Operational usage data (not events): when each credential last authenticated.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PgStore, StoreError};

impl PgStore {
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

    /// Uses recorded (by any instance) since `since`.
    pub async fn usage_since(&self, since: DateTime<Utc>) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        let rows =
            sqlx::query!("SELECT credential_uuid, last_used_at FROM credential_usage WHERE last_used_at > $1", since,)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|row| (row.credential_uuid, row.last_used_at)).collect())
    }
}
