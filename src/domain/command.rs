//! Commands and `decide`: the rules that turn a request into events, or refuse it.

use uuid::Uuid;

use super::credential::{Credential, CredentialName, CredentialType};
use super::event::{Actor, CredentialCreated, CredentialLocked, Event, LockReason};
use super::key::{ApiKey, KeyHash};
use super::ledger::Ledger;

/// What a new credential's key looks like to the ledger: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub hash: KeyHash,
    pub display_prefix: String,
}

impl From<&ApiKey> for KeyMaterial {
    fn from(key: &ApiKey) -> Self {
        KeyMaterial { hash: key.hash(), display_prefix: key.display_prefix().to_owned() }
    }
}

/// A request to change the ledger, on behalf of `server_uuid`. Identifiers and key material
/// are chosen by the caller, so that deciding stays deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create {
        server_uuid: Uuid,
        credential_uuid: Uuid,
        name: CredentialName,
        credential_type: CredentialType,
        hold: bool,
        key: KeyMaterial,
    },
    Regenerate {
        server_uuid: Uuid,
        credential_uuid: Uuid,
        new_credential_uuid: Uuid,
        new_key: KeyMaterial,
    },
    Revoke {
        server_uuid: Uuid,
        credential_uuid: Uuid,
    },
}

impl Command {
    /// The existing credentials whose state `decide` needs.
    pub fn touches(&self) -> Option<Uuid> {
        match self {
            Command::Create { .. } => None,
            Command::Regenerate { credential_uuid, .. } | Command::Revoke { credential_uuid, .. } => {
                Some(*credential_uuid)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Unknown, or another server's: the caller cannot tell the two apart.
    #[error("no credential with that uuid")]
    CredentialNotFound,
    #[error("the credential is held and cannot be regenerated")]
    CredentialHeld,
    #[error("a credential with that uuid already exists")]
    CredentialExists,
    /// The calling credential was held, or is not one that may act for the server, at the log
    /// position where the command's events would go: it is refused as if its key were unknown.
    #[error("the calling credential may not act for this server")]
    ActorNotAuthorized,
    #[error("the ledger is inconsistent: {0}")]
    Inconsistent(String),
}

/// What a successful command did, in the terms its response needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(Credential),
    Rotated {
        old: Credential,
        new: Credential,
    },
    /// Also the answer for a credential that was already held, which appends nothing.
    Revoked(Credential),
}

impl Command {
    pub fn server_uuid(&self) -> Uuid {
        match self {
            Command::Create { server_uuid, .. }
            | Command::Regenerate { server_uuid, .. }
            | Command::Revoke { server_uuid, .. } => *server_uuid,
        }
    }
}

/// Decides which events `command`, asked for by `actor`, produces against the current `ledger`,
/// or why it may not. Events are listed as `(stream_id, event)` in the order they are to be
/// appended.
///
/// The actor is checked here, against the ledger the events will be appended to, and not only
/// when the request arrived: a key revoked while its request waited in a batch writes nothing.
pub fn decide(ledger: &Ledger, actor: &Actor, command: &Command) -> Result<Vec<(Uuid, Event)>, DomainError> {
    authorize(ledger, actor, command.server_uuid())?;
    match command {
        Command::Create { server_uuid, credential_uuid, name, credential_type, hold, key } => {
            if ledger.credential(*credential_uuid).is_some() {
                return Err(DomainError::CredentialExists);
            }
            let created = CredentialCreated {
                credential_id: ledger.next_credential_id(),
                server_uuid: *server_uuid,
                name: name.clone(),
                credential_type: *credential_type,
                hold: *hold,
                key_hash: key.hash,
                key_prefix: key.display_prefix.clone(),
                replaces: None,
            };
            Ok(vec![(*credential_uuid, Event::CredentialCreated(created))])
        }
        Command::Regenerate { server_uuid, credential_uuid, new_credential_uuid, new_key } => {
            let old = owned(ledger, *server_uuid, *credential_uuid)?;
            if old.hold {
                return Err(DomainError::CredentialHeld);
            }
            if ledger.credential(*new_credential_uuid).is_some() {
                return Err(DomainError::CredentialExists);
            }
            let created = CredentialCreated {
                credential_id: ledger.next_credential_id(),
                server_uuid: *server_uuid,
                name: old.name.clone(),
                credential_type: old.credential_type,
                hold: false,
                key_hash: new_key.hash,
                key_prefix: new_key.display_prefix.clone(),
                replaces: Some(old.uuid),
            };
            let locked = CredentialLocked { reason: LockReason::Rotated, replaced_by: Some(*new_credential_uuid) };
            Ok(vec![
                (*new_credential_uuid, Event::CredentialCreated(created)),
                (old.uuid, Event::CredentialLocked(locked)),
            ])
        }
        Command::Revoke { server_uuid, credential_uuid } => {
            let credential = owned(ledger, *server_uuid, *credential_uuid)?;
            if credential.hold {
                return Ok(Vec::new());
            }
            let locked = CredentialLocked { reason: LockReason::Revoked, replaced_by: None };
            Ok(vec![(credential.uuid, Event::CredentialLocked(locked))])
        }
    }
}

/// Whether `actor` may act for `server_uuid` at the state `ledger` holds: an operator at the
/// command line always may; a credential only while it is a live API credential of that server.
/// The ledger must hold the actor's credential (a writer loads it with the touched ones).
pub fn authorize(ledger: &Ledger, actor: &Actor, server_uuid: Uuid) -> Result<(), DomainError> {
    match actor {
        Actor::Cli => Ok(()),
        Actor::Credential { uuid } => match ledger.credential(*uuid) {
            Some(credential)
                if credential.server_uuid == server_uuid
                    && credential.credential_type == CredentialType::Api
                    && !credential.hold =>
            {
                Ok(())
            }
            _ => Err(DomainError::ActorNotAuthorized),
        },
    }
}

fn owned(ledger: &Ledger, server_uuid: Uuid, credential_uuid: Uuid) -> Result<&Credential, DomainError> {
    ledger
        .credential(credential_uuid)
        .filter(|credential| credential.server_uuid == server_uuid)
        .ok_or(DomainError::CredentialNotFound)
}
