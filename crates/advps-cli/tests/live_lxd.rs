//! Live mode against real LXD containers: `sk_live_` keys drive containers on the local LXD
//! (socket /var/lib/lxd/unix.socket, bridge advpsbr0 on 198.51.100.0/24, images
//! `advps-debian-12` and `advps-debian-13`).
//!
//! Every test starts its own server, registers the local node through the operator commands,
//! creates its own `advps-test-*` containers (deleted when the test ends, pass or fail), binds
//! them as LINUX services and checks the API answers against what the guest really does:
//! power actions and uptime, the address given at binding, root passwords against the
//! guest's /etc/shadow, rebuilds to another Debian release (also across a killed server), the
//! separation of accounts and modes, and the deadline on engine calls (with a fake engine that
//! stops answering).

mod common;
#[path = "common/live.rs"]
mod live;

use common::*;
use live::*;
use std::time::{Duration, Instant};

/// First address of this file's blocks (.64 onwards, eight per test).
const ADDRESS_OFFSET: u8 = 64;
const LIVE: &str = "live";
const TASK_POLL: Duration = Duration::from_millis(300);
const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

fn check_action(data: &Value, bound: &Bound, status: &str) {
    assert_eq!(data["serviceId"], bound.service_id.as_str(), "{data}");
    assert_eq!(data["serviceType"], "LINUX", "{data}");
    assert_eq!(data["status"], status, "{data}");
    assert_eq!(data["vmid"], bound.container.as_str(), "{data}");
}

/// Status through the API: (runningStatus, vmStatus.status, uptime), checking the shape.
async fn live_status(setup: &LiveSetup, bound: &Bound) -> (String, String, u64, Value) {
    let resp = setup.server.status(&setup.key, &bound.service_id).await;
    let data = assert_api_success(&resp, "Service status retrieved successfully", LIVE).clone();
    assert_eq!(data["serviceId"], bound.service_id.as_str(), "{data}");
    assert_eq!(data["serviceType"], "LINUX", "{data}");
    assert_eq!(
        data["service"]["serviceId"],
        bound.service_id.as_str(),
        "{data}"
    );
    let running = data["runningStatus"].as_str().expect("runningStatus");
    assert_eq!(data["service"]["runningStatus"], running, "{data}");
    let vm = data["vmStatus"]["status"]
        .as_str()
        .expect("vmStatus.status");
    let uptime = data["uptime"].as_u64().expect("uptime integer");
    assert_eq!(data["vmStatus"]["uptime"], uptime, "{data}");
    (running.to_string(), vm.to_string(), uptime, data)
}

/// Waits until `address` is on the guest's eth0 (a booting guest applies it a moment later).
fn wait_guest_address(container: &str, address: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addresses = guest_ipv4(container);
        if addresses.iter().any(|a| a == address) || Instant::now() > deadline {
            return addresses;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls a task until COMPLETED/FAILED, checking every observation; returns them all.
async fn follow_task(setup: &LiveSetup, bound: &Bound, task_id: &str) -> Vec<Value> {
    let history = setup
        .server
        .wait_task(&setup.key, task_id, TASK_POLL, REBUILD_TIMEOUT)
        .await;
    let mut last_rank = 0;
    let mut last_progress = 0;
    for data in &history {
        assert_eq!(data["taskId"], task_id, "{data}");
        assert_eq!(data["serviceId"], bound.service_id.as_str(), "{data}");
        assert_eq!(data["type"], "REBUILD", "{data}");
        assert_eq!(data["mode"], LIVE, "{data}");
        let rank = match data["status"].as_str().unwrap_or_default() {
            "PENDING" => 0,
            "IN_PROGRESS" => 1,
            "COMPLETED" | "FAILED" => 2,
            other => panic!("unexpected task status {other:?}: {history:?}"),
        };
        assert!(rank >= last_rank, "task status went back: {history:?}");
        last_rank = rank;
        let progress = data["progress"].as_u64().expect("progress integer");
        assert!(progress <= 100, "{data}");
        assert!(progress >= last_progress, "progress went down: {history:?}");
        last_progress = progress;
    }
    history
}

#[tokio::test]
async fn live_power_actions_follow_the_container() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = setup.bind_new();
    let (server, key, name) = (&setup.server, setup.key.as_str(), bound.container.as_str());
    let id = bound.service_id.as_str();

    // Running at first, as the engine says.
    let (running, vm, uptime, _) = live_status(&setup, &bound).await;
    assert_eq!((running.as_str(), vm.as_str()), ("RUNNING", "running"));
    assert_eq!(setup.lxd.lxc_list_state(name), "RUNNING");
    assert!(uptime < 600, "fresh container uptime {uptime}");

    // Start of a running one.
    let resp = server.action(key, id, "start").await;
    assert_error(
        &resp,
        500,
        "Failed to start service: service is already running",
    );

    // Stop.
    let resp = server.action(key, id, "stop").await;
    let data = assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    check_action(data, &bound, "STOPPED");
    assert_eq!(data["powerMode"], "graceful", "{data}");
    assert_eq!(setup.lxd.status(name), "Stopped");
    assert_eq!(setup.lxd.lxc_list_state(name), "STOPPED");
    let (running, vm, uptime, data) = live_status(&setup, &bound).await;
    assert_eq!((running.as_str(), vm.as_str()), ("STOPPED", "stopped"));
    assert_eq!(uptime, 0, "a stopped service has uptime 0: {data}");

    // Stop of a stopped one, reboot of a stopped one: refused, nothing changes.
    let resp = server.action(key, id, "stop").await;
    assert_error(
        &resp,
        500,
        "Failed to stop service: service is already stopped",
    );
    let resp = server.action(key, id, "reboot").await;
    assert_error(
        &resp,
        500,
        "Failed to reboot service: service is not running",
    );
    assert_eq!(setup.lxd.status(name), "Stopped");

    // Start.
    let resp = server.action(key, id, "start").await;
    let data = assert_api_success(&resp, "Linux service started successfully", LIVE);
    check_action(data, &bound, "STARTED");
    assert_eq!(setup.lxd.status(name), "Running");
    assert_eq!(setup.lxd.lxc_list_state(name), "RUNNING");
    wait_for_boot(name);
    let (running, vm, _, _) = live_status(&setup, &bound).await;
    assert_eq!((running.as_str(), vm.as_str()), ("RUNNING", "running"));
    let resp = server.action(key, id, "start").await;
    assert_error(
        &resp,
        500,
        "Failed to start service: service is already running",
    );

    // Uptime grows while running.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, _, before_reboot, data) = live_status(&setup, &bound).await;
    assert!(
        before_reboot >= 3,
        "uptime did not grow after 4 s running: {data}"
    );
    let own_uptime = guest_has_own_uptime(name);
    if own_uptime {
        let guest = guest_uptime(name);
        assert!(
            (before_reboot as f64 - guest).abs() < 5.0,
            "API uptime {before_reboot} vs guest /proc/uptime {guest}"
        );
    }

    // Reboot: a file in /run (tmpfs) disappears, uptime starts again.
    exec_ok(name, "echo before-reboot > /run/advps-reboot-marker");
    let resp = server.action(key, id, "reboot").await;
    let data = assert_api_success(&resp, "Linux service rebooted successfully", LIVE);
    check_action(data, &bound, "RUNNING");
    assert_eq!(setup.lxd.status(name), "Running");
    wait_for_boot(name);
    let (code, _) = exec(name, "test -e /run/advps-reboot-marker");
    assert_ne!(
        code, 0,
        "the guest was not rebooted: /run marker still there"
    );
    let (running, vm, after_reboot, data) = live_status(&setup, &bound).await;
    assert_eq!((running.as_str(), vm.as_str()), ("RUNNING", "running"));
    assert!(
        after_reboot < 10,
        "uptime right after a reboot should be small: {data}"
    );
    if own_uptime {
        let guest = guest_uptime(name);
        assert!(
            guest < 15.0,
            "guest /proc/uptime {guest} right after a reboot"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, _, later, data) = live_status(&setup, &bound).await;
    assert!(
        later >= after_reboot + 2,
        "uptime did not grow ({after_reboot} then {later}): {data}"
    );

    // Stopped again: uptime 0.
    let resp = server.action(key, id, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    let (running, vm, uptime, data) = live_status(&setup, &bound).await;
    assert_eq!((running.as_str(), vm.as_str()), ("STOPPED", "stopped"));
    assert_eq!(uptime, 0, "{data}");
    assert_eq!(setup.lxd.lxc_list_state(name), "STOPPED");

    // Forced reboot and forced stop: the engine is told to cut the power.
    let resp = server.action(key, id, "start").await;
    assert_api_success(&resp, "Linux service started successfully", LIVE);
    wait_for_boot(name);
    exec_ok(name, "echo before-reboot > /run/advps-reboot-marker");
    let path = format!("/api/v1/services/{id}/reboot");
    let resp = server
        .post_json(&path, key, &json!({"mode": "force"}))
        .await;
    let data = assert_api_success(&resp, "Linux service rebooted successfully", LIVE);
    assert_eq!(data["powerMode"], "forced", "{data}");
    wait_for_boot(name);
    let (code, _) = exec(name, "test -e /run/advps-reboot-marker");
    assert_ne!(code, 0, "a forced reboot did not restart the guest");
    let path = format!("/api/v1/services/{id}/stop");
    let resp = server
        .post_json(&path, key, &json!({"mode": "force"}))
        .await;
    let data = assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    assert_eq!(data["powerMode"], "forced", "{data}");
    assert_eq!(setup.lxd.status(name), "Stopped");
}

#[tokio::test]
async fn live_container_keeps_the_address_given_at_binding() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = setup.bind_new();
    let (server, key, name) = (&setup.server, setup.key.as_str(), bound.container.as_str());
    let id = bound.service_id.as_str();

    let resp = server.action(key, id, "get-ip").await;
    assert_error(
        &resp,
        400,
        "IP configuration not supported for this service type",
    );

    let check = |stage: &'static str, data: Value, addresses: Vec<String>| {
        assert_eq!(data["ip"], bound.address.as_str(), "{stage}: {data}");
        assert_eq!(
            data["service"]["ip"],
            bound.address.as_str(),
            "{stage}: {data}"
        );
        assert_eq!(
            addresses,
            vec![bound.address.clone()],
            "{stage}: eth0 addresses in the guest"
        );
    };

    let (_, _, _, data) = live_status(&setup, &bound).await;
    check("after binding", data, guest_ipv4(name));

    let resp = server.action(key, id, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    let resp = server.action(key, id, "start").await;
    assert_api_success(&resp, "Linux service started successfully", LIVE);
    wait_for_boot(name);
    let addresses = wait_guest_address(name, &bound.address);
    let (running, _, _, data) = live_status(&setup, &bound).await;
    assert_eq!(running, "RUNNING");
    check("after stop and start", data, addresses);

    let resp = server.action(key, id, "reboot").await;
    assert_api_success(&resp, "Linux service rebooted successfully", LIVE);
    wait_for_boot(name);
    let addresses = wait_guest_address(name, &bound.address);
    let (running, _, _, data) = live_status(&setup, &bound).await;
    assert_eq!(running, "RUNNING");
    check("after reboot", data, addresses);

    // Still refused afterwards, and the address did not change.
    let resp = server.action(key, id, "get-ip").await;
    assert_error(
        &resp,
        400,
        "IP configuration not supported for this service type",
    );
    assert_eq!(guest_ipv4(name), vec![bound.address.clone()]);
}

#[tokio::test]
async fn live_generate_password_sets_the_root_password() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = setup.bind_new();
    let (server, key, name) = (&setup.server, setup.key.as_str(), bound.container.as_str());
    let id = bound.service_id.as_str();

    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    assert_eq!(data["serviceId"], id, "{data}");
    let first = data["password"].as_str().expect("password").to_string();
    assert!(is_strong_password(&first), "weak password {first:?}");
    assert!(
        verify_root_password(name, &first),
        "the returned password does not match root's hash in /etc/shadow"
    );
    assert!(!verify_root_password(name, "not-the-password-1A"));

    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let second = data["password"].as_str().expect("password").to_string();
    assert!(is_strong_password(&second), "weak password {second:?}");
    assert_ne!(first, second, "two calls gave the same password");
    assert!(verify_root_password(name, &second), "second password");
    assert!(
        !verify_root_password(name, &first),
        "the first password still works after the second call"
    );
    let (code, _) = exec(name, "test -e /run/advps-chpasswd");
    assert_ne!(code, 0, "the password file was left in the guest");

    let resp = server.action(key, id, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    let resp = server.action(key, id, "generate-password").await;
    assert_error(
        &resp,
        400,
        "Service must be running before generating a password",
    );
    assert!(resp.body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("must be running"));
}

#[tokio::test]
async fn live_rebuild_installs_the_new_release_and_keeps_address_and_password() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = setup.bind_new();
    let (server, key, name) = (&setup.server, setup.key.as_str(), bound.container.as_str());
    let id = bound.service_id.as_str();
    assert_eq!(guest_codename(name), "bookworm");

    // Refusals first: they change nothing.
    let resp = server.rebuild(key, id, "no-such-os").await;
    assert_error(&resp, 400, "Missing or invalid os in request body");
    server.cli_ok(&[
        "os", "add", "win", "--name", "W", "--type", "vps", "--image", "nothing",
    ]);
    let resp = server.rebuild(key, id, "win").await;
    assert_error(&resp, 500, "No OS templates available for the selected OS");

    // State the rebuild must wipe (a file) and keep (password, address).
    exec_ok(name, "echo keep-me-not > /root/advps-marker");
    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let password = data["password"].as_str().expect("password").to_string();
    assert!(verify_root_password(name, &password));

    let resp = server.rebuild(key, id, "debian-13").await;
    let data = assert_api_success(&resp, "Linux rebuild initiated successfully", LIVE);
    assert_eq!(resp.body["success"], true, "{}", resp.text);
    assert_eq!(data["serviceId"], id, "{data}");
    assert_eq!(data["serviceType"], "LINUX", "{data}");
    assert_eq!(data["status"], "PENDING", "{data}");
    assert_eq!(data["apiMode"], LIVE, "{data}");
    let task_id = data["taskId"].as_str().expect("taskId").to_string();

    // While it runs: busy.
    let resp = server.action(key, id, "stop").await;
    let body = assert_error(&resp, 409, BUSY);
    assert_eq!(body["errors"]["taskId"], task_id.as_str(), "{}", resp.text);
    let (running, vm, _, data) = live_status(&setup, &bound).await;
    assert_eq!(
        (running.as_str(), vm.as_str()),
        ("REBUILDING", "installing"),
        "status during the rebuild: {data}"
    );

    let followed = Instant::now();
    let history = follow_task(&setup, &bound, &task_id).await;
    let took = followed.elapsed();
    let last = history.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "task history: {history:?}");
    assert_eq!(last["progress"], 100, "{last}");
    let saw_in_progress = history.iter().any(|d| d["status"] == "IN_PROGRESS");
    assert!(
        saw_in_progress || took < Duration::from_secs(2),
        "the task took {took:?} and was never seen IN_PROGRESS: {history:?}"
    );

    // The guest is the new release, fresh, with the same address and password.
    wait_for_boot(name);
    assert_eq!(guest_codename(name), "trixie");
    let (code, _) = exec(name, "test -e /root/advps-marker");
    assert_ne!(code, 0, "the marker file survived the rebuild");
    assert_eq!(
        wait_guest_address(name, &bound.address),
        vec![bound.address.clone()],
        "address after the rebuild"
    );
    assert!(
        verify_root_password(name, &password),
        "the root password set before the rebuild does not verify afterwards"
    );
    let (running, vm, _, data) = live_status(&setup, &bound).await;
    assert_eq!((running.as_str(), vm.as_str()), ("RUNNING", "running"));
    assert_eq!(data["service"]["os"]["id"], "debian-13", "{data}");
    assert_eq!(data["service"]["os"]["name"], "Debian 13", "{data}");
    assert_eq!(data["ip"], bound.address.as_str(), "{data}");

    // Not busy any more.
    let resp = server.action(key, id, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
}

#[tokio::test]
async fn live_rebuild_survives_a_killed_server() {
    let Some(mut setup) = LiveSetup::new(ADDRESS_OFFSET, &[("ADVPS_TASK_LEASE_SECS", "3")]) else {
        return;
    };
    let bound = setup.bind_new();
    let id = bound.service_id.clone();
    let key = setup.key.clone();

    let resp = setup.server.action(&key, &id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let password = data["password"].as_str().expect("password").to_string();

    let task_id = setup.server.start_rebuild(&key, &id, "debian-13").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = setup.server.task(&key, &task_id).await;
        let data = assert_api_success(&resp, "Task status retrieved successfully", LIVE);
        match data["status"].as_str().unwrap_or_default() {
            "IN_PROGRESS" => break,
            "PENDING" => {}
            other => panic!("task left PENDING for {other} before the kill: {data}"),
        }
        assert!(Instant::now() < deadline, "task never IN_PROGRESS: {data}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    setup.server.kill_and_restart();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut seen = Vec::new();
    let last = loop {
        let resp = setup.server.task(&key, &task_id).await;
        let data = assert_api_success(&resp, "Task status retrieved successfully", LIVE).clone();
        let status = data["status"].as_str().unwrap_or_default().to_string();
        seen.push(status.clone());
        if status == "COMPLETED" || status == "FAILED" {
            break data;
        }
        assert!(
            Instant::now() < deadline,
            "task still {status} {:?} after the restart; statuses: {seen:?}\nstderr:\n{}",
            started.elapsed(),
            setup.server.stderr_log()
        );
        tokio::time::sleep(TASK_POLL).await;
    };
    assert_eq!(
        last["status"],
        "COMPLETED",
        "{last}\nstderr:\n{}",
        setup.server.stderr_log()
    );
    assert_eq!(last["progress"], 100, "{last}");
    eprintln!(
        "rebuild resumed after the kill: COMPLETED {:?} after the restart; statuses {seen:?}",
        started.elapsed()
    );

    wait_for_boot(&bound.container);
    assert_eq!(guest_codename(&bound.container), "trixie");
    let (running, _, _, data) = live_status(&setup, &bound).await;
    assert_eq!(running, "RUNNING", "{data}");
    assert_eq!(data["service"]["os"]["id"], "debian-13", "{data}");
    assert_eq!(
        wait_guest_address(&bound.container, &bound.address),
        vec![bound.address.clone()]
    );
    assert!(
        verify_root_password(&bound.container, &password),
        "the password set before the rebuild does not verify after the resumed rebuild"
    );
    // Nothing of the killed run still holds the service.
    let resp = setup.server.action(&key, &id, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    assert_eq!(setup.lxd.status(&bound.container), "Stopped");
}

#[tokio::test]
async fn live_services_are_invisible_to_other_accounts_and_to_test_keys() {
    let Some(setup) = LiveSetup::new(ADDRESS_OFFSET, &[]) else {
        return;
    };
    let bound = setup.bind_new();
    let server = &setup.server;
    let id = bound.service_id.as_str();

    server.create_account("other");
    let other_live = server.create_key("other", "live");
    let acme_test = server.create_key("acme", "test");

    for (who, key) in [
        ("other account's live key", other_live.as_str()),
        ("acme's test key", acme_test.as_str()),
        ("the first-start test key", server.test_key.as_str()),
    ] {
        let resp = server.status(key, id).await;
        assert_eq!(resp.status, 404, "{who}: {}", resp.text);
        assert_error(&resp, 404, SERVICE_NOT_FOUND);
        for action in ["stop", "reboot", "generate-password"] {
            let resp = server.action(key, id, action).await;
            assert_eq!(resp.status, 404, "{who} {action}: {}", resp.text);
            assert_error(&resp, 404, SERVICE_NOT_FOUND);
        }
        let resp = server.rebuild(key, id, "debian-13").await;
        assert_error(&resp, 404, SERVICE_NOT_FOUND);
    }

    // Nothing happened to the container; its owner still sees it.
    assert_eq!(setup.lxd.status(&bound.container), "Running");
    let (running, _, _, _) = live_status(&setup, &bound).await;
    assert_eq!(running, "RUNNING");
}

#[tokio::test]
async fn live_engine_that_stops_answering_times_out() {
    let fake = FakeLxd::start();
    let server = TestServer::start_with_env(&live_env(&[("ADVPS_ENGINE_TIMEOUT_SECS", "2")]));
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
    let out = server.cli_ok(&["nodes", "sync", "hang"]);
    assert!(out.contains("1 instances"), "sync: {out}");
    server.cli_ok(&[
        "os",
        "add",
        "debian-12",
        "--name",
        "Debian 12",
        "--type",
        "lxc",
        "--image",
        "advps-debian-12",
    ]);
    let out = server.cli_ok(&[
        "services",
        "create",
        "--account",
        "acme",
        "--node",
        "hang",
        "--instance",
        FAKE_INSTANCE,
        "--type",
        "LINUX",
        "--os",
        "debian-12",
    ]);
    let id = last_line(&out);
    let key = server.create_key("acme", "live");
    fake.stop_answering();

    let started = Instant::now();
    let resp = server.action(&key, &id, "start").await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "start took {elapsed:?} against an engine that never answers"
    );
    assert_eq!(resp.status, 500, "{}", resp.text);
    assert_eq!(resp.body["status"], "error", "{}", resp.text);
    let message = resp.body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Failed to start service"),
        "message {message:?}"
    );
    assert!(
        message.contains("did not answer in time"),
        "message does not say the hypervisor timed out: {message:?}"
    );
    assert!(fake.held() >= 1, "no request reached the fake engine");

    // The server is still fine.
    let resp = server.get_anon("/livez").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = server.get("/api/v1/products/stock", &key).await;
    assert_api_success(&resp, "Product stock retrieved successfully", LIVE);
    let resp = server.status(&server.test_key, "lxc_service_1").await;
    assert_api_success(&resp, "Service status retrieved successfully", "test");
    let started = Instant::now();
    let resp = server.action(&key, &id, "stop").await;
    assert!(started.elapsed() < Duration::from_secs(10), "stop hung");
    assert_eq!(resp.status, 500, "{}", resp.text);
    let message = resp.body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Failed to stop service") && message.contains("did not answer in time"),
        "{message:?}"
    );
}
