-- How each output was made (encoder, passes, fallbacks, size guard): JSON from the node.
ALTER TABLE jobs ADD COLUMN report TEXT;
