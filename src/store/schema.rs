//! Schema management: migrations for the event store, projections for the read models.

use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::append::write_credential_rows;
use super::StoreError;
use crate::domain::{Event, Ledger};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const CREDENTIALS_PROJECTION: &str = "credentials";
const CREDENTIALS_SCHEMA: &str = include_str!("../../projections/credentials.sql");
const REPLAY_PAGE: i64 = 20_000;
const WRITE_CHUNK: usize = 10_000;

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
/// holds the chain head, so no append is missed and readers see the old view until commit.
pub async fn rebuild_projections(pool: &PgPool) -> Result<RebuildReport, StoreError> {
    let mut tx = pool.begin().await?;
    let head = sqlx::query_scalar!("SELECT position FROM chain_head FOR UPDATE").fetch_one(&mut *tx).await?;
    sqlx::raw_sql("DROP TABLE IF EXISTS credentials").execute(&mut *tx).await?;
    sqlx::raw_sql(CREDENTIALS_SCHEMA).execute(&mut *tx).await?;

    let mut ledger = Ledger::new(0);
    let mut events = 0u64;
    let mut after = 0i64;
    loop {
        let page = sqlx::query!(
            r#"SELECT position, stream_id, stream_version, event_type, schema_version, payload, recorded_at
                 FROM events WHERE position > $1 ORDER BY position LIMIT $2"#,
            after,
            REPLAY_PAGE,
        )
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for row in page {
            let corrupt = |reason: String| StoreError::Corrupt { position: row.position, reason };
            let event = Event::decode(&row.event_type, row.schema_version, row.payload)
                .map_err(|error| corrupt(error.to_string()))?;
            ledger
                .record(row.stream_id, row.stream_version, row.recorded_at, &event)
                .map_err(|error| corrupt(error.to_string()))?;
            events += 1;
        }
    }

    let credentials: Vec<_> = ledger.into_credentials().collect();
    for chunk in credentials.chunks(WRITE_CHUNK) {
        write_credential_rows(&mut tx, chunk.iter()).await?;
    }
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
    tx.commit().await?;
    Ok(RebuildReport { events, credentials: credentials.len() as u64, position: head })
}
