-- Instances read each other's recent usage to keep their in-memory `last_used_at` current.
CREATE INDEX credential_usage_by_time ON credential_usage (last_used_at);
