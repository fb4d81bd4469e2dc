//! Every SQL statement of the embedded ledger. sqlx checks one crate's `query!` calls against one
//! kind of database, and PostgreSQL's are those; these are bound at run time instead, and the
//! test `every_statement_prepares` has SQLite prepare each of them against a migrated ledger.

pub(super) const READ_HEAD: &str = "SELECT position, hash, last_credential_id, recorded_at FROM chain_head";
pub(super) const MOVE_HEAD: &str =
    "UPDATE chain_head SET position = ?1, hash = ?2, last_credential_id = ?3, recorded_at = ?4 WHERE singleton = 1";
pub(super) const INSERT_SERVER: &str = "INSERT INTO servers (uuid, name, created_at) VALUES (?1, ?2, ?3)";
/// Appends the events of a JSON array (`records::EventRecord`), in one statement.
pub(super) const INSERT_EVENTS: &str = "INSERT INTO events (position, stream_id, stream_version, event_id, \
     event_type, schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash) \
     SELECT value ->> 'position', unhex(value ->> 'stream_id'), value ->> 'stream_version', \
     unhex(value ->> 'event_id'), value ->> 'event_type', value ->> 'schema_version', \
     unhex(value ->> 'server_uuid'), value ->> 'payload', value ->> 'metadata', value ->> 'recorded_at', \
     unhex(value ->> 'prev_hash'), unhex(value ->> 'hash') FROM json_each(?1)";
/// Inserts the view rows of a JSON array (`records::ViewRecord`) in one statement: into a table
/// being rebuilt, before its indexes exist.
macro_rules! insert_view_rows {
    () => {
        "INSERT INTO credentials (id, uuid, server_uuid, name, type, hold, key_hash, key_prefix, created_at, \
         locked_at, expires_at, replaced_by, version) \
         SELECT value ->> 'id', unhex(value ->> 'uuid'), unhex(value ->> 'server_uuid'), value ->> 'name', \
         value ->> 'type', value ->> 'hold', unhex(value ->> 'key_hash'), value ->> 'key_prefix', \
         value ->> 'created_at', value ->> 'locked_at', value ->> 'expires_at', unhex(value ->> 'replaced_by'), \
         value ->> 'version' FROM json_each(?1) WHERE true"
    };
}
pub(super) const INSERT_CREDENTIALS: &str = insert_view_rows!();
/// The same, new or changed rows (`WHERE true` above is how SQLite tells an upsert's
/// `ON CONFLICT` from a join's `ON`).
pub(super) const UPSERT_CREDENTIALS: &str = concat!(
    insert_view_rows!(),
    " ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, hold = excluded.hold, ",
    "locked_at = excluded.locked_at, expires_at = excluded.expires_at, replaced_by = excluded.replaced_by, ",
    "version = excluded.version"
);

/// What folding needs of the events of the streams in a JSON array of hex uuids, in log order:
/// one statement for a whole batch's touched credentials, not one per credential.
pub(super) const STREAMS_TO_FOLD: &str = "SELECT position, stream_id, stream_version, event_type, schema_version, \
     recorded_at, payload FROM events WHERE stream_id IN (SELECT unhex(value) FROM json_each(?1)) ORDER BY position";
/// What folding needs of the whole log, in order.
pub(super) const LOG_TO_FOLD: &str = "SELECT position, stream_id, stream_version, event_type, schema_version, \
     recorded_at, payload FROM events ORDER BY position";

pub(super) const EVENTS_AFTER: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";
pub(super) const CREDENTIAL_HISTORY: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE stream_id = ?1 AND server_uuid = ?2 ORDER BY stream_version";
pub(super) const SERVER_EVENTS: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE server_uuid = ?1 AND position > ?2 ORDER BY position LIMIT ?3";
pub(super) const SERVER_LATEST_EVENT: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE server_uuid = ?1 ORDER BY position DESC LIMIT 1";
pub(super) const SERVER_EVENTS_UNTIL: &str = "SELECT position, stream_id, stream_version, event_id, event_type, \
     schema_version, server_uuid, payload, metadata, recorded_at, prev_hash, hash \
     FROM events WHERE server_uuid = ?1 AND recorded_at <= ?2 ORDER BY position";

pub(super) const HEAD_POSITION: &str = "SELECT position FROM chain_head";
pub(super) const VIEW_COUNT: &str = "SELECT count(*) FROM credentials";
pub(super) const VIEW_ROWS: &str = "SELECT id, uuid, server_uuid, name, type, hold, key_hash, key_prefix, created_at, \
     locked_at, expires_at, replaced_by, version FROM credentials";

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
pub(super) const SET_CHECKPOINT: &str = "INSERT INTO relay_checkpoints (exchange, position, updated_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (exchange) DO UPDATE \
     SET position = excluded.position, updated_at = excluded.updated_at";
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
/// The same, as far as it can go without waiting for anyone.
pub(super) const CHECKPOINT_PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
pub(super) const TABLES: &str = "SELECT name FROM sqlite_schema WHERE type = 'table'";

/// The statements above that run against a migrated ledger with its view, for the test that
/// prepares each one.
#[cfg(test)]
pub(super) const ALL: &[&str] = &[
    READ_HEAD,
    MOVE_HEAD,
    INSERT_SERVER,
    INSERT_EVENTS,
    INSERT_CREDENTIALS,
    UPSERT_CREDENTIALS,
    STREAMS_TO_FOLD,
    LOG_TO_FOLD,
    EVENTS_AFTER,
    CREDENTIAL_HISTORY,
    SERVER_EVENTS,
    SERVER_LATEST_EVENT,
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
    SET_CHECKPOINT,
    BACKUP_ENDPOINTS,
    COUNT_ENDPOINTS,
    INSERT_ENDPOINT,
    APPLIED_MIGRATIONS,
    TABLES,
    CHECKPOINT,
    CREATE_WEBHOOK_ENDPOINT,
    LIST_WEBHOOK_ENDPOINTS,
    DELETE_WEBHOOK_ENDPOINT,
    SUBSCRIBED_ENDPOINTS,
    DISABLE_WEBHOOK_ENDPOINT,
    FAIL_OPEN_DELIVERIES,
    OPEN_WEBHOOK_DELIVERY,
    INSERT_DUE_DELIVERY,
    CLAIM_DELIVERY,
    DUE_DELIVERIES,
    NEXT_DUE,
    INSERT_ATTEMPT,
    SETTLE_DELIVERY,
    DELIVERY_STATUS,
    REQUEUE_DELIVERY,
    LIST_WEBHOOK_ATTEMPTS,
    WEBHOOK_ENDPOINT_EXISTS,
    LOCKED_CREDENTIAL,
    SEED_DISPATCH_CHECKPOINT,
    DISPATCH_CHECKPOINT,
    ADVANCE_DISPATCH_CHECKPOINT,
];

// Webhooks (migrations/sqlite/0002_webhooks.sql). Times are bound from Rust as the 27-character
// text, never left to SQL (`strftime` has milliseconds only).
pub(super) const CREATE_WEBHOOK_ENDPOINT: &str = "INSERT INTO webhook_endpoints \
     (uuid, server_uuid, url, events, description, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     RETURNING uuid, url, events, description, created_at, disabled_at, disabled_reason";
pub(super) const LIST_WEBHOOK_ENDPOINTS: &str = "SELECT uuid, url, events, description, created_at, disabled_at, \
     disabled_reason FROM webhook_endpoints WHERE server_uuid = ?1 AND deleted_at IS NULL ORDER BY created_at, uuid";
pub(super) const DELETE_WEBHOOK_ENDPOINT: &str = "UPDATE webhook_endpoints SET deleted_at = ?3 \
     WHERE uuid = ?1 AND server_uuid = ?2 AND deleted_at IS NULL";
pub(super) const SUBSCRIBED_ENDPOINTS: &str = "SELECT e.uuid, e.url, e.secret FROM webhook_endpoints e \
     WHERE e.server_uuid = ?1 AND EXISTS (SELECT 1 FROM json_each(e.events) WHERE json_each.value = ?2) \
     AND e.deleted_at IS NULL AND e.disabled_at IS NULL ORDER BY e.created_at, e.uuid";
// What an endpoint that answered 410, or was deleted, was still owed: nothing will be sent.
pub(super) const FAIL_OPEN_DELIVERIES: &str = "UPDATE webhook_deliveries SET status = 'failed', \
     next_attempt_at = NULL, updated_at = ?2 WHERE endpoint_uuid = ?1 AND status IN ('pending', 'retrying')";
pub(super) const DISABLE_WEBHOOK_ENDPOINT: &str = "UPDATE webhook_endpoints SET disabled_at = ?3, \
     disabled_reason = ?2 WHERE uuid = ?1 AND disabled_at IS NULL";
/// A delivery a broker worker opens: its first attempt due now and held by that worker.
pub(super) const OPEN_WEBHOOK_DELIVERY: &str = "INSERT INTO webhook_deliveries (server_uuid, endpoint_uuid, \
     event_id, event_type, webhook_id, payload, status, next_attempt_at, handed_over_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?7, ?7) \
     ON CONFLICT (event_id, endpoint_uuid) DO UPDATE SET updated_at = webhook_deliveries.updated_at RETURNING id";
/// A delivery the dispatcher opens: due now and held by nobody.
pub(super) const INSERT_DUE_DELIVERY: &str = "INSERT INTO webhook_deliveries (server_uuid, endpoint_uuid, \
     event_id, event_type, webhook_id, payload, status, next_attempt_at, handed_over_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, NULL, ?7, ?7) ON CONFLICT (event_id, endpoint_uuid) DO NOTHING";
/// Counts the next attempt of a delivery still due one, to a live endpoint, and holds it until
/// ?2; with ?4, only if that is the number of the next attempt. (SQLite's RETURNING cannot name
/// the tables of an UPDATE … FROM, hence the subqueries.)
pub(super) const CLAIM_DELIVERY: &str = "UPDATE webhook_deliveries \
     SET attempts = attempts + 1, next_attempt_at = ?2, handed_over_at = ?3, updated_at = ?3 \
     WHERE id = ?1 AND status IN ('pending', 'retrying') AND (?4 IS NULL OR attempts + 1 = ?4) \
     AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.uuid = webhook_deliveries.endpoint_uuid \
                 AND e.deleted_at IS NULL AND e.disabled_at IS NULL) \
     RETURNING id, webhook_id, payload, attempts, endpoint_uuid, \
     (SELECT e.url FROM webhook_endpoints e WHERE e.uuid = webhook_deliveries.endpoint_uuid) AS url, \
     (SELECT e.secret FROM webhook_endpoints e WHERE e.uuid = webhook_deliveries.endpoint_uuid) AS secret";
/// The deliveries whose next attempt may be claimed at ?1: due and held by nobody, or held and
/// overdue since before ?2 (their worker presumed lost); oldest due first.
pub(super) const DUE_DELIVERIES: &str = "SELECT d.id FROM webhook_deliveries d \
     JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid \
     WHERE d.status IN ('pending', 'retrying') AND d.next_attempt_at <= ?1 \
     AND (d.handed_over_at IS NULL OR d.next_attempt_at < ?2) \
     AND e.deleted_at IS NULL AND e.disabled_at IS NULL ORDER BY d.next_attempt_at LIMIT ?3";
/// The earliest due time of an attempt nobody holds, and of one held.
pub(super) const NEXT_DUE: &str = "SELECT \
     (SELECT min(d.next_attempt_at) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid \
      WHERE d.status IN ('pending', 'retrying') AND d.handed_over_at IS NULL \
      AND e.deleted_at IS NULL AND e.disabled_at IS NULL), \
     (SELECT min(d.next_attempt_at) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid \
      WHERE d.status IN ('pending', 'retrying') AND d.handed_over_at IS NOT NULL \
      AND e.deleted_at IS NULL AND e.disabled_at IS NULL)";
pub(super) const INSERT_ATTEMPT: &str = "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, \
     duration_ms, response_status, error, outcome, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
/// What an attempt left its delivery as, unless a later claim overtook it (`attempts = ?4`).
// An endpoint closed (410, deleted) while the attempt ran failed what it was owed; a failed
// attempt must not put the delivery back to `retrying` for an attempt never made.
pub(super) const SETTLE_DELIVERY: &str = "UPDATE webhook_deliveries SET \
     status = CASE WHEN ?2 = 'retrying' AND NOT (SELECT e.deleted_at IS NULL AND e.disabled_at IS NULL \
         FROM webhook_endpoints e WHERE e.uuid = webhook_deliveries.endpoint_uuid) THEN 'failed' ELSE ?2 END, \
     next_attempt_at = CASE WHEN (SELECT e.deleted_at IS NULL AND e.disabled_at IS NULL FROM webhook_endpoints e \
         WHERE e.uuid = webhook_deliveries.endpoint_uuid) THEN ?3 END, \
     handed_over_at = CASE WHEN (SELECT e.deleted_at IS NULL AND e.disabled_at IS NULL FROM webhook_endpoints e \
         WHERE e.uuid = webhook_deliveries.endpoint_uuid) THEN ?5 END, \
     updated_at = ?6 WHERE id = ?1 AND attempts = ?4";
pub(super) const DELIVERY_STATUS: &str = "SELECT d.status, \
     (e.deleted_at IS NULL AND e.disabled_at IS NULL) AS endpoint_open \
     FROM webhook_deliveries d JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid WHERE d.id = ?1 AND d.server_uuid = ?2";
pub(super) const REQUEUE_DELIVERY: &str = "UPDATE webhook_deliveries SET status = 'retrying', next_attempt_at = ?2, \
     handed_over_at = NULL, updated_at = ?2 WHERE id = ?1";
pub(super) const LIST_WEBHOOK_ATTEMPTS: &str = "SELECT d.id AS delivery_id, d.event_id, d.event_type, \
     d.webhook_id, d.endpoint_uuid, a.attempt, a.response_status, a.error, a.duration_ms, a.attempted_at, \
     a.next_attempt_at, a.outcome, d.status AS delivery_status \
     FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
     WHERE d.server_uuid = ?1 AND (?2 IS NULL OR d.endpoint_uuid = ?2) AND (?3 IS NULL OR d.status = ?3) \
     ORDER BY a.id DESC LIMIT ?4";
pub(super) const WEBHOOK_ENDPOINT_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE uuid = ?1 AND server_uuid = ?2)";
pub(super) const LOCKED_CREDENTIAL: &str = "SELECT c.id, c.uuid, c.name, c.type AS credential_type, c.hold, \
     s.uuid AS server_uuid, s.name AS server_name FROM credentials c JOIN servers s ON s.uuid = c.server_uuid \
     WHERE c.uuid = ?1";

/// The dispatcher's checkpoint, created on first use: where a relay to RabbitMQ stopped, if one
/// ran on this ledger (so switching from RabbitMQ does not send history again), else the start.
pub(super) const SEED_DISPATCH_CHECKPOINT: &str = "INSERT INTO relay_checkpoints (exchange, position, updated_at) \
     VALUES (?1, COALESCE((SELECT max(position) FROM relay_checkpoints WHERE exchange NOT LIKE 'in-process:%'), 0), \
     ?2) ON CONFLICT (exchange) DO NOTHING";
pub(super) const DISPATCH_CHECKPOINT: &str = "SELECT position FROM relay_checkpoints WHERE exchange = ?1";
/// Compare-and-set: moves the checkpoint only from where this dispatcher read it.
pub(super) const ADVANCE_DISPATCH_CHECKPOINT: &str = "UPDATE relay_checkpoints SET position = ?3, updated_at = ?4 \
     WHERE exchange = ?1 AND position = ?2";
