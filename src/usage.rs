//! `last_used_at`: successful authentications are coalesced in memory and flushed in batches,
//! so authenticating costs no database write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Store;

#[derive(Debug, Clone, Default)]
pub struct UsageRecorder {
    pending: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>>,
}

impl UsageRecorder {
    pub fn record(&self, credential_uuid: Uuid, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = pending.entry(credential_uuid).or_insert(at);
        *slot = (*slot).max(at);
    }

    /// The newest unflushed use of a credential, so a read right after a use sees it.
    pub fn pending(&self, credential_uuid: Uuid) -> Option<DateTime<Utc>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).get(&credential_uuid).copied()
    }

    /// Writes what has accumulated; on failure it is kept for the next flush.
    pub async fn flush(&self, store: &Store) {
        let taken: Vec<(Uuid, DateTime<Utc>)> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.is_empty() {
                return;
            }
            pending.drain().collect()
        };
        if let Err(error) = store.record_usage(&taken).await {
            tracing::warn!(error = %error, credentials = taken.len(), "could not flush last_used_at; will retry");
            for (uuid, at) in taken {
                self.record(uuid, at);
            }
        }
    }

    /// Flushes every `interval` until `stop` is cancelled, then once more.
    pub fn spawn_flusher(&self, store: Store, interval: Duration, stop: CancellationToken) -> JoinHandle<()> {
        let recorder = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => recorder.flush(&store).await,
                    _ = stop.cancelled() => break,
                }
            }
            recorder.flush(&store).await;
        })
    }
}
