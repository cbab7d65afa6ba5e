-- One row that the health check rewrites: a commit that must reach the
-- disk, so a full or failing disk shows in the health check, not only in
-- the requests that fail.
CREATE TABLE heartbeat (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  INTEGER NOT NULL
);
