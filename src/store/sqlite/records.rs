//! Many rows in one statement. Each statement through sqlx's SQLite driver is a round trip to the
//! connection's thread, so a batch of 32 creates made 65 of them, and a rebuild one per
//! credential. Rows go instead as one JSON array that `json_each` unpacks inside SQLite (blobs as
//! hex, which `unhex` turns back into bytes: SQLite's JSON has no bytes), and the SQL stays fixed.

use serde::Serialize;
use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{sql, stored_time, StoreError};
use crate::domain::{Credential, StoredEvent};

/// How many rows go in one statement: large enough that a rebuild or an import is a few hundred
/// statements, small enough that one holds a few megabytes.
const ROWS_PER_STATEMENT: usize = 5_000;

/// One event as `sql::INSERT_EVENTS` reads it.
#[derive(Serialize)]
pub(super) struct EventRecord<'a> {
    pub position: i64,
    pub stream_id: Hex,
    pub stream_version: i32,
    pub event_id: Hex,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub server_uuid: Hex,
    pub payload: &'a str,
    pub metadata: &'a str,
    pub recorded_at: String,
    pub prev_hash: Hex,
    pub hash: Hex,
}

/// One view row as `sql::UPSERT_CREDENTIALS` reads it.
#[derive(Serialize)]
struct ViewRecord<'a> {
    id: i64,
    uuid: Hex,
    server_uuid: Hex,
    name: &'a str,
    #[serde(rename = "type")]
    credential_type: &'a str,
    hold: bool,
    key_hash: Hex,
    key_prefix: &'a str,
    created_at: String,
    locked_at: Option<String>,
    expires_at: Option<String>,
    replaced_by: Option<Hex>,
    version: i32,
}

/// Bytes as the lowercase hex `unhex` reads.
pub(super) struct Hex(String);

impl Hex {
    pub(super) fn of(bytes: &[u8]) -> Hex {
        Hex(hex::encode(bytes))
    }

    pub(super) fn uuid(uuid: Uuid) -> Hex {
        Hex(uuid.simple().to_string())
    }
}

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Appends `events` in one statement.
pub(super) async fn insert_events(
    connection: &mut SqliteConnection,
    events: &[EventRecord<'_>],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(sql::INSERT_EVENTS).bind(Json(events)).execute(connection).await?;
    Ok(())
}

/// Appends events that were stored before (an import), a few thousand per statement.
pub(super) async fn insert_stored_events(
    connection: &mut SqliteConnection,
    events: &[StoredEvent],
) -> Result<(), StoreError> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let records: Vec<EventRecord> = chunk
            .iter()
            .map(|event| EventRecord {
                position: event.position,
                stream_id: Hex::uuid(event.stream_id),
                stream_version: event.stream_version,
                event_id: Hex::uuid(event.event_id),
                event_type: &event.event_type,
                schema_version: event.schema_version,
                server_uuid: Hex::uuid(event.server_uuid),
                payload: &event.payload,
                metadata: &event.metadata,
                recorded_at: stored_time(event.recorded_at),
                prev_hash: Hex::of(&event.prev_hash),
                hash: Hex::of(&event.hash),
            })
            .collect();
        insert_events(&mut *connection, &records).await?;
    }
    Ok(())
}

/// Writes the view rows of `credentials`, new or changed.
pub(super) async fn upsert_view<'a>(
    connection: &mut SqliteConnection,
    credentials: impl Iterator<Item = &'a Credential>,
) -> Result<u64, StoreError> {
    write_view(connection, sql::UPSERT_CREDENTIALS, credentials).await
}

/// Writes the rows of a view being rebuilt (no indexes yet, so nothing to conflict with).
pub(super) async fn insert_view<'a>(
    connection: &mut SqliteConnection,
    credentials: impl Iterator<Item = &'a Credential>,
) -> Result<u64, StoreError> {
    write_view(connection, sql::INSERT_CREDENTIALS, credentials).await
}

/// A few thousand rows per statement.
async fn write_view<'a>(
    connection: &mut SqliteConnection,
    statement: &'static str,
    credentials: impl Iterator<Item = &'a Credential>,
) -> Result<u64, StoreError> {
    let mut written = 0;
    let mut chunk = Vec::new();
    let mut credentials = credentials.peekable();
    while credentials.peek().is_some() {
        chunk.clear();
        chunk.extend(credentials.by_ref().take(ROWS_PER_STATEMENT).map(|credential| ViewRecord {
            id: credential.id,
            uuid: Hex::uuid(credential.uuid),
            server_uuid: Hex::uuid(credential.server_uuid),
            name: credential.name.as_str(),
            credential_type: credential.credential_type.as_str(),
            hold: credential.hold,
            key_hash: Hex::of(&credential.key_hash.0),
            key_prefix: &credential.key_prefix,
            created_at: stored_time(credential.created_at),
            locked_at: credential.locked_at.map(stored_time),
            expires_at: credential.expires_at.map(stored_time),
            replaced_by: credential.replaced_by.map(Hex::uuid),
            version: credential.version,
        }));
        sqlx::query(statement).bind(Json(&chunk)).execute(&mut *connection).await?;
        written += chunk.len() as u64;
    }
    Ok(written)
}
