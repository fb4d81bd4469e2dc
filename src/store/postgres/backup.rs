//! What a backup reads besides the log (servers, webhook endpoints), and `import`: a verified
//! ledger written into an empty database in one transaction.

use chrono::{DateTime, Utc};

use super::schema::rebuild_in;
use super::{PgStore, StoreError};
use crate::store::backup::{ImportBatch, Imported, StoredEndpoint, StoredServer, IN_PROCESS_WEBHOOKS_CHECKPOINT};

/// Events per INSERT: twelve arrays of this many elements in one statement.
const EVENTS_PER_STATEMENT: usize = 5_000;

impl PgStore {
    pub async fn backup_servers(&self) -> Result<Vec<StoredServer>, StoreError> {
        let servers =
            sqlx::query_as!(StoredServer, "SELECT uuid, name, created_at FROM servers ORDER BY created_at, uuid")
                .fetch_all(&self.pool)
                .await?;
        Ok(servers)
    }

    pub async fn backup_endpoints(&self) -> Result<Vec<StoredEndpoint>, StoreError> {
        let endpoints = sqlx::query_as!(
            StoredEndpoint,
            r#"SELECT uuid, server_uuid, url, events, description, secret, created_at, disabled_at, disabled_reason,
                      deleted_at
                 FROM webhook_endpoints ORDER BY created_at, uuid"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(endpoints)
    }

    /// See `Store::import`. The head's row is locked first: appends from running instances wait
    /// for the commit, and then find the head moved.
    pub async fn import(&self, batch: ImportBatch<'_>) -> Result<Imported, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query_scalar!("SELECT position FROM chain_head FOR UPDATE").fetch_one(&mut *tx).await?;
        let row = sqlx::query!(
            r#"SELECT (SELECT count(*) FROM servers) AS "servers!",
                      (SELECT count(*) FROM webhook_endpoints) AS "endpoints!""#
        )
        .fetch_one(&mut *tx)
        .await?;
        if head > 0 || row.servers > 0 || row.endpoints > 0 {
            return Err(StoreError::NotEmpty(format!(
                "head at position {head}, {} servers, {} webhook endpoints",
                row.servers, row.endpoints
            )));
        }

        let uuids: Vec<_> = batch.servers.iter().map(|server| server.uuid).collect();
        let names: Vec<_> = batch.servers.iter().map(|server| server.name.clone()).collect();
        let created: Vec<_> = batch.servers.iter().map(|server| server.created_at).collect();
        sqlx::query!(
            "INSERT INTO servers (uuid, name, created_at) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[])",
            &uuids,
            &names,
            &created,
        )
        .execute(&mut *tx)
        .await?;

        for endpoint in batch.endpoints {
            sqlx::query!(
                r#"INSERT INTO webhook_endpoints (uuid, server_uuid, url, events, description, secret, created_at,
                                                 disabled_at, disabled_reason, deleted_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
                endpoint.uuid,
                endpoint.server_uuid,
                endpoint.url,
                &endpoint.events,
                endpoint.description,
                endpoint.secret,
                endpoint.created_at,
                endpoint.disabled_at,
                endpoint.disabled_reason,
                endpoint.deleted_at,
            )
            .execute(&mut *tx)
            .await?;
        }

        for chunk in batch.events.chunks(EVENTS_PER_STATEMENT) {
            let mut columns = EventColumns::with_capacity(chunk.len());
            for event in chunk {
                columns.positions.push(event.position);
                columns.stream_ids.push(event.stream_id);
                columns.stream_versions.push(event.stream_version);
                columns.event_ids.push(event.event_id);
                columns.event_types.push(event.event_type.clone());
                columns.schema_versions.push(event.schema_version);
                columns.server_uuids.push(event.server_uuid);
                columns.payloads.push(event.payload_json()?);
                columns.metadatas.push(event.metadata_json()?);
                columns.recorded_ats.push(event.recorded_at);
                columns.prev_hashes.push(event.prev_hash.clone());
                columns.hashes.push(event.hash.clone());
            }
            sqlx::query!(
                r#"INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version,
                                      server_uuid, payload, metadata, recorded_at, prev_hash, hash)
                   SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::int[], $4::uuid[], $5::text[], $6::int[],
                                        $7::uuid[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], $11::bytea[],
                                        $12::bytea[])"#,
                &columns.positions,
                &columns.stream_ids,
                &columns.stream_versions,
                &columns.event_ids,
                &columns.event_types,
                &columns.schema_versions,
                &columns.server_uuids,
                &columns.payloads,
                &columns.metadatas,
                &columns.recorded_ats,
                &columns.prev_hashes,
                &columns.hashes,
            )
            .execute(&mut *tx)
            .await?;
        }

        let position = match batch.events.last() {
            Some(last) => {
                sqlx::query!(
                    "UPDATE chain_head SET position = $1, hash = $2, last_credential_id = $3, recorded_at = $4",
                    last.position,
                    &last.hash,
                    batch.ledger.last_credential_id(),
                    last.recorded_at,
                )
                .execute(&mut *tx)
                .await?;
                last.position
            }
            None => 0,
        };
        sqlx::query!(
            r#"INSERT INTO relay_checkpoints (exchange, position) VALUES ($1, $2)
               ON CONFLICT (exchange) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"#,
            IN_PROCESS_WEBHOOKS_CHECKPOINT,
            position,
        )
        .execute(&mut *tx)
        .await?;
        let report = rebuild_in(&mut tx).await?;
        tx.commit().await?;
        Ok(Imported { position: report.position, events: report.events, credentials: report.credentials })
    }
}

/// A chunk of events, one array per column.
struct EventColumns {
    positions: Vec<i64>,
    stream_ids: Vec<uuid::Uuid>,
    stream_versions: Vec<i32>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    server_uuids: Vec<uuid::Uuid>,
    payloads: Vec<serde_json::Value>,
    metadatas: Vec<serde_json::Value>,
    recorded_ats: Vec<DateTime<Utc>>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        EventColumns {
            positions: Vec::with_capacity(n),
            stream_ids: Vec::with_capacity(n),
            stream_versions: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            server_uuids: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadatas: Vec::with_capacity(n),
            recorded_ats: Vec::with_capacity(n),
            prev_hashes: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
        }
    }
}
