-- A job is recorded (with its charge) in one transaction and enqueued after the commit.
-- enqueue_after is set when the job is recorded and cleared once the queue has it: the
-- control plane enqueues any pending job whose enqueue_after has passed (a crash between the
-- commit and the enqueue, or a queue that was unreachable), so no recorded job waits forever.
ALTER TABLE jobs ADD COLUMN enqueue_after BIGINT;
CREATE INDEX jobs_to_enqueue ON jobs (enqueue_after) WHERE enqueue_after IS NOT NULL;
