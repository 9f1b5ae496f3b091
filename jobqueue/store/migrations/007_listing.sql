-- The dashboard's job list (store/listing.py) pages newest first with a
-- filter on status and handler. Both indexes end in the rowid (seq), so a
-- page of one status, or of one handler and status, is a range read in seq
-- order at any table size; a handler alone is read one status at a time.
-- The counts by status and handler are scans of the second index alone.
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_handler_status ON jobs (handler, status);
