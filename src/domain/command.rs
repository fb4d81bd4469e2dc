//! Commands and `decide`: the rules that turn a request into events, or refuse it.

use uuid::Uuid;

use super::credential::{Credential, CredentialName, CredentialType, ExpiresAt, GracePeriod};
use super::event::PendingEvent;
use super::event::{Actor, CredentialCreated, CredentialLocked, CredentialReplaced, Event, LockReason};
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
        expires_at: Option<ExpiresAt>,
    },
    Regenerate {
        server_uuid: Uuid,
        credential_uuid: Uuid,
        new_credential_uuid: Uuid,
        new_key: KeyMaterial,
        /// How long the old key keeps working; none locks it at once.
        grace: GracePeriod,
    },
    Revoke {
        server_uuid: Uuid,
        credential_uuid: Uuid,
    },
    /// Records the lock of a credential whose deadline has passed, if none is recorded yet:
    /// deciding it again after the lock appends nothing, which is what makes the lock happen
    /// once however many instances ask. Only `Actor::Deadline` may ask.
    LockDue {
        server_uuid: Uuid,
        credential_uuid: Uuid,
    },
}

impl Command {
    /// The existing credentials whose state `decide` needs.
    pub fn touches(&self) -> Option<Uuid> {
        match self {
            Command::Create { .. } => None,
            Command::Regenerate { credential_uuid, .. }
            | Command::Revoke { credential_uuid, .. }
            | Command::LockDue { credential_uuid, .. } => Some(*credential_uuid),
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
    #[error("the credential was already replaced and is in its grace period; rotate its replacement instead")]
    CredentialReplaced,
    /// The expiry was in the future when the request arrived, but not when it was decided.
    #[error("expires_at must be in the future")]
    ExpiryNotInFuture,
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
    /// Also the answer for a credential that was already held, which appends nothing, and for
    /// `LockDue`.
    Revoked(Credential),
}

impl Command {
    pub fn server_uuid(&self) -> Uuid {
        match self {
            Command::Create { server_uuid, .. }
            | Command::Regenerate { server_uuid, .. }
            | Command::Revoke { server_uuid, .. }
            | Command::LockDue { server_uuid, .. } => *server_uuid,
        }
    }
}

/// Decides which events `command`, asked for by `actor` at instant `now` (the `recorded_at` its
/// events will have), produces against the current `ledger`, or why it may not. Events are
/// listed as `(stream_id, event)` in the order they are to be appended.
///
/// The actor is checked here, against the ledger the events will be appended to, and not only
/// when the request arrived: a key revoked, or past its deadline, while its request waited in a
/// batch writes nothing.
pub fn decide(
    ledger: &Ledger,
    actor: &Actor,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, Event)>, DomainError> {
    authorize(ledger, actor, command.server_uuid(), now)?;
    if (*actor == Actor::Deadline) != matches!(command, Command::LockDue { .. }) {
        return Err(DomainError::ActorNotAuthorized);
    }
    match command {
        Command::Create { server_uuid, credential_uuid, name, credential_type, hold, key, expires_at } => {
            if ledger.credential(*credential_uuid).is_some() {
                return Err(DomainError::CredentialExists);
            }
            let expires_at = expires_at.map(ExpiresAt::instant);
            if expires_at.is_some_and(|expires_at| expires_at <= now) {
                return Err(DomainError::ExpiryNotInFuture);
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
                expires_at,
            };
            Ok(vec![(*credential_uuid, Event::CredentialCreated(created))])
        }
        Command::Regenerate { server_uuid, credential_uuid, new_credential_uuid, new_key, grace } => {
            let old = owned(ledger, *server_uuid, *credential_uuid)?;
            if old.held_at(now) {
                return Err(DomainError::CredentialHeld);
            }
            if old.replaced_by.is_some() {
                return Err(DomainError::CredentialReplaced);
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
                expires_at: None,
            };
            let old_event = if *grace == GracePeriod::NONE {
                Event::CredentialLocked(CredentialLocked {
                    reason: LockReason::Rotated,
                    replaced_by: Some(*new_credential_uuid),
                    deadline: None,
                })
            } else {
                // A grace period never outlives the key's own expiry.
                let end = now + chrono::Duration::seconds(i64::from(grace.seconds()));
                let locks_at = old.expires_at.map_or(end, |expiry| expiry.min(end));
                Event::CredentialReplaced(CredentialReplaced { replaced_by: *new_credential_uuid, locks_at })
            };
            Ok(vec![(*new_credential_uuid, Event::CredentialCreated(created)), (old.uuid, old_event)])
        }
        Command::Revoke { server_uuid, credential_uuid } => {
            let credential = owned(ledger, *server_uuid, *credential_uuid)?;
            // Past its deadline it is held already; the deadline's own lock records why.
            if credential.held_at(now) {
                return Ok(Vec::new());
            }
            let locked = CredentialLocked { reason: LockReason::Revoked, replaced_by: None, deadline: None };
            Ok(vec![(credential.uuid, Event::CredentialLocked(locked))])
        }
        Command::LockDue { server_uuid, credential_uuid } => {
            let credential = owned(ledger, *server_uuid, *credential_uuid)?;
            Ok(credential
                .due_lock(now)
                .map(|locked| (credential.uuid, Event::CredentialLocked(locked)))
                .into_iter()
                .collect())
        }
    }
}

/// Whether `actor` may act for `server_uuid` at instant `now`, at the state `ledger` holds: an
/// operator at the command line and the deadline scheduler always may; a credential only while
/// it is a live API credential of that server. The ledger must hold the actor's credential (a
/// writer loads it with the touched ones).
pub fn authorize(ledger: &Ledger, actor: &Actor, server_uuid: Uuid, now: DateTime<Utc>) -> Result<(), DomainError> {
    match actor {
        Actor::Cli | Actor::Deadline => Ok(()),
        Actor::Credential { uuid } => match ledger.credential(*uuid) {
            Some(credential)
                if credential.server_uuid == server_uuid
                    && credential.credential_type == CredentialType::Api
                    && !credential.held_at(now) =>
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
    let decided = decide(ledger, actor, command, now)?;
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
        Command::Revoke { credential_uuid, .. } | Command::LockDue { credential_uuid, .. } => {
            Outcome::Revoked(get(*credential_uuid)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{apply, ApplyError};
    use crate::domain::{
        CredentialCreated, CredentialLocked, CredentialName, CredentialReplaced, CredentialType, KeyHash, KeyMaterial,
        LockReason,
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
            expires_at: None,
        }
    }

    fn regenerate(server_uuid: Uuid, uuid: u128, new_uuid: u128) -> Command {
        Command::Regenerate {
            server_uuid,
            credential_uuid: Uuid::from_u128(uuid),
            new_credential_uuid: Uuid::from_u128(new_uuid),
            new_key: key(new_uuid as u8),
            grace: GracePeriod::NONE,
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
                    expires_at: None,
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
                    replaced_by: Some(Uuid::from_u128(2)),
                    deadline: None,
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
                Event::CredentialLocked(CredentialLocked {
                    reason: LockReason::Revoked,
                    replaced_by: None,
                    deadline: None
                })
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
        let locked = Event::CredentialLocked(CredentialLocked {
            reason: LockReason::Revoked,
            replaced_by: None,
            deadline: None,
        });
        assert_eq!(apply(None, Uuid::nil(), 1, at(0), &locked), Err(ApplyError::Missing(Uuid::nil())));
        let ledger = given(&[create(1, CredentialType::Api, false)]);
        let current = ledger.credential(Uuid::from_u128(1));
        assert!(matches!(
            apply(current, Uuid::from_u128(1), 3, at(0), &locked),
            Err(ApplyError::VersionGap { expected: 2, actual: 3, .. })
        ));
    }

    fn seconds(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    fn with_grace(command: Command, grace: u32) -> Command {
        match command {
            Command::Regenerate { server_uuid, credential_uuid, new_credential_uuid, new_key, .. } => {
                let grace = GracePeriod::from_seconds(grace).unwrap();
                Command::Regenerate { server_uuid, credential_uuid, new_credential_uuid, new_key, grace }
            }
            other => other,
        }
    }

    fn lock_due(uuid: u128) -> Command {
        Command::LockDue { server_uuid: SERVER, credential_uuid: Uuid::from_u128(uuid) }
    }

    #[test]
    fn a_grace_rotation_keeps_the_old_key_until_its_deadline_then_one_lock_records_it() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        let handled = handle(&mut ledger, &with_grace(regenerate(SERVER, 1, 2), 60), &Actor::Cli, at(5)).unwrap();
        let deadline = at(5) + seconds(60);
        assert_eq!(
            events_of(&handled)[1],
            (
                Uuid::from_u128(1),
                2,
                Event::CredentialReplaced(CredentialReplaced { replaced_by: Uuid::from_u128(2), locks_at: deadline })
            )
        );
        let Outcome::Rotated { old, new } = handled.outcome else { panic!() };
        assert!(!old.hold && !new.hold);
        assert_eq!((old.expires_at, old.replaced_by), (Some(deadline), Some(Uuid::from_u128(2))));

        // The old key still acts until its deadline, and not from it.
        let by_old = Actor::Credential { uuid: Uuid::from_u128(1) };
        assert!(authorize(&ledger, &by_old, SERVER, deadline - chrono::Duration::microseconds(1)).is_ok());
        assert_eq!(authorize(&ledger, &by_old, SERVER, deadline), Err(DomainError::ActorNotAuthorized));
        // It is rotated once: its replacement is what to rotate next.
        assert_eq!(
            handle(&mut ledger, &with_grace(regenerate(SERVER, 1, 3), 60), &Actor::Cli, at(6)),
            Err(DomainError::CredentialReplaced)
        );
        assert_eq!(
            handle(&mut ledger, &regenerate(SERVER, 1, 3), &Actor::Cli, deadline),
            Err(DomainError::CredentialHeld)
        );

        let early = handle(&mut ledger, &lock_due(1), &Actor::Deadline, deadline - seconds(1)).unwrap();
        assert!(early.events.is_empty(), "nothing is due before the deadline");
        let late = deadline + seconds(3);
        let locked = handle(&mut ledger, &lock_due(1), &Actor::Deadline, late).unwrap();
        assert_eq!(
            events_of(&locked),
            vec![(
                Uuid::from_u128(1),
                3,
                Event::CredentialLocked(CredentialLocked {
                    reason: LockReason::Rotated,
                    replaced_by: Some(Uuid::from_u128(2)),
                    deadline: Some(deadline),
                })
            )]
        );
        let Outcome::Revoked(old) = locked.outcome else { panic!() };
        assert_eq!((old.hold, old.locked_at, old.expires_at), (true, Some(late), Some(deadline)));
        let again = handle(&mut ledger, &lock_due(1), &Actor::Deadline, late + seconds(1)).unwrap();
        assert!(again.events.is_empty(), "a second instance deciding again appends nothing");
    }

    #[test]
    fn a_revoke_in_the_grace_period_is_the_only_lock() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        handle(&mut ledger, &with_grace(regenerate(SERVER, 1, 2), 60), &Actor::Cli, at(0)).unwrap();
        let revoked = handle(&mut ledger, &revoke(SERVER, 1), &Actor::Cli, at(10)).unwrap();
        assert!(matches!(
            &events_of(&revoked)[0].2,
            Event::CredentialLocked(CredentialLocked { reason: LockReason::Revoked, deadline: None, .. })
        ));
        let Outcome::Revoked(old) = revoked.outcome else { panic!() };
        assert_eq!(old.expires_at, None, "the deadline will never take effect");
        assert!(handle(&mut ledger, &lock_due(1), &Actor::Deadline, at(0) + seconds(61)).unwrap().events.is_empty());
    }

    #[test]
    fn an_expiry_is_checked_when_the_create_commits_and_locks_with_reason_expired() {
        let mut ledger = given(&[]);
        let mut expiring = create(1, CredentialType::Smtp, false);
        if let Command::Create { expires_at, .. } = &mut expiring {
            *expires_at = Some(ExpiresAt::at(at(10), at(0)).unwrap());
        }
        assert_eq!(handle(&mut ledger, &expiring, &Actor::Cli, at(10)), Err(DomainError::ExpiryNotInFuture));
        let created = handle(&mut ledger, &expiring, &Actor::Cli, at(1)).unwrap();
        assert_eq!(created.events[0].event.schema_version(), 2);
        // Revoking once it has passed appends nothing: it is held already.
        assert!(handle(&mut ledger, &revoke(SERVER, 1), &Actor::Cli, at(10)).unwrap().events.is_empty());
        let locked = handle(&mut ledger, &lock_due(1), &Actor::Deadline, at(11)).unwrap();
        assert!(matches!(&events_of(&locked)[0].2,
            Event::CredentialLocked(CredentialLocked { reason: LockReason::Expired, replaced_by: None, deadline: Some(d) })
            if *d == at(10)));
    }

    #[test]
    fn a_grace_period_never_outlives_the_key_s_expiry() {
        let mut ledger = given(&[]);
        let mut expiring = create(1, CredentialType::Api, false);
        if let Command::Create { expires_at, .. } = &mut expiring {
            *expires_at = Some(ExpiresAt::at(at(30), at(0)).unwrap());
        }
        handle(&mut ledger, &expiring, &Actor::Cli, at(0)).unwrap();
        let handled = handle(&mut ledger, &with_grace(regenerate(SERVER, 1, 2), 3600), &Actor::Cli, at(1)).unwrap();
        let Outcome::Rotated { old, .. } = handled.outcome else { panic!() };
        assert_eq!(old.expires_at, Some(at(30)));
    }

    #[test]
    fn only_the_scheduler_records_deadlines_and_it_does_nothing_else() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        assert_eq!(handle(&mut ledger, &lock_due(1), &Actor::Cli, at(1)), Err(DomainError::ActorNotAuthorized));
        assert_eq!(
            handle(&mut ledger, &revoke(SERVER, 1), &Actor::Deadline, at(1)),
            Err(DomainError::ActorNotAuthorized)
        );
    }

    /// One random step: (kind, target, server, flag, amount of seconds).
    fn command_strategy() -> impl Strategy<Value = (u8, u8, u8, bool, u8)> {
        (0u8..4, 0u8..16, 0u8..2, any::<bool>(), 0u8..8)
    }

    proptest! {
        /// Replaying the events of any accepted command sequence rebuilds exactly the state the
        /// commands left behind (the property the projection rebuild relies on), and `verify`'s
        /// rules accept every log `decide` writes: with expiries, grace periods and deadline
        /// locks at random times.
        #[test]
        fn replaying_the_events_rebuilds_the_same_ledger(ops in proptest::collection::vec(command_strategy(), 1..80)) {
            let mut live = Ledger::new(0);
            let mut log = Vec::new();
            let mut next_uuid = 1u128;
            let mut now = at(0);
            for (kind, target, server, flag, amount) in ops {
                // Time moves on by 0 to 7 seconds a step, so deadlines pass mid-history.
                now += seconds(i64::from(amount));
                let server_uuid = if server == 0 { SERVER } else { OTHER_SERVER };
                let target = u128::from(target) % next_uuid + 1;
                let (command, actor) = match kind {
                    0 => {
                        next_uuid += 1;
                        let mut command = create(next_uuid, CredentialType::Api, flag && amount == 0);
                        if let Command::Create { server_uuid: s, expires_at, .. } = &mut command {
                            *s = server_uuid;
                            if flag {
                                *expires_at = ExpiresAt::at(now + seconds(i64::from(amount) + 1), now).ok();
                            }
                        }
                        (command, Actor::Cli)
                    }
                    1 => {
                        next_uuid += 1;
                        let grace = if flag { u32::from(amount) * 2 } else { 0 };
                        (with_grace(regenerate(server_uuid, target, next_uuid), grace), Actor::Cli)
                    }
                    2 => (revoke(server_uuid, target), Actor::Cli),
                    _ => (Command::LockDue { server_uuid, credential_uuid: Uuid::from_u128(target) }, Actor::Deadline),
                };
                if let Ok(handled) = handle(&mut live, &command, &actor, now) {
                    log.extend(handled.events.into_iter().map(|event| (event, now, actor.clone())));
                }
            }
            let mut replayed = Ledger::new(0);
            let mut rules = crate::domain::LogRules::new();
            for (event, recorded_at, actor) in &log {
                replayed.record(event.stream_id, event.stream_version, *recorded_at, &event.event).unwrap();
                let recorded = crate::domain::RecordedEvent {
                    stream_id: event.stream_id,
                    stream_version: event.stream_version,
                    server_uuid: event.server_uuid,
                    recorded_at: *recorded_at,
                    actor,
                    event: &event.event,
                };
                prop_assert!(rules.record(recorded).is_ok(), "{:?}: {:?}", event, rules.record(recorded).err());
            }
            prop_assert_eq!(rules.finish(), Ok(()));
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
