-- libvirt nodes (KVM/QEMU hosts reached through a libvirt connection URI)
-- beside LXD and Proxmox VE. SQLite cannot change a CHECK constraint in
-- place, so the table is made again with the wider one and its rows copied
-- (no other table refers to nodes by key: services and instances name their
-- node).
CREATE TABLE nodes_libvirt (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    driver           TEXT    NOT NULL CHECK (driver IN ('lxd', 'proxmox', 'libvirt')),
    endpoint         TEXT    NOT NULL,
    -- Secrets (client keys, tokens) as JSON, encrypted by the server's key.
    credentials_enc  TEXT,
    created_at       INTEGER NOT NULL
);
INSERT INTO nodes_libvirt (id, name, driver, endpoint, credentials_enc, created_at)
    SELECT id, name, driver, endpoint, credentials_enc, created_at FROM nodes;
DROP TABLE nodes;
ALTER TABLE nodes_libvirt RENAME TO nodes;
