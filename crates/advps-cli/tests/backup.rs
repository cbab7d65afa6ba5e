//! Backups and restores: `advps backup` taken while the server serves a mix of writes
//! (purchases of several accounts, power actions) restores with `advps restore` into a new
//! directory that passes the integrity check, and a server on it serves the same orders and
//! services with the same passwords (so the secret key came along). Restores refuse a
//! non-empty directory without `--force`, an encrypted backup without its passphrase or with
//! a wrong one, and a damaged file. The worker writes scheduled backups and keeps the newest.
//! On PostgreSQL the backup holds the secret key only and says to use pg_dump.
//!
//! The writes last `ADVPS_BACKUP_SOAK_SECS` seconds (default 10; CI sets 30): ten seconds
//! already run a few hundred writes around the snapshot, and the suite stays quick locally.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const FAST: &[(&str, &str)] = &[
    ("ADVPS_SANDBOX_PROVISION_SECONDS", "1"),
    ("ADVPS_SANDBOX_TASK_SECONDS", "0.5"),
    ("ADVPS_RATE_LIMIT_TEST", "1000000"),
];

fn on_postgres() -> bool {
    std::env::var("ADVPS_TEST_API_DATABASE_URL").is_ok_and(|u| !u.is_empty())
}

fn soak() -> Duration {
    let secs = std::env::var("ADVPS_BACKUP_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10u64);
    Duration::from_secs(secs)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("ADVPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run advps")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An order as a server shows it once it left PENDING: status and, per service, its id,
/// address and password.
async fn order_view(server: &TestServer, key: &str, id: &str) -> Option<Value> {
    let resp = server.get(&format!("/api/v1/purchase/{id}"), key).await;
    if resp.status == 404 {
        return None;
    }
    let data = assert_api_success(&resp, "Order retrieved successfully", "test");
    let services: Vec<Value> = data["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["serviceId"], s["ip"], s["password"]]))
        .collect();
    Some(json!({"status": data["order"]["status"], "services": services}))
}

async fn wait_settled(server: &TestServer, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = order_view(server, key, id).await.expect("order exists");
        if view["status"] != "PENDING" {
            return view;
        }
        assert!(Instant::now() < deadline, "order {id} still pending");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One account's writes until `until`: power actions on its sandbox fleet all along, and
/// purchases spread over the whole time (20 of them, within the account's sandbox stock of
/// the product). Returns the ids of the orders placed and the count of writes.
async fn write_mix(
    server: &TestServer,
    key: &str,
    until: Instant,
    soak: Duration,
) -> (Vec<String>, u64) {
    let mut orders = Vec::new();
    let mut writes = 0u64;
    let mut round = 0usize;
    let start = Instant::now();
    let pace = soak / 21;
    while Instant::now() < until {
        round += 1;
        let due = start + pace * (orders.len() as u32 + 1);
        if Instant::now() >= due {
            let resp = server
                .post_json(
                    "/api/v1/purchase/linux",
                    key,
                    &json!({"productId": "prod_abc123", "ram": "4GB", "quantity": 1, "validity": 30}),
                )
                .await;
            assert_eq!(resp.status, 200, "purchase: {}", resp.text);
            orders.push(
                resp.body["data"]["order"]["orderId"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            writes += 1;
        }
        let action = ["reboot", "stop", "start"][round % 3];
        let resp = server.action(key, "lxc_service_1", action).await;
        if resp.status == 200 {
            writes += 1;
        }
    }
    (orders, writes)
}

#[tokio::test]
async fn a_backup_taken_under_writes_restores_the_same_orders_and_passwords() {
    if on_postgres() {
        eprintln!("NOTICE: the SQLite backup test is skipped on PostgreSQL (pg_dump backs it up)");
        return;
    }
    let server = TestServer::start_with_env(FAST);
    let mut keys = vec![server.test_key.clone()];
    for name in ["acme", "globex", "initech"] {
        server.create_account(name);
        keys.push(server.create_key(name, "test"));
    }
    for name in ["demo", "acme", "globex", "initech"] {
        server.cli_ok(&["accounts", "credit", name, "100000", "--mode", "test"]);
    }
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("snapshot.advps-backup");

    let soak = soak();
    let started = Instant::now();
    let until = started + soak;
    let data_dir = server.data_dir().to_path_buf();
    let backup_file = file.clone();
    let backup = tokio::task::spawn_blocking(move || {
        std::thread::sleep(soak / 2);
        let out = run(
            &[
                "backup",
                "--to",
                backup_file.to_str().unwrap(),
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
            &[],
        );
        (Instant::now(), out)
    });
    let mixes = futures_join(&server, &keys, until, soak).await;
    let (backup_done, out) = backup.await.unwrap();
    assert!(out.status.success(), "backup failed: {}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("advps.db:") && printed.contains("secret.key:"),
        "{printed}"
    );
    assert!(
        backup_done < until,
        "the backup should finish while the writes go on (took until {:?} of {:?})",
        backup_done - started,
        soak
    );
    let writes: u64 = mixes.iter().map(|(_, w)| w).sum();
    let all_orders: Vec<(usize, String)> = mixes
        .iter()
        .enumerate()
        .flat_map(|(i, (orders, _))| orders.iter().map(move |o| (i, o.clone())))
        .collect();
    eprintln!(
        "{writes} writes in {soak:?} ({} orders); backup of {} bytes",
        all_orders.len(),
        std::fs::metadata(&file).unwrap().len()
    );
    assert!(
        all_orders.len() >= 20,
        "too few orders to mean anything: {}",
        all_orders.len()
    );

    let mut original = BTreeMap::new();
    for (i, id) in &all_orders {
        original.insert(id.clone(), (*i, wait_settled(&server, &keys[*i], id).await));
    }

    // Restore: refused into a non-empty directory, fine into a new one.
    let out = run(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            server.data_dir().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !out.status.success(),
        "restore over a live directory must be refused"
    );
    assert!(text(&out).contains("is not empty"), "{}", text(&out));

    let restored_text = std::sync::Mutex::new(String::new());
    let restored = TestServer::start_prepared_with_key(
        FAST,
        |dir: &Path| {
            let out = run(
                &[
                    "restore",
                    "--from",
                    file.to_str().unwrap(),
                    "--data-dir",
                    dir.to_str().unwrap(),
                ],
                &[],
            );
            assert!(out.status.success(), "restore failed: {}", text(&out));
            *restored_text.lock().unwrap() = text(&out);
        },
        Some(&server.test_key),
    );
    let said = restored_text.into_inner().unwrap();
    assert!(said.contains("Integrity check: ok"), "{said}");
    let sealed: usize = said
        .split("opens the ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(sealed > 0, "the restore checked no sealed password: {said}");

    // The restored orders are those committed before the snapshot: per account, the first
    // ones in the order placed, none missing in between; a settled one reads exactly as
    // the original (same services, addresses and passwords, so the key came along).
    let mut restored_count = 0usize;
    for (i, key) in keys.iter().enumerate() {
        let mine: Vec<&String> = all_orders
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, o)| o)
            .collect();
        let mut gap = false;
        for id in mine {
            match order_view(&restored, key, id).await {
                None => gap = true,
                Some(view) => {
                    assert!(!gap, "order {id} restored after a missing earlier one");
                    restored_count += 1;
                    if view["status"] != "PENDING" {
                        assert_eq!(view, original[id].1, "order {id} differs after restore");
                    }
                }
            }
        }
    }
    eprintln!(
        "{restored_count} of {} orders in the snapshot",
        all_orders.len()
    );
    assert!(restored_count > 0, "the snapshot holds no order");
    assert!(
        restored_count < all_orders.len(),
        "every order is in the snapshot: it was not taken during the writes"
    );
}

async fn futures_join(
    server: &TestServer,
    keys: &[String],
    until: Instant,
    soak: Duration,
) -> Vec<(Vec<String>, u64)> {
    let mut out = Vec::new();
    let futures: Vec<_> = keys
        .iter()
        .map(|k| write_mix(server, k, until, soak))
        .collect();
    for r in join_all(futures).await {
        out.push(r);
    }
    out
}

/// Runs the futures concurrently on this task and returns their results in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn restore_refuses_wrong_passphrases_and_damaged_files() {
    if on_postgres() {
        eprintln!("NOTICE: the SQLite restore checks are skipped on PostgreSQL");
        return;
    }
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sealed = dir.path().join("sealed.bak");
    let data = server.data_dir().to_str().unwrap().to_string();
    let out = run(
        &[
            "backup",
            "--to",
            sealed.to_str().unwrap(),
            "--passphrase-env",
            "BK_PASS",
            "--data-dir",
            &data,
        ],
        &[("BK_PASS", "correct horse")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("encrypted"), "{}", text(&out));
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(
        !bytes.windows(6).any(|w| w == b"SQLite"),
        "the encrypted backup shows the database in clear"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sealed).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let target = dir.path().join("new");
    let target_s = target.to_str().unwrap().to_string();
    let sealed_s = sealed.to_str().unwrap().to_string();
    let out = run(
        &["restore", "--from", &sealed_s, "--data-dir", &target_s],
        &[],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("is encrypted"), "{}", text(&out));
    let out = run(
        &[
            "restore",
            "--from",
            &sealed_s,
            "--data-dir",
            &target_s,
            "--passphrase-env",
            "BK_PASS",
        ],
        &[("BK_PASS", "wrong horse")],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong passphrase"), "{}", text(&out));
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, "correct horse\n").unwrap();
    let out = run(
        &[
            "restore",
            "--from",
            &sealed_s,
            "--data-dir",
            &target_s,
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Integrity check: ok"), "{}", text(&out));
    // --force replaces the database and key of a directory that has them.
    let out = run(
        &[
            "restore",
            "--from",
            &sealed_s,
            "--data-dir",
            &target_s,
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    let out = run(
        &[
            "restore",
            "--from",
            &sealed_s,
            "--data-dir",
            &target_s,
            "--force",
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    // A plain backup with one byte of its database changed is refused.
    let plain = dir.path().join("plain.bak");
    let out = run(
        &[
            "backup",
            "--to",
            plain.to_str().unwrap(),
            "--data-dir",
            &data,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut bytes = std::fs::read(&plain).unwrap();
    let at = bytes
        .windows(15)
        .position(|w| w == b"SQLite format 3")
        .unwrap()
        + 4096;
    bytes[at] ^= 0xff;
    std::fs::write(&plain, &bytes).unwrap();
    let out = run(
        &[
            "restore",
            "--from",
            plain.to_str().unwrap(),
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not match its checksum"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn the_worker_writes_scheduled_backups_and_keeps_the_newest() {
    if on_postgres() {
        eprintln!("NOTICE: scheduled backups are SQLite's; skipped on PostgreSQL");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let server = TestServer::start_with_env(&[
        ("ADVPS_BACKUP_DIR", backups.to_str().unwrap()),
        ("ADVPS_BACKUP_EVERY", "1s"),
        ("ADVPS_BACKUP_KEEP", "2"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&backups)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    // Four periods: at least three backups written, two kept.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    loop {
        let names = list();
        if names.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backups: {names:?}\n{}",
            server.stderr_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = server.stderr_log();
    assert!(
        log.matches("scheduled backup written").count() >= 3,
        "fewer than three scheduled backups: {log}"
    );
    let newest = backups.join(list().last().unwrap());
    let out = run(
        &[
            "restore",
            "--from",
            newest.to_str().unwrap(),
            "--data-dir",
            dir.path().join("r").to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn on_postgresql_the_backup_holds_the_key_and_says_pg_dump() {
    if !on_postgres() {
        eprintln!("NOTICE: the PostgreSQL backup test runs with ADVPS_TEST_API_DATABASE_URL");
        return;
    }
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key.bak");
    let out = server.cli(&["backup", "--to", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("pg_dump") && said.contains("secret key only"),
        "{said}"
    );
    assert!(!said.contains("advps.db:"), "{said}");
    let target = dir.path().join("restored");
    let out = run(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pg_restore"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(target.join("secret.key")).unwrap(),
        std::fs::read_to_string(server.data_dir().join("secret.key")).unwrap()
    );
}
