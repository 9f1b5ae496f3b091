-- The jobs table: a job's fields plus scheduling and ownership.
-- Times are Unix seconds (REAL). seq gives FIFO order among equal priorities.
CREATE TABLE jobs (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    session_id      TEXT,
    handler         TEXT,               -- NULL for jobs started from a bare coroutine
    description     TEXT,
    payload         TEXT,               -- JSON
    status          TEXT    NOT NULL,
    result          TEXT,               -- JSON
    error_message   TEXT,
    error_type      TEXT,               -- exception class name of the failure
    traceback       TEXT,
    reason          TEXT,               -- why it failed/ended: timeout, crashed, ...
    report_path     TEXT,
    workspace       TEXT,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    started_at      REAL,
    completed_at    REAL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    max_retries     INTEGER NOT NULL DEFAULT 0,
    priority        INTEGER NOT NULL DEFAULT 0,
    run_at          REAL    NOT NULL,
    timeout         REAL,
    idempotency_key TEXT    UNIQUE,
    owner           TEXT,               -- "pid:process-start-ticks" of the running process
    heartbeat       REAL,
    control         TEXT                -- a control request from another process
);

-- Claim order: highest priority first, then earliest run_at, then FIFO.
CREATE INDEX jobs_pending ON jobs (priority DESC, run_at, seq) WHERE status = 'pending';
CREATE INDEX jobs_pending_run_at ON jobs (run_at) WHERE status = 'pending';
CREATE INDEX jobs_session ON jobs (session_id) WHERE session_id IS NOT NULL;
