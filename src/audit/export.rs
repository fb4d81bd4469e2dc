//! Reading the log out of the store as export records, in position order.

use uuid::Uuid;

use super::{ChainGap, ExportRecord, Failure};
use crate::store::{Store, StoreError};

const PAGE: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
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
    store: &Store,
    server: Option<Uuid>,
    sink: impl FnMut(ExportRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    export_events(store, server, i64::MAX, sink).await
}

/// Feeds a backup to `sink`: every server, every webhook endpoint (with its secret), then every
/// event, up to the head as it stood before the servers were read. A server is created in the
/// append of its first event, so every server an exported event names is among those read.
pub async fn export_backup(
    store: &Store,
    mut sink: impl FnMut(ExportRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let head = store.head_position().await?;
    for server in store.backup_servers().await? {
        sink(ExportRecord::Server(server))?;
    }
    for endpoint in store.backup_endpoints().await? {
        sink(ExportRecord::WebhookEndpoint(endpoint))?;
    }
    export_events(store, None, head, sink).await
}

async fn export_events(
    store: &Store,
    server: Option<Uuid>,
    until: i64,
    mut sink: impl FnMut(ExportRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut after = 0i64;
    let mut gap: Option<ChainGap> = None;
    while after < until {
        // Positions are only ever appended, and a batch commits whole: each page continues a
        // consistent prefix of the log, so paging needs no long-lived snapshot.
        let page = store.events_after(after, PAGE.min(until - after)).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page {
            if server.is_some_and(|server| server != event.server_uuid) {
                let hash = hex::encode(&event.hash);
                match &mut gap {
                    Some(gap) => {
                        gap.to_position = event.position;
                        gap.hash = hash;
                    }
                    None => {
                        gap = Some(ChainGap {
                            from_position: event.position,
                            to_position: event.position,
                            prev_hash: hex::encode(&event.prev_hash),
                            hash,
                        })
                    }
                }
                continue;
            }
            if let Some(gap) = gap.take() {
                sink(ExportRecord::Gap(gap))?;
            }
            sink(ExportRecord::Event(event))?;
        }
    }
    if let Some(gap) = gap.take() {
        sink(ExportRecord::Gap(gap))?;
    }
    Ok(())
}
