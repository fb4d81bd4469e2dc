//! Reads of the credential view and writes of operational usage data.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::KeyHash;

/// Who is calling: an API credential that authenticated, and its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub credential_uuid: Uuid,
    pub server_uuid: Uuid,
}

/// A credential as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialListing {
    pub id: i64,
    pub uuid: Uuid,
    pub name: String,
    pub credential_type: String,
    pub hold: bool,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Store {
    /// The caller a key belongs to, if it is a non-held API credential of an existing server.
    pub async fn authenticate(&self, key_hash: KeyHash) -> Result<Option<Caller>, StoreError> {
        let caller = sqlx::query_as!(
            Caller,
            r#"SELECT c.uuid AS credential_uuid, c.server_uuid
                 FROM credentials c
                 JOIN servers s ON s.uuid = c.server_uuid
                WHERE c.key_hash = $1 AND c.type = 'API' AND NOT c.hold"#,
            &key_hash.0[..],
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(caller)
    }

    pub async fn list_credentials(&self, server_uuid: Uuid) -> Result<Vec<CredentialListing>, StoreError> {
        let rows = sqlx::query_as!(
            CredentialListing,
            r#"SELECT c.id, c.uuid, c.name, c.type AS credential_type, c.hold,
                      u.last_used_at AS "last_used_at?"
                 FROM credentials c
                 LEFT JOIN credential_usage u ON u.credential_uuid = c.uuid
                WHERE c.server_uuid = $1
                ORDER BY c.id"#,
            server_uuid,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Records when credentials were last used; an older time never overwrites a newer one.
    pub async fn record_usage(&self, usage: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        let (uuids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = usage.iter().copied().unzip();
        sqlx::query!(
            r#"INSERT INTO credential_usage (credential_uuid, last_used_at)
               SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[])
               ON CONFLICT (credential_uuid) DO UPDATE
                  SET last_used_at = GREATEST(credential_usage.last_used_at, EXCLUDED.last_used_at)"#,
            &uuids,
            &times,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
