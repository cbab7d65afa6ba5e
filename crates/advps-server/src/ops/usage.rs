//! Resource usage: what a service uses now (status), its history (metrics),
//! the background sampler's round, and the list of the caller's services.
//!
//! Every figure comes from the engine (or, in the sandbox, from the
//! simulation), as cumulative counters where the engine keeps them. A rate
//! (CPU percent, bytes per second) is the difference between two readings
//! divided by the time between them: the reading before is stored per
//! service, so the first reading after a start has no rate (`None`), never
//! a made-up one. The sampler keeps its readings in the store (they survive
//! restarts and are shared by instances); status keeps its own in process
//! memory, so that reading a status never writes.

use std::collections::HashMap;

use advps_domain::{time, Mode, PageRequest, PowerState, ServiceType};
use advps_drivers::UsageReading;
use advps_store::{Scope, ServiceRecord, StoreResult, UsageCounters, UsagePoint};

use super::{Operations, OpsError};
use crate::sandbox;

/// Readings closer together than this keep the older one to measure against.
const MIN_RATE_WINDOW_MS: i64 = 1_000;
/// The name the sandbox's sampling round is taken under (no node is called so).
const SANDBOX_ROUND: &str = "~sandbox";

/// A service's usage at one moment, with its rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub cores: Option<u32>,
    /// Percent of the service's cores.
    pub cpu_percent: Option<f64>,
    pub memory_used: Option<u64>,
    pub memory_total: Option<u64>,
    pub disk_used: Option<u64>,
    pub disk_total: Option<u64>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub rx_rate: Option<f64>,
    pub tx_rate: Option<f64>,
    pub sampled_at: i64,
}

impl Measured {
    /// Nothing could be read (the engine did not answer).
    fn unknown(now: i64) -> Measured {
        Measured {
            cores: None,
            cpu_percent: None,
            memory_used: None,
            memory_total: None,
            disk_used: None,
            disk_total: None,
            rx_bytes: None,
            tx_bytes: None,
            rx_rate: None,
            tx_rate: None,
            sampled_at: now,
        }
    }

    /// The sample the history keeps.
    fn point(&self) -> UsagePoint {
        let int = |v: Option<u64>| v.map(|n| n.min(i64::MAX as u64) as i64);
        UsagePoint {
            at: self.sampled_at,
            cpu_milli: self.cpu_percent.map(|p| (p * 1000.0).round() as i64),
            memory_used: int(self.memory_used),
            disk_used: int(self.disk_used),
            net_in: self.rx_rate.map(|r| r.round() as i64),
            net_out: self.tx_rate.map(|r| r.round() as i64),
        }
    }
}

fn counters_of(reading: &UsageReading, now: i64) -> UsageCounters {
    let int = |v: Option<u64>| v.map(|n| n.min(i64::MAX as u64) as i64);
    UsageCounters {
        at: now,
        cpu_ns: int(reading.cpu_time_ns),
        rx_bytes: int(reading.rx_bytes),
        tx_bytes: int(reading.tx_bytes),
    }
}

/// Per second between two counter values, unless the counter went back
/// (the guest restarted and its counters with it) or is unknown.
fn per_second(old: Option<i64>, new: Option<i64>, window_ms: i64) -> Option<f64> {
    let (old, new) = (old?, new?);
    (new >= old && window_ms > 0).then(|| (new - old) as f64 * 1000.0 / window_ms as f64)
}

/// Whether a new reading takes the old one's place as the one to measure
/// against: when the old is at least `min_gap_ms` older (readings in quick
/// succession keep a window), or a counter went back (the guest restarted,
/// the old reading is of a boot that is over). The store's counters follow
/// the same rule.
fn replaces(old: &UsageCounters, new: &UsageCounters, min_gap_ms: i64) -> bool {
    let went_back = |o: Option<i64>, n: Option<i64>| matches!((o, n), (Some(o), Some(n)) if n < o);
    old.at + min_gap_ms <= new.at
        || went_back(old.cpu_ns, new.cpu_ns)
        || went_back(old.rx_bytes, new.rx_bytes)
        || went_back(old.tx_bytes, new.tx_bytes)
}

/// The usage of a reading at `now`, given the counters read before.
pub fn measure(reading: &UsageReading, before: Option<&UsageCounters>, now: i64) -> Measured {
    let counters = counters_of(reading, now);
    let window = before.map(|b| now - b.at).unwrap_or(0);
    let (cpu_percent, rx_rate, tx_rate) = if !reading.running {
        // A stopped guest uses nothing: zero, measured, not unknown.
        (Some(0.0), Some(0.0), Some(0.0))
    } else {
        let cores = f64::from(reading.cores.unwrap_or(1).max(1));
        let cpu = match reading.cpu_fraction {
            Some(fraction) => Some(fraction * 100.0),
            None => before.and_then(|b| {
                per_second(b.cpu_ns, counters.cpu_ns, window).map(|ns| ns / 1e9 / cores * 100.0)
            }),
        };
        (
            cpu.map(|p| (p.clamp(0.0, 100.0) * 100.0).round() / 100.0),
            before.and_then(|b| per_second(b.rx_bytes, counters.rx_bytes, window)),
            before.and_then(|b| per_second(b.tx_bytes, counters.tx_bytes, window)),
        )
    };
    Measured {
        cores: reading.cores,
        cpu_percent,
        memory_used: reading.memory_used,
        memory_total: reading.memory_total,
        disk_used: reading.disk_used,
        disk_total: reading.disk_total,
        rx_bytes: reading.rx_bytes,
        tx_bytes: reading.tx_bytes,
        rx_rate: rx_rate.map(f64::round),
        tx_rate: tx_rate.map(f64::round),
        sampled_at: now,
    }
}

/// What one sampling round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Nodes (and the sandbox) this instance sampled.
    pub rounds: usize,
    /// Engine calls made.
    pub engine_calls: usize,
    /// Services sampled.
    pub samples: usize,
}

/// A history request, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsRange {
    pub start: i64,
    pub end: i64,
    pub step_ms: i64,
}

/// Most points a series may have.
pub const MAX_POINTS: i64 = 500;

/// The step the server picks for a range: the smallest round step that
/// keeps it within [`MAX_POINTS`], and never finer than the samples.
pub fn default_step_secs(range_ms: i64, sample_ms: i64) -> i64 {
    const STEPS: [i64; 13] = [
        1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 21600, 86400,
    ];
    let ceil_div = |a: i64, b: i64| (a + b - 1) / b;
    let floor = ceil_div(sample_ms, 1000);
    STEPS
        .into_iter()
        .filter(|s| *s >= floor)
        .find(|s| ceil_div(range_ms, s * 1000) <= MAX_POINTS)
        .unwrap_or_else(|| ceil_div(range_ms, MAX_POINTS * 1000).max(1))
}

impl Operations {
    /// The usage of the caller's service now, for its status.
    pub async fn resources(&self, service: &ServiceRecord) -> Result<Measured, OpsError> {
        let now = time::now_millis();
        let reading = if service.mode == Mode::Test {
            sandbox::usage(service, now)
        } else {
            let read = match self.driver_for(service, "read usage").await {
                Ok(driver) => driver.usage(&service.vmid).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match read {
                Ok(reading) => reading,
                Err(error) => {
                    tracing::warn!(service = %service.service_id, %error, "usage unavailable");
                    return Ok(Measured::unknown(now));
                }
            }
        };
        let counters = counters_of(&reading, now);
        // Measured against this process's own previous reading, or, the
        // first time, the sampler's stored one: status writes nothing, so it
        // costs what a read costs and answers on a full disk.
        let before = match self.recent_counters.get(&service.pk) {
            Some(before) => Some(before),
            None => match self.store.usage_counters(service.pk).await {
                Ok(stored) => stored,
                Err(e) if e.is_unavailable() => None,
                Err(e) => return Err(e.into()),
            },
        };
        let kept = match before {
            Some(old) if !replaces(&old, &counters, MIN_RATE_WINDOW_MS) => old,
            _ => counters,
        };
        self.recent_counters.insert(service.pk, kept);
        Ok(measure(&reading, before.as_ref(), now))
    }

    /// Measures readings against each service's stored counters, and keeps
    /// the new counters for the next time.
    async fn measure_all(
        &self,
        readings: &[(i64, UsageReading)],
        now: i64,
    ) -> StoreResult<Vec<Measured>> {
        let counters: Vec<(i64, UsageCounters)> = readings
            .iter()
            .map(|(pk, r)| (*pk, counters_of(r, now)))
            .collect();
        let before = match self
            .store
            .swap_usage_counters(&counters, MIN_RATE_WINDOW_MS)
            .await
        {
            Ok(before) => before,
            // Status is a read: when the storage cannot keep the new
            // counters (a full disk), it still answers, with no rates this
            // time rather than an error.
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "usage counters not kept: storage unavailable");
                vec![None; readings.len()]
            }
            Err(e) => return Err(e),
        };
        Ok(readings
            .iter()
            .zip(before)
            .map(|((_, reading), before)| measure(reading, before.as_ref(), now))
            .collect())
    }

    /// One round of the sampler: every node nobody sampled this interval
    /// (one engine call each) and the sandbox, then the history's pruning.
    pub async fn sample_round(&self, owner: &str) -> StoreResult<RoundReport> {
        let usage = &self.config.usage;
        let now = time::now_millis();
        // A little early still counts as the next interval: timers jitter.
        let gap = (usage.sample_interval().as_millis() as i64) * 9 / 10;
        let schedule = usage.schedule();
        let mut report = RoundReport::default();
        let mut samples: Vec<(i64, UsagePoint)> = Vec::new();

        if self
            .store
            .claim_usage_round(SANDBOX_ROUND, owner, now, gap)
            .await?
        {
            report.rounds += 1;
            let services = self.store.list_services(Some(Mode::Test)).await?;
            let readings: Vec<(i64, UsageReading)> = services
                .iter()
                .map(|l| (l.service.pk, sandbox::usage(&l.service, now)))
                .collect();
            for ((pk, _), m) in readings.iter().zip(self.measure_all(&readings, now).await?) {
                samples.push((*pk, m.point()));
            }
        }

        let mut by_node: HashMap<String, Vec<ServiceRecord>> = HashMap::new();
        for listing in self.store.list_services(Some(Mode::Live)).await? {
            if let Some(node) = listing.service.node.clone() {
                by_node.entry(node).or_default().push(listing.service);
            }
        }
        for (node, services) in by_node {
            if !self.store.claim_usage_round(&node, owner, now, gap).await? {
                continue;
            }
            report.rounds += 1;
            let driver = match self.drivers.for_node(&node).await {
                Ok(driver) => driver,
                Err(e) => {
                    tracing::warn!(node, error = %e, "usage round: node unavailable");
                    continue;
                }
            };
            report.engine_calls += 1;
            let all = match driver.usage_all().await {
                Ok(all) => all,
                Err(e) => {
                    tracing::warn!(node, error = %e, "usage round: the node did not answer");
                    continue;
                }
            };
            let read_at = time::now_millis();
            let mut by_name: HashMap<String, UsageReading> = all.into_iter().collect();
            let readings: Vec<(i64, UsageReading)> = services
                .iter()
                .filter_map(|s| by_name.remove(&s.vmid).map(|r| (s.pk, r)))
                .collect();
            for ((pk, _), m) in readings
                .iter()
                .zip(self.measure_all(&readings, read_at).await?)
            {
                samples.push((*pk, m.point()));
            }
        }
        report.samples = samples.len();
        self.store.record_usage(&samples, &schedule).await?;
        self.store.prune_usage(now, &schedule).await?;
        Ok(report)
    }

    /// The caller's service's history over `range`, after the caller's
    /// service is found (404 otherwise).
    pub async fn metrics(
        &self,
        scope: Scope,
        service_id: &str,
        range: MetricsRange,
    ) -> Result<(ServiceRecord, Vec<UsagePoint>), OpsError> {
        let service = self.service(scope, service_id).await?;
        let schedule = self.config.usage.schedule();
        let tier = schedule.tier_for(time::now_millis(), range.start, range.step_ms);
        let points = self
            .store
            .usage_series(service.pk, tier, range.start, range.end, range.step_ms)
            .await?;
        Ok((service, points))
    }

    /// The sample interval, in milliseconds.
    pub fn sample_millis(&self) -> i64 {
        self.config.usage.sample_interval().as_millis() as i64
    }

    /// A page of the caller's services.
    pub async fn list_own_services(
        &self,
        scope: Scope,
        service_type: Option<ServiceType>,
        power: Option<PowerState>,
        page: PageRequest,
    ) -> Result<(Vec<ServiceRecord>, u64), OpsError> {
        Ok(self
            .store
            .page_services(scope, service_type, power, page.offset(), page.limit)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> UsageReading {
        UsageReading {
            running: true,
            cores: Some(2),
            cpu_time_ns: Some(10_000_000_000),
            memory_used: Some(100),
            memory_total: Some(200),
            rx_bytes: Some(5_000),
            tx_bytes: Some(1_000),
            ..UsageReading::default()
        }
    }

    #[test]
    fn rates_need_two_readings_and_reset_with_the_counters() {
        let first = measure(&running(), None, 1_000);
        assert_eq!(
            (first.cpu_percent, first.rx_rate, first.tx_rate),
            (None, None, None)
        );
        let before = counters_of(&running(), 1_000);
        // Two seconds later: one core busy of two, 1000 B/s in.
        let later = UsageReading {
            cpu_time_ns: Some(12_000_000_000),
            rx_bytes: Some(7_000),
            ..running()
        };
        let m = measure(&later, Some(&before), 3_000);
        assert_eq!(m.cpu_percent, Some(50.0));
        assert_eq!(m.rx_rate, Some(1_000.0));
        assert_eq!(m.tx_rate, Some(0.0));
        // A restart: the counters start over, no rate rather than a wrong one.
        let restarted = UsageReading {
            cpu_time_ns: Some(1),
            rx_bytes: Some(1),
            ..running()
        };
        let m = measure(&restarted, Some(&before), 3_000);
        assert_eq!((m.cpu_percent, m.rx_rate), (None, None));
        // Stopped: zero, and the totals.
        let stopped = UsageReading {
            running: false,
            ..running()
        };
        let m = measure(&stopped, None, 3_000);
        assert_eq!((m.cpu_percent, m.rx_rate), (Some(0.0), Some(0.0)));
        assert_eq!(m.memory_total, Some(200));
        // An engine that averages CPU itself needs no second reading.
        let pve = UsageReading {
            cpu_fraction: Some(0.25),
            ..running()
        };
        assert_eq!(measure(&pve, None, 1).cpu_percent, Some(25.0));
    }

    #[test]
    fn a_reading_replaces_the_kept_one_after_the_gap_or_a_restart() {
        let old = counters_of(&running(), 1_000);
        let soon = counters_of(&running(), 1_500);
        assert!(!replaces(&old, &soon, 1_000));
        let later = counters_of(&running(), 2_000);
        assert!(replaces(&old, &later, 1_000));
        let restarted = UsageCounters {
            cpu_ns: Some(1),
            ..soon
        };
        assert!(replaces(&old, &restarted, 1_000));
        // An unknown counter is not a restart.
        let unknown = UsageCounters {
            rx_bytes: None,
            ..soon
        };
        assert!(!replaces(&old, &unknown, 1_000));
    }

    #[test]
    fn default_steps_keep_series_short() {
        assert_eq!(default_step_secs(3_600_000, 60_000), 60);
        assert_eq!(default_step_secs(30 * 86_400_000, 60_000), 7200);
        assert_eq!(default_step_secs(60_000, 250), 1);
        assert!(30 * 86_400 / default_step_secs(30 * 86_400_000, 1000) <= MAX_POINTS);
    }
}
