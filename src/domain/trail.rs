//! The rules a recorded log must follow: exactly the sequences `decide` can produce. `verify`
//! holds every event of a ledger to them, so an event the service could never have written
//! (an actor acting after its own lock, a second lock, a rotation without its lock) is named
//! even when every hash was recomputed to match.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::apply::ApplyError;
use super::command::authorize;
use super::credential::Credential;
use super::credential::GracePeriod;
use super::event::{Actor, CredentialCreated, CredentialLocked, Event, LockReason};
use super::ledger::Ledger;

/// One event as the log holds it, with what the rules need of its row.
#[derive(Debug, Clone, Copy)]
pub struct RecordedEvent<'a> {
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub server_uuid: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub actor: &'a Actor,
    pub event: &'a Event,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("the actor {0} was not a live API credential of this server at this position")]
    ActorNotAuthorized(String),
    #[error("credential id {actual} where {expected} was the next to hand out")]
    CredentialId { expected: i64, actual: i64 },
    #[error("credential ids must increase along the log: {actual} after {last}")]
    CredentialIdOrder { last: i64, actual: i64 },
    #[error("the event's server_uuid differs from its credential's")]
    ServerMismatch,
    #[error("a rotation's replacement must be followed at once by the old credential's lock")]
    RotationUnfinished,
    #[error("a rotation must replace a live credential of the same server, name and type, not held")]
    InvalidReplacement,
    #[error("a lock with reason `rotated` must follow its replacement's creation, and only then")]
    UnexpectedRotation,
    #[error("a lock with reason `revoked` names no replacement")]
    RevokedWithReplacement,
    #[error("the credential's deadline had passed: only its deadline lock may follow")]
    PastDeadline,
    #[error("a deadline lock must record the credential's own deadline, once it has passed, by the scheduler")]
    UnexpectedDeadlineLock,
    #[error("a deadline must lie after the event that sets it, within its bounds")]
    DeadlineOutOfBounds,
}

/// Folds a log in order and refuses the first event `decide` could not have produced.
#[derive(Debug, Clone, Default)]
pub struct LogRules {
    ledger: Ledger,
    /// A rotation's replacement was created: `(old, new)`, whose lock must come next.
    rotating: Option<(Uuid, Uuid)>,
    /// Some events were left out (a one-server export): credential ids may then skip.
    partial: bool,
}

impl LogRules {
    pub fn new() -> Self {
        LogRules::default()
    }

    /// Other servers' events were left out here: their credentials cannot be acted on by
    /// this server's, so the rules still hold, except that ids may skip.
    pub fn skip(&mut self) {
        self.partial = true;
    }

    pub fn record(&mut self, recorded: RecordedEvent<'_>) -> Result<&Credential, Violation> {
        let RecordedEvent { stream_id, server_uuid, event, actor, recorded_at, .. } = recorded;
        let finishes_rotation = match (self.rotating, event) {
            (Some((old, new)), Event::CredentialLocked(locked)) => {
                stream_id == old
                    && locked.reason == LockReason::Rotated
                    && locked.replaced_by == Some(new)
                    && locked.deadline.is_none()
            }
            (Some((old, new)), Event::CredentialReplaced(replaced)) => stream_id == old && replaced.replaced_by == new,
            (Some(_), Event::CredentialCreated(_)) => false,
            (None, _) => false,
        };
        if self.rotating.is_some() && !finishes_rotation {
            return Err(Violation::RotationUnfinished);
        }
        let deadline_lock = match event {
            Event::CredentialLocked(locked) => locked.deadline.is_some(),
            _ => false,
        };
        if (*actor == Actor::Deadline) != deadline_lock {
            return Err(if deadline_lock {
                Violation::UnexpectedDeadlineLock
            } else {
                Violation::ActorNotAuthorized(describe(actor))
            });
        }
        if let Some(current) = self.ledger.credential(stream_id) {
            if current.server_uuid != server_uuid {
                return Err(Violation::ServerMismatch);
            }
            let due = current.due_lock(recorded_at);
            match event {
                Event::CredentialLocked(locked) if deadline_lock && due.as_ref() != Some(locked) => {
                    return Err(Violation::UnexpectedDeadlineLock);
                }
                _ if due.is_some() && !deadline_lock => return Err(Violation::PastDeadline),
                _ => {}
            }
        }
        match event {
            Event::CredentialCreated(created) => self.check_created(stream_id, server_uuid, recorded_at, created)?,
            Event::CredentialReplaced(replaced) => {
                if self.rotating.take().is_none() {
                    return Err(Violation::UnexpectedRotation);
                }
                let longest = chrono::Duration::seconds(i64::from(GracePeriod::MAX_SECONDS));
                if replaced.locks_at <= recorded_at || replaced.locks_at > recorded_at + longest {
                    return Err(Violation::DeadlineOutOfBounds);
                }
            }
            Event::CredentialLocked(locked) => self.check_locked(locked)?,
        }
        authorize(&self.ledger, actor, server_uuid, recorded_at)
            .map_err(|_| Violation::ActorNotAuthorized(describe(actor)))?;
        Ok(self.ledger.record(stream_id, recorded.stream_version, recorded_at, event)?)
    }

    /// The log ended: a rotation cut in half is refused too.
    pub fn finish(&self) -> Result<(), Violation> {
        match self.rotating {
            Some(_) => Err(Violation::RotationUnfinished),
            None => Ok(()),
        }
    }

    fn check_created(
        &mut self,
        stream_id: Uuid,
        server_uuid: Uuid,
        recorded_at: DateTime<Utc>,
        created: &CredentialCreated,
    ) -> Result<(), Violation> {
        if created.expires_at.is_some_and(|expires_at| expires_at <= recorded_at) {
            return Err(Violation::DeadlineOutOfBounds);
        }
        let (expected, last) = (self.ledger.next_credential_id(), self.ledger.last_credential_id());
        if self.partial && created.credential_id <= last {
            return Err(Violation::CredentialIdOrder { last, actual: created.credential_id });
        }
        if !self.partial && created.credential_id != expected {
            return Err(Violation::CredentialId { expected, actual: created.credential_id });
        }
        if created.server_uuid != server_uuid {
            return Err(Violation::ServerMismatch);
        }
        if let Some(old) = created.replaces {
            let replaceable = self.ledger.credential(old).is_some_and(|old| {
                old.server_uuid == server_uuid
                    && !old.held_at(recorded_at)
                    && old.replaced_by.is_none()
                    && old.name == created.name
                    && old.credential_type == created.credential_type
            });
            if !replaceable || created.hold {
                return Err(Violation::InvalidReplacement);
            }
            self.rotating = Some((old, stream_id));
        }
        Ok(())
    }

    fn check_locked(&mut self, locked: &CredentialLocked) -> Result<(), Violation> {
        match locked.reason {
            // A deadline lock was held to its credential's `due_lock` already.
            _ if locked.deadline.is_some() => Ok(()),
            LockReason::Rotated if self.rotating.take().is_some() => Ok(()),
            LockReason::Rotated => Err(Violation::UnexpectedRotation),
            LockReason::Revoked if locked.replaced_by.is_some() => Err(Violation::RevokedWithReplacement),
            LockReason::Revoked => Ok(()),
            LockReason::Expired => Err(Violation::UnexpectedDeadlineLock),
        }
    }
}

fn describe(actor: &Actor) -> String {
    match actor {
        Actor::Cli => "cli".to_owned(),
        Actor::Deadline => "deadline".to_owned(),
        Actor::Credential { uuid } => format!("credential {uuid}"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{
        handle, Command, CredentialName, CredentialType, DomainError, GracePeriod, KeyHash, KeyMaterial, PendingEvent,
    };

    const SERVER: Uuid = Uuid::from_u128(0xA);
    const OTHER: Uuid = Uuid::from_u128(0xB);

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
    }

    fn create(server_uuid: Uuid, uuid: u128) -> Command {
        Command::Create {
            server_uuid,
            credential_uuid: Uuid::from_u128(uuid),
            name: CredentialName::parse("Production API").unwrap(),
            credential_type: CredentialType::Api,
            hold: false,
            key: KeyMaterial { hash: KeyHash([uuid as u8; 32]), display_prefix: "vml_AbCd".into() },
            expires_at: None,
        }
    }

    fn by(uuid: u128) -> Actor {
        Actor::Credential { uuid: Uuid::from_u128(uuid) }
    }

    /// The events `decide` produces for `commands`, each with its actor.
    fn written(commands: &[(Command, Actor)]) -> Vec<(PendingEvent, Actor)> {
        let mut ledger = Ledger::new(0);
        let mut log = Vec::new();
        for (command, actor) in commands {
            let handled = handle(&mut ledger, command, actor, at()).unwrap();
            log.extend(handled.events.into_iter().map(|event| (event, actor.clone())));
        }
        log
    }

    fn check(log: &[(PendingEvent, Actor)]) -> Result<(), (usize, Violation)> {
        let mut rules = LogRules::new();
        for (index, (pending, actor)) in log.iter().enumerate() {
            rules
                .record(RecordedEvent {
                    stream_id: pending.stream_id,
                    stream_version: pending.stream_version,
                    server_uuid: pending.server_uuid,
                    recorded_at: at(),
                    actor,
                    event: &pending.event,
                })
                .map_err(|violation| (index, violation))?;
        }
        rules.finish().map_err(|violation| (log.len(), violation))
    }

    fn lock(uuid: u128, reason: LockReason, replaced_by: Option<u128>) -> PendingEvent {
        PendingEvent {
            stream_id: Uuid::from_u128(uuid),
            stream_version: 2,
            server_uuid: SERVER,
            event: Event::CredentialLocked(CredentialLocked {
                reason,
                replaced_by: replaced_by.map(Uuid::from_u128),
                deadline: None,
            }),
        }
    }

    fn service_commands() -> Vec<(Command, Actor)> {
        let regenerate = Command::Regenerate {
            server_uuid: SERVER,
            credential_uuid: Uuid::from_u128(2),
            new_credential_uuid: Uuid::from_u128(3),
            new_key: KeyMaterial { hash: KeyHash([3; 32]), display_prefix: "vml_EfGh".into() },
            grace: GracePeriod::NONE,
        };
        vec![
            (create(SERVER, 1), Actor::Cli),
            (create(SERVER, 2), by(1)),
            (regenerate, by(2)),
            (Command::Revoke { server_uuid: SERVER, credential_uuid: Uuid::from_u128(1) }, by(1)),
        ]
    }

    fn service_log() -> Vec<(PendingEvent, Actor)> {
        written(&service_commands())
    }

    #[test]
    fn what_the_service_writes_follows_the_rules() {
        assert_eq!(check(&service_log()), Ok(()));
    }

    #[test]
    fn decide_refuses_an_actor_that_is_held_or_of_another_server() {
        let mut ledger = Ledger::new(0);
        handle(&mut ledger, &create(SERVER, 1), &Actor::Cli, at()).unwrap();
        handle(&mut ledger, &create(OTHER, 2), &Actor::Cli, at()).unwrap();
        let revoke_self = Command::Revoke { server_uuid: SERVER, credential_uuid: Uuid::from_u128(1) };
        assert_eq!(handle(&mut ledger, &create(SERVER, 3), &by(2), at()).err(), Some(DomainError::ActorNotAuthorized));
        assert_eq!(handle(&mut ledger, &create(SERVER, 3), &by(9), at()).err(), Some(DomainError::ActorNotAuthorized));
        handle(&mut ledger, &revoke_self, &by(1), at()).unwrap();
        let before = ledger.clone();
        assert_eq!(handle(&mut ledger, &create(SERVER, 3), &by(1), at()).err(), Some(DomainError::ActorNotAuthorized));
        assert_eq!(handle(&mut ledger, &revoke_self, &by(1), at()).err(), Some(DomainError::ActorNotAuthorized));
        assert_eq!(ledger.credentials().count(), before.credentials().count());
    }

    #[test]
    fn an_event_by_a_credential_after_its_own_lock_is_refused() {
        // Credential 1 revoked itself last; a create attributed to it afterwards is forged.
        let mut commands = service_commands();
        commands.push((create(SERVER, 9), Actor::Cli));
        let mut log = written(&commands);
        log.last_mut().unwrap().1 = by(1);
        assert!(matches!(check(&log), Err((5, Violation::ActorNotAuthorized(_)))), "{:?}", check(&log));
    }

    #[test]
    fn a_second_lock_is_refused() {
        let mut log = service_log();
        let mut again = lock(1, LockReason::Revoked, None);
        again.stream_version = 3;
        log.push((again, Actor::Cli));
        assert_eq!(check(&log), Err((5, Violation::Apply(ApplyError::AlreadyHeld(Uuid::from_u128(1))))));
    }

    #[test]
    fn a_lock_under_another_server_is_refused() {
        let mut log = service_log();
        log.last_mut().unwrap().0.server_uuid = OTHER;
        assert_eq!(check(&log), Err((4, Violation::ServerMismatch)));
    }

    #[test]
    fn rotations_come_in_pairs() {
        let log = service_log();
        // The replacement's creation without the old credential's lock.
        let cut: Vec<_> = log[..3].to_vec();
        assert_eq!(check(&cut), Err((3, Violation::RotationUnfinished)));
        // A `rotated` lock with no replacement before it.
        let mut lone = log[..2].to_vec();
        lone.push((lock(2, LockReason::Rotated, Some(7)), Actor::Cli));
        assert_eq!(check(&lone), Err((2, Violation::UnexpectedRotation)));
        let mut revoked = log[..2].to_vec();
        revoked.push((lock(2, LockReason::Revoked, Some(7)), Actor::Cli));
        assert_eq!(check(&revoked), Err((2, Violation::RevokedWithReplacement)));
    }

    #[test]
    fn credential_ids_are_handed_out_in_order() {
        let mut log = service_log();
        if let Event::CredentialCreated(created) = &mut log[1].0.event {
            created.credential_id = 5;
        }
        assert_eq!(check(&log), Err((1, Violation::CredentialId { expected: 2, actual: 5 })));
    }

    /// A grace rotation of credential 2 (by the CLI at `at()`), then its deadline lock, each
    /// with its actor and time.
    fn grace_log() -> Vec<(PendingEvent, Actor, DateTime<Utc>)> {
        let mut ledger = Ledger::new(0);
        let mut log = Vec::new();
        let regenerate = Command::Regenerate {
            server_uuid: SERVER,
            credential_uuid: Uuid::from_u128(2),
            new_credential_uuid: Uuid::from_u128(3),
            new_key: KeyMaterial { hash: KeyHash([3; 32]), display_prefix: "vml_EfGh".into() },
            grace: GracePeriod::from_seconds(60).unwrap(),
        };
        let lock_due = Command::LockDue { server_uuid: SERVER, credential_uuid: Uuid::from_u128(2) };
        let late = at() + chrono::Duration::seconds(61);
        for (command, actor, when) in [
            (create(SERVER, 1), Actor::Cli, at()),
            (create(SERVER, 2), Actor::Cli, at()),
            (regenerate, Actor::Cli, at()),
            (lock_due, Actor::Deadline, late),
        ] {
            let handled = handle(&mut ledger, &command, &actor, when).unwrap();
            log.extend(handled.events.into_iter().map(|event| (event, actor.clone(), when)));
        }
        log
    }

    fn check_timed(log: &[(PendingEvent, Actor, DateTime<Utc>)]) -> Result<(), (usize, Violation)> {
        let mut rules = LogRules::new();
        for (index, (pending, actor, recorded_at)) in log.iter().enumerate() {
            rules
                .record(RecordedEvent {
                    stream_id: pending.stream_id,
                    stream_version: pending.stream_version,
                    server_uuid: pending.server_uuid,
                    recorded_at: *recorded_at,
                    actor,
                    event: &pending.event,
                })
                .map_err(|violation| (index, violation))?;
        }
        rules.finish().map_err(|violation| (log.len(), violation))
    }

    #[test]
    fn a_grace_rotation_and_its_deadline_lock_follow_the_rules() {
        let log = grace_log();
        assert_eq!(log.len(), 5);
        assert_eq!(check_timed(&log), Ok(()));
    }

    #[test]
    fn a_deadline_lock_must_be_the_scheduler_s_record_of_the_credential_s_own_passed_deadline() {
        let log = grace_log();
        let mut by_cli = log.clone();
        by_cli[4].1 = Actor::Cli;
        assert_eq!(check_timed(&by_cli), Err((4, Violation::UnexpectedDeadlineLock)));
        let mut early = log.clone();
        early[4].2 = at() + chrono::Duration::seconds(59);
        assert_eq!(check_timed(&early), Err((4, Violation::UnexpectedDeadlineLock)));
        let mut moved = log.clone();
        if let Event::CredentialLocked(locked) = &mut moved[4].0.event {
            locked.deadline = Some(at() + chrono::Duration::seconds(30));
        }
        assert_eq!(check_timed(&moved), Err((4, Violation::UnexpectedDeadlineLock)));
        let mut revoke_by_scheduler = log.clone();
        revoke_by_scheduler[4].0.event = Event::CredentialLocked(CredentialLocked {
            reason: LockReason::Revoked,
            replaced_by: None,
            deadline: None,
        });
        assert!(matches!(check_timed(&revoke_by_scheduler), Err((4, Violation::ActorNotAuthorized(_)))));
    }

    #[test]
    fn nothing_but_its_deadline_lock_follows_a_passed_deadline() {
        let mut log = grace_log();
        log[4] = (lock(2, LockReason::Revoked, None), Actor::Cli, at() + chrono::Duration::seconds(61));
        log[4].0.stream_version = 3;
        assert_eq!(check_timed(&log), Err((4, Violation::PastDeadline)));
    }

    #[test]
    fn a_grace_period_lies_within_its_bounds_and_only_inside_a_rotation() {
        let log = grace_log();
        let mut too_long = log[..4].to_vec();
        if let Event::CredentialReplaced(replaced) = &mut too_long[3].0.event {
            replaced.locks_at = at() + chrono::Duration::days(31);
        }
        assert_eq!(check_timed(&too_long), Err((3, Violation::DeadlineOutOfBounds)));
        let mut alone = log[..2].to_vec();
        alone.push(log[3].clone());
        alone[2].0.stream_version = 2;
        assert_eq!(check_timed(&alone), Err((2, Violation::UnexpectedRotation)));
    }
}
