//! Reading the log out of PostgreSQL as export records, in position order.

use sqlx::PgPool;
use uuid::Uuid;

use super::{ChainGap, ExportRecord, ExportedEvent, Failure};

const PAGE: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not encode a record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("verification failed at {0}")]
    Verification(#[from] Failure),
}

/// Feeds every record of the ledger to `sink`, in order. With `server`, other servers' events
/// become gap records: their chain links without their content.
pub async fn export_records(
    pool: &PgPool,
    server: Option<Uuid>,
    mut sink: impl FnMut(ExportRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut after = 0i64;
    let mut gap: Option<ChainGap> = None;
    loop {
        // Positions are only ever appended, and a batch commits whole: each page continues a
        // consistent prefix of the log, so paging needs no long-lived snapshot.
        let page = sqlx::query!(
            r#"SELECT position, stream_id, stream_version, event_id, event_type, schema_version, server_uuid,
                      payload, metadata, recorded_at, prev_hash, hash
                 FROM events WHERE position > $1 ORDER BY position LIMIT $2"#,
            after,
            PAGE,
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for row in page {
            if server.is_some_and(|server| server != row.server_uuid) {
                match &mut gap {
                    Some(gap) => {
                        gap.to_position = row.position;
                        gap.hash = hex::encode(&row.hash);
                    }
                    None => {
                        gap = Some(ChainGap {
                            from_position: row.position,
                            to_position: row.position,
                            prev_hash: hex::encode(&row.prev_hash),
                            hash: hex::encode(&row.hash),
                        })
                    }
                }
                continue;
            }
            if let Some(gap) = gap.take() {
                sink(ExportRecord::Gap(gap))?;
            }
            sink(ExportRecord::Event(ExportedEvent {
                position: row.position,
                stream_id: row.stream_id,
                stream_version: row.stream_version,
                event_id: row.event_id,
                event_type: row.event_type,
                schema_version: row.schema_version,
                server_uuid: row.server_uuid,
                payload: row.payload,
                metadata: row.metadata,
                recorded_at: row.recorded_at,
                prev_hash: hex::encode(&row.prev_hash),
                hash: hex::encode(&row.hash),
            }))?;
        }
    }
    if let Some(gap) = gap.take() {
        sink(ExportRecord::Gap(gap))?;
    }
    Ok(())
}
