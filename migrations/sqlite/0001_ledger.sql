-- The embedded ledger's event store: the same tables as PostgreSQL's migrations, in SQLite's
-- types. Uuids are 16-byte blobs, hashes 32-byte blobs, JSON is text, and every time is the
-- 27-character text `YYYY-MM-DDTHH:MM:SS.ffffffZ`: the exact string the hash chain covers, and
-- one that sorts as the time does.

CREATE TABLE servers (
    uuid       BLOB PRIMARY KEY CHECK (length(uuid) = 16),
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    created_at TEXT NOT NULL CHECK (length(created_at) = 27)
);

CREATE TABLE events (
    position       INTEGER PRIMARY KEY CHECK (position > 0),
    stream_id      BLOB NOT NULL CHECK (length(stream_id) = 16),
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    event_id       BLOB NOT NULL UNIQUE CHECK (length(event_id) = 16),
    event_type     TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    server_uuid    BLOB NOT NULL CHECK (length(server_uuid) = 16),
    payload        TEXT NOT NULL CHECK (json_valid(payload)),
    metadata       TEXT NOT NULL CHECK (json_valid(metadata)),
    recorded_at    TEXT NOT NULL CHECK (length(recorded_at) = 27),
    prev_hash      BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash           BLOB NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_by_stream ON events (stream_id, position);
CREATE INDEX events_by_server ON events (server_uuid, position);

-- The log is append-only, enforced by the database (a DELETE without WHERE fires these too).
CREATE TRIGGER events_are_not_updated BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: UPDATE on events is not allowed');
END;

CREATE TRIGGER events_are_not_deleted BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: DELETE on events is not allowed');
END;

-- The head of the chain, one row, moved by every append inside its write transaction.
CREATE TABLE chain_head (
    singleton          INTEGER PRIMARY KEY CHECK (singleton = 1),
    position           INTEGER NOT NULL,
    hash               BLOB NOT NULL CHECK (length(hash) = 32),
    last_credential_id INTEGER NOT NULL,
    recorded_at        TEXT CHECK (recorded_at IS NULL OR length(recorded_at) = 27)
);

INSERT INTO chain_head (singleton, position, hash, last_credential_id, recorded_at)
VALUES (1, 0, zeroblob(32), 0, NULL);

CREATE TABLE credential_usage (
    credential_uuid BLOB PRIMARY KEY CHECK (length(credential_uuid) = 16),
    last_used_at    TEXT NOT NULL CHECK (length(last_used_at) = 27)
);

CREATE TABLE projection_versions (
    name       TEXT PRIMARY KEY,
    checksum   BLOB NOT NULL,
    position   INTEGER NOT NULL,
    rebuilt_at TEXT NOT NULL
);

CREATE TABLE relay_checkpoints (
    exchange   TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
