//! RabbitMQ as the work queue: manual acks and a bounded prefetch on the work queue, retries on
//! one queue per delay, failed deliveries on the dead-letter queue.
//!
//! Every `sweep_interval` the consumer also sweeps the deliveries for attempts that are due and
//! that no message carries: retries asked for through the API (one write to the database, no
//! broker), and attempts whose message or worker was lost. It publishes one attempt message for
//! each to the work queue. Each attempt message names the attempt it asks for, and claiming an
//! attempt counts it, so a second message for the same attempt finds it taken and is dropped:
//! a sweep that hands over an attempt whose message was only late costs a message, not a webhook.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use serde::{Deserialize, Serialize};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Acker, QueueError, TaskDelivery, WebhookTask};
use crate::bus::{self, BusError, BusSettings, Topology};
use crate::domain::{AfterAttempt, CREDENTIAL_LOCKED};
use crate::store::{DeliveryTarget, PgStore};
use crate::webhooks::WebhookSettings;

/// The `type` of a message that asks for one attempt of a delivery.
pub const ATTEMPT_MESSAGE_TYPE: &str = "WebhookAttempt";

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
/// A zero interval would make the sweep spin.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Clone)]
pub struct BrokerProducer {
    /// With publisher confirms.
    publisher: Channel,
    topology: Topology,
}

pub struct BrokerConsumer {
    // Held so that the channels stay open as long as the consumer.
    _connection: Connection,
    consumer: Consumer,
    producer: BrokerProducer,
    store: PgStore,
    sweep: Interval,
    presumed_lost_after: Duration,
    /// How long a sweep may wait for the broker's confirms.
    timeout: Duration,
}

pub async fn new_pair(
    bus: &BusSettings,
    settings: &WebhookSettings,
    store: PgStore,
) -> Result<(BrokerProducer, BrokerConsumer), QueueError> {
    let topology = settings.topology();
    let (connection, channel) = bus::connect(bus).await?;
    topology.declare(&channel).await?;
    channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await?;
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            topology.work_queue.as_str().into(),
            "credential-ledger-webhooks".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %topology.work_queue, "webhook worker consuming");
    // The first tick is at once: a worker that starts takes over what was left undone.
    let mut sweep = tokio::time::interval(settings.sweep_interval.max(MIN_SWEEP_INTERVAL));
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let producer = BrokerProducer { publisher, topology };
    let consumer = BrokerConsumer {
        _connection: connection,
        consumer,
        producer: producer.clone(),
        store,
        sweep,
        presumed_lost_after: settings.presumed_lost_after,
        timeout: settings.timeout,
    };
    Ok((producer, consumer))
}

impl BrokerConsumer {
    /// The next message the worker can act on (one at a time: the prefetch bounds how many are
    /// unacknowledged). Messages of other types are acked and skipped, unreadable ones logged
    /// and dropped; sweeps run in between.
    pub async fn receive(&mut self, stop: &CancellationToken) -> Result<Vec<TaskDelivery>, QueueError> {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(Vec::new()),
                _ = self.sweep.tick() => match self.sweep().await {
                    Ok(()) => {}
                    Err(QueueError::Bus(error)) => return Err(error.into()),
                    Err(error) => tracing::warn!(error = %error, "webhook sweep failed; the next one tries again"),
                },
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if let Some(task) = decode(delivery).await {
                            return Ok(vec![task]);
                        }
                    }
                    Some(Err(error)) => return Err(error.into()),
                    None => return Err(BusError::Disconnected.into()),
                },
            }
        }
    }

    /// Hands the broker every attempt due that no message carries (see the module's comment).
    /// The deliveries stay locked until the broker confirmed their messages, so sweeps of other
    /// workers skip them; if this fails half-way, the next sweep publishes them again.
    async fn sweep(&self) -> Result<(), QueueError> {
        let topology = &self.producer.topology;
        loop {
            let due = self.store.due_webhook_attempts(self.presumed_lost_after, SWEEP_BATCH).await?;
            if due.attempts.is_empty() {
                return Ok(());
            }
            let publishing = async {
                for attempt in &due.attempts {
                    let message = AttemptMessage { delivery_id: attempt.delivery_id, attempt: Some(attempt.attempt) };
                    publish_attempt(&self.producer.publisher, &topology.work_queue, &message).await?;
                }
                Ok::<(), BusError>(())
            };
            tokio::time::timeout(self.timeout, publishing)
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

/// The task a message asks for; none (and the message settled) when it asks for nothing.
async fn decode(delivery: Delivery) -> Option<TaskDelivery> {
    let kind = delivery.properties.kind().as_ref().map(|kind| kind.to_string()).unwrap_or_default();
    let task = match kind.as_str() {
        ATTEMPT_MESSAGE_TYPE => serde_json::from_slice::<AttemptMessage>(&delivery.data)
            .map(|message| WebhookTask::Attempt { delivery_id: message.delivery_id, attempt: message.attempt })
            .map_err(|error| error.to_string()),
        CREDENTIAL_LOCKED => serde_json::from_slice(&delivery.data).map(WebhookTask::FanOut).map_err(|e| e.to_string()),
        // Not ours: nothing to deliver.
        _ => {
            settle(ack(delivery).await);
            return None;
        }
    };
    match task {
        Ok(task) => Some(TaskDelivery { task, acker: Acker::Broker(Box::new(delivery)) }),
        Err(reason) => {
            // No attempt can fix it.
            tracing::error!(reason, "dropping an unreadable message");
            settle(ack(delivery).await);
            None
        }
    }
}

fn settle(result: Result<(), QueueError>) {
    if let Err(error) = result {
        tracing::warn!(error = %error, "could not settle a message; the broker will redeliver it");
    }
}

pub(super) async fn ack(delivery: Delivery) -> Result<(), QueueError> {
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}

pub(super) async fn nack(delivery: Delivery) -> Result<(), QueueError> {
    delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
    Ok(())
}

impl BrokerProducer {
    /// Queues the next attempt on the retry queue of its delay, or files the failed delivery on
    /// the dead-letter queue.
    pub async fn follow_up(&self, delivery: &DeliveryTarget, after: AfterAttempt) -> Result<(), QueueError> {
        let (queue, message) = match after {
            AfterAttempt::Delivered => return Ok(()),
            AfterAttempt::Retrying { delay, .. } => {
                let retry_queue = self.topology.retry_queue(delay).ok_or(QueueError::NoRetryQueue(delay))?;
                let next = Some(delivery.attempt.saturating_add(1));
                (retry_queue, AttemptMessage { delivery_id: delivery.id, attempt: next })
            }
            AfterAttempt::EndpointGone | AfterAttempt::Failed => {
                (self.topology.dead_letter_queue.as_str(), AttemptMessage { delivery_id: delivery.id, attempt: None })
            }
        };
        publish_attempt(&self.publisher, queue, &message).await?;
        Ok(())
    }
}

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
