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
    mut sink: impl FnMut(ExportRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut after = 0i64;
    let mut gap: Option<ChainGap> = None;
    loop {
        // Positions are only ever appended, and a batch commits whole: each page continues a
        // consistent prefix of the log, so paging needs no long-lived snapshot.
        let page = store.events_after(after, PAGE).await?;
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
