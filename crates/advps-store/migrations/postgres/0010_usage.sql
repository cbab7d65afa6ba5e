-- Usage history of services: the measured samples at full resolution for a
-- day, then averages per 5 minutes and per hour (tier 0, 1, 2), each tier
-- pruned at its own age, so what one service keeps is bounded. A bucket
-- keeps sums and counts so that a sample adds to it in one upsert; a
-- figure the engine could not give adds nothing to its count.
-- No foreign key on the service: samples are deleted with their service.
CREATE TABLE usage_samples (
    service_pk  BIGINT  NOT NULL,
    tier        BIGINT  NOT NULL,
    at          BIGINT  NOT NULL,
    cpu_sum     BIGINT  NOT NULL DEFAULT 0,
    cpu_n       BIGINT  NOT NULL DEFAULT 0,
    mem_sum     BIGINT  NOT NULL DEFAULT 0,
    mem_n       BIGINT  NOT NULL DEFAULT 0,
    disk_sum    BIGINT  NOT NULL DEFAULT 0,
    disk_n      BIGINT  NOT NULL DEFAULT 0,
    in_sum      BIGINT  NOT NULL DEFAULT 0,
    out_sum     BIGINT  NOT NULL DEFAULT 0,
    net_n       BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (service_pk, tier, at)
);
CREATE INDEX usage_samples_age ON usage_samples (tier, at);

-- The cumulative counters last read from each service, so that CPU percent
-- and byte rates come from two readings.
CREATE TABLE usage_counters (
    service_pk  BIGINT  PRIMARY KEY,
    at          BIGINT  NOT NULL,
    cpu_ns      BIGINT ,
    rx_bytes    BIGINT ,
    tx_bytes    BIGINT 
);

-- Sampling rounds: one row per node (or the sandbox), taken by the instance
-- that samples it this interval, so several instances sample a node once.
CREATE TABLE usage_rounds (
    node      TEXT    PRIMARY KEY,
    owner     TEXT    NOT NULL,
    round_at  BIGINT  NOT NULL
);
