-- Lifecycle control, crash recovery, concurrency keys and the persisted event log.

-- At most `concurrency_limit` running jobs share one `concurrency_key`
-- (e.g. one per user or per browser profile), across every process on the file.
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN concurrency_limit INTEGER;

-- The crash sweep looks up running jobs by owner; the claim counts running jobs per key.
CREATE INDEX jobs_running_owner ON jobs (owner) WHERE status = 'running';
CREATE INDEX jobs_running_key ON jobs (concurrency_key)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;
-- Control requests (cancel/stop/pause/resume) waiting for their owner or a claim.
CREATE INDEX jobs_control ON jobs (owner) WHERE control IS NOT NULL;

-- One row per process that opened the file: its identity and last heartbeat.
CREATE TABLE owners (
    owner       TEXT PRIMARY KEY,   -- "pid:process-start-ticks"
    pid         INTEGER NOT NULL,
    started_at  REAL    NOT NULL,
    heartbeat   REAL    NOT NULL
);

-- The opt-in persisted event log: per-job monotonic sequence numbers, so a
-- consumer can resume after the last event id it saw.
CREATE TABLE events (
    job_id      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL,   -- JSON
    created_at  REAL    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
