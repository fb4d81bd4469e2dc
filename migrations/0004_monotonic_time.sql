-- The time of the last append, so that recorded_at never goes backwards along the log even if
-- the clock does: "the ledger as of T" is then always a prefix of the log.
ALTER TABLE chain_head ADD COLUMN recorded_at timestamptz;

UPDATE chain_head SET recorded_at = (SELECT max(recorded_at) FROM events);
