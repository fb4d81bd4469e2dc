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

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{PgStore, StoreError};
use crate::domain::Ledger;
use crate::store::append::{Appended, ChainHead, Decision, Rows};

/// The channel every commit notifies with its new head position.
pub const EVENTS_CHANNEL: &str = "credential_ledger_events";

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
        let mut connection = self.acquire_timed().await?;
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
    ChainHead::read(row.position, &row.hash, row.last_credential_id, row.recorded_at)
}

async fn lock_head(connection: &mut PgConnection) -> Result<ChainHead, StoreError> {
    let row = sqlx::query!("SELECT position, hash, last_credential_id, recorded_at FROM chain_head FOR UPDATE")
        .fetch_one(connection)
        .await?;
    ChainHead::read(row.position, &row.hash, row.last_credential_id, row.recorded_at)
}

/// Decides against the state at `head` and appends, or says `None` if the head has moved.
async fn try_append<'a, T>(
    connection: &mut PgConnection,
    head: ChainHead,
    touched: &[Uuid],
    decide: &mut impl FnMut(&mut Ledger, DateTime<Utc>) -> Decision<'a, T>,
) -> Result<Option<Appended<T>>, StoreError> {
    let mut ledger = load_ledger(connection, head.last_credential_id(), touched).await?;
    let recorded_at = head.now();
    let Decision { servers, events, value } = decide(&mut ledger, recorded_at);
    if events.is_empty() && servers.is_empty() {
        let previous = head.position;
        return Ok(Some(Appended { value, ledger, previous, head }));
    }
    let rows = Rows::new(&head, &ledger, &servers, &events, recorded_at);
    let next = head.after(&rows, &ledger, recorded_at);
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
                                        created_at, locked_at, expires_at, replaced_by, version)
               SELECT c.id, c.uuid, c.server_uuid, c.name, c.type, c.hold, c.key_hash, c.key_prefix,
                      c.created_at, c.locked_at, c.expires_at, c.replaced_by, c.version
                 FROM UNNEST($19::bigint[], $20::uuid[], $21::uuid[], $22::text[], $23::text[], $24::bool[],
                             $25::bytea[], $26::text[], $27::timestamptz[], $28::timestamptz[], $29::timestamptz[],
                             $30::uuid[], $31::int[])
                      AS c (id, uuid, server_uuid, name, type, hold, key_hash, key_prefix, created_at,
                            locked_at, expires_at, replaced_by, version),
                      head
                   ON CONFLICT (uuid) DO UPDATE
                  SET name = EXCLUDED.name, hold = EXCLUDED.hold, locked_at = EXCLUDED.locked_at,
                      expires_at = EXCLUDED.expires_at, replaced_by = EXCLUDED.replaced_by,
                      version = EXCLUDED.version
           )
           SELECT pg_notify($32, position::text) AS "notified!" FROM head"#,
        next.position,
        &next.hash()[..],
        next.last_credential_id(),
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
        &rows.expires_ats as &[Option<DateTime<Utc>>],
        &rows.replaced_bys as &[Option<Uuid>],
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
