//! The console API on a real LXD container: a live service's console URL
//! opens the container's `/dev/console`, where its getty runs; the test
//! logs in as root with the password generate-password returned, runs a
//! command and reads its output, resizes the terminal (the console carries
//! on), and sees the console closed when the service stops.

mod common;
#[path = "common/console.rs"]
mod console_io;
#[path = "common/live.rs"]
mod live;

use std::time::{Duration, Instant};

use common::*;
use console_io::*;
use futures_util::{SinkExt, StreamExt};
use live::*;
use tokio_tungstenite::tungstenite::Message;

/// First address of this file's blocks (.224 onwards, eight per test).
const ADDRESS_OFFSET: u8 = 224;
const LIVE: &str = "live";
/// How long the guest may take to answer on its console.
const WAIT: Duration = Duration::from_secs(30);
const PACE: Pace = Pace {
    wait: WAIT,
    nudge_every: Duration::from_secs(3),
};

#[tokio::test]
async fn live_console_logs_in_at_the_getty_runs_a_command_and_closes_on_stop() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = setup.bind_new();
    let (server, key) = (&setup.server, setup.key.as_str());
    let id = bound.service_id.as_str();
    wait_for_boot(&bound.container);

    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let password = data["password"].as_str().expect("password").to_string();

    let resp = server
        .post(&format!("/api/v1/services/{id}/console"), key)
        .await;
    let data = assert_api_success(&resp, "Console URL created successfully", LIVE);
    let url = data["url"].as_str().expect("url").to_string();
    // The console starts at the size the URL asks for.
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("{url}?cols=132&rows=43")),
    )
    .await
    .expect("the WebSocket handshake timed out")
    .expect("the console opened");

    expect(&mut ws, "login:", Some("\r"), PACE).await;
    send(&mut ws, "root\r").await;
    expect(&mut ws, "assword:", None, PACE).await;
    send(&mut ws, &format!("{password}\r")).await;
    expect(&mut ws, "# ", None, PACE).await;

    send(&mut ws, "echo console-$((6*7))\r").await;
    expect(&mut ws, "console-42", None, PACE).await;

    // The size (from the URL, and each resize) is handed to LXD: on its
    // control channel as `window-resize`. LXD 5.0's container consoles do
    // not pass it on to the guest's /dev/console (`stty size` there stays
    // 24 80), so only the console carrying on is checked here.
    let resize = r#"{"type":"resize","cols":100,"rows":30}"#;
    ws.send(Message::Text(resize.into())).await.unwrap();
    send(&mut ws, "echo after-$((2+3))\r").await;
    expect(&mut ws, "after-5", None, PACE).await;

    // The URL opened once.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("a used console URL opened again: {other:?}"),
    }

    send(&mut ws, "exit\r").await;
    let resp = server
        .post_json(
            &format!("/api/v1/services/{id}/stop"),
            key,
            &json!({"mode": "force"}),
        )
        .await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    let deadline = Instant::now() + WAIT;
    let code = loop {
        assert!(
            Instant::now() < deadline,
            "the console stayed open after the stop"
        );
        match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("the console failed instead of closing: {other:?}"),
        }
    };
    // Closed because the service stopped, or because the engine's console
    // ended with the container: either way, at once.
    assert!(matches!(code, Some(4000) | Some(1000)), "{code:?}");

    // A container stopped behind advps's back: the engine is asked, and the
    // caller gets the 400 rather than a URL whose WebSocket would fail.
    let resp = server.action(key, id, "start").await;
    assert_api_success(&resp, "Linux service started successfully", LIVE);
    let out = std::process::Command::new("lxc")
        .args(["stop", "--force", &bound.container])
        .output()
        .expect("run lxc stop");
    assert!(out.status.success(), "lxc stop: {out:?}");
    let resp = server
        .post(&format!("/api/v1/services/{id}/console"), key)
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert!(
        resp.text
            .contains("Service must be running to open a console"),
        "{}",
        resp.text
    );
}
