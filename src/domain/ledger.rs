//! The in-memory ledger a batch of commands is decided against.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::command::{decide, Command, DomainError, Outcome};
use super::credential::{apply, ApplyError, Credential};
use super::event::Actor;
use super::event::{Event, PendingEvent};
use super::stored_event::{StoredEvent, UnreadableEvent};

/// The credentials a batch needs (or, for a replay, all of them) and the id counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    credentials: HashMap<Uuid, Credential>,
    last_credential_id: i64,
    /// Credentials changed since this ledger was loaded, in first-change order.
    changed: Vec<Uuid>,
}

/// The result of a command that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub events: Vec<PendingEvent>,
    pub outcome: Outcome,
}

impl Ledger {
    /// `last_credential_id` is the highest credential id ever handed out (0 for none).
    pub fn new(last_credential_id: i64) -> Self {
        Ledger { last_credential_id, ..Ledger::default() }
    }

    pub fn credential(&self, uuid: Uuid) -> Option<&Credential> {
        self.credentials.get(&uuid)
    }

    pub fn credentials(&self) -> impl Iterator<Item = &Credential> {
        self.credentials.values()
    }

    pub fn into_credentials(self) -> impl Iterator<Item = Credential> {
        self.credentials.into_values()
    }

    pub fn next_credential_id(&self) -> i64 {
        self.last_credential_id + 1
    }

    pub fn last_credential_id(&self) -> i64 {
        self.last_credential_id
    }

    /// The credentials that `handle` changed, in their final state.
    pub fn changed(&self) -> impl Iterator<Item = &Credential> {
        self.changed.iter().filter_map(|uuid| self.credentials.get(uuid))
    }

    /// Folds one recorded event in: loading state, replaying the log and handling commands all
    /// come through here.
    pub fn record(
        &mut self,
        stream_id: Uuid,
        stream_version: i32,
        recorded_at: DateTime<Utc>,
        event: &Event,
    ) -> Result<&Credential, ApplyError> {
        let next = apply(self.credentials.get(&stream_id), stream_id, stream_version, recorded_at, event)?;
        Ok(self.insert(next))
    }

    /// Folds one event read back from the log.
    pub fn fold(&mut self, stored: &StoredEvent) -> Result<&Credential, UnreadableEvent> {
        let next = stored.apply_to(self.credentials.get(&stored.stream_id))?;
        Ok(self.insert(next))
    }

    fn insert(&mut self, credential: Credential) -> &Credential {
        self.last_credential_id = self.last_credential_id.max(credential.id);
        self.credentials.entry(credential.uuid).insert_entry(credential).into_mut()
    }

    /// Decides `command` on behalf of `actor`, applies its events here and says what happened.
    /// A refused command leaves the ledger as it was.
    pub fn handle(&mut self, command: &Command, actor: &Actor, now: DateTime<Utc>) -> Result<Handled, DomainError> {
        let decided = decide(self, actor, command)?;
        let mut events = Vec::with_capacity(decided.len());
        for (stream_id, event) in decided {
            let stream_version = self.credential(stream_id).map_or(1, |credential| credential.version + 1);
            let credential = self
                .record(stream_id, stream_version, now, &event)
                .map_err(|error| DomainError::Inconsistent(error.to_string()))?;
            let server_uuid = credential.server_uuid;
            if !self.changed.contains(&stream_id) {
                self.changed.push(stream_id);
            }
            events.push(PendingEvent { stream_id, stream_version, server_uuid, event });
        }
        let outcome = self.outcome(command)?;
        Ok(Handled { events, outcome })
    }

    fn outcome(&self, command: &Command) -> Result<Outcome, DomainError> {
        let get = |uuid: Uuid| {
            self.credential(uuid)
                .cloned()
                .ok_or_else(|| DomainError::Inconsistent(format!("credential {uuid} vanished")))
        };
        Ok(match command {
            Command::Create { credential_uuid, .. } => Outcome::Created(get(*credential_uuid)?),
            Command::Regenerate { credential_uuid, new_credential_uuid, .. } => {
                Outcome::Rotated { old: get(*credential_uuid)?, new: get(*new_credential_uuid)? }
            }
            Command::Revoke { credential_uuid, .. } => Outcome::Revoked(get(*credential_uuid)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
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
            ledger.handle(command, &Actor::Cli, at(0)).unwrap();
        }
        ledger
    }

    fn events_of(handled: &Handled) -> Vec<(Uuid, i32, Event)> {
        handled.events.iter().map(|e| (e.stream_id, e.stream_version, e.event.clone())).collect()
    }

    #[test]
    fn create_records_one_event_with_the_next_id_and_no_key() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        let handled = ledger.handle(&create(2, CredentialType::Smtp, true), &Actor::Cli, at(1)).unwrap();
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
        let handled = ledger.handle(&regenerate(SERVER, 1, 2), &Actor::Cli, at(5)).unwrap();
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
        assert_eq!(ledger.handle(&regenerate(SERVER, 1, 2), &Actor::Cli, at(9)), Err(DomainError::CredentialHeld));
        assert_eq!(ledger, before);
    }

    #[test]
    fn revoke_locks_once_and_is_idempotent_after() {
        let mut ledger = given(&[create(1, CredentialType::Smtp, false)]);
        let first = ledger.handle(&revoke(SERVER, 1), &Actor::Cli, at(1)).unwrap();
        assert_eq!(
            events_of(&first),
            vec![(
                Uuid::from_u128(1),
                2,
                Event::CredentialLocked(CredentialLocked { reason: LockReason::Revoked, replaced_by: None })
            )]
        );
        let again = ledger.handle(&revoke(SERVER, 1), &Actor::Cli, at(2)).unwrap();
        assert!(again.events.is_empty());
        assert_eq!(again.outcome, first.outcome);
    }

    #[test]
    fn another_servers_credential_does_not_exist() {
        let mut ledger = given(&[create(1, CredentialType::Api, false)]);
        assert_eq!(ledger.handle(&revoke(OTHER_SERVER, 1), &Actor::Cli, at(1)), Err(DomainError::CredentialNotFound));
        assert_eq!(
            ledger.handle(&regenerate(OTHER_SERVER, 1, 2), &Actor::Cli, at(1)),
            Err(DomainError::CredentialNotFound)
        );
        assert_eq!(ledger.handle(&revoke(SERVER, 99), &Actor::Cli, at(1)), Err(DomainError::CredentialNotFound));
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
                if let Ok(handled) = live.handle(&command, &Actor::Cli, at(i as u32 % 60)) {
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
