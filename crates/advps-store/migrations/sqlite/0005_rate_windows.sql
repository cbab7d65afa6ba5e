-- Rate-limit windows kept in the database, for deployments where several
-- server processes must share one quota per key.
CREATE TABLE rate_windows (
    key_id     TEXT    PRIMARY KEY,
    opened_at  INTEGER NOT NULL,
    count      INTEGER NOT NULL
);
