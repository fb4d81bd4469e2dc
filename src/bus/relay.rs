//! The relay: the event log is the outbox, and this publishes it to the exchange in order.
//!
//! One leader per exchange across all instances, chosen by a PostgreSQL advisory lock held on a
//! dedicated connection; that same connection reads the events and moves the checkpoint, so a
//! leader that lost its lock (its connection died) cannot move the checkpoint any more. Every
//! batch is published with publisher confirms and the checkpoint moves only past confirmed
//! messages: a crash in between repeats those messages, never loses one (at-least-once).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use lapin::options::BasicPublishOptions;
use lapin::PublisherConfirm;
use serde::Serialize;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{declare_work_queue, encode, BusError, BusSettings};
use crate::metrics::StageLabels;
use crate::store::{
    events_after, open_relay_session, relay_checkpoint, save_relay_checkpoint, try_lead_relay, StoreError,
    EVENTS_CHANNEL,
};

/// The default of `RELAY_BATCH_SIZE`.
pub const DEFAULT_RELAY_BATCH_SIZE: i64 = 500;
/// The default of `RELAY_POLL_INTERVAL_MS`.
pub const DEFAULT_RELAY_POLL_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RELAY_STANDBY_INTERVAL: Duration = Duration::from_secs(1);
/// The default of `RELAY_MAX_BACKOFF_MS`.
pub const DEFAULT_RELAY_MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub bus: BusSettings,
    /// The most events published between two checkpoints.
    pub batch_size: i64,
    /// The safety net: how often the log is read without a notification.
    pub poll_interval: Duration,
    /// How often a standby instance tries to become the leader.
    pub standby_interval: Duration,
    /// The longest wait between two attempts after a failure.
    pub max_backoff: Duration,
    /// Declare the webhook workers' queue before publishing, so that no `CredentialLocked` is
    /// missed before a worker first starts. Off only where no webhook worker ever runs.
    pub declare_webhook_queue: bool,
}

impl RelaySettings {
    /// The documented defaults, on `bus`.
    pub fn new(bus: BusSettings) -> Self {
        RelaySettings {
            bus,
            batch_size: DEFAULT_RELAY_BATCH_SIZE,
            poll_interval: DEFAULT_RELAY_POLL_INTERVAL,
            standby_interval: DEFAULT_RELAY_STANDBY_INTERVAL,
            max_backoff: DEFAULT_RELAY_MAX_BACKOFF,
            declare_webhook_queue: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<lapin::Error> for RelayError {
    fn from(error: lapin::Error) -> Self {
        RelayError::Bus(BusError::Broker(error))
    }
}

/// What the relay of this instance is doing, for health reports and logs.
#[derive(Debug, Default)]
pub struct RelayStatus {
    leader: AtomicBool,
    broker_connected: AtomicBool,
    position: AtomicI64,
    published: AtomicU64,
    publish_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RelayStatusSnapshot {
    pub leader: bool,
    pub broker_connected: bool,
    pub position: i64,
    pub published: u64,
    pub publish_failures: u64,
}

impl RelayStatus {
    pub fn snapshot(&self) -> RelayStatusSnapshot {
        RelayStatusSnapshot {
            leader: self.leader.load(Ordering::Relaxed),
            broker_connected: self.broker_connected.load(Ordering::Relaxed),
            position: self.position.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            publish_failures: self.publish_failures.load(Ordering::Relaxed),
        }
    }
}

pub struct Relay {
    pool: PgPool,
    settings: RelaySettings,
    status: Arc<RelayStatus>,
}

enum Stopped {
    ByRequest,
}

impl Relay {
    pub fn new(pool: PgPool, settings: RelaySettings) -> Self {
        Relay { pool, settings, status: Arc::default() }
    }

    pub fn status(&self) -> Arc<RelayStatus> {
        self.status.clone()
    }

    /// Runs until `stop` is cancelled: stands by, leads, and after any failure backs off and
    /// starts over from the checkpoint.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        // Whether "relay is the leader" was said and still holds: a broker outage retakes the
        // lead at every attempt, and each attempt should be one line, its warning.
        let mut announced = false;
        loop {
            let published_before = self.status.published.load(Ordering::Relaxed);
            let lead = self.lead(&mut announced, &stop);
            tokio::pin!(lead);
            let outcome = tokio::select! {
                outcome = &mut lead => outcome,
                // Publishing stops at its next safe point: a batch the broker confirmed is
                // checkpointed first, or the next leader would publish it again. Before the lead
                // publishes anything, or if the broker never confirms, it is dropped.
                _ = stop.cancelled() => tokio::time::timeout(STOP_GRACE, &mut lead).await.unwrap_or(Ok(Stopped::ByRequest)),
            };
            self.status.leader.store(false, Ordering::Relaxed);
            self.status.broker_connected.store(false, Ordering::Relaxed);
            match outcome {
                Ok(Stopped::ByRequest) => break,
                Err(error) => {
                    self.status.publish_failures.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::metrics().relay_publish_failures.inc();
                    if self.status.published.load(Ordering::Relaxed) > published_before {
                        backoff = Duration::from_millis(100);
                    }
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "relay interrupted");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
            }
        }
        tracing::info!("relay stopped");
    }

    async fn lead(&self, announced: &mut bool, stop: &CancellationToken) -> Result<Stopped, RelayError> {
        let exchange = self.settings.bus.exchange.as_str();
        let mut leader = open_relay_session(&self.pool).await?;
        while !try_lead_relay(&mut leader, exchange).await? {
            if std::mem::take(announced) {
                tracing::info!(exchange, "relay stands by: another instance leads");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.standby_interval) => {}
                _ = stop.cancelled() => return Ok(Stopped::ByRequest),
            }
        }
        self.status.leader.store(true, Ordering::Relaxed);
        if !std::mem::replace(announced, true) {
            tracing::info!(exchange, "relay is the leader");
        }

        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let (broker, channel) = super::connect_publisher(&self.settings.bus).await?;
        if self.settings.declare_webhook_queue {
            declare_work_queue(&channel, exchange).await?;
        }
        self.status.broker_connected.store(true, Ordering::Relaxed);
        let mut checkpoint = relay_checkpoint(&mut leader, exchange).await?;
        self.status.position.store(checkpoint, Ordering::Relaxed);
        tracing::info!(exchange, position = checkpoint, "relay publishing from its checkpoint");

        // Batches published and not yet confirmed, oldest first: the next batch goes out while
        // the broker confirms the previous ones, and the checkpoint follows the confirms in order.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut published = checkpoint;
        let mut more = true;
        loop {
            // Asked to stop: no new batch, and out once every published one is confirmed.
            let stopping = stop.is_cancelled();
            if stopping && in_flight.is_empty() {
                return Ok(Stopped::ByRequest);
            }
            if more && !stopping && in_flight.len() < MAX_BATCHES_IN_FLIGHT {
                let events = events_after(&mut leader, published, self.settings.batch_size).await?;
                more = events.len() as i64 == self.settings.batch_size;
                if let (Some(first), Some(newest)) = (events.first(), events.last()) {
                    let (oldest, last) = (first.recorded_at, newest.position);
                    let stages = &crate::metrics::metrics().relay_stage;
                    let held = (chrono::Utc::now() - newest.recorded_at).to_std().unwrap_or_default();
                    stages.get_or_create(&StageLabels { stage: "recorded_to_read" }).observe(held.as_secs_f64());
                    let publishing = std::time::Instant::now();
                    let mut confirms = Vec::with_capacity(events.len());
                    for event in &events {
                        let message = encode(event);
                        let confirm = channel
                            .basic_publish(
                                exchange.into(),
                                message.routing_key.as_str().into(),
                                BasicPublishOptions::default(),
                                &message.body,
                                message.properties,
                            )
                            .await?;
                        confirms.push((event.position, confirm));
                    }
                    let published_at = std::time::Instant::now();
                    stages
                        .get_or_create(&StageLabels { stage: "publish" })
                        .observe((published_at - publishing).as_secs_f64());
                    in_flight.push_back(InFlight {
                        last,
                        count: events.len() as u64,
                        oldest,
                        published: published_at,
                        confirmed: confirmed(confirms),
                    });
                    published = last;
                    continue;
                }
            }
            let (awaiting_confirms, window_open) = (!in_flight.is_empty(), in_flight.len() < MAX_BATCHES_IN_FLIGHT);
            tokio::select! {
                outcome = next_confirmed(&mut in_flight), if awaiting_confirms => {
                    let count = outcome?;
                    if let Some(batch) = in_flight.pop_front() {
                        let delay = (chrono::Utc::now() - batch.oldest).to_std().unwrap_or_default();
                        crate::metrics::metrics().relay_delay.observe(delay.as_secs_f64());
                        crate::metrics::metrics()
                            .relay_stage
                            .get_or_create(&StageLabels { stage: "confirm" })
                            .observe(batch.published.elapsed().as_secs_f64());
                        save_relay_checkpoint(&mut leader, exchange, batch.last).await?;
                        checkpoint = batch.last;
                    }
                    self.status.position.store(checkpoint, Ordering::Relaxed);
                    self.status.published.fetch_add(count, Ordering::Relaxed);
                    crate::metrics::metrics().relay_published.inc_by(count);
                    tracing::debug!(exchange, position = checkpoint, batch = count, "published");
                }
                notification = listener.recv(), if !stopping => { notification?; more = true; }
                _ = tokio::time::sleep(self.settings.poll_interval), if window_open && !stopping => { more = true; }
                _ = stop.cancelled(), if !stopping => {}
            }
            if !broker.status().connected() {
                return Err(BusError::Disconnected.into());
            }
            // No ping for the leader's connection here: the next read or checkpoint goes through
            // it, and fails if it (and with it the lock) is gone.
        }
    }
}

/// How long a relay asked to stop waits for the broker's confirms of what it published.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How many published batches may wait for their confirms at once.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

struct InFlight {
    /// The position of the batch's last event: where the checkpoint goes once it is confirmed.
    last: i64,
    count: u64,
    /// When the batch's first event committed: its delay to the confirm is the batch's worst.
    oldest: chrono::DateTime<chrono::Utc>,
    /// When the broker client had all of it.
    published: std::time::Instant,
    confirmed: BoxFuture<'static, Result<(), RelayError>>,
}

/// Resolves once the broker has confirmed every message of a batch, or fails on the first nack.
fn confirmed(confirms: Vec<(i64, PublisherConfirm)>) -> BoxFuture<'static, Result<(), RelayError>> {
    async move {
        for (position, confirm) in confirms {
            if !confirm.await?.is_ack() {
                return Err(BusError::Nacked(format!("the event at position {position}")).into());
            }
        }
        Ok(())
    }
    .boxed()
}

/// The oldest batch in flight, once confirmed: its size. Leaves it at the front.
async fn next_confirmed(in_flight: &mut VecDeque<InFlight>) -> Result<u64, RelayError> {
    match in_flight.front_mut() {
        Some(batch) => {
            (&mut batch.confirmed).await?;
            Ok(batch.count)
        }
        None => std::future::pending().await,
    }
}
