//! Service management endpoints against the sandbox fleet of a test key: start, stop, reboot,
//! get-ip, status and generate-password, for each sandbox service type (VPS, Linux container,
//! Provisional VPS). Covers the success shapes, the documented errors, and how the state of a
//! service (running status, uptime, address) evolves between calls.

mod common;

use common::*;
use std::time::Duration;

/// (service id, serviceType, word used in messages, vmid)
const FLEET: [(&str, &str, &str, &str); 4] = [
    ("vps_service_1", "VPS", "VPS", "vm1000"),
    ("vps_service_2", "VPS", "VPS", "vm1001"),
    ("lxc_service_1", "LINUX", "Linux", "ct2000"),
    (
        "pvps_service_1",
        "PROVISIONAL_VPS",
        "Provisional VPS",
        "vm3000",
    ),
];

fn check_action_data(data: &Value, id: &str, service_type: &str, status: &str, vmid: &str) {
    assert_eq!(data["serviceId"], id, "{data}");
    assert_eq!(data["serviceType"], service_type, "{data}");
    assert_eq!(data["status"], status, "{data}");
    assert_eq!(data["vmid"], vmid, "{data}");
}

#[tokio::test]
async fn livez_is_public_and_uses_the_success_envelope() {
    let server = TestServer::start();
    let resp = server.get_anon("/livez").await;
    let data = assert_success(&resp, resp.body["message"].as_str().unwrap_or("<none>"));
    assert_eq!(data["status"], "ok");
    assert!(resp.body["message"].is_string());
}

#[tokio::test]
async fn stop_each_type_returns_stopped_shape() {
    let server = TestServer::start();
    let key = &server.test_key;
    for (id, ty, word, vmid) in FLEET {
        if id == "vps_service_2" {
            continue;
        }
        let resp = server.action(key, id, "stop").await;
        let data = assert_api_success(
            &resp,
            &format!("{word} service stopped successfully"),
            "test",
        );
        check_action_data(data, id, ty, "STOPPED", vmid);
    }
}

#[tokio::test]
async fn start_each_type_after_stop_returns_started_shape() {
    let server = TestServer::start();
    let key = &server.test_key;
    for (id, ty, word, vmid) in FLEET {
        if id != "vps_service_2" {
            let stop = server.action(key, id, "stop").await;
            assert_eq!(stop.status, 200, "{}", stop.text);
        }
        let resp = server.action(key, id, "start").await;
        let data = assert_api_success(
            &resp,
            &format!("{word} service started successfully"),
            "test",
        );
        check_action_data(data, id, ty, "STARTED", vmid);
        let status = server.status_data(key, id).await;
        assert_eq!(status["runningStatus"], "RUNNING", "{status}");
        assert_eq!(status["vmStatus"]["status"], "running", "{status}");
        let uptime = status["uptime"].as_u64().expect("uptime is an integer");
        assert!(
            uptime < 10,
            "uptime should restart from 0 after start: {uptime}"
        );
    }
}

#[tokio::test]
async fn start_running_service_is_500() {
    let server = TestServer::start();
    let key = &server.test_key;
    for id in ["vps_service_1", "lxc_service_1", "pvps_service_1"] {
        let resp = server.action(key, id, "start").await;
        assert_error(
            &resp,
            500,
            "Failed to start service: service is already running",
        );
    }
    // Starting the stopped one twice: the second start fails.
    let first = server.action(key, "vps_service_2", "start").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = server.action(key, "vps_service_2", "start").await;
    assert_error(
        &second,
        500,
        "Failed to start service: service is already running",
    );
}

#[tokio::test]
async fn stop_stopped_service_is_500() {
    let server = TestServer::start();
    let key = &server.test_key;
    let resp = server.action(key, "vps_service_2", "stop").await;
    assert_error(
        &resp,
        500,
        "Failed to stop service: service is already stopped",
    );
    let first = server.action(key, "lxc_service_1", "stop").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = server.action(key, "lxc_service_1", "stop").await;
    assert_error(
        &second,
        500,
        "Failed to stop service: service is already stopped",
    );
}

#[tokio::test]
async fn reboot_each_running_type_and_reboot_stopped_is_500() {
    let server = TestServer::start();
    let key = &server.test_key;
    for (id, ty, word, vmid) in FLEET {
        if id == "vps_service_2" {
            let resp = server.action(key, id, "reboot").await;
            assert_error(
                &resp,
                500,
                "Failed to reboot service: service is not running",
            );
            continue;
        }
        let resp = server.action(key, id, "reboot").await;
        let data = assert_api_success(
            &resp,
            &format!("{word} service rebooted successfully"),
            "test",
        );
        check_action_data(data, id, ty, "RUNNING", vmid);
    }
}

#[tokio::test]
async fn reboot_restarts_uptime() {
    let server = TestServer::start();
    let key = &server.test_key;
    let before = server.status_data(key, "vps_service_1").await;
    let before_uptime = before["uptime"].as_u64().expect("uptime integer");
    assert!(
        before_uptime >= 86_400,
        "vps_service_1 starts with about a day of uptime: {before}"
    );
    let resp = server.action(key, "vps_service_1", "reboot").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let after = server.status_data(key, "vps_service_1").await;
    assert_eq!(after["runningStatus"], "RUNNING");
    let after_uptime = after["uptime"].as_u64().expect("uptime integer");
    assert!(after_uptime < 10, "uptime after reboot: {after_uptime}");
    assert_eq!(after["vmStatus"]["uptime"], after["uptime"]);
}

#[tokio::test]
async fn stop_then_status_is_stopped_with_zero_uptime() {
    let server = TestServer::start();
    let key = &server.test_key;
    let resp = server.action(key, "vps_service_1", "stop").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let status = server.status_data(key, "vps_service_1").await;
    assert_eq!(status["runningStatus"], "STOPPED", "{status}");
    assert_eq!(status["uptime"], 0, "{status}");
    assert_eq!(status["vmStatus"]["status"], "stopped", "{status}");
    assert_eq!(status["vmStatus"]["uptime"], 0, "{status}");
    assert_eq!(status["service"]["runningStatus"], "STOPPED", "{status}");
    // Still stopped a moment later: uptime does not grow while stopped.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = server.status_data(key, "vps_service_1").await;
    assert_eq!(later["uptime"], 0, "{later}");
}

#[tokio::test]
async fn status_shape_for_each_sandbox_service() {
    let server = TestServer::start();
    let key = &server.test_key;
    // (id, type, running status, ip, os id)
    let expected = [
        (
            "vps_service_1",
            "VPS",
            "RUNNING",
            json!("192.168.1.100"),
            "ubuntu-22.04",
        ),
        (
            "vps_service_2",
            "VPS",
            "STOPPED",
            json!("192.168.1.101"),
            "debian-12",
        ),
        (
            "lxc_service_1",
            "LINUX",
            "RUNNING",
            json!("192.168.1.150"),
            "debian-12",
        ),
        (
            "pvps_service_1",
            "PROVISIONAL_VPS",
            "RUNNING",
            Value::Null,
            "",
        ),
    ];
    for (id, ty, running, ip, os) in expected {
        let resp = server.status(key, id).await;
        let data = assert_api_success(&resp, "Service status retrieved successfully", "test");
        assert_eq!(data["serviceId"], id);
        assert_eq!(data["serviceType"], ty);
        assert_eq!(data["runningStatus"], running, "{data}");
        assert_eq!(data["ip"], ip, "{data}");
        let uptime = data["uptime"]
            .as_u64()
            .expect("uptime is a non-negative integer");
        if running == "RUNNING" {
            assert!(uptime > 0, "running service has uptime: {data}");
        } else {
            assert_eq!(uptime, 0);
        }
        let service = &data["service"];
        assert_eq!(service["serviceId"], id, "{data}");
        assert_eq!(service["ip"], ip, "{data}");
        assert_eq!(service["runningStatus"], running, "{data}");
        assert!(service["os"]["id"].is_string(), "{data}");
        assert!(
            !service["os"]["name"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "os.name: {data}"
        );
        if !os.is_empty() {
            assert_eq!(service["os"]["id"], os, "{data}");
        }
        assert!(service.get("expiryDate").is_some(), "expiryDate: {data}");
        assert_eq!(
            data["vmStatus"]["status"],
            running.to_lowercase().as_str(),
            "{data}"
        );
        assert_eq!(data["vmStatus"]["uptime"], uptime, "{data}");
    }
    let vps1 = server.status_data(key, "vps_service_1").await;
    assert_eq!(vps1["service"]["os"]["name"], "Ubuntu 22.04", "{vps1}");
}

#[tokio::test]
async fn uptime_grows_while_running() {
    let server = TestServer::start();
    let key = &server.test_key;
    let first = server.status_data(key, "lxc_service_1").await["uptime"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let second = server.status_data(key, "lxc_service_1").await["uptime"]
        .as_u64()
        .unwrap();
    assert!(
        second > first && second <= first + 10,
        "uptime went from {first} to {second} over ~2.3 s"
    );
}

#[tokio::test]
async fn get_ip_vps_returns_configured_address_and_is_stable() {
    let server = TestServer::start();
    let key = &server.test_key;
    for _ in 0..2 {
        let resp = server.action(key, "vps_service_1", "get-ip").await;
        let data = assert_api_success(&resp, "VPS IP configured successfully", "test");
        assert_eq!(data["serviceId"], "vps_service_1");
        assert_eq!(data["serviceType"], "VPS");
        assert_eq!(data["status"], "IP_CONFIGURED");
        assert_eq!(data["ip"], "192.168.1.100");
    }
}

#[tokio::test]
async fn get_ip_provisional_assigns_a_stable_address() {
    let server = TestServer::start();
    let key = &server.test_key;
    let before = server.status_data(key, "pvps_service_1").await;
    assert_eq!(before["ip"], Value::Null, "{before}");

    let resp = server.action(key, "pvps_service_1", "get-ip").await;
    let data = assert_api_success(&resp, "Provisional VPS IP configured successfully", "test");
    assert_eq!(data["serviceType"], "PROVISIONAL_VPS");
    assert_eq!(data["status"], "IP_CONFIGURED");
    let ip = data["ip"].as_str().expect("ip is a string").to_string();
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "not an IPv4 address: {ip}"
    );

    let again = server.action(key, "pvps_service_1", "get-ip").await;
    assert_eq!(
        assert_success(&again, "Provisional VPS IP configured successfully")["ip"],
        ip.as_str()
    );
    let after = server.status_data(key, "pvps_service_1").await;
    assert_eq!(after["ip"], ip.as_str(), "{after}");
    assert_eq!(after["service"]["ip"], ip.as_str(), "{after}");
}

#[tokio::test]
async fn get_ip_on_linux_is_400() {
    let server = TestServer::start();
    let resp = server
        .action(&server.test_key, "lxc_service_1", "get-ip")
        .await;
    assert_error(
        &resp,
        400,
        "IP configuration not supported for this service type",
    );
}

#[tokio::test]
async fn generate_password_is_strong_and_differs_each_time() {
    let server = TestServer::start();
    let key = &server.test_key;
    for id in ["vps_service_1", "lxc_service_1", "pvps_service_1"] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let resp = server.action(key, id, "generate-password").await;
            let data = assert_api_success(&resp, "Password generated successfully", "test");
            assert_eq!(data["serviceId"], id);
            let password = data["password"]
                .as_str()
                .expect("password string")
                .to_string();
            assert!(is_strong_password(&password), "weak password {password:?}");
            assert!(!seen.contains(&password), "password repeated: {password}");
            seen.push(password);
        }
    }
}

#[tokio::test]
async fn generate_password_on_stopped_service_is_400() {
    let server = TestServer::start();
    let resp = server
        .action(&server.test_key, "vps_service_2", "generate-password")
        .await;
    let body = assert_error(
        &resp,
        400,
        "Service must be running before generating a password",
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("must be running"));
}

#[tokio::test]
async fn unknown_service_is_404_on_every_endpoint() {
    let server = TestServer::start();
    let key = &server.test_key;
    for action in ["start", "stop", "reboot", "get-ip", "generate-password"] {
        let resp = server.action(key, "no_such_service", action).await;
        assert_error(&resp, 404, SERVICE_NOT_FOUND);
    }
    let resp = server.status(key, "no_such_service").await;
    assert_error(&resp, 404, SERVICE_NOT_FOUND);
    let resp = server.rebuild(key, "no_such_service", "debian-12").await;
    assert_error(&resp, 404, SERVICE_NOT_FOUND);
}

#[tokio::test]
async fn request_ids_are_unique_and_match_the_header() {
    let server = TestServer::start();
    let key = &server.test_key;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..10 {
        let resp = server.status(key, "vps_service_1").await;
        let data = assert_success(&resp, "Service status retrieved successfully");
        let rid = data["requestId"].as_str().unwrap().to_string();
        assert_eq!(resp.header("x-request-id").as_deref(), Some(rid.as_str()));
        assert!(ids.insert(rid), "duplicate request id");
    }
}
