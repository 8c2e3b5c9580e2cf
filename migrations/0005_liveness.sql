-- Liveness that survives database restarts: a heartbeat beside the instance's advisory lock, so a
-- sweep declares a process dead only when its lock is free AND it has not beaten for a grace period.

ALTER TABLE etl.instances ADD COLUMN heartbeat_at timestamptz NOT NULL DEFAULT now();
COMMENT ON COLUMN etl.instances.heartbeat_at IS 'Last time the live process confirmed it holds its liveness lock (every few seconds). A process is taken for dead only when its lock is free and this is older than the grace period, counted from the database''s own start at the earliest.';
COMMENT ON COLUMN etl.instances.lock_key IS 'Second key of the session advisory lock the live process holds (re-taken on a fresh connection after a database restart); a free lock with a stale heartbeat_at means the process is gone.';
COMMENT ON COLUMN etl.instances.stopped_at IS 'When the process stopped cleanly, or when a sweep found it gone (lock free, heartbeat stale); NULL while it lives.';
