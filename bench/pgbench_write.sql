-- The PostgreSQL ceiling: the naive version of one write, one transaction per command (insert
-- the event, upsert the view row), on tables shaped like ours.
\set n random(1, 1000000000)
BEGIN;
INSERT INTO bench_events (stream_id, event_type, payload, recorded_at)
VALUES (gen_random_uuid(), 'CredentialCreated', jsonb_build_object('name', 'bench ' || :n, 'type', 'API'), now());
INSERT INTO bench_view (uuid, name, hold) VALUES (gen_random_uuid(), 'bench ' || :n, false)
ON CONFLICT (uuid) DO UPDATE SET hold = EXCLUDED.hold;
COMMIT;
