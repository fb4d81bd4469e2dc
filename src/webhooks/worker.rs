//! The worker: takes tasks from its queue (`queue::new_pair`: RabbitMQ or the database, it does
//! not know which) and makes their attempts concurrently, up to `prefetch` at once. A task is
//! acknowledged only once its attempts are recorded and what follows them is queued, so a
//! crash repeats an attempt, never loses one.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::payload::{payload, EventMessage, PayloadError};
use super::queue::{self, QueueError, TaskDelivery, TaskQueueProducer, WebhookTask};
use super::sender::Sender;
use super::WebhookSettings;
use crate::domain::{after_attempt, AfterAttempt, AttemptResult};
use crate::metrics::OutcomeLabels;
use crate::store::{AttemptRecord, DeliveryTarget, Store, StoreError};

#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

pub struct WebhookWorker {
    store: Store,
    settings: WebhookSettings,
    sender: Sender,
    /// Notified when attempts fall due in this process (the database queue waits on it).
    wake: Arc<Notify>,
}

impl WebhookWorker {
    pub fn new(store: Store, settings: WebhookSettings, wake: Arc<Notify>) -> Result<Self, reqwest::Error> {
        let sender = Sender::new(settings.timeout, settings.allow_private)?;
        Ok(WebhookWorker { store, settings, sender, wake })
    }

    /// Works until `stop` is cancelled, starting over with backoff when the queue goes away.
    pub async fn run(self, stop: CancellationToken) {
        let worker = Arc::new(self);
        let mut backoff = Duration::from_millis(100);
        loop {
            match worker.clone().consume(&stop).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "webhook worker interrupted");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("webhook worker stopped");
    }

    async fn consume(self: Arc<Self>, stop: &CancellationToken) -> Result<(), QueueError> {
        let (producer, mut consumer) = queue::new_pair(&self.settings, &self.store, &self.wake).await?;
        let prefetch = usize::from(self.settings.prefetch.max(1));
        let mut in_flight = JoinSet::new();
        let outcome = loop {
            while in_flight.try_join_next().is_some() {}
            if stop.is_cancelled() {
                break Ok(());
            }
            let room = prefetch.saturating_sub(in_flight.len());
            if room == 0 {
                tokio::select! {
                    _ = stop.cancelled() => break Ok(()),
                    _ = in_flight.join_next() => continue,
                }
            }
            match consumer.receive(room, stop).await {
                Ok(tasks) => {
                    for task in tasks {
                        let worker = self.clone();
                        let producer = producer.clone();
                        in_flight.spawn(async move { worker.process(task, &producer).await });
                    }
                }
                Err(error) => break Err(error),
            }
        };
        // Let started attempts finish: they are recorded, or their task is taken again.
        let _ = tokio::time::timeout(self.settings.timeout + Duration::from_secs(5), async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        outcome
    }

    async fn process(&self, delivery: TaskDelivery, producer: &TaskQueueProducer) {
        let result = match &delivery.task {
            WebhookTask::FanOut(event) => self.fan_out(event, producer).await,
            WebhookTask::Attempt { delivery_id, attempt } => self.attempt(*delivery_id, *attempt, producer).await,
            WebhookTask::Claimed(target) => self.deliver(target.clone(), producer).await,
        };
        let settled = match result {
            Ok(()) => delivery.ack().await,
            Err(error) => {
                tracing::warn!(error = %error, "webhook task will be retried");
                // Taken again at once it would spin while the database or broker is away.
                tokio::time::sleep(Duration::from_secs(1)).await;
                delivery.nack().await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(error = %error, "could not settle a webhook task; it will be taken again");
        }
    }

    /// One delivery per subscribed endpoint of the event's server, each tried once now.
    async fn fan_out(&self, event: &EventMessage, producer: &TaskQueueProducer) -> Result<(), WorkerError> {
        let endpoints = self.store.subscribed_endpoints(event.server_uuid, &event.event_type).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let payload = payload(&self.store, event).await?;
        let webhook_id = event.webhook_id();
        let attempts = endpoints.iter().map(|endpoint| async {
            let delivery_id = self
                .store
                .open_webhook_delivery(
                    event.server_uuid,
                    endpoint.uuid,
                    event.event_id,
                    &event.event_type,
                    &webhook_id,
                    &payload,
                )
                .await?;
            // Whichever attempt is next: a redelivered event means its attempt was not recorded.
            self.attempt(delivery_id, None, producer).await
        });
        futures::future::join_all(attempts).await.into_iter().collect()
    }

    /// Claims the attempt of a delivery (number `attempt`, if given), if it is still due, and
    /// makes it.
    async fn attempt(
        &self,
        delivery_id: i64,
        attempt: Option<i32>,
        producer: &TaskQueueProducer,
    ) -> Result<(), WorkerError> {
        match self.store.claim_webhook_attempt(delivery_id, attempt, self.settings.timeout).await? {
            Some(delivery) => self.deliver(delivery, producer).await,
            None => Ok(()),
        }
    }

    /// Makes a claimed attempt, queues what follows, and records it.
    async fn deliver(&self, delivery: DeliveryTarget, producer: &TaskQueueProducer) -> Result<(), WorkerError> {
        let attempted_at = Utc::now();
        let (result, elapsed) = self
            .sender
            .send(&delivery.endpoint.url, &delivery.endpoint.secret, &delivery.webhook_id, &delivery.payload)
            .await;
        let after = after_attempt(delivery.attempt, &result, &self.settings.retry_schedule, attempted_at);
        if after == AfterAttempt::EndpointGone {
            self.store.disable_webhook_endpoint(delivery.endpoint.uuid, "the endpoint answered 410 Gone").await?;
        }
        producer.follow_up(&delivery, after).await?;
        let (response_status, error) = match result {
            AttemptResult::Answered(status) => (Some(i32::from(status)), None),
            AttemptResult::Unanswered(reason) => (None, Some(reason)),
        };
        let outcome = after.status();
        tracing::info!(
            delivery_id = delivery.id,
            endpoint_uuid = %delivery.endpoint.uuid,
            attempt = delivery.attempt,
            outcome = outcome.as_str(),
            response_status,
            error = error.as_deref().unwrap_or(""),
            "webhook attempt"
        );
        let record = AttemptRecord {
            attempted_at,
            duration_ms: i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
            response_status,
            error,
            outcome,
            next_attempt_at: after.next_attempt_at(),
        };
        self.store.record_webhook_attempt(&delivery, &record, producer.holds_next_attempt()).await?;
        let metrics = crate::metrics::metrics();
        metrics.webhook_deliveries.get_or_create(&OutcomeLabels { outcome: outcome.as_str() }).inc();
        metrics.webhook_attempt_duration.observe(elapsed.as_secs_f64());
        Ok(())
    }
}
