//! Container passwords on Proxmox VE through `pct exec` over SSH: the
//! driver against the fake PVE cluster (`support/fake_pve.rs`) for where
//! the container is and whether it runs, and a real sshd whose fake `pct`
//! records what reached it (`support/sshd.rs`). The password must reach
//! `chpasswd`'s standard input and nothing else; each failure (a stopped
//! container, a wrong host key, a refusal on the node, a hang, no ssh
//! client, no SSH access at all) must come back as the driver's own error.

mod support;

use std::time::{Duration, Instant};

use advps_drivers::proxmox::client::{PveClient, PveCredentials, PveTrust};
use advps_drivers::proxmox::ssh::{PctExec, PveSsh};
use advps_drivers::proxmox::ProxmoxDriver;
use advps_drivers::{Driver, DriverError};
use support::fake_pve::{cluster, FakePve, TOKEN};
use support::sshd::TestSshd;

const PASSWORD: &str = "Xq7pLm2Rt9Vw4Kz8Bn3D";

async fn driver_for(fake: &FakePve) -> ProxmoxDriver {
    let credentials = PveCredentials {
        token: TOKEN.into(),
        server: PveTrust::Fingerprint(fake.fingerprint.clone()),
        ssh: None,
    };
    let client = PveClient::new(&fake.url, &credentials)
        .unwrap()
        .with_poll_interval(Duration::from_millis(5))
        .with_request_timeout(Duration::from_secs(10));
    ProxmoxDriver::connect(client).await.unwrap()
}

/// SSH access to `sshd` for the nodes in `hosts`, trusting `known_hosts`.
fn pct_exec(sshd: &TestSshd, hosts: &[String], known_hosts: &str) -> PctExec {
    PctExec::new(&PveSsh {
        user: sshd.user.clone(),
        hosts: hosts.to_vec(),
        private_key: sshd.client_key.clone(),
        known_hosts: known_hosts.to_string(),
    })
    .unwrap()
}

/// The fake cluster (CT 101 runs on pve2) and a driver whose SSH access
/// reaches `sshd` for pve2 only.
async fn setup(sshd: &TestSshd) -> (FakePve, ProxmoxDriver) {
    let fake = FakePve::start(cluster()).await;
    let hosts = vec![format!("pve2={}", sshd.host())];
    let driver = driver_for(&fake)
        .await
        .with_pct_exec(pct_exec(sshd, &hosts, &sshd.known_hosts));
    (fake, driver)
}

#[tokio::test]
async fn the_password_reaches_chpasswd_on_the_container_s_own_node() {
    let Some(sshd) = TestSshd::start(&[101]) else {
        return;
    };
    let fake = FakePve::start(cluster()).await;
    // The default host is a closed port: using it instead of pve2's entry
    // would fail the call.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts = vec![
        format!("127.0.0.1:{closed}"),
        format!("pve2={}", sshd.host()),
    ];
    let (_, host_key) = sshd.known_hosts.split_once(' ').unwrap();
    let known_hosts = format!("{}[127.0.0.1]:{closed} {host_key}", sshd.known_hosts);
    let driver = driver_for(&fake)
        .await
        .with_pct_exec(pct_exec(&sshd, &hosts, &known_hosts));

    driver.set_password("101", "root", PASSWORD).await.unwrap();
    assert_eq!(sshd.calls(), 1, "sshd log:\n{}", sshd.log());
    assert_eq!(
        sshd.last_command().as_deref(),
        Some("pct exec 101 -- chpasswd")
    );
    assert_eq!(
        sshd.last_stdin().as_deref(),
        Some(format!("root:{PASSWORD}\n").as_str())
    );
    // Only read from the API: nothing was written to the container's configuration.
    assert_eq!(fake.with(|s| s.count("PUT", "/lxc/101/config")), 0);
    assert!(fake.with(|s| s.count("GET", "/nodes/pve2/lxc/101/status/current")) >= 1);

    // A VM still goes through the guest agent, not SSH.
    driver.set_password("100", "root", PASSWORD).await.unwrap();
    assert_eq!(sshd.calls(), 1);
    fake.assert_clean();
}

#[tokio::test]
async fn a_stopped_container_is_not_running_and_no_ssh_is_made() {
    let Some(sshd) = TestSshd::start(&[101]) else {
        return;
    };
    let (fake, driver) = setup(&sshd).await;
    fake.with(|s| {
        let ct = s.guests.get_mut(&101).unwrap();
        ct.running = false;
        ct.uptime = 0;
    });
    assert_eq!(
        driver.set_password("101", "root", PASSWORD).await,
        Err(DriverError::NotRunning)
    );
    assert_eq!(sshd.calls(), 0);
    fake.assert_clean();
}

#[tokio::test]
async fn a_host_key_other_than_the_registered_one_is_unreachable_and_runs_nothing() {
    let Some(sshd) = TestSshd::start(&[101]) else {
        return;
    };
    let fake = FakePve::start(cluster()).await;
    let hosts = vec![format!("pve2={}", sshd.host())];
    let driver =
        driver_for(&fake)
            .await
            .with_pct_exec(pct_exec(&sshd, &hosts, &sshd.wrong_known_hosts));
    match driver.set_password("101", "root", PASSWORD).await {
        Err(DriverError::Unreachable(message)) => {
            assert!(message.contains("host key"), "{message}");
            assert!(message.contains("node pve2"), "{message}");
            assert!(!message.contains(PASSWORD), "{message}");
            // The call's private directory is not named.
            assert!(!message.contains("advps-ssh-"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(sshd.calls(), 0);
    assert_eq!(sshd.last_stdin(), None);
    fake.assert_clean();
}

#[tokio::test]
async fn a_refusal_on_the_node_is_the_engine_s_error_with_its_message() {
    let Some(sshd) = TestSshd::start(&[]) else {
        return;
    };
    let (fake, driver) = setup(&sshd).await;
    match driver.set_password("101", "root", PASSWORD).await {
        Err(DriverError::Engine(message)) => {
            assert!(message.contains("pct exec 101"), "{message}");
            assert!(
                message.contains("Configuration file 'nodes/pve2/lxc/101.conf' does not exist"),
                "{message}"
            );
            assert!(!message.contains(PASSWORD), "{message}");
            // The API's clients see this message: it names no SSH host.
            assert!(!message.contains("127.0.0.1"), "{message}");
        }
        other => panic!("expected Engine, got {other:?}"),
    }
    assert_eq!(sshd.calls(), 1);

    // chpasswd refusing inside the container.
    sshd.fail_with(
        "chpasswd: (user root) pam_chauthtok() failed, error:\n\
         Authentication token manipulation error\n\
         chpasswd: (line 1, user root) password not changed\n",
    );
    match driver.set_password("101", "root", PASSWORD).await {
        Err(DriverError::Engine(message)) => {
            assert!(message.contains("password not changed"), "{message}");
            assert!(message.contains("exit 1"), "{message}");
        }
        other => panic!("expected Engine, got {other:?}"),
    }
    fake.assert_clean();
}

#[tokio::test]
async fn a_call_that_hangs_is_killed_at_its_deadline() {
    let Some(sshd) = TestSshd::start(&[101]) else {
        return;
    };
    sshd.hang();
    let fake = FakePve::start(cluster()).await;
    let hosts = vec![format!("pve2={}", sshd.host())];
    let driver = driver_for(&fake).await.with_pct_exec(
        pct_exec(&sshd, &hosts, &sshd.known_hosts).with_timeout(Duration::from_secs(2)),
    );
    let started = Instant::now();
    match driver.set_password("101", "root", PASSWORD).await {
        Err(DriverError::Timeout(message)) => {
            assert!(message.contains("pct exec 101"), "{message}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    fake.assert_clean();
}

#[tokio::test]
async fn without_ssh_access_the_answer_says_how_to_enable_it() {
    let fake = FakePve::start(cluster()).await;
    let driver = driver_for(&fake).await;
    match driver.set_password("101", "root", PASSWORD).await {
        Err(DriverError::Unsupported(message)) => {
            assert!(message.contains("no API"), "{message}");
            assert!(message.contains("--ssh-host"), "{message}");
            assert!(message.contains("--ssh-key"), "{message}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // The capability stays: a node with SSH access can do it.
    assert!(driver.capabilities().await.unwrap().set_password);
    fake.assert_clean();
}

#[tokio::test]
async fn a_missing_ssh_client_or_node_entry_is_named() {
    let fake = FakePve::start(cluster()).await;
    let settings = |hosts: &[&str]| PveSsh {
        user: "root".into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n\
                      -----END OPENSSH PRIVATE KEY-----\n"
            .into(),
        known_hosts: "|1|hashed=|name= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\n".into(),
    };
    let no_client = PctExec::new(&settings(&["127.0.0.1"]))
        .unwrap()
        .with_program("/nonexistent/ssh");
    let driver = driver_for(&fake).await.with_pct_exec(no_client);
    match driver.set_password("101", "root", PASSWORD).await {
        Err(DriverError::Unsupported(message)) => {
            assert!(message.contains("openssh-client"), "{message}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }

    // Only pve1 has an entry; CT 101 runs on pve2.
    let driver = driver_for(&fake)
        .await
        .with_pct_exec(PctExec::new(&settings(&["pve1=127.0.0.1"])).unwrap());
    match driver.set_password("101", "root", PASSWORD).await {
        Err(DriverError::Unsupported(message)) => {
            assert!(message.contains("'pve2'"), "{message}");
            assert!(message.contains("--ssh-host"), "{message}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    fake.assert_clean();
}
