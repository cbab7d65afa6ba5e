//! A full disk heals by itself: while the data directory's file system is
//! full, writes answer 503 `Storage is full or unavailable; retry later`
//! with `Retry-After` (never a 500), reads keep working and `GET /health`
//! reports 503; once space is back, writes succeed again with no restart.
//!
//! A request with an `Idempotency-Key` refused that way did nothing, so
//! its retry runs for real: refused again while the disk is full, answered
//! once it has healed, never told that the first is still in flight.
//!
//! The data directory is a 4 MB tmpfs mounted for the test, which needs
//! root: elsewhere the test is skipped with a notice, and with
//! `ADVPS_REQUIRE_ROOT=1` (as `.ci/test` sets it) it fails instead.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const FULL: &str = "Storage is full or unavailable; retry later";

/// Unmounts the test's file system when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazily: the server may still hold files there while it stops.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Writes to `path` until the file system refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // Whatever the last partial blocks left.
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    written
}

/// A server whose data directory is a 4 MB tmpfs, unmounted when the
/// returned guard drops; `None` when the test cannot run here.
fn server_on_small_disk() -> Option<(TestServer, Mount)> {
    if !is_root() {
        let required = std::env::var("ADVPS_REQUIRE_ROOT").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "ADVPS_REQUIRE_ROOT is set, but the full-disk test needs root to mount a tmpfs"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\nNOTICE (full_disk): skipped the full-disk test: it mounts a tmpfs and needs root; \
             run the tests as root (ADVPS_REQUIRE_ROOT=1 makes this a failure).\n"
        );
        return None;
    }
    if std::env::var("ADVPS_TEST_API_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        // The database is elsewhere: a full data directory says nothing.
        return None;
    }
    let mut mounted = None;
    let server = TestServer::start_prepared(&[], |dir| {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount a tmpfs on {}", dir.display());
        mounted = Some(Mount(dir.to_path_buf()));
    });
    Some((server, mounted.expect("mounted")))
}

#[tokio::test]
async fn a_full_disk_answers_503_and_heals_without_a_restart() {
    let Some((server, _mount)) = server_on_small_disk() else {
        return;
    };
    let key = server.test_key.clone();
    let toggle = |i: usize| if i.is_multiple_of(2) { "stop" } else { "start" };
    assert_eq!(
        server.action(&key, "vps_service_1", "stop").await.status,
        200
    );
    assert_eq!(
        server.action(&key, "vps_service_1", "start").await.status,
        200
    );

    let filler = server.data_dir().join("filler");
    assert!(fill(&filler) > 0);
    let (mut refused, mut health_refused) = (0, 0);
    for i in 0..200 {
        let resp = server.action(&key, "vps_service_1", toggle(i)).await;
        match resp.status {
            // Rewriting pages the log already holds can still succeed.
            200 | 500 if resp.status == 200 || resp.text.contains("already") => {}
            503 => {
                assert_error(&resp, 503, FULL);
                assert_eq!(
                    resp.header("retry-after").as_deref(),
                    Some("5"),
                    "{}",
                    resp.text
                );
                refused += 1;
                // Reads keep working meanwhile.
                let status = server.status(&key, "vps_service_1").await;
                assert_eq!(status.status, 200, "{}", status.text);
                if server.get_anon("/health").await.status == 503 {
                    health_refused += 1;
                }
                if refused >= 5 {
                    break;
                }
            }
            other => panic!(
                "write on a full disk: {other} {}\n{}",
                resp.text,
                server.stderr_log()
            ),
        }
    }
    assert!(
        refused >= 5,
        "writes on a full disk were not refused: {refused}"
    );
    assert!(health_refused > 0, "/health never reported the full disk");

    std::fs::remove_file(&filler).unwrap();
    // Space is back: writes succeed again, without a restart.
    let health = server.get_anon("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let mut state = server.status_data(&key, "vps_service_1").await["runningStatus"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..6 {
        let action = if state == "RUNNING" { "stop" } else { "start" };
        let resp = server.action(&key, "vps_service_1", action).await;
        assert_eq!(
            resp.status, 200,
            "{action} after the disk healed: {}",
            resp.text
        );
        state = if action == "stop" {
            "STOPPED".into()
        } else {
            "RUNNING".into()
        };
    }
    let log = server.stderr_log();
    assert!(
        !log.contains("transaction depth"),
        "a connection went back to the pool mid-transaction:\n{log}"
    );
}

/// A forced reboot of the test VPS under `idem` as its `Idempotency-Key`.
async fn reboot(server: &TestServer, key: &str, idem: &str) -> Resp {
    server
        .request_with_headers(
            reqwest::Method::POST,
            "/api/v1/services/vps_service_1/reboot",
            Some(key),
            Some("application/json"),
            Some(br#"{"mode":"force"}"#.to_vec()),
            &[("idempotency-key", idem)],
        )
        .await
}

#[tokio::test]
async fn an_idempotent_request_refused_on_a_full_disk_runs_on_retry() {
    let Some((server, _mount)) = server_on_small_disk() else {
        return;
    };
    let key = server.test_key.clone();
    let warm = reboot(&server, &key, "before-full").await;
    assert_eq!(warm.status, 200, "{}", warm.text);

    // Space is handed back a page at a time, so that some request finds
    // room to take its key but not to do its work (nor to release the key).
    let crumbs: Vec<PathBuf> = (0..256)
        .map(|i| {
            let crumb = server.data_dir().join(format!("crumb-{i}"));
            std::fs::write(&crumb, [0u8; 4096]).unwrap();
            crumb
        })
        .collect();
    let filler = server.data_dir().join("filler");
    assert!(fill(&filler) > 0);
    let mut refused = Vec::new();
    for (i, crumb) in crumbs.iter().enumerate() {
        std::fs::remove_file(crumb).unwrap();
        let idem = format!("full-disk-{i}");
        let resp = reboot(&server, &key, &idem).await;
        match resp.status {
            200 => {}
            503 => {
                assert_error(&resp, 503, FULL);
                // Still full: the retry runs again and is refused again
                // (or, should the log have room again, succeeds).
                let again = reboot(&server, &key, &idem).await;
                match again.status {
                    200 => {}
                    503 => refused.push(idem),
                    other => panic!(
                        "retry of {idem} on a full disk: {other} {}\n{}",
                        again.text,
                        server.stderr_log()
                    ),
                }
                // Enough: each retry after the disk heals takes some of
                // the room the filler gives back.
                if refused.len() >= 10 {
                    break;
                }
            }
            other => panic!(
                "reboot on a full disk: {other} {}\n{}",
                resp.text,
                server.stderr_log()
            ),
        }
    }
    assert!(
        refused.len() >= 5,
        "reboots on a full disk were not refused: {refused:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    for idem in &refused {
        let resp = reboot(&server, &key, idem).await;
        assert_eq!(
            resp.status,
            200,
            "retry of {idem} after the disk healed: {}\n{}",
            resp.text,
            server.stderr_log()
        );
        assert_eq!(
            resp.header("idempotent-replayed"),
            None,
            "{idem} ran before"
        );
        let replay = reboot(&server, &key, idem).await;
        assert_eq!(replay.status, 200, "{}", replay.text);
        assert_eq!(
            replay.header("idempotent-replayed").as_deref(),
            Some("true")
        );
    }
}
