//! A libvirt node over SSH with a sealed key and known_hosts, against a real sshd on this
//! machine and the local libvirtd (`qemu:///system`).
//!
//! The test starts its own OpenSSH server on 127.0.0.1 and a free port, with a generated host
//! key and a client key authorized for the account running the tests (root, as libvirtd
//! needs). Each session first runs a probe (the key's `command=` in authorized_keys) that
//! records the modes and owner of advps's private files while the call is under way, then the
//! command libvirt asked for (`virt-ssh-helper` or `nc`, which reach the local libvirtd). The
//! node is registered with `advps nodes add ... --ssh-key --ssh-known-hosts` and
//!
//! - `nodes sync` imports a domain the test defined (nothing boots), through SSH;
//! - the server's own connection (a live service's status through the API) goes through it,
//!   and so does the serial console (the domain started, sitting in its firmware), whose
//!   private files last as long as it does;
//! - a known_hosts that holds another host key fails fast with a host key error, before any
//!   session reaches the probe, whether given to `nodes add` or later to `nodes set-ssh`;
//! - the private files were 0600 (the wrapper 0700) in a 0700 directory while in use and are
//!   gone afterwards;
//! - no line of the private key is in the database, the server's log or any output.
//!
//! Without libvirtd the test is skipped with a notice (a failure with ADVPS_REQUIRE_LIBVIRT=1);
//! without OpenSSH likewise (a failure with ADVPS_REQUIRE_SSHD=1 or ADVPS_REQUIRE_LIBVIRT=1).

mod common;
#[path = "common/remote_node.rs"]
mod remote_node;
#[allow(dead_code)]
#[path = "../../advps-drivers/tests/support/require.rs"]
mod require;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use remote_node::*;

const NODE: &str = "kvmssh";
const SUITE: &str = "the libvirt-over-SSH test";

/// Makes an ed25519 key pair at `path`; gives `KEYTYPE KEY` of its public half.
fn keygen(path: &Path) -> String {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            path.to_str().unwrap(),
        ],
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why the test cannot run here, if it cannot (after the notice or the failure).
fn skipped() -> bool {
    let libvirt = Command::new("virsh")
        .args(["-q", "-c", require::LIBVIRT_URI, "uri"])
        .stdin(Stdio::null())
        .output();
    let why = match libvirt {
        Err(e) => Some(format!("virsh cannot run ({e})")),
        Ok(out) if !out.status.success() => Some(format!(
            "libvirtd does not answer at {} ({})",
            require::LIBVIRT_URI,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    };
    if let Some(why) = why {
        require::missing(require::REQUIRE_LIBVIRT, SUITE, &why, require::LIBVIRT_HOW);
        return true;
    }
    let missing = if !Path::new("/usr/sbin/sshd").exists() {
        Some("/usr/sbin/sshd (openssh-server) is not installed")
    } else if !require::has_program("ssh", "-V") {
        Some("ssh (openssh-client) is not installed")
    } else {
        None
    };
    if let Some(why) = missing {
        let how = "apt-get install openssh-server openssh-client";
        // libvirt is here: a run that asks for the libvirt suites wants this one too.
        require::missing(require::REQUIRE_LIBVIRT, SUITE, why, how);
        require::missing(require::REQUIRE_SSHD, SUITE, why, how);
        return true;
    }
    false
}

/// A private sshd whose sessions record advps's private files, then run what was asked.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    host_key: String,
    other_host_key: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// `watched` is the TMPDIR of the advps processes under test.
    fn start(watched: &Path) -> Sshd {
        let user = run("id", &["-un"]).trim().to_string();
        if user == "root" {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let dir = tempfile::Builder::new()
            .prefix("advps-test-lvsshd-")
            .tempdir()
            .unwrap();
        let path = |name: &str| dir.path().join(name);
        let host_key = keygen(&path("host_key"));
        let other_host_key = keygen(&path("other_host_key"));
        let client = keygen(&path("client_key"));
        let probe = format!(
            "#!/bin/sh\n\
             # Records advps's private files during the call, then runs the call.\n\
             echo session >> '{log}'\n\
             stat -c '%a %U %n' '{watched}'/advps-virsh-* '{watched}'/advps-virsh-*/* \
             >> '{log}' 2>&1\n\
             exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            log = path("probe.log").display(),
            watched = watched.display(),
        );
        std::fs::write(path("probe.sh"), probe).unwrap();
        run("chmod", &["755", path("probe.sh").to_str().unwrap()]);
        std::fs::write(
            path("authorized_keys"),
            format!("command=\"{}\" {client}\n", path("probe.sh").display()),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers {user}\n\
             PidFile none\n\
             PrintMotd no\n",
            host_key = path("host_key").display(),
            authorized = path("authorized_keys").display(),
        );
        std::fs::write(path("sshd_config"), config).unwrap();
        let log = std::fs::File::create(path("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            child,
            dir,
            port,
            host_key,
            other_host_key,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited ({status}):\n{}", sshd.file("sshd.log"));
            }
            assert!(Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn sessions(&self) -> usize {
        self.file("probe.log")
            .lines()
            .filter(|l| *l == "session")
            .count()
    }

    fn endpoint(&self) -> String {
        format!("qemu+ssh://root@127.0.0.1:{}/system", self.port)
    }

    /// A known_hosts file with `key` for this server's address.
    fn known_hosts(&self, name: &str, key: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("[127.0.0.1]:{} {key}\n", self.port)).unwrap();
        path
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_libvirt_node_over_ssh_uses_its_sealed_key_and_known_hosts_only() {
    if skipped() {
        return;
    }
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let sshd = Sshd::start(&tmp);
    let domain = Domain::define(scratch.path(), "lvssh");
    let tmp_text = tmp.to_str().unwrap().to_string();
    let server = TestServer::start_with_env(&[
        ("TMPDIR", tmp_text.as_str()),
        ("ADVPS_RATE_LIMIT_LIVE", "100000"),
    ]);
    let key_file = sshd.path("client_key");
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let good = sshd.known_hosts("good_known_hosts", &sshd.host_key);
    let wrong = sshd.known_hosts("wrong_known_hosts", &sshd.other_host_key);
    let endpoint = sshd.endpoint();
    let mut outputs = Vec::new();

    // A known_hosts with another host key: refused at once, before any session starts.
    let asked = Instant::now();
    let out = advps(
        &server,
        &tmp,
        &[
            "nodes",
            "add",
            "kvmbad",
            "--driver",
            "libvirt",
            "--endpoint",
            &endpoint,
            "--ssh-key",
            key_file.to_str().unwrap(),
            "--ssh-known-hosts",
            wrong.to_str().unwrap(),
        ],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    assert!(said.contains("host key"), "{said}");
    assert!(said.contains("--ssh-known-hosts"), "{said}");
    assert!(!said.contains(&tmp_text), "the private paths leak: {said}");
    assert_eq!(sshd.sessions(), 0, "{}", sshd.file("probe.log"));
    outputs.push(said);

    // The right one: registered, and the key and host keys are not shown.
    let out = advps_ok(
        &server,
        &tmp,
        &[
            "nodes",
            "add",
            NODE,
            "--driver",
            "libvirt",
            "--endpoint",
            &endpoint,
            "--ssh-key",
            key_file.to_str().unwrap(),
            "--ssh-known-hosts",
            good.to_str().unwrap(),
        ],
    );
    assert!(out.contains("virtual machines: yes"), "{out}");
    assert!(
        out.contains("Remote access: sealed key, 1 host key(s)"),
        "{out}"
    );
    assert!(sshd.sessions() >= 1, "the node was not reached over SSH");
    outputs.push(out);
    let listed = advps_ok(&server, &tmp, &["nodes", "list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(NODE))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("sealed key"), "{line}");
    assert!(!listed.contains("kvmbad"), "{listed}");
    outputs.push(listed);

    // Listing the domains goes through SSH and finds the one defined here.
    let before = sshd.sessions();
    let out = advps_ok(&server, &tmp, &["nodes", "sync", NODE]);
    assert!(out.contains("Synced node kvmssh"), "{out}");
    assert!(sshd.sessions() > before, "sync did not go through SSH");
    outputs.push(out);
    let instances = advps_ok(&server, &tmp, &["nodes", "instances", "--node", NODE]);
    assert!(instances.contains(&domain.0), "{instances}");

    // The server's own connection: a live service's status through the API.
    server.create_account("acme");
    let out = advps_ok(
        &server,
        &tmp,
        &[
            "services",
            "create",
            "--account",
            "acme",
            "--node",
            NODE,
            "--instance",
            &domain.0,
            "--type",
            "VPS",
        ],
    );
    let id = last_line(&out);
    outputs.push(out);
    let key = server.create_key("acme", "live");
    let before = sshd.sessions();
    let resp = server.status(&key, &id).await;
    let data = assert_success(&resp, "Service status retrieved successfully");
    assert_eq!(data["serviceType"], "VPS", "{data}");
    assert!(
        sshd.sessions() > before,
        "the server did not go through SSH: {data}\n{}",
        server.stderr_log()
    );

    // While in use the files were the service user's alone.
    let probe = sshd.file("probe.log");
    let seen: Vec<&str> = probe
        .lines()
        .filter(|l| l.contains("advps-virsh-"))
        .collect();
    assert!(!seen.is_empty(), "no private files seen:\n{probe}");
    for line in &seen {
        let mut fields = line.split_whitespace();
        let (mode, owner, path) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let expected = if path.ends_with("/id") || path.ends_with("/known_hosts") {
            "600"
        } else {
            // The directory and the ssh wrapper.
            "700"
        };
        assert_eq!(mode, expected, "{line}");
        assert_eq!(owner, run("id", &["-un"]).trim(), "{line}");
    }
    for name in ["/id", "/known_hosts", "/ssh"] {
        assert!(
            seen.iter().any(|l| l.ends_with(name)),
            "{name} not seen:\n{probe}"
        );
    }
    // ... and are gone once the calls ended.
    assert_eq!(leftovers(&tmp), Vec::<String>::new());

    // The serial console goes through the same SSH access; its files stay while it is open
    // and go with it.
    console_uses_private_access(&server, &key, &id, &tmp, "SSH", || sshd.sessions()).await;

    // set-ssh replaces the sealed host keys: another host key is refused from then on,
    // the right one works again.
    let set = |known: &Path| {
        advps_ok(
            &server,
            &tmp,
            &[
                "nodes",
                "set-ssh",
                NODE,
                "--ssh-key",
                key_file.to_str().unwrap(),
                "--ssh-known-hosts",
                known.to_str().unwrap(),
            ],
        )
    };
    outputs.push(set(&wrong));
    let out = advps(&server, &tmp, &["nodes", "sync", NODE]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("host key"), "{said}");
    outputs.push(said);
    outputs.push(set(&good));
    outputs.push(advps_ok(&server, &tmp, &["nodes", "sync", NODE]));
    assert_eq!(leftovers(&tmp), Vec::<String>::new());

    // No line of the key in the database, the server's log or any output.
    let secret_lines: Vec<&str> = key_text
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!secret_lines.is_empty());
    let stored = all_bytes(server.data_dir());
    assert!(
        stored
            .iter()
            .any(|(_, bytes)| bytes.starts_with(b"SQLite format 3")),
        "no database in {:?}",
        stored.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let log = server.stderr_log();
    outputs.push(instances);
    for line in &secret_lines {
        for (path, bytes) in &stored {
            assert!(
                !bytes.windows(line.len()).any(|w| w == line.as_bytes()),
                "a line of the key is in {}",
                path.display()
            );
        }
        assert!(
            !log.contains(line),
            "a line of the key is in the server's log"
        );
        for output in &outputs {
            assert!(
                !output.contains(line),
                "a line of the key in output: {output}"
            );
        }
    }

    // Nothing is left once the server has ended either.
    drop(server);
    assert_eq!(leftovers(&tmp), Vec::<String>::new());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
