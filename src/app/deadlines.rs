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
//!
//! One instance goes first: on PostgreSQL, the one holding an advisory lock (the leader) locks
//! each deadline as it passes, and the others only once it is `HANDOFF` overdue, so that a
//! crowd of deadlines is not decided by every instance at once while the leader lives. Should it
//! die, its session's lock goes with it and another instance takes the lead. Correctness never
//! rests on the leader: any instance's lock is the one lock. On the embedded ledger every
//! process goes first.
//!
//! Locks are pipelined: up to `WINDOW` are in flight, and each one answered makes room for the
//! next due, so that the writer always has a batch waiting while it commits one. When many
//! deadlines fall due together, each instance takes them in an order of its own (a seeded
//! shuffle of the earliest), so that instances mostly lock different credentials instead of all
//! deciding the same ones.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::replica::Replica;
use crate::app::writer::{WriteError, Writer};
use crate::domain::{Actor, Command, EventMetadata, Outcome};
use crate::metrics::metrics;
use crate::store::postgres::{open_deadline_session, ping, try_lead_deadlines};
use crate::store::Store;

/// The most locks in flight: two of the writer's batches, one committing and one waiting.
const WINDOW: usize = 2 * crate::app::writer::MAX_BATCH;
/// Room that makes a refill worth its look at the replica, while locks are in flight.
const REFILL: usize = 64;
/// How often, at most, a busy scheduler reads the log's head to learn what other instances
/// locked meanwhile.
const RESYNC: Duration = Duration::from_millis(100);
/// How overdue a deadline is before an instance that does not lead locks it: the bound on
/// lateness should the leader hang while holding its lock (a leader that dies loses its lock,
/// and another instance leads within `poll`).
const HANDOFF: Duration = Duration::from_secs(3);
/// The longest the leader lock's session may take to answer: a session that went silent is
/// given up (and with it the lead), rather than holding the scheduler.
const LEAD_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Starts the scheduler. It stops when `stop` is cancelled, dropping its handle on the writer.
pub fn spawn(
    store: Store,
    replica: Arc<Replica>,
    writer: Writer,
    poll: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let scheduler = Scheduler {
        lead: Lead::new(store),
        replica,
        writer,
        poll,
        seed: rand::random(),
        metadata: EventMetadata { actor: Actor::Deadline, request_id: None, source_ip: None },
    };
    tokio::spawn(scheduler.run(stop))
}

struct Scheduler {
    lead: Lead,
    replica: Arc<Replica>,
    writer: Writer,
    poll: Duration,
    /// This instance's order over credentials, for taking a crowd of due deadlines.
    seed: u64,
    metadata: EventMetadata,
}

type Answered = (Uuid, DateTime<Utc>, Result<Outcome, WriteError>);

impl Scheduler {
    async fn run(mut self, stop: CancellationToken) {
        let mut in_flight = HashSet::new();
        let mut answers = FuturesUnordered::new();
        let mut synced: Option<Instant> = None;
        let mut retry = FIRST_RETRY;
        while !stop.is_cancelled() {
            metrics().deadlines_pending.set(self.replica.pending_deadlines() as i64);
            let handoff = self.lead.handoff(self.poll).await;
            let can_refill = answers.is_empty() || WINDOW - in_flight.len() >= REFILL;
            if can_refill {
                if synced.is_none_or(|at| at.elapsed() >= RESYNC) {
                    // Other instances' deadlines and locks; this instance's own are in already.
                    if let Err(error) = self.replica.sync(Instant::now()).await {
                        tracing::warn!(error = %error, retry_ms = retry.as_millis() as u64, "deadline scheduler cannot read the log; retrying");
                        if self.pause(&stop, &mut retry).await {
                            return;
                        }
                        continue;
                    }
                    synced = Some(Instant::now());
                }
                let room = WINDOW - in_flight.len();
                for (server_uuid, credential_uuid, deadline) in self.next_due(&in_flight, room, handoff) {
                    in_flight.insert(credential_uuid);
                    let command = Command::LockDue { server_uuid, credential_uuid };
                    let (writer, metadata) = (self.writer.clone(), self.metadata.clone());
                    answers.push(async move { (credential_uuid, deadline, writer.execute(command, metadata).await) });
                }
            }
            // Until a lock is answered, the earliest deadline not yet in flight, a new deadline,
            // or the poll, whichever comes first. Wall-clock time is read afresh at every wake,
            // so a clock step costs at most one poll.
            let until_next = match can_refill {
                true => self
                    .replica
                    .first_deadline_not_in(&in_flight)
                    .map(|deadline| (deadline + handoff - Utc::now()).to_std().unwrap_or_default())
                    .map_or(self.poll, |until| until.min(self.poll)),
                // No room: only an answer makes some.
                false => self.poll,
            };
            tokio::select! {
                () = stop.cancelled() => return,
                Some(answered) = answers.next(), if !answers.is_empty() => {
                    in_flight.remove(&answered.0);
                    if self.settle(answered) {
                        retry = FIRST_RETRY;
                    } else if self.pause(&stop, &mut retry).await {
                        return;
                    }
                }
                () = tokio::time::sleep(until_next) => synced = None,
                () = self.replica.deadline_added() => {}
            }
        }
    }

    /// Up to `room` passed deadlines not in flight. Of a crowd, the earliest `4 × room`, taken
    /// in this instance's own order.
    fn next_due(
        &self,
        in_flight: &HashSet<Uuid>,
        room: usize,
        handoff: chrono::Duration,
    ) -> Vec<(Uuid, Uuid, DateTime<Utc>)> {
        if room == 0 {
            return Vec::new();
        }
        let mut due = self.replica.due(Utc::now() - handoff, in_flight.len() + 4 * room);
        due.retain(|(_, credential_uuid, _)| !in_flight.contains(credential_uuid));
        if due.len() > room {
            due.sort_by_key(|(_, credential_uuid, _)| self.order(*credential_uuid));
            due.truncate(room);
        }
        due
    }

    fn order(&self, credential_uuid: Uuid) -> u64 {
        let (high, low) = credential_uuid.as_u64_pair();
        (high ^ low ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Records one answered lock; false if it failed (it stays due and is tried again).
    fn settle(&self, (credential_uuid, deadline, answer): Answered) -> bool {
        match answer {
            Ok(Outcome::Revoked(credential)) => {
                // Also observed when another instance recorded it first: lateness as seen here.
                if let Some(locked_at) = credential.locked_at.filter(|_| credential.expires_at == Some(deadline)) {
                    let lateness = (locked_at - deadline).to_std().unwrap_or_default();
                    metrics().deadline_lock_lateness.observe(lateness.as_secs_f64());
                }
                tracing::debug!(credential = %credential_uuid, %deadline, "deadline lock recorded");
                true
            }
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(credential = %credential_uuid, error = %error, "a deadline lock failed; retrying");
                false
            }
        }
    }

    /// Waits before trying again, longer each time; true if the scheduler is to stop.
    async fn pause(&self, stop: &CancellationToken, retry: &mut Duration) -> bool {
        let wait = *retry;
        *retry = (*retry * 2).min(LAST_RETRY);
        tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(wait) => false,
        }
    }
}

/// Whether this instance goes first, and how overdue a deadline must be otherwise.
struct Lead {
    store: Store,
    /// The leader lock's session, while this instance holds it.
    session: Option<sqlx::PgConnection>,
    checked: Option<Instant>,
}

impl Lead {
    fn new(store: Store) -> Lead {
        Lead { store, session: None, checked: None }
    }

    /// No wait while this instance leads (or runs on the embedded ledger), else `HANDOFF`. The
    /// lock is tried, or its session pinged, at most once per `poll`.
    async fn handoff(&mut self, poll: Duration) -> chrono::Duration {
        let Some(postgres) = self.store.postgres() else { return chrono::Duration::zero() };
        if self.checked.is_none_or(|at| at.elapsed() >= poll) {
            self.checked = Some(Instant::now());
            let check = async {
                match self.session.as_mut() {
                    Some(session) => ping(session).await.map(|()| true),
                    None => {
                        let mut session = open_deadline_session(postgres.pool()).await?;
                        let led = try_lead_deadlines(&mut session).await?;
                        if led {
                            tracing::info!("this instance leads the deadline locks");
                            self.session = Some(session);
                        }
                        Ok(led)
                    }
                }
            };
            let outcome = tokio::time::timeout(LEAD_TIMEOUT, check).await;
            if !matches!(outcome, Ok(Ok(true))) && self.session.take().is_some() {
                tracing::warn!("the deadline leader's session stopped answering: leading no more");
            }
        }
        match self.session {
            Some(_) => chrono::Duration::zero(),
            None => chrono::Duration::from_std(HANDOFF).unwrap_or_default(),
        }
    }
}
