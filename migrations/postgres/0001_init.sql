-- Kiln's first schema (Postgres, fleet mode). Timestamps are ms since the Unix epoch.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    spec             TEXT NOT NULL,
    source_key       TEXT NOT NULL,
    output_key       TEXT NOT NULL,
    input_name       TEXT,
    input_size       BIGINT NOT NULL,
    output_size      BIGINT,
    progress         DOUBLE PRECISION NOT NULL DEFAULT 0,
    fps              DOUBLE PRECISION,
    eta_s            DOUBLE PRECISION,
    output_width     BIGINT,
    output_height    BIGINT,
    output_duration  DOUBLE PRECISION,
    attempts         BIGINT NOT NULL DEFAULT 0,
    node_id          TEXT,
    error_code       TEXT,
    error_message    TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    updated_at       BIGINT NOT NULL
);

CREATE INDEX jobs_account_created ON jobs (account_id, created_at);
CREATE INDEX jobs_status ON jobs (status);
