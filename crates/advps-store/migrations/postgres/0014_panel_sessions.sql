-- Sessions of the customer panel: a browser signs in with an API key once
-- and then holds only a cookie. The cookie's token is kept as its SHA-256
-- digest, bound to the key it was made with (so revoking the key ends it),
-- with the token the page must echo on every change (CSRF) and when the
-- session was last used (it ends after the configured idle time).
CREATE TABLE panel_sessions (
    digest        TEXT    PRIMARY KEY,
    key_id        TEXT    NOT NULL REFERENCES api_keys (id),
    account_id    BIGINT  NOT NULL REFERENCES accounts (id),
    mode          TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    csrf_token    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_seen_at  BIGINT  NOT NULL
);
CREATE INDEX panel_sessions_last_seen ON panel_sessions (last_seen_at);
