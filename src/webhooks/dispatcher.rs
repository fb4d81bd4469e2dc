//! The dispatcher (in-process delivery, no RabbitMQ): follows the log from its checkpoint and
//! opens one due delivery per `CredentialLocked` and subscribed endpoint, for the database
//! queue's workers to claim. It is what the relay, the work queue and the fan-out are together
//! with a broker.
//!
//! The deliveries of a batch and the checkpoint's move are one transaction, and the move is a
//! compare-and-set: with several instances on one database each batch is fanned out by one of
//! them, and the unique (event, endpoint) key guards the rest. A crash before the commit leaves
//! the batch to the next read; after it, the deliveries are in the table, due.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::payload::{payload, EventMessage, PayloadError};
use crate::domain::CREDENTIAL_LOCKED;
use crate::store::{HeadChanges, NewDelivery, Store, StoreError, IN_PROCESS_WEBHOOKS_CHECKPOINT};

/// The most events read, fanned out and checkpointed at once.
const BATCH: i64 = 500;

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
        let mut checkpoint = self.store.dispatch_checkpoint(IN_PROCESS_WEBHOOKS_CHECKPOINT).await?;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let events = self.store.events_after(checkpoint, BATCH).await?;
            let Some(last) = events.last().map(|event| event.position) else {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    changed = next_change(&mut changes) => changed?,
                    _ = tokio::time::sleep(self.poll_interval) => {}
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
            let committed = self
                .store
                .commit_dispatch(IN_PROCESS_WEBHOOKS_CHECKPOINT, checkpoint, last, &deliveries, Utc::now())
                .await?;
            if committed {
                checkpoint = last;
                if !deliveries.is_empty() {
                    tracing::debug!(deliveries = deliveries.len(), position = last, "webhook deliveries opened");
                    self.wake.notify_one();
                }
            } else {
                // Another instance fanned this batch out: go on from where it got.
                checkpoint = self.store.dispatch_checkpoint(IN_PROCESS_WEBHOOKS_CHECKPOINT).await?;
            }
        }
    }
}

/// The next sign of an append; never, without notifications.
async fn next_change(changes: &mut Option<HeadChanges>) -> Result<(), StoreError> {
    match changes {
        Some(changes) => changes.changed().await,
        None => std::future::pending().await,
    }
}
