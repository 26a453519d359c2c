-- Fleet mode: the codec of each job, for the jobs-by-state-and-codec metric.
ALTER TABLE jobs ADD COLUMN codec TEXT;
