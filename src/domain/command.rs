//! Commands and `decide`: the rules that turn a request into events, or refuse it.

use uuid::Uuid;

use super::credential::{Credential, CredentialName, CredentialType};
use super::event::PendingEvent;
use super::event::{Actor, CredentialCreated, CredentialLocked, Event, LockReason};
use super::key::{ApiKey, KeyHash};
use super::ledger::Ledger;
use chrono::{DateTime, Utc};

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

/// The result of a command that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub events: Vec<PendingEvent>,
    pub outcome: Outcome,
}

/// Decides `command` on behalf of `actor` against `ledger`, applies its events there and says
/// what happened. A refused command leaves the ledger as it was.
pub fn handle(
    ledger: &mut Ledger,
    command: &Command,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Handled, DomainError> {
    let decided = decide(ledger, actor, command)?;
    let mut events = Vec::with_capacity(decided.len());
    for (stream_id, event) in decided {
        let stream_version = ledger.credential(stream_id).map_or(1, |credential| credential.version + 1);
        let credential = ledger
            .record_decided(stream_id, stream_version, now, &event)
            .map_err(|error| DomainError::Inconsistent(error.to_string()))?;
        let server_uuid = credential.server_uuid;
        events.push(PendingEvent { stream_id, stream_version, server_uuid, event });
    }
    let outcome = outcome(ledger, command)?;
    Ok(Handled { events, outcome })
}

fn outcome(ledger: &Ledger, command: &Command) -> Result<Outcome, DomainError> {
    let get = |uuid: Uuid| {
        ledger.credential(uuid).cloned().ok_or_else(|| DomainError::Inconsistent(format!("credential {uuid} vanished")))
    };
    Ok(match command {
        Command::Create { credential_uuid, .. } => Outcome::Created(get(*credential_uuid)?),
        Command::Regenerate { credential_uuid, new_credential_uuid, .. } => {
            Outcome::Rotated { old: get(*credential_uuid)?, new: get(*new_credential_uuid)? }
        }
        Command::Revoke { credential_uuid, .. } => Outcome::Revoked(get(*credential_uuid)?),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{apply, ApplyError};
    use crate::domain::{
        CredentialCreated, CredentialLocked, CredentialName, CredentialType, KeyHash, KeyMaterial, LockReason,
    };

    const SERVER: Uuid = Uuid::from_u128(0xA);
    const OTHER_SERVER: Uuid = Uuid::from_u128(0xB);

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, second).unwrap()
    }

    fn key(n: u8) -> KeyMaterial {
        KeyMaterial { hash: KeyHash([n; 32]), display_prefix: format!("vml_{n:04}") }
    }

    fn create(uuid: u128, credential_type: CredentialType, hold: bool) -> Command {
        Command::Create {
            server_uuid: SERVER,
            credential_uuid: Uuid::from_u128(uuid),
            name: CredentialName::parse("Production API").unwrap(),
            credential_type,
            hold,
            key: key(uuid as u8),
        }
    }

    fn regenerate(server_uuid: Uuid, uuid: u128, new_uuid: u128) -> Command {
        Command::Regenerate {
            server_uuid,
            credential_uuid: Uuid::from_u128(uuid),
            new_credential_uuid: Uuid::from_u128(new_uuid),
            new_key: key(new_uuid as u8),
        }
    }

    fn revoke(server_uuid: Uuid, uuid: u128) -> Command {
        Command::Revoke { server_uuid, credential_uuid: Uuid::from_u128(uuid) }
    }

    fn given(commands: &[Command]) -> Ledger {
        let mut ledger = Ledger::new(0);
        for command in commands {
            handle(&mut ledger, command, &Actor::Cli, at(0)).unwrap();
        }
        ledger
    }

    fn events_of(handled: &Handled) -> Vec<(Uuid, i32, Event)> {
        handled.events.iter().map(|e| (e.stream_id, e.stream_version, e.event.clone())).collect()
    }

    #[test]
    fn create_records_one_event_with_the_next_id_and_no_key() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        let handled = handle(&mut ledger, &create(2, CredentialType::Smtp, true), &Actor::Cli, at(1)).unwrap();
        assert_eq!(
            events_of(&handled),
            vec![(
                Uuid::from_u128(2),
                1,
                Event::CredentialCreated(CredentialCreated {
                    credential_id: 2,
                    server_uuid: SERVER,
                    name: CredentialName::parse("Production API").unwrap(),
                    credential_type: CredentialType::Smtp,
                    hold: true,
                    key_hash: KeyHash([2; 32]),
                    key_prefix: "vml_0002".into(),
                    replaces: None,
                })
            )]
        );
        let Outcome::Created(credential) = handled.outcome else { panic!("{:?}", handled.outcome) };
        assert_eq!((credential.id, credential.hold, credential.created_at), (2, true, at(1)));
    }

    #[test]
    fn regenerate_creates_the_replacement_then_locks_the_old_one() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        let handled = handle(&mut ledger, &regenerate(SERVER, 1, 2), &Actor::Cli, at(5)).unwrap();
        let events = events_of(&handled);
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], (uuid, 1, Event::CredentialCreated(c))
            if *uuid == Uuid::from_u128(2) && c.replaces == Some(Uuid::from_u128(1))
               && c.credential_type == CredentialType::Api && !c.hold && c.credential_id == 2));
        assert_eq!(
            events[1],
            (
                Uuid::from_u128(1),
                2,
                Event::CredentialLocked(CredentialLocked {
                    reason: LockReason::Rotated,
                    replaced_by: Some(Uuid::from_u128(2))
                })
            )
        );
        let Outcome::Rotated { old, new } = handled.outcome else { panic!() };
        assert!(old.hold && !new.hold);
        assert_eq!((old.id, new.id, new.name.as_str()), (1, 2, "Production API"));
        assert_eq!(old.locked_at, Some(at(5)));
    }

    #[test]
    fn regenerating_a_held_credential_is_refused_and_changes_nothing() {
        let mut ledger = given(&[create(1, CredentialType::Api, false), revoke(SERVER, 1)]);
        let before = ledger.clone();
        assert_eq!(
            handle(&mut ledger, &regenerate(SERVER, 1, 2), &Actor::Cli, at(9)),
            Err(DomainError::CredentialHeld)
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn revoke_locks_once_and_is_idempotent_after() {
        let mut ledger = given(&[create(1, CredentialType::Smtp, false)]);
        let first = handle(&mut ledger, &revoke(SERVER, 1), &Actor::Cli, at(1)).unwrap();
        assert_eq!(
            events_of(&first),
            vec![(
                Uuid::from_u128(1),
                2,
                Event::CredentialLocked(CredentialLocked { reason: LockReason::Revoked, replaced_by: None })
            )]
        );
        let again = handle(&mut ledger, &revoke(SERVER, 1), &Actor::Cli, at(2)).unwrap();
        assert!(again.events.is_empty());
        assert_eq!(again.outcome, first.outcome);
    }

    #[test]
    fn another_servers_credential_does_not_exist() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        assert_eq!(
            handle(&mut ledger, &revoke(OTHER_SERVER, 1), &Actor::Cli, at(1)),
            Err(DomainError::CredentialNotFound)
        );
        assert_eq!(
            handle(&mut ledger, &regenerate(OTHER_SERVER, 1, 2), &Actor::Cli, at(1)),
            Err(DomainError::CredentialNotFound)
        );
        assert_eq!(handle(&mut ledger, &revoke(SERVER, 99), &Actor::Cli, at(1)), Err(DomainError::CredentialNotFound));
    }

    #[test]
    fn apply_refuses_a_log_out_of_order() {
        let locked = Event::CredentialLocked(CredentialLocked { reason: LockReason::Revoked, replaced_by: None });
        assert_eq!(apply(None, Uuid::nil(), 1, at(0), &locked), Err(ApplyError::Missing(Uuid::nil())));
        let ledger = given(&[create(1, CredentialType::Api, false)]);
        let current = ledger.credential(Uuid::from_u128(1));
        assert!(matches!(
            apply(current, Uuid::from_u128(1), 3, at(0), &locked),
            Err(ApplyError::VersionGap { expected: 2, actual: 3, .. })
        ));
    }

    fn command_strategy() -> impl Strategy<Value = (u8, u8, u8, bool)> {
        (0u8..3, 0u8..16, 0u8..2, any::<bool>())
    }

    proptest! {
        /// Replaying the events of any accepted command sequence rebuilds exactly the state the
        /// commands left behind: the property the projection rebuild relies on.
        #[test]
        fn replaying_the_events_rebuilds_the_same_ledger(ops in proptest::collection::vec(command_strategy(), 1..60)) {
            let mut live = Ledger::new(0);
            let mut log = Vec::new();
            let mut next_uuid = 1u128;
            for (i, (kind, target, server, flag)) in ops.into_iter().enumerate() {
                let server_uuid = if server == 0 { SERVER } else { OTHER_SERVER };
                let target = u128::from(target) % next_uuid + 1;
                let command = match kind {
                    0 => {
                        next_uuid += 1;
                        let mut command = create(next_uuid, CredentialType::Api, flag);
                        if let Command::Create { server_uuid: s, .. } = &mut command { *s = server_uuid; }
                        command
                    }
                    1 => { next_uuid += 1; regenerate(server_uuid, target, next_uuid) }
                    _ => revoke(server_uuid, target),
                };
                if let Ok(handled) = handle(&mut live, &command, &Actor::Cli, at(i as u32 % 60)) {
                    log.extend(handled.events);
                }
            }
            let mut replayed = Ledger::new(0);
            for event in &log {
                let recorded_at = live.credential(event.stream_id).map(|c| if event.stream_version == 1 { c.created_at } else { c.locked_at.unwrap() });
                replayed.record(event.stream_id, event.stream_version, recorded_at.unwrap(), &event.event).unwrap();
            }
            let mut live_rows: Vec<_> = live.credentials().cloned().collect();
            let mut replayed_rows: Vec<_> = replayed.credentials().cloned().collect();
            live_rows.sort_by_key(|c| c.id);
            replayed_rows.sort_by_key(|c| c.id);
            prop_assert_eq!(live_rows, replayed_rows);
            prop_assert_eq!(live.last_credential_id(), replayed.last_credential_id());
            // Ids are handed out without gaps or repeats.
            let ids: Vec<i64> = { let mut ids: Vec<_> = live.credentials().map(|c| c.id).collect(); ids.sort(); ids };
            prop_assert_eq!(ids, (1..=live.last_credential_id()).collect::<Vec<_>>());
        }
    }
}
