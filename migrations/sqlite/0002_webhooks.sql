-- Webhook endpoints, their deliveries and every attempt: PostgreSQL's migrations 0003 and 0006
-- in SQLite's types (uuids as 16-byte blobs, times as the 27-character text of 0001). Operational
-- data, not events. Without RabbitMQ, `webhook_deliveries` is also the work queue: a delivery is
-- due at `next_attempt_at`, and `handed_over_at` says a worker holds its attempt.

CREATE TABLE webhook_endpoints (
    uuid            BLOB PRIMARY KEY CHECK (length(uuid) = 16),
    server_uuid     BLOB NOT NULL REFERENCES servers (uuid),
    url             TEXT NOT NULL,
    -- A JSON array of event types (PostgreSQL: text[]).
    events          TEXT NOT NULL CHECK (json_valid(events) AND json_array_length(events) > 0),
    description     TEXT,
    -- The signing secret must be usable for HMAC, so it is stored as issued (whsec_…).
    secret          TEXT NOT NULL,
    created_at      TEXT NOT NULL CHECK (length(created_at) = 27),
    disabled_at     TEXT CHECK (disabled_at IS NULL OR length(disabled_at) = 27),
    disabled_reason TEXT,
    deleted_at      TEXT CHECK (deleted_at IS NULL OR length(deleted_at) = 27)
);

CREATE INDEX webhook_endpoints_by_server ON webhook_endpoints (server_uuid) WHERE deleted_at IS NULL;

-- One event to one endpoint. `payload` is the exact body, so every attempt signs the same bytes.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    server_uuid     BLOB NOT NULL CHECK (length(server_uuid) = 16),
    endpoint_uuid   BLOB NOT NULL REFERENCES webhook_endpoints (uuid),
    event_id        BLOB NOT NULL CHECK (length(event_id) = 16),
    event_type      TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'retrying', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT CHECK (next_attempt_at IS NULL OR length(next_attempt_at) = 27),
    handed_over_at  TEXT CHECK (handed_over_at IS NULL OR length(handed_over_at) = 27),
    created_at      TEXT NOT NULL CHECK (length(created_at) = 27),
    updated_at      TEXT NOT NULL CHECK (length(updated_at) = 27),
    UNIQUE (event_id, endpoint_uuid)
);

CREATE INDEX webhook_deliveries_by_server ON webhook_deliveries (server_uuid, id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');

CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY,
    delivery_id     INTEGER NOT NULL REFERENCES webhook_deliveries (id),
    attempt         INTEGER NOT NULL CHECK (attempt > 0),
    attempted_at    TEXT NOT NULL CHECK (length(attempted_at) = 27),
    duration_ms     INTEGER NOT NULL,
    response_status INTEGER,
    error           TEXT,
    -- What this attempt left the delivery as.
    outcome         TEXT NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    next_attempt_at TEXT CHECK (next_attempt_at IS NULL OR length(next_attempt_at) = 27),
    UNIQUE (delivery_id, attempt)
);

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempt);
