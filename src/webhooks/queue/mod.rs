//! Where the webhook worker's tasks come from, and where what follows an attempt goes: one
//! producer/consumer pair over two backends, in the shape of svix-server's `queue/`.
//!
//! - `Broker` (RabbitMQ, `AMQP_URL` set): the relay's events and the attempt messages of the
//!   retry queues and the sweep arrive on the work queue; a retry is a message on the retry
//!   queue of its delay, a failed delivery one on the dead-letter queue.
//! - `Database` (no `AMQP_URL`): `webhook_deliveries` is the queue. The dispatcher opens due
//!   deliveries; receiving claims due attempts (`Store::claim_due_attempts`); a retry is the
//!   delivery's `next_attempt_at`, so a restart loses nothing. Memory holds only a wake-up.
//!
//! The broker variants are built from `Store::postgres()` alone: RabbitMQ needs PostgreSQL.

pub(super) mod broker;
mod database;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::payload::EventMessage;
use super::WebhookSettings;
use crate::bus::BusError;
use crate::domain::AfterAttempt;
use crate::store::{DeliveryTarget, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cannot happen (the retry policy and the topology follow the same schedule).
    #[error("no retry queue waits {0:?}")]
    NoRetryQueue(Duration),
    #[error("AMQP_URL needs a postgres:// DATABASE_URL")]
    NeedsPostgres,
}

impl From<lapin::Error> for QueueError {
    fn from(error: lapin::Error) -> Self {
        QueueError::Bus(BusError::Broker(error))
    }
}

/// What a worker is asked to do.
#[derive(Debug)]
pub enum WebhookTask {
    /// Fan an event out into one delivery per subscribed endpoint, each tried once now.
    FanOut(EventMessage),
    /// Claim and make one attempt of a delivery (number `attempt`, if given).
    Attempt { delivery_id: i64, attempt: Option<i32> },
    /// Make an attempt already claimed.
    Claimed(DeliveryTarget),
}

/// A task and the way to settle it with the queue it came from.
pub struct TaskDelivery {
    pub task: WebhookTask,
    acker: Acker,
}

enum Acker {
    Broker(Box<lapin::message::Delivery>),
    /// The database needs no acknowledgement (the attempt's record is one); settling wakes the
    /// consumer, which has room again and perhaps a retry to schedule.
    Database(Arc<Notify>),
}

impl TaskDelivery {
    /// Done: its attempts are recorded and what follows them is queued.
    pub async fn ack(self) -> Result<(), QueueError> {
        match self.acker {
            Acker::Broker(delivery) => broker::ack(*delivery).await,
            Acker::Database(wake) => {
                wake.notify_one();
                Ok(())
            }
        }
    }

    /// Not done: the broker redelivers the message; a claimed attempt is taken again once its
    /// lease and `presumed_lost_after` have passed.
    pub async fn nack(self) -> Result<(), QueueError> {
        match self.acker {
            Acker::Broker(delivery) => broker::nack(*delivery).await,
            Acker::Database(wake) => {
                wake.notify_one();
                Ok(())
            }
        }
    }
}

/// Where what follows an attempt goes.
#[derive(Clone)]
pub enum TaskQueueProducer {
    Broker(Box<broker::BrokerProducer>),
    Database,
}

impl TaskQueueProducer {
    /// Whether the next attempt is held by a message once `follow_up` returns (RabbitMQ), rather
    /// than due by its time alone (the database).
    pub fn holds_next_attempt(&self) -> bool {
        matches!(self, TaskQueueProducer::Broker(_))
    }

    /// Queues what the retry policy decided, before the attempt is recorded.
    pub async fn follow_up(&self, delivery: &DeliveryTarget, after: AfterAttempt) -> Result<(), QueueError> {
        match self {
            TaskQueueProducer::Broker(producer) => producer.follow_up(delivery, after).await,
            // The record is the schedule: the attempt's `next_attempt_at`, or its failed state.
            TaskQueueProducer::Database => Ok(()),
        }
    }
}

pub enum TaskQueueConsumer {
    Broker(Box<broker::BrokerConsumer>),
    Database(database::DatabaseConsumer),
}

impl TaskQueueConsumer {
    /// Waits for tasks and returns up to `room` of them (at least one), or none once `stop` is
    /// cancelled. An error means the queue is gone: the caller builds a new pair.
    pub async fn receive(&mut self, room: usize, stop: &CancellationToken) -> Result<Vec<TaskDelivery>, QueueError> {
        match self {
            TaskQueueConsumer::Broker(consumer) => consumer.receive(stop).await,
            TaskQueueConsumer::Database(consumer) => consumer.receive(room, stop).await,
        }
    }
}

/// The pair `settings` asks for: RabbitMQ's when they name a broker, else the database's.
/// `wake` is what the dispatcher and `webhooks/retry` notify when something falls due.
pub async fn new_pair(
    settings: &WebhookSettings,
    store: &Store,
    wake: &Arc<Notify>,
) -> Result<(TaskQueueProducer, TaskQueueConsumer), QueueError> {
    match &settings.bus {
        Some(bus) => {
            let postgres = store.postgres().ok_or(QueueError::NeedsPostgres)?;
            let (producer, consumer) = broker::new_pair(bus, settings, postgres.clone()).await?;
            Ok((TaskQueueProducer::Broker(Box::new(producer)), TaskQueueConsumer::Broker(Box::new(consumer))))
        }
        None => {
            let consumer = database::DatabaseConsumer::new(store.clone(), settings, wake.clone());
            Ok((TaskQueueProducer::Database, TaskQueueConsumer::Database(consumer)))
        }
    }
}
