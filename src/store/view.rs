//! The credential view as every backend reads it back: a row checked into a domain
//! `Credential`, and the check that the view holds one row per credential the log created.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{Credential, CredentialName, CredentialType, KeyHash};

pub(super) struct ViewRow {
    pub(super) id: i64,
    pub(super) uuid: Uuid,
    pub(super) server_uuid: Uuid,
    pub(super) name: String,
    pub(super) credential_type: String,
    pub(super) hold: bool,
    pub(super) key_hash: Vec<u8>,
    pub(super) key_prefix: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) locked_at: Option<DateTime<Utc>>,
    pub(super) expires_at: Option<DateTime<Utc>>,
    pub(super) replaced_by: Option<Uuid>,
    pub(super) version: i32,
}

impl ViewRow {
    /// The credential, if the row is one; `position` is the log position the view reflects.
    pub(super) fn credential(self, position: i64) -> Result<Credential, StoreError> {
        let corrupt =
            |reason: &str| StoreError::Corrupt { position, reason: format!("view row {}: {reason}", self.uuid) };
        Ok(Credential {
            id: self.id,
            uuid: self.uuid,
            server_uuid: self.server_uuid,
            name: CredentialName::parse(&self.name).map_err(|_| corrupt("invalid name"))?,
            credential_type: CredentialType::parse(&self.credential_type).map_err(|_| corrupt("invalid type"))?,
            hold: self.hold,
            key_hash: KeyHash::from_slice(&self.key_hash).ok_or_else(|| corrupt("invalid key hash"))?,
            key_prefix: self.key_prefix,
            created_at: self.created_at,
            locked_at: self.locked_at,
            expires_at: self.expires_at,
            replaced_by: self.replaced_by,
            version: self.version,
        })
    }
}

/// Credential ids are handed out without gaps, one view row each: a view with another number of
/// rows than the head's last id is not the log's (a rebuild was interrupted, or it was edited).
pub(super) fn check_view_size(rows: i64, last_credential_id: i64, position: i64) -> Result<(), StoreError> {
    if rows == last_credential_id {
        return Ok(());
    }
    Err(StoreError::InconsistentView {
        position,
        reason: format!(
            "it has {rows} rows where the log created {last_credential_id} credentials: run `projections rebuild`"
        ),
    })
}
