//! The login name belongs to the OS: a VPS bought or rebuilt with Windows
//! logs in as Administrator, one with Linux as root, and order details say
//! so from the first answer on.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FAST: &[(&str, &str)] = &[
    ("ADVPS_SANDBOX_PROVISION_SECONDS", "1"),
    ("ADVPS_SANDBOX_TASK_SECONDS", "1"),
    ("ADVPS_SANDBOX_REBUILD_LIMIT", "100"),
];

async fn order(server: &TestServer, key: &str, order_id: &str) -> Value {
    let resp = server
        .get(&format!("/api/v1/purchase/{order_id}"), key)
        .await;
    assert_api_success(&resp, "Order retrieved successfully", "test").clone()
}

/// Buys one 1 GB VPS with `os`; returns the order id and the first answer.
async fn buy_vps(server: &TestServer, key: &str, os: &str) -> (String, Value) {
    let resp = server
        .post_json(
            "/api/v1/purchase/vps",
            key,
            &json!({"productId": "prod_stu901", "ram": "1 GB", "osId": os, "name": "Ops", "email": "ops@example.com"}),
        )
        .await;
    let data = assert_api_success(&resp, "Order placed successfully", "test").clone();
    let id = data["order"]["orderId"].as_str().unwrap().to_string();
    (id, data)
}

/// Polls an order until it leaves PENDING.
async fn wait_order(server: &TestServer, key: &str, order_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let data = order(server, key, order_id).await;
        if data["order"]["status"] != "PENDING" {
            assert_eq!(data["order"]["status"], "COMPLETED", "{data}");
            return data;
        }
        assert!(Instant::now() < deadline, "{order_id} pending: {data}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rebuild_to(server: &TestServer, key: &str, service: &str, os: &str) {
    let task = server.start_rebuild(key, service, os).await;
    let seen = server
        .wait_task(
            key,
            &task,
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(seen.last().unwrap()["status"], "COMPLETED", "{seen:?}");
}

#[tokio::test]
async fn windows_vps_log_in_as_administrator_and_linux_as_root() {
    let server = TestServer::start_with_env(FAST);
    let key = &server.test_key;

    let (windows, placed) = buy_vps(&server, key, "windows-2022").await;
    assert_eq!(placed["services"][0]["username"], "Administrator");
    let (linux, placed) = buy_vps(&server, key, "debian-12").await;
    assert_eq!(placed["services"][0]["username"], "root");

    let done = wait_order(&server, key, &windows).await;
    assert_eq!(done["order"]["os"]["id"], "windows-2022", "{done}");
    assert_eq!(done["services"][0]["username"], "Administrator", "{done}");
    let done = wait_order(&server, key, &linux).await;
    assert_eq!(done["services"][0]["username"], "root", "{done}");

    // The login name follows rebuilds, both ways.
    let service = done["services"][0]["serviceId"]
        .as_str()
        .unwrap()
        .to_string();
    rebuild_to(&server, key, &service, "windows-2022").await;
    let after = order(&server, key, &linux).await;
    assert_eq!(after["services"][0]["os"], "Windows Server 2022", "{after}");
    assert_eq!(after["services"][0]["username"], "Administrator", "{after}");
    rebuild_to(&server, key, &service, "debian-12").await;
    let after = order(&server, key, &linux).await;
    assert_eq!(after["services"][0]["os"], "Debian 12", "{after}");
    assert_eq!(after["services"][0]["username"], "root", "{after}");

    // A failed rebuild leaves the login name as it was.
    let task = server.start_rebuild(key, &service, "sandbox-fail").await;
    let seen = server
        .wait_task(
            key,
            &task,
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(seen.last().unwrap()["status"], "FAILED", "{seen:?}");
    let after = order(&server, key, &linux).await;
    assert_eq!(after["services"][0]["username"], "root", "{after}");
}
