-- Rate-limit windows kept in the database, for deployments where several
-- server processes must share one quota per key. A hit is one
-- INSERT ... ON CONFLICT DO UPDATE, which takes the key's row lock, so
-- concurrent hits through any instance are counted one after the other.
CREATE TABLE rate_windows (
    key_id     TEXT    PRIMARY KEY,
    opened_at  BIGINT  NOT NULL,
    count      BIGINT  NOT NULL
);
