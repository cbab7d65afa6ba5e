//! A real OpenSSH server standing in for a Proxmox VE node's sshd, for the
//! tests of `pct exec` over SSH.
//!
//! [`TestSshd::start`] runs `/usr/sbin/sshd -D -e` on 127.0.0.1 and a free
//! port, with a host key and a client key made by `ssh-keygen` in a private
//! directory, and the current user as the only one who can log in (by that
//! key). Every session runs `fake-pct.sh` (`ForceCommand`), which stands in
//! for the node's `pct`: it records `$SSH_ORIGINAL_COMMAND` and its standard
//! input, and succeeds only for `pct exec VMID -- chpasswd` with a vmid it
//! was told about; otherwise it fails the way `pct` does. A `fail` file
//! makes it fail with that text, a `hang` file makes it hang for a while.
//!
//! Without sshd the tests are skipped with a notice, unless
//! `ADVPS_REQUIRE_SSHD` is set (as in CI), where that is a failure
//! ([`super::require`]). sshd is killed when the value is dropped.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require;

const SSHD: &str = "/usr/sbin/sshd";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct TestSshd {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The account the tests log in as (the one running them).
    pub user: String,
    /// The client's private key (OpenSSH text), authorized on this server.
    pub client_key: String,
    /// A known_hosts line with this server's host key.
    pub known_hosts: String,
    /// A known_hosts line with another host key for the same address.
    pub wrong_known_hosts: String,
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

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
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    // KEYTYPE KEY, without the comment.
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn has_program(name: &str) -> bool {
    Command::new(name)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl TestSshd {
    /// Starts sshd whose fake `pct` knows the containers `vmids`; `None`
    /// (after a notice) when OpenSSH is not installed and not required.
    pub fn start(vmids: &[u64]) -> Option<TestSshd> {
        let missing = if !Path::new(SSHD).exists() {
            Some("/usr/sbin/sshd (openssh-server)")
        } else if !has_program("ssh") {
            Some("ssh (openssh-client)")
        } else {
            None
        };
        if let Some(what) = missing {
            require::missing(
                require::REQUIRE_SSHD,
                "the tests of `pct exec` over SSH",
                &format!("{what} is not installed"),
                "apt-get install openssh-server openssh-client",
            );
            return None;
        }
        let user = run("id", &["-un"]).trim().to_string();
        if user == "root" {
            // sshd's privilege separation directory, which only root uses.
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let dir = tempfile::Builder::new()
            .prefix("advps-test-sshd-")
            .tempdir()
            .expect("create temp dir");
        let path = |name: &str| dir.path().join(name);
        let host_key = keygen(&path("host_key"));
        let other_host_key = keygen(&path("other_host_key"));
        let client_public = keygen(&path("client_key"));
        std::fs::write(path("authorized_keys"), format!("{client_public}\n")).unwrap();
        let client_key = std::fs::read_to_string(path("client_key")).unwrap();

        let known: Vec<String> = vmids.iter().map(u64::to_string).collect();
        let script = format!(
            r#"#!/bin/sh
# Stands in for `pct` on a Proxmox VE node.
set -f
dir='{dir}'
echo call >> "$dir/calls"
printf '%s\n' "$SSH_ORIGINAL_COMMAND" > "$dir/command"
cat > "$dir/stdin"
if [ -f "$dir/hang" ]; then sleep 10; fi
if [ -f "$dir/fail" ]; then cat "$dir/fail" >&2; exit 1; fi
set -- $SSH_ORIGINAL_COMMAND
if [ "$#" -eq 5 ] && [ "$1" = pct ] && [ "$2" = exec ] && [ "$4" = -- ] && [ "$5" = chpasswd ]; then
    case " {known} " in
        *" $3 "*) exit 0 ;;
    esac
    echo "Configuration file 'nodes/pve2/lxc/$3.conf' does not exist" >&2
    exit 2
fi
echo "unexpected command: $SSH_ORIGINAL_COMMAND" >&2
exit 2
"#,
            dir = dir.path().display(),
            known = known.join(" "),
        );
        std::fs::write(path("fake-pct.sh"), script).unwrap();
        run("chmod", &["755", path("fake-pct.sh").to_str().unwrap()]);

        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {host_key_file}\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers {user}\n\
             PidFile none\n\
             PrintMotd no\n\
             ForceCommand {script}\n",
            host_key_file = path("host_key").display(),
            authorized = path("authorized_keys").display(),
            script = path("fake-pct.sh").display(),
        );
        std::fs::write(path("sshd_config"), config).unwrap();
        let log = std::fs::File::create(path("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let known_hosts = format!("[127.0.0.1]:{port} {host_key}\n");
        let wrong_known_hosts = format!("[127.0.0.1]:{port} {other_host_key}\n");
        let mut sshd = TestSshd {
            child,
            dir,
            port,
            user,
            client_key,
            known_hosts,
            wrong_known_hosts,
        };
        sshd.wait_until_ready();
        Some(sshd)
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}):\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `127.0.0.1:PORT`, as `--ssh-host` takes it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client's private key as a file (for the command line).
    pub fn client_key_file(&self) -> PathBuf {
        self.file("client_key")
    }

    /// A file holding [`TestSshd::known_hosts`].
    pub fn known_hosts_file(&self) -> PathBuf {
        let path = self.file("client_known_hosts");
        std::fs::write(&path, &self.known_hosts).unwrap();
        path
    }

    /// How many sessions reached the fake `pct`.
    pub fn calls(&self) -> usize {
        std::fs::read_to_string(self.file("calls"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The command of the last session, as ssh sent it.
    pub fn last_command(&self) -> Option<String> {
        std::fs::read_to_string(self.file("command"))
            .ok()
            .map(|s| s.trim_end_matches('\n').to_string())
    }

    /// What the last session read on its standard input, exactly.
    pub fn last_stdin(&self) -> Option<String> {
        std::fs::read_to_string(self.file("stdin")).ok()
    }

    /// From now on the fake `pct` fails with `message` on its error output.
    pub fn fail_with(&self, message: &str) {
        std::fs::write(self.file("fail"), message).unwrap();
    }

    /// From now on the fake `pct` hangs for ten seconds.
    pub fn hang(&self) {
        std::fs::write(self.file("hang"), "").unwrap();
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file("sshd.log")).unwrap_or_default()
    }
}
