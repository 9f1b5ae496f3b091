-- Statuses are lowercase ('running', not 'RUNNING'), as VibeSurf's
-- v003_fix_task_status_case.sql fixed for its tasks table. Files written with
-- enum names are brought in line here; unknown values are left for `check`.
UPDATE jobs SET status = lower(status)
 WHERE status <> lower(status)
   AND lower(status) IN ('pending', 'running', 'paused', 'completed',
                         'failed', 'cancelled', 'stopped');
