//! Safe upgrades: a database made by the first released schema (built here from the first
//! migration file of each backend alone, whatever the current count) holding an account, a
//! key, a product and a service, migrates to the current schema with `advps migrate`, and the
//! server then serves the same state on SQLite and on PostgreSQL. `advps migrate --dry-run`
//! lists what would run without running it; a database migrated by a newer advps (a version
//! this build does not know) is refused with a message that says so, by `serve` and
//! `migrate` alike.

mod common;

use common::*;
use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::Executor;

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../advps-store/migrations");

/// The first migration of a backend's set, as sqlx would apply it.
async fn first_only(backend: &str) -> Migrator {
    let mut migrator = Migrator::new(Path::new(&format!("{MIGRATIONS}/{backend}")))
        .await
        .expect("read migrations");
    let first = migrator.migrations[0].clone();
    assert_eq!(first.version, 1);
    migrator.migrations = Cow::Owned(vec![first]);
    migrator
}

fn advps(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("ADVPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd.output().expect("run advps")
}

fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The rows an operator of the first version had: account `oldco` with a test key, a live
/// product with a manual stock, and a running test-mode service with an address.
fn seed_sql(key_hash: &str) -> String {
    format!(
        "INSERT INTO accounts (id, name, created_at) VALUES (1, 'oldco', 1700000000000);
         INSERT INTO api_keys (id, account_id, mode, key_hash, last4, created_at)
           VALUES ('key_old000000000000001', 1, 'test', '{key_hash}', 'abcd', 1700000000000);
         INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, created_at)
           VALUES ('live', 'prod_old', 'Old Box', 'Old Pack', 'LXC', 7, 1700000000000);
         INSERT INTO services (account_id, mode, service_id, service_type, vmid, power_state,
             ip, os_slug, os_name, started_at, expires_at, created_at)
           VALUES (1, 'test', 'lxc_old_1', 'LINUX', 'lxc-4711', 'RUNNING', '203.0.113.77',
             'debian-12', 'Debian 12', 1700000000000, 4102444800000, 1700000000000);"
    )
}

/// `advps serve` on `args`' database until dropped.
struct Served {
    child: std::process::Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Served {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("ADVPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut served = Served {
        child: cmd.spawn().expect("spawn advps serve"),
        base: String::new(),
    };
    let stdout = served.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server did not start");
        if let Some(url) = line.strip_prefix("Listening on ") {
            served.base = url.trim().to_string();
            return served;
        }
    }
}

/// The same state, read back from the upgraded database through the API and the CLI.
async fn check_state(served: &Served, key: &str, db_args: &[&str]) {
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/api/v1/services/lxc_old_1/status", served.base))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let data = &body["data"];
    assert_eq!(data["serviceId"], "lxc_old_1", "{body}");
    assert_eq!(data["serviceType"], "LINUX", "{body}");
    assert_eq!(data["ip"], "203.0.113.77", "{body}");
    assert_eq!(data["service"]["os"]["id"], "debian-12", "{body}");
    assert_eq!(
        data["service"]["expiryDate"], "2100-01-01T00:00:00.000Z",
        "{body}"
    );
    assert_eq!(data["runningStatus"], "RUNNING", "{body}");

    let mut args = vec!["products", "list"];
    args.extend_from_slice(db_args);
    let out = advps(&args, &[]);
    assert!(out.status.success(), "{}", said(&out));
    let list = said(&out);
    let row = list
        .lines()
        .find(|l| l.starts_with("prod_old"))
        .unwrap_or_else(|| panic!("the old product is gone: {list}"));
    assert!(row.contains("Old Box") && row.contains(" 7 "), "{row}");
    let mut args = vec!["keys", "list", "--account", "oldco"];
    args.extend_from_slice(db_args);
    let out = advps(&args, &[]);
    assert!(
        said(&out).contains("key_old000000000000001"),
        "{}",
        said(&out)
    );
}

/// Migrates a first-schema database with `db_args`, after the dry run, and checks it.
async fn upgrade_and_check(db_args: &[&str], key: &str) {
    let mut args = vec!["migrate", "--dry-run"];
    args.extend_from_slice(db_args);
    let out = advps(&args, &[]);
    assert!(out.status.success(), "{}", said(&out));
    let plan = said(&out);
    assert!(plan.contains("1 of "), "{plan}");
    assert!(plan.contains("Would run:\n  0002 live mode"), "{plan}");
    assert!(!plan.contains("  0001"), "{plan}");
    // The dry run changed nothing.
    let again = said(&advps(&args, &[]));
    assert_eq!(plan, again);

    let mut args = vec!["migrate"];
    args.extend_from_slice(db_args);
    let out = advps(&args, &[]);
    assert!(out.status.success(), "{}", said(&out));
    let mut args = vec!["migrate", "--dry-run"];
    args.extend_from_slice(db_args);
    assert!(said(&advps(&args, &[])).contains("Nothing to run"));

    let served = serve(db_args);
    check_state(&served, key, db_args).await;
}

#[tokio::test]
async fn a_first_schema_sqlite_database_upgrades_and_serves_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let key = advps_domain::api_key::generate(advps_domain::Mode::Test);
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data.join("advps.db"))
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        first_only("sqlite").await.run(&pool).await.unwrap();
        pool.execute(seed_sql(&key.hash).as_str()).await.unwrap();
        pool.close().await;
    }
    let data_s = data.to_str().unwrap().to_string();
    upgrade_and_check(&["--data-dir", &data_s], &key.plaintext).await;
}

#[tokio::test]
async fn a_first_schema_postgres_database_upgrades_and_serves_the_same_state() {
    let Some(admin) = std::env::var("ADVPS_TEST_API_DATABASE_URL")
        .or_else(|_| std::env::var("ADVPS_TEST_DATABASE_URL"))
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "NOTICE: the PostgreSQL upgrade test needs ADVPS_TEST_API_DATABASE_URL \
             (e.g. postgres://postgres:advps@127.0.0.1:5432/postgres after .ci/pg-up)"
        );
        return;
    };
    let name = format!("advps_upgrade_{}_{}", std::process::id(), now_ms());
    let admin_pool = sqlx::PgPool::connect(&admin).await.unwrap();
    admin_pool
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    let url = format!("{base}/{name}");
    let key = advps_domain::api_key::generate(advps_domain::Mode::Test);
    {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        first_only("postgres").await.run(&pool).await.unwrap();
        pool.execute(seed_sql(&key.hash).as_str()).await.unwrap();
        // Identity columns count on from the rows given explicitly, as in use.
        pool.execute("SELECT setval(pg_get_serial_sequence('accounts', 'id'), 1)")
            .await
            .unwrap();
        pool.close().await;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_s = dir.path().join("data").to_str().unwrap().to_string();
    upgrade_and_check(
        &["--data-dir", &data_s, "--database-url", &url],
        &key.plaintext,
    )
    .await;
    let _ = admin_pool
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await;
}

#[tokio::test]
async fn a_database_from_a_newer_advps_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_string();
    let out = advps(&["migrate", "--data-dir", &data_s], &[]);
    assert!(out.status.success(), "{}", said(&out));
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("advps.db"));
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        pool.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, X'00', 0)",
        )
        .await
        .unwrap();
        pool.close().await;
    }
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_s],
        vec!["migrate", "--data-dir", &data_s],
        vec!["migrate", "--dry-run", "--data-dir", &data_s],
    ] {
        let out = advps(&args, &[]);
        assert!(
            !out.status.success(),
            "{args:?} should refuse: {}",
            said(&out)
        );
        let text = said(&out);
        assert!(
            text.contains("newer advps") && text.contains("9999"),
            "{args:?} does not say the database is newer: {text}"
        );
    }
}
