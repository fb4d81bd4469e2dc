//! The dispatcher (in-process delivery, no RabbitMQ): follows the log from its checkpoint and
//! opens one due delivery per `CredentialLocked` and subscribed endpoint, for the database
//! queue's workers to claim. It is what the relay, the work queue and the fan-out are together
//! with a broker.
//!
//! The deliveries of a batch and the checkpoint's move are one transaction (batches that open
//! none move it at most once a second), and the move is a compare-and-set: with several instances on one database each batch is fanned out by one of
//! them, and the unique (event, endpoint) key guards the rest. A crash before the commit leaves
//! the batch to the next read; after it, the deliveries are in the table, due.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::payload::{payload, EventMessage, PayloadError};
use crate::domain::CREDENTIAL_LOCKED;
use crate::store::{HeadChanges, NewDelivery, Store, StoreError, IN_PROCESS_WEBHOOKS_CHECKPOINT};

/// The most events read, fanned out and checkpointed at once.
const BATCH: i64 = 500;

/// How long the checkpoint may stay behind over events that opened no delivery. Each move is a
/// write transaction, a sync to disk that the appends wait behind, and under a steady write load
/// nearly every batch is one of those; so they are written once a second, and a restart reads
/// again at most a second of events that open nothing.
const QUIET_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

pub struct Dispatcher {
    store: Store,
    /// Notified when deliveries were opened.
    wake: Arc<Notify>,
    /// How often the log is read without a sign of an append (appends of other processes, or
    /// a lost notification).
    poll_interval: Duration,
}

impl Dispatcher {
    pub fn new(store: Store, wake: Arc<Notify>, poll_interval: Duration) -> Self {
        Dispatcher { store, wake, poll_interval: poll_interval.max(Duration::from_millis(10)) }
    }

    /// Dispatches until `stop` is cancelled, starting over with backoff after a failure.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow(&stop).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "webhook dispatcher interrupted");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("webhook dispatcher stopped");
    }

    async fn follow(&self, stop: &CancellationToken) -> Result<(), DispatchError> {
        // Subscribed before the first read, so that no append falls between the two.
        let mut changes = match self.store.head_changes().await {
            Ok(changes) => Some(changes),
            Err(error) => {
                tracing::warn!(error = %error, "no append notifications: the dispatcher polls");
                None
            }
        };
        // `stored` is the checkpoint as the database holds it, `read` how far this dispatcher has
        // read: ahead of it only by events that opened no delivery.
        let mut stored = self.store.dispatch_checkpoint(IN_PROCESS_WEBHOOKS_CHECKPOINT).await?;
        let mut read = stored;
        let mut stored_at = Instant::now();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let events = self.store.events_after(read, BATCH).await?;
            let Some(last) = events.last().map(|event| event.position) else {
                let catch_up = async {
                    match read > stored {
                        true => tokio::time::sleep_until(stored_at + QUIET_CHECKPOINT_INTERVAL).await,
                        false => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    changed = next_change(&mut changes) => changed?,
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    _ = catch_up => {
                        (stored, read) = self.commit(stored, read, &[]).await?;
                        stored_at = Instant::now();
                    }
                }
                continue;
            };
            let mut deliveries = Vec::new();
            for event in events.iter().filter(|event| event.event_type == CREDENTIAL_LOCKED) {
                let endpoints = self.store.subscribed_endpoints(event.server_uuid, &event.event_type).await?;
                if endpoints.is_empty() {
                    continue;
                }
                let message = EventMessage::from(event);
                let body = payload(&self.store, &message).await?;
                deliveries.extend(endpoints.iter().map(|endpoint| NewDelivery {
                    server_uuid: message.server_uuid,
                    endpoint_uuid: endpoint.uuid,
                    event_id: message.event_id,
                    event_type: message.event_type.clone(),
                    webhook_id: message.webhook_id(),
                    payload: body.clone(),
                }));
            }
            read = last;
            if deliveries.is_empty() && stored_at.elapsed() < QUIET_CHECKPOINT_INTERVAL {
                continue;
            }
            (stored, read) = self.commit(stored, read, &deliveries).await?;
            stored_at = Instant::now();
        }
    }

    /// Moves the checkpoint from `stored` to `read` with `deliveries`, and says where both are
    /// then: at `read` once committed; at the stored checkpoint if another instance moved it
    /// first (it fanned these events out: go on from where it got).
    async fn commit(&self, stored: i64, read: i64, deliveries: &[NewDelivery]) -> Result<(i64, i64), StoreError> {
        let committed =
            self.store.commit_dispatch(IN_PROCESS_WEBHOOKS_CHECKPOINT, stored, read, deliveries, Utc::now()).await?;
        if !committed {
            let stored = self.store.dispatch_checkpoint(IN_PROCESS_WEBHOOKS_CHECKPOINT).await?;
            return Ok((stored, stored));
        }
        if !deliveries.is_empty() {
            tracing::debug!(deliveries = deliveries.len(), position = read, "webhook deliveries opened");
            self.wake.notify_one();
        }
        Ok((read, read))
    }
}

/// The next sign of an append; never, without notifications.
async fn next_change(changes: &mut Option<HeadChanges>) -> Result<(), StoreError> {
    match changes {
        Some(changes) => changes.changed().await,
        None => std::future::pending().await,
    }
}
