//! The console API on sandbox services, end to end with a WebSocket client:
//! `POST /api/v1/services/{id}/console` hands out a single-use URL that
//! expires, the WebSocket carries the simulated shell (banner, `echo`,
//! resizes), and an open console closes when its service stops or is
//! rebuilt, or its key is revoked. The rules of the call: 400 for a stopped
//! service, 409 while a rebuild runs and past three consoles, 503 past the
//! process's `console_max_sessions`, 404 for another account's service, and
//! an audit record.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const OPENED: &str = "Console URL created successfully";
const NOT_RUNNING: &str = "Service must be running to open a console";
const TOO_MANY: &str = "At most 3 consoles can be open on a service at once";
const PROMPT: &str = "root@vps-service-1:~# ";

/// How long a console may take to say something or to close.
const WAIT: Duration = Duration::from_secs(10);

async fn open(server: &TestServer, key: &str, id: &str) -> Resp {
    server
        .post(&format!("/api/v1/services/{id}/console"), key)
        .await
}

/// The URL of a new console (asserting the answer's shape).
async fn console_url(server: &TestServer, key: &str, id: &str) -> String {
    let resp = open(server, key, id).await;
    let data = assert_api_success(&resp, OPENED, "test");
    let url = data["url"].as_str().expect("url").to_string();
    let host = server.base_url.trim_start_matches("http://");
    assert!(
        url.starts_with(&format!("ws://{host}/api/v1/console/")),
        "{url}"
    );
    assert!(is_timestamp(data["expiresAt"].as_str().unwrap()), "{data}");
    url
}

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the WebSocket handshake timed out")
        .unwrap_or_else(|e| panic!("could not open the console {url}: {e}"));
    ws
}

/// The HTTP status a refused handshake got.
async fn refused(url: &str) -> u16 {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the WebSocket handshake timed out")
    {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("the handshake failed otherwise: {e}"),
        Ok(_) => panic!("the console {url} opened"),
    }
}

/// Reads the console's output until it contains `needle`; returns all of it.
async fn read_until(ws: &mut Ws, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = String::new();
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time; the console said {seen:?}"));
        match frame {
            Some(Ok(Message::Binary(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Some(Ok(Message::Text(text))) => seen.push_str(text.as_str()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("the console ended before {needle:?} ({other:?}); it said {seen:?}"),
        }
    }
    seen
}

/// Waits for the server to close the console; returns the close code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("the console was not closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the console failed instead of closing: {e}"),
        }
    }
}

async fn type_line(ws: &mut Ws, line: &str) {
    ws.send(Message::Binary(format!("{line}\r").into_bytes().into()))
        .await
        .expect("typed into the console");
}

#[tokio::test]
async fn a_sandbox_console_answers_resizes_and_opens_once() {
    let server = TestServer::start();
    let key = server.test_key.clone();
    let url = console_url(&server, &key, "vps_service_1").await;
    let mut ws = connect(&url).await;

    let banner = read_until(&mut ws, PROMPT).await;
    assert!(banner.contains("simulated"), "{banner:?}");
    assert!(banner.contains("vps_service_1"), "{banner:?}");

    type_line(&mut ws, "echo hi").await;
    let out = read_until(&mut ws, &format!("hi\r\n{PROMPT}")).await;
    assert!(
        out.starts_with("echo hi\r\n"),
        "typed text is echoed: {out:?}"
    );

    let resize = r#"{"type":"resize","cols":132,"rows":43}"#;
    ws.send(Message::Text(resize.into())).await.unwrap();
    type_line(&mut ws, "stty size").await;
    read_until(&mut ws, "43 132\r\n").await;

    // Keystrokes may also come as a JSON text frame.
    let input = r#"{"type":"input","data":"uname -a\r"}"#;
    ws.send(Message::Text(input.into())).await.unwrap();
    read_until(&mut ws, "Linux vps-service-1").await;

    ws.send(Message::Text("not json".into())).await.unwrap();
    let notice = read_until(&mut ws, "\"type\":\"error\"").await;
    assert!(notice.contains("resize"), "{notice}");

    // The URL was used: a second client is refused, even while the first is on.
    assert_eq!(refused(&url).await, 404);

    type_line(&mut ws, "exit").await;
    let (code, _) = closed(&mut ws).await;
    assert_eq!(code, 1000);
    assert_eq!(refused(&url).await, 404, "nor after it closed");

    // A junk ticket is 404 too.
    let junk = format!(
        "{}/api/v1/console/nope",
        server.base_url.replace("http", "ws")
    );
    assert_eq!(refused(&junk).await, 404);

    // The call is in the audit log like any mutating call.
    let resp = server
        .get("/api/v1/audit?serviceId=vps_service_1", &key)
        .await;
    let data = assert_api_success(&resp, "Audit entries retrieved successfully", "test");
    let entries = data["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["method"] == "POST"
            && e["path"] == "/api/v1/services/vps_service_1/console"
            && e["status"] == 200),
        "{entries:#?}"
    );
}

#[tokio::test]
async fn a_console_url_expires_but_an_open_console_outlives_it() {
    let server = TestServer::start_with_env(&[("ADVPS_CONSOLE_TTL_SECS", "1")]);
    let key = server.test_key.clone();
    let stale = console_url(&server, &key, "vps_service_1").await;
    let url = console_url(&server, &key, "vps_service_1").await;
    // The console starts at the size the URL asks for.
    let mut ws = connect(&format!("{url}?cols=100&rows=30")).await;
    read_until(&mut ws, PROMPT).await;
    type_line(&mut ws, "stty size").await;
    read_until(&mut ws, "30 100\r\n").await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(refused(&stale).await, 404, "an expired URL opens nothing");

    type_line(&mut ws, "echo still here").await;
    read_until(&mut ws, "still here\r\n").await;
}

#[tokio::test]
async fn consoles_are_refused_on_stopped_rebuilding_and_foreign_services() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_SANDBOX_TASK_SECONDS", "30"),
        ("ADVPS_SANDBOX_PROVISION_SECONDS", "1"),
    ]);
    let key = server.test_key.clone();

    // vps_service_2 starts stopped; vps_service_1 is stopped here.
    assert_error(
        &open(&server, &key, "vps_service_2").await,
        400,
        NOT_RUNNING,
    );
    let resp = server.action(&key, "vps_service_1", "stop").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_error(
        &open(&server, &key, "vps_service_1").await,
        400,
        NOT_RUNNING,
    );

    server
        .start_rebuild(&key, "lxc_service_1", "debian-12")
        .await;
    assert_error(&open(&server, &key, "lxc_service_1").await, 409, BUSY);

    assert_error(
        &open(&server, &key, "no_such_service").await,
        404,
        SERVICE_NOT_FOUND,
    );
    let live = server.create_key("demo", "live");
    assert_error(
        &open(&server, &live, "pvps_service_1").await,
        404,
        SERVICE_NOT_FOUND,
    );

    // A service only demo has (bought) is 404 for another account.
    let resp = server
        .post_json(
            "/api/v1/purchase/linux",
            &key,
            &json!({"productId": "prod_abc123", "ram": "4GB", "osId": null, "quantity": 1, "validity": 30}),
        )
        .await;
    let data = assert_api_success(&resp, "Order placed successfully", "test");
    let bought = data["services"][0]["serviceId"]
        .as_str()
        .unwrap()
        .to_string();
    server.create_account("acme");
    let acme = server.create_key("acme", "test");
    assert_error(&open(&server, &acme, &bought).await, 404, SERVICE_NOT_FOUND);
}

#[tokio::test]
async fn at_most_three_consoles_per_service() {
    let server = TestServer::start();
    let key = server.test_key.clone();
    let mut open_ones = Vec::new();
    for _ in 0..3 {
        let url = console_url(&server, &key, "vps_service_1").await;
        let mut ws = connect(&url).await;
        read_until(&mut ws, PROMPT).await;
        open_ones.push(ws);
    }
    let resp = open(&server, &key, "vps_service_1").await;
    assert_error(&resp, 409, TOO_MANY);
    // Another service is not affected.
    console_url(&server, &key, "lxc_service_1").await;

    let mut first = open_ones.remove(0);
    type_line(&mut first, "exit").await;
    closed(&mut first).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = open(&server, &key, "vps_service_1").await;
        if resp.status == 200 {
            break;
        }
        assert_error(&resp, 409, TOO_MANY);
        assert!(
            Instant::now() < deadline,
            "the closed console's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_process_caps_consoles_over_every_service() {
    const SERVER_FULL: &str = "Too many consoles are open on this server; retry later";
    let server = TestServer::start_with_env(&[("ADVPS_CONSOLE_MAX_SESSIONS", "2")]);
    let key = server.test_key.clone();
    let mut first = connect(&console_url(&server, &key, "vps_service_1").await).await;
    read_until(&mut first, PROMPT).await;
    // Handed out while there is room; opened once there is none.
    let late = console_url(&server, &key, "vps_service_1").await;
    let mut second = connect(&console_url(&server, &key, "lxc_service_1").await).await;
    read_until(&mut second, "~# ").await;

    // One console on the service (its own cap is 3), two in the process.
    let resp = open(&server, &key, "vps_service_1").await;
    assert_error(&resp, 503, SERVER_FULL);
    assert_eq!(resp.header_u64("retry-after"), 30);
    assert_eq!(refused(&late).await, 503);

    type_line(&mut first, "exit").await;
    closed(&mut first).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = open(&server, &key, "vps_service_1").await;
        if resp.status == 200 {
            break;
        }
        assert_error(&resp, 503, SERVER_FULL);
        assert!(
            Instant::now() < deadline,
            "the closed console's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn revoking_the_key_closes_its_console() {
    let server = TestServer::start();
    let first = server.test_key.clone();
    let created = server.post("/api/v1/keys", &first).await;
    let data = assert_api_success(
        &created,
        "API key created; it is shown only this once",
        "test",
    );
    let second = data["key"].as_str().unwrap().to_string();
    let second_id = data["id"].as_str().unwrap().to_string();

    let url = console_url(&server, &second, "vps_service_1").await;
    let mut ws = connect(&url).await;
    read_until(&mut ws, PROMPT).await;
    // A console opened with the other key stays open.
    let other_url = console_url(&server, &first, "vps_service_1").await;
    let mut other = connect(&other_url).await;
    read_until(&mut other, PROMPT).await;

    let resp = server
        .request(
            Method::DELETE,
            &format!("/api/v1/keys/{second_id}"),
            Some(&first),
            None,
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4003, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");

    type_line(&mut other, "echo alive").await;
    read_until(&mut other, "alive\r\n").await;
}

#[tokio::test]
async fn stopping_or_rebuilding_the_service_closes_its_console() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "30")]);
    let key = server.test_key.clone();

    let url = console_url(&server, &key, "vps_service_1").await;
    let mut ws = connect(&url).await;
    read_until(&mut ws, PROMPT).await;
    let resp = server.action(&key, "vps_service_1", "stop").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4000, "{reason}");

    let url = console_url(&server, &key, "lxc_service_1").await;
    let mut ws = connect(&url).await;
    read_until(&mut ws, "root@lxc-service-1:~# ").await;
    server
        .start_rebuild(&key, "lxc_service_1", "debian-12")
        .await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4001, "{reason}");
}
