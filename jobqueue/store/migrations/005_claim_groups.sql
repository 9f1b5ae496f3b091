-- The claim reads pending jobs one (priority, started) group of `jobs_pending`
-- at a time, each group a range that ends at its first job not yet due, so
-- delayed jobs are never scanned; the next delayed job and the due counts
-- come from the same ranges. `jobs_pending_run_at` has no reader left: every
-- insert and every claim paid for keeping it.
DROP INDEX IF EXISTS jobs_pending_run_at;
