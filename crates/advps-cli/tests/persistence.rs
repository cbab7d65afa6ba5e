//! State that survives a graceful restart (SIGTERM, exit code 0) on the same data directory:
//! service state, keys (created, revoked), assigned addresses, the one-time demo key (not
//! printed again) and rebuild tasks that were still running at shutdown.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn stopped_service_and_keys_survive_a_restart() {
    let mut server = TestServer::start();
    let key = server.test_key.clone();
    let resp = server.action(&key, "vps_service_1", "stop").await;
    assert_eq!(resp.status, 200, "{}", resp.text);

    server.restart();

    assert_eq!(server.printed_key, None, "second start printed a key");
    assert!(
        !server.startup_lines.iter().any(|l| l.contains("sk_test_")
            || l.contains("sk_live_")
            || l.contains("Created account")),
        "second start output: {:?}",
        server.startup_lines
    );
    assert!(server.base_url.starts_with("http://127.0.0.1:"));

    let status = server.status_data(&key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "STOPPED", "{status}");
    assert_eq!(status["uptime"], 0);
    let other = server.status_data(&key, "lxc_service_1").await;
    assert_eq!(other["runningStatus"], "RUNNING");
    let resp = server.action(&key, "vps_service_1", "stop").await;
    assert_error(
        &resp,
        500,
        "Failed to stop service: service is already stopped",
    );
}

#[tokio::test]
async fn cli_keys_and_revocations_survive_a_restart() {
    let mut server = TestServer::start();
    let kept = server.create_key("demo", "test");
    let revoked = server.create_key("demo", "test");
    let id = server.key_id_of("demo", &revoked);
    server.cli_ok(&["keys", "revoke", &id]);
    server.restart();
    let resp = server.status(&kept, "vps_service_1").await;
    assert_success(&resp, "Service status retrieved successfully");
    let resp = server.status(&revoked, "vps_service_1").await;
    assert_error(&resp, 401, UNAUTHORIZED);
}

#[tokio::test]
async fn provisional_address_is_stable_across_a_restart() {
    let mut server = TestServer::start();
    let key = server.test_key.clone();
    let resp = server.action(&key, "pvps_service_1", "get-ip").await;
    let ip = assert_success(&resp, "Provisional VPS IP configured successfully")["ip"]
        .as_str()
        .expect("ip")
        .to_string();
    server.restart();
    let status = server.status_data(&key, "pvps_service_1").await;
    assert_eq!(status["ip"], ip.as_str());
    let resp = server.action(&key, "pvps_service_1", "get-ip").await;
    assert_eq!(
        assert_success(&resp, "Provisional VPS IP configured successfully")["ip"],
        ip.as_str()
    );
}

#[tokio::test]
async fn rebuild_started_before_a_restart_completes_after_it() {
    let mut server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "3")]);
    let key = server.test_key.clone();
    let task_id = server
        .start_rebuild(&key, "vps_service_1", "debian-12")
        .await;
    server.restart();
    let history = server
        .wait_task(
            &key,
            &task_id,
            Duration::from_millis(200),
            Duration::from_secs(40),
        )
        .await;
    let last = history.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{history:?}");
    assert_eq!(last["progress"], 100);
    let status = server.status_data(&key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "RUNNING", "{status}");
    assert_eq!(status["service"]["os"]["id"], "debian-12", "{status}");
}

#[tokio::test]
async fn sigterm_right_after_start_exits_zero() {
    // SIGTERM as soon as the listening line is out, a few times over.
    for _ in 0..3 {
        let mut server = TestServer::start();
        let status = server.terminate();
        assert!(status.success(), "exit status {status:?}");
    }
}
