//! Rebuilds and the task endpoint: the rebuild response shape, the task lifecycle
//! (PENDING -> IN_PROGRESS -> COMPLETED/FAILED with non-decreasing progress), the REBUILDING state
//! of the service meanwhile, the new OS afterwards, the forced failure of the `sandbox-fail` OS,
//! request-body validation, OS/type compatibility, the monthly limit and the busy (409) rule.

mod common;

use common::*;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(150);
const WAIT: Duration = Duration::from_secs(30);

fn status_rank(status: &str) -> u8 {
    match status {
        "PENDING" => 0,
        "IN_PROGRESS" => 1,
        "COMPLETED" | "FAILED" => 2,
        other => panic!("unexpected task status {other:?}"),
    }
}

/// Checks the whole observed history of a task: valid statuses in order, non-decreasing progress.
fn check_history(history: &[Value], service_id: &str, task_id: &str) {
    let mut last_rank = 0;
    let mut last_progress = 0;
    for data in history {
        assert_eq!(data["taskId"], task_id, "{data}");
        assert_eq!(data["serviceId"], service_id, "{data}");
        assert_eq!(data["type"], "REBUILD", "{data}");
        assert_eq!(data["mode"], "test", "{data}");
        let status = data["status"].as_str().expect("task status");
        let rank = status_rank(status);
        assert!(rank >= last_rank, "task status went backwards: {history:?}");
        last_rank = rank;
        let progress = data["progress"].as_u64().expect("progress integer");
        assert!(progress <= 100, "{data}");
        if status == "FAILED" {
            // The contract does not say what progress a failed task reports.
            continue;
        }
        assert!(progress >= last_progress, "progress decreased: {history:?}");
        last_progress = progress;
        if status == "IN_PROGRESS" {
            assert!((1..=99).contains(&progress), "{data}");
        }
    }
}

#[tokio::test]
async fn rebuild_vps_full_lifecycle() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "2")]);
    let key = &server.test_key;
    let resp = server.rebuild(key, "vps_service_1", "debian-12").await;
    let data = assert_api_success(&resp, "VPS rebuild initiated successfully", "test");
    assert_eq!(resp.body["success"], true, "{}", resp.text);
    assert_eq!(data["serviceId"], "vps_service_1");
    assert_eq!(data["serviceType"], "VPS");
    assert_eq!(data["status"], "PENDING");
    assert_eq!(data["apiMode"], "test");
    let task_id = data["taskId"].as_str().expect("taskId").to_string();
    assert!(!task_id.is_empty());

    let during = server.status_data(key, "vps_service_1").await;
    assert_eq!(during["runningStatus"], "REBUILDING", "{during}");
    // The word client programs map to "busy".
    assert_eq!(during["vmStatus"]["status"], "installing", "{during}");
    assert!(
        !during["vmStatus"]["status"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "vmStatus.status never empty: {during}"
    );

    let history = server.wait_task(key, &task_id, POLL, WAIT).await;
    check_history(&history, "vps_service_1", &task_id);
    assert!(
        history.iter().any(|d| d["status"] == "IN_PROGRESS"),
        "never observed IN_PROGRESS over a 2 s task: {history:?}"
    );
    let last = history.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{last}");
    assert_eq!(last["progress"], 100, "{last}");
    assert_eq!(last["error"], Value::Null, "{last}");

    let after = server.status_data(key, "vps_service_1").await;
    assert_eq!(after["runningStatus"], "RUNNING", "{after}");
    assert_eq!(after["service"]["os"]["id"], "debian-12", "{after}");
    assert_eq!(after["vmStatus"]["status"], "running", "{after}");
}

#[tokio::test]
async fn rebuild_messages_for_linux_and_provisional() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "0.5")]);
    let key = &server.test_key;
    for (id, ty, word, os) in [
        ("lxc_service_1", "LINUX", "Linux", "rocky-9"),
        (
            "pvps_service_1",
            "PROVISIONAL_VPS",
            "Provisional VPS",
            "almalinux-9",
        ),
    ] {
        let resp = server.rebuild(key, id, os).await;
        let data = assert_api_success(
            &resp,
            &format!("{word} rebuild initiated successfully"),
            "test",
        );
        assert_eq!(resp.body["success"], true);
        assert_eq!(data["serviceType"], ty);
        assert_eq!(data["status"], "PENDING");
        assert_eq!(data["apiMode"], "test");
        let task_id = data["taskId"].as_str().unwrap().to_string();
        let history = server.wait_task(key, &task_id, POLL, WAIT).await;
        check_history(&history, id, &task_id);
        assert_eq!(history.last().unwrap()["status"], "COMPLETED");
        let after = server.status_data(key, id).await;
        assert_eq!(after["service"]["os"]["id"], os, "{after}");
        assert_eq!(after["runningStatus"], "RUNNING", "{after}");
    }
}

#[tokio::test]
async fn rebuild_windows_on_vps_is_accepted_but_not_on_linux() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "0.5")]);
    let key = &server.test_key;
    let resp = server.rebuild(key, "lxc_service_1", "windows-2022").await;
    assert_error(&resp, 500, "No OS templates available for the selected OS");
    let resp = server.rebuild(key, "lxc_service_1", "windows-2019").await;
    assert_error(&resp, 500, "No OS templates available for the selected OS");
    // The refused request changed nothing.
    let lxc = server.status_data(key, "lxc_service_1").await;
    assert_eq!(lxc["runningStatus"], "RUNNING");
    assert_eq!(lxc["service"]["os"]["id"], "debian-12");

    let task_id = server
        .start_rebuild(key, "vps_service_1", "windows-2022")
        .await;
    let history = server.wait_task(key, &task_id, POLL, WAIT).await;
    assert_eq!(history.last().unwrap()["status"], "COMPLETED");
    let vps = server.status_data(key, "vps_service_1").await;
    assert_eq!(vps["service"]["os"]["id"], "windows-2022", "{vps}");
}

#[tokio::test]
async fn rebuild_missing_or_unknown_os_is_400() {
    let server = TestServer::start();
    let key = &server.test_key;
    let path = "/api/v1/services/vps_service_1/rebuild";
    for body in [
        json!({}),
        json!({ "os": "plan9-from-bell-labs" }),
        json!({ "os": "" }),
        json!({ "os": 12 }),
        json!({ "os": null }),
        json!({ "operatingSystem": "debian-12" }),
        json!({ "os": 1.5 }),
        json!({ "os": ["debian-12"] }),
        json!(["debian-12"]),
        json!("debian-12"),
    ] {
        let resp = server.post_json(path, key, &body).await;
        assert_error(&resp, 400, "Missing or invalid os in request body");
    }
    let status = server.status_data(key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "RUNNING");
    assert_eq!(status["service"]["os"]["id"], "ubuntu-22.04");
}

#[tokio::test]
async fn rebuild_with_sandbox_fail_ends_failed_and_restores_service() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "1")]);
    let key = &server.test_key;
    for (id, running, os) in [
        ("vps_service_1", "RUNNING", "ubuntu-22.04"),
        ("vps_service_2", "STOPPED", "debian-12"),
    ] {
        let resp = server.rebuild(key, id, "sandbox-fail").await;
        let data = assert_api_success(&resp, "VPS rebuild initiated successfully", "test");
        assert_eq!(data["status"], "PENDING");
        let task_id = data["taskId"].as_str().unwrap().to_string();
        let history = server.wait_task(key, &task_id, POLL, WAIT).await;
        check_history(&history, id, &task_id);
        let last = history.last().unwrap();
        assert_eq!(last["status"], "FAILED", "{last}");
        assert!(
            !last["error"].as_str().unwrap_or_default().is_empty(),
            "FAILED task carries an error text: {last}"
        );
        let after = server.status_data(key, id).await;
        assert_eq!(after["runningStatus"], running, "{after}");
        assert_eq!(after["service"]["os"]["id"], os, "{after}");
    }
}

#[tokio::test]
async fn service_is_busy_while_rebuilding() {
    let server = TestServer::start_with_env(&[("ADVPS_SANDBOX_TASK_SECONDS", "4")]);
    let key = &server.test_key;
    let task_id = server.start_rebuild(key, "vps_service_1", "centos-7").await;

    for action in ["start", "stop", "reboot", "get-ip", "generate-password"] {
        let resp = server.action(key, "vps_service_1", action).await;
        let body = assert_error(&resp, 409, BUSY);
        assert_eq!(
            body["errors"]["taskId"],
            task_id.as_str(),
            "{action}: {}",
            resp.text
        );
    }
    let resp = server.rebuild(key, "vps_service_1", "debian-11").await;
    let body = assert_error(&resp, 409, BUSY);
    assert_eq!(body["errors"]["taskId"], task_id.as_str());

    // Reads still work, and other services are not affected.
    let status = server.status_data(key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "REBUILDING");
    let other = server.action(key, "lxc_service_1", "stop").await;
    assert_eq!(other.status, 200, "{}", other.text);

    let history = server.wait_task(key, &task_id, POLL, WAIT).await;
    assert_eq!(history.last().unwrap()["status"], "COMPLETED");
    // Not busy any more.
    let resp = server.action(key, "vps_service_1", "reboot").await;
    assert_success(&resp, "VPS service rebooted successfully");
    let status = server.status_data(key, "vps_service_1").await;
    assert_eq!(status["service"]["os"]["id"], "centos-7");
}

#[tokio::test]
async fn monthly_rebuild_limit_is_403() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_SANDBOX_TASK_SECONDS", "0"),
        ("ADVPS_SANDBOX_REBUILD_LIMIT", "2"),
    ]);
    let key = &server.test_key;
    for os in ["debian-12", "debian-11"] {
        let task_id = server.start_rebuild(key, "vps_service_1", os).await;
        let history = server.wait_task(key, &task_id, POLL, WAIT).await;
        assert_eq!(history.last().unwrap()["status"], "COMPLETED");
    }
    let resp = server.rebuild(key, "vps_service_1", "rocky-9").await;
    assert_error(&resp, 403, "Monthly rebuild limit reached");
    let status = server.status_data(key, "vps_service_1").await;
    assert_eq!(status["service"]["os"]["id"], "debian-11");
    // The limit is per service.
    let task_id = server.start_rebuild(key, "lxc_service_1", "rocky-9").await;
    let history = server.wait_task(key, &task_id, POLL, WAIT).await;
    assert_eq!(history.last().unwrap()["status"], "COMPLETED");
}

#[tokio::test]
async fn failed_rebuilds_do_not_count_towards_the_limit() {
    let server = TestServer::start_with_env(&[
        ("ADVPS_SANDBOX_TASK_SECONDS", "0"),
        ("ADVPS_SANDBOX_REBUILD_LIMIT", "1"),
    ]);
    let key = &server.test_key;
    let task_id = server
        .start_rebuild(key, "vps_service_1", "sandbox-fail")
        .await;
    let history = server.wait_task(key, &task_id, POLL, WAIT).await;
    assert_eq!(history.last().unwrap()["status"], "FAILED");
    let task_id = server
        .start_rebuild(key, "vps_service_1", "ubuntu-24.04")
        .await;
    let history = server.wait_task(key, &task_id, POLL, WAIT).await;
    assert_eq!(history.last().unwrap()["status"], "COMPLETED");
    let resp = server.rebuild(key, "vps_service_1", "debian-12").await;
    assert_error(&resp, 403, "Monthly rebuild limit reached");
}

#[tokio::test]
async fn unknown_task_is_404() {
    let server = TestServer::start();
    let key = &server.test_key;
    for id in ["no-such-task", "00000000-0000-4000-8000-000000000000"] {
        let resp = server.task(key, id).await;
        assert_error(&resp, 404, TASK_NOT_FOUND);
    }
}
