//! Result presentation for the advps load benchmark: the per-target table,
//! the status/constant throughput ratio, memory figures, the PASS/FAIL checks
//! and the optional JSON file (`--json FILE`).
//!
//! Reproduce with
//! `cargo build --release -p advps-cli -p advps-bench && target/release/advps-bench`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::Summary;

/// Targets the benchmark checks.
pub const MIN_STATUS_RATIO: f64 = 0.5;
pub const MAX_STATUS_P99_MS: f64 = 5.0;
pub const MAX_IDLE_RSS_MB: f64 = 30.0;

#[derive(Debug, Serialize)]
pub struct RoundFigures {
    pub round: u32,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub request: String,
    #[serde(flatten)]
    pub summary: Summary,
    /// Server CPU time (user + system) per request in the measured windows.
    pub server_cpu_us_per_request: f64,
    /// Load-generator CPU time per request in the measured windows.
    pub client_cpu_us_per_request: f64,
    /// Average server CPU use over the measured windows (100 = one core).
    pub server_cpu_percent: f64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub error_sample: Option<String>,
    pub reconnects: u64,
    pub rounds: Vec<RoundFigures>,
}

/// Memory of the server process in MB (1 MB = 1024 * 1024 bytes).
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub idle_rss_mb: f64,
    pub after_load_rss_mb: f64,
    pub peak_hwm_mb: f64,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    pub pass: bool,
}

#[derive(Debug, Serialize)]
pub struct Config {
    pub server_binary: String,
    pub connections: usize,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub rounds: u32,
    pub settle_seconds: f64,
    pub client_threads: usize,
    pub cpus: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub config: Config,
    pub targets: Vec<TargetReport>,
    pub status_over_constant_rps: f64,
    pub memory: MemoryReport,
    pub checks: Vec<Check>,
    pub all_checks_pass: bool,
    pub total_errors: u64,
    pub server_exit: String,
}

pub fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Builds the three checks from the figures.
pub fn checks(status: &Summary, ratio: f64, idle_rss_mb: f64) -> Vec<Check> {
    vec![
        Check {
            name: format!("status req/s >= {MIN_STATUS_RATIO} x constant req/s (ratio)"),
            value: ratio,
            limit: MIN_STATUS_RATIO,
            pass: ratio >= MIN_STATUS_RATIO,
        },
        Check {
            name: format!("status p99 < {MAX_STATUS_P99_MS} ms"),
            value: status.p99_ms,
            limit: MAX_STATUS_P99_MS,
            pass: status.p99_ms < MAX_STATUS_P99_MS,
        },
        Check {
            name: format!("idle RSS < {MAX_IDLE_RSS_MB} MB"),
            value: idle_rss_mb,
            limit: MAX_IDLE_RSS_MB,
            pass: idle_rss_mb < MAX_IDLE_RSS_MB,
        },
    ]
}

/// Prints the table, ratio, memory and checks to stdout.
pub fn print(report: &Report) {
    println!();
    println!(
        "{:<9} {:<44} {:>10} {:>7} {:>10} {:>8} {:>8} {:>9} {:>8}",
        "target",
        "request",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    for t in &report.targets {
        let s = &t.summary;
        println!(
            "{:<9} {:<44} {:>10} {:>7} {:>10.0} {:>8.3} {:>8.3} {:>9.3} {:>8.3}",
            t.name, t.request, s.requests, s.errors, s.rps, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
        );
    }
    println!();
    for t in &report.targets {
        println!(
            "{:<9} server CPU {:>6.1} us/request ({:.0}% of one core), client CPU {:>6.1} us/request",
            t.name,
            t.server_cpu_us_per_request,
            t.server_cpu_percent,
            t.client_cpu_us_per_request
        );
    }
    println!(
        "ratio status/constant req/s: {:.3}",
        report.status_over_constant_rps
    );
    let m = &report.memory;
    println!(
        "server memory: idle RSS {:.1} MB, RSS after load {:.1} MB, peak (VmHWM) {:.1} MB",
        m.idle_rss_mb, m.after_load_rss_mb, m.peak_hwm_mb
    );
    println!("server exit: {}", report.server_exit);
    for t in &report.targets {
        if t.summary.errors > 0 {
            println!(
                "WARNING: {} had {} errors {:?}; first: {}",
                t.name,
                t.summary.errors,
                t.errors_by_kind,
                t.error_sample.as_deref().unwrap_or("-")
            );
        }
        if t.reconnects > 0 {
            println!(
                "note: {} re-opened {} connections (keep-alive closed by the server)",
                t.name, t.reconnects
            );
        }
    }
    println!();
    for c in &report.checks {
        println!(
            "{}  {} (measured {:.3}, limit {})",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.value,
            c.limit
        );
    }
    if report.total_errors > 0 {
        println!(
            "SUSPICIOUS: {} requests failed during the measured windows",
            report.total_errors
        );
    }
}

pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
