-- The credential view: one row per credential, the fold of its stream with domain::apply.
-- Disposable: `credential-ledger projections rebuild` drops it and replays the log, and a change
-- to this file is rebuilt automatically at start.
CREATE TABLE credentials (
    id          bigint PRIMARY KEY,
    uuid        uuid NOT NULL UNIQUE,
    server_uuid uuid NOT NULL,
    name        text NOT NULL,
    type        text NOT NULL CHECK (type IN ('SMTP', 'API')),
    hold        boolean NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL,
    locked_at   timestamptz,
    version     integer NOT NULL
);

CREATE INDEX credentials_by_server ON credentials (server_uuid, id);
