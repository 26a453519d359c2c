-- The whole API: per-account webhook secrets, credits and quotas; per-key rate limits;
-- batches, uploads, cancellation, expiring outputs, destinations and webhook deliveries.
-- Timestamps are ms since the Unix epoch.
ALTER TABLE accounts ADD COLUMN webhook_secret TEXT;
ALTER TABLE accounts ADD COLUMN credits INTEGER;
ALTER TABLE accounts ADD COLUMN monthly_job_quota INTEGER;

ALTER TABLE api_keys ADD COLUMN rate_submit INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_read INTEGER;

ALTER TABLE jobs ADD COLUMN batch_id TEXT;
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;
ALTER TABLE jobs ADD COLUMN webhook_progress INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN progress_notified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN destination TEXT;
ALTER TABLE jobs ADD COLUMN destination_status TEXT;
ALTER TABLE jobs ADD COLUMN destination_error TEXT;
ALTER TABLE jobs ADD COLUMN credits_charged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN credits_refunded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN expires_at INTEGER;
ALTER TABLE jobs ADD COLUMN swept_at INTEGER;
ALTER TABLE jobs ADD COLUMN encode_ms INTEGER;
ALTER TABLE jobs ADD COLUMN gpu INTEGER;
CREATE INDEX jobs_batch ON jobs (batch_id);
-- Partial: only what the retention sweeper still has to look at.
CREATE INDEX jobs_to_sweep ON jobs (expires_at) WHERE swept_at IS NULL;
CREATE INDEX jobs_source ON jobs (source_key);
CREATE INDEX jobs_account_id ON jobs (account_id, id);

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    archive     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    object_key  TEXT NOT NULL,
    filename    TEXT,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    swept_at    INTEGER
);
CREATE INDEX uploads_to_sweep ON uploads (expires_at) WHERE swept_at IS NULL;

CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    job_id            TEXT NOT NULL REFERENCES jobs(id),
    account_id        TEXT NOT NULL REFERENCES accounts(id),
    url               TEXT NOT NULL,
    event             TEXT NOT NULL,
    payload           TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    locked_until      INTEGER,
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    delivered_at      INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
