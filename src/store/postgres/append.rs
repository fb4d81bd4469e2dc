//! Appending to the log: a batch of decided commands becomes one statement that moves the chain
//! head, appends the events, upserts the view rows and notifies listeners, all or nothing.
//!
//! The head is read without a lock and the statement moves it only if it is still where it was
//! read (a compare-and-set on `chain_head.position`), so an uncontended batch costs a single
//! round trip. If another instance appended in between, the batch is decided again, this time
//! in a transaction that holds the head's row lock, which cannot lose.
//!
//! Migration 0001's comments (applied migrations are never edited) say every append first locks
//! the head `FOR UPDATE`; only the retry path does now. What they protect still holds: positions
//! are assigned only by the statement that moves the head, and its `UPDATE … WHERE position =`
//! holds the head's row lock until commit, so appends from every instance are ordered and
//! gap-free.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{PgStore, StoreError};
use crate::domain::{chain_hash, ChainLink, Event, EventMetadata, Hash, Ledger, PendingEvent, ServerName};

/// The channel every commit notifies with its new head position.
pub const EVENTS_CHANNEL: &str = "credential_ledger_events";

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

impl PgStore {
    /// Loads the state of `touched` at the head, lets `decide` decide against it at a time no
    /// earlier than the last append, and appends the result. `head` is where the caller last
    /// saw the log end (a writer keeps it between batches); `None` reads it. `decide` runs
    /// again if another instance appended first.
    pub async fn append<'a, T>(
        &self,
        head: Option<ChainHead>,
        touched: &[Uuid],
        mut decide: impl FnMut(&mut Ledger, DateTime<Utc>) -> Decision<'a, T>,
    ) -> Result<Appended<T>, StoreError> {
        // Bounded as a whole: a connection that went silent must not hold the writer for ever.
        let mut connection = self.pool.acquire().await?;
        let outcome =
            tokio::time::timeout(self.query_timeout, append_on(&mut connection, head, touched, &mut decide)).await;
        self.settle(connection, outcome)
    }
}

async fn append_on<'a, T>(
    connection: &mut PgConnection,
    head: Option<ChainHead>,
    touched: &[Uuid],
    decide: &mut impl FnMut(&mut Ledger, DateTime<Utc>) -> Decision<'a, T>,
) -> Result<Appended<T>, StoreError> {
    let head = match head {
        Some(head) => head,
        None => read_head(connection).await?,
    };
    if let Some(appended) = try_append(connection, head, touched, decide).await? {
        return Ok(appended);
    }
    // Another instance appended since `head`: again, holding the head this time.
    let mut tx = connection.begin().await?;
    let head = lock_head(&mut tx).await?;
    let position = head.position;
    let appended = try_append(&mut tx, head, touched, decide).await?.ok_or_else(|| StoreError::Corrupt {
        position,
        reason: "the chain head moved while its row lock was held".into(),
    })?;
    tx.commit().await?;
    Ok(appended)
}

async fn read_head(connection: &mut PgConnection) -> Result<ChainHead, StoreError> {
    let row = sqlx::query!("SELECT position, hash, last_credential_id, recorded_at FROM chain_head")
        .fetch_one(connection)
        .await?;
    chain_head(row.position, &row.hash, row.last_credential_id, row.recorded_at)
}

async fn lock_head(connection: &mut PgConnection) -> Result<ChainHead, StoreError> {
    let row = sqlx::query!("SELECT position, hash, last_credential_id, recorded_at FROM chain_head FOR UPDATE")
        .fetch_one(connection)
        .await?;
    chain_head(row.position, &row.hash, row.last_credential_id, row.recorded_at)
}

fn chain_head(
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

/// Decides against the state at `head` and appends, or says `None` if the head has moved.
async fn try_append<'a, T>(
    connection: &mut PgConnection,
    head: ChainHead,
    touched: &[Uuid],
    decide: &mut impl FnMut(&mut Ledger, DateTime<Utc>) -> Decision<'a, T>,
) -> Result<Option<Appended<T>>, StoreError> {
    let mut ledger = load_ledger(connection, head.last_credential_id, touched).await?;
    let recorded_at = head.now();
    let Decision { servers, events, value } = decide(&mut ledger, recorded_at);
    if events.is_empty() && servers.is_empty() {
        let previous = head.position;
        return Ok(Some(Appended { value, ledger, previous, head }));
    }
    let rows = Rows::new(&head, &ledger, &servers, &events, recorded_at);
    let next = ChainHead {
        position: head.position + events.len() as i64,
        hash: rows.last_hash,
        last_credential_id: ledger.last_credential_id(),
        last_recorded_at: Some(recorded_at),
    };
    let moved = sqlx::query_scalar!(
        r#"WITH head AS (
               UPDATE chain_head SET position = $1, hash = $2, last_credential_id = $3, recorded_at = $4
                WHERE position = $5
            RETURNING position
           ), new_servers AS (
               INSERT INTO servers (uuid, name)
               SELECT server.uuid, server.name FROM UNNEST($6::uuid[], $7::text[]) AS server (uuid, name), head
           ), new_events AS (
               INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version,
                                   server_uuid, payload, metadata, recorded_at, prev_hash, hash)
               SELECT e.position, e.stream_id, e.stream_version, e.event_id, e.event_type, e.schema_version,
                      e.server_uuid, e.payload, e.metadata, $4, e.prev_hash, e.hash
                 FROM UNNEST($8::bigint[], $9::uuid[], $10::int[], $11::uuid[], $12::text[], $13::int[],
                             $14::uuid[], $15::jsonb[], $16::jsonb[], $17::bytea[], $18::bytea[])
                      AS e (position, stream_id, stream_version, event_id, event_type, schema_version,
                            server_uuid, payload, metadata, prev_hash, hash),
                      head
           ), view_rows AS (
               INSERT INTO credentials (id, uuid, server_uuid, name, type, hold, key_hash, key_prefix,
                                        created_at, locked_at, version)
               SELECT c.id, c.uuid, c.server_uuid, c.name, c.type, c.hold, c.key_hash, c.key_prefix,
                      c.created_at, c.locked_at, c.version
                 FROM UNNEST($19::bigint[], $20::uuid[], $21::uuid[], $22::text[], $23::text[], $24::bool[],
                             $25::bytea[], $26::text[], $27::timestamptz[], $28::timestamptz[], $29::int[])
                      AS c (id, uuid, server_uuid, name, type, hold, key_hash, key_prefix, created_at,
                            locked_at, version),
                      head
                   ON CONFLICT (uuid) DO UPDATE
                  SET name = EXCLUDED.name, hold = EXCLUDED.hold, locked_at = EXCLUDED.locked_at,
                      version = EXCLUDED.version
           )
           SELECT pg_notify($30, position::text) AS "notified!" FROM head"#,
        next.position,
        &next.hash[..],
        next.last_credential_id,
        recorded_at,
        head.position,
        &rows.server_uuids,
        &rows.server_names,
        &rows.positions,
        &rows.stream_ids,
        &rows.stream_versions,
        &rows.event_ids,
        &rows.event_types,
        &rows.schema_versions,
        &rows.event_server_uuids,
        &rows.payloads,
        &rows.metadatas,
        &rows.prev_hashes,
        &rows.hashes,
        &rows.ids,
        &rows.uuids,
        &rows.credential_server_uuids,
        &rows.names,
        &rows.types,
        &rows.holds,
        &rows.key_hashes,
        &rows.key_prefixes,
        &rows.created_ats,
        &rows.locked_ats as &[Option<DateTime<Utc>>],
        &rows.versions,
        EVENTS_CHANNEL,
    )
    .fetch_optional(connection)
    .await?;
    let previous = head.position;
    Ok(moved.map(|_| Appended { value, ledger, previous, head: next }))
}

/// The state of `credential_uuids`, folded from their streams.
async fn load_ledger(
    connection: &mut PgConnection,
    last_credential_id: i64,
    credential_uuids: &[Uuid],
) -> Result<Ledger, StoreError> {
    let mut ledger = Ledger::new(last_credential_id);
    if credential_uuids.is_empty() {
        return Ok(ledger);
    }
    let events =
        select_logged!("WHERE stream_id = ANY($1) ORDER BY position", credential_uuids).fetch_all(connection).await?;
    for event in &events {
        ledger.fold(event.logged())?;
    }
    Ok(ledger)
}

/// The statement's parameters: one array per column, each event chained to the one before.
#[derive(Default)]
struct Rows {
    /// The hash of the last event: the new head's.
    last_hash: Hash,
    server_uuids: Vec<Uuid>,
    server_names: Vec<String>,
    positions: Vec<i64>,
    stream_ids: Vec<Uuid>,
    stream_versions: Vec<i32>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    event_server_uuids: Vec<Uuid>,
    payloads: Vec<serde_json::Value>,
    metadatas: Vec<serde_json::Value>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
    ids: Vec<i64>,
    uuids: Vec<Uuid>,
    credential_server_uuids: Vec<Uuid>,
    names: Vec<String>,
    types: Vec<String>,
    holds: Vec<bool>,
    key_hashes: Vec<Vec<u8>>,
    key_prefixes: Vec<String>,
    created_ats: Vec<DateTime<Utc>>,
    locked_ats: Vec<Option<DateTime<Utc>>>,
    versions: Vec<i32>,
}

impl Rows {
    fn new(
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
            let event_id = Uuid::new_v4();
            let payload = pending.event.payload();
            let metadata = serde_json::to_value(metadata).unwrap_or(serde_json::Value::Null);
            let link = ChainLink {
                position,
                stream_id: pending.stream_id,
                stream_version: pending.stream_version,
                event_id,
                event_type: pending.event.event_type(),
                schema_version: Event::SCHEMA_VERSION,
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
            rows.schema_versions.push(Event::SCHEMA_VERSION);
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
            rows.versions.push(credential.version);
        }
        rows
    }
}
