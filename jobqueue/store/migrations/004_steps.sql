-- Durable workflows: one row per step of a job, and a claim order
-- that runs started jobs before new ones.

-- A step's state and its stored JSON result. `seq` is the order in which the
-- job first reached the step. A durable sleep is a step of kind 'sleep' whose
-- `wake_at` is its deadline, written once, on the first call.
CREATE TABLE steps (
    job_id       TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL DEFAULT 'step',   -- 'step' or 'sleep'
    status       TEXT    NOT NULL,                  -- pending, running, sleeping, completed, failed
    result       TEXT,                              -- JSON, once completed
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    started_at   REAL,
    completed_at REAL,
    wake_at      REAL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;

-- Claim order: highest priority first; within a priority, jobs that already
-- started (workflows back from a durable sleep, retries, crash recoveries)
-- before new ones; then earliest run_at, then FIFO.
DROP INDEX jobs_pending;
CREATE INDEX jobs_pending ON jobs (priority DESC, (started_at IS NOT NULL) DESC, run_at, seq)
    WHERE status = 'pending';
