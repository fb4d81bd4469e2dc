//! What a backup moves besides the log, and what an import writes, whatever the backend: the
//! servers (tenants) and the webhook endpoints, as the store keeps them. They are records of an
//! export (`export --backup`), not events: the log of a ledger stays byte for byte what it was,
//! so its head is the same after a move (docs/embedded-backend.md §4.4).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Ledger, StoredEvent};

/// The name under which the in-process webhook dispatcher keeps its place in the log (a row of
/// `relay_checkpoints`). An import sets it at the imported head, so that the history it brings
/// is not sent to webhooks again.
pub const IN_PROCESS_WEBHOOKS_CHECKPOINT: &str = "in-process:webhooks";

/// A server (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredServer {
    pub uuid: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A webhook endpoint, deleted ones included, with its signing secret: receivers keep verifying
/// signatures after a move only if the secret moves too.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredEndpoint {
    pub uuid: Uuid,
    pub server_uuid: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredEndpoint {
    // The secret never reaches a log line or an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredEndpoint")
            .field("uuid", &self.uuid)
            .field("server_uuid", &self.server_uuid)
            .field("events", &self.events)
            .field("created_at", &self.created_at)
            .field("disabled_at", &self.disabled_at)
            .field("deleted_at", &self.deleted_at)
            .finish_non_exhaustive()
    }
}

/// A verified ledger to write into an empty store: its servers, endpoints and events as they
/// were, and the ledger folded from those events (the head's last credential id comes from it).
pub struct ImportBatch<'a> {
    pub servers: &'a [StoredServer],
    pub endpoints: &'a [StoredEndpoint],
    pub events: &'a [StoredEvent],
    pub ledger: &'a Ledger,
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub position: i64,
    pub events: u64,
    pub credentials: u64,
}
