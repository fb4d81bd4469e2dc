//! What auditors need: the export format, the verifier of the hash chain, and the offline
//! replay of the credential view. Verification and replay are pure: they read records, from the
//! database (`verify`) or from an export file (`verify --file`, `replay`), the same way.

mod export;
mod import;
mod verify;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use export::{export_backup, export_records, ExportError};
pub use import::{read_import, ImportError, ImportFile};
pub use verify::{ExpectedHead, Failure, VerifiedHead, Verifier};

use crate::domain::{Credential, Ledger, StoredEvent, UnreadableEvent};
use crate::store::{StoredEndpoint, StoredServer};

/// One line of an export (JSON Lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum ExportRecord {
    /// An event with everything the chain covers, and the chain link itself.
    Event(StoredEvent),
    /// Events of other servers, left out of a one-server export: only the chain link across
    /// them, so the slice can still be checked against the whole chain.
    Gap(ChainGap),
    /// A server (tenant), in a backup (`export --backup`) only. Not covered by the chain.
    Server(StoredServer),
    /// A webhook endpoint with its signing secret, in a backup only. Not covered by the chain.
    WebhookEndpoint(StoredEndpoint),
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
    /// The position this record ends at; none for the records the chain does not cover.
    pub fn last_position(&self) -> Option<i64> {
        match self {
            ExportRecord::Event(event) => Some(event.position),
            ExportRecord::Gap(gap) => Some(gap.to_position),
            ExportRecord::Server(_) | ExportRecord::WebhookEndpoint(_) => None,
        }
    }
}

/// The records of a backup that the chain does not cover, counted: `verify` and `replay` skip
/// them and say so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotCovered {
    pub servers: u64,
    pub webhook_endpoints: u64,
}

impl NotCovered {
    /// Counts `record` if it is one of them; whether it was.
    pub fn count(&mut self, record: &ExportRecord) -> bool {
        match record {
            ExportRecord::Server(_) => self.servers += 1,
            ExportRecord::WebhookEndpoint(_) => self.webhook_endpoints += 1,
            ExportRecord::Event(_) | ExportRecord::Gap(_) => return false,
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.servers == 0 && self.webhook_endpoints == 0
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

impl Replay {
    pub fn new(as_of: Option<DateTime<Utc>>, server: Option<Uuid>) -> Self {
        Replay { ledger: Ledger::new(0), as_of, server }
    }

    /// Folds one event, if it is of the server and time replayed.
    pub fn push(&mut self, event: &StoredEvent) -> Result<(), UnreadableEvent> {
        if self.as_of.is_some_and(|as_of| event.recorded_at > as_of)
            || self.server.is_some_and(|server| server != event.server_uuid)
        {
            return Ok(());
        }
        self.ledger.fold(event.logged())?;
        Ok(())
    }

    /// The credentials, by ascending id.
    pub fn finish(self) -> Vec<Credential> {
        let mut credentials: Vec<Credential> = self.ledger.into_credentials().collect();
        credentials.sort_by_key(|credential| credential.id);
        credentials
    }
}
