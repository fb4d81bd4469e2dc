//! `last_used_at`: successful authentications are coalesced in memory and flushed in batches,
//! so authenticating costs no database write.

// foldhash, not SipHash: `list` looks up every listed credential here, and the keys are uuids
// this service made, not a client's choice.
use hashbrown::HashMap;
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
    /// What is in the usage table, as last read (this instance's and the others' uses).
    known: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>>,
}

/// How far back each refresh reads, so that a flush by another instance that committed a
/// little after its uses were recorded is not missed.
const REFRESH_OVERLAP: chrono::Duration = chrono::Duration::seconds(10);

impl UsageRecorder {
    pub fn record(&self, credential_uuid: Uuid, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = pending.entry(credential_uuid).or_insert(at);
        *slot = (*slot).max(at);
    }

    /// The newest use of each credential known here (unflushed, or read from the usage table), in
    /// order: a page of a list, under each map's lock once.
    pub fn last_used_each(&self, credential_uuids: impl Iterator<Item = Uuid> + Clone) -> Vec<Option<DateTime<Utc>>> {
        let pending: Vec<_> = {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            credential_uuids.clone().map(|uuid| pending.get(&uuid).copied()).collect()
        };
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .into_iter()
            .zip(credential_uuids)
            .map(|(pending, uuid)| pending.max(known.get(&uuid).copied()))
            .collect()
    }

    /// Reads uses recorded since `since` (by any instance) into what is known here.
    pub async fn refresh(&self, store: &Store, since: DateTime<Utc>) {
        match store.usage_since(since).await {
            Ok(rows) => {
                let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                for (uuid, at) in rows {
                    let slot = known.entry(uuid).or_insert(at);
                    *slot = (*slot).max(at);
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not read last_used_at"),
        }
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
        // Known from now on, not once written: a use must not vanish from `list` while its write
        // is in flight (a failed write puts it back in `pending` for the next flush).
        {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            for (uuid, at) in &taken {
                let slot = known.entry(*uuid).or_insert(*at);
                *slot = (*slot).max(*at);
            }
        }
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
            recorder.refresh(&store, DateTime::UNIX_EPOCH).await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        let read_from = Utc::now() - interval_as_chrono(interval) - REFRESH_OVERLAP;
                        recorder.flush(&store).await;
                        recorder.refresh(&store, read_from).await;
                    }
                    _ = stop.cancelled() => break,
                }
            }
            recorder.flush(&store).await;
        })
    }
}

fn interval_as_chrono(interval: Duration) -> chrono::Duration {
    chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::temp::TempLedger;

    /// A use stays listed while the flush that writes it waits for the database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_use_does_not_vanish_while_its_flush_is_in_flight() {
        let ledger = TempLedger::new();
        let sqlite = ledger.store().await;
        let held = sqlite.writer().acquire().await.unwrap();
        let store = Store::Sqlite(sqlite);
        let usage = UsageRecorder::default();
        let (uuid, at) = (Uuid::new_v4(), Utc::now());
        usage.record(uuid, at);
        let flushing = tokio::spawn({
            let (usage, store) = (usage.clone(), store.clone());
            async move { usage.flush(&store).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!flushing.is_finished(), "the flush waits for the writer");
        assert_eq!(usage.last_used_each([uuid].into_iter()), [Some(at)]);
        drop(held);
        flushing.await.unwrap();
        assert_eq!(usage.last_used_each([uuid].into_iter()), [Some(at)]);
        assert_eq!(store.usage_since(DateTime::UNIX_EPOCH).await.unwrap().len(), 1, "and it is written");
    }
}
