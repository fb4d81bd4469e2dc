//! The in-memory ledger a batch of commands is decided against.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::apply::{apply, ApplyError};
use super::credential::Credential;
use super::event::Event;
use super::stored_event::{LoggedEvent, UnreadableEvent};

/// The credentials a batch needs (or, for a replay, all of them) and the id counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    credentials: HashMap<Uuid, Credential>,
    last_credential_id: i64,
    /// Credentials changed since this ledger was loaded, in first-change order.
    changed: Vec<Uuid>,
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
    pub fn fold(&mut self, logged: LoggedEvent<'_>) -> Result<&Credential, UnreadableEvent> {
        let next = logged.apply_to(self.credentials.get(&logged.stream_id))?;
        Ok(self.insert(next))
    }

    fn insert(&mut self, credential: Credential) -> &Credential {
        self.last_credential_id = self.last_credential_id.max(credential.id);
        self.credentials.entry(credential.uuid).insert_entry(credential).into_mut()
    }

    /// `record`, for an event just decided: the credential is then among the `changed`.
    pub fn record_decided(
        &mut self,
        stream_id: Uuid,
        stream_version: i32,
        recorded_at: DateTime<Utc>,
        event: &Event,
    ) -> Result<&Credential, ApplyError> {
        if !self.changed.contains(&stream_id) {
            self.changed.push(stream_id);
        }
        self.record(stream_id, stream_version, recorded_at, event)
    }
}
