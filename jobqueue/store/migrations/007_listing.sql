-- The dashboard's job list (store/listing.py) pages newest first with a
-- filter on status and handler. This index ends in the rowid (seq), so a
-- page of one handler and status is a range read in seq order at any table
-- size; the counts by handler and status are a scan of the index alone.
-- It indexes expressions, not the columns, so that only the listing's
-- statements (which name these expressions) can use it: on status =
-- 'pending' the claim's plans would otherwise pick it and sort every pending
-- job. Pending jobs are left out: a submit writes no entry here, and the
-- claim's own index already serves them.
CREATE INDEX jobs_list ON jobs (ifnull(handler, ''), (status || '')) WHERE status <> 'pending';
