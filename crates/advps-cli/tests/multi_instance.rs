//! Several `advps serve` instances on one PostgreSQL database, as behind a
//! load balancer: a key's quota admits exactly its limit across all of
//! them under concurrent load; a rebuild started through one instance is
//! polled through another; an instance killed mid-task leaves the task to
//! the others; concurrent purchases of the last machine spread over the
//! instances never sell it twice.
//!
//! Needs PostgreSQL: `ADVPS_TEST_DATABASE_URL` (an administrator URL, as
//! `.ci/test` sets it); the test makes and drops its own database. Without
//! it the test is skipped with a notice, unless `ADVPS_REQUIRE_POSTGRES` is
//! set (as in `.ci/test`), where that is a failure.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../../advps-drivers/tests/support/require.rs"]
#[allow(dead_code)]
mod require;

const BIN: &str = env!("CARGO_BIN_EXE_advps");
/// The encryption key every instance shares (base64 of 32 bytes).
const SHARED_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

struct Instance {
    child: Child,
    url: String,
    key: Option<String>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(admin: &str, sql: &str) {
    let out = Command::new("psql")
        .args([admin, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn database() -> Option<Database> {
    let admin = std::env::var("ADVPS_TEST_DATABASE_URL").unwrap_or_default();
    if admin.is_empty() {
        require::missing(
            require::REQUIRE_POSTGRES,
            "the multi-instance tests on PostgreSQL",
            "ADVPS_TEST_DATABASE_URL is not set",
            "run .ci/pg-up as root and export the ADVPS_TEST_DATABASE_URL it prints",
        );
        return None;
    }
    assert!(
        require::has_program("psql", "--version"),
        "ADVPS_TEST_DATABASE_URL is set but psql (postgresql-client) is not installed"
    );
    let name = format!(
        "advps_multi_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin.clone());
    Some(Database {
        url: format!("{base}/{name}"),
        admin,
        name,
    })
}

fn start(db: &Database, dir: &std::path::Path, extra: &[(&str, &str)]) -> Instance {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("ADVPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("ADVPS_DATABASE_URL", &db.url)
        .env("ADVPS_SECRET_KEY", SHARED_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn advps serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut key = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("advps serve printed no listening line");
        };
        if line.starts_with("sk_test_") {
            key = Some(line.trim().to_string());
        }
        if let Some(rest) = line.split("Listening on ").nth(1) {
            return Instance {
                child,
                url: rest.trim().to_string(),
                key,
            };
        }
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).header("x-api-key", key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn new_key(db: &Database, dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--account",
            "demo",
            "--mode",
            "test",
            "--data-dir",
        ])
        .arg(dir)
        .env("ADVPS_DATABASE_URL", &db.url)
        .env("ADVPS_SECRET_KEY", SHARED_KEY)
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn three_instances_share_quotas_tasks_and_stock() {
    let Some(db) = database() else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let env = [
        ("ADVPS_RATE_LIMIT_TEST", "30"),
        ("ADVPS_SANDBOX_TASK_SECONDS", "3"),
    ];
    let a = start(&db, dirs[0].path(), &env);
    let b = start(&db, dirs[1].path(), &env);
    let mut c = start(&db, dirs[2].path(), &env);
    let key = a
        .key
        .clone()
        .expect("the first instance creates the demo account and prints its key");
    assert!(
        b.key.is_none() && c.key.is_none(),
        "only the first start creates the demo account"
    );
    let urls = [a.url.clone(), b.url.clone(), c.url.clone()];
    let client = reqwest::Client::new();

    // The quota is one, whichever instance answers: 90 concurrent requests, 30 admitted.
    let mut handles = Vec::new();
    for i in 0..90 {
        let url = format!("{}/api/v1/services/vps_service_1/status", urls[i % 3]);
        let (client, key) = (client.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            call(&client, reqwest::Method::GET, &url, &key, None)
                .await
                .0
        }));
    }
    let mut codes = Vec::new();
    for h in handles {
        codes.push(h.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 30, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 60, "{codes:?}");

    // A rebuild started through A is polled through B.
    let key = new_key(&db, dirs[0].path());
    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        &format!("{}/api/v1/services/vps_service_1/rebuild", urls[0]),
        &key,
        Some(json!({"os": "debian-12"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let task = body["data"]["taskId"].as_str().unwrap().to_string();
    let (status, seen) = call(
        &client,
        reqwest::Method::GET,
        &format!("{}/api/v1/services/task/{task}/status", urls[1]),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert!(
        matches!(
            seen["data"]["status"].as_str(),
            Some("PENDING" | "IN_PROGRESS")
        ),
        "{seen}"
    );

    // Another rebuild through C; C is killed at once; A and B finish and report it.
    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        &format!("{}/api/v1/services/vps_service_2/rebuild", urls[2]),
        &key,
        Some(json!({"os": "debian-11"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let orphan = body["data"]["taskId"].as_str().unwrap().to_string();
    c.child.kill().unwrap();
    let _ = c.child.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in [&task, &orphan] {
        loop {
            let (_, seen) = call(
                &client,
                reqwest::Method::GET,
                &format!("{}/api/v1/services/task/{id}/status", urls[1]),
                &key,
                None,
            )
            .await;
            if seen["data"]["status"] == "COMPLETED" {
                break;
            }
            assert!(Instant::now() < deadline, "task {id} not finished: {seen}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let (_, status) = call(
        &client,
        reqwest::Method::GET,
        &format!("{}/api/v1/services/vps_service_2/status", urls[0]),
        &key,
        None,
    )
    .await;
    assert_eq!(
        status["data"]["service"]["os"]["id"], "debian-11",
        "{status}"
    );

    // The last machine, bought through two instances at once: sold once, charged once.
    let order = json!({"productId": "prod_pqr678", "ram": "32 GB"});
    let (buy_a, buy_b) = (
        format!("{}/api/v1/purchase/linux", urls[0]),
        format!("{}/api/v1/purchase/linux", urls[1]),
    );
    let (r1, r2) = tokio::join!(
        call(
            &client,
            reqwest::Method::POST,
            &buy_a,
            &key,
            Some(order.clone())
        ),
        call(
            &client,
            reqwest::Method::POST,
            &buy_b,
            &key,
            Some(order.clone())
        ),
    );
    let mut codes = [r1.0, r2.0];
    codes.sort();
    assert_eq!(codes, [200, 409], "{} / {}", r1.1, r2.1);
    let (_, stock) = call(
        &client,
        reqwest::Method::GET,
        &format!("{}/api/v1/products/stock/prod_pqr678", urls[1]),
        &key,
        None,
    )
    .await;
    assert_eq!(stock["data"]["stock"]["stock"], 0, "{stock}");

    // Health reports the shared database.
    let health: Value = client
        .get(format!("{}/health", urls[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["data"]["database"], "postgres", "{health}");
    drop((a, b, c));
}
