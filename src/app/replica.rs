//! An in-memory replica of the credential view, so that authentication and `list` cost no
//! database query, while a revoked key is still refused from the moment its revoke commits, on
//! every instance.
//!
//! The rule that keeps it exact: before a request reads the replica, it waits for a read of the
//! log's head position that *began after the request arrived*, and for the replica to have
//! applied the log up to there. Whatever committed before the request arrived is then visible.
//! One head read is shared by all the requests that arrived before it began, so under load a
//! single cheap query serves a whole crowd; the replica applies new events with the same
//! `apply` as the view, read from the log in order, or takes the credentials this process's
//! writer just committed, folded by that same `apply`.

mod snapshot;
mod table;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{Caller, Credential, CredentialType, KeyHash, StoredEvent};
use crate::store::{Store, StoreError};
use table::{CredentialTable, Entry};
pub use table::{ReplicaCredential, TableError};

const CATCH_UP_PAGE: i64 = 5000;

#[derive(Default)]
struct State {
    position: i64,
    credentials: CredentialTable,
    /// The deadlines whose lock is not recorded yet, earliest first: what the scheduler waits
    /// for, with the server each credential belongs to.
    deadlines: BTreeSet<(DateTime<Utc>, Uuid, Uuid)>,
}

impl State {
    /// Adds a credential, or updates its previous state (its key, server and id never change).
    /// Says whether it brought a deadline still to be recorded.
    fn insert(&mut self, credential: &Credential) -> Result<bool, TableError> {
        let previous = self.credentials.get(&credential.uuid).and_then(|previous| previous.pending_deadline());
        self.credentials.insert(credential)?;
        if let Some(deadline) = previous {
            self.deadlines.remove(&(deadline, credential.uuid, credential.server_uuid));
        }
        let pending = credential.pending_deadline();
        if let Some(deadline) = pending {
            self.deadlines.insert((deadline, credential.uuid, credential.server_uuid));
        }
        Ok(pending.is_some())
    }

    /// The one rule for who may use a key at instant `now`: a credential of the type asked for,
    /// neither held nor past its deadline (whether or not the deadline's lock is recorded).
    fn usable(&self, key_hash: &KeyHash, credential_type: CredentialType, now: DateTime<Utc>) -> Option<Entry<'_>> {
        self.credentials
            .by_key(key_hash)
            .filter(|credential| credential.credential_type() == credential_type && !credential.held_at(now))
    }

    /// Applies one event of the log; says whether it brought a deadline still to be recorded.
    fn apply(&mut self, event: &StoredEvent) -> Result<bool, StoreError> {
        if event.position <= self.position {
            // The writer of this process handed it over already.
            return Ok(false);
        }
        if event.position != self.position + 1 {
            return Err(StoreError::Corrupt {
                position: event.position,
                reason: format!("the replica is at {}, the next event is at {}", self.position, event.position),
            });
        }
        let previous =
            self.credentials.get(&event.stream_id).map(|entry| entry.for_fold()).transpose().map_err(|error| {
                StoreError::Corrupt { position: event.position, reason: format!("the replica's credential: {error}") }
            })?;
        let next = event.logged().apply_to(previous.as_ref())?;
        let deadline = self.insert(&next).map_err(|error| StoreError::Unavailable(error.to_string()))?;
        self.position = event.position;
        Ok(deadline)
    }
}

type HeadRead = Shared<BoxFuture<'static, Result<i64, Arc<StoreError>>>>;

pub struct Replica {
    store: Store,
    state: RwLock<State>,
    /// One catch-up at a time; the others wait for it.
    catching_up: tokio::sync::Mutex<()>,
    head_reads: Arc<Mutex<HeadReads>>,
    consistent: AtomicBool,
    /// Woken when a deadline still to be recorded arrives, which may be the earliest.
    deadline_added: Notify,
}

async fn load_state(store: &Store) -> Result<State, StoreError> {
    // A Mutex only because the future must be Send: the two closures never run at once.
    let loading = Mutex::new(State::default());
    let lock = || loading.lock().unwrap_or_else(PoisonError::into_inner);
    let mut full = None;
    let position = store
        .view_snapshot(
            |count| lock().credentials.reserve(count),
            |credential| {
                if let Err(error) = lock().insert(&credential) {
                    full.get_or_insert(error);
                }
            },
        )
        .await?;
    if let Some(error) = full {
        return Err(StoreError::Unavailable(error.to_string()));
    }
    let mut state = loading.into_inner().unwrap_or_else(PoisonError::into_inner);
    state.credentials.shrink_to_fit();
    tracing::info!(
        credentials = state.credentials.credential_count(),
        bytes = state.credentials.heap_bytes(),
        "the credential view is loaded into the replica"
    );
    Ok(State { position, ..state })
}

/// The state a snapshot file holds, if there is one and the log vouches for it.
async fn state_from_snapshot(store: &Store, path: PathBuf) -> Option<State> {
    let started = Instant::now();
    let shown = path.display().to_string();
    let read =
        tokio::task::spawn_blocking(move || snapshot::read(&path)).await.unwrap_or_else(|error| Err(error.into()));
    let snapshot = match read {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(path = %shown, error = %error, "the replica's snapshot cannot be read: loading the view");
            return None;
        }
    };
    let position = snapshot.position;
    let at_position = match position {
        1.. => store.events_after(position - 1, 1).await.map(|events| events.into_iter().next()),
        _ => Ok(None),
    };
    let vouched = match at_position {
        Ok(event) => event.is_some_and(|event| event.position == position && event.hash == snapshot.event_hash),
        Err(error) => {
            tracing::warn!(path = %shown, error = %error, "the log cannot be read to check the replica's snapshot");
            false
        }
    };
    if !vouched {
        tracing::warn!(path = %shown, position, "the log has no such event at the replica snapshot's position: setting the snapshot aside, loading the view");
        return None;
    }
    let table = snapshot.table;
    let deadlines = table
        .entries()
        .filter_map(|entry| entry.pending_deadline().map(|deadline| (deadline, entry.uuid(), entry.server_uuid())))
        .collect();
    tracing::info!(
        path = %shown,
        position,
        credentials = table.credential_count(),
        bytes = table.heap_bytes(),
        seconds = started.elapsed().as_secs_f64(),
        "the replica is loaded from its snapshot"
    );
    Some(State { position, credentials: table, deadlines })
}

/// At most one head read runs at a time; requests that arrive while it runs share the next.
#[derive(Default)]
struct HeadReads {
    running: Option<(Instant, HeadRead)>,
    queued: Option<HeadRead>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("position", &self.position()).finish_non_exhaustive()
    }
}

impl Replica {
    /// Loads the view as it stands, with the position it reflects.
    pub async fn load(store: Store) -> Result<Arc<Replica>, StoreError> {
        let state = load_state(&store).await?;
        Ok(Replica::with_state(store, state))
    }

    fn with_state(store: Store, state: State) -> Arc<Replica> {
        Arc::new(Replica {
            store,
            state: RwLock::new(state),
            catching_up: tokio::sync::Mutex::new(()),
            head_reads: Arc::default(),
            consistent: AtomicBool::new(true),
            deadline_added: Notify::new(),
        })
    }

    /// Loads the replica from its snapshot file at `snapshot` if the log vouches for it (see
    /// `snapshot`), caught up with the log before it returns; otherwise from the view, as `load`.
    pub async fn load_with_snapshot(store: Store, snapshot: Option<&Path>) -> Result<Arc<Replica>, StoreError> {
        let from_snapshot = match snapshot {
            Some(path) => state_from_snapshot(&store, path.to_owned()).await,
            None => None,
        };
        let Some(state) = from_snapshot else {
            return Replica::load(store).await;
        };
        let replica = Replica::with_state(store, state);
        let behind = replica.position();
        replica.sync(Instant::now()).await?;
        tracing::info!(events = replica.position() - behind, "the replica caught up with the log after its snapshot");
        Ok(replica)
    }

    /// Writes the replica to its snapshot file, for the next start: when this instance stops, its
    /// writer drained.
    pub async fn write_snapshot(self: &Arc<Self>, path: PathBuf) -> Result<(), StoreError> {
        let position = self.position();
        if position == 0 {
            return Ok(());
        }
        let shown = path.display().to_string();
        let unavailable = |reason: String| StoreError::Unavailable(format!("replica snapshot {shown}: {reason}"));
        let event = self.store.events_after(position - 1, 1).await?.into_iter().next();
        let hash = event
            .filter(|event| event.position == position)
            .and_then(|event| <crate::domain::Hash>::try_from(event.hash.as_slice()).ok())
            .ok_or_else(|| unavailable(format!("the log has no event at {position}")))?;
        let replica = self.clone();
        let started = Instant::now();
        let (written, credentials) = tokio::task::spawn_blocking(move || {
            let state = replica.read();
            if state.position != position {
                return (Err(std::io::Error::other("the replica moved while it was being written")), 0);
            }
            (snapshot::write(&path, position, &hash, &state.credentials), state.credentials.credential_count())
        })
        .await
        .map_err(|error| unavailable(error.to_string()))?;
        written.map_err(|error| unavailable(error.to_string()))?;
        tracing::info!(
            position,
            credentials,
            seconds = started.elapsed().as_secs_f64(),
            "the replica's snapshot is written"
        );
        Ok(())
    }

    /// False while the replica reloads after finding itself out of step with the log: the
    /// instance is then not ready (requests wait for the reload rather than fail).
    pub fn is_consistent(&self) -> bool {
        self.consistent.load(Ordering::Relaxed)
    }

    pub fn position(&self) -> i64 {
        self.read().position
    }

    /// Waits until the replica reflects everything committed before `arrived`.
    pub async fn sync(&self, arrived: Instant) -> Result<(), StoreError> {
        let head = self.head_since(arrived).await.map_err(|shared| StoreError::Unavailable(shared.to_string()))?;
        self.catch_up(head).await
    }

    /// Takes in a batch this process's writer committed, which moved the log from `previous` to
    /// `head` and left `changed` in these states, if the replica stood exactly at `previous`;
    /// otherwise the next catch-up reads the batch from the log like any other.
    pub fn committed<'a>(&self, previous: i64, head: i64, changed: impl Iterator<Item = &'a Credential>) {
        let mut deadline = false;
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if state.position == previous {
                for credential in changed {
                    match state.insert(credential) {
                        Ok(added) => deadline |= added,
                        Err(error) => {
                            // Left at `previous`: the next catch-up reads the batch from the log,
                            // meets the same error and reloads, or reports it.
                            tracing::error!(error = %error, "the replica cannot take a committed batch");
                            return;
                        }
                    }
                }
                state.position = head;
            }
        }
        if deadline {
            self.deadline_added.notify_one();
        }
    }

    /// The caller a key belongs to at instant `now`: an API credential neither held nor past its
    /// deadline.
    pub fn authenticate(&self, key_hash: &KeyHash, now: DateTime<Utc>) -> Option<Caller> {
        let state = self.read();
        let credential = state.usable(key_hash, CredentialType::Api, now)?;
        Some(Caller { credential_uuid: credential.uuid(), server_uuid: credential.server_uuid() })
    }

    /// The credential a key belongs to, if it is one of `credential_type` usable at `now`: what
    /// a relay may let the key's holder use.
    pub fn usable(
        &self,
        key_hash: &KeyHash,
        credential_type: CredentialType,
        now: DateTime<Utc>,
    ) -> Option<ReplicaCredential> {
        self.read().usable(key_hash, credential_type, now).map(|credential| credential.credential())
    }

    /// The earliest deadline whose lock is not recorded yet, of a credential not in `skip`.
    pub fn first_deadline_not_in(&self, skip: &std::collections::HashSet<Uuid>) -> Option<DateTime<Utc>> {
        self.read()
            .deadlines
            .iter()
            .find(|(_, credential_uuid, _)| !skip.contains(credential_uuid))
            .map(|(deadline, ..)| *deadline)
    }

    /// Up to `limit` credentials whose deadline is at or before `now` and whose lock is not
    /// recorded yet, as `(server_uuid, credential_uuid, deadline)`, earliest first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<(Uuid, Uuid, DateTime<Utc>)> {
        self.read()
            .deadlines
            .iter()
            .take_while(|(deadline, ..)| *deadline <= now)
            .take(limit)
            .map(|(deadline, credential_uuid, server_uuid)| (*server_uuid, *credential_uuid, *deadline))
            .collect()
    }

    /// How many deadlines wait for their lock.
    pub fn pending_deadlines(&self) -> usize {
        self.read().deadlines.len()
    }

    /// Resolves when a deadline still to be recorded has arrived since the last call.
    pub async fn deadline_added(&self) {
        self.deadline_added.notified().await;
    }

    /// A server's credentials, by ascending id.
    pub fn list(&self, server_uuid: Uuid) -> Vec<ReplicaCredential> {
        self.list_page(server_uuid, None, usize::MAX)
    }

    /// Up to `limit` of a server's credentials with an id above `after`, by ascending id: a
    /// large server is answered page by page, each under the replica's read lock only for as
    /// long as it takes to copy that page, so that memory stays at a page and authentication
    /// and the writer are not held up.
    pub fn list_page(&self, server_uuid: Uuid, after: Option<i64>, limit: usize) -> Vec<ReplicaCredential> {
        let state = self.read();
        state.credentials.server_page(&server_uuid, after, limit).map(|entry| entry.credential()).collect()
    }

    /// How many credentials a server holds, held ones included.
    pub fn credential_count(&self, server_uuid: Uuid) -> usize {
        self.read().credentials.server_len(&server_uuid)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A head position read that began at or after `arrived`: the running one if it began late
    /// enough, else the next one, which starts when the running one ends and is shared by every
    /// request that arrives in the meantime.
    fn head_since(&self, arrived: Instant) -> HeadRead {
        let mut reads = self.head_reads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((began, running)) = &reads.running {
            if *began >= arrived {
                return running.clone();
            }
            if running.peek().is_none() {
                if let Some(queued) = &reads.queued {
                    return queued.clone();
                }
                let (previous, reads_handle, store) = (running.clone(), self.head_reads.clone(), self.store.clone());
                let queued = async move {
                    let _ = previous.await;
                    {
                        // This read begins now: it becomes the running one.
                        let mut reads = reads_handle.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(me) = reads.queued.take() {
                            reads.running = Some((Instant::now(), me));
                        }
                    }
                    store.head_position().await.map_err(Arc::new)
                }
                .boxed()
                .shared();
                reads.queued = Some(queued.clone());
                return queued;
            }
        }
        let store = self.store.clone();
        let read = async move { store.head_position().await.map_err(Arc::new) }.boxed().shared();
        reads.running = Some((Instant::now(), read.clone()));
        read
    }

    async fn catch_up(&self, target: i64) -> Result<(), StoreError> {
        if self.position() >= target {
            return Ok(());
        }
        let _only_one = self.catching_up.lock().await;
        let mut reloaded = false;
        while self.position() < target {
            let events = self.store.events_after(self.position(), CATCH_UP_PAGE).await?;
            if events.is_empty() {
                break;
            }
            let applied = {
                let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                events.iter().try_fold(false, |deadline, event| Ok::<_, StoreError>(state.apply(event)? | deadline))
            };
            match applied {
                Ok(deadline) => {
                    if deadline {
                        self.deadline_added.notify_one();
                    }
                }
                // Once: a view that is itself at odds with the log would only fail again.
                Err(error) if !reloaded => {
                    reloaded = true;
                    self.reload(error).await?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Replaces the whole state with a fresh snapshot of the view, which is consistent with the
    /// log by construction (both move in one transaction).
    async fn reload(&self, cause: StoreError) -> Result<(), StoreError> {
        tracing::error!(error = %cause, "the replica is out of step with the log: reloading the credential view");
        crate::metrics::metrics().replica_reloads.inc();
        self.consistent.store(false, Ordering::Relaxed);
        let state = load_state(&self.store).await?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        self.consistent.store(true, Ordering::Relaxed);
        self.deadline_added.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::app::provision::provision_server;
    use crate::app::writer::Writer;
    use crate::domain::{Actor, Command, CredentialName, EventMetadata, ServerName};
    use crate::store::sqlite::temp::TempLedger;
    use crate::store::sqlite::SqliteStore;
    use crate::store::DatabaseSettings;

    /// A store on a pool of one connection, and a provisioned server: whoever holds the one
    /// connection holds up every head read, which makes their timing the test's to choose. The
    /// barrier is the same on every backend; an embedded ledger needs no server.
    async fn one_connection_store(ledger: &TempLedger) -> (Store, Arc<Replica>) {
        let settings =
            DatabaseSettings { max_connections: 1, acquire_timeout: Duration::from_secs(30), ..ledger.settings() };
        let store = Store::Sqlite(ledger.store_with(settings).await);
        let name = ServerName::parse("Acme").unwrap();
        provision_server(&store, &name, CredentialName::parse("First").unwrap()).await.unwrap();
        let replica = Replica::load(store.clone()).await.unwrap();
        (store, replica)
    }

    fn sqlite(store: &Store) -> &SqliteStore {
        match store {
            Store::Sqlite(sqlite) => sqlite,
            Store::Postgres(_) => unreachable!("these tests run on the embedded ledger"),
        }
    }

    /// The barrier's saving: every request that arrived before a read began is answered by that
    /// one read, however many there are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_that_arrived_before_a_head_read_began_share_it() {
        let ledger = TempLedger::new();
        let (store, replica) = one_connection_store(&ledger).await;
        let arrived = Instant::now();
        let held = sqlite(&store).pool().acquire().await.unwrap();
        let first = replica.head_since(arrived);
        let running = tokio::spawn(first.clone());
        let others: Vec<HeadRead> = (0..10).map(|_| replica.head_since(arrived)).collect();
        assert!(others.iter().all(|other| other.ptr_eq(&first)), "one read for everyone who arrived before it began");
        drop(held);
        assert_eq!(running.await.unwrap().unwrap(), 1);
        for other in others {
            assert_eq!(other.await.unwrap(), 1);
        }
    }

    /// The barrier's rule: a request that arrives while a read runs cannot use it (that read may
    /// have missed a commit the request saw), so it waits for the next, which begins only when
    /// the running one ends and which every later arrival shares.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_arrives_during_a_read_gets_the_next_one_which_later_arrivals_share() {
        let ledger = TempLedger::new();
        let (store, replica) = one_connection_store(&ledger).await;
        let held = sqlite(&store).pool().acquire().await.unwrap();
        let running = replica.head_since(Instant::now());
        let first = tokio::spawn(running.clone());
        let late = replica.head_since(Instant::now());
        assert!(!late.ptr_eq(&running), "a read that began before the request arrived does not answer it");
        let later = replica.head_since(Instant::now());
        assert!(later.ptr_eq(&late), "one queued read, shared");
        let queued = tokio::spawn(late.clone());
        let released = Instant::now();
        drop(held);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(queued.await.unwrap().unwrap(), 1);
        let reads = replica.head_reads.lock().unwrap();
        let (began, now_running) = reads.running.as_ref().unwrap();
        assert!(now_running.ptr_eq(&late), "the queued read became the running one when it began");
        assert!(*began >= released, "and it began only after the running one ended");
        assert!(reads.queued.is_none());
    }

    /// A finished read is never reused for a request that arrived after it began: that request
    /// gets a read of its own, which sees what another instance committed in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_after_a_finished_read_sees_commits_made_since() {
        let ledger = TempLedger::new();
        let (store, replica) = one_connection_store(&ledger).await;
        let before = replica.head_since(Instant::now());
        assert_eq!(before.clone().await.unwrap(), 1);

        let other_instance = Replica::load(store.clone()).await.unwrap();
        let (writer, _task) = Writer::spawn(store.clone(), other_instance.clone());
        let server_uuid = other_instance.read().credentials.servers().next().unwrap();
        let credential_uuid = other_instance.list(server_uuid)[0].uuid;
        let metadata = EventMetadata { actor: Actor::Cli, request_id: None, source_ip: None };
        writer.execute(Command::Revoke { server_uuid, credential_uuid }, metadata).await.unwrap();

        let after = replica.head_since(Instant::now());
        assert!(!after.ptr_eq(&before));
        assert_eq!(after.await.unwrap(), 2);
        assert!(!replica.list(server_uuid)[0].hold, "head_since reads the head; sync applies it");
        replica.sync(Instant::now()).await.unwrap();
        assert!(replica.list(server_uuid)[0].hold, "after the barrier, the revoke is visible here");
    }

    /// A replica that finds an event it cannot apply (here: the lock of a credential it lost)
    /// reloads the view instead of answering 500s, and counts it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_out_of_step_with_the_log_reloads_the_view() {
        let ledger = TempLedger::new();
        let store = Store::Sqlite(ledger.store().await);
        let name = ServerName::parse("Acme").unwrap();
        let server = provision_server(&store, &name, CredentialName::parse("First").unwrap()).await.unwrap();
        let replica = Replica::load(store.clone()).await.unwrap();
        {
            let mut state = replica.state.write().unwrap();
            *state = State { position: state.position, ..State::default() };
        }
        let (writer, _task) = Writer::spawn(store.clone(), Replica::load(store.clone()).await.unwrap());
        let revoke = Command::Revoke { server_uuid: server.server_uuid, credential_uuid: server.credential.uuid };
        let metadata = EventMetadata { actor: Actor::Cli, request_id: None, source_ip: None };
        writer.execute(revoke, metadata).await.unwrap();

        let reloads = crate::metrics::metrics().replica_reloads.get();
        replica.sync(Instant::now()).await.unwrap();
        assert!(replica.is_consistent());
        assert!(crate::metrics::metrics().replica_reloads.get() > reloads);
        let listed = replica.list(server.server_uuid);
        assert_eq!(listed.len(), 1);
        assert!(listed[0].hold, "the revoke is in the reloaded replica");
        assert_eq!(replica.authenticate(&server.key.hash(), Utc::now()), None);
    }
}
