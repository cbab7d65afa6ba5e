//! A PostgreSQL server whose disk fills up under load does not leave an
//! advps instance broken: while the database cannot write, writes answer 503
//! `Storage is full or unavailable; retry later` with `Retry-After` (never a
//! 500 or another 5xx), reads answer 200 or that same 503, and `GET /health`
//! reports 503; once space is back, writes succeed again within a bounded
//! time with no restart of advps and no connection left inside a transaction.
//!
//! PostgreSQL meets a full disk in more than one way: a table that cannot
//! grow fails the statement (SQLSTATE 53100), and WAL that cannot be written
//! makes the server PANIC and restart itself. The test does not pick one; it
//! fills the disk and requires advps to heal from whatever follows.
//!
//! The test runs its own PostgreSQL cluster with its data directory on a
//! small tmpfs of its own (see `common/pg_cluster.rs`), which needs
//! PostgreSQL's server programs and root: elsewhere it is skipped with a
//! notice, and with `ADVPS_REQUIRE_POSTGRES=1` or `ADVPS_REQUIRE_ROOT=1` (as
//! `.ci/test` sets them) it fails instead.

mod common;
#[path = "common/pg_cluster.rs"]
mod pg_cluster;

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pg_cluster::Cluster;

const UNAVAILABLE: &str = "Storage is full or unavailable; retry later";

/// The tmpfs for the cluster: `initdb` with 1 MB WAL segments takes about
/// 24 MB and advps's schema a few more; the rest is what the filler takes.
const TMPFS_MB: u32 = 48;

/// WAL segments of 1 MB (not 16): the load soon needs a new one, which a
/// full disk refuses; a table that cannot grow is met too, sooner or later.
const INITDB_ARGS: &[&str] = &["--wal-segsize=1"];

/// The longest any one request may take, full disk or not: past it the
/// server counts as hung.
/// While PostgreSQL is down a request waits for a connection up to the
/// pool's acquire timeout (10 s) at each of its statements that needs one.
const REQUEST_DEADLINE: Duration = Duration::from_secs(35);

/// Runs a request, failing the test if it does not answer in time.
async fn timely(what: &str, request: impl Future<Output = Resp>) -> Resp {
    tokio::time::timeout(REQUEST_DEADLINE, request)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {REQUEST_DEADLINE:?}"))
}

/// Whether `resp` is exactly the storage 503: the envelope's message and a
/// `Retry-After`.
fn is_storage_503(resp: &Resp) -> bool {
    resp.status == 503
        && resp.body["message"] == UNAVAILABLE
        && resp.header("retry-after").is_some()
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    writes_ok: u64,
    writes_refused: u64,
    reads_ok: u64,
    reads_refused: u64,
    /// Answers that are neither success nor the storage 503.
    other: Vec<String>,
    /// When a write last answered 200, and last answered 503.
    last_write_ok: Option<Instant>,
    last_write_refused: Option<Instant>,
}

/// Writes (a password, a power action) and reads (the service list, a
/// status) in a loop until `stop`.
async fn load(
    worker: usize,
    server: Arc<TestServer>,
    key: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (write, what, resp) = match i % 4 {
            0 => {
                // A fresh Idempotency-Key is a new row, whatever else the
                // request updates in place: a write that needs new space.
                let path = "/api/v1/services/lxc_service_1/generate-password";
                let idem = format!("pg-full-disk-{worker}-{i}");
                let headers = [("idempotency-key", idem.as_str())];
                let request = server.request_with_headers(
                    reqwest::Method::POST,
                    path,
                    Some(&key),
                    None,
                    None,
                    &headers,
                );
                (true, path, timely(path, request).await)
            }
            1 => {
                let path = "/api/v1/services";
                (false, path, timely(path, server.get(path, &key)).await)
            }
            2 => {
                let path = "/api/v1/services/vps_service_1/reboot";
                (true, path, timely(path, server.post(path, &key)).await)
            }
            _ => {
                let path = "/api/v1/services/vps_service_1/status";
                (false, path, timely(path, server.get(path, &key)).await)
            }
        };
        i += 1;
        {
            let mut seen = seen.lock().unwrap();
            let now = Instant::now();
            match (write, resp.status) {
                (true, 200) => {
                    seen.writes_ok += 1;
                    seen.last_write_ok = Some(now);
                }
                (true, _) if is_storage_503(&resp) => {
                    seen.writes_refused += 1;
                    seen.last_write_refused = Some(now);
                }
                (false, 200) => seen.reads_ok += 1,
                (false, _) if is_storage_503(&resp) => seen.reads_refused += 1,
                (_, status) => seen.other.push(format!("{what}: {status} {}", resp.text)),
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fails the test as soon as the load met an answer that is neither success
/// nor the storage 503, showing the first few.
fn assert_no_other(seen: &Mutex<Seen>, when: &str) {
    let seen = seen.lock().unwrap();
    assert!(
        seen.other.is_empty(),
        "{when}, answers that were neither success nor the storage 503: {:?}",
        &seen.other[..seen.other.len().min(5)]
    );
}

/// Writes to `path` until the file system refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 1024 * 1024];
    let mut written = 0u64;
    for size in [chunk.len(), 4096, 1] {
        while let Ok(n @ 1..) = file.write(&chunk[..size]) {
            written += n as u64;
        }
    }
    written
}

/// The lines of `log` that say why storage failed, once per message (the
/// text after `error=`, or after the request's span or the process id), for
/// the report of a run.
fn distinct_lines<'a>(log: &'a str, marks: &[&str]) -> Vec<&'a str> {
    let message = |line: &'a str| {
        line.split_once("error=")
            .or_else(|| line.split_once("}: "))
            .or_else(|| line.split_once(']'))
            .map_or(line, |(_, m)| m)
    };
    let mut lines: Vec<&str> = Vec::new();
    for line in log.lines() {
        if marks.iter().any(|m| line.contains(m))
            && !lines.iter().any(|l| message(l) == message(line))
        {
            lines.push(line);
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_postgresql_disk_answers_503_and_heals_without_a_restart() {
    if pg_cluster::skipped("pg_full_disk") {
        return;
    }
    let started = Instant::now();
    let cluster = Cluster::start_on_tmpfs(TMPFS_MB, INITDB_ARGS);
    let url = cluster.url();
    let server = Arc::new(TestServer::start_with_env(&[
        ("ADVPS_DATABASE_URL", url.as_str()),
        ("ADVPS_RATE_LIMIT_TEST", "1000000"),
    ]));
    let key = server.test_key.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            tokio::spawn(load(
                worker,
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
        assert!(
            seen.writes_ok > 0,
            "no write succeeded before the disk filled"
        );
        assert!(
            seen.writes_refused == 0 && seen.reads_refused == 0 && seen.other.is_empty(),
            "requests failed before the disk filled: {:?}",
            seen.other
        );
    }

    // The disk fills up under load.
    let fs = cluster.fs().expect("the cluster is on a tmpfs");
    let filler = fs.join("filler");
    let filled = fill(&filler);
    let full_at = Instant::now();

    // Writes that need new space start failing; /health says so meanwhile.
    // (Its heartbeat row is another table's: it may still take a write now
    // and then while an insert elsewhere fails, so such 200s are counted for
    // the report, not refused.)
    let mut health_refused = 0u32;
    let mut health_ok_while_refused = 0u32;
    loop {
        let health = timely("/health", server.get_anon("/health")).await;
        let refused_recently = seen
            .lock()
            .unwrap()
            .last_write_refused
            .is_some_and(|at| at.elapsed() < Duration::from_millis(500));
        match health.status {
            503 => {
                assert_eq!(
                    health.header("retry-after").as_deref(),
                    Some("5"),
                    "{}",
                    health.text
                );
                health_refused += 1;
            }
            200 if refused_recently => health_ok_while_refused += 1,
            200 => {}
            other => panic!("/health on a full disk: {other} {}", health.text),
        }
        assert_no_other(&seen, "on a full disk");
        let writes_refused = seen.lock().unwrap().writes_refused;
        if writes_refused >= 5 && health_refused >= 3 {
            break;
        }
        assert!(
            full_at.elapsed() < Duration::from_secs(20),
            "20 s after the disk filled: {writes_refused} writes refused, /health 503 {} times \
             (200 {} times while writes were refused)\nadvps:\n{}\npostgres:\n{}",
            health_refused,
            health_ok_while_refused,
            server.stderr_log(),
            cluster.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Then WAL needs a new segment, which the full disk refuses too:
    // PostgreSQL PANICs and restarts itself into crash recovery, which may
    // not finish on the full disk either (its end-of-recovery WAL cannot be
    // written), and then the postmaster shuts down. A segment switch brings
    // that on now rather than after megabytes of load.
    let refused_before_switch = seen.lock().unwrap().writes_refused;
    let panic_from = Instant::now();
    while !cluster.log().contains("PANIC") {
        cluster.psql("SELECT pg_switch_wal()");
        assert!(
            panic_from.elapsed() < Duration::from_secs(10),
            "PostgreSQL did not PANIC on a full disk after WAL segment switches\npostgres:\n{}",
            cluster.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_on_full_disk = loop {
        assert_no_other(&seen, "after PostgreSQL's PANIC");
        let log = cluster.log();
        let after = &log[log.find("PANIC").expect("seen")..];
        if after.contains("database system is ready to accept connections") {
            break true;
        }
        if after.contains("database system is shut down") && !cluster.is_running() {
            break false;
        }
        assert!(
            panic_from.elapsed() < Duration::from_secs(15),
            "PostgreSQL neither recovered nor stopped after its PANIC\npostgres:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Meanwhile /health answers, and says the database takes no write.
    for _ in 0..2 {
        let health = timely("/health", server.get_anon("/health")).await;
        assert!(
            health.status == 503 || (recovered_on_full_disk && health.status == 200),
            "/health after PostgreSQL's PANIC: {} {}",
            health.status,
            health.text
        );
        health_refused += u32::from(health.status == 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let full_for = full_at.elapsed();

    // Space is back. A cluster whose recovery could not finish has stopped
    // and is started again, as its service manager would; advps is not.
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed_at = Instant::now();
    let restarted_cluster = !cluster.is_running();
    if restarted_cluster {
        cluster.pg_ctl(&["start"]);
    }
    let refused_after_panic = seen.lock().unwrap().writes_refused - refused_before_switch;
    let healed = loop {
        let written = {
            let seen = seen.lock().unwrap();
            seen.last_write_ok
                .is_some_and(|ok| ok > freed_at && seen.last_write_refused.is_none_or(|no| ok > no))
        };
        assert_no_other(&seen, "once space was back");
        if written {
            let health = timely("/health", server.get_anon("/health")).await;
            if health.status == 200 {
                break freed_at.elapsed();
            }
        }
        assert!(
            freed_at.elapsed() < Duration::from_secs(30),
            "writes still fail, or /health is not 200, 30 s after space came back\nadvps:\n{}\n\
             postgres:\n{}",
            server.stderr_log(),
            cluster.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Several writes in a row, new rows among them: no connection is left
    // in a broken transaction.
    for i in 0..8 {
        let idem = format!("pg-full-disk-after-{i}");
        let (path, headers) = if i % 2 == 0 {
            (
                "/api/v1/services/lxc_service_1/generate-password",
                vec![("idempotency-key", idem.as_str())],
            )
        } else {
            ("/api/v1/services/vps_service_1/reboot", vec![])
        };
        let request = server.request_with_headers(
            reqwest::Method::POST,
            path,
            Some(&key),
            None,
            None,
            &headers,
        );
        let resp = timely(path, request).await;
        assert_eq!(
            resp.status, 200,
            "{path} after the disk healed: {}",
            resp.text
        );
    }
    let health = timely("/health", server.get_anon("/health")).await;
    assert_eq!(health.status, 200, "health after recovery: {}", health.text);

    let log = server.stderr_log();
    let pg_log = cluster.log();
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.other.is_empty(),
            "answers on a full disk that were neither success nor the storage 503: {:?}",
            &seen.other[..seen.other.len().min(5)]
        );
        eprintln!(
            "pg_full_disk: filler {} MB; disk full for {:.1} s: writes {} ok / {} refused, reads \
             {} ok / {} refused, /health 503 {health_refused} times (200 {health_ok_while_refused} \
             times while writes were refused), {refused_after_panic} writes refused from the WAL \
             switch on; healed {:.1} s after space came back{}; {:.1} s \
             in all",
            filled / (1024 * 1024),
            full_for.as_secs_f64(),
            seen.writes_ok,
            seen.writes_refused,
            seen.reads_ok,
            seen.reads_refused,
            healed.as_secs_f64(),
            if restarted_cluster {
                " (PostgreSQL had stopped after its PANIC and was started again)"
            } else {
                " (PostgreSQL recovered from its PANIC by itself)"
            },
            started.elapsed().as_secs_f64()
        );
        for line in distinct_lines(
            &pg_log,
            &["PANIC", "ERROR", "FATAL", "LOG:  server process"],
        )
        .iter()
        .take(12)
        {
            eprintln!("  postgres: {line}");
        }
        for line in distinct_lines(&log, &[" WARN ", " ERROR "]).iter().take(16) {
            eprintln!("  advps: {line}");
        }
    }
    assert!(
        !log.contains("transaction depth"),
        "a connection went back to the pool inside a transaction:\n{log}"
    );
}
