//! Usage history of services: the samples the background sampler takes,
//! their rollups (full resolution, then coarser averages, then gone), the
//! last cumulative counters of each service (rates come from two readings)
//! and the per-node sampling rounds that keep several instances from
//! sampling one node twice in an interval.
//!
//! The trait and its one implementation, on both databases.

use async_trait::async_trait;

use crate::db::query;
use crate::{SqlStore, StoreResult};

/// One measurement of a service. CPU is in thousandths of a percent of the
/// service's cores, memory and disk in bytes, network in bytes per second;
/// `None` is a figure the engine could not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsagePoint {
    /// Unix milliseconds; for a rollup, the start of its bucket.
    pub at: i64,
    pub cpu_milli: Option<i64>,
    pub memory_used: Option<i64>,
    pub disk_used: Option<i64>,
    pub net_in: Option<i64>,
    pub net_out: Option<i64>,
}

/// The cumulative counters of a service at one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageCounters {
    pub at: i64,
    /// CPU time used since the guest started, in nanoseconds.
    pub cpu_ns: Option<i64>,
    pub rx_bytes: Option<i64>,
    pub tx_bytes: Option<i64>,
}

/// A coarser level of the history: averages over `bucket_ms`, kept `keep_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageTier {
    pub bucket_ms: i64,
    pub keep_ms: i64,
}

/// How long each level of the history is kept. Tier 0 is the samples as
/// taken; tiers 1 and 2 are the rollups, coarser and kept longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSchedule {
    pub raw_keep_ms: i64,
    pub rollups: [UsageTier; 2],
}

impl Default for UsageSchedule {
    /// Raw for 24 hours, 5-minute averages for 7 days, hourly for 30 days.
    fn default() -> Self {
        UsageSchedule {
            raw_keep_ms: crate::DAY_MS,
            rollups: [
                UsageTier {
                    bucket_ms: 300_000,
                    keep_ms: 7 * crate::DAY_MS,
                },
                UsageTier {
                    bucket_ms: 3_600_000,
                    keep_ms: 30 * crate::DAY_MS,
                },
            ],
        }
    }
}

impl UsageSchedule {
    /// How long the whole history reaches back.
    pub fn horizon_ms(&self) -> i64 {
        self.rollups
            .iter()
            .map(|t| t.keep_ms)
            .fold(self.raw_keep_ms, i64::max)
    }

    /// The finest tier that still holds `from` at `now` and is no finer
    /// than `step_ms` needs: 0 for the raw samples, 1 and 2 for rollups.
    pub fn tier_for(&self, now: i64, from: i64, step_ms: i64) -> u8 {
        let age = now.saturating_sub(from);
        if age <= self.raw_keep_ms && step_ms < self.rollups[0].bucket_ms {
            return 0;
        }
        if age <= self.rollups[0].keep_ms && step_ms < self.rollups[1].bucket_ms {
            return 1;
        }
        2
    }
}

/// Usage history, counters and sampling rounds.
#[async_trait]
pub trait MetricsStore: Send + Sync {
    /// Records one sample per service (`(service_pk, point)`), in one
    /// transaction: the sample itself and its share of each rollup bucket.
    async fn record_usage(
        &self,
        samples: &[(i64, UsagePoint)],
        schedule: &UsageSchedule,
    ) -> StoreResult<()>;

    /// Returns each service's stored counters (`None` for a service read
    /// for the first time), in input order, and stores the new ones in
    /// their place where the stored ones are at least `min_gap_ms` older, so
    /// that readings in quick succession keep a window to measure against,
    /// or where a counter went back (the guest restarted): the stored ones
    /// are of a boot that is over.
    async fn swap_usage_counters(
        &self,
        counters: &[(i64, UsageCounters)],
        min_gap_ms: i64,
    ) -> StoreResult<Vec<Option<UsageCounters>>>;

    /// A service's stored counters, read only (`None` when it has none).
    /// Status measures against them when its process has no reading of
    /// its own yet, without writing: status stays a read.
    async fn usage_counters(&self, service_pk: i64) -> StoreResult<Option<UsageCounters>>;

    /// Drops what each tier holds beyond its age; returns the rows dropped.
    async fn prune_usage(&self, now: i64, schedule: &UsageSchedule) -> StoreResult<u64>;

    /// A service's history from `from` (inclusive) to `to` (exclusive) in
    /// `tier`, averaged over steps of `step_ms` (each point at its step's
    /// start), oldest first; steps with no sample are left out.
    async fn usage_series(
        &self,
        service_pk: i64,
        tier: u8,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> StoreResult<Vec<UsagePoint>>;

    /// How many rows of history a service has, per tier 0, 1, 2.
    async fn usage_rows(&self, service_pk: i64) -> StoreResult<[u64; 3]>;

    /// Takes the sampling round of `node` for `owner` if nobody took one in
    /// the last `interval_ms`, atomically: of several instances one wins.
    async fn claim_usage_round(
        &self,
        node: &str,
        owner: &str,
        now: i64,
        interval_ms: i64,
    ) -> StoreResult<bool>;
}

const UPSERT_SAMPLE: &str = "INSERT INTO usage_samples \
     (service_pk, tier, at, cpu_sum, cpu_n, mem_sum, mem_n, disk_sum, disk_n, in_sum, out_sum, net_n) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (service_pk, tier, at) DO UPDATE SET \
       cpu_sum = usage_samples.cpu_sum + excluded.cpu_sum, cpu_n = usage_samples.cpu_n + excluded.cpu_n, \
       mem_sum = usage_samples.mem_sum + excluded.mem_sum, mem_n = usage_samples.mem_n + excluded.mem_n, \
       disk_sum = usage_samples.disk_sum + excluded.disk_sum, disk_n = usage_samples.disk_n + excluded.disk_n, \
       in_sum = usage_samples.in_sum + excluded.in_sum, out_sum = usage_samples.out_sum + excluded.out_sum, \
       net_n = usage_samples.net_n + excluded.net_n";

fn count(v: Option<i64>) -> i64 {
    i64::from(v.is_some())
}

fn average(sum: i64, n: i64) -> Option<i64> {
    (n > 0).then(|| sum / n)
}

#[async_trait]
impl MetricsStore for SqlStore {
    async fn record_usage(
        &self,
        samples: &[(i64, UsagePoint)],
        schedule: &UsageSchedule,
    ) -> StoreResult<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_uncached().await?;
        for (service_pk, p) in samples {
            // Rates are known for both directions or neither.
            let net = p.net_in.is_some() && p.net_out.is_some();
            let buckets = [
                (0i64, p.at),
                (1, p.at - p.at.rem_euclid(schedule.rollups[0].bucket_ms)),
                (2, p.at - p.at.rem_euclid(schedule.rollups[1].bucket_ms)),
            ];
            for (tier, at) in buckets {
                query(UPSERT_SAMPLE)
                    .bind(*service_pk)
                    .bind(tier)
                    .bind(at)
                    .bind(p.cpu_milli.unwrap_or(0))
                    .bind(count(p.cpu_milli))
                    .bind(p.memory_used.unwrap_or(0))
                    .bind(count(p.memory_used))
                    .bind(p.disk_used.unwrap_or(0))
                    .bind(count(p.disk_used))
                    .bind(if net { p.net_in.unwrap_or(0) } else { 0 })
                    .bind(if net { p.net_out.unwrap_or(0) } else { 0 })
                    .bind(i64::from(net))
                    .execute(&mut tx)
                    .await?;
            }
        }
        tx.commit().await
    }

    async fn swap_usage_counters(
        &self,
        counters: &[(i64, UsageCounters)],
        min_gap_ms: i64,
    ) -> StoreResult<Vec<Option<UsageCounters>>> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin_uncached().await?;
        let mut previous = Vec::with_capacity(counters.len());
        for (service_pk, c) in counters {
            let sql = format!(
                "SELECT at, cpu_ns, rx_bytes, tx_bytes FROM usage_counters WHERE service_pk = $1{}",
                tx.dialect().lock_rows()
            );
            let old = match query(sql).bind(*service_pk).row_opt(&mut tx).await? {
                Some(row) => Some(UsageCounters {
                    at: row.get("at")?,
                    cpu_ns: row.get("cpu_ns")?,
                    rx_bytes: row.get("rx_bytes")?,
                    tx_bytes: row.get("tx_bytes")?,
                }),
                None => None,
            };
            query(
                "INSERT INTO usage_counters (service_pk, at, cpu_ns, rx_bytes, tx_bytes) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (service_pk) DO UPDATE SET \
                 at = excluded.at, cpu_ns = excluded.cpu_ns, rx_bytes = excluded.rx_bytes, \
                 tx_bytes = excluded.tx_bytes \
                 WHERE usage_counters.at + $6 <= excluded.at \
                   OR excluded.cpu_ns < usage_counters.cpu_ns \
                   OR excluded.rx_bytes < usage_counters.rx_bytes \
                   OR excluded.tx_bytes < usage_counters.tx_bytes",
            )
            .bind(*service_pk)
            .bind(c.at)
            .bind(c.cpu_ns)
            .bind(c.rx_bytes)
            .bind(c.tx_bytes)
            .bind(min_gap_ms)
            .execute(&mut tx)
            .await?;
            previous.push(old);
        }
        tx.commit().await?;
        Ok(previous)
    }

    async fn prune_usage(&self, now: i64, schedule: &UsageSchedule) -> StoreResult<u64> {
        let mut dropped = 0;
        let keeps = [
            schedule.raw_keep_ms,
            schedule.rollups[0].keep_ms,
            schedule.rollups[1].keep_ms,
        ];
        for (tier, keep) in keeps.into_iter().enumerate() {
            dropped += query("DELETE FROM usage_samples WHERE tier = $1 AND at < $2")
                .bind(tier as i64)
                .bind(now - keep)
                .execute(self.db.write_uncached())
                .await?;
        }
        Ok(dropped)
    }

    async fn usage_series(
        &self,
        service_pk: i64,
        tier: u8,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> StoreResult<Vec<UsagePoint>> {
        let step = step_ms.max(1);
        // Integer division is a step's start on both databases; SUM of a
        // BIGINT is NUMERIC on PostgreSQL, hence the casts.
        let rows = query(
            "SELECT (at / $4) * $4 AS step_at, \
               CAST(SUM(cpu_sum) AS BIGINT) AS cpu_sum, CAST(SUM(cpu_n) AS BIGINT) AS cpu_n, \
               CAST(SUM(mem_sum) AS BIGINT) AS mem_sum, CAST(SUM(mem_n) AS BIGINT) AS mem_n, \
               CAST(SUM(disk_sum) AS BIGINT) AS disk_sum, CAST(SUM(disk_n) AS BIGINT) AS disk_n, \
               CAST(SUM(in_sum) AS BIGINT) AS in_sum, CAST(SUM(out_sum) AS BIGINT) AS out_sum, \
               CAST(SUM(net_n) AS BIGINT) AS net_n \
             FROM usage_samples WHERE service_pk = $1 AND tier = $2 AND at >= $3 AND at < $5 \
             GROUP BY (at / $4) * $4 ORDER BY step_at",
        )
        .bind(service_pk)
        .bind(i64::from(tier))
        .bind(from)
        .bind(step)
        .bind(to)
        .rows(self.db.read())
        .await?;
        rows.iter()
            .map(|row| {
                let net_n: i64 = row.get("net_n")?;
                Ok(UsagePoint {
                    at: row.get("step_at")?,
                    cpu_milli: average(row.get("cpu_sum")?, row.get("cpu_n")?),
                    memory_used: average(row.get("mem_sum")?, row.get("mem_n")?),
                    disk_used: average(row.get("disk_sum")?, row.get("disk_n")?),
                    net_in: average(row.get("in_sum")?, net_n),
                    net_out: average(row.get("out_sum")?, net_n),
                })
            })
            .collect()
    }

    async fn usage_counters(&self, service_pk: i64) -> StoreResult<Option<UsageCounters>> {
        let row = query(
            "SELECT at, cpu_ns, rx_bytes, tx_bytes FROM usage_counters WHERE service_pk = $1",
        )
        .bind(service_pk)
        .row_opt(self.db.read())
        .await?;
        row.map(|row| {
            Ok(UsageCounters {
                at: row.get("at")?,
                cpu_ns: row.get("cpu_ns")?,
                rx_bytes: row.get("rx_bytes")?,
                tx_bytes: row.get("tx_bytes")?,
            })
        })
        .transpose()
    }

    async fn usage_rows(&self, service_pk: i64) -> StoreResult<[u64; 3]> {
        let mut out = [0u64; 3];
        for row in query(
            "SELECT tier, COUNT(*) AS n FROM usage_samples WHERE service_pk = $1 GROUP BY tier",
        )
        .bind(service_pk)
        .rows(self.db.read())
        .await?
        {
            let tier: i64 = row.get("tier")?;
            let n: i64 = row.get("n")?;
            if let Some(slot) = usize::try_from(tier).ok().and_then(|t| out.get_mut(t)) {
                *slot = n.max(0) as u64;
            }
        }
        Ok(out)
    }

    async fn claim_usage_round(
        &self,
        node: &str,
        owner: &str,
        now: i64,
        interval_ms: i64,
    ) -> StoreResult<bool> {
        // One statement: the row is taken only when its last round is an
        // interval old, so of instances racing for it exactly one gets a
        // row back (PostgreSQL's upsert holds the row lock; SQLite has one
        // writer).
        let taken = query(
            "INSERT INTO usage_rounds (node, owner, round_at) VALUES ($1, $2, $3) \
             ON CONFLICT (node) DO UPDATE SET owner = excluded.owner, round_at = excluded.round_at \
             WHERE usage_rounds.round_at + $4 <= excluded.round_at \
             RETURNING node",
        )
        .bind(node)
        .bind(owner)
        .bind(now)
        .bind(interval_ms)
        .rows(self.db.write_uncached())
        .await?;
        Ok(!taken.is_empty())
    }
}
