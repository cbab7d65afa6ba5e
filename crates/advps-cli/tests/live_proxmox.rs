//! Live mode against a Proxmox VE cluster, end to end: the real `advps` binary drives the
//! stateful fake Proxmox VE server of the driver's tests (`advps-drivers/tests/support`:
//! TLS with its own CA, token check, UPID tasks, locks, guest agent), registered through
//! the operator commands exactly as an operator would (`nodes add --driver proxmox --token
//! --ca`, `nodes sync`, `os add`, `ippools add`, `services create`, a live key).
//!
//! The fake cluster has VM 100 (running, agent up) and CT 101 (running) bound to the account
//! `acme` as a VPS and a LINUX service, and the template VMs 9000 and 9001. Every test checks
//! the API answers (exact messages and fields) against what the fake cluster records: power
//! through tasks, status as measured by Proxmox, get-ip written to the VM's `ipconfig0`,
//! passwords set through the guest agent (VM) or `pct exec` over SSH (CT, with a real sshd
//! standing in for the node, `support/sshd.rs`), rebuilds by re-cloning the template
//! (completed, failed inside Proxmox, and resumed after the server was killed). Each test
//! ends by asserting that the fake saw no request outside the official Proxmox VE API schema.

mod common;
#[path = "common/live.rs"]
mod live;
// Both this and `live` load the driver tests' `require.rs`; the two copies are alike.
#[allow(clippy::duplicate_mod)]
#[path = "../../advps-drivers/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::*;
use live::FakeLxd;
use support::fake_pve::{cluster, FakeGuest, FakePve, State, TOKEN};
use support::sshd::TestSshd;

const LIVE: &str = "live";
/// The first address of the pool: CT 101 gets it when it is bound.
const CT_ADDRESS: &str = "198.51.100.100";
/// The next one: VM 100 gets it through get-ip.
const VM_ADDRESS: &str = "198.51.100.101";
const DEBIAN_VZTMPL: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
const ALPINE_VZTMPL: &str = "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz";
/// VM 100's own disk, and the disk of template 9001 (a re-clone replaces the one by the other).
const VM_DISK: &str = "local-lvm:vm-100-disk-0,size=20G";
const UBUNTU_TEMPLATE_DISK: &str = "local-lvm:base-9001-disk-0,size=20G";
const TASK_POLL: Duration = Duration::from_millis(250);
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// The fake cluster plus a second template VM (9001) and a recognisable disk on VM 100.
fn fake_cluster() -> State {
    let mut state = cluster();
    let mut ubuntu = FakeGuest::template("pve1", "ubuntu-24-04-cloud");
    ubuntu
        .config
        .insert("scsi0".into(), UBUNTU_TEMPLATE_DISK.into());
    state.guests.insert(9001, ubuntu);
    state
        .guests
        .get_mut(&100)
        .unwrap()
        .config
        .insert("scsi0".into(), VM_DISK.into());
    state
}

/// A server with the fake cluster registered as node `pve`, and its two services bound.
/// Fields drop in order: the server stops before the fake cluster.
struct Pve {
    server: TestServer,
    fake: FakePve,
    key: String,
    /// The VPS service on VM 100.
    vps: String,
    /// The LINUX service on CT 101.
    linux: String,
    _ca_dir: tempfile::TempDir,
}

impl Pve {
    async fn setup(extra_env: &[(&str, &str)]) -> Pve {
        Pve::setup_with(extra_env, &[]).await
    }

    /// Like [`Pve::setup`], with `node_args` added to `nodes add`.
    async fn setup_with(extra_env: &[(&str, &str)], node_args: &[&str]) -> Pve {
        let fake = FakePve::start(fake_cluster()).await;
        let mut env = vec![("ADVPS_RATE_LIMIT_LIVE", "100000")];
        env.extend_from_slice(extra_env);
        let server = TestServer::start_with_env(&env);
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = ca_dir.path().join("pve-root-ca.pem");
        std::fs::write(&ca, &fake.ca_pem).unwrap();
        server.create_account("acme");

        let mut args = vec![
            "nodes",
            "add",
            "pve",
            "--driver",
            "proxmox",
            "--endpoint",
            &fake.url,
            "--token",
            TOKEN,
            "--ca",
            ca.to_str().unwrap(),
        ];
        args.extend_from_slice(node_args);
        let out = server.cli_ok(&args);
        assert!(
            out.contains(&format!("Added node pve (proxmox at {}", fake.url)),
            "nodes add: {out}"
        );
        let out = server.cli_ok(&["nodes", "sync", "pve"]);
        assert!(
            out.contains("Synced node pve: 3 instances (3 new, 0 updated, 0 missing)"),
            "nodes sync: {out}"
        );
        for image in ["9000", "9001", DEBIAN_VZTMPL, ALPINE_VZTMPL] {
            assert!(
                out.lines()
                    .any(|l| l.split_whitespace().next() == Some(image)),
                "image {image} not listed by nodes sync: {out}"
            );
        }
        for (slug, name, kind, image) in [
            ("debian-12", "Debian 12", "vps", "9000"),
            ("ubuntu-24.04", "Ubuntu 24.04", "vps", "9001"),
            ("debian-12", "Debian 12", "lxc", DEBIAN_VZTMPL),
            ("alpine-3.20", "Alpine 3.20", "lxc", ALPINE_VZTMPL),
        ] {
            server.cli_ok(&[
                "os", "add", slug, "--name", name, "--type", kind, "--image", image, "--node",
                "pve",
            ]);
        }
        server.cli_ok(&[
            "ippools",
            "add",
            "lan",
            "--cidr",
            "198.51.100.0/24",
            "--gateway",
            "198.51.100.1",
            "--range",
            "198.51.100.100-198.51.100.109",
            "--node",
            "pve",
        ]);
        let out = server.cli_ok(&[
            "services",
            "create",
            "--account",
            "acme",
            "--node",
            "pve",
            "--instance",
            "100",
            "--type",
            "VPS",
            "--os",
            "debian-12",
        ]);
        let vps = last_line(&out);
        let out = server.cli_ok(&[
            "services",
            "create",
            "--account",
            "acme",
            "--node",
            "pve",
            "--instance",
            "101",
            "--type",
            "LINUX",
            "--os",
            "debian-12",
        ]);
        assert!(
            out.contains(&format!("Address {CT_ADDRESS}/24 configured (pool lan)")),
            "services create LINUX: {out}"
        );
        let linux = last_line(&out);
        assert_ne!(vps, linux);
        // The container's address was written to its net0 on binding.
        assert_eq!(
            fake.guest(101).unwrap().config["net0"],
            format!(
                "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:BB:00:01,ip={CT_ADDRESS}/24,\
                 gw=198.51.100.1,type=veth"
            )
        );
        let key = server.create_key("acme", "live");
        Pve {
            server,
            fake,
            key,
            vps,
            linux,
            _ca_dir: ca_dir,
        }
    }

    fn count(&self, method: &str, path_suffix: &str) -> usize {
        self.fake.with(|s| s.count(method, path_suffix))
    }

    /// The last request with this method whose path ends with `path_suffix`.
    fn last_request(&self, method: &str, path_suffix: &str) -> support::fake_pve::Recorded {
        self.fake.with(|s| {
            s.requests
                .iter()
                .rev()
                .find(|r| r.method == method && r.path.ends_with(path_suffix))
                .cloned()
                .unwrap_or_else(|| panic!("the fake saw no {method} …{path_suffix}"))
        })
    }

    /// Status through the API: (runningStatus, vmStatus.status, uptime, data), checking the
    /// shape and that the nested copies agree.
    async fn status(&self, id: &str, service_type: &str) -> (String, String, u64, Value) {
        let resp = self.server.status(&self.key, id).await;
        let data = assert_api_success(&resp, "Service status retrieved successfully", LIVE).clone();
        assert_eq!(data["serviceId"], id, "{data}");
        assert_eq!(data["serviceType"], service_type, "{data}");
        assert_eq!(data["service"]["serviceId"], id, "{data}");
        let running = data["runningStatus"].as_str().expect("runningStatus");
        assert_eq!(data["service"]["runningStatus"], running, "{data}");
        assert_eq!(data["service"]["ip"], data["ip"], "{data}");
        let vm = data["vmStatus"]["status"]
            .as_str()
            .expect("vmStatus.status");
        let uptime = data["uptime"].as_u64().expect("uptime integer");
        assert_eq!(data["vmStatus"]["uptime"], uptime, "{data}");
        (running.to_string(), vm.to_string(), uptime, data)
    }

    /// Polls a task until COMPLETED/FAILED, checking every observation: ids, type, mode,
    /// status never going back, progress within 0..=100 and never decreasing.
    async fn follow(&self, id: &str, task_id: &str) -> Vec<Value> {
        let history = self
            .server
            .wait_task(&self.key, task_id, TASK_POLL, TASK_TIMEOUT)
            .await;
        check_history(&history, id, task_id);
        history
    }
}

fn check_history(history: &[Value], id: &str, task_id: &str) {
    let mut last_rank = 0;
    let mut last_progress = 0;
    for data in history {
        assert_eq!(data["taskId"], task_id, "{data}");
        assert_eq!(data["serviceId"], id, "{data}");
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
}

fn check_action(data: &Value, id: &str, service_type: &str, status: &str, vmid: &str) {
    assert_eq!(data["serviceId"], id, "{data}");
    assert_eq!(data["serviceType"], service_type, "{data}");
    assert_eq!(data["status"], status, "{data}");
    assert_eq!(data["vmid"], vmid, "{data}");
}

/// Starts a rebuild and checks the acceptance; returns the task id.
async fn start_rebuild(pve: &Pve, id: &str, os: &str, label: &str, service_type: &str) -> String {
    let resp = pve.server.rebuild(&pve.key, id, os).await;
    let data = assert_api_success(
        &resp,
        &format!("{label} rebuild initiated successfully"),
        LIVE,
    );
    assert_eq!(resp.body["success"], true, "{}", resp.text);
    assert_eq!(data["serviceId"], id, "{data}");
    assert_eq!(data["serviceType"], service_type, "{data}");
    assert_eq!(data["status"], "PENDING", "{data}");
    assert_eq!(data["apiMode"], LIVE, "{data}");
    data["taskId"].as_str().expect("taskId").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vps_power_actions_run_as_proxmox_tasks() {
    let pve = Pve::setup(&[]).await;
    let (server, key, id) = (&pve.server, pve.key.as_str(), pve.vps.as_str());

    // The start of a running VM: refused (the driver reads the power first), nothing changes.
    let resp = server.action(key, id, "start").await;
    assert_error(
        &resp,
        500,
        "Failed to start service: service is already running",
    );
    let vm = pve.fake.guest(100).unwrap();
    assert!(vm.running && vm.uptime == 3600, "{vm:?}");

    // A graceful stop: `shutdown` with the default 60 s, no `stop`.
    let resp = server.action(key, id, "stop").await;
    let data = assert_api_success(&resp, "VPS service stopped successfully", LIVE);
    check_action(data, id, "VPS", "STOPPED", "100");
    assert_eq!(data["powerMode"], "graceful", "{data}");
    assert!(!pve.fake.guest(100).unwrap().running);
    let shutdown = pve.last_request("POST", "/status/shutdown");
    assert_eq!(shutdown.path, "/nodes/pve1/qemu/100/status/shutdown");
    assert_eq!(
        shutdown.params.get("timeout").map(String::as_str),
        Some("60")
    );
    assert_eq!(pve.count("POST", "/qemu/100/status/stop"), 0);
    let (running, vm, uptime, data) = pve.status(id, "VPS").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("STOPPED", "stopped", 0),
        "{data}"
    );

    // Refusals on a stopped VM; the reboot is not even sent (PVE would "succeed" doing nothing).
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
    assert_eq!(pve.count("POST", "/qemu/100/status/reboot"), 0);
    assert!(!pve.fake.guest(100).unwrap().running);

    // Start.
    let resp = server.action(key, id, "start").await;
    let data = assert_api_success(&resp, "VPS service started successfully", LIVE);
    check_action(data, id, "VPS", "STARTED", "100");
    let vm = pve.fake.guest(100).unwrap();
    assert!(vm.running && vm.agent_up, "{vm:?}");
    let (running, vm, uptime, data) = pve.status(id, "VPS").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("RUNNING", "running", 1),
        "{data}"
    );
    let resp = server.action(key, id, "start").await;
    assert_error(
        &resp,
        500,
        "Failed to start service: service is already running",
    );

    // Reboot: PVE restarts the guest (its uptime starts again).
    pve.fake
        .with(|s| s.guests.get_mut(&100).unwrap().uptime = 500);
    let resp = server.action(key, id, "reboot").await;
    let data = assert_api_success(&resp, "VPS service rebooted successfully", LIVE);
    check_action(data, id, "VPS", "RUNNING", "100");
    assert_eq!(data["powerMode"], "graceful", "{data}");
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/100/status/reboot"), 1);
    assert_eq!(pve.fake.guest(100).unwrap().uptime, 1);

    // A guest that ignores the shutdown is forced off, and the API says so.
    pve.fake.with(|s| {
        s.fail_next.insert(
            "qmshutdown".into(),
            "VM quit/powerdown failed - got timeout".into(),
        )
    });
    let resp = server.action(key, id, "stop").await;
    let data = assert_api_success(&resp, "VPS service stopped successfully", LIVE);
    check_action(data, id, "VPS", "STOPPED", "100");
    assert_eq!(data["powerMode"], "graceful_then_forced", "{data}");
    assert!(!pve.fake.guest(100).unwrap().running);
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/100/status/stop"), 1);

    // Forced stop: `stop` at once.
    let resp = server.action(key, id, "start").await;
    assert_api_success(&resp, "VPS service started successfully", LIVE);
    let path = format!("/api/v1/services/{id}/stop");
    let resp = server
        .post_json(&path, key, &json!({"mode": "force"}))
        .await;
    let data = assert_api_success(&resp, "VPS service stopped successfully", LIVE);
    assert_eq!(data["powerMode"], "forced", "{data}");
    assert!(!pve.fake.guest(100).unwrap().running);
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/100/status/stop"), 2);
    assert_eq!(pve.count("POST", "/qemu/100/status/shutdown"), 2);
    let (running, vm, uptime, data) = pve.status(id, "VPS").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("STOPPED", "stopped", 0),
        "{data}"
    );
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_power_actions_follow_proxmox() {
    let pve = Pve::setup(&[]).await;
    let (server, key, id) = (&pve.server, pve.key.as_str(), pve.linux.as_str());

    let resp = server.action(key, id, "start").await;
    assert_error(
        &resp,
        500,
        "Failed to start service: service is already running",
    );
    let ct = pve.fake.guest(101).unwrap();
    assert!(ct.running && ct.uptime == 7200, "{ct:?}");

    let resp = server.action(key, id, "stop").await;
    let data = assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    check_action(data, id, "LINUX", "STOPPED", "101");
    assert_eq!(data["powerMode"], "graceful", "{data}");
    assert!(!pve.fake.guest(101).unwrap().running);
    assert_eq!(
        pve.last_request("POST", "/status/shutdown").path,
        "/nodes/pve2/lxc/101/status/shutdown"
    );
    let (running, vm, uptime, data) = pve.status(id, "LINUX").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("STOPPED", "stopped", 0),
        "{data}"
    );

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
    assert!(!pve.fake.guest(101).unwrap().running);

    let resp = server.action(key, id, "start").await;
    let data = assert_api_success(&resp, "Linux service started successfully", LIVE);
    check_action(data, id, "LINUX", "STARTED", "101");
    let ct = pve.fake.guest(101).unwrap();
    assert!(ct.running);
    // It came back with the address given at binding.
    assert_eq!(ct.observed_ips, vec![CT_ADDRESS.to_string()]);

    pve.fake
        .with(|s| s.guests.get_mut(&101).unwrap().uptime = 900);
    let resp = server.action(key, id, "reboot").await;
    let data = assert_api_success(&resp, "Linux service rebooted successfully", LIVE);
    check_action(data, id, "LINUX", "RUNNING", "101");
    assert_eq!(pve.count("POST", "/nodes/pve2/lxc/101/status/reboot"), 1);
    let (running, vm, uptime, data) = pve.status(id, "LINUX").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("RUNNING", "running", 1),
        "{data}"
    );
    assert_eq!(data["ip"], CT_ADDRESS, "{data}");
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_what_proxmox_measures() {
    let pve = Pve::setup(&[]).await;

    // VM 100: running for an hour; no address of its own yet, so the agent's one is shown.
    let (running, vm, uptime, data) = pve.status(&pve.vps, "VPS").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("RUNNING", "running", 3600),
        "{data}"
    );
    assert_eq!(data["ip"], "203.0.113.10", "{data}");
    assert_eq!(data["service"]["os"]["id"], "debian-12", "{data}");
    assert_eq!(data["service"]["os"]["name"], "Debian 12", "{data}");
    assert!(pve.count("GET", "/nodes/pve1/qemu/100/status/current") >= 1);
    assert!(pve.count("GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces") >= 1);

    // Usage as PVE reports it: its own CPU average, memory, no disk for a VM.
    let r = &data["resources"];
    assert_eq!(r["cpu"]["cores"], 2, "{r}");
    assert_eq!(r["cpu"]["usagePercent"], 25.0, "{r}");
    assert_eq!(r["memory"]["usedBytes"], 512u64 << 20, "{r}");
    assert_eq!(r["memory"]["totalBytes"], 2u64 << 30, "{r}");
    assert!(
        r["disk"]["usedBytes"].is_null(),
        "PVE cannot see a VM's disk: {r}"
    );
    assert_eq!(r["disk"]["totalBytes"], 8u64 << 30, "{r}");
    assert_eq!(r["network"]["rxBytes"], 3_600_000, "{r}");

    // Measured anew on every call; the counters' change over the time between is the rate.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    pve.fake
        .with(|s| s.guests.get_mut(&100).unwrap().uptime = 86_461);
    let (_, _, uptime, data) = pve.status(&pve.vps, "VPS").await;
    assert_eq!(uptime, 86_461, "{data}");
    let rate = data["resources"]["network"]["rxBytesPerSecond"]
        .as_f64()
        .expect("a rate from two readings");
    assert!(rate > 1_000_000.0, "{data}");

    // Stopped behind advps's back: the API says what Proxmox says.
    pve.fake.with(|s| {
        let g = s.guests.get_mut(&100).unwrap();
        g.running = false;
        g.uptime = 0;
        g.agent_up = false;
        g.observed_ips.clear();
    });
    let (running, vm, uptime, data) = pve.status(&pve.vps, "VPS").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("STOPPED", "stopped", 0),
        "{data}"
    );

    // CT 101: PVE sends its uptime as a string; its address is the one from the pool.
    let (running, vm, uptime, data) = pve.status(&pve.linux, "LINUX").await;
    assert_eq!(
        (running.as_str(), vm.as_str(), uptime),
        ("RUNNING", "running", 7200),
        "{data}"
    );
    assert_eq!(data["ip"], CT_ADDRESS, "{data}");
    assert_eq!(data["service"]["os"]["id"], "debian-12", "{data}");
    assert!(pve.count("GET", "/nodes/pve2/lxc/101/status/current") >= 1);
    assert_eq!(data["resources"]["disk"]["usedBytes"], 1u64 << 30, "{data}");
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_ip_writes_the_pool_address_to_the_vm_and_is_refused_for_linux() {
    let pve = Pve::setup(&[]).await;
    let (server, key) = (&pve.server, pve.key.as_str());

    // LINUX: the address came with the binding; get-ip is refused and writes nothing.
    let writes = pve.count("PUT", "/lxc/101/config");
    let resp = server.action(key, &pve.linux, "get-ip").await;
    assert_error(
        &resp,
        400,
        "IP configuration not supported for this service type",
    );
    assert_eq!(pve.count("PUT", "/lxc/101/config"), writes);

    // VPS: the next pool address, through cloud-init, applied by a reboot.
    pve.fake
        .with(|s| s.guests.get_mut(&100).unwrap().uptime = 999);
    let resp = server.action(key, &pve.vps, "get-ip").await;
    let data = assert_api_success(&resp, "VPS IP configured successfully", LIVE);
    assert_eq!(data["serviceId"], pve.vps.as_str(), "{data}");
    assert_eq!(data["serviceType"], "VPS", "{data}");
    assert_eq!(data["status"], "IP_CONFIGURED", "{data}");
    assert_eq!(data["ip"], VM_ADDRESS, "{data}");
    let vm = pve.fake.guest(100).unwrap();
    assert_eq!(
        vm.config["ipconfig0"],
        format!("ip={VM_ADDRESS}/24,gw=198.51.100.1")
    );
    assert!(vm.running);
    assert_eq!(vm.uptime, 1, "the VM was not rebooted to apply cloud-init");
    assert_eq!(vm.observed_ips, vec![VM_ADDRESS.to_string()]);
    assert_eq!(pve.count("PUT", "/nodes/pve1/qemu/100/cloudinit"), 1);
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/100/status/reboot"), 1);

    let (running, _, _, data) = pve.status(&pve.vps, "VPS").await;
    assert_eq!(running, "RUNNING", "{data}");
    assert_eq!(data["ip"], VM_ADDRESS, "{data}");

    // Again: the same address, and no second reboot.
    let resp = server.action(key, &pve.vps, "get-ip").await;
    let data = assert_api_success(&resp, "VPS IP configured successfully", LIVE);
    assert_eq!(data["ip"], VM_ADDRESS, "{data}");
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/100/status/reboot"), 1);
    assert_eq!(
        pve.fake.guest(100).unwrap().config["ipconfig0"],
        format!("ip={VM_ADDRESS}/24,gw=198.51.100.1")
    );
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_password_goes_through_the_agent_and_not_into_containers() {
    let pve = Pve::setup(&[]).await;
    let (server, key, id) = (&pve.server, pve.key.as_str(), pve.vps.as_str());

    // Agent up: set in the guest, and cloud-init's copy kept in step.
    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    assert_eq!(data["serviceId"], id, "{data}");
    let first = data["password"].as_str().expect("password").to_string();
    assert!(is_strong_password(&first), "weak password {first:?}");
    let vm = pve.fake.guest(100).unwrap();
    assert_eq!(vm.root_password.as_deref(), Some(first.as_str()));
    assert_eq!(vm.cipassword.as_deref(), Some(first.as_str()));
    assert_eq!(vm.config["ciuser"], "root");
    let set = pve.last_request("POST", "/agent/set-user-password");
    assert_eq!(set.path, "/nodes/pve1/qemu/100/agent/set-user-password");
    assert_eq!(set.params["username"], "root");
    assert_eq!(set.params["password"], first);

    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let second = data["password"].as_str().expect("password").to_string();
    assert_ne!(first, second);
    assert_eq!(
        pve.fake.guest(100).unwrap().root_password.as_deref(),
        Some(second.as_str())
    );

    // Agent down: a clear error, and nothing changes in the guest.
    pve.fake
        .with(|s| s.guests.get_mut(&100).unwrap().agent_up = false);
    let resp = server.action(key, id, "generate-password").await;
    assert_error(
        &resp,
        500,
        "Failed to generate password: the hypervisor refused: QEMU guest agent is not running \
         (the guest needs qemu-guest-agent running and 'agent: 1')",
    );
    let vm = pve.fake.guest(100).unwrap();
    assert_eq!(vm.root_password.as_deref(), Some(second.as_str()));
    assert_eq!(vm.cipassword.as_deref(), Some(second.as_str()));

    // Stopped: the reference's 400.
    let resp = server.action(key, id, "stop").await;
    assert_api_success(&resp, "VPS service stopped successfully", LIVE);
    let resp = server.action(key, id, "generate-password").await;
    assert_error(
        &resp,
        400,
        "Service must be running before generating a password",
    );

    // A container on a node without SSH access: Proxmox has no API for it; the API says
    // so, and how to enable it, and touches nothing.
    let agent_calls = pve.count("POST", "/agent/set-user-password");
    let resp = server.action(key, &pve.linux, "generate-password").await;
    assert_error(
        &resp,
        500,
        "Failed to generate password: not supported by this node: Proxmox VE has no API to \
         change a password inside a running container (only `pct exec` on the node can); \
         register the node with --ssh-host and --ssh-key to let advps run `pct exec` on the \
         node, or rebuild to set a new password",
    );
    assert_eq!(pve.count("POST", "/agent/set-user-password"), agent_calls);
    assert_eq!(
        pve.count("PUT", "/lxc/101/config"),
        1,
        "only the binding's address"
    );
    assert_eq!(pve.fake.guest(101).unwrap().root_password, None);
    // Not busy afterwards.
    let resp = server.action(key, &pve.linux, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_password_reaches_a_container_through_pct_exec_over_ssh() {
    // The fake cluster runs CT 101 on pve2; the test's sshd stands in for pve2's.
    let Some(sshd) = TestSshd::start(&[101]) else {
        return;
    };
    let ssh_host = format!("pve2={}", sshd.host());
    let key_file = sshd.client_key_file();
    let known_hosts_file = sshd.known_hosts_file();
    let pve = Pve::setup_with(
        &[],
        &[
            "--ssh-host",
            &ssh_host,
            "--ssh-user",
            &sshd.user,
            "--ssh-key",
            key_file.to_str().unwrap(),
            "--ssh-known-hosts",
            known_hosts_file.to_str().unwrap(),
        ],
    )
    .await;
    let (server, key, id) = (&pve.server, pve.key.as_str(), pve.linux.as_str());
    let shown = format!("pve2={}@{}", sshd.user, sshd.host());
    let out = server.cli_ok(&["nodes", "list"]);
    assert!(out.contains(&shown), "nodes list: {out}");
    assert!(!out.contains("PRIVATE KEY"), "nodes list: {out}");
    // Registering the node ran nothing on it.
    assert_eq!(sshd.calls(), 0);

    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    assert_eq!(data["serviceId"], id, "{data}");
    let password = data["password"].as_str().expect("password").to_string();
    assert!(is_strong_password(&password), "weak password {password:?}");
    assert_eq!(sshd.calls(), 1, "sshd log:\n{}", sshd.log());
    assert_eq!(
        sshd.last_command().as_deref(),
        Some("pct exec 101 -- chpasswd")
    );
    assert_eq!(
        sshd.last_stdin().as_deref(),
        Some(format!("root:{password}\n").as_str())
    );
    // Proxmox's API was only read: no configuration was written for it.
    assert_eq!(
        pve.count("PUT", "/lxc/101/config"),
        1,
        "only the binding's address"
    );

    // Stopped: the reference's 400, and no SSH call.
    let resp = server.action(key, id, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    let resp = server.action(key, id, "generate-password").await;
    assert_error(
        &resp,
        400,
        "Service must be running before generating a password",
    );
    assert_eq!(sshd.calls(), 1);

    // chpasswd refusing inside the container: its message, and no SSH host in it.
    let resp = server.action(key, id, "start").await;
    assert_api_success(&resp, "Linux service started successfully", LIVE);
    sshd.fail_with("chpasswd: (line 1, user root) password not changed\n");
    let resp = server.action(key, id, "generate-password").await;
    assert_error(
        &resp,
        500,
        "Failed to generate password: the hypervisor refused: `pct exec 101 -- chpasswd` on \
         node pve2 failed (exit 1): chpasswd: (line 1, user root) password not changed",
    );
    assert_eq!(sshd.calls(), 2);

    // No password in the server's log.
    let log = server.stderr_log();
    assert!(
        !log.contains(&password),
        "the password is in the server's log"
    );
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_options_are_checked_when_the_node_is_added() {
    let fake = FakePve::start(fake_cluster()).await;
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca = file("ca.pem", &fake.ca_pem);
    let private_key = file(
        "id",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkSECRETKEYTEXT\n\
         -----END OPENSSH PRIVATE KEY-----\n",
    );
    let public_key = file(
        "id.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUBLIC root@pve\n",
    );
    let known_hosts = file(
        "known_hosts",
        "10.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHOSTKEY\n",
    );
    let pve_add = |extra: &[&str]| {
        let mut args = vec![
            "nodes",
            "add",
            "pve",
            "--driver",
            "proxmox",
            "--endpoint",
            &fake.url,
            "--token",
            TOKEN,
            "--ca",
            &ca,
        ];
        args.extend_from_slice(extra);
        let out = server.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "accepted {extra:?}");
        assert!(!stderr.contains("SECRETKEYTEXT"), "{stderr}");
        stderr
    };

    let stderr = pve_add(&["--ssh-host", "10.0.0.1"]);
    assert!(
        stderr.contains(
            "SSH access for `pct exec` needs --ssh-host, --ssh-key and --ssh-known-hosts \
             together (missing: --ssh-key, --ssh-known-hosts)"
        ),
        "{stderr}"
    );
    let stderr = pve_add(&[
        "--ssh-host",
        "10.0.0.1",
        "--ssh-key",
        &public_key,
        "--ssh-known-hosts",
        &known_hosts,
    ]);
    assert!(stderr.contains("not a public key"), "{stderr}");
    // Port 2222 is looked up as [10.0.0.1]:2222, which the file does not list.
    let stderr = pve_add(&[
        "--ssh-host",
        "10.0.0.1:2222",
        "--ssh-key",
        &private_key,
        "--ssh-known-hosts",
        &known_hosts,
    ]);
    assert!(stderr.contains("no key for [10.0.0.1]:2222"), "{stderr}");
    let stderr = pve_add(&[
        "--ssh-host",
        "10.0.0.1",
        "--ssh-host",
        "10.0.0.2",
        "--ssh-key",
        &private_key,
        "--ssh-known-hosts",
        &known_hosts,
    ]);
    assert!(
        stderr.contains("only one SSH host can be the default"),
        "{stderr}"
    );

    let out = server.cli(&[
        "nodes",
        "add",
        "local",
        "--driver",
        "lxd",
        "--endpoint",
        "unix:///var/lib/lxd/unix.socket",
        "--ssh-host",
        "10.0.0.1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apply to Proxmox VE nodes only"),
        "{stderr}"
    );

    // Nothing was registered; the same node without SSH access is.
    let out = server.cli_ok(&["nodes", "list"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    server.cli_ok(&[
        "nodes",
        "add",
        "pve",
        "--driver",
        "proxmox",
        "--endpoint",
        &fake.url,
        "--token",
        TOKEN,
        "--ca",
        &ca,
    ]);
    let out = server.cli_ok(&["nodes", "list"]);
    let row = out.lines().nth(1).expect("the node's row");
    assert!(row.starts_with("pve "), "{out}");
    assert!(row.ends_with(" -"), "no SSH access: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_access_is_given_and_removed_after_the_node_is_added() {
    let fake = FakePve::start(fake_cluster()).await;
    let lxd = FakeLxd::start();
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca = file("ca.pem", &fake.ca_pem);
    let private_key = file(
        "id",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkSECRETKEYTEXT\n\
         -----END OPENSSH PRIVATE KEY-----\n",
    );
    let known_hosts = file(
        "known_hosts",
        "10.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHOSTKEY\n",
    );
    let absent_key = dir.path().join("absent").to_str().unwrap().to_string();
    server.cli_ok(&[
        "nodes",
        "add",
        "pve",
        "--driver",
        "proxmox",
        "--endpoint",
        &fake.url,
        "--token",
        TOKEN,
        "--ca",
        &ca,
    ]);
    server.cli_ok(&[
        "nodes",
        "add",
        "local",
        "--driver",
        "lxd",
        "--endpoint",
        &lxd.endpoint(),
    ]);
    let pve_ssh = || {
        let out = server.cli_ok(&["nodes", "list"]);
        let row = out
            .lines()
            .find(|l| l.starts_with("pve "))
            .unwrap_or_else(|| panic!("no row for pve: {out}"))
            .to_string();
        row.rsplit(' ').next().unwrap().to_string()
    };
    let refused = |args: &[&str]| {
        let mut all = vec!["nodes", "set-ssh"];
        all.extend_from_slice(args);
        let out = server.cli(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "accepted {args:?}");
        assert!(!stderr.contains("SECRETKEYTEXT"), "{stderr}");
        stderr
    };
    let full = |node: &str, key: &str| -> Vec<String> {
        [
            node,
            "--ssh-host",
            "10.0.0.1",
            "--ssh-key",
            key,
            "--ssh-known-hosts",
            known_hosts.as_str(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    let stderr = refused(&strs(&full("nowhere", &private_key)));
    assert!(stderr.contains("no node named 'nowhere'"), "{stderr}");
    let stderr = refused(&strs(&full("local", &private_key)));
    assert!(
        stderr.contains("node 'local' uses the lxd driver")
            && stderr.contains("Proxmox VE nodes only"),
        "{stderr}"
    );
    let stderr = refused(&["pve"]);
    assert!(
        stderr.contains("give --ssh-host, --ssh-key and --ssh-known-hosts"),
        "{stderr}"
    );
    let stderr = refused(&["pve", "--ssh-host", "10.0.0.1"]);
    assert!(
        stderr.contains("(missing: --ssh-key, --ssh-known-hosts)"),
        "{stderr}"
    );
    let stderr = refused(&strs(&full("pve", &absent_key)));
    assert!(stderr.contains("cannot read the SSH key"), "{stderr}");
    let stderr = refused(&["pve", "--remove", "--ssh-host", "10.0.0.1"]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    assert_eq!(pve_ssh(), "-", "a refusal changed nothing");

    let mut args = vec!["nodes", "set-ssh"];
    let given = full("pve", &private_key);
    args.extend(strs(&given));
    let out = server.cli_ok(&args);
    assert!(
        out.contains("Node pve: container passwords: `pct exec` over SSH at root@10.0.0.1"),
        "{out}"
    );
    assert!(out.contains("once they are restarted"), "{out}");
    assert!(!out.contains("SECRETKEYTEXT"), "{out}");
    assert_eq!(pve_ssh(), "root@10.0.0.1");
    // The token and the CA were kept: the cluster is still reached.
    server.cli_ok(&["nodes", "sync", "pve"]);

    let out = server.cli_ok(&["nodes", "set-ssh", "pve", "--remove"]);
    assert!(out.contains("Node pve: SSH access removed"), "{out}");
    assert_eq!(pve_ssh(), "-");
    server.cli_ok(&["nodes", "sync", "pve"]);
    fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_access_given_later_sets_container_passwords_after_a_restart() {
    // CT 101 runs on pve2; the test's sshd stands in for pve2's.
    let Some(sshd) = TestSshd::start(&[101]) else {
        return;
    };
    let mut pve = Pve::setup(&[]).await;
    let ssh_host = format!("pve2={}", sshd.host());
    let key_file = sshd.client_key_file();
    let known_hosts_file = sshd.known_hosts_file();
    let out = pve.server.cli_ok(&[
        "nodes",
        "set-ssh",
        "pve",
        "--ssh-host",
        &ssh_host,
        "--ssh-user",
        &sshd.user,
        "--ssh-key",
        key_file.to_str().unwrap(),
        "--ssh-known-hosts",
        known_hosts_file.to_str().unwrap(),
    ]);
    let shown = format!("pve2={}@{}", sshd.user, sshd.host());
    assert!(out.contains(&shown), "set-ssh: {out}");
    assert_eq!(sshd.calls(), 0);

    pve.server.restart();
    let resp = pve
        .server
        .action(&pve.key, &pve.linux, "generate-password")
        .await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let password = data["password"].as_str().expect("password").to_string();
    assert_eq!(sshd.calls(), 1, "sshd log:\n{}", sshd.log());
    assert_eq!(
        sshd.last_command().as_deref(),
        Some("pct exec 101 -- chpasswd")
    );
    assert_eq!(
        sshd.last_stdin().as_deref(),
        Some(format!("root:{password}\n").as_str())
    );
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vps_rebuild_re_clones_the_template_and_completes() {
    let pve = Pve::setup(&[]).await;
    let (server, key, id) = (&pve.server, pve.key.as_str(), pve.vps.as_str());

    // Refusals first: they change nothing.
    let resp = server.rebuild(key, id, "no-such-os").await;
    assert_error(&resp, 400, "Missing or invalid os in request body");
    let resp = server.rebuild(key, id, "alpine-3.20").await;
    assert_error(&resp, 500, "No OS templates available for the selected OS");

    // An address and a password the rebuild must put back.
    let resp = server.action(key, id, "get-ip").await;
    assert_api_success(&resp, "VPS IP configured successfully", LIVE);
    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let password = data["password"].as_str().expect("password").to_string();

    let task_id = start_rebuild(&pve, id, "ubuntu-24.04", "VPS", "VPS").await;
    // While it runs: busy, and the status says so.
    let resp = server.action(key, id, "stop").await;
    let body = assert_error(&resp, 409, BUSY);
    assert_eq!(body["errors"]["taskId"], task_id.as_str(), "{}", resp.text);
    let (running, vm, _, data) = pve.status(id, "VPS").await;
    assert_eq!(
        (running.as_str(), vm.as_str()),
        ("REBUILDING", "installing"),
        "{data}"
    );

    let history = pve.follow(id, &task_id).await;
    let last = history.last().unwrap();
    assert_eq!(
        last["status"],
        "COMPLETED",
        "{history:?}\nstderr:\n{}",
        server.stderr_log()
    );
    assert_eq!(last["progress"], 100, "{last}");
    assert_eq!(last["error"], Value::Null, "{last}");
    assert!(
        history.iter().any(|d| d["status"] == "IN_PROGRESS"),
        "the rebuild (several Proxmox tasks) was never seen IN_PROGRESS: {history:?}"
    );

    // On Proxmox: deleted, fully cloned from template 9001 into the same vmid and node.
    assert_eq!(pve.count("DELETE", "/nodes/pve1/qemu/100"), 1);
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/9001/clone"), 1);
    assert_eq!(pve.count("POST", "/qemu/9000/clone"), 0);
    let clone = pve.last_request("POST", "/qemu/9001/clone");
    assert_eq!(clone.params["newid"], "100");
    assert_eq!(clone.params["full"], "1");
    assert_eq!(clone.params.get("name").map(String::as_str), Some("web1"));
    let vm = pve.fake.guest(100).unwrap();
    assert!(vm.running && !vm.template && vm.lock.is_none(), "{vm:?}");
    assert_eq!(vm.node, "pve1");
    assert_eq!(
        vm.config["scsi0"], UBUNTU_TEMPLATE_DISK,
        "not the template's disk"
    );
    // Kept: MAC, size, name, address, password.
    assert_eq!(
        vm.config["net0"],
        "virtio=BC:24:11:AA:00:01,bridge=vmbr0,firewall=1"
    );
    assert_eq!(vm.config["memory"], "2048");
    assert_eq!(vm.config["cores"], "2");
    assert_eq!(vm.config["name"], "web1");
    assert_eq!(
        vm.config["ipconfig0"],
        format!("ip={VM_ADDRESS}/24,gw=198.51.100.1")
    );
    assert_eq!(vm.cipassword.as_deref(), Some(password.as_str()));

    let (running, vm, _, data) = pve.status(id, "VPS").await;
    assert_eq!(
        (running.as_str(), vm.as_str()),
        ("RUNNING", "running"),
        "{data}"
    );
    assert_eq!(data["service"]["os"]["id"], "ubuntu-24.04", "{data}");
    assert_eq!(data["service"]["os"]["name"], "Ubuntu 24.04", "{data}");
    assert_eq!(data["ip"], VM_ADDRESS, "{data}");

    // Not busy any more.
    let resp = server.action(key, id, "stop").await;
    assert_api_success(&resp, "VPS service stopped successfully", LIVE);
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_rebuild_re_creates_it_with_the_same_vmid_address_and_mac() {
    let pve = Pve::setup(&[]).await;
    let id = pve.linux.as_str();

    let task_id = start_rebuild(&pve, id, "alpine-3.20", "Linux", "LINUX").await;
    let history = pve.follow(id, &task_id).await;
    let last = history.last().unwrap();
    assert_eq!(
        last["status"],
        "COMPLETED",
        "{history:?}\nstderr:\n{}",
        pve.server.stderr_log()
    );
    assert_eq!(last["progress"], 100, "{last}");

    let create = pve.last_request("POST", "/nodes/pve2/lxc");
    assert_eq!(create.params["vmid"], "101");
    assert_eq!(create.params["ostemplate"], ALPINE_VZTMPL);
    assert_eq!(pve.count("DELETE", "/nodes/pve2/lxc/101"), 1);
    let ct = pve.fake.guest(101).unwrap();
    assert!(ct.running && ct.lock.is_none(), "{ct:?}");
    assert_eq!(ct.node, "pve2");
    assert_eq!(ct.config["hostname"], "ct1");
    assert_eq!(
        ct.config["net0"],
        format!(
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:BB:00:01,ip={CT_ADDRESS}/24,\
             gw=198.51.100.1,type=veth"
        )
    );
    let (running, _, _, data) = pve.status(id, "LINUX").await;
    assert_eq!(running, "RUNNING", "{data}");
    assert_eq!(data["service"]["os"]["id"], "alpine-3.20", "{data}");
    assert_eq!(data["ip"], CT_ADDRESS, "{data}");
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_failing_inside_proxmox_is_failed_with_proxmox_s_message() {
    let pve = Pve::setup(&[]).await;
    let (server, key, id) = (&pve.server, pve.key.as_str(), pve.vps.as_str());
    pve.fake.with(|s| {
        s.fail_next.insert(
            "qmclone".into(),
            "clone failed: storage 'local-lvm' is full".into(),
        )
    });

    let task_id = start_rebuild(&pve, id, "debian-12", "VPS", "VPS").await;
    let history = pve.follow(id, &task_id).await;
    let last = history.last().unwrap();
    assert_eq!(last["status"], "FAILED", "{history:?}");
    assert_eq!(
        last["error"],
        "Rebuild failed at step 'create': the hypervisor refused: clone failed: storage \
         'local-lvm' is full",
        "{last}"
    );
    assert!(last["progress"].as_u64().unwrap() < 100, "{last}");
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/9000/clone"), 1);
    // PVE removed the half-made clone; nothing is left running under the vmid.
    assert!(pve.fake.guest(100).is_none());

    // The service is no longer held by the task.
    let (running, _, _, data) = pve.status(id, "VPS").await;
    assert_eq!(running, "STOPPED", "{data}");
    // Not busy: the next call reaches the node, where the VM is gone.
    let resp = server.action(key, id, "start").await;
    assert_error(
        &resp,
        500,
        "Failed to start service: the machine was not found on its node",
    );
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_resumes_after_the_server_is_killed_mid_clone() {
    let mut pve = Pve::setup(&[("ADVPS_TASK_LEASE_SECS", "3")]).await;
    let id = pve.vps.clone();
    let key = pve.key.clone();
    let resp = pve.server.action(&key, &id, "get-ip").await;
    assert_api_success(&resp, "VPS IP configured successfully", LIVE);

    let task_id = start_rebuild(&pve, &id, "debian-12", "VPS", "VPS").await;
    // Once the old VM is being destroyed, the next task (the clone) runs long.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pve.count("DELETE", "/nodes/pve1/qemu/100") == 0 {
        assert!(
            Instant::now() < deadline,
            "the rebuild never deleted VM 100"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pve.fake.with(|s| s.task_polls = 1_000_000);
    // Kill while advps waits for the clone.
    let clone_polled = |pve: &Pve| {
        pve.fake.with(|s| {
            s.guests.get(&100).and_then(|g| g.lock.clone()).as_deref() == Some("clone")
                && s.requests
                    .iter()
                    .any(|r| r.method == "GET" && r.path.contains(":qmclone:"))
        })
    };
    while !clone_polled(&pve) {
        assert!(
            Instant::now() < deadline,
            "the clone was never started and polled; stderr:\n{}",
            pve.server.stderr_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = pve.server.task(&key, &task_id).await;
    let data = assert_api_success(&resp, "Task status retrieved successfully", LIVE).clone();
    assert_eq!(data["status"], "IN_PROGRESS", "{data}");
    let progress_before = data["progress"].as_u64().unwrap();

    pve.server.kill_and_restart();
    // Proxmox's clone goes on without advps and finishes meanwhile.
    pve.fake.with(|s| {
        s.task_polls = 2;
        s.guests.get_mut(&100).unwrap().lock_ttl = Some(3);
    });

    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let mut seen = Vec::new();
    let last = loop {
        let resp = pve.server.task(&key, &task_id).await;
        let data = assert_api_success(&resp, "Task status retrieved successfully", LIVE).clone();
        let status = data["status"].as_str().unwrap_or_default().to_string();
        seen.push(data.clone());
        if status == "COMPLETED" || status == "FAILED" {
            break data;
        }
        assert!(
            Instant::now() < deadline,
            "task still {status} {:?} after the restart: {seen:?}\nstderr:\n{}",
            started.elapsed(),
            pve.server.stderr_log()
        );
        tokio::time::sleep(TASK_POLL).await;
    };
    check_history(&seen, &id, &task_id);
    assert!(
        seen[0]["progress"].as_u64().unwrap() >= progress_before,
        "progress went back across the restart: {progress_before} then {seen:?}"
    );
    assert_eq!(
        last["status"],
        "COMPLETED",
        "{last}\nstderr:\n{}",
        pve.server.stderr_log()
    );
    assert_eq!(last["progress"], 100, "{last}");
    assert_eq!(last["error"], Value::Null, "{last}");

    // The clone advps started before it died was waited for, not made again.
    assert_eq!(pve.count("POST", "/nodes/pve1/qemu/9000/clone"), 1);
    assert_eq!(pve.count("DELETE", "/nodes/pve1/qemu/100"), 1);
    let vm = pve.fake.guest(100).unwrap();
    assert!(vm.running && vm.lock.is_none(), "{vm:?}");
    assert_eq!(
        vm.config["net0"],
        "virtio=BC:24:11:AA:00:01,bridge=vmbr0,firewall=1"
    );
    assert_eq!(vm.config["name"], "web1");
    assert_eq!(
        vm.config["ipconfig0"],
        format!("ip={VM_ADDRESS}/24,gw=198.51.100.1")
    );
    let (running, _, _, data) = pve.status(&id, "VPS").await;
    assert_eq!(running, "RUNNING", "{data}");
    assert_eq!(data["service"]["os"]["id"], "debian-12", "{data}");
    // Nothing of the killed run still holds the service.
    let resp = pve.server.action(&key, &id, "stop").await;
    assert_api_success(&resp, "VPS service stopped successfully", LIVE);
    assert!(!pve.fake.guest(100).unwrap().running);
    pve.fake.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_rebuild_and_its_passwords_use_administrator() {
    let pve = Pve::setup(&[]).await;
    let (server, key, id) = (&pve.server, pve.key.as_str(), pve.vps.as_str());
    // The catalogue gives a Windows OS the login Administrator by itself.
    server.cli_ok(&[
        "os",
        "add",
        "windows-2022",
        "--name",
        "Windows Server 2022",
        "--type",
        "vps",
        "--image",
        "9001",
        "--node",
        "pve",
    ]);
    let resp = server.action(key, id, "generate-password").await;
    assert_api_success(&resp, "Password generated successfully", LIVE);
    assert_eq!(
        pve.last_request("POST", "/agent/set-user-password").params["username"],
        "root"
    );

    // The rebuild puts the password back for the new OS's login.
    let task_id = start_rebuild(&pve, id, "windows-2022", "VPS", "VPS").await;
    let history = pve.follow(id, &task_id).await;
    assert_eq!(
        history.last().unwrap()["status"],
        "COMPLETED",
        "{history:?}\nstderr:\n{}",
        server.stderr_log()
    );
    let vm = pve.fake.guest(100).unwrap();
    assert_eq!(vm.config["ciuser"], "Administrator", "{vm:?}");
    assert!(vm.cipassword.is_some(), "{vm:?}");
    let configured = pve.last_request("POST", "/qemu/100/config");
    assert_eq!(configured.params["ciuser"], "Administrator");

    // And generate-password now sets Administrator's.
    let resp = server.action(key, id, "generate-password").await;
    let data = assert_api_success(&resp, "Password generated successfully", LIVE);
    let password = data["password"].as_str().unwrap().to_string();
    let set = pve.last_request("POST", "/agent/set-user-password");
    assert_eq!(set.params["username"], "Administrator");
    let vm = pve.fake.guest(100).unwrap();
    assert_eq!(vm.password_user.as_deref(), Some("Administrator"));
    assert_eq!(vm.root_password.as_deref(), Some(password.as_str()));
    assert_eq!(vm.config["ciuser"], "Administrator");

    // Back to Linux: root again.
    let task_id = start_rebuild(&pve, id, "debian-12", "VPS", "VPS").await;
    let history = pve.follow(id, &task_id).await;
    assert_eq!(
        history.last().unwrap()["status"],
        "COMPLETED",
        "{history:?}"
    );
    assert_eq!(pve.fake.guest(100).unwrap().config["ciuser"], "root");
    pve.fake.assert_clean();
}

mod console_ws {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    pub type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Opens a console through the API and its WebSocket at `cols`×`rows`.
    pub async fn open(pve: &Pve, id: &str, cols: u16, rows: u16) -> Ws {
        let resp = pve
            .server
            .post(&format!("/api/v1/services/{id}/console"), &pve.key)
            .await;
        let data = assert_api_success(&resp, "Console URL created successfully", LIVE);
        let url = format!("{}?cols={cols}&rows={rows}", data["url"].as_str().unwrap());
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .expect("the WebSocket handshake timed out")
        .unwrap_or_else(|e| panic!("could not open the console: {e}"));
        ws
    }

    pub async fn read_until(ws: &mut Ws, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = String::new();
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in time; the console said {seen:?}"))
            {
                Some(Ok(Message::Binary(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("the console ended before {needle:?} ({other:?}): {seen:?}"),
            }
        }
        seen
    }

    pub async fn send(ws: &mut Ws, message: Message) {
        ws.send(message).await.expect("sent into the console");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_console_runs_through_termproxy_end_to_end() {
    use tokio_tungstenite::tungstenite::Message;
    let pve = Pve::setup(&[]).await;
    let id = pve.linux.clone();

    let mut ws = console_ws::open(&pve, &id, 100, 30).await;
    console_ws::read_until(&mut ws, "root@ct1:~# ").await;
    console_ws::send(
        &mut ws,
        Message::Binary(b"echo through-advps\r".to_vec().into()),
    )
    .await;
    let out = console_ws::read_until(&mut ws, "through-advps\r\nroot@ct1:~# ").await;
    assert!(out.contains("echo through-advps\r\n"), "{out:?}");
    // A resize in the API's control message reaches termproxy as 1:COLS:ROWS:.
    console_ws::send(
        &mut ws,
        Message::Text(r#"{"type":"resize","cols":132,"rows":43}"#.into()),
    )
    .await;
    console_ws::send(&mut ws, Message::Binary(b"stty size\r".to_vec().into())).await;
    console_ws::read_until(&mut ws, "43 132\r\n").await;
    let messages: Vec<String> = pve.fake.with(|s| {
        s.console_messages
            .iter()
            .filter(|(vmid, _)| *vmid == 101)
            .map(|(_, m)| m.clone())
            .collect()
    });
    assert_eq!(
        messages,
        [
            "1:100:30:",
            "0:19:echo through-advps\r",
            "1:132:43:",
            "0:10:stty size\r"
        ]
    );
    // termproxy and vncwebsocket on the container's own node, through the API endpoint.
    let termproxy = pve.last_request("POST", "/termproxy");
    assert_eq!(termproxy.path, "/nodes/pve2/lxc/101/termproxy");
    let websocket = pve.last_request("GET", "/vncwebsocket");
    assert_eq!(websocket.path, "/nodes/pve2/lxc/101/vncwebsocket");
    assert!(pve.fake.with(|s| s.term_sessions.iter().all(|t| t.used)));

    // Stopping the service closes the console (4000).
    let resp = pve.server.action(&pve.key, &id, "stop").await;
    assert_api_success(&resp, "Linux service stopped successfully", LIVE);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        use futures_util::StreamExt;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("not closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("closed without a code: {other:?}"),
        }
    };
    assert_eq!(code, 4000);

    // A VM without a serial port: refused with Proxmox's reason, before termproxy.
    let resp = pve
        .server
        .post(&format!("/api/v1/services/{}/console", pve.vps), &pve.key)
        .await;
    let url = assert_api_success(&resp, "Console URL created successfully", LIVE)["url"]
        .as_str()
        .unwrap()
        .to_string();
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 500);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("serial0"), "{body}");
        }
        other => panic!("the VM's console opened: {:?}", other.map(|_| ())),
    }
    assert_eq!(pve.count("POST", "/qemu/100/termproxy"), 0);
    pve.fake.assert_clean();
}
