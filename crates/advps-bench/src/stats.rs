//! Latency statistics for the advps load benchmark: nearest-rank
//! percentiles over recorded per-request latencies (microseconds) and the
//! per-target summary (requests, errors, throughput, p50/p90/p99/p99.9/max).
//!
//! Reproduce the full benchmark with
//! `cargo build --release -p advps-cli -p advps-bench && target/release/advps-bench`;
//! the unit tests here run with `cargo test -p advps-bench`.

use serde::Serialize;

/// Nearest-rank percentile of an ascending-sorted slice.
///
/// `p` is in percent (0..=100). Returns `None` for an empty slice. The result
/// is the smallest recorded value such that at least `p`% of all values are
/// less than or equal to it (p = 0 gives the minimum, p = 100 the maximum).
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let p = p.clamp(0.0, 100.0);
    // ceil(p/100 * n), computed on integers where possible to avoid
    // floating-point surprises such as 0.29 * 100 = 28.999...
    let scaled = p * n as f64 / 100.0;
    let mut rank = scaled.ceil() as usize;
    if (scaled - scaled.round()).abs() < 1e-9 {
        rank = scaled.round() as usize;
    }
    let rank = rank.clamp(1, n);
    Some(sorted[rank - 1])
}

/// Figures for one target (possibly aggregated over several rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Completed requests inside the measured window (successes + errors).
    pub requests: u64,
    /// Responses that were not `200 OK`, plus transport failures and timeouts.
    pub errors: u64,
    /// Measured wall-clock seconds (sum over rounds).
    pub seconds: f64,
    /// `requests / seconds`.
    pub rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn us_to_ms(v: Option<u32>) -> f64 {
    v.map(|us| f64::from(us) / 1000.0).unwrap_or(f64::NAN)
}

/// Sorts `latencies_us` in place (successful requests only) and summarises.
pub fn summarize(latencies_us: &mut [u32], errors: u64, seconds: f64) -> Summary {
    latencies_us.sort_unstable();
    let ok = latencies_us.len() as u64;
    let requests = ok + errors;
    let mean_ms = if latencies_us.is_empty() {
        f64::NAN
    } else {
        let total: u64 = latencies_us.iter().map(|&v| u64::from(v)).sum();
        total as f64 / latencies_us.len() as f64 / 1000.0
    };
    let rps = if seconds > 0.0 {
        requests as f64 / seconds
    } else {
        0.0
    };
    Summary {
        requests,
        errors,
        seconds,
        rps,
        mean_ms,
        p50_ms: us_to_ms(percentile(latencies_us, 50.0)),
        p90_ms: us_to_ms(percentile(latencies_us, 90.0)),
        p99_ms: us_to_ms(percentile(latencies_us, 99.0)),
        p999_ms: us_to_ms(percentile(latencies_us, 99.9)),
        max_ms: us_to_ms(latencies_us.last().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_one_to_hundred() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 1.0), Some(1));
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.9), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
    }

    #[test]
    fn percentile_small_and_empty() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        // Nearest rank on 4 values: p50 -> 2nd value, p51 -> 3rd, p99 -> 4th.
        let v = [10, 20, 30, 40];
        assert_eq!(percentile(&v, 50.0), Some(20));
        assert_eq!(percentile(&v, 51.0), Some(30));
        assert_eq!(percentile(&v, 99.0), Some(40));
        // Exact-boundary rank must not be pushed up by float error.
        let w: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&w, 29.0), Some(290));
        assert_eq!(percentile(&w, 99.9), Some(999));
    }

    #[test]
    fn summarize_sorts_and_counts() {
        let mut v = vec![3000, 1000, 2000, 4000];
        let s = summarize(&mut v, 1, 2.0);
        assert_eq!(s.requests, 5);
        assert_eq!(s.errors, 1);
        assert!((s.rps - 2.5).abs() < 1e-9);
        assert!((s.p50_ms - 2.0).abs() < 1e-9);
        assert!((s.max_ms - 4.0).abs() < 1e-9);
        assert!((s.mean_ms - 2.5).abs() < 1e-9);
    }
}
