-- The credential view: one row per credential, the fold of its stream with domain::apply.
-- Disposable: `credential-ledger projections rebuild` drops it and replays the log, and a change
-- to this file is rebuilt automatically at start. A rebuild creates the bare table, loads it,
-- and only then runs the part after the line `-- indexes`: building an index over loaded rows
-- is much cheaper than maintaining it row by row.
CREATE TABLE credentials (
    id          bigint NOT NULL,
    uuid        uuid NOT NULL,
    server_uuid uuid NOT NULL,
    name        text NOT NULL,
    type        text NOT NULL CHECK (type IN ('SMTP', 'API')),
    hold        boolean NOT NULL,
    key_hash    bytea NOT NULL,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL,
    locked_at   timestamptz,
    -- The deadline (expiry or end of a grace period), and the rotation's replacement.
    expires_at  timestamptz,
    replaced_by uuid,
    version     integer NOT NULL
);

-- indexes
ALTER TABLE credentials
    ADD PRIMARY KEY (id),
    ADD UNIQUE (uuid),
    ADD UNIQUE (key_hash);

CREATE INDEX credentials_by_server ON credentials (server_uuid, id);
