-- Selling services: product sizes and prices, the wallet ledger, orders,
-- and what services carry for renewal, expiry and MAC resets.

-- Each RAM size of a product, with its price per 30 days in minor units.
CREATE TABLE product_sizes (
    mode         TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    product_id   TEXT    NOT NULL,
    ram_mb       INTEGER NOT NULL CHECK (ram_mb > 0),
    price_minor  INTEGER NOT NULL CHECK (price_minor >= 0),
    currency     TEXT    NOT NULL,
    PRIMARY KEY (mode, product_id, ram_mb)
);

ALTER TABLE products ADD COLUMN default_os TEXT;

-- Every change of a wallet; the balance is their sum, so money is never
-- lost or invented.
CREATE TABLE ledger_entries (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    mode          TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    amount_minor  INTEGER NOT NULL,
    currency      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('credit', 'purchase', 'renewal', 'refund')),
    reference     TEXT,
    note          TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX ledger_account ON ledger_entries (account_id, mode);

CREATE TABLE orders (
    id            TEXT    PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    mode          TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    product_id    TEXT    NOT NULL,
    ram_mb        INTEGER NOT NULL,
    os_slug       TEXT    NOT NULL,
    os_name       TEXT    NOT NULL,
    quantity      INTEGER NOT NULL,
    validity_days INTEGER NOT NULL,
    amount_minor  INTEGER NOT NULL,
    currency      TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    remark        TEXT,
    customer_name TEXT,
    customer_email TEXT,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX orders_account ON orders (account_id, mode, created_at);

-- Order numbers are a sequence per type and day (VPS040426-0008).
CREATE TABLE order_counters (
    day_key  TEXT    PRIMARY KEY,
    last     INTEGER NOT NULL
);

ALTER TABLE services ADD COLUMN order_id TEXT REFERENCES orders (id);
ALTER TABLE services ADD COLUMN product_id TEXT;
ALTER TABLE services ADD COLUMN ram_mb INTEGER;
ALTER TABLE services ADD COLUMN username TEXT;
ALTER TABLE services ADD COLUMN last_mac_reset INTEGER;
ALTER TABLE services ADD COLUMN mac TEXT;
CREATE INDEX services_order ON services (order_id);
CREATE INDEX services_expiry ON services (expires_at);
