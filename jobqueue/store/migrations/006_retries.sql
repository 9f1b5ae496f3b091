-- Runs ended before a retry: retry() puts a failed, cancelled or stopped job back to
-- pending under the same id, and first copies how its last run ended here, so that
-- run's error stays readable after the new run has overwritten the job's own fields.
CREATE TABLE retries (
    job_id        TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,   -- 1 for the first retry of the job, then 2, ...
    attempt       INTEGER NOT NULL,   -- the job's stored attempt when that run ended
    status        TEXT    NOT NULL,   -- failed, cancelled or stopped
    reason        TEXT,
    error_message TEXT,
    error_type    TEXT,
    traceback     TEXT,
    started_at    REAL,
    completed_at  REAL,
    retried_at    REAL    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
