-- Who holds the next attempt of a delivery. `next_attempt_at` is when that attempt is due;
-- `handed_over_at` is when it was last handed to the broker (a queued attempt message) or to a
-- worker (a claim), NULL while nobody holds it (a retry asked for through the API). The webhook
-- workers' sweep hands due attempts nobody holds to the broker, and hands over again any attempt
-- still not made long after it was due (its message or its worker presumed lost).
ALTER TABLE webhook_deliveries ADD COLUMN handed_over_at timestamptz;

-- Deliveries still under way were handed over when last touched: a message or a worker has them,
-- and the sweep takes them back only if they stay overdue.
UPDATE webhook_deliveries
   SET handed_over_at = updated_at, next_attempt_at = COALESCE(next_attempt_at, updated_at)
 WHERE status IN ('pending', 'retrying');

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
