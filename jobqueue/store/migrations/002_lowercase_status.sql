-- Statuses are lowercase ('running', not 'RUNNING'). Files written with
-- enum names are brought in line here; unknown values are left for `check`.
UPDATE jobs SET status = lower(status)
 WHERE status <> lower(status)
   AND lower(status) IN ('pending', 'running', 'paused', 'completed',
                         'failed', 'cancelled', 'stopped');
