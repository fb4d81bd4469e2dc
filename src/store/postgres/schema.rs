//! Schema management: migrations for the event store, projections for the read models.

use std::io::Write;

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::domain::{Credential, Ledger};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const CREDENTIALS_PROJECTION: &str = "credentials";
const CREDENTIALS_SCHEMA: &str = include_str!("../../../projections/credentials.sql");
/// Where the projection file's bare table ends and its indexes begin.
const INDEXES_MARKER: &str = "\n-- indexes\n";
/// How much COPY text to send at once.
const COPY_CHUNK: usize = 1 << 20;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub events: u64,
    pub credentials: u64,
    pub position: i64,
}

/// Brings the database up to date: migrations first, then any projection whose schema file
/// changed (or was never built) is rebuilt from the log.
pub async fn prepare(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    let built = sqlx::query_scalar!("SELECT checksum FROM projection_versions WHERE name = $1", CREDENTIALS_PROJECTION)
        .fetch_optional(pool)
        .await?;
    if built.as_deref() != Some(&schema_checksum()[..]) {
        let report = rebuild_projections(pool).await?;
        tracing::info!(events = report.events, credentials = report.credentials, "credential view rebuilt");
    }
    Ok(())
}

/// How many migrations are applied, and how many this build has.
pub async fn applied_migrations(pool: &PgPool) -> Result<(i64, i64), StoreError> {
    // sqlx's own bookkeeping table: not part of our schema, so not checked at compile time.
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok((applied, MIGRATOR.iter().count() as i64))
}

fn schema_checksum() -> [u8; 32] {
    Sha256::digest(CREDENTIALS_SCHEMA.as_bytes()).into()
}

/// Drops the credential view and replays the whole log into a new one, in one transaction that
/// holds the chain head's table, so no append is missed and readers see the old view until commit. The
/// log is streamed and folded in memory, the bare table is loaded with COPY, and the indexes are
/// built last.
pub async fn rebuild_projections(pool: &PgPool) -> Result<RebuildReport, StoreError> {
    let mut tx = pool.begin().await?;
    let report = rebuild_in(&mut tx).await?;
    tx.commit().await?;
    Ok(report)
}

/// The rebuild, inside the caller's transaction (an import rebuilds in the one that writes).
pub(super) async fn rebuild_in(tx: &mut PgConnection) -> Result<RebuildReport, StoreError> {
    let (table, indexes) = CREDENTIALS_SCHEMA.split_once(INDEXES_MARKER).unwrap_or((CREDENTIALS_SCHEMA, ""));
    // Every appender locks chain_head before it touches the view (the append statement's first
    // table, the locked path's FOR UPDATE), so this does too: appends wait here instead of
    // deadlocking with the DROP, and plain reads of the head go on.
    sqlx::raw_sql("LOCK TABLE chain_head IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    sqlx::raw_sql("DROP TABLE IF EXISTS credentials").execute(&mut *tx).await?;
    let head = sqlx::query_scalar!("SELECT position FROM chain_head").fetch_one(&mut *tx).await?;
    sqlx::raw_sql(table).execute(&mut *tx).await?;

    let mut ledger = Ledger::new(0);
    let mut events = 0u64;
    {
        let mut log = select_logged!("ORDER BY position").fetch(&mut *tx);
        while let Some(event) = log.try_next().await? {
            ledger.fold(event.logged())?;
            events += 1;
        }
    }

    let mut copy = tx
        .copy_in_raw(
            "COPY credentials (id, uuid, server_uuid, name, type, hold, key_hash, key_prefix, created_at, locked_at, \
             expires_at, replaced_by, version) FROM STDIN",
        )
        .await?;
    let mut text = Vec::with_capacity(COPY_CHUNK + 1024);
    let mut credentials = 0u64;
    for credential in ledger.credentials() {
        copy_row(&mut text, credential);
        credentials += 1;
        if text.len() >= COPY_CHUNK {
            copy.send(text.as_slice()).await?;
            text.clear();
        }
    }
    copy.send(text.as_slice()).await?;
    copy.finish().await?;
    drop(ledger);

    // Sorting a million keys fits in memory with this, instead of spilling to disk.
    sqlx::query!("SET LOCAL maintenance_work_mem = '256MB'").execute(&mut *tx).await?;
    sqlx::raw_sql(indexes).execute(&mut *tx).await?;
    sqlx::query!(
        r#"INSERT INTO projection_versions (name, checksum, position, rebuilt_at) VALUES ($1, $2, $3, now())
           ON CONFLICT (name) DO UPDATE
              SET checksum = EXCLUDED.checksum, position = EXCLUDED.position, rebuilt_at = EXCLUDED.rebuilt_at"#,
        CREDENTIALS_PROJECTION,
        &schema_checksum()[..],
        head,
    )
    .execute(&mut *tx)
    .await?;
    Ok(RebuildReport { events, credentials, position: head })
}

/// One view row in COPY's text format: tab-separated, `\N` for NULL, bytea as `\\x` hex.
fn copy_row(out: &mut Vec<u8>, credential: &Credential) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}\t{}\t{}\t", credential.id, credential.uuid, credential.server_uuid);
    copy_text(out, credential.name.as_str());
    let _ = write!(
        out,
        "\t{}\t{}\t\\\\x{}\t",
        credential.credential_type.as_str(),
        if credential.hold { 't' } else { 'f' },
        hex::encode(credential.key_hash.0)
    );
    copy_text(out, &credential.key_prefix);
    let _ = write!(out, "\t{}\t", credential.created_at.to_rfc3339());
    copy_optional(out, credential.locked_at.map(|at| at.to_rfc3339()));
    out.push(b'\t');
    copy_optional(out, credential.expires_at.map(|at| at.to_rfc3339()));
    out.push(b'\t');
    copy_optional(out, credential.replaced_by.map(|uuid| uuid.to_string()));
    let _ = writeln!(out, "\t{}", credential.version);
}

/// A value that needs no escaping, or COPY's NULL.
fn copy_optional(out: &mut Vec<u8>, value: Option<String>) {
    match value {
        Some(value) => out.extend_from_slice(value.as_bytes()),
        None => out.extend_from_slice(b"\\N"),
    }
}

/// A text value escaped for COPY: the characters its format gives meaning to are backslashed.
fn copy_text(out: &mut Vec<u8>, value: &str) {
    for byte in value.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}
