//! Safe retries and pushed events over HTTP: Idempotency-Key replays,
//! mismatches and in-flight repeats (a retried rebuild starts one task, a
//! retried purchase charges once); signed webhook deliveries verified with
//! the Standard Webhooks scheme, retried until a failing receiver recovers,
//! kept across a restart, refused for private addresses unless allowed;
//! the audit log of every mutating call, per account only, with no secret.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------- receiver

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

/// A webhook receiver on 127.0.0.1 that answers the first `fail_first`
/// requests with 500, then 204, and keeps what it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), fail_first)
    }

    fn start_on(listener: TcpListener, fail_first: usize) -> Receiver {
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = Arc::new(Mutex::new(0usize));
        let store = Arc::clone(&got);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let store = Arc::clone(&store);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, content_length) = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            break (pos + 4, len);
                        }
                    };
                    while buf.len() < head_end + content_length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                    let n = {
                        let mut s = seen.lock().unwrap();
                        *s += 1;
                        *s
                    };
                    let status = if n <= fail_first {
                        "500 Internal Server Error"
                    } else {
                        "204 No Content"
                    };
                    if n > fail_first {
                        store.lock().unwrap().push(Received { headers, body });
                    }
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        Receiver { url, got, task }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, event_type: &str) -> Received {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.received().into_iter().find(|r| {
                serde_json::from_str::<Value>(&r.body)
                    .map(|v| v["type"] == event_type)
                    .unwrap_or(false)
            }) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no {event_type} delivered; got {:?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Verifies a delivery with the Standard Webhooks scheme.
fn verify(secret: &str, r: &Received) -> bool {
    let id = &r.headers["webhook-id"];
    let ts = &r.headers["webhook-timestamp"];
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    r.headers["webhook-signature"]
        .split(' ')
        .any(|s| s == expected)
}

const WEBHOOK_ENV: &[(&str, &str)] = &[
    ("ADVPS_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("ADVPS_WEBHOOK_RETRY_BASE_MS", "200"),
    ("ADVPS_SANDBOX_TASK_SECONDS", "1"),
];

async fn register(server: &TestServer, key: &str, url: &str, events: Value) -> (String, String) {
    let resp = server
        .post_json(
            "/api/v1/webhooks",
            key,
            &json!({"url": url, "events": events}),
        )
        .await;
    let data = assert_api_success(
        &resp,
        "Webhook endpoint created; its secret is shown only this once",
        "test",
    );
    let secret = data["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (data["id"].as_str().unwrap().to_string(), secret)
}

async fn post_with_key(
    server: &TestServer,
    path: &str,
    key: &str,
    idem: &str,
    body: Option<Value>,
) -> Resp {
    let mut req = reqwest::Client::new()
        .post(server.url(path))
        .header("x-api-key", key)
        .header("idempotency-key", idem);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn a_retried_rebuild_with_the_same_key_starts_one_task() {
    let server = TestServer::start();
    let key = &server.test_key;
    let body = json!({"os": "debian-12"});
    let first = post_with_key(
        &server,
        "/api/v1/services/vps_service_1/rebuild",
        key,
        "rebuild-1",
        Some(body.clone()),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    let again = post_with_key(
        &server,
        "/api/v1/services/vps_service_1/rebuild",
        key,
        "rebuild-1",
        Some(body.clone()),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(
        again.data()["taskId"],
        first.data()["taskId"],
        "the same task, not a second one"
    );
    assert_eq!(again.body, first.body, "the stored response, byte for byte");
    // Without the key the service is busy with that one task.
    let third = server.rebuild(key, "vps_service_1", "debian-12").await;
    assert_error(&third, 409, "Service is busy: a task is in progress");
    assert_eq!(third.body["errors"]["taskId"], first.data()["taskId"]);
    // The same key with another body is refused.
    let other = post_with_key(
        &server,
        "/api/v1/services/vps_service_1/rebuild",
        key,
        "rebuild-1",
        Some(json!({"os": "debian-11"})),
    )
    .await;
    assert_error(
        &other,
        422,
        "Idempotency-Key was already used with a different request",
    );
    // Keys are per API key: another key's same Idempotency-Key is its own.
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    let theirs = post_with_key(
        &server,
        "/api/v1/services/vps_service_1/rebuild",
        &acme,
        "rebuild-1",
        Some(body),
    )
    .await;
    assert_eq!(theirs.status, 200);
    assert!(theirs.header("idempotent-replayed").is_none());
    assert_ne!(theirs.data()["taskId"], first.data()["taskId"]);
    let bad = post_with_key(
        &server,
        "/api/v1/services/vps_service_1/stop",
        key,
        "has space",
        None,
    )
    .await;
    assert_error(
        &bad,
        400,
        "Idempotency-Key must be 1 to 255 printable ASCII characters",
    );
}

#[tokio::test]
async fn a_retried_purchase_charges_once_even_across_a_restart() {
    let mut server = TestServer::start_with_env(&[("ADVPS_SANDBOX_PROVISION_SECONDS", "1")]);
    let key = server.test_key.clone();
    let body = json!({"productId": "prod_abc123", "ram": "4 GB"});
    let first = post_with_key(
        &server,
        "/api/v1/purchase/linux",
        &key,
        "order-77",
        Some(body.clone()),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    server.restart();
    let again = post_with_key(
        &server,
        "/api/v1/purchase/linux",
        &key,
        "order-77",
        Some(body),
    )
    .await;
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(
        again.data()["order"]["orderId"],
        first.data()["order"]["orderId"]
    );
    let wallet = server.cli_ok(&["accounts", "wallet", "demo", "--mode", "test"]);
    assert!(wallet.starts_with("demo test wallet: 994.00"), "{wallet}");
    // An error response is stored and replayed too (a 4xx is an answer).
    let bad = json!({"productId": "prod_nope", "ram": "4 GB"});
    let e1 = post_with_key(
        &server,
        "/api/v1/purchase/linux",
        &key,
        "order-78",
        Some(bad.clone()),
    )
    .await;
    let e2 = post_with_key(
        &server,
        "/api/v1/purchase/linux",
        &key,
        "order-78",
        Some(bad),
    )
    .await;
    assert_eq!((e1.status, e2.status), (404, 404));
    assert_eq!(e2.header("idempotent-replayed").as_deref(), Some("true"));
}

#[tokio::test]
async fn a_repeat_while_the_first_still_runs_is_409() {
    // A live service on an engine that never answers keeps the first start
    // running for the engine timeout.
    let fake = HangingEngine::start();
    let server = TestServer::start_with_env(&[
        ("ADVPS_ENGINE_TIMEOUT_SECS", "4"),
        ("ADVPS_RATE_LIMIT_LIVE", "1000"),
    ]);
    server.create_account("acme");
    server.cli_ok(&[
        "nodes",
        "add",
        "hang",
        "--driver",
        "lxd",
        "--endpoint",
        &fake.endpoint(),
    ]);
    server.cli_ok(&["nodes", "sync", "hang"]);
    let out = server.cli_ok(&[
        "services",
        "create",
        "--account",
        "acme",
        "--node",
        "hang",
        "--instance",
        "advps-test-hang",
        "--type",
        "LINUX",
    ]);
    let service = last_line(&out);
    let key = server.create_key("acme", "live");
    fake.stop_answering();
    let path = format!("/api/v1/services/{service}/stop");
    let (a, b) = tokio::join!(post_with_key(&server, &path, &key, "stop-1", None), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        post_with_key(&server, &path, &key, "stop-1", None).await
    });
    assert_error(
        &b,
        409,
        "A request with this Idempotency-Key is still being processed",
    );
    assert_eq!(a.status, 500, "{}", a.text);
    // A server error is not stored: the same key may be tried again for real.
    let c = post_with_key(&server, &path, &key, "stop-1", None).await;
    assert!(c.header("idempotent-replayed").is_none());
}

/// An LXD stand-in on a unix socket that answers what registering a node
/// and binding its one container need, then stops answering.
struct HangingEngine {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl HangingEngine {
    fn start() -> HangingEngine {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("lxd.socket");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&silent);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 8192];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    if flag.load(std::sync::atomic::Ordering::SeqCst) && path != "/1.0" {
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                    let metadata = match path.as_str() {
                        "/1.0" => {
                            json!({"api_extensions": [], "environment": {"instance_types": ["container"]}})
                        }
                        p if p.starts_with("/1.0/instances?") => {
                            json!([{"name": "advps-test-hang", "type": "container", "status": "Running", "config": {}}])
                        }
                        p if p.starts_with("/1.0/images") => json!([]),
                        p if p.ends_with("/state") => json!({"status": "Running", "network": {}}),
                        _ => {
                            json!({"name": "advps-test-hang", "type": "container", "status": "Running", "last_used_at": "2026-01-01T00:00:00Z"})
                        }
                    };
                    let body = json!({"type": "sync", "status_code": 200, "metadata": metadata})
                        .to_string();
                    let reply = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                    let _ = stream.write_all(reply.as_bytes());
                });
            }
        });
        HangingEngine {
            _dir: dir,
            socket,
            silent,
        }
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn stop_answering(&self) {
        self.silent.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- webhooks

#[tokio::test]
async fn webhook_events_are_signed_and_verifiable() {
    let server = TestServer::start_with_env(WEBHOOK_ENV);
    let key = &server.test_key;
    let receiver = Receiver::start(0).await;
    let (id, secret) = register(&server, key, &receiver.url, json!([])).await;

    let stop = server.action(key, "vps_service_1", "stop").await;
    assert_eq!(stop.status, 200);
    let power = receiver.wait_for("service.power_state_changed").await;
    assert!(
        verify(&secret, &power),
        "signature does not verify: {power:?}"
    );
    assert!(!verify(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &power
    ));
    let event: Value = serde_json::from_str(&power.body).unwrap();
    assert_eq!(event["data"]["serviceId"], "vps_service_1");
    assert_eq!(event["data"]["previousStatus"], "RUNNING");
    assert_eq!(event["data"]["status"], "STOPPED");
    let ts: i64 = power.headers["webhook-timestamp"].parse().unwrap();
    assert!((ts - now_ms() as i64 / 1000).abs() < 60);
    assert!(power.headers["webhook-id"].starts_with("msg_"));

    let task = server
        .start_rebuild(key, "vps_service_2", "debian-12")
        .await;
    let done = receiver.wait_for("task.completed").await;
    assert!(verify(&secret, &done));
    let event: Value = serde_json::from_str(&done.body).unwrap();
    assert_eq!(event["data"]["taskId"], task);
    let failing = server
        .start_rebuild(key, "lxc_service_1", "sandbox-fail")
        .await;
    let failed = receiver.wait_for("task.failed").await;
    let event: Value = serde_json::from_str(&failed.body).unwrap();
    assert_eq!(event["data"]["taskId"], failing);
    assert!(event["data"]["error"]
        .as_str()
        .unwrap()
        .contains("sandbox-fail"));

    // The delivery log shows them, delivered.
    let log = server
        .get(&format!("/api/v1/webhooks/{id}/deliveries?limit=50"), key)
        .await;
    let deliveries = log.data()["deliveries"].as_array().unwrap().clone();
    assert!(deliveries
        .iter()
        .any(|d| d["eventType"] == "task.completed" && d["status"] == "delivered"));

    // A rotated secret: the new one signs, the old one too for a day.
    let rotated = server
        .post(&format!("/api/v1/webhooks/{id}/rotate-secret"), key)
        .await;
    let new_secret = rotated.data()["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    server.action(key, "vps_service_1", "start").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let latest = receiver.received().into_iter().rfind(|r| {
            r.body.contains("\"vps_service_1\"") && r.body.contains("\"status\":\"RUNNING\"")
        });
        if let Some(r) = latest {
            break r;
        }
        assert!(Instant::now() < deadline, "no delivery after rotation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(verify(&new_secret, &after) && verify(&secret, &after));
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_after_retries_and_a_restart_loses_nothing() {
    let mut server = TestServer::start_with_env(WEBHOOK_ENV);
    let key = server.test_key.clone();
    let receiver = Receiver::start(3).await;
    let (id, secret) = register(
        &server,
        &key,
        &receiver.url,
        json!(["service.power_state_changed"]),
    )
    .await;
    server.action(&key, "vps_service_1", "stop").await;
    let got = receiver.wait_for("service.power_state_changed").await;
    assert!(verify(&secret, &got));
    let log = server
        .get(&format!("/api/v1/webhooks/{id}/deliveries"), &key)
        .await;
    let d = &log.data()["deliveries"][0];
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempts"], 4, "three failures, then success: {d}");
    // Only the subscribed type was sent.
    server
        .start_rebuild(&key, "vps_service_2", "debian-12")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver
        .received()
        .iter()
        .all(|r| !r.body.contains("task.completed")));

    // The receiver goes away; an event is raised; the server restarts; the receiver comes back.
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.action(&key, "vps_service_1", "start").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.restart();
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let back = Receiver::start_on(listener, 0);
    let delivered = back.wait_for("service.power_state_changed").await;
    assert!(verify(&secret, &delivered));
    let event: Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(event["data"]["status"], "RUNNING");

    // Manual redelivery sends a delivered message again, with the same id.
    let log = server
        .get(&format!("/api/v1/webhooks/{id}/deliveries"), &key)
        .await;
    let first = log.data()["deliveries"][0].clone();
    let again = server
        .post(
            &format!(
                "/api/v1/webhooks/{id}/deliveries/{}/redeliver",
                first["id"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_api_success(&again, "Delivery queued again", "test");
    let deadline = Instant::now() + Duration::from_secs(20);
    while back
        .received()
        .iter()
        .filter(|r| r.headers["webhook-id"] == first["id"].as_str().unwrap())
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "not redelivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn webhook_bodies_of_the_wrong_shape_get_their_field_message() {
    // Loopback receivers allowed, so that only the body decides.
    let server = TestServer::start_with_env(WEBHOOK_ENV);
    let key = &server.test_key;
    const URL: &str = "http://127.0.0.1:9/h";
    const EVENTS: &str = "events must be a list of event types";
    const DESCRIPTION: &str = "description must be a string of at most 200 characters";
    let with = |extra: Value| {
        let mut body = json!({ "url": URL });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        Some(body)
    };
    let long_url = format!("{URL}/{}", "a".repeat(2048));
    let cases: Vec<(Option<Value>, u16, &str)> = vec![
        (None, 400, "url is required"),
        (Some(json!([])), 400, "url is required"),
        (Some(json!([URL])), 400, "url is required"),
        (Some(json!(URL)), 400, "url is required"),
        (with(json!({"url": 5})), 400, "url is required"),
        (with(json!({"url": "   "})), 400, "url is required"),
        (with(json!({"url": null})), 400, "url is required"),
        (
            with(json!({ "url": long_url })),
            400,
            "url must be at most 2048 characters",
        ),
        (
            with(json!({"url": "ftp://example.com/x"})),
            400,
            "Webhook URL must use http or https",
        ),
        (with(json!({"events": "task.completed"})), 400, EVENTS),
        (
            with(json!({"events": {"task.completed": true}})),
            400,
            EVENTS,
        ),
        (
            with(json!({"events": ["task.completed", 5]})),
            400,
            "Unknown event type ''",
        ),
        (
            with(json!({"events": ["task.failed", null]})),
            400,
            "Unknown event type ''",
        ),
        (
            with(json!({"events": ["nope"]})),
            400,
            "Unknown event type 'nope'",
        ),
        (with(json!({"description": 5})), 400, DESCRIPTION),
        (
            with(json!({"description": "d".repeat(201)})),
            400,
            DESCRIPTION,
        ),
    ];
    for (body, status, message) in &cases {
        let resp = match body {
            Some(body) => server.post_json("/api/v1/webhooks", key, body).await,
            None => server.post("/api/v1/webhooks", key).await,
        };
        assert_eq!(
            (resp.status, resp.body["message"].as_str()),
            (*status, Some(*message)),
            "{body:?}: {}",
            resp.text
        );
    }
    assert_eq!(
        server.get("/api/v1/webhooks", key).await.data()["webhooks"],
        json!([]),
        "nothing was registered"
    );
    // The URL is kept trimmed, each event type once.
    let made = server
        .post_json(
            "/api/v1/webhooks",
            key,
            &json!({"url": format!(" {URL} "), "events": ["task.failed", "task.failed"], "description": "d".repeat(200)}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    assert_eq!(made.data()["url"], URL);
    assert_eq!(made.data()["events"], json!(["task.failed"]));
}

#[tokio::test]
async fn webhook_endpoints_are_validated_and_private_to_their_account() {
    // Without the operator's leave, loopback destinations are refused.
    let server = TestServer::start();
    let key = &server.test_key;
    let refused = server
        .post_json(
            "/api/v1/webhooks",
            key,
            &json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_error(
        &refused,
        400,
        "Webhook URL resolves to a private or loopback address, which this server does not allow",
    );
    let bad = server
        .post_json(
            "/api/v1/webhooks",
            key,
            &json!({"url": "ftp://example.com/x"}),
        )
        .await;
    assert_error(&bad, 400, "Webhook URL must use http or https");
    let missing = server.post_json("/api/v1/webhooks", key, &json!({})).await;
    assert_error(&missing, 400, "url is required");
    drop(server);

    let server = TestServer::start_with_env(WEBHOOK_ENV);
    let key = &server.test_key;
    let unknown = server
        .post_json(
            "/api/v1/webhooks",
            key,
            &json!({"url": "http://127.0.0.1:9/h", "events": ["nope"]}),
        )
        .await;
    assert_error(&unknown, 400, "Unknown event type 'nope'");
    let (id, _) = register(
        &server,
        key,
        "http://127.0.0.1:9/h",
        json!(["order.completed"]),
    )
    .await;
    let listed = server.get("/api/v1/webhooks", key).await;
    let list = listed.data()["webhooks"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(
        list[0].get("secret").is_none(),
        "secrets are shown once only"
    );
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    let theirs = server.get(&format!("/api/v1/webhooks/{id}"), &acme).await;
    assert_error(&theirs, 404, "Webhook endpoint not found");
    let del = server
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            Some(&acme),
            None,
            None,
        )
        .await;
    assert_error(&del, 404, "Webhook endpoint not found");
    assert!(
        server.get("/api/v1/webhooks", &acme).await.data()["webhooks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let del = server
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            Some(key),
            None,
            None,
        )
        .await;
    assert_eq!(del.status, 200);
    assert!(server.get("/api/v1/webhooks", key).await.data()["webhooks"]
        .as_array()
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- audit

#[tokio::test]
async fn every_mutating_call_is_audited_for_its_own_account_without_secrets() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_SANDBOX_TASK_SECONDS", "1"),
        ("ADVPS_SANDBOX_PROVISION_SECONDS", "1"),
    ]);
    let key = &server.test_key;
    let calls: Vec<(&str, Option<Value>)> = vec![
        ("/api/v1/services/vps_service_1/stop", None),
        ("/api/v1/services/vps_service_1/start", None),
        ("/api/v1/services/vps_service_1/reboot", None),
        ("/api/v1/services/pvps_service_1/get-ip", None),
        ("/api/v1/services/vps_service_1/generate-password", None),
        (
            "/api/v1/services/vps_service_2/rebuild",
            Some(json!({"os": "debian-12"})),
        ),
        ("/api/v1/services/vps_service_1/reset-mac", None),
        (
            "/api/v1/purchase/linux",
            Some(json!({"productId": "prod_abc123", "ram": "4 GB"})),
        ),
    ];
    let mut password = String::new();
    for (path, body) in &calls {
        let resp = post_with_key(&server, path, key, &format!("k-{path}"), body.clone()).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        if path.ends_with("generate-password") {
            password = resp.data()["password"].as_str().unwrap().to_string();
        }
    }
    let failed = server.action(key, "vps_service_1", "start").await;
    assert_eq!(failed.status, 500);
    // Reads are not audited.
    server.status(key, "vps_service_1").await;

    let resp = server.get("/api/v1/audit?limit=100", key).await;
    let data = assert_api_success(&resp, "Audit entries retrieved successfully", "test");
    let entries = data["entries"].as_array().unwrap();
    assert_eq!(entries.len(), calls.len() + 1, "{entries:#?}");
    assert!(entries
        .iter()
        .all(|e| e["method"] == "POST" && e["mode"] == "test" && e["source"] == "127.0.0.1"));
    let rebuild = entries
        .iter()
        .find(|e| e["path"] == "/api/v1/services/vps_service_2/rebuild")
        .unwrap();
    assert_eq!(rebuild["serviceId"], "vps_service_2");
    assert!(rebuild["taskId"].is_string());
    assert_eq!(
        rebuild["idempotencyKey"],
        "k-/api/v1/services/vps_service_2/rebuild"
    );
    assert!(is_request_id(rebuild["requestId"].as_str().unwrap()));
    let purchase = entries
        .iter()
        .find(|e| e["path"] == "/api/v1/purchase/linux")
        .unwrap();
    assert!(purchase["orderId"].as_str().unwrap().starts_with("LXC"));
    assert_eq!(entries[0]["status"], 500, "newest first, outcome recorded");
    let by_service = server
        .get("/api/v1/audit?serviceId=vps_service_2", key)
        .await;
    assert_eq!(by_service.data()["entries"].as_array().unwrap().len(), 1);
    let future = server
        .get("/api/v1/audit?from=2999-01-01T00:00:00Z", key)
        .await;
    assert_eq!(future.data()["pagination"]["total"], 0);
    let bad = server.get("/api/v1/audit?from=yesterday", key).await;
    assert_error(&bad, 400, "Invalid from value — must be an RFC 3339 time");

    // Another account sees none of it; the operator sees all of it.
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    assert_eq!(
        server.get("/api/v1/audit", &acme).await.data()["pagination"]["total"],
        0
    );
    let operator = server.cli_ok(&["audit", "--account", "demo", "--limit", "100"]);
    assert!(
        operator.contains("/api/v1/services/vps_service_2/rebuild"),
        "{operator}"
    );
    // No password anywhere in the log.
    assert!(!resp.text.contains(&password));
    assert!(!operator.contains(&password));
    for file in ["advps.db", "advps.db-wal"] {
        let bytes = std::fs::read(server.data_dir().join(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&password),
            "the password is stored encrypted only ({file})"
        );
    }
}
