-- Console tickets: the single-use secret of a console URL, kept as its
-- SHA-256 digest with who may open it, on which service, and until when.
-- Taking a ticket deletes it, so a URL opens one console at most.
CREATE TABLE console_tickets (
    digest      TEXT    PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    key_id      TEXT    NOT NULL,
    service_pk  INTEGER NOT NULL,
    service_id  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX console_tickets_expiry ON console_tickets (expires_at);
