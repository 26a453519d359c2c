-- A title in chunks: where its chunks stand while it encodes (JSON: total, done, running,
-- queued, failed), from the node's progress; the finished job's report holds the final counts.
ALTER TABLE jobs ADD COLUMN chunks_live TEXT;
