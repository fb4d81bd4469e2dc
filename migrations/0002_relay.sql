-- How far the relay has published the log to each exchange. The log is the outbox: the relay
-- moves a checkpoint only past events the broker confirmed.
CREATE TABLE relay_checkpoints (
    exchange   text PRIMARY KEY,
    position   bigint NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
