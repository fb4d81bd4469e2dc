//! The writer: one task per process that turns concurrent commands into group commits.
//!
//! Requests queue their commands here. The writer takes everything waiting (up to a cap),
//! decides it against the state of the credentials it touches, appends all resulting events and
//! view rows in one statement, and only then answers every request. One fsync is shared by the
//! whole batch; the chain head orders batches from every instance. The writer remembers the head
//! it last moved, so a batch of creates costs one round trip, and hands what it committed to the
//! replica, which then need not read it back from the log.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::app::replica::Replica;
use crate::domain::{handle, Command, DomainError, EventMetadata, Outcome};
use crate::store::{Appended, ChainHead, Decision, NewEvent, Store, StoreError};

/// The most commands decided in one transaction.
pub const MAX_BATCH: usize = 512;
const QUEUE_DEPTH: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Rejected(#[from] DomainError),
    #[error("the event store is unavailable: {0}")]
    Unavailable(Arc<StoreError>),
    #[error("the writer has stopped")]
    Stopped,
}

struct Job {
    command: Command,
    metadata: EventMetadata,
    reply: oneshot::Sender<Result<Outcome, WriteError>>,
}

/// A handle for submitting commands. The writer task ends once every handle is dropped and the
/// queue is drained.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    health: Arc<WriterHealth>,
}

/// Whether the writer can write, for readiness: a batch that runs long, or a recent failure with
/// no commit since, means this instance should get no writes for now.
#[derive(Debug, Default)]
pub struct WriterHealth {
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    batch_started: Option<Instant>,
    /// The last batch failed at this instant, and none has committed since.
    failed_at: Option<Instant>,
}

/// How long after a failed batch the instance reports itself not ready. Bounded, so that an
/// instance a load balancer stopped sending writes to becomes ready again and is tried.
const FAILURE_NOT_READY_FOR: Duration = Duration::from_secs(5);

impl WriterHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the writer cannot write now, if it cannot.
    pub fn problem(&self, stuck_after: Duration) -> Option<String> {
        let state = self.lock();
        if let Some(started) = state.batch_started.filter(|started| started.elapsed() > stuck_after) {
            return Some(format!("a write has waited {} ms for the database", started.elapsed().as_millis()));
        }
        state
            .failed_at
            .filter(|failed| failed.elapsed() < FAILURE_NOT_READY_FOR)
            .map(|_| "the last write failed and none has committed since".to_owned())
    }
}

impl Writer {
    pub fn spawn(store: Store, replica: Arc<Replica>) -> (Writer, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let health = Arc::new(WriterHealth::default());
        let task = tokio::spawn(run(store, replica, queue, health.clone()));
        (Writer { jobs, health }, task)
    }

    pub fn health(&self) -> &WriterHealth {
        &self.health
    }

    /// Submits a command and waits until it is committed (or refused).
    pub async fn execute(&self, command: Command, metadata: EventMetadata) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { command, metadata, reply }).await.map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("command", &self.command).finish_non_exhaustive()
    }
}

async fn run(store: Store, replica: Arc<Replica>, mut queue: mpsc::Receiver<Job>, health: Arc<WriterHealth>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Where this writer last left the log; unknown at first and after any failure.
    let mut head = None;
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let size = batch.len();
        let started = Instant::now();
        health.lock().batch_started = Some(started);
        let committed = commit_batch(&store, head.take(), &batch).await;
        {
            let mut state = health.lock();
            state.batch_started = None;
            state.failed_at = committed.is_err().then(Instant::now);
        }
        match committed {
            Ok(appended) => {
                replica.committed(appended.previous, appended.head.position, appended.ledger.changed());
                head = Some(appended.head);
                for (job, result) in batch.drain(..).zip(appended.value) {
                    // A caller that went away still had its command committed; nobody to tell.
                    let _ = job.reply.send(result.map_err(WriteError::from));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, batch = size, "append failed; the batch is rolled back");
                let error = Arc::new(error);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(WriteError::Unavailable(error.clone())));
                }
            }
        }
        let metrics = crate::metrics::metrics();
        metrics.write_batch_size.observe(size as f64);
        metrics.append_duration.observe(started.elapsed().as_secs_f64());
        tracing::debug!(batch = size, elapsed_us = started.elapsed().as_micros() as u64, "batch committed");
    }
}

/// Decides and commits one batch. Commands the domain refuses get their error; the others
/// commit together or not at all.
async fn commit_batch(
    store: &Store,
    head: Option<ChainHead>,
    batch: &[Job],
) -> Result<Appended<Vec<Result<Outcome, DomainError>>>, StoreError> {
    // The callers' own credentials too: each must still be live where its events are appended.
    let mut touched: Vec<Uuid> = batch
        .iter()
        .flat_map(|job| job.command.touches().into_iter().chain(job.metadata.actor.credential_uuid()))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    store
        .append(head, &touched, |ledger, now| {
            let mut events = Vec::new();
            let mut results = Vec::with_capacity(batch.len());
            for job in batch {
                match handle(ledger, &job.command, &job.metadata.actor, now) {
                    Ok(handled) => {
                        let metadata = &job.metadata;
                        events.extend(handled.events.into_iter().map(|pending| NewEvent { pending, metadata }));
                        results.push(Ok(handled.outcome));
                    }
                    Err(refused) => results.push(Err(refused)),
                }
            }
            Decision { servers: Vec::new(), events, value: results }
        })
        .await
}
