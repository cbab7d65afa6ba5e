-- advps schema, SQLite. Times are Unix milliseconds (INTEGER) so that the
-- same values and comparisons hold on every backend.

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- Only the SHA-256 digest of a key is kept, never the key.
CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    mode          TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    key_hash      TEXT    NOT NULL UNIQUE,
    last4         TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- A service is what a customer owns; sandbox ids repeat across accounts,
-- so the public id is unique per account and mode only.
CREATE TABLE services (
    pk            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    mode          TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    service_id    TEXT    NOT NULL,
    service_type  TEXT    NOT NULL,
    vmid          TEXT    NOT NULL,
    power_state   TEXT    NOT NULL,
    ip            TEXT,
    reserved_ip   TEXT,
    os_slug       TEXT,
    os_name       TEXT,
    started_at    INTEGER,
    password_enc  TEXT,
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (account_id, mode, service_id)
);

CREATE TABLE tasks (
    id           TEXT    PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES accounts (id),
    mode         TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    service_pk   INTEGER NOT NULL REFERENCES services (pk),
    kind         TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    progress     INTEGER NOT NULL DEFAULT 0,
    params       TEXT    NOT NULL DEFAULT '{}',
    prev_state   TEXT,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    due_at       INTEGER,
    finished_at  INTEGER
);
CREATE INDEX tasks_service ON tasks (service_pk, created_at);
CREATE INDEX tasks_open ON tasks (status, due_at);

-- The unit of stock. Sandbox products have mode 'test' and a fixed manual
-- stock; live products are made by operators.
CREATE TABLE products (
    mode                 TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    id                   TEXT    NOT NULL,
    name                 TEXT    NOT NULL,
    pack_name            TEXT    NOT NULL,
    vm_type              TEXT    NOT NULL CHECK (vm_type IN ('VPS', 'LXC')),
    manual_stock         INTEGER,
    low_stock_threshold  INTEGER,
    visible              INTEGER NOT NULL DEFAULT 1,
    created_at           INTEGER NOT NULL,
    PRIMARY KEY (mode, id)
);

-- Machines that exist on a node (inventory). Derived stock of a live product
-- counts its free, healthy instances.
CREATE TABLE instances (
    id          INTEGER PRIMARY KEY,
    node        TEXT    NOT NULL,
    engine_id   TEXT    NOT NULL,
    product_id  TEXT,
    state       TEXT    NOT NULL DEFAULT 'free' CHECK (state IN ('free', 'assigned', 'out_of_service')),
    healthy     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    UNIQUE (node, engine_id)
);
CREATE INDEX instances_stock ON instances (product_id, state, healthy);
