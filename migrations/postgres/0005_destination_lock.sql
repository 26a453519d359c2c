-- Copies to a caller's bucket are claimed with a lock, so one interrupted by a crash is
-- taken up again by any replica once the lock lapses.
ALTER TABLE jobs ADD COLUMN destination_locked_until BIGINT;
CREATE INDEX jobs_owed_delivery ON jobs (id) WHERE destination IS NOT NULL AND destination_status IS NULL;
