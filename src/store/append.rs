//! What every backend's append shares: the decision a batch brings, the rows it becomes (each
//! event chained to the one before: the hash chain is the same whatever stores it), and the head
//! it moves.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{chain_hash, ChainLink, EventMetadata, Hash, Ledger, PendingEvent, ServerName};

/// An event to append, with the context of the command that decided it.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub pending: PendingEvent,
    pub metadata: &'a EventMetadata,
}

/// The end of the log, as an appender chains to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub position: i64,
    hash: Hash,
    last_credential_id: i64,
    last_recorded_at: Option<DateTime<Utc>>,
}

impl ChainHead {
    /// The head as a backend stored it.
    pub(super) fn read(
        position: i64,
        hash: &[u8],
        last_credential_id: i64,
        last_recorded_at: Option<DateTime<Utc>>,
    ) -> Result<ChainHead, StoreError> {
        let hash = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt { position, reason: "the chain head's hash is not 32 bytes".into() })?;
        Ok(ChainHead { position, hash, last_credential_id, last_recorded_at })
    }

    pub(super) fn hash(&self) -> &Hash {
        &self.hash
    }

    /// The highest credential id handed out up to this head.
    pub(super) fn last_credential_id(&self) -> i64 {
        self.last_credential_id
    }

    /// The head once `rows`, decided against `ledger` at `recorded_at`, are appended.
    pub(super) fn after(&self, rows: &Rows, ledger: &Ledger, recorded_at: DateTime<Utc>) -> ChainHead {
        ChainHead {
            position: self.position + rows.positions.len() as i64,
            hash: rows.last_hash,
            last_credential_id: ledger.last_credential_id(),
            last_recorded_at: Some(recorded_at),
        }
    }

    /// The time to record new events with: now, but never before the last append, so that
    /// `recorded_at` does not decrease along the log even if the clock steps back. Microseconds,
    /// as PostgreSQL keeps them (the hash must cover exactly what is stored).
    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now().trunc_subsecs(6);
        self.last_recorded_at.map_or(now, |last| now.max(last))
    }
}

/// What one decision over the ledger produced: new servers (tenants), events to append, and
/// whatever the caller wants back (answers to its commands).
pub struct Decision<'a, T> {
    pub servers: Vec<(Uuid, ServerName)>,
    pub events: Vec<NewEvent<'a>>,
    pub value: T,
}

/// A committed append: the caller's value, the ledger with the credentials it changed, and the
/// new head to chain the next append to.
pub struct Appended<T> {
    pub value: T,
    pub ledger: Ledger,
    pub previous: i64,
    pub head: ChainHead,
}

/// What a batch appends, one array per column, each event chained to the one before.
#[derive(Default)]
pub(super) struct Rows {
    /// The hash of the last event: the new head's.
    pub(super) last_hash: Hash,
    pub(super) server_uuids: Vec<Uuid>,
    pub(super) server_names: Vec<String>,
    pub(super) positions: Vec<i64>,
    pub(super) stream_ids: Vec<Uuid>,
    pub(super) stream_versions: Vec<i32>,
    pub(super) event_ids: Vec<Uuid>,
    pub(super) event_types: Vec<String>,
    pub(super) schema_versions: Vec<i32>,
    pub(super) event_server_uuids: Vec<Uuid>,
    pub(super) payloads: Vec<serde_json::Value>,
    pub(super) metadatas: Vec<serde_json::Value>,
    pub(super) prev_hashes: Vec<Vec<u8>>,
    pub(super) hashes: Vec<Vec<u8>>,
    pub(super) ids: Vec<i64>,
    pub(super) uuids: Vec<Uuid>,
    pub(super) credential_server_uuids: Vec<Uuid>,
    pub(super) names: Vec<String>,
    pub(super) types: Vec<String>,
    pub(super) holds: Vec<bool>,
    pub(super) key_hashes: Vec<Vec<u8>>,
    pub(super) key_prefixes: Vec<String>,
    pub(super) created_ats: Vec<DateTime<Utc>>,
    pub(super) locked_ats: Vec<Option<DateTime<Utc>>>,
    pub(super) expires_ats: Vec<Option<DateTime<Utc>>>,
    pub(super) replaced_bys: Vec<Option<Uuid>>,
    pub(super) versions: Vec<i32>,
}

impl Rows {
    pub(super) fn new(
        head: &ChainHead,
        ledger: &Ledger,
        servers: &[(Uuid, ServerName)],
        events: &[NewEvent<'_>],
        recorded_at: DateTime<Utc>,
    ) -> Rows {
        let mut rows = Rows { last_hash: head.hash, ..Rows::default() };
        for (uuid, name) in servers {
            rows.server_uuids.push(*uuid);
            rows.server_names.push(name.as_str().to_owned());
        }
        let mut position = head.position;
        for NewEvent { pending, metadata } in events {
            position += 1;
            // Time-ordered, so that the log's unique index on event ids grows at its end instead
            // of touching a random page per event.
            let event_id = Uuid::now_v7();
            let payload = pending.event.payload();
            let metadata = serde_json::to_value(metadata).unwrap_or(serde_json::Value::Null);
            let link = ChainLink {
                position,
                stream_id: pending.stream_id,
                stream_version: pending.stream_version,
                event_id,
                event_type: pending.event.event_type(),
                schema_version: pending.event.schema_version(),
                server_uuid: pending.server_uuid,
                payload: &payload,
                metadata: &metadata,
                recorded_at,
            };
            let hash = chain_hash(&rows.last_hash, &link);
            rows.positions.push(position);
            rows.stream_ids.push(pending.stream_id);
            rows.stream_versions.push(pending.stream_version);
            rows.event_ids.push(event_id);
            rows.event_types.push(pending.event.event_type().to_owned());
            rows.schema_versions.push(pending.event.schema_version());
            rows.event_server_uuids.push(pending.server_uuid);
            rows.payloads.push(payload);
            rows.metadatas.push(metadata);
            rows.prev_hashes.push(rows.last_hash.to_vec());
            rows.hashes.push(hash.to_vec());
            rows.last_hash = hash;
        }
        for credential in ledger.changed() {
            rows.ids.push(credential.id);
            rows.uuids.push(credential.uuid);
            rows.credential_server_uuids.push(credential.server_uuid);
            rows.names.push(credential.name.as_str().to_owned());
            rows.types.push(credential.credential_type.as_str().to_owned());
            rows.holds.push(credential.hold);
            rows.key_hashes.push(credential.key_hash.0.to_vec());
            rows.key_prefixes.push(credential.key_prefix.clone());
            rows.created_ats.push(credential.created_at);
            rows.locked_ats.push(credential.locked_at);
            rows.expires_ats.push(credential.expires_at);
            rows.replaced_bys.push(credential.replaced_by);
            rows.versions.push(credential.version);
        }
        rows
    }
}
