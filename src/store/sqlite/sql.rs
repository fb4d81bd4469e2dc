//! Every SQL statement of the embedded ledger. sqlx checks one crate's `query!` calls against one
//! kind of database, and PostgreSQL's are those; these are bound at run time instead, and the
//! test `every_statement_prepares` has SQLite prepare each of them against a migrated ledger.

pub(super) const READ_HEAD: &str = "SELECT position, hash, last_credential_id, recorded_at FROM chain_head";
pub(super) const MOVE_HEAD: &str =
    "UPDATE chain_head SET position = ?1, hash = ?2, last_credential_id = ?3, recorded_at = ?4 WHERE singleton = 1";
pub(super) const INSERT_SERVER: &str = "INSERT INTO servers (uuid, name, created_at) VALUES (?1, ?2, ?3)";
pub(super) const INSERT_EVENT: &str = "INSERT INTO events (position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
pub(super) const UPSERT_CREDENTIAL: &str = "INSERT INTO credentials (id, uuid, server_uuid, name, type, hold, \
     key_hash, key_prefix, created_at, locked_at, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, hold = excluded.hold, locked_at = excluded.locked_at, \
     version = excluded.version";
pub(super) const INSERT_CREDENTIAL: &str = "INSERT INTO credentials (id, uuid, server_uuid, name, type, hold, \
     key_hash, key_prefix, created_at, locked_at, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// What folding needs of a stream's events, in order.
pub(super) const STREAM_TO_FOLD: &str = "SELECT position, stream_id, stream_version, event_type, schema_version, \
     recorded_at, payload FROM events WHERE stream_id = ?1 ORDER BY position";
/// What folding needs of the whole log, in order.
pub(super) const LOG_TO_FOLD: &str = "SELECT position, stream_id, stream_version, event_type, schema_version, \
     recorded_at, payload FROM events ORDER BY position";

pub(super) const EVENTS_AFTER: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";
pub(super) const CREDENTIAL_HISTORY: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE stream_id = ?1 AND server_uuid = ?2 ORDER BY position";
pub(super) const SERVER_EVENTS: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE server_uuid = ?1 AND position > ?2 ORDER BY position LIMIT ?3";
pub(super) const SERVER_EVENTS_UNTIL: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE server_uuid = ?1 AND recorded_at <= ?2 ORDER BY position";

pub(super) const HEAD_POSITION: &str = "SELECT position FROM chain_head";
pub(super) const VIEW_COUNT: &str = "SELECT count(*) FROM credentials";
pub(super) const VIEW_ROWS: &str = "SELECT id, uuid, server_uuid, name, type, hold, key_hash, key_prefix, created_at, \
     locked_at, version FROM credentials";

pub(super) const RECORD_USAGE: &str = "INSERT INTO credential_usage (credential_uuid, last_used_at) VALUES (?1, ?2) \
     ON CONFLICT (credential_uuid) DO UPDATE \
     SET last_used_at = max(credential_usage.last_used_at, excluded.last_used_at)";
pub(super) const USAGE_SINCE: &str =
    "SELECT credential_uuid, last_used_at FROM credential_usage WHERE last_used_at > ?1";

pub(super) const LOG_PROGRESS: &str = "SELECT (SELECT position FROM chain_head), \
     COALESCE((SELECT position FROM relay_checkpoints WHERE exchange = ?1), 0)";

pub(super) const BUILT_PROJECTION: &str = "SELECT checksum FROM projection_versions WHERE name = ?1";
pub(super) const RECORD_PROJECTION: &str = "INSERT INTO projection_versions (name, checksum, position, rebuilt_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO UPDATE \
     SET checksum = excluded.checksum, position = excluded.position, rebuilt_at = excluded.rebuilt_at";
pub(super) const DROP_VIEW: &str = "DROP TABLE IF EXISTS credentials";

/// A backup's servers, and what an import checks and writes besides the log.
pub(super) const BACKUP_SERVERS: &str = "SELECT uuid, name, created_at FROM servers ORDER BY created_at, uuid";
pub(super) const COUNT_SERVERS: &str = "SELECT count(*) FROM servers";
pub(super) const HAS_TABLE: &str = "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1";
pub(super) const SET_CHECKPOINT: &str = "INSERT INTO relay_checkpoints (exchange, position, updated_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (exchange) DO UPDATE \
     SET position = excluded.position, updated_at = excluded.updated_at";
// TODO(merge): the webhook tables come with migrations/sqlite/0002_webhooks.sql; once merged,
// list these three in `ALL` (they cannot be prepared before the table exists).
pub(super) const BACKUP_ENDPOINTS: &str = "SELECT uuid, server_uuid, url, events, description, secret, created_at, \
     disabled_at, disabled_reason, deleted_at FROM webhook_endpoints ORDER BY created_at, uuid";
pub(super) const COUNT_ENDPOINTS: &str = "SELECT count(*) FROM webhook_endpoints";
pub(super) const INSERT_ENDPOINT: &str = "INSERT INTO webhook_endpoints (uuid, server_uuid, url, events, \
     description, secret, created_at, disabled_at, disabled_reason, deleted_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
pub(super) const APPLIED_MIGRATIONS: &str = "SELECT count(*) FROM _sqlx_migrations WHERE success";
/// Written once, when a new file becomes a ledger: `LEDGER_APPLICATION_ID` (0x434C4447, "CLDG").
pub(super) const MARK_AS_LEDGER: &str = "PRAGMA application_id = 1129071687";
/// Moves what the write-ahead log holds into the file itself (here: the application id, so that
/// the file's header says what it is at once).
pub(super) const CHECKPOINT: &str = "PRAGMA wal_checkpoint(TRUNCATE)";
pub(super) const TABLES: &str = "SELECT name FROM sqlite_schema WHERE type = 'table'";

/// The statements above that run against a migrated ledger with its view, for the test that
/// prepares each one.
#[cfg(test)]
pub(super) const ALL: &[&str] = &[
    READ_HEAD,
    MOVE_HEAD,
    INSERT_SERVER,
    INSERT_EVENT,
    UPSERT_CREDENTIAL,
    INSERT_CREDENTIAL,
    STREAM_TO_FOLD,
    LOG_TO_FOLD,
    EVENTS_AFTER,
    CREDENTIAL_HISTORY,
    SERVER_EVENTS,
    SERVER_EVENTS_UNTIL,
    HEAD_POSITION,
    VIEW_COUNT,
    VIEW_ROWS,
    RECORD_USAGE,
    USAGE_SINCE,
    LOG_PROGRESS,
    BUILT_PROJECTION,
    RECORD_PROJECTION,
    DROP_VIEW,
    BACKUP_SERVERS,
    COUNT_SERVERS,
    HAS_TABLE,
    SET_CHECKPOINT,
    APPLIED_MIGRATIONS,
    TABLES,
    CHECKPOINT,
];
