-- The public ids of services that were taken apart (terminated, failed
-- orders, removed by an operator). An id is never given to another service
-- of the same account and mode: a client that kept it must not act on a
-- new machine.
CREATE TABLE retired_service_ids (
    account_id  BIGINT  NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    service_id  TEXT    NOT NULL,
    retired_at  BIGINT  NOT NULL,
    PRIMARY KEY (account_id, mode, service_id)
);
-- Live ids are drawn at random and kept unique across accounts.
CREATE INDEX retired_service_ids_id ON retired_service_ids (service_id);
