-- The event store. This schema only ever grows: read models live in projections/.

-- Tenants. A server owns credentials; its first API credential is issued by `server create`.
CREATE TABLE servers (
    uuid       uuid PRIMARY KEY,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The log: the source of truth. Positions are gap-free because only the writer holding the
-- chain_head row lock assigns them; hash = sha256(prev_hash || canonical bytes of the event).
CREATE TABLE events (
    position       bigint PRIMARY KEY CHECK (position > 0),
    stream_id      uuid NOT NULL,
    stream_version integer NOT NULL CHECK (stream_version > 0),
    event_id       uuid NOT NULL UNIQUE,
    event_type     text NOT NULL,
    schema_version integer NOT NULL,
    server_uuid    uuid NOT NULL,
    payload        jsonb NOT NULL,
    metadata       jsonb NOT NULL,
    recorded_at    timestamptz NOT NULL,
    prev_hash      bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash           bytea NOT NULL CHECK (octet_length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_by_server ON events (server_uuid, position);

CREATE FUNCTION reject_event_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER events_are_immutable
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION reject_event_changes();

CREATE TRIGGER events_are_not_truncated
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_changes();

-- The head of the chain, one row. Every append locks it FOR UPDATE, which orders appends from
-- every instance and lets one transaction (a batch of commands) take the next positions.
CREATE TABLE chain_head (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position           bigint NOT NULL,
    hash               bytea NOT NULL CHECK (octet_length(hash) = 32),
    last_credential_id bigint NOT NULL
);

INSERT INTO chain_head (position, hash, last_credential_id)
VALUES (0, decode(repeat('00', 32), 'hex'), 0);

-- Operational data, not events: when each credential last authenticated.
CREATE TABLE credential_usage (
    credential_uuid uuid PRIMARY KEY,
    last_used_at    timestamptz NOT NULL
);

-- Which version of each projection's schema is built, so a changed schema is rebuilt at start.
CREATE TABLE projection_versions (
    name       text PRIMARY KEY,
    checksum   bytea NOT NULL,
    position   bigint NOT NULL,
    rebuilt_at timestamptz NOT NULL DEFAULT now()
);
