//! The database as the work queue (no RabbitMQ): receiving claims due attempts. Between claims
//! the consumer sleeps until the earliest due time, a wake-up (the dispatcher opened
//! deliveries, `webhooks/retry` asked for one, an attempt settled) or the sweep interval, the
//! last for what other processes on the same database do.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Acker, QueueError, TaskDelivery, WebhookTask};
use crate::store::Store;
use crate::webhooks::WebhookSettings;

/// The shortest sleep between two looks: a due time that is already past but not yet
/// claimable (a held attempt exactly at its limit) must not make the loop spin.
const MIN_SLEEP: Duration = Duration::from_millis(10);

pub struct DatabaseConsumer {
    store: Store,
    wake: Arc<Notify>,
    /// How long a claimed attempt is held: the request's time limit.
    lease: Duration,
    presumed_lost_after: Duration,
    sweep_interval: Duration,
}

impl DatabaseConsumer {
    pub fn new(store: Store, settings: &WebhookSettings, wake: Arc<Notify>) -> Self {
        DatabaseConsumer {
            store,
            wake,
            lease: settings.timeout,
            presumed_lost_after: settings.presumed_lost_after,
            sweep_interval: settings.sweep_interval.max(MIN_SLEEP),
        }
    }

    pub async fn receive(&mut self, room: usize, stop: &CancellationToken) -> Result<Vec<TaskDelivery>, QueueError> {
        loop {
            if stop.is_cancelled() {
                return Ok(Vec::new());
            }
            // Not raced against `stop`: a claim abandoned after its commit would leave its
            // attempts held until their lease runs out.
            let claimed =
                self.store.claim_due_attempts(Utc::now(), self.lease, self.presumed_lost_after, room.max(1)).await?;
            if !claimed.is_empty() {
                let wake = &self.wake;
                return Ok(claimed
                    .into_iter()
                    .map(|delivery| TaskDelivery {
                        task: WebhookTask::Claimed(delivery),
                        acker: Acker::Database(wake.clone()),
                    })
                    .collect());
            }
            let next_due = self.store.next_due_at(self.presumed_lost_after).await?;
            let until_due = next_due.map_or(self.sweep_interval, |due| {
                (due - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(self.sweep_interval)
            });
            tokio::select! {
                _ = stop.cancelled() => return Ok(Vec::new()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(until_due.max(MIN_SLEEP)) => {}
            }
        }
    }
}
