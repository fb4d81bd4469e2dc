//! The writer: one task per process that turns concurrent commands into group commits.
//!
//! Requests queue their commands here. The writer takes everything waiting (up to a cap),
//! decides it against the state loaded in one transaction that holds the chain head, appends all
//! resulting events, updates the view, commits once, and only then answers every request. One
//! fsync is shared by the whole batch; the head lock orders batches from every instance.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::{Command, DomainError, EventMetadata, Outcome};
use crate::store::{NewEvent, Store, StoreError};

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
}

impl Writer {
    pub fn spawn(store: Store) -> (Writer, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run(store, queue));
        (Writer { jobs }, task)
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

async fn run(store: Store, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let size = batch.len();
        let started = std::time::Instant::now();
        match commit_batch(&store, &batch).await {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
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

/// Decides and commits one batch in one transaction. Commands the domain refuses get their
/// error; the others commit together or not at all.
async fn commit_batch(store: &Store, batch: &[Job]) -> Result<Vec<Result<Outcome, DomainError>>, StoreError> {
    let mut txn = store.begin_append().await?;
    let touched: Vec<Uuid> = batch.iter().filter_map(|job| job.command.touches()).collect();
    let mut ledger = txn.load_ledger(&touched).await?;
    let now = txn.now();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        match ledger.handle(&job.command, now) {
            Ok(handled) => {
                events.extend(handled.events.into_iter().map(|pending| NewEvent { pending, metadata: &job.metadata }));
                results.push(Ok(handled.outcome));
            }
            Err(refused) => results.push(Err(refused)),
        }
    }
    txn.commit(&ledger, &events, now).await?;
    Ok(results)
}
