-- The credential view of the embedded ledger, as projections/credentials.sql is PostgreSQL's:
-- one row per credential, the fold of its stream with domain::apply, rebuilt from the log when
-- this file changes. A rebuild loads the bare table, then runs the part after `-- indexes`.
CREATE TABLE credentials (
    id          INTEGER PRIMARY KEY,
    uuid        BLOB NOT NULL CHECK (length(uuid) = 16),
    server_uuid BLOB NOT NULL CHECK (length(server_uuid) = 16),
    name        TEXT NOT NULL,
    type        TEXT NOT NULL CHECK (type IN ('SMTP', 'API')),
    hold        INTEGER NOT NULL CHECK (hold IN (0, 1)),
    key_hash    BLOB NOT NULL CHECK (length(key_hash) = 32),
    key_prefix  TEXT NOT NULL,
    created_at  TEXT NOT NULL CHECK (length(created_at) = 27),
    locked_at   TEXT CHECK (locked_at IS NULL OR length(locked_at) = 27),
    -- The deadline (expiry or end of a grace period), and the rotation's replacement.
    expires_at  TEXT CHECK (expires_at IS NULL OR length(expires_at) = 27),
    replaced_by BLOB CHECK (replaced_by IS NULL OR length(replaced_by) = 16),
    version     INTEGER NOT NULL
);

-- indexes
CREATE UNIQUE INDEX credentials_uuid ON credentials (uuid);
CREATE UNIQUE INDEX credentials_key_hash ON credentials (key_hash);
CREATE INDEX credentials_by_server ON credentials (server_uuid, id);
