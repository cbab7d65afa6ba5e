-- Safe retries and pushed events: stored responses for Idempotency-Key,
-- an outbox of events written in the same transaction as the change they
-- describe, webhook endpoints with their delivery log, and the audit log.

CREATE TABLE idempotency_records (
    key_id       TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    -- SHA-256 of method, path and body: the same key with another request is refused.
    fingerprint  TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('in_flight', 'done')),
    status       INTEGER,
    body         TEXT,
    content_type TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_expiry ON idempotency_records (expires_at);

-- account_id NULL: an event for every account of the mode (live stock).
CREATE TABLE events (
    id           TEXT    PRIMARY KEY,
    account_id   INTEGER,
    mode         TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    event_type   TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    fanned_out   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_pending ON events (fanned_out, created_at);

CREATE TABLE webhook_endpoints (
    id                   TEXT    PRIMARY KEY,
    account_id           INTEGER NOT NULL REFERENCES accounts (id),
    mode                 TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    url                  TEXT    NOT NULL,
    description          TEXT,
    -- JSON array of event types; empty means every type.
    events               TEXT    NOT NULL DEFAULT '[]',
    secret_enc           TEXT    NOT NULL,
    previous_secret_enc  TEXT,
    previous_until       INTEGER,
    created_at           INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, mode);

CREATE TABLE webhook_deliveries (
    id               TEXT    PRIMARY KEY,
    endpoint_id      TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE audit_entries (
    id               INTEGER PRIMARY KEY,
    at               INTEGER NOT NULL,
    account_id       INTEGER,
    key_id           TEXT,
    mode             TEXT,
    method           TEXT    NOT NULL,
    path             TEXT    NOT NULL,
    service_id       TEXT,
    status           INTEGER NOT NULL,
    request_id       TEXT    NOT NULL,
    idempotency_key  TEXT,
    task_id          TEXT,
    order_id         TEXT,
    source           TEXT
);
CREATE INDEX audit_account ON audit_entries (account_id, mode, at);
CREATE INDEX audit_service ON audit_entries (account_id, mode, service_id, at);
