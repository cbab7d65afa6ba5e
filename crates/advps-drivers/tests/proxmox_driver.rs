//! The Proxmox VE driver against a fake PVE cluster over TLS (see
//! `support/fake_pve.rs`): every operation on a QEMU VM and an LXC
//! container, the failures PVE reports (in a task or at once), locks and
//! transient refusals, a rebuild resumed after a crash, and the TLS and
//! token checks. Each test ends by asserting that every request the driver
//! sent fits the official API schema.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use advps_drivers::proxmox::client::{PveClient, PveCredentials, PveTrust};
use advps_drivers::proxmox::ProxmoxDriver;
use advps_drivers::{
    AddressConfig, ConsoleInput, Driver, DriverError, InstanceKind, PowerOutcome, PowerStatus,
    RebuildRequest, StepOutcome, StopMode, TerminalSize,
};
use hyper::Method;
use serde_json::{json, Value};
use support::fake_pve::{cluster, FakePve, State, TOKEN};

fn client(fake: &FakePve) -> PveClient {
    let credentials = PveCredentials {
        token: TOKEN.into(),
        server: PveTrust::Fingerprint(fake.fingerprint.clone()),
        ssh: None,
    };
    PveClient::new(&fake.url, &credentials)
        .unwrap()
        .with_poll_interval(Duration::from_millis(5))
        .with_lock_wait(Duration::from_secs(2))
        .with_request_timeout(Duration::from_secs(10))
}

async fn setup(state: State) -> (FakePve, ProxmoxDriver) {
    let fake = FakePve::start(state).await;
    let driver = ProxmoxDriver::connect(client(&fake)).await.unwrap();
    (fake, driver)
}

const GRACEFUL: StopMode = StopMode::Graceful {
    timeout: Duration::from_secs(10),
};

#[tokio::test]
async fn inventory_and_images_come_from_the_whole_cluster() {
    let (fake, driver) = setup(cluster()).await;
    let instances = driver.list_instances().await.unwrap();
    let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    // The template is an image, not an instance; the CT's vmid came as a string.
    assert_eq!(names, ["100", "101", "102"]);
    assert_eq!(instances[0].kind, InstanceKind::VirtualMachine);
    assert_eq!(instances[0].power, PowerStatus::Running);
    assert_eq!(instances[0].memory_mb, Some(2048));
    assert_eq!(instances[1].kind, InstanceKind::Container);
    assert_eq!(instances[2].power, PowerStatus::Stopped);

    let images = driver.list_images().await.unwrap();
    let aliases: Vec<&str> = images.iter().map(|i| i.alias.as_str()).collect();
    assert_eq!(
        aliases,
        [
            "9000",
            "cephfs:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
            "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        ]
    );
    assert_eq!(images[0].kind, InstanceKind::VirtualMachine);
    assert_eq!(images[0].description, "debian-12-cloud");
    assert_eq!(images[1].kind, InstanceKind::Container);
    // The shared storage was listed through one node only.
    assert_eq!(fake.with(|s| s.count("GET", "/cephfs/content")), 1);
    // What operators' checks print of the engine.
    assert_eq!(
        driver.engine_version().await.unwrap().as_deref(),
        Some("pve-manager 8.2.4")
    );
    fake.assert_clean();
}

#[tokio::test]
async fn a_vm_is_powered_through_tasks_on_its_own_node() {
    let (fake, driver) = setup(cluster()).await;
    let status = driver.status("100").await.unwrap();
    assert_eq!(status.power, PowerStatus::Running);
    assert_eq!(status.uptime_secs, Some(3600));
    assert_eq!(status.addresses, vec![Ipv4Addr::new(203, 0, 113, 10)]);

    driver.stop("100", GRACEFUL).await.unwrap();
    assert!(!fake.guest(100).unwrap().running);
    let shutdown = fake.with(|s| {
        s.requests
            .iter()
            .find(|r| r.path.ends_with("/status/shutdown"))
            .cloned()
            .unwrap()
    });
    assert_eq!(shutdown.path, "/nodes/pve1/qemu/100/status/shutdown");
    // No forceStop: the driver forces the guest off itself when it must, so
    // that it can say so.
    assert_eq!(shutdown.params.get("forceStop"), None);
    assert_eq!(
        shutdown.params.get("timeout").map(String::as_str),
        Some("10")
    );
    let status = driver.status("100").await.unwrap();
    assert_eq!(
        (status.power, status.uptime_secs),
        (PowerStatus::Stopped, Some(0))
    );
    assert!(status.addresses.is_empty());
    assert_eq!(
        driver.stop("100", StopMode::Force).await,
        Err(DriverError::NotRunning)
    );
    assert_eq!(driver.reboot("100").await, Err(DriverError::NotRunning));

    driver.start("100").await.unwrap();
    assert!(fake.guest(100).unwrap().running);
    assert_eq!(driver.start("100").await, Err(DriverError::AlreadyRunning));
    fake.with(|s| s.guests.get_mut(&100).unwrap().uptime = 500);
    driver.reboot("100").await.unwrap();
    assert_eq!(fake.guest(100).unwrap().uptime, 1);
    driver.stop("100", StopMode::Force).await.unwrap();
    assert_eq!(fake.with(|s| s.count("POST", "/qemu/100/status/stop")), 1);
    fake.assert_clean();
}

#[tokio::test]
async fn a_guest_that_ignores_the_shutdown_is_forced_off_and_says_so() {
    let (fake, driver) = setup(cluster()).await;
    fake.with(|s| {
        s.fail_next.insert(
            "qmshutdown".into(),
            "VM quit/powerdown failed - got timeout".into(),
        )
    });
    assert_eq!(
        driver.stop_with_outcome("100", GRACEFUL).await,
        Ok(PowerOutcome::GracefulThenForced)
    );
    assert!(!fake.guest(100).unwrap().running);
    assert_eq!(
        fake.with(|s| s.count("POST", "/qemu/100/status/shutdown")),
        1
    );
    assert_eq!(fake.with(|s| s.count("POST", "/qemu/100/status/stop")), 1);
    driver.start("100").await.unwrap();
    assert_eq!(
        driver.stop_with_outcome("100", GRACEFUL).await,
        Ok(PowerOutcome::Graceful)
    );
    fake.assert_clean();
}

#[tokio::test]
async fn a_container_is_powered_and_measured_too() {
    let (fake, driver) = setup(cluster()).await;
    let status = driver.status("101").await.unwrap();
    // The uptime came as a string.
    assert_eq!(status.uptime_secs, Some(7200));
    assert_eq!(status.addresses, vec![Ipv4Addr::new(203, 0, 113, 20)]);
    assert!(fake.with(|s| s.count("GET", "/nodes/pve2/lxc/101/interfaces")) == 1);

    driver.reboot("101").await.unwrap();
    driver.stop("101", GRACEFUL).await.unwrap();
    assert_eq!(driver.reboot("101").await, Err(DriverError::NotRunning));
    assert_eq!(
        driver.stop("101", GRACEFUL).await,
        Err(DriverError::NotRunning)
    );
    driver.start("101").await.unwrap();
    assert_eq!(driver.start("101").await, Err(DriverError::AlreadyRunning));
    fake.assert_clean();
}

#[tokio::test]
async fn usage_is_read_per_guest_and_for_the_whole_cluster_in_one_call() {
    let (fake, driver) = setup(cluster()).await;
    let uptime = fake.guest(100).unwrap().uptime;
    let vm = driver.usage("100").await.unwrap();
    assert!(vm.running);
    assert_eq!(vm.cores, Some(2));
    assert_eq!(vm.cpu_fraction, Some(0.25));
    assert_eq!(vm.cpu_time_ns, None);
    assert_eq!(vm.memory_used, Some(512 << 20));
    assert_eq!(vm.memory_total, Some(2 << 30));
    // PVE cannot see into a VM's disk: unknown, not 0.
    assert_eq!(vm.disk_used, None);
    assert_eq!(vm.disk_total, Some(8 << 30));
    assert_eq!(vm.rx_bytes, Some(uptime * 1000));
    assert_eq!(vm.tx_bytes, Some(uptime * 500));
    let ct = driver.usage("101").await.unwrap();
    assert_eq!(ct.disk_used, Some(1 << 30));
    assert!(fake.with(|s| s.count("GET", "/nodes/pve1/qemu/100/status/current")) >= 1);

    let before = fake.with(|s| s.count("GET", "/cluster/resources"));
    let all = driver.usage_all().await.unwrap();
    assert_eq!(
        fake.with(|s| s.count("GET", "/cluster/resources")),
        before + 1,
        "one call for the whole cluster"
    );
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["100", "101", "102"], "templates are not guests");
    let (_, stopped) = &all[2];
    assert!(!stopped.running);
    assert_eq!(stopped.cpu_fraction, Some(0.0));
    assert_eq!(stopped.memory_used, Some(0));
    assert_eq!(stopped.rx_bytes, Some(0));
    assert_eq!(stopped.memory_total, Some(2 << 30));
    assert_eq!(all[0].1, vm);
    assert_eq!(all[1].1.disk_used, Some(1 << 30));
    fake.assert_clean();
}

#[tokio::test]
async fn already_running_is_recognised_at_dispatch_and_inside_the_task() {
    let (fake, driver) = setup(cluster()).await;
    let client = driver.client();
    // LXC refuses at once.
    assert_eq!(
        client
            .run(
                Method::POST,
                "/nodes/pve2/lxc/101/status/start",
                &[],
                Duration::from_secs(5)
            )
            .await,
        Err(DriverError::AlreadyRunning)
    );
    // QEMU accepts, and the task fails.
    assert_eq!(
        client
            .run(
                Method::POST,
                "/nodes/pve1/qemu/100/status/start",
                &[],
                Duration::from_secs(5)
            )
            .await,
        Err(DriverError::AlreadyRunning)
    );
    assert_eq!(fake.with(|s| s.count("GET", "/status")), 2 + 1);
    fake.assert_clean();
}

#[tokio::test]
async fn unknown_guests_are_not_found() {
    let (fake, driver) = setup(cluster()).await;
    assert_eq!(driver.start("999").await, Err(DriverError::NotFound));
    assert_eq!(driver.status("999").await, Err(DriverError::NotFound));
    assert!(
        matches!(driver.start("web1").await, Err(DriverError::Engine(m)) if m.contains("vmid"))
    );
    // PVE's own answer for a guest that is not there: 500 "... does not exist".
    assert_eq!(
        driver
            .client()
            .get("/nodes/pve1/qemu/999/status/current", &[])
            .await,
        Err(DriverError::NotFound)
    );
    fake.assert_clean();
}

#[tokio::test]
async fn addresses_fall_back_to_the_configuration_when_the_agent_is_down() {
    let (fake, driver) = setup(cluster()).await;
    fake.with(|s| {
        let g = s.guests.get_mut(&100).unwrap();
        g.agent_up = false;
        g.config.insert(
            "ipconfig0".into(),
            "ip=198.51.100.7/24,gw=198.51.100.1".into(),
        );
    });
    let status = driver.status("100").await.unwrap();
    assert_eq!(status.addresses, vec![Ipv4Addr::new(198, 51, 100, 7)]);
    fake.assert_clean();
}

#[tokio::test]
async fn addresses_are_configured_by_cloud_init_or_net0() {
    let (fake, driver) = setup(cluster()).await;
    let address = AddressConfig {
        address: Ipv4Addr::new(198, 51, 100, 30),
        prefix: 24,
        gateway: Some(Ipv4Addr::new(198, 51, 100, 1)),
    };
    fake.with(|s| s.guests.get_mut(&100).unwrap().uptime = 999);
    driver.configure_address("100", &address).await.unwrap();
    let vm = fake.guest(100).unwrap();
    assert_eq!(
        vm.config["ipconfig0"],
        "ip=198.51.100.30/24,gw=198.51.100.1"
    );
    // Cloud-init applies it at boot: the running VM was rebooted once.
    assert_eq!(vm.uptime, 1);
    assert_eq!(fake.with(|s| s.count("PUT", "/qemu/100/cloudinit")), 1);
    assert_eq!(
        driver.status("100").await.unwrap().addresses,
        vec![address.address]
    );
    driver.configure_address("100", &address).await.unwrap();
    assert_eq!(fake.with(|s| s.count("POST", "/qemu/100/status/reboot")), 1);

    driver.configure_address("101", &address).await.unwrap();
    let ct = fake.guest(101).unwrap();
    assert_eq!(
        ct.config["net0"],
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:BB:00:01,ip=198.51.100.30/24,gw=198.51.100.1,type=veth"
    );
    assert!(ct.running);
    assert_eq!(
        driver.status("101").await.unwrap().addresses,
        vec![address.address]
    );
    fake.assert_clean();
}

#[tokio::test]
async fn vm_passwords_go_through_the_agent_and_cloud_init() {
    let (fake, driver) = setup(cluster()).await;
    driver
        .set_password("100", "root", "n3w-Secret")
        .await
        .unwrap();
    let vm = fake.guest(100).unwrap();
    assert_eq!(vm.root_password.as_deref(), Some("n3w-Secret"));
    assert_eq!(vm.cipassword.as_deref(), Some("n3w-Secret"));
    assert_eq!(vm.config["ciuser"], "root");

    // Agent down: a clear error, and cloud-init's copy is left as it was.
    fake.with(|s| s.guests.get_mut(&100).unwrap().agent_up = false);
    match driver.set_password("100", "root", "other-Secret").await {
        Err(DriverError::Engine(m)) => assert!(m.contains("guest agent"), "{m}"),
        other => panic!("expected the agent's error, got {other:?}"),
    }
    assert_eq!(
        fake.guest(100).unwrap().cipassword.as_deref(),
        Some("n3w-Secret")
    );

    assert_eq!(
        driver.set_password("102", "root", "n3w-Secret").await,
        Err(DriverError::NotRunning)
    );
    match driver.set_password("101", "root", "n3w-Secret").await {
        Err(DriverError::Unsupported(m)) => assert!(m.contains("container"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    fake.assert_clean();
}

#[tokio::test]
async fn a_windows_login_is_the_one_whose_password_is_set() {
    let (fake, driver) = setup(cluster()).await;
    driver
        .set_password("100", "Administrator", "W1n-Secret")
        .await
        .unwrap();
    let vm = fake.guest(100).unwrap();
    assert_eq!(vm.password_user.as_deref(), Some("Administrator"));
    assert_eq!(vm.root_password.as_deref(), Some("W1n-Secret"));
    assert_eq!(vm.config["ciuser"], "Administrator");
    let agent = fake.with(|s| {
        s.requests
            .iter()
            .rfind(|r| r.path.ends_with("/agent/set-user-password"))
            .cloned()
            .unwrap()
    });
    assert_eq!(agent.params["username"], "Administrator");

    // A rebuild puts the password back for the new OS's login.
    let request = RebuildRequest {
        instance: "100".into(),
        image: "9000".into(),
        address: None,
        password: Some("W1n-Secret".into()),
        username: "Administrator".into(),
    };
    run_rebuild(&driver, &request).await.unwrap();
    let vm = fake.guest(100).unwrap();
    assert_eq!(vm.config["ciuser"], "Administrator");
    assert_eq!(vm.cipassword.as_deref(), Some("W1n-Secret"));

    // A name a guest could misread never leaves advps.
    let before = fake.with(|s| s.requests.len());
    for bad in ["ro:ot", "a b", "-x", ""] {
        assert!(
            matches!(
                driver.set_password("100", bad, "W1n-Secret").await,
                Err(DriverError::Engine(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(fake.with(|s| s.requests.len()), before);
    fake.assert_clean();
}

/// Reads console output until `wanted` shows up (or fails after 5 s).
async fn read_until(console: &mut advps_drivers::ConsoleStream, wanted: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(wanted) {
        match tokio::time::timeout_at(deadline, console.output.recv()).await {
            Ok(Some(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no {wanted:?} in {seen:?} ({other:?})"),
        }
    }
    seen
}

#[tokio::test]
async fn consoles_speak_termproxy_through_vncwebsocket() {
    let mut state = cluster();
    state
        .guests
        .get_mut(&100)
        .unwrap()
        .config
        .insert("serial0".into(), "socket".into());
    let (fake, driver) = setup(state).await;
    let size = TerminalSize { cols: 80, rows: 24 };

    // A container's console: login, then the starting size, then what is typed.
    let mut ct = driver.console("101", size).await.unwrap();
    let banner = read_until(&mut ct, "root@ct1:~# ").await;
    assert!(
        !banner.starts_with("OK"),
        "the login answer is not output: {banner:?}"
    );
    ct.input
        .send(ConsoleInput::Bytes(b"echo hello-pve\r".to_vec()))
        .await
        .unwrap();
    let out = read_until(&mut ct, "hello-pve\r\nroot@ct1").await;
    assert!(out.contains("echo hello-pve\r\n"), "{out:?}");
    ct.input
        .send(ConsoleInput::Resize(TerminalSize {
            cols: 132,
            rows: 43,
        }))
        .await
        .unwrap();
    ct.input
        .send(ConsoleInput::Bytes("stty size\r".as_bytes().to_vec()))
        .await
        .unwrap();
    read_until(&mut ct, "43 132\r\n").await;
    let messages: Vec<String> = fake.with(|s| {
        s.console_messages
            .iter()
            .filter(|(vmid, _)| *vmid == 101)
            .map(|(_, m)| m.clone())
            .collect()
    });
    assert_eq!(
        messages,
        [
            "1:80:24:",
            "0:15:echo hello-pve\r",
            "1:132:43:",
            "0:10:stty size\r"
        ]
    );
    let termproxy = fake.with(|s| {
        s.requests
            .iter()
            .find(|r| r.path == "/nodes/pve2/lxc/101/termproxy")
            .cloned()
            .expect("a termproxy call on the container's node")
    });
    assert!(termproxy.params.is_empty(), "{termproxy:?}");
    let websocket = fake.with(|s| {
        s.requests
            .iter()
            .find(|r| r.path == "/nodes/pve2/lxc/101/vncwebsocket")
            .cloned()
            .expect("the websocket on the same API")
    });
    let session = fake.with(|s| s.term_sessions[0].clone());
    assert_eq!(websocket.params["port"], session.port.to_string());
    // The ticket's '+', '/' and '=' arrived intact.
    assert_eq!(websocket.params["vncticket"], session.ticket);
    assert!(session.used);
    drop(ct);

    // A VM's console is its serial0.
    let mut vm = driver.console("100", size).await.unwrap();
    read_until(&mut vm, "root@web1:~# ").await;
    vm.input
        .send(ConsoleInput::Bytes(b"echo vm\r".to_vec()))
        .await
        .unwrap();
    read_until(&mut vm, "vm\r\nroot@web1").await;
    let termproxy = fake.with(|s| {
        s.requests
            .iter()
            .find(|r| r.path == "/nodes/pve1/qemu/100/termproxy")
            .cloned()
            .unwrap()
    });
    assert_eq!(termproxy.params["serial"], "serial0");

    // A stopped guest, and a VM without a serial port, are refused before
    // termproxy starts.
    assert_eq!(
        driver.console("102", size).await.err(),
        Some(DriverError::NotRunning)
    );
    fake.with(|s| {
        let g = s.guests.get_mut(&102).unwrap();
        g.running = true;
        g.agent_up = true;
    });
    match driver.console("102", size).await {
        Err(DriverError::Unsupported(m)) => assert!(m.contains("serial0"), "{m}"),
        other => panic!("expected Unsupported, got {:?}", other.err()),
    }
    assert_eq!(fake.with(|s| s.count("POST", "/termproxy")), 2);
    fake.assert_clean();
}

#[tokio::test]
async fn macs_are_set_in_net0_with_a_restart() {
    let (fake, driver) = setup(cluster()).await;
    driver.set_mac("100", "02:AD:00:00:00:01").await.unwrap();
    let vm = fake.guest(100).unwrap();
    assert_eq!(
        vm.config["net0"],
        "virtio=02:AD:00:00:00:01,bridge=vmbr0,firewall=1"
    );
    assert!(vm.running);
    assert_eq!(
        fake.with(|s| s.count("POST", "/qemu/100/status/shutdown")),
        1
    );

    driver.set_mac("102", "02:AD:00:00:00:02").await.unwrap();
    assert!(!fake.guest(102).unwrap().running);

    driver.set_mac("101", "02:AD:00:00:00:03").await.unwrap();
    let ct = fake.guest(101).unwrap();
    assert!(ct.config["net0"].contains("hwaddr=02:AD:00:00:00:03"));
    assert!(ct.running);
    fake.assert_clean();
}

#[tokio::test]
async fn locks_and_transient_refusals_are_waited_out() {
    let (fake, driver) = setup(cluster()).await;
    // A backup holds the lock for a few requests, and the first dispatches
    // and polls meet a busy node.
    fake.with(|s| {
        let g = s.guests.get_mut(&102).unwrap();
        g.lock = Some("backup".into());
        g.lock_ttl = Some(4);
        s.transient_dispatches = 0;
    });
    driver.start("102").await.unwrap();
    assert!(fake.guest(102).unwrap().running);
    assert!(fake.with(|s| s.count("POST", "/qemu/102/status/start")) >= 2);

    fake.with(|s| {
        s.transient_dispatches = 2;
        s.first_poll_400 = true;
    });
    driver.stop("102", StopMode::Force).await.unwrap();
    assert!(!fake.guest(102).unwrap().running);
    assert_eq!(fake.with(|s| s.count("POST", "/qemu/102/status/stop")), 3);

    // A lock that does not go: reported once the wait is over.
    fake.with(|s| s.guests.get_mut(&102).unwrap().lock = Some("migrate".into()));
    match driver.start("102").await {
        Err(DriverError::Engine(m)) => assert!(m.contains("locked (migrate)"), "{m}"),
        other => panic!("expected the lock error, got {other:?}"),
    }
    fake.assert_clean();
}

async fn run_rebuild(
    driver: &ProxmoxDriver,
    request: &RebuildRequest,
) -> Result<Value, DriverError> {
    let mut scratch = json!({});
    for step in 0..driver.rebuild_steps().len() {
        match driver.rebuild_step(request, step, &mut scratch).await? {
            StepOutcome::Next => {}
            StepOutcome::Done => return Ok(scratch),
        }
    }
    panic!("the rebuild never said it was done");
}

fn address() -> AddressConfig {
    AddressConfig {
        address: Ipv4Addr::new(203, 0, 113, 50),
        prefix: 24,
        gateway: Some(Ipv4Addr::new(203, 0, 113, 1)),
    }
}

#[tokio::test]
async fn a_vm_is_rebuilt_by_a_full_clone_keeping_its_mac_and_size() {
    let (fake, driver) = setup(cluster()).await;
    let request = RebuildRequest {
        instance: "100".into(),
        image: "9000".into(),
        address: Some(address()),
        password: Some("rebuilt-Pass1".into()),
        username: "root".into(),
    };
    run_rebuild(&driver, &request).await.unwrap();
    let vm = fake.guest(100).unwrap();
    assert!(vm.running);
    assert_eq!(vm.node, "pve1");
    assert!(vm.lock.is_none());
    assert_eq!(
        vm.config["net0"],
        "virtio=BC:24:11:AA:00:01,bridge=vmbr0,firewall=1"
    );
    assert_eq!(vm.config["memory"], "2048");
    assert_eq!(vm.config["name"], "web1");
    assert_eq!(vm.config["ipconfig0"], "ip=203.0.113.50/24,gw=203.0.113.1");
    assert_eq!(vm.cipassword.as_deref(), Some("rebuilt-Pass1"));
    assert_eq!(fake.with(|s| s.count("POST", "/qemu/9000/clone")), 1);
    assert_eq!(fake.with(|s| s.count("DELETE", "/qemu/100")), 1);
    // By name too.
    let by_name = RebuildRequest {
        image: "debian-12-cloud".into(),
        ..request.clone()
    };
    run_rebuild(&driver, &by_name).await.unwrap();
    assert_eq!(fake.with(|s| s.count("POST", "/qemu/9000/clone")), 2);
    fake.assert_clean();
}

#[tokio::test]
async fn a_container_is_recreated_from_its_template_with_the_same_vmid() {
    let (fake, driver) = setup(cluster()).await;
    let request = RebuildRequest {
        instance: "101".into(),
        image: "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz".into(),
        address: Some(address()),
        password: Some("rebuilt-Pass2".into()),
        username: "root".into(),
    };
    run_rebuild(&driver, &request).await.unwrap();
    let ct = fake.guest(101).unwrap();
    assert!(ct.running);
    assert_eq!(ct.node, "pve2");
    assert_eq!(ct.root_password.as_deref(), Some("rebuilt-Pass2"));
    assert_eq!(
        ct.config["net0"],
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:BB:00:01,ip=203.0.113.50/24,gw=203.0.113.1,type=veth"
    );
    assert_eq!(ct.config["hostname"], "ct1");
    assert_eq!(ct.config["rootfs"], "local-lvm:vm-101-disk-0,size=8G");
    let create = fake.with(|s| {
        s.requests
            .iter()
            .find(|r| r.method == "POST" && r.path == "/nodes/pve2/lxc")
            .cloned()
            .unwrap()
    });
    assert_eq!(create.params["ostemplate"], request.image);
    assert_eq!(create.params["vmid"], "101");
    fake.assert_clean();
}

#[tokio::test]
async fn a_wrong_image_is_refused_before_anything_is_destroyed() {
    let (fake, driver) = setup(cluster()).await;
    for (instance, image) in [
        ("101", "local:vztmpl/missing.tar.zst"),
        ("101", "9000"),
        (
            "100",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        ),
    ] {
        let request = RebuildRequest {
            instance: instance.into(),
            image: image.into(),
            address: None,
            password: None,
            username: "root".into(),
        };
        let err = run_rebuild(&driver, &request).await.unwrap_err();
        assert!(matches!(err, DriverError::Engine(_)), "{image}: {err:?}");
    }
    assert_eq!(fake.with(|s| s.count("DELETE", "")), 0);
    assert!(fake.guest(100).unwrap().running && fake.guest(101).unwrap().running);
    fake.assert_clean();
}

#[tokio::test]
async fn a_rebuild_failing_inside_proxmox_reports_proxmox_s_message() {
    let (fake, driver) = setup(cluster()).await;
    fake.with(|s| {
        s.fail_next.insert(
            "vzcreate".into(),
            "unable to create CT 101 - no space left on device".into(),
        )
    });
    let request = RebuildRequest {
        instance: "101".into(),
        image: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        address: None,
        password: Some("rebuilt-Pass2".into()),
        username: "root".into(),
    };
    match run_rebuild(&driver, &request).await {
        Err(DriverError::Engine(m)) => {
            assert_eq!(m, "unable to create CT 101 - no space left on device")
        }
        other => panic!("expected the task's error, got {other:?}"),
    }
    assert!(fake.guest(101).is_none(), "PVE removes a failed create");

    fake.with(|s| {
        s.fail_next.insert(
            "qmclone".into(),
            "clone failed: storage 'local-lvm' is full".into(),
        )
    });
    let request = RebuildRequest {
        instance: "102".into(),
        image: "9000".into(),
        address: None,
        password: None,
        username: "root".into(),
    };
    match run_rebuild(&driver, &request).await {
        Err(DriverError::Engine(m)) => assert!(m.contains("storage 'local-lvm' is full"), "{m}"),
        other => panic!("expected the task's error, got {other:?}"),
    }
    fake.assert_clean();
}

#[tokio::test]
async fn a_rebuild_resumed_after_a_crash_waits_for_the_clone_it_started() {
    let (fake, driver) = setup(cluster()).await;
    let request = RebuildRequest {
        instance: "100".into(),
        image: "9000".into(),
        address: None,
        password: None,
        username: "root".into(),
    };
    let create = driver
        .rebuild_steps()
        .iter()
        .position(|s| *s == "create")
        .unwrap();
    let mut scratch = json!({});
    for step in 0..create {
        driver
            .rebuild_step(&request, step, &mut scratch)
            .await
            .unwrap();
    }
    // The clone runs long; the process dies while waiting for it.
    fake.with(|s| s.task_polls = 1_000_000);
    let saved = scratch.clone();
    let crashed = tokio::time::timeout(
        Duration::from_millis(300),
        driver.rebuild_step(&request, create, &mut scratch),
    )
    .await;
    assert!(crashed.is_err(), "the step should still be waiting");
    assert_eq!(fake.guest(100).unwrap().lock.as_deref(), Some("clone"));

    // A new process resumes the step with the state saved before it; the
    // clone finishes meanwhile.
    fake.with(|s| {
        s.task_polls = 0;
        s.guests.get_mut(&100).unwrap().lock_ttl = Some(3);
    });
    let mut scratch = saved;
    for step in create..driver.rebuild_steps().len() {
        driver
            .rebuild_step(&request, step, &mut scratch)
            .await
            .unwrap();
    }
    assert_eq!(fake.with(|s| s.count("POST", "/qemu/9000/clone")), 1);
    let vm = fake.guest(100).unwrap();
    assert!(vm.running);
    assert_eq!(
        vm.config["net0"],
        "virtio=BC:24:11:AA:00:01,bridge=vmbr0,firewall=1"
    );
    fake.assert_clean();
}

#[tokio::test]
async fn the_server_is_pinned_or_verified_and_the_token_checked() {
    let fake = FakePve::start(cluster()).await;
    // The CA that signed the server's certificate.
    let by_ca = PveCredentials {
        token: TOKEN.into(),
        server: PveTrust::Ca(fake.ca_pem.clone()),
        ssh: None,
    };
    let driver = ProxmoxDriver::connect(PveClient::new(&fake.url, &by_ca).unwrap()).await;
    assert!(driver.is_ok(), "{:?}", driver.err());

    // Another fingerprint: refused, saying which certificate was seen.
    let wrong = PveCredentials {
        token: TOKEN.into(),
        server: PveTrust::Fingerprint("AB:".repeat(31) + "CD"),
        ssh: None,
    };
    match ProxmoxDriver::connect(PveClient::new(&fake.url, &wrong).unwrap()).await {
        Err(DriverError::Unreachable(m)) => {
            assert!(m.contains(&fake.fingerprint), "{m}");
            assert!(m.contains("pinned"), "{m}");
        }
        other => panic!("expected a refused certificate, got {:?}", other.err()),
    }
    // A CA that did not sign it.
    let other_ca = FakePve::start(State::default()).await;
    let foreign = PveCredentials {
        token: TOKEN.into(),
        server: PveTrust::Ca(other_ca.ca_pem.clone()),
        ssh: None,
    };
    assert!(matches!(
        ProxmoxDriver::connect(PveClient::new(&fake.url, &foreign).unwrap()).await,
        Err(DriverError::Unreachable(_))
    ));
    // A token the server does not know.
    let bad_token = PveCredentials {
        token: "advps@pve!advps=wrong".into(),
        server: PveTrust::Fingerprint(fake.fingerprint.clone()),
        ssh: None,
    };
    match ProxmoxDriver::connect(PveClient::new(&fake.url, &bad_token).unwrap()).await {
        Err(DriverError::Engine(m)) => assert!(m.contains("authentication"), "{m}"),
        other => panic!("expected an authentication error, got {:?}", other.err()),
    }
    fake.assert_clean();
}

#[tokio::test]
async fn requests_outside_the_schema_are_caught() {
    // This checks the schema check itself: without the schema (a notice
    // said so, or it failed under ADVPS_REQUIRE_PVE_SCHEMA) there is none.
    if support::pve_schema::schema().is_none() {
        return;
    }
    let (fake, driver) = setup(cluster()).await;
    let client = driver.client();
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    type Call<'a> = (Method, &'a str, Vec<(String, String)>);
    let bad: Vec<Call> = vec![
        // A misspelt parameter (PVE's is forceStop).
        (
            Method::POST,
            "/nodes/pve1/qemu/100/status/shutdown",
            vec![p("forcestop", "1")],
        ),
        // A path that does not exist, and a method a path does not have.
        (Method::GET, "/nodes/pve1/qemu/100/status/nonsense", vec![]),
        (Method::PUT, "/nodes/pve1/qemu/100/status/start", vec![]),
        // A value outside an enum, a key a property string does not have,
        // a missing required parameter, a boolean that is not 0/1.
        (Method::GET, "/cluster/resources", vec![p("type", "vms")]),
        (
            Method::PUT,
            "/nodes/pve2/lxc/101/config",
            vec![p("net0", "name=eth0,bridge=vmbr0,ipaddr=1.2.3.4/24")],
        ),
        (
            Method::POST,
            "/nodes/pve1/qemu/9000/clone",
            vec![p("full", "1")],
        ),
        (
            Method::POST,
            "/nodes/pve1/qemu/100/status/shutdown",
            vec![p("forceStop", "yes please")],
        ),
    ];
    let count = bad.len();
    for (method, path, params) in bad {
        let result = client.call(method.clone(), path, &params).await;
        assert!(result.is_err(), "{method} {path} was accepted");
    }
    let violations = fake.with(|s| std::mem::take(&mut s.violations));
    assert_eq!(violations.len(), count, "{violations:#?}");
    assert!(violations[0].contains("forcestop"), "{}", violations[0]);
    fake.assert_clean();
}
