//! Shared harness for the black-box tests of the `advps` binary.
//!
//! [`TestServer`] runs the real binary (`advps serve`) on an ephemeral port with a fresh data
//! directory, captures the first-start test key and the base URL from its standard output,
//! keeps draining that output in a background thread, and kills the process when dropped.
//! It can also restart the server gracefully (SIGTERM) on the same data directory and run the
//! administrative subcommands (`accounts`, `keys`, `products`) against that directory.
//!
//! The free functions check the shared response shapes of the contract: the success and error
//! envelopes, timestamps, request ids, API keys and generated passwords.
//!
//! Every response that [`TestServer::request`] receives is also checked against the OpenAPI
//! document the server itself serves (`/api/v1/openapi.json`, fetched once per server): the
//! operation must be declared for the method and path, the status must be declared for it, and a
//! JSON body must match the declared schema. So the document cannot drift from the code.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use serde_json::{json, Value};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_advps");

/// How long a server start may take before the test gives up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a graceful shutdown may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The exact 401 message of the contract.
pub const UNAUTHORIZED: &str = "Missing or invalid API key";
/// The exact 404 message for services.
pub const SERVICE_NOT_FOUND: &str = "Service not found or not accessible";
/// The exact 404 message for tasks.
pub const TASK_NOT_FOUND: &str = "Task not found or not accessible";
/// The exact 409 message while a task runs on a service.
pub const BUSY: &str = "Service is busy: a task is in progress";

/// A running `advps serve` process on its own data directory.
pub struct TestServer {
    child: Option<Child>,
    root: tempfile::TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT` of the current run.
    pub base_url: String,
    /// The test key printed on the first start.
    pub test_key: String,
    /// Standard output lines printed by the current run up to (and including) the listening line.
    pub startup_lines: Vec<String>,
    /// The key printed by the current run, if any (only the first start prints one).
    pub printed_key: Option<String>,
    client: reqwest::Client,
    /// The PostgreSQL database of this server (admin URL, name), when the
    /// suite runs against PostgreSQL; dropped with the server.
    database: Option<(String, String)>,
    /// The served OpenAPI document, fetched on first use.
    openapi: tokio::sync::OnceCell<Value>,
    /// Compiled response schemas, by operation and status.
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// What one spawn of the server produced.
struct Spawned {
    child: Child,
    base_url: String,
    key: Option<String>,
    lines: Vec<String>,
}

/// Where the server serves its OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The operation of `doc` for `method` (lower case) on `path`, with its path template. Paths
/// match a template segment by segment, `{name}` matching any one segment; when several
/// templates match, the one with the fewest parameters wins (`/purchase/linux` over
/// `/purchase/{orderId}`). `None` if no template declares the method.
pub fn find_operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<(String, &'a Value)> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, String, &Value)> = None;
    for (template, item) in doc["paths"].as_object()? {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut params = 0;
        let matches = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                params += 1;
                !s.is_empty()
            } else {
                t == s
            }
        });
        let Some(operation) = item.get(method) else {
            continue;
        };
        if matches && best.as_ref().is_none_or(|(p, _, _)| params < *p) {
            best = Some((params, template.clone(), operation));
        }
    }
    best.map(|(_, template, operation)| (template, operation))
}

/// A decoded HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// A header value as a string, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not ASCII").to_string())
    }

    /// A header value parsed as an integer; panics if absent or not an integer.
    pub fn header_u64(&self, name: &str) -> u64 {
        let raw = self
            .header(name)
            .unwrap_or_else(|| panic!("missing header {name}: {self:?}"));
        raw.trim()
            .parse()
            .unwrap_or_else(|_| panic!("header {name} is not an integer: {raw:?}"))
    }

    /// `body.data`.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("ADVPS_") {
            cmd.env_remove(k);
        }
    }
}

/// How long after a command-line change the tests wait before relying on
/// the server having seen it (the bound is a second; it takes about a tenth).
const CLI_VISIBLE_AFTER: Duration = Duration::from_millis(300);

impl TestServer {
    /// Starts a server with default settings on a fresh data directory.
    pub fn start() -> TestServer {
        Self::start_with_env(&[])
    }

    /// Starts a server with extra environment variables on a fresh data directory.
    pub fn start_with_env(env: &[(&str, &str)]) -> TestServer {
        Self::start_prepared(env, |_| {})
    }

    /// Like [`TestServer::start_with_env`], with `prepare` run on the empty
    /// data directory before the server starts (to mount a small file
    /// system there, say).
    pub fn start_prepared(env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> TestServer {
        Self::start_prepared_with_key(env, prepare, None)
    }

    /// Like [`TestServer::start_prepared`] on a data directory that `prepare`
    /// fills with an existing database (a restored backup, say): such a start
    /// prints no key, and `known_key` is the test key the tests use.
    pub fn start_prepared_with_key(
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
        known_key: Option<&str>,
    ) -> TestServer {
        let root = tempfile::tempdir().expect("create temp dir");
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        prepare(&data_dir);
        let log_path = root.path().join("server-stderr.log");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // ADVPS_TEST_API_DATABASE_URL runs the suite against PostgreSQL: a
        // fresh database for each server, dropped afterwards.
        let database = std::env::var("ADVPS_TEST_API_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|admin| {
                // Servers of one test binary start in parallel: a counter
                // keeps their databases apart within the same millisecond.
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let name = format!("advps_api_{}_{}_{n}", std::process::id(), now_ms());
                psql(&admin, &format!("CREATE DATABASE {name}"));
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                env.push(("ADVPS_DATABASE_URL".into(), format!("{base}/{name}")));
                (admin, name)
            });
        let spawned = spawn_server(&data_dir, &log_path, &env);
        let test_key = spawned
            .key
            .clone()
            .or(known_key.map(str::to_string))
            .unwrap_or_else(|| {
                panic!(
                    "first start printed no test key; stdout: {:?}\nstderr:\n{}",
                    spawned.lines,
                    read_log(&log_path)
                )
            });
        // The server closes a keep-alive connection that stays quiet for its
        // header read timeout (10 s). A test that blocks its thread longer
        // than that (waiting on a guest through virsh, say) keeps the client
        // from seeing the close, and the next request would go out on the
        // dead connection; a pooled connection is never reused after 5 s.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("build HTTP client");
        TestServer {
            child: Some(spawned.child),
            root,
            data_dir,
            log_path,
            env,
            base_url: spawned.base_url,
            test_key,
            startup_lines: spawned.lines,
            printed_key: spawned.key,
            database,
            client,
            openapi: tokio::sync::OnceCell::new(),
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The data directory of this server.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the server wrote to standard error so far (for failure messages).
    pub fn stderr_log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Sends SIGTERM, asserts a graceful exit (status 0), then starts again on the same data dir.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "server did not shut down gracefully on SIGTERM: {status:?}\nstderr:\n{}",
            self.stderr_log()
        );
        let spawned = spawn_server(&self.data_dir, &self.log_path, &self.env);
        self.child = Some(spawned.child);
        self.base_url = spawned.base_url;
        self.startup_lines = spawned.lines;
        self.printed_key = spawned.key;
    }

    /// Kills the server with SIGKILL (no chance to clean up), then starts it again on the same
    /// data directory.
    pub fn kill_and_restart(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        let pid = child.id().to_string();
        let kill = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -KILL {pid} failed");
        let status = child.wait().expect("wait for killed server");
        assert!(!status.success(), "a killed server exited with {status:?}");
        let spawned = spawn_server(&self.data_dir, &self.log_path, &self.env);
        self.child = Some(spawned.child);
        self.base_url = spawned.base_url;
        self.startup_lines = spawned.lines;
        self.printed_key = spawned.key;
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        let pid = child.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM\nstderr:\n{}",
                    self.stderr_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the binary with `args` followed by `--data-dir <this server's data dir>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        scrub_env(&mut cmd);
        for (k, v) in self.env.iter().filter(|(k, _)| k == "ADVPS_DATABASE_URL") {
            cmd.env(k, v);
        }
        let out = cmd
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run advps CLI");
        if self.child.is_some() {
            // The command line is another process: the server drops what it
            // cached of the keys and services it changed once it sees the
            // commit (within a tenth of a second on SQLite, a notification on
            // PostgreSQL). Tests read right after, as if it were at once.
            std::thread::sleep(CLI_VISIBLE_AFTER);
        }
        out
    }

    /// Runs the CLI, asserts success and returns its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "advps {args:?} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("CLI stdout is UTF-8")
    }

    /// `advps accounts create NAME`.
    pub fn create_account(&self, name: &str) {
        let out = self.cli_ok(&["accounts", "create", name]);
        assert!(
            out.contains(&format!("Created account {name}")),
            "unexpected output of accounts create: {out:?}"
        );
    }

    /// `advps keys create --account NAME --mode MODE`; returns the key from the last line.
    pub fn create_key(&self, account: &str, mode: &str) -> String {
        let out = self.cli_ok(&["keys", "create", "--account", account, "--mode", mode]);
        let key = last_line(&out);
        assert!(
            is_api_key(&key, mode),
            "last stdout line of keys create is not a {mode} key: {out:?}"
        );
        key
    }

    /// The id (`key_...`) of the listed key of `account` whose display ends with the last four
    /// characters of `key`.
    pub fn key_id_of(&self, account: &str, key: &str) -> String {
        let out = self.cli_ok(&["keys", "list", "--account", account]);
        let last4 = &key[key.len() - 4..];
        let prefix = &key[..8];
        let display = format!("{prefix}\u{2026}{last4}");
        let line = out
            .lines()
            .find(|l| l.contains(&display))
            .unwrap_or_else(|| panic!("key {display} not in keys list:\n{out}"));
        line.split_whitespace()
            .find(|w| w.starts_with("key_"))
            .unwrap_or_else(|| panic!("no key_ id on line {line:?}"))
            .to_string()
    }

    /// Full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A request with full control over method, key, content type and body.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.request_with_headers(method, path, key, content_type, body, &[])
            .await
    }

    /// `GET path` with an API key and extra request headers.
    pub async fn get_with_headers(&self, path: &str, key: &str, headers: &[(&str, &str)]) -> Resp {
        self.request_with_headers(reqwest::Method::GET, path, Some(key), None, None, headers)
            .await
    }

    /// Like [`TestServer::request`], with extra request headers.
    pub async fn request_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.client.request(method.clone(), self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!(
                "request to {path} failed: {e}\nstderr:\n{}",
                self.stderr_log()
            )
        });
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("read response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let resp = Resp {
            status,
            headers,
            body,
            text,
        };
        self.check_against_openapi(&method, path, &resp).await;
        resp
    }

    /// The OpenAPI document this server serves (fetched once).
    pub async fn openapi(&self) -> &Value {
        self.openapi
            .get_or_init(|| async {
                // A connection of its own: the request just checked may have
                // been refused before its body was read (413), and the
                // server then closes that connection, which a pooled client
                // could otherwise pick for this request.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("an HTTP client");
                let resp = client
                    .get(self.url(OPENAPI_PATH))
                    .send()
                    .await
                    .expect("fetch the OpenAPI document");
                assert_eq!(resp.status().as_u16(), 200, "GET {OPENAPI_PATH}");
                resp.json().await.expect("the OpenAPI document is JSON")
            })
            .await
    }

    /// Fails the test unless `resp` is what the OpenAPI document declares for `method path`.
    async fn check_against_openapi(&self, method: &reqwest::Method, path: &str, resp: &Resp) {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        if path == OPENAPI_PATH {
            return;
        }
        let doc = self.openapi().await;
        let method_key = method.as_str().to_ascii_lowercase();
        let context = || format!("{method} {path} -> {}: {}", resp.status, resp.text);
        let Some((template, operation)) = find_operation(doc, &method_key, path) else {
            // Not an operation of the API: only the router's own answers may come back,
            // 404 for an unknown path and 405 for a known path with another method.
            assert!(
                resp.status == 404 || resp.status == 405,
                "{} is not in the OpenAPI document: annotate its handler with #[utoipa::path] \
                 and register it with routes!(...) in its module's router() ({})",
                path,
                context()
            );
            let schema = json!({ "$ref": "#/components/schemas/ErrorEnvelope" });
            self.validate_json(doc, "generic-error", &schema, resp, &context);
            return;
        };
        let responses = &operation["responses"];
        let status = resp.status.to_string();
        let declared = responses
            .get(&status)
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| {
                let known: Vec<&String> = responses
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                panic!(
                    "status {status} is not declared for {method_key} {template} (declared: {known:?}); {}",
                    context()
                )
            });
        let content = declared.get("content").and_then(Value::as_object);
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            assert!(
                resp.text.is_empty(),
                "{method_key} {template} {status} declares no body but one came: {}",
                context()
            );
            return;
        };
        if method == reqwest::Method::HEAD {
            return;
        }
        let media = resp
            .header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let entry = content.get(&media).unwrap_or_else(|| {
            panic!(
                "{method_key} {template} {status} declares {:?}, the response is {media:?}; {}",
                content.keys().collect::<Vec<_>>(),
                context()
            )
        });
        if media != "application/json" {
            return;
        }
        let schema = entry.get("schema").cloned().unwrap_or(json!({}));
        let key = format!("{method_key} {template} {status}");
        self.validate_json(doc, &key, &schema, resp, &context);
    }

    fn validate_json(
        &self,
        doc: &Value,
        key: &str,
        schema: &Value,
        resp: &Resp,
        context: &dyn Fn() -> String,
    ) {
        let instance: Value = serde_json::from_str(&resp.text)
            .unwrap_or_else(|e| panic!("{key}: the body is not JSON ({e}); {}", context()));
        let validator =
            {
                let mut cache = self.validators.lock().unwrap();
                Arc::clone(cache.entry(key.to_string()).or_insert_with(|| {
                    // The operation's schema refers to `#/components/schemas/...`: validate against a
                    // wrapper whose root holds the document's components, so those pointers resolve.
                    let wrapper = json!({
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "components": doc["components"],
                        "allOf": [schema],
                    });
                    Arc::new(jsonschema::draft202012::new(&wrapper).unwrap_or_else(|e| {
                        panic!("{key}: the declared schema does not compile: {e}")
                    }))
                }))
            };
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{key}: the response does not match the OpenAPI schema:\n  {}\n{}",
            errors.join("\n  "),
            context()
        );
    }

    /// `GET path` with an API key.
    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.request(reqwest::Method::GET, path, Some(key), None, None)
            .await
    }

    /// `GET path` without an API key.
    pub async fn get_anon(&self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, None, None, None)
            .await
    }

    /// `POST path` without a body.
    pub async fn post(&self, path: &str, key: &str) -> Resp {
        self.request(reqwest::Method::POST, path, Some(key), None, None)
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.request(
            reqwest::Method::POST,
            path,
            Some(key),
            Some("application/json"),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    /// `POST /api/v1/services/{id}/{action}`.
    pub async fn action(&self, key: &str, id: &str, action: &str) -> Resp {
        self.post(&format!("/api/v1/services/{id}/{action}"), key)
            .await
    }

    /// `GET /api/v1/services/{id}/status`.
    pub async fn status(&self, key: &str, id: &str) -> Resp {
        self.get(&format!("/api/v1/services/{id}/status"), key)
            .await
    }

    /// `data` of a successful status call.
    pub async fn status_data(&self, key: &str, id: &str) -> Value {
        let resp = self.status(key, id).await;
        assert_success(&resp, "Service status retrieved successfully").clone()
    }

    /// `POST /api/v1/services/{id}/rebuild` with `{"os": os}`.
    pub async fn rebuild(&self, key: &str, id: &str, os: &str) -> Resp {
        self.post_json(
            &format!("/api/v1/services/{id}/rebuild"),
            key,
            &json!({ "os": os }),
        )
        .await
    }

    /// Starts a rebuild, asserts it was accepted and returns the task id.
    pub async fn start_rebuild(&self, key: &str, id: &str, os: &str) -> String {
        let resp = self.rebuild(key, id, os).await;
        assert_eq!(resp.status, 200, "rebuild of {id} to {os}: {}", resp.text);
        resp.data()["taskId"]
            .as_str()
            .unwrap_or_else(|| panic!("no taskId: {}", resp.text))
            .to_string()
    }

    /// `GET /api/v1/services/task/{taskId}/status`.
    pub async fn task(&self, key: &str, task_id: &str) -> Resp {
        self.get(&format!("/api/v1/services/task/{task_id}/status"), key)
            .await
    }

    /// Polls a task every `every` until COMPLETED or FAILED; returns every observed `data`.
    pub async fn wait_task(
        &self,
        key: &str,
        task_id: &str,
        every: Duration,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let resp = self.task(key, task_id).await;
            let data = assert_success(&resp, "Task status retrieved successfully").clone();
            let status = data["status"].as_str().unwrap_or_default().to_string();
            seen.push(data);
            if status == "COMPLETED" || status == "FAILED" {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} not finished within {timeout:?}; observed: {seen:?}"
            );
            tokio::time::sleep(every).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((admin, name)) = self.database.take() {
            psql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// Runs one SQL statement as the PostgreSQL administrator.
fn psql(admin_url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn spawn_server(data_dir: &Path, log_path: &Path, env: &[(String, String)]) -> Spawned {
    let log: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open server log");
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn advps serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Keeps reading until EOF so the pipe never fills, even once nobody listens.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut lines = Vec::new();
    let mut key = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(line) => {
                let trimmed = line.trim_end().to_string();
                if is_api_key(&trimmed, "test") {
                    key = Some(trimmed.clone());
                }
                lines.push(trimmed.clone());
                if let Some(idx) = trimmed.find("Listening on http://") {
                    let rest = &trimmed[idx + "Listening on ".len()..];
                    let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let url = url.trim_end_matches(['/', '.', ',']).to_string();
                    return Spawned {
                        child,
                        base_url: url,
                        key,
                        lines,
                    };
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server printed no listening line within {STARTUP_TIMEOUT:?}; stdout: {lines:?}\nstderr:\n{}",
                    read_log(log_path)
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!(
                    "server exited before listening ({status:?}); stdout: {lines:?}\nstderr:\n{}",
                    read_log(log_path)
                );
            }
        }
    }
}

/// The last non-empty line of a text, trimmed.
pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// `sk_<mode>_` followed by exactly 32 base62 characters.
pub fn is_api_key(s: &str, mode: &str) -> bool {
    let prefix = format!("sk_{mode}_");
    match s.strip_prefix(&prefix) {
        Some(rest) => rest.len() == 32 && rest.chars().all(|c| c.is_ascii_alphanumeric()),
        None => false,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 24 {
        return false;
    }
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ";
    b.iter().zip(pattern.iter()).all(|(c, p)| match p {
        b'd' => c.is_ascii_digit(),
        other => c == other,
    })
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `req_<epoch ms, within ten minutes of now>_<9 [a-z0-9]>`.
pub fn is_request_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("req_") else {
        return false;
    };
    let Some((ms, suffix)) = rest.split_once('_') else {
        return false;
    };
    if ms.is_empty() || !ms.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let Ok(ms) = ms.parse::<u64>() else {
        return false;
    };
    let now = now_ms();
    let close = ms + 600_000 > now && ms < now + 600_000;
    close
        && suffix.len() == 9
        && suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// At least 16 characters with upper case, lower case and digits.
pub fn is_strong_password(p: &str) -> bool {
    p.chars().count() >= 16
        && p.chars().any(|c| c.is_ascii_uppercase())
        && p.chars().any(|c| c.is_ascii_lowercase())
        && p.chars().any(|c| c.is_ascii_digit())
}

fn assert_json_content_type(resp: &Resp) {
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "Content-Type is {ct:?}, expected application/json; body: {}",
        resp.text
    );
}

fn assert_request_id_header(resp: &Resp) -> String {
    let rid = resp
        .header("x-request-id")
        .unwrap_or_else(|| panic!("missing X-Request-Id header; body: {}", resp.text));
    assert!(is_request_id(&rid), "bad X-Request-Id {rid:?}");
    rid
}

/// Asserts a 200 success envelope with `message`; returns `data`.
pub fn assert_success<'a>(resp: &'a Resp, message: &str) -> &'a Value {
    assert_eq!(resp.status, 200, "expected 200, body: {}", resp.text);
    assert_json_content_type(resp);
    assert_eq!(resp.body["status"], "success", "body: {}", resp.text);
    assert_eq!(resp.body["message"], message, "body: {}", resp.text);
    let ts = resp.body["timestamp"].as_str().unwrap_or_default();
    assert!(
        is_timestamp(ts),
        "bad timestamp {ts:?}; body: {}",
        resp.text
    );
    let rid = assert_request_id_header(resp);
    let data = &resp.body["data"];
    assert!(data.is_object(), "data is not an object: {}", resp.text);
    if data.get("requestId").is_some() {
        assert_eq!(data["requestId"], rid.as_str(), "data.requestId != header");
    }
    data
}

/// Like [`assert_success`] and also requires `data.requestId` and `data.mode == mode`.
pub fn assert_api_success<'a>(resp: &'a Resp, message: &str, mode: &str) -> &'a Value {
    let data = assert_success(resp, message);
    assert!(
        data["requestId"].is_string(),
        "data.requestId missing: {}",
        resp.text
    );
    assert_eq!(data["mode"], mode, "data.mode; body: {}", resp.text);
    data
}

/// Asserts an error envelope with the given status and message; returns the body.
pub fn assert_error<'a>(resp: &'a Resp, status: u16, message: &str) -> &'a Value {
    assert_eq!(
        resp.status, status,
        "expected {status} {message:?}, body: {}",
        resp.text
    );
    assert_json_content_type(resp);
    assert_eq!(resp.body["status"], "error", "body: {}", resp.text);
    assert_eq!(resp.body["message"], message, "body: {}", resp.text);
    let errors = resp
        .body
        .get("errors")
        .unwrap_or_else(|| panic!("no errors field: {}", resp.text));
    assert!(
        errors.is_null() || errors.is_object(),
        "errors must be null or an object: {}",
        resp.text
    );
    let ts = resp.body["timestamp"].as_str().unwrap_or_default();
    assert!(
        is_timestamp(ts),
        "bad timestamp {ts:?}; body: {}",
        resp.text
    );
    assert_request_id_header(resp);
    &resp.body
}

/// Asserts that none of the RateLimit headers is present.
pub fn assert_no_rate_limit_headers(resp: &Resp) {
    for h in [
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
    ] {
        assert!(
            resp.header(h).is_none(),
            "unexpected header {h} on {}: {:?}",
            resp.status,
            resp.headers
        );
    }
}

/// Asserts the full set of RateLimit headers for `limit`; returns (remaining, reset).
pub fn assert_rate_limit_headers(resp: &Resp, limit: u64) -> (u64, u64) {
    assert_eq!(resp.header_u64("ratelimit-limit"), limit);
    let remaining = resp.header_u64("ratelimit-remaining");
    let reset = resp.header_u64("ratelimit-reset");
    assert!(remaining <= limit, "remaining {remaining} > limit {limit}");
    assert!(reset <= 900, "reset {reset} beyond the 15-minute window");
    assert_eq!(
        resp.header("ratelimit-policy").as_deref(),
        Some(format!("\"default\";q={limit};w=900").as_str())
    );
    assert_eq!(
        resp.header("ratelimit").as_deref(),
        Some(format!("\"default\";r={remaining};t={reset}").as_str())
    );
    (remaining, reset)
}
