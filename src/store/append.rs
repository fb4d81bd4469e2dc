//! Appending to the log: one transaction per batch of commands, holding the chain head.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::{chain_hash, ChainLink, Credential, Event, EventMetadata, Hash, Ledger, PendingEvent, ServerName};

/// The channel every commit notifies with its new head position.
pub const EVENTS_CHANNEL: &str = "credential_ledger_events";

/// An event to append, with the context of the command that decided it.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub pending: PendingEvent,
    pub metadata: &'a EventMetadata,
}

/// An open append: the chain head is locked until `commit` or drop (which rolls back).
pub struct AppendTxn {
    tx: Transaction<'static, Postgres>,
    position: i64,
    hash: Hash,
    last_credential_id: i64,
    last_recorded_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Starts an append, waiting for the chain head if another writer (here or on another
    /// instance) holds it.
    pub async fn begin_append(&self) -> Result<AppendTxn, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query!("SELECT position, hash, last_credential_id, recorded_at FROM chain_head FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        let hash = head.hash.as_slice().try_into().map_err(|_| StoreError::Corrupt {
            position: head.position,
            reason: "the chain head's hash is not 32 bytes".into(),
        })?;
        Ok(AppendTxn {
            tx,
            position: head.position,
            hash,
            last_credential_id: head.last_credential_id,
            last_recorded_at: head.recorded_at,
        })
    }
}

impl AppendTxn {
    /// The time to record new events with: now, but never before the last append, so that
    /// `recorded_at` does not decrease along the log even if the clock steps back. Microseconds,
    /// as PostgreSQL keeps them (the hash must cover exactly what is stored).
    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now().trunc_subsecs(6);
        self.last_recorded_at.map_or(now, |last| now.max(last))
    }

    /// The current state of `credential_uuids`, folded from their streams.
    pub async fn load_ledger(&mut self, credential_uuids: &[Uuid]) -> Result<Ledger, StoreError> {
        let mut ledger = Ledger::new(self.last_credential_id);
        if credential_uuids.is_empty() {
            return Ok(ledger);
        }
        let rows = sqlx::query!(
            r#"SELECT position, stream_id, stream_version, event_type, schema_version, payload, recorded_at
                 FROM events WHERE stream_id = ANY($1) ORDER BY position"#,
            credential_uuids,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        for row in rows {
            let corrupt = |reason: String| StoreError::Corrupt { position: row.position, reason };
            let event = Event::decode(&row.event_type, row.schema_version, row.payload)
                .map_err(|error| corrupt(error.to_string()))?;
            ledger
                .record(row.stream_id, row.stream_version, row.recorded_at, &event)
                .map_err(|error| corrupt(error.to_string()))?;
        }
        Ok(ledger)
    }

    pub async fn insert_server(&mut self, uuid: Uuid, name: &ServerName) -> Result<(), StoreError> {
        sqlx::query!("INSERT INTO servers (uuid, name) VALUES ($1, $2)", uuid, name.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Appends `events` after the head, brings the view up to date with the credentials the
    /// ledger changed, moves the head, notifies listeners and commits: all or nothing.
    pub async fn commit(
        mut self,
        ledger: &Ledger,
        events: &[NewEvent<'_>],
        recorded_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !events.is_empty() {
            self.append(events, recorded_at).await?;
            write_credential_rows(&mut self.tx, ledger.changed()).await?;
            sqlx::query!(
                "UPDATE chain_head SET position = $1, hash = $2, last_credential_id = $3, recorded_at = $4",
                self.position,
                &self.hash[..],
                ledger.last_credential_id(),
                recorded_at,
            )
            .execute(&mut *self.tx)
            .await?;
            sqlx::query!("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, self.position.to_string())
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }

    async fn append(&mut self, events: &[NewEvent<'_>], recorded_at: DateTime<Utc>) -> Result<(), StoreError> {
        let count = events.len();
        let mut positions = Vec::with_capacity(count);
        let mut stream_ids = Vec::with_capacity(count);
        let mut stream_versions = Vec::with_capacity(count);
        let mut event_ids = Vec::with_capacity(count);
        let mut event_types = Vec::with_capacity(count);
        let mut schema_versions = Vec::with_capacity(count);
        let mut server_uuids = Vec::with_capacity(count);
        let mut payloads = Vec::with_capacity(count);
        let mut metadatas = Vec::with_capacity(count);
        let mut prev_hashes = Vec::with_capacity(count);
        let mut hashes = Vec::with_capacity(count);
        for NewEvent { pending, metadata } in events {
            let position = self.position + 1;
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
            let hash = chain_hash(&self.hash, &link);
            positions.push(position);
            stream_ids.push(pending.stream_id);
            stream_versions.push(pending.stream_version);
            event_ids.push(event_id);
            event_types.push(pending.event.event_type().to_owned());
            schema_versions.push(Event::SCHEMA_VERSION);
            server_uuids.push(pending.server_uuid);
            payloads.push(payload);
            metadatas.push(metadata);
            prev_hashes.push(self.hash.to_vec());
            hashes.push(hash.to_vec());
            self.position = position;
            self.hash = hash;
        }
        let recorded_ats = vec![recorded_at; count];
        sqlx::query!(
            r#"INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version,
                                   server_uuid, payload, metadata, recorded_at, prev_hash, hash)
               SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::int[], $4::uuid[], $5::text[], $6::int[],
                                    $7::uuid[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], $11::bytea[],
                                    $12::bytea[])"#,
            &positions,
            &stream_ids,
            &stream_versions,
            &event_ids,
            &event_types,
            &schema_versions,
            &server_uuids,
            &payloads,
            &metadatas,
            &recorded_ats,
            &prev_hashes,
            &hashes,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

/// Writes credential rows into the view, replacing the rows of the same credentials: used by
/// the inline projection and by the rebuild.
pub(super) async fn write_credential_rows<'a>(
    tx: &mut Transaction<'static, Postgres>,
    credentials: impl Iterator<Item = &'a Credential>,
) -> Result<(), StoreError> {
    let mut ids = Vec::new();
    let mut uuids = Vec::new();
    let mut server_uuids = Vec::new();
    let mut names = Vec::new();
    let mut types = Vec::new();
    let mut holds = Vec::new();
    let mut key_hashes = Vec::new();
    let mut key_prefixes = Vec::new();
    let mut created_ats = Vec::new();
    let mut locked_ats = Vec::new();
    let mut versions = Vec::new();
    for credential in credentials {
        ids.push(credential.id);
        uuids.push(credential.uuid);
        server_uuids.push(credential.server_uuid);
        names.push(credential.name.as_str().to_owned());
        types.push(credential.credential_type.as_str().to_owned());
        holds.push(credential.hold);
        key_hashes.push(credential.key_hash.0.to_vec());
        key_prefixes.push(credential.key_prefix.clone());
        created_ats.push(credential.created_at);
        locked_ats.push(credential.locked_at);
        versions.push(credential.version);
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"INSERT INTO credentials (id, uuid, server_uuid, name, type, hold, key_hash, key_prefix,
                                    created_at, locked_at, version)
           SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bool[],
                                $7::bytea[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::int[])
           ON CONFLICT (uuid) DO UPDATE
              SET name = EXCLUDED.name, hold = EXCLUDED.hold, locked_at = EXCLUDED.locked_at,
                  version = EXCLUDED.version"#,
        &ids,
        &uuids,
        &server_uuids,
        &names,
        &types,
        &holds,
        &key_hashes,
        &key_prefixes,
        &created_ats,
        &locked_ats as &[Option<DateTime<Utc>>],
        &versions,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
