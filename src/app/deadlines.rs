//! The deadline scheduler: one task per instance that records each passed deadline's lock.
//!
//! Authentication and `list` never wait for it: they refuse a key from its deadline by reading
//! the deadline itself. The scheduler only writes down a fact that is already in force, so that
//! the log, the bus and webhooks carry it. Every instance runs one, with no leader: each submits
//! `LockDue` through its own writer, and the append's compare-and-set on the chain head makes
//! every decision after the first find the credential held and append nothing.
//!
//! The deadlines come from the replica, which every instance holds whole anyway: it wakes the
//! task when a new deadline arrives, and a poll of the log's head (`poll`) brings in the ones
//! other instances committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::replica::Replica;
use crate::app::writer::Writer;
use crate::domain::{Actor, Command, EventMetadata, Outcome};
use crate::metrics::metrics;

/// The most locks submitted in one round: the writer groups them into batches.
const ROUND: usize = 4096;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Starts the scheduler. It stops when `stop` is cancelled, dropping its handle on the writer.
pub fn spawn(replica: Arc<Replica>, writer: Writer, poll: Duration, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(run(replica, writer, poll, stop))
}

async fn run(replica: Arc<Replica>, writer: Writer, poll: Duration, stop: CancellationToken) {
    let metadata = EventMetadata { actor: Actor::Deadline, request_id: None, source_ip: None };
    let mut retry = FIRST_RETRY;
    loop {
        metrics().deadlines_pending.set(replica.pending_deadlines() as i64);
        match lock_due(&replica, &writer, &metadata).await {
            Ok(0) => retry = FIRST_RETRY,
            // More may be due already: go round again at once.
            Ok(_) => {
                retry = FIRST_RETRY;
                continue;
            }
            Err(error) => {
                tracing::warn!(error = %error, retry_ms = retry.as_millis() as u64, "deadline locks failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        }
        // Until the earliest deadline, a new one, or the poll, whichever comes first. Wall-clock
        // time is read afresh at every wake, so a clock step costs at most one poll.
        let until_next = replica
            .next_deadline()
            .map(|deadline| (deadline - Utc::now()).to_std().unwrap_or_default())
            .map_or(poll, |until| until.min(poll));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(until_next) => {}
            () = replica.deadline_added() => {}
        }
    }
}

/// Brings the replica up to date (other instances' deadlines and locks), then submits a
/// `LockDue` for each deadline passed. Returns how many were due.
async fn lock_due(replica: &Replica, writer: &Writer, metadata: &EventMetadata) -> Result<usize, String> {
    replica.sync(Instant::now()).await.map_err(|error| error.to_string())?;
    let due = replica.due(Utc::now(), ROUND);
    if due.is_empty() {
        return Ok(0);
    }
    let locks = due.iter().map(|(server_uuid, credential_uuid, _)| {
        let command = Command::LockDue { server_uuid: *server_uuid, credential_uuid: *credential_uuid };
        writer.execute(command, metadata.clone())
    });
    let results = join_all(locks).await;
    let mut failure = None;
    for ((_, credential_uuid, deadline), result) in due.iter().zip(results) {
        match result {
            Ok(Outcome::Revoked(credential)) => {
                // Only the lock this instance appended carries its deadline's lateness.
                if let Some(locked_at) = credential.locked_at.filter(|_| credential.expires_at == Some(*deadline)) {
                    let lateness = (locked_at - *deadline).to_std().unwrap_or_default();
                    metrics().deadline_lock_lateness.observe(lateness.as_secs_f64());
                }
                tracing::debug!(credential = %credential_uuid, %deadline, "deadline lock recorded");
            }
            Ok(_) => {}
            Err(error) => failure = Some(error.to_string()),
        }
    }
    match failure {
        Some(error) => Err(error),
        // Locks another instance appended reach this replica with the next sync.
        None => Ok(due.len()),
    }
}
