//! The worker: consumes the work queue with manual acks and a bounded prefetch. An event
//! message fans out into one delivery per subscribed endpoint; an attempt message (coming back
//! from a retry queue, or handed over by a sweep) tries one delivery again. A message is acked
//! only once its attempts are recorded and any retry is queued, so a crash redelivers, never
//! loses.
//!
//! Every `sweep_interval` the worker also sweeps the deliveries for attempts that are due and
//! that no message carries: retries asked for through the API (one write to the database, no
//! broker), and attempts whose message or worker was lost. It publishes one attempt message for
//! each to the work queue. Each attempt message names the attempt it asks for, and claiming an
//! attempt counts it, so a second message for the same attempt finds it taken and is dropped:
//! a sweep that hands over an attempt whose message was only late costs a message, not a webhook.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sender::Sender;
use super::WebhookSettings;
use crate::bus::{self, BusError, Topology};
use crate::domain::{after_attempt, AfterAttempt, AttemptResult, CREDENTIAL_LOCKED};
use crate::metrics::OutcomeLabels;
use crate::store::{AttemptRecord, DeliveryTarget, Store, StoreError};

#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A message no attempt can fix: logged and dropped.
    #[error("unreadable message: {0}")]
    Unreadable(String),
    #[error("credential {0} is not in the view yet")]
    NotProjected(Uuid),
    /// Cannot happen (the retry policy and the topology follow the same schedule); the message
    /// is retried like after a broker failure.
    #[error("no retry queue waits {0:?}")]
    NoRetryQueue(Duration),
}

/// The `type` of a message that asks for one attempt of a delivery.
pub const ATTEMPT_MESSAGE_TYPE: &str = "WebhookAttempt";

/// The part of a bus message the worker reads (docs/events.md).
#[derive(Debug, Deserialize)]
struct EventMessage {
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    stream_id: Uuid,
    server_uuid: Uuid,
    recorded_at: String,
    data: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct AttemptMessage {
    delivery_id: i64,
    /// The number of the attempt asked for; none on the dead-letter queue, and on messages queued
    /// before attempts had numbers (those take whichever attempt is next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attempt: Option<i32>,
}

/// The most attempts one sweep query hands over (a sweep runs queries until one finds fewer).
const SWEEP_BATCH: i64 = 100;

pub struct WebhookWorker {
    store: Store,
    settings: WebhookSettings,
    topology: Topology,
    sender: Sender,
}

impl WebhookWorker {
    pub fn new(store: Store, settings: WebhookSettings) -> Result<Self, reqwest::Error> {
        let sender = Sender::new(settings.timeout, settings.allow_private)?;
        Ok(WebhookWorker { topology: settings.topology(), store, settings, sender })
    }

    /// Consumes until `stop` is cancelled, reconnecting with backoff when the broker goes away.
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

    async fn consume(self: Arc<Self>, stop: &CancellationToken) -> Result<(), BusError> {
        let (connection, channel) = bus::connect(&self.settings.bus).await?;
        self.topology.declare(&channel).await?;
        channel.basic_qos(self.settings.prefetch, BasicQosOptions::default()).await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                self.topology.work_queue.as_str().into(),
                "credential-ledger-webhooks".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %self.topology.work_queue, "webhook worker consuming");
        // The first tick is at once: a worker that starts takes over what was left undone.
        let mut sweep = tokio::time::interval(self.settings.sweep_interval.max(MIN_SWEEP_INTERVAL));
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut in_flight = JoinSet::new();
        let outcome = loop {
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = sweep.tick() => match self.sweep(&publisher).await {
                    Ok(()) => {}
                    Err(WorkerError::Bus(error)) => break Err(error),
                    Err(error) => tracing::warn!(error = %error, "webhook sweep failed; the next one tries again"),
                },
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let worker = self.clone();
                        let publisher = publisher.clone();
                        in_flight.spawn(async move { worker.process(delivery, &publisher).await });
                    }
                    Some(Err(error)) => break Err(error.into()),
                    None => break Err(BusError::Disconnected),
                },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        };
        // Let started deliveries finish: their messages are acked, or redelivered if this fails.
        let _ = tokio::time::timeout(self.settings.timeout + Duration::from_secs(5), async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        outcome
    }

    async fn process(&self, delivery: Delivery, publisher: &Channel) {
        let kind = delivery.properties.kind().as_ref().map(|kind| kind.to_string()).unwrap_or_default();
        let result = match kind.as_str() {
            ATTEMPT_MESSAGE_TYPE => match serde_json::from_slice::<AttemptMessage>(&delivery.data) {
                Ok(message) => self.attempt(message.delivery_id, message.attempt, publisher).await,
                Err(error) => Err(WorkerError::Unreadable(error.to_string())),
            },
            CREDENTIAL_LOCKED => self.fan_out(&delivery.data, publisher).await,
            // Not ours: nothing to deliver.
            _ => Ok(()),
        };
        let settled = match result {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await,
            Err(WorkerError::Unreadable(reason)) => {
                tracing::error!(reason, "dropping an unreadable message");
                delivery.ack(BasicAckOptions::default()).await
            }
            Err(error) => {
                tracing::warn!(error = %error, "webhook message will be retried");
                // Requeued at once it would spin while the database or broker is away.
                tokio::time::sleep(Duration::from_secs(1)).await;
                delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(error = %error, "could not settle a message; the broker will redeliver it");
        }
    }

    /// One delivery per subscribed endpoint of the event's server, each tried once now.
    async fn fan_out(&self, body: &[u8], publisher: &Channel) -> Result<(), WorkerError> {
        let event: EventMessage =
            serde_json::from_slice(body).map_err(|error| WorkerError::Unreadable(error.to_string()))?;
        let endpoints = self.store.subscribed_endpoints(event.server_uuid, &event.event_type).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let payload = self.payload(&event).await?;
        let webhook_id = format!("msg_{}", event.event_id.simple());
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
            self.attempt(delivery_id, None, publisher).await
        });
        futures::future::join_all(attempts).await.into_iter().collect()
    }

    /// The webhook body: the credential as the view has it, why it was locked, what replaced it.
    async fn payload(&self, event: &EventMessage) -> Result<String, WorkerError> {
        let credential =
            self.store.locked_credential(event.stream_id).await?.ok_or(WorkerError::NotProjected(event.stream_id))?;
        let replaced_by = match event.data["replaced_by"].as_str().map(Uuid::parse_str) {
            Some(Ok(uuid)) => {
                let replacement = self.store.locked_credential(uuid).await?.ok_or(WorkerError::NotProjected(uuid))?;
                json!({"id": replacement.id, "uuid": replacement.uuid})
            }
            _ => serde_json::Value::Null,
        };
        let body = json!({
            "type": event.event_type,
            "timestamp": event.recorded_at,
            "data": {
                "credential": {
                    "id": credential.id,
                    "uuid": credential.uuid,
                    "name": credential.name,
                    "type": credential.credential_type,
                    "hold": credential.hold,
                },
                "reason": event.data["reason"],
                "replaced_by": replaced_by,
                "server": {"uuid": credential.server_uuid, "name": credential.server_name},
            },
        });
        Ok(body.to_string())
    }

    /// One attempt of a delivery (attempt number `attempt`, if given), if it is still due;
    /// records it and queues what follows.
    async fn attempt(&self, delivery_id: i64, attempt: Option<i32>, publisher: &Channel) -> Result<(), WorkerError> {
        let claimed = self.store.claim_webhook_attempt(delivery_id, attempt, self.settings.timeout).await?;
        let Some(delivery) = claimed else {
            return Ok(());
        };
        let attempted_at = Utc::now();
        let (result, elapsed) = self
            .sender
            .send(&delivery.endpoint.url, &delivery.endpoint.secret, &delivery.webhook_id, &delivery.payload)
            .await;
        let after = after_attempt(delivery.attempt, &result, &self.settings.retry_schedule, attempted_at);
        self.follow_up(&delivery, after, publisher).await?;
        let (response_status, error) = match result {
            AttemptResult::Answered(status) => (Some(i32::from(status)), None),
            AttemptResult::Unanswered(reason) => (None, Some(reason)),
        };
        let outcome = after.status();
        tracing::info!(
            delivery_id,
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
        self.store.record_webhook_attempt(&delivery, &record).await?;
        crate::metrics::metrics().webhook_deliveries.get_or_create(&OutcomeLabels { outcome: outcome.as_str() }).inc();
        Ok(())
    }

    /// Does what the retry policy decided, before the attempt is recorded: queues the next
    /// attempt on the retry queue of its delay, or files the failed delivery on the dead-letter
    /// queue (disabling an endpoint that answered 410 Gone first).
    async fn follow_up(
        &self,
        delivery: &DeliveryTarget,
        after: AfterAttempt,
        publisher: &Channel,
    ) -> Result<(), WorkerError> {
        match after {
            AfterAttempt::Delivered => return Ok(()),
            AfterAttempt::Retrying { delay, .. } => {
                let retry_queue = self.topology.retry_queue(delay).ok_or(WorkerError::NoRetryQueue(delay))?;
                let next = Some(delivery.attempt.saturating_add(1));
                publish_attempt(publisher, retry_queue, &AttemptMessage { delivery_id: delivery.id, attempt: next })
                    .await?;
                return Ok(());
            }
            AfterAttempt::EndpointGone => {
                self.store.disable_webhook_endpoint(delivery.endpoint.uuid, "the endpoint answered 410 Gone").await?;
            }
            AfterAttempt::Failed => {}
        }
        let filed = AttemptMessage { delivery_id: delivery.id, attempt: None };
        publish_attempt(publisher, &self.topology.dead_letter_queue, &filed).await?;
        Ok(())
    }

    /// Hands the broker every attempt due that no message carries (see the module's comment).
    /// The deliveries stay locked until the broker confirmed their messages, so sweeps of other
    /// workers skip them; if this fails half-way, the next sweep publishes them again.
    async fn sweep(&self, publisher: &Channel) -> Result<(), WorkerError> {
        loop {
            let due = self.store.due_webhook_attempts(self.settings.presumed_lost_after, SWEEP_BATCH).await?;
            if due.attempts.is_empty() {
                return Ok(());
            }
            let publishing = async {
                for attempt in &due.attempts {
                    let message = AttemptMessage { delivery_id: attempt.delivery_id, attempt: Some(attempt.attempt) };
                    publish_attempt(publisher, &self.topology.work_queue, &message).await?;
                }
                Ok::<(), BusError>(())
            };
            tokio::time::timeout(self.settings.timeout, publishing)
                .await
                .map_err(|_| BusError::Unconfirmed("the sweep's attempts".into()))??;
            let count = due.attempts.len();
            due.hand_over().await?;
            tracing::info!(count, "sweep handed over due webhook attempts");
            if (count as i64) < SWEEP_BATCH {
                return Ok(());
            }
        }
    }
}

/// A zero interval would make the sweep spin.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);

/// Puts an attempt message on `queue` (through the default exchange) and waits for the confirm.
async fn publish_attempt(channel: &Channel, queue: &str, message: &AttemptMessage) -> Result<(), BusError> {
    // A struct of integers always serialises.
    let body = serde_json::to_vec(message).unwrap_or_default();
    let properties = BasicProperties::default()
        .with_type(ATTEMPT_MESSAGE_TYPE.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let confirm =
        channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, properties).await?;
    if confirm.await?.is_ack() {
        Ok(())
    } else {
        Err(BusError::Nacked(format!("the attempt of delivery {}", message.delivery_id)))
    }
}
