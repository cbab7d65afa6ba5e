//! The usage history's figures on SQLite, measured on the store itself:
//! what one sampling round over 1,000 services costs in the store (its
//! counters and samples, in one transaction each), how fast 30 days of one
//! service are read back (as the metrics endpoint reads them), and how much
//! 30 days of history take per service.
//!
//! ```text
//! cargo run --release -p advps-store --example usage_figures
//! ```
//!
//! The engine's side of a round (one bulk call per node) is not in these
//! figures; the HTTP layer adds its envelope to the read.

use std::time::Instant;

use advps_store::*;

const MINUTE: i64 = 60_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn point(at: i64, i: i64) -> UsagePoint {
    UsagePoint {
        at,
        cpu_milli: Some(10_000 + (i * 7919) % 40_000),
        memory_used: Some(1_500_000_000 + (i * 104_729) % 300_000_000),
        disk_used: Some(9_000_000_000),
        net_in: Some(100_000 + (i * 31) % 50_000),
        net_out: Some(30_000 + (i * 17) % 10_000),
    }
}

/// The database file and its write-ahead log, in bytes.
fn file_bytes(dir: &std::path::Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(dir.join(format!("{DATABASE_FILE}{suffix}"))).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::main]
async fn main() -> StoreResult<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqlStore::open_sqlite(dir.path()).await?;
    let schedule = UsageSchedule::default();
    let account = store.create_account("bench", 0).await?;
    let scope = Scope {
        account_id: account.id,
        mode: advps_domain::Mode::Test,
    };
    let service = store
        .find_service(scope, "vps_service_1")
        .await?
        .expect("the sandbox fleet");

    // A round over 1,000 services: swap their counters, record their samples.
    let start = 1_800_000_000_000;
    let mut round_ms = Vec::new();
    for round in 0..20 {
        let now = start + round * MINUTE;
        let counters: Vec<(i64, UsageCounters)> = (0..1_000)
            .map(|pk| {
                (
                    1_000_000 + pk,
                    UsageCounters {
                        at: now,
                        cpu_ns: Some(round * 1_000_000_000),
                        rx_bytes: Some(round * 1_000_000),
                        tx_bytes: Some(round * 300_000),
                    },
                )
            })
            .collect();
        let samples: Vec<(i64, UsagePoint)> = (0..1_000)
            .map(|pk| (1_000_000 + pk, point(now, pk + round)))
            .collect();
        let t = Instant::now();
        store.swap_usage_counters(&counters, 1_000).await?;
        store.record_usage(&samples, &schedule).await?;
        store.prune_usage(now, &schedule).await?;
        round_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    round_ms.sort_by(f64::total_cmp);
    println!(
        "round over 1,000 services (store side): median {:.1} ms, max {:.1} ms",
        percentile(&round_ms, 0.5),
        round_ms[round_ms.len() - 1]
    );

    // 30 days of one service, a sample a minute, pruned as the sampler does.
    let size_before = file_bytes(dir.path());
    let days = 30;
    let t0 = start + 100 * MINUTE;
    for day in 0..days {
        let batch: Vec<(i64, UsagePoint)> = (0..1_440)
            .map(|m| {
                let at = t0 + (day * 1_440 + m) * MINUTE;
                (service.pk, point(at, m))
            })
            .collect();
        store.record_usage(&batch, &schedule).await?;
        store
            .prune_usage(t0 + (day + 1) * 1_440 * MINUTE, &schedule)
            .await?;
    }
    let now = t0 + days * 1_440 * MINUTE;
    let rows = store.usage_rows(service.pk).await?;
    println!(
        "30 days of one service: {} rows (raw {}, 5-minute {}, hourly {})",
        rows.iter().sum::<u64>(),
        rows[0],
        rows[1],
        rows[2]
    );
    // The growth of the database and its write-ahead log: the pages the
    // history holds at its largest, indexes included (an upper bound: the
    // log is reused, not shrunk, after a checkpoint).
    let size_after = file_bytes(dir.path());
    println!(
        "storage for 30 days of one service: at most {} bytes of database and log ({} per row)",
        size_after.saturating_sub(size_before),
        size_after.saturating_sub(size_before) / rows.iter().sum::<u64>().max(1)
    );

    // Reading it back as the metrics endpoint does (30 days at its default
    // step; the last day at a minute).
    for (label, from, step) in [
        ("30 days, step 7200 s", now - 30 * DAY_MS, 7_200_000),
        ("24 hours, step 300 s", now - DAY_MS, 300_000),
    ] {
        let tier = schedule.tier_for(now, from, step);
        let mut ms = Vec::new();
        let mut points = 0;
        for _ in 0..200 {
            let t = Instant::now();
            points = store
                .usage_series(service.pk, tier, from, now, step)
                .await?
                .len();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "read {label} (tier {tier}, {points} points): p50 {:.2} ms, p99 {:.2} ms",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        );
    }
    Ok(())
}
