-- Live mode: hypervisor nodes, OS images, IP pools, services bound to
-- inventory instances, and resumable tasks claimed with leases.

CREATE TABLE nodes (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    driver           TEXT    NOT NULL CHECK (driver IN ('lxd', 'proxmox')),
    endpoint         TEXT    NOT NULL,
    -- Secrets (client keys, tokens) as JSON, encrypted by the server's key.
    credentials_enc  TEXT,
    created_at       INTEGER NOT NULL
);

ALTER TABLE instances ADD COLUMN kind TEXT NOT NULL DEFAULT 'container';
ALTER TABLE instances ADD COLUMN memory_mb INTEGER;
ALTER TABLE instances ADD COLUMN engine_state TEXT;
ALTER TABLE instances ADD COLUMN updated_at INTEGER;

-- An OS a service can be rebuilt to: its slug maps to an engine image,
-- on one node or (node = '') on every node.
CREATE TABLE os_images (
    id          INTEGER PRIMARY KEY,
    slug        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    os_type     TEXT    NOT NULL CHECK (os_type IN ('lxc', 'vps')),
    image       TEXT    NOT NULL,
    node        TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    UNIQUE (slug, os_type, node)
);

CREATE TABLE ip_pools (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    cidr        TEXT    NOT NULL,
    prefix      INTEGER NOT NULL,
    gateway     TEXT    NOT NULL,
    node        TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

-- One row per usable address; service_pk is set while a service holds it.
CREATE TABLE ip_addresses (
    id           INTEGER PRIMARY KEY,
    pool_id      INTEGER NOT NULL REFERENCES ip_pools (id),
    address      TEXT    NOT NULL UNIQUE,
    service_pk   INTEGER REFERENCES services (pk),
    assigned_at  INTEGER
);
CREATE INDEX ip_addresses_free ON ip_addresses (pool_id, service_pk);
CREATE INDEX ip_addresses_service ON ip_addresses (service_pk);

ALTER TABLE services ADD COLUMN node TEXT;
ALTER TABLE services ADD COLUMN instance_id INTEGER REFERENCES instances (id);
-- A short lock held while a synchronous engine call (start, stop, ...) runs.
ALTER TABLE services ADD COLUMN op_lock TEXT;
ALTER TABLE services ADD COLUMN op_lock_until INTEGER;

ALTER TABLE tasks ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN scratch TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_until INTEGER;
ALTER TABLE tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_claim ON tasks (mode, status, lease_until);
