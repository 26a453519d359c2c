-- Kiln's first schema (SQLite, the embedded default). Timestamps are ms since the Unix epoch.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
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
    input_size       INTEGER NOT NULL,
    output_size      INTEGER,
    progress         REAL NOT NULL DEFAULT 0,
    fps              REAL,
    eta_s            REAL,
    output_width     INTEGER,
    output_height    INTEGER,
    output_duration  REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    node_id          TEXT,
    error_code       TEXT,
    error_message    TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    updated_at       INTEGER NOT NULL
);

CREATE INDEX jobs_account_created ON jobs (account_id, created_at);
CREATE INDEX jobs_status ON jobs (status);
