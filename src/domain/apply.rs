//! `apply`: the one function that folds an event into the credential it describes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::credential::Credential;
use super::event::{CredentialCreated, CredentialLocked, CredentialReplaced, Event};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("credential {0} is created twice")]
    AlreadyExists(Uuid),
    #[error("credential {0} is locked before it was created")]
    Missing(Uuid),
    #[error("credential {0} is locked again while already held")]
    AlreadyHeld(Uuid),
    #[error("credential {0} is replaced again while already replaced")]
    AlreadyReplaced(Uuid),
    #[error("credential {stream_id} expects version {expected}, the event has {actual}")]
    VersionGap { stream_id: Uuid, expected: i32, actual: i32 },
}

/// Folds one event of stream `stream_id` into the credential it describes.
///
/// The inline projection, `projections rebuild`, the writer's in-memory state and auditors'
/// replays all go through this one function, so they cannot disagree.
pub fn apply(
    current: Option<&Credential>,
    stream_id: Uuid,
    stream_version: i32,
    recorded_at: DateTime<Utc>,
    event: &Event,
) -> Result<Credential, ApplyError> {
    let expected = current.map_or(1, |credential| credential.version + 1);
    if stream_version != expected {
        return Err(ApplyError::VersionGap { stream_id, expected, actual: stream_version });
    }
    match (current, event) {
        (Some(_), Event::CredentialCreated(_)) => Err(ApplyError::AlreadyExists(stream_id)),
        (None, Event::CredentialLocked(_) | Event::CredentialReplaced(_)) => Err(ApplyError::Missing(stream_id)),
        (None, Event::CredentialCreated(created)) => Ok(created_credential(stream_id, recorded_at, created)),
        // `decide` never locks or replaces a held credential: revoking one again appends nothing.
        (Some(credential), Event::CredentialLocked(_) | Event::CredentialReplaced(_)) if credential.hold => {
            Err(ApplyError::AlreadyHeld(stream_id))
        }
        (Some(credential), Event::CredentialReplaced(_)) if credential.replaced_by.is_some() => {
            Err(ApplyError::AlreadyReplaced(stream_id))
        }
        (Some(credential), Event::CredentialReplaced(CredentialReplaced { replaced_by, locks_at })) => {
            let expires_at = credential.expires_at.map_or(*locks_at, |expiry| expiry.min(*locks_at));
            Ok(Credential {
                replaced_by: Some(*replaced_by),
                expires_at: Some(expires_at),
                version: stream_version,
                ..credential.clone()
            })
        }
        (Some(credential), Event::CredentialLocked(CredentialLocked { deadline, .. })) => Ok(Credential {
            hold: true,
            locked_at: Some(recorded_at),
            // A lock a request made ends the credential before any deadline, which then never
            // takes effect; a deadline's own lock keeps the deadline it records.
            expires_at: deadline.and(credential.expires_at),
            version: stream_version,
            ..credential.clone()
        }),
    }
}

fn created_credential(uuid: Uuid, recorded_at: DateTime<Utc>, created: &CredentialCreated) -> Credential {
    Credential {
        id: created.credential_id,
        uuid,
        server_uuid: created.server_uuid,
        name: created.name.clone(),
        credential_type: created.credential_type,
        hold: created.hold,
        key_hash: created.key_hash,
        key_prefix: created.key_prefix.clone(),
        created_at: recorded_at,
        locked_at: None,
        expires_at: created.expires_at,
        replaced_by: None,
        version: 1,
    }
}
