//! A PostgreSQL server that restarts, or goes away for a while, under load
//! does not leave an advps instance broken: while the database cannot be
//! reached, requests that need it answer 503 `Storage is full or unavailable;
//! retry later` with `Retry-After` (never another 5xx), and once it is back,
//! reads and writes succeed again with no restart of advps and no connection
//! left in the middle of a transaction.
//!
//! The test runs its own PostgreSQL cluster (made with `initdb` in a
//! temporary directory, on a free port; see `common/pg_cluster.rs`) so that
//! restarting it disturbs nothing else; that needs PostgreSQL's server
//! programs and root (to run them as the `postgres` user). Elsewhere it is
//! skipped with a notice; with `ADVPS_REQUIRE_POSTGRES=1` or
//! `ADVPS_REQUIRE_ROOT=1` (as `.ci/test` sets them) it fails instead.

mod common;
#[path = "common/pg_cluster.rs"]
mod pg_cluster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pg_cluster::Cluster;

const UNAVAILABLE: &str = "Storage is full or unavailable; retry later";

/// What the load saw, by response.
#[derive(Default)]
struct Seen {
    ok: u64,
    unavailable: u64,
    /// Anything else: status and body.
    other: Vec<String>,
    /// When the last request that needed the database failed.
    last_failure: Option<Instant>,
}

/// Writes (a password) and reads (status, stock) in a loop until `stop`.
async fn load(server: Arc<TestServer>, key: String, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let resp = match i % 3 {
            0 => {
                server
                    .post("/api/v1/services/lxc_service_1/generate-password", &key)
                    .await
            }
            1 => {
                server
                    .get("/api/v1/services/vps_service_1/status", &key)
                    .await
            }
            _ => server.get("/api/v1/products/stock", &key).await,
        };
        i += 1;
        {
            let mut seen = seen.lock().unwrap();
            match resp.status {
                200 => seen.ok += 1,
                503 if resp.body["message"] == UNAVAILABLE
                    && resp.header("retry-after").is_some() =>
                {
                    seen.unavailable += 1;
                    seen.last_failure = Some(Instant::now());
                }
                status => {
                    seen.last_failure = Some(Instant::now());
                    seen.other.push(format!("{status} {}", resp.body));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every request of the load has succeeded for `quiet`, at most
/// `within`; returns how long the instance took to heal.
async fn healed(seen: &Mutex<Seen>, quiet: Duration, within: Duration) -> Duration {
    let from = Instant::now();
    loop {
        let last = seen.lock().unwrap().last_failure;
        let now = Instant::now();
        match last {
            Some(at) if now.duration_since(at) < quiet => {}
            _ if now.duration_since(from) >= quiet => return from.elapsed().saturating_sub(quiet),
            _ => {}
        }
        assert!(
            from.elapsed() < within,
            "requests still fail {within:?} after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_or_vanished_postgresql_leaves_the_instance_working() {
    if pg_cluster::skipped("pg_restart") {
        return;
    }
    let cluster = Cluster::start();
    let url = cluster.url();
    let server = Arc::new(TestServer::start_with_env(&[
        ("ADVPS_DATABASE_URL", url.as_str()),
        ("ADVPS_RATE_LIMIT_TEST", "1000000"),
    ]));
    let key = server.test_key.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(load(
                Arc::clone(&server),
                key.clone(),
                Arc::clone(&stop),
                Arc::clone(&seen),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let seen = seen.lock().unwrap();
        assert!(seen.ok > 0, "no request succeeded before the restart");
        assert!(
            seen.unavailable == 0 && seen.other.is_empty(),
            "requests failed before the database was touched: {:?}",
            seen.other
        );
    }

    // A restart under load: every connection of advps's pools is cut.
    cluster.pg_ctl(&["-m", "fast", "restart"]);
    let first = healed(&seen, Duration::from_secs(2), Duration::from_secs(20)).await;

    // An outage: the database is gone for three seconds, then back.
    cluster.pg_ctl(&["-m", "fast", "stop"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = seen.lock().unwrap().unavailable;
    cluster.pg_ctl(&["start"]);
    let second = healed(&seen, Duration::from_secs(2), Duration::from_secs(20)).await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.other.is_empty(),
            "while the database was away, some answers were not the 503 envelope: {:?}",
            &seen.other[..seen.other.len().min(5)]
        );
        assert!(
            during > 0,
            "no request was refused while the database was stopped: the test did not reach it"
        );
        eprintln!(
            "pg_restart: {} ok, {} answered 503 while the database was away; healed {:.1} s after \
             the restart and {:.1} s after the outage",
            seen.ok,
            seen.unavailable,
            first.as_secs_f64(),
            second.as_secs_f64()
        );
    }

    let health = server.get_anon("/health").await;
    assert_eq!(health.status, 200, "health after recovery: {}", health.body);
    let log = server.stderr_log();
    assert!(
        !log.contains("transaction depth"),
        "a connection went back to the pool inside a transaction:\n{log}"
    );
}
