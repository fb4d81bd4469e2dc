-- Webhook endpoints, their deliveries and every attempt. Operational data, not events.

CREATE TABLE webhook_endpoints (
    uuid            uuid PRIMARY KEY,
    server_uuid     uuid NOT NULL REFERENCES servers (uuid),
    url             text NOT NULL,
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    description     text,
    -- The signing secret must be usable for HMAC, so it is stored as issued (whsec_…).
    secret          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz,
    disabled_reason text,
    deleted_at      timestamptz
);

CREATE INDEX webhook_endpoints_by_server ON webhook_endpoints (server_uuid) WHERE deleted_at IS NULL;

-- One event to one endpoint. `payload` is the exact body, so every attempt signs the same bytes.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    server_uuid     uuid NOT NULL,
    endpoint_uuid   uuid NOT NULL REFERENCES webhook_endpoints (uuid),
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    webhook_id      text NOT NULL,
    payload         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'retrying', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_uuid)
);

CREATE INDEX webhook_deliveries_by_server ON webhook_deliveries (server_uuid, id);

CREATE TABLE webhook_attempts (
    id              bigserial PRIMARY KEY,
    delivery_id     bigint NOT NULL REFERENCES webhook_deliveries (id),
    attempt         integer NOT NULL CHECK (attempt > 0),
    attempted_at    timestamptz NOT NULL,
    duration_ms     integer NOT NULL,
    response_status integer,
    error           text,
    -- What this attempt left the delivery as.
    outcome         text NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    next_attempt_at timestamptz,
    UNIQUE (delivery_id, attempt)
);

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempt);
