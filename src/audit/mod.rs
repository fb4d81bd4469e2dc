//! What auditors need: the export format, the verifier of the hash chain, and the offline
//! replay of the credential view. Verification and replay are pure: they read records, from the
//! database (`verify`) or from an export file (`verify --file`, `replay`), the same way.

mod export;
mod verify;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use export::{export_records, ExportError};
pub use verify::{ExpectedHead, Failure, VerifiedHead, Verifier};

use crate::domain::{Credential, Event, Ledger};
use crate::store::ServerEvent;

/// One line of an export (JSON Lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum ExportRecord {
    Event(ExportedEvent),
    /// Events of other servers, left out of a one-server export: only the chain link across
    /// them, so the slice can still be checked against the whole chain.
    Gap(ChainGap),
}

/// An event with everything the chain covers, and the chain link itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent {
    pub position: i64,
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub server_uuid: Uuid,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainGap {
    pub from_position: i64,
    pub to_position: i64,
    /// The `prev_hash` of the event at `from_position`.
    pub prev_hash: String,
    /// The `hash` of the event at `to_position`.
    pub hash: String,
}

impl ExportRecord {
    /// The position this record ends at.
    pub fn last_position(&self) -> i64 {
        match self {
            ExportRecord::Event(event) => event.position,
            ExportRecord::Gap(gap) => gap.to_position,
        }
    }
}

/// Rebuilds credentials from records with the same `apply` as the live view: every event
/// recorded at or before `as_of` (all of them without it), of `server` (every server without).
#[derive(Debug)]
pub struct Replay {
    ledger: Ledger,
    as_of: Option<DateTime<Utc>>,
    server: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
#[error("position {position}: {problem}")]
pub struct ReplayError {
    pub position: i64,
    pub problem: String,
}

impl Replay {
    pub fn new(as_of: Option<DateTime<Utc>>, server: Option<Uuid>) -> Self {
        Replay { ledger: Ledger::new(0), as_of, server }
    }

    pub fn push(&mut self, record: &ExportRecord) -> Result<(), ReplayError> {
        let ExportRecord::Event(event) = record else { return Ok(()) };
        if self.as_of.is_some_and(|as_of| event.recorded_at > as_of)
            || self.server.is_some_and(|server| server != event.server_uuid)
        {
            return Ok(());
        }
        self.apply(
            event.position,
            event.stream_id,
            event.stream_version,
            event.recorded_at,
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        position: i64,
        stream_id: Uuid,
        stream_version: i32,
        recorded_at: DateTime<Utc>,
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<(), ReplayError> {
        let failed = |problem: String| ReplayError { position, problem };
        let event = Event::decode(event_type, schema_version, payload).map_err(|error| failed(error.to_string()))?;
        self.ledger
            .record(stream_id, stream_version, recorded_at, &event)
            .map_err(|error| failed(error.to_string()))?;
        Ok(())
    }

    /// Folds an event read from the database.
    pub fn apply_server_event(&mut self, event: ServerEvent) -> Result<(), ReplayError> {
        self.apply(
            event.position,
            event.stream_id,
            event.stream_version,
            event.recorded_at,
            &event.event_type,
            event.schema_version,
            event.payload,
        )
    }

    /// The credentials, by ascending id.
    pub fn finish(self) -> Vec<Credential> {
        let mut credentials: Vec<Credential> = self.ledger.into_credentials().collect();
        credentials.sort_by_key(|credential| credential.id);
        credentials
    }
}
