//! SQLite: the embedded ledger, one file. The same log, chain and view as PostgreSQL's
//! (docs/embedded-backend.md). SQLite has one writer at a time: every write takes the write lock
//! first (`BEGIN IMMEDIATE`), so a batch is decided against the state it appends to, with no
//! compare-and-set and no retry, across every process on the file.

mod backup;
mod records;
mod sql;
#[cfg(test)]
pub(crate) mod temp;
#[cfg(test)]
mod tests;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqliteConnection, SqlitePool};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::append::{Appended, ChainHead, Decision, Rows};
use super::postgres::{LogProgress, RebuildReport};
use super::view::{check_view_size, ViewRow};
use super::{DatabaseSettings, StoreError};
use crate::domain::{Credential, Ledger, LoggedEvent, StoredEvent};
use records::{EventRecord, Hex};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const CREDENTIALS_PROJECTION: &str = "credentials";
const CREDENTIALS_SCHEMA: &str = include_str!("../../../projections/sqlite/credentials.sql");
const INDEXES_MARKER: &str = "\n-- indexes\n";

/// The service's handle on an embedded ledger.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers: connections that refuse to write (`query_only`).
    pool: SqlitePool,
    /// The one connection this handle writes through. SQLite lets one connection write at a time
    /// anyway; through one, writers queue here instead of polling the lock, and its page cache
    /// stays warm (a connection drops its cache whenever another one has written).
    writer: SqlitePool,
    /// Stops the checkpointer (`checkpoint_in_background`), as does dropping the last handle.
    checkpoints: CancellationToken,
    _stop_checkpoints: std::sync::Arc<DropGuard>,
    query_timeout: Duration,
    /// The head's position after each append of this handle, sent after its commit.
    head: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
}

/// A time as the embedded ledger stores it: the 27 characters the hash chain covers.
fn stored_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn read_time(text: &str, position: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt { position, reason: format!("{text:?} is not a stored time") })
}

/// `PRAGMA application_id` of every ledger file ("CLDG"), so that a file of another program is
/// refused rather than written into.
const LEDGER_APPLICATION_ID: u32 = 0x434C_4447;

/// The writer's page cache, in KiB (SQLite's negative `cache_size`): the pages of the indexes an
/// append touches, which random uuids and key hashes scatter over the whole file.
const WRITER_CACHE: &str = "-32768";

/// The write-ahead log's length, in pages, at which the writer copies it into the file itself
/// when committing. SQLite's default (1,000 pages) made one commit in six of a steady create load
/// carry that copy and its sync; `checkpoint_in_background` copies it instead, and this is only
/// the bound where nothing does (a process that stopped its checkpointer, or fell behind).
const WRITER_AUTOCHECKPOINT: &str = "16384";

/// How often the background checkpointer copies the write-ahead log into the file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Copies the write-ahead log into the file every `CHECKPOINT_INTERVAL` on a connection of its
/// own, without waiting for readers or the writer (`PASSIVE`): the copy and its sync happen
/// beside the appends instead of inside their commits, until the token is cancelled.
fn checkpoint_in_background(connection: SqlitePool) -> CancellationToken {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.cancelled() => break,
                _ = tokio::time::sleep(CHECKPOINT_INTERVAL) => {}
            }
            if let Err(error) = sqlx::query(sql::CHECKPOINT_PASSIVE).execute(&connection).await {
                tracing::debug!(error = %error, "write-ahead log checkpoint failed; the next one retries");
            }
        }
        connection.close().await;
    });
    stop
}

/// What the first 100 bytes of a file say it is (the SQLite file format's header).
enum FileHeader {
    Missing,
    NotSqlite,
    Sqlite { application_id: u32 },
}

impl FileHeader {
    fn read(path: &std::path::Path) -> std::io::Result<FileHeader> {
        use std::io::Read;
        let mut header = Vec::with_capacity(100);
        match std::fs::File::open(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(FileHeader::Missing),
            Err(error) => return Err(error),
            Ok(file) => file.take(100).read_to_end(&mut header)?,
        };
        if header.is_empty() {
            return Ok(FileHeader::Missing);
        }
        if header.len() < 100 || !header.starts_with(b"SQLite format 3\0") {
            return Ok(FileHeader::NotSqlite);
        }
        let application_id = u32::from_be_bytes([header[68], header[69], header[70], header[71]]);
        Ok(FileHeader::Sqlite { application_id })
    }
}

/// Whether a SQLite file without an application id is an empty database or a ledger, read
/// without changing it.
async fn is_ledger_without_id(options: SqliteConnectOptions) -> Result<bool, StoreError> {
    use sqlx::ConnectOptions;
    let mut connection = options.read_only(true).connect().await?;
    let tables: Vec<String> = sqlx::query_scalar(sql::TABLES).fetch_all(&mut connection).await?;
    Ok(tables.is_empty() || tables.iter().any(|table| table == "chain_head"))
}

fn cannot_open(path: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::CannotOpen { path: path.to_owned(), reason: error.to_string() }
}

#[derive(FromRow)]
struct HeadRow {
    position: i64,
    hash: Vec<u8>,
    last_credential_id: i64,
    recorded_at: Option<String>,
}

#[derive(FromRow)]
struct LoggedRow {
    position: i64,
    stream_id: Uuid,
    stream_version: i32,
    event_type: String,
    schema_version: i32,
    recorded_at: String,
    payload: String,
}

impl LoggedRow {
    fn fold_into(&self, ledger: &mut Ledger) -> Result<(), StoreError> {
        let logged = LoggedEvent {
            position: self.position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: read_time(&self.recorded_at, self.position)?,
            payload: &self.payload,
        };
        ledger.fold(logged).map(drop).map_err(StoreError::from)
    }
}

#[derive(FromRow)]
struct EventRow {
    position: i64,
    stream_id: Uuid,
    stream_version: i32,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    server_uuid: Uuid,
    payload: String,
    metadata: String,
    recorded_at: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        Ok(StoredEvent {
            recorded_at: read_time(&row.recorded_at, row.position)?,
            position: row.position,
            stream_id: row.stream_id,
            stream_version: row.stream_version,
            event_id: row.event_id,
            event_type: row.event_type,
            schema_version: row.schema_version,
            server_uuid: row.server_uuid,
            payload: row.payload,
            metadata: row.metadata,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

/// A view row as SQLite holds it (times as text).
#[derive(FromRow)]
struct StoredViewRow {
    id: i64,
    uuid: Uuid,
    server_uuid: Uuid,
    name: String,
    #[sqlx(rename = "type")]
    credential_type: String,
    hold: bool,
    key_hash: Vec<u8>,
    key_prefix: String,
    created_at: String,
    locked_at: Option<String>,
    expires_at: Option<String>,
    replaced_by: Option<Uuid>,
    version: i32,
}

impl StoredViewRow {
    fn credential(self, position: i64) -> Result<Credential, StoreError> {
        ViewRow {
            created_at: read_time(&self.created_at, position)?,
            locked_at: self.locked_at.as_deref().map(|text| read_time(text, position)).transpose()?,
            expires_at: self.expires_at.as_deref().map(|text| read_time(text, position)).transpose()?,
            replaced_by: self.replaced_by,
            id: self.id,
            uuid: self.uuid,
            server_uuid: self.server_uuid,
            name: self.name,
            credential_type: self.credential_type,
            hold: self.hold,
            key_hash: self.key_hash,
            key_prefix: self.key_prefix,
            version: self.version,
        }
        .credential(position)
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the ledger file `settings.url` names (`sqlite://PATH`):
    /// write-ahead log, a full sync at every commit, and a write lock waited for up to the query
    /// timeout.
    pub async fn open(settings: &DatabaseSettings) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(&settings.url)?;
        let path = options.get_filename().to_path_buf();
        let shown = path.display().to_string();
        // Checked before anything writes to the file: the journal mode below would change it.
        let adopt = match FileHeader::read(&path).map_err(|error| cannot_open(&shown, error))? {
            FileHeader::Missing => true,
            FileHeader::NotSqlite => return Err(StoreError::NotALedger(shown)),
            FileHeader::Sqlite { application_id: LEDGER_APPLICATION_ID } => false,
            FileHeader::Sqlite { application_id } => {
                // Ledgers made before the id was set have it at 0, and their head table.
                if application_id != 0 || !is_ledger_without_id(options.clone()).await? {
                    return Err(StoreError::ForeignDatabase { path: shown, application_id });
                }
                true
            }
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(settings.query_timeout);
        let shown = shown.as_str();
        let connect = |options: SqliteConnectOptions, connections: u32| async move {
            SqlitePoolOptions::new()
                .max_connections(connections)
                // A connection to a file does not go stale: no ping (a round trip to its thread)
                // before every use.
                .test_before_acquire(false)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(|error| match error {
                    sqlx::Error::Database(_) | sqlx::Error::Io(_) => cannot_open(shown, error),
                    other => StoreError::Database(other),
                })
        };
        // The writer first: it creates the file and turns its write-ahead log on.
        let writer = connect(
            options
                .clone()
                .pragma("cache_size", WRITER_CACHE)
                .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT)
                // A statement of many rows keeps the pages it may have to undo in a statement
                // journal: in memory, not in a temporary file written for every append.
                .pragma("temp_store", "MEMORY"),
            1,
        )
        .await?;
        if adopt {
            sqlx::query(sql::MARK_AS_LEDGER).execute(&writer).await?;
            sqlx::query(sql::CHECKPOINT).execute(&writer).await?;
        }
        let checkpointer = connect(options.clone(), 1).await?;
        let pool = connect(options.pragma("query_only", "ON"), settings.max_connections).await?;
        let checkpoints = checkpoint_in_background(checkpointer);
        let _stop_checkpoints = std::sync::Arc::new(checkpoints.clone().drop_guard());
        let head = std::sync::Arc::new(tokio::sync::watch::Sender::new(0));
        Ok(SqliteStore { pool, writer, checkpoints, _stop_checkpoints, query_timeout: settings.query_timeout, head })
    }

    pub fn with_query_timeout(self, query_timeout: Duration) -> Self {
        SqliteStore { query_timeout, ..self }
    }

    /// The head's position after each commit of an append through this handle (or its clones).
    pub fn head_changes(&self) -> tokio::sync::watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Bounds `work` by the query timeout.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.query_timeout, work).await.map_err(|_| StoreError::TimedOut(self.query_timeout))?
    }

    pub(crate) fn connections(&self) -> (u32, u32) {
        let open = self.pool.size() + self.writer.size();
        (open, (self.pool.num_idle() + self.writer.num_idle()) as u32)
    }

    /// Migrations, then the view if its schema file changed (or was never built).
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The one connection writes go through, for tests that hold it.
    #[cfg(test)]
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub async fn close(&self) {
        self.checkpoints.cancel();
        self.pool.close().await;
        self.writer.close().await;
    }

    pub async fn prepare(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        let built: Option<Vec<u8>> =
            sqlx::query_scalar(sql::BUILT_PROJECTION).bind(CREDENTIALS_PROJECTION).fetch_optional(&self.pool).await?;
        if built.as_deref() != Some(&schema_checksum()[..]) {
            let report = self.rebuild_projections().await?;
            tracing::info!(events = report.events, credentials = report.credentials, "credential view rebuilt");
        }
        Ok(())
    }

    pub async fn applied_migrations(&self) -> Result<(i64, i64), StoreError> {
        let applied: i64 = sqlx::query_scalar(sql::APPLIED_MIGRATIONS).fetch_one(&self.pool).await?;
        Ok((applied, MIGRATOR.iter().count() as i64))
    }

    /// Drops the view and folds the whole log into a new one, holding the write lock: appends
    /// wait, and readers keep the old view until the commit.
    pub async fn rebuild_projections(&self) -> Result<RebuildReport, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let report = rebuild_in(&mut tx).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Appends under the write lock: the head and the touched credentials are read, decided
    /// against and appended in one transaction, so `head` (the caller's last sight of the end)
    /// is never needed.
    pub async fn append<'a, T>(
        &self,
        _head: Option<ChainHead>,
        touched: &[Uuid],
        mut decide: impl FnMut(&mut Ledger, DateTime<Utc>) -> Decision<'a, T>,
    ) -> Result<Appended<T>, StoreError> {
        self.bounded(async {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let head = read_head(&mut tx).await?;
            let mut ledger = Ledger::new(head.last_credential_id());
            if !touched.is_empty() {
                let streams: Vec<Hex> = touched.iter().copied().map(Hex::uuid).collect();
                let rows = sqlx::query_as::<_, LoggedRow>(sql::STREAMS_TO_FOLD)
                    .bind(sqlx::types::Json(&streams))
                    .fetch_all(&mut *tx)
                    .await?;
                for row in &rows {
                    row.fold_into(&mut ledger)?;
                }
            }
            let recorded_at = head.now();
            let Decision { servers, events, value } = decide(&mut ledger, recorded_at);
            let previous = head.position;
            if events.is_empty() && servers.is_empty() {
                tx.rollback().await?;
                return Ok(Appended { value, ledger, previous, head });
            }
            let rows = Rows::new(&head, &ledger, &servers, &events, recorded_at);
            let next = head.after(&rows, &ledger, recorded_at);
            let at = stored_time(recorded_at);
            for (uuid, name) in &servers {
                sqlx::query(sql::INSERT_SERVER).bind(uuid).bind(name.as_str()).bind(&at).execute(&mut *tx).await?;
            }
            let payloads: Vec<String> = rows.payloads.iter().map(ToString::to_string).collect();
            let metadatas: Vec<String> = rows.metadatas.iter().map(ToString::to_string).collect();
            let records: Vec<EventRecord> = (0..rows.positions.len())
                .map(|i| EventRecord {
                    position: rows.positions[i],
                    stream_id: Hex::uuid(rows.stream_ids[i]),
                    stream_version: rows.stream_versions[i],
                    event_id: Hex::uuid(rows.event_ids[i]),
                    event_type: &rows.event_types[i],
                    schema_version: rows.schema_versions[i],
                    server_uuid: Hex::uuid(rows.event_server_uuids[i]),
                    payload: &payloads[i],
                    metadata: &metadatas[i],
                    recorded_at: at.clone(),
                    prev_hash: Hex::of(&rows.prev_hashes[i]),
                    hash: Hex::of(&rows.hashes[i]),
                })
                .collect();
            records::insert_events(&mut tx, &records).await?;
            records::upsert_view(&mut tx, ledger.changed()).await?;
            sqlx::query(sql::MOVE_HEAD)
                .bind(next.position)
                .bind(&next.hash()[..])
                .bind(next.last_credential_id())
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            // After the commit: whoever wakes on it must find the events.
            self.head.send_replace(next.position);
            Ok(Appended { value, ledger, previous, head: next })
        })
        .await
    }

    /// Reads the view in one snapshot (the first read of a transaction fixes it), row by row.
    pub async fn view_snapshot(
        &self,
        starting: impl FnOnce(usize),
        mut each: impl FnMut(Credential),
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = read_head(&mut tx).await?;
        let position = head.position;
        let count: i64 = sqlx::query_scalar(sql::VIEW_COUNT).fetch_one(&mut *tx).await?;
        check_view_size(count, head.last_credential_id(), position)?;
        starting(usize::try_from(count).unwrap_or_default());
        {
            let mut rows = sqlx::query_as::<_, StoredViewRow>(sql::VIEW_ROWS).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                each(row.credential(position)?);
            }
        }
        tx.commit().await?;
        Ok(position)
    }

    pub async fn head_position(&self) -> Result<i64, StoreError> {
        self.bounded(async { Ok(sqlx::query_scalar(sql::HEAD_POSITION).fetch_one(&self.pool).await?) }).await
    }

    pub async fn events_after(&self, position: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let query = sqlx::query_as::<_, EventRow>(sql::EVENTS_AFTER).bind(position).bind(limit);
        self.bounded(async { stored(query.fetch_all(&self.pool).await?) }).await
    }

    pub async fn credential_history(&self, server_uuid: Uuid, stream_id: Uuid) -> Result<Vec<StoredEvent>, StoreError> {
        let query = sqlx::query_as::<_, EventRow>(sql::CREDENTIAL_HISTORY).bind(stream_id).bind(server_uuid);
        stored(query.fetch_all(&self.pool).await?)
    }

    pub async fn server_events(
        &self,
        server_uuid: Uuid,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let query =
            sqlx::query_as::<_, EventRow>(sql::SERVER_EVENTS).bind(server_uuid).bind(after_position).bind(limit);
        stored(query.fetch_all(&self.pool).await?)
    }

    pub async fn server_latest_event(&self, server_uuid: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let query = sqlx::query_as::<_, EventRow>(sql::SERVER_LATEST_EVENT).bind(server_uuid);
        query.fetch_optional(&self.pool).await?.map(StoredEvent::try_from).transpose()
    }

    /// Feeds `each` a server's events recorded at or before `as_of`, in log order, as they
    /// stream in. Stored times are microseconds, so comparing with `as_of` cut to microseconds
    /// keeps the same events.
    pub async fn fold_server_events_until(
        &self,
        server_uuid: Uuid,
        as_of: DateTime<Utc>,
        mut each: impl FnMut(StoredEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut events = sqlx::query_as::<_, EventRow>(sql::SERVER_EVENTS_UNTIL)
            .bind(server_uuid)
            .bind(stored_time(as_of))
            .fetch(&self.pool);
        while let Some(row) = events.try_next().await? {
            each(StoredEvent::try_from(row)?)?;
        }
        Ok(())
    }

    pub async fn log_progress(&self, exchange: &str) -> Result<LogProgress, StoreError> {
        self.bounded(async {
            let (head, relayed): (i64, i64) =
                sqlx::query_as(sql::LOG_PROGRESS).bind(exchange).fetch_one(&self.pool).await?;
            Ok(LogProgress { head, relayed })
        })
        .await
    }

    /// Records when credentials were last used; an older time never overwrites a newer one.
    pub async fn record_usage(&self, usage: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        self.bounded(async {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            for (uuid, at) in usage {
                sqlx::query(sql::RECORD_USAGE).bind(uuid).bind(stored_time(*at)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn usage_since(&self, since: DateTime<Utc>) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as(sql::USAGE_SINCE).bind(stored_time(since)).fetch_all(&self.pool).await?;
        rows.into_iter().map(|(uuid, at)| Ok((uuid, read_time(&at, 0)?))).collect()
    }
}

/// The rebuild, inside the caller's write transaction (an import rebuilds in the one that writes).
async fn rebuild_in(tx: &mut SqliteConnection) -> Result<RebuildReport, StoreError> {
    let (table, indexes) = CREDENTIALS_SCHEMA.split_once(INDEXES_MARKER).unwrap_or((CREDENTIALS_SCHEMA, ""));
    sqlx::query(sql::DROP_VIEW).execute(&mut *tx).await?;
    let head = read_head(&mut *tx).await?;
    sqlx::raw_sql(table).execute(&mut *tx).await?;
    let mut ledger = Ledger::new(0);
    let mut events = 0u64;
    {
        let mut log = sqlx::query_as::<_, LoggedRow>(sql::LOG_TO_FOLD).fetch(&mut *tx);
        while let Some(row) = log.try_next().await? {
            row.fold_into(&mut ledger)?;
            events += 1;
        }
    }
    let credentials = records::insert_view(&mut *tx, ledger.credentials()).await?;
    sqlx::raw_sql(indexes).execute(&mut *tx).await?;
    sqlx::query(sql::RECORD_PROJECTION)
        .bind(CREDENTIALS_PROJECTION)
        .bind(&schema_checksum()[..])
        .bind(head.position)
        .bind(stored_time(Utc::now()))
        .execute(&mut *tx)
        .await?;
    Ok(RebuildReport { events, credentials, position: head.position })
}

async fn read_head(connection: &mut SqliteConnection) -> Result<ChainHead, StoreError> {
    let row = sqlx::query_as::<_, HeadRow>(sql::READ_HEAD).fetch_one(connection).await?;
    let recorded_at = row.recorded_at.as_deref().map(|text| read_time(text, row.position)).transpose()?;
    ChainHead::read(row.position, &row.hash, row.last_credential_id, recorded_at)
}

fn stored(rows: Vec<EventRow>) -> Result<Vec<StoredEvent>, StoreError> {
    rows.into_iter().map(StoredEvent::try_from).collect()
}

fn schema_checksum() -> [u8; 32] {
    Sha256::digest(CREDENTIALS_SCHEMA.as_bytes()).into()
}
