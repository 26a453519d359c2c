-- Dialects: which API a job came in through (NULL: Kiln's native API, Konvrt's included),
-- so lists and webhooks answer in that API's shapes; plans and purchased credits for the
-- usage documents; webhook deliveries signed per scheme (Kiln's, or Convertrilo's managed
-- webhooks); Convertrilo's managed webhook endpoints and saved S3 credentials (the secret
-- sealed with the server's key, never stored or returned in the clear).
ALTER TABLE jobs ADD COLUMN dialect TEXT;
-- What the dialect's client sent that Kiln keeps for it (JSON: externalId, metadata, …).
ALTER TABLE jobs ADD COLUMN dialect_data TEXT;
CREATE INDEX jobs_account_dialect ON jobs (account_id, dialect, id);
ALTER TABLE accounts ADD COLUMN plan TEXT;
ALTER TABLE accounts ADD COLUMN credits_purchased INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries ADD COLUMN scheme TEXT NOT NULL DEFAULT 'kiln';
ALTER TABLE webhook_deliveries ADD COLUMN endpoint_id TEXT;

CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id);

CREATE TABLE s3_credentials (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    name           TEXT NOT NULL,
    access_key_id  TEXT NOT NULL,
    secret_sealed  TEXT NOT NULL,
    region         TEXT,
    endpoint       TEXT,
    created_at     INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

-- Idempotency-Key (Convertrilo's): the first answer to a key is replayed to a retry with the
-- same body for a day; a retry with another body is refused.
CREATE TABLE idempotency_keys (
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    idem_key      TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        INTEGER,
    response      TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (account_id, idem_key)
);
