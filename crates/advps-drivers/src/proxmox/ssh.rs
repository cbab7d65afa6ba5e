//! Root passwords of running LXC containers through `pct exec` on the
//! Proxmox VE node that owns them, over SSH.
//!
//! Proxmox VE has no API call that changes a password inside a running
//! container; only `pct exec VMID -- chpasswd` on the container's own node
//! can. When the operator registers an SSH key for the cluster, advps runs
//! exactly that command there with the OpenSSH client:
//!
//! - The host is chosen by the node that `locate()` found the guest on:
//!   `NODE=HOST[:PORT]` entries first, then the default `HOST[:PORT]`,
//!   because `pct` only knows the containers of the node it runs on.
//! - The key and the node's host keys are written to a fresh private
//!   directory for each call and removed after it; the host key is checked
//!   strictly against the registered known_hosts, nothing else (no agent,
//!   no user or system configuration, no password prompt).
//! - The password goes to `chpasswd` on standard input as `root:PASSWORD`:
//!   it is on no command line (neither here nor on the node), in no log and
//!   in no error message.
//! - ssh's own failures (connection, host key, authentication) are
//!   [`DriverError::Unreachable`]; a refusal by `pct` or `chpasswd` is
//!   [`DriverError::Engine`] with its message. A call that hangs is killed
//!   after [`PCT_EXEC_TIMEOUT`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::private_dir::PrivateDir;
use crate::{DriverError, DriverResult};

/// The port of sshd when a host names none.
pub const DEFAULT_SSH_PORT: u16 = 22;
/// The account `pct` needs on a stock Proxmox VE node.
pub const DEFAULT_SSH_USER: &str = "root";
/// How long one `pct exec` may take, connection included, before ssh is
/// killed: `chpasswd` itself takes milliseconds.
pub const PCT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long ssh may take to connect (its own `ConnectTimeout`).
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// How much of ssh's or pct's error output an error message carries.
const MESSAGE_LIMIT: usize = 300;

fn default_user() -> String {
    DEFAULT_SSH_USER.to_string()
}

/// The SSH access to a cluster's nodes, as stored with the node's sealed
/// credentials (so the private key is encrypted together with the token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PveSsh {
    #[serde(default = "default_user")]
    pub user: String,
    /// `HOST[:PORT]` (at most one: the default) and `NODE=HOST[:PORT]`
    /// entries, as given to `--ssh-host`.
    pub hosts: Vec<String>,
    /// The private key, OpenSSH or PEM text, without a passphrase.
    pub private_key: String,
    /// known_hosts lines with the nodes' host keys.
    pub known_hosts: String,
}

/// Never prints the private key.
impl fmt::Debug for PveSsh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveSsh")
            .field("user", &self.user)
            .field("hosts", &self.hosts)
            .field("private_key", &"<redacted>")
            .field("known_hosts_lines", &self.known_hosts.lines().count())
            .finish()
    }
}

impl PveSsh {
    /// Checks everything that can be checked without connecting, so that a
    /// mistake is reported when the node is added.
    pub fn validate(&self) -> Result<(), String> {
        PctExec::new(self).map(|_| ())
    }
}

/// Where sshd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl SshTarget {
    /// Parses `HOST`, `HOST:PORT`, `[IPV6]:PORT` or a bare IPv6 address.
    pub fn parse(text: &str) -> Result<SshTarget, String> {
        let text = text.trim();
        let bad = |why: &str| {
            format!(
                "SSH host '{text}': {why} (expected HOST or HOST:PORT; an IPv6 address with a \
                 port in brackets, [fd00::2]:22)"
            )
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing ']'"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("junk after ']'"))?,
                    ),
                ),
            }
        } else if text.matches(':').count() > 1 {
            (text, None)
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            None => DEFAULT_SSH_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        if host.contains(':') {
            host.parse::<Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address"))?;
        } else {
            // The host is an argument of ssh: it must not be read as an option.
            let plain = !host.is_empty()
                && !host.starts_with('-')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !plain {
                return Err(bad("not a host name or address"));
            }
        }
        Ok(SshTarget {
            host: host.to_string(),
            port,
        })
    }

    /// The name ssh looks the host's key up under: `HOST` on port 22,
    /// `[HOST]:PORT` on any other.
    pub fn known_hosts_name(&self) -> String {
        if self.port == DEFAULT_SSH_PORT {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which sshd serves which Proxmox VE node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHosts {
    pub default: Option<SshTarget>,
    pub nodes: BTreeMap<String, SshTarget>,
}

impl SshHosts {
    /// Parses `HOST[:PORT]` and `NODE=HOST[:PORT]` entries: at least one,
    /// at most one default, each node named once.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<SshHosts, String> {
        let mut hosts = SshHosts {
            default: None,
            nodes: BTreeMap::new(),
        };
        for entry in entries {
            let entry = entry.as_ref().trim();
            match entry.split_once('=') {
                Some((node, target)) => {
                    let node = node.trim();
                    let valid = !node.is_empty()
                        && node.len() <= 63
                        && !node.starts_with('-')
                        && node
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !valid {
                        return Err(format!(
                            "SSH host '{entry}': '{node}' is not a Proxmox VE node name \
                             (NODE=HOST[:PORT])"
                        ));
                    }
                    let target = SshTarget::parse(target)?;
                    if hosts.nodes.insert(node.to_string(), target).is_some() {
                        return Err(format!("SSH host for node '{node}' given twice"));
                    }
                }
                None => {
                    if hosts.default.is_some() {
                        return Err(
                            "only one SSH host can be the default; name the node of the others \
                             (NODE=HOST[:PORT])"
                                .into(),
                        );
                    }
                    hosts.default = Some(SshTarget::parse(entry)?);
                }
            }
        }
        if hosts.default.is_none() && hosts.nodes.is_empty() {
            return Err("at least one SSH host (HOST[:PORT] or NODE=HOST[:PORT]) is needed".into());
        }
        Ok(hosts)
    }

    /// The sshd of `node`: its own entry, else the default.
    pub fn for_node(&self, node: &str) -> Option<&SshTarget> {
        self.nodes.get(node).or(self.default.as_ref())
    }

    fn all(&self) -> impl Iterator<Item = &SshTarget> {
        self.default.iter().chain(self.nodes.values())
    }
}

fn check_user(user: &str) -> Result<(), String> {
    let valid = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!("SSH user '{user}' is not a valid account name"))
    }
}

/// Checks that the key is a private key ssh can use without a terminal.
/// Never quotes the key.
pub fn check_private_key(key: &str) -> Result<(), String> {
    let key = key.trim();
    let first = key.lines().next().unwrap_or_default().trim();
    let looks_private = first.starts_with("-----BEGIN ")
        && first.ends_with("PRIVATE KEY-----")
        && key.lines().last().is_some_and(|l| {
            let l = l.trim();
            l.starts_with("-----END ") && l.ends_with("PRIVATE KEY-----")
        });
    if !looks_private {
        return Err(
            "the SSH key must be a private key in OpenSSH or PEM form (-----BEGIN OPENSSH \
             PRIVATE KEY-----...), not a public key"
                .into(),
        );
    }
    if first.contains("ENCRYPTED") || key.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(
            "the SSH key has a passphrase; advps runs ssh without a terminal, so give it a key \
             without one"
                .into(),
        );
    }
    Ok(())
}

/// Checks the known_hosts text: at least one host key, every line of the
/// form `[@marker] NAMES KEYTYPE KEY`, and, when the names are written out
/// plainly, one for each host (ssh uses no key listed under another name).
pub fn check_known_hosts(known_hosts: &str, hosts: &SshHosts) -> Result<(), String> {
    let entries: Vec<(usize, &str)> = known_hosts
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if entries.is_empty() {
        return Err(
            "the known_hosts file has no host key (on the node, `ssh-keygen -lf \
             /etc/ssh/ssh_host_ed25519_key.pub` shows the fingerprint to check `ssh-keyscan \
             HOST` against)"
                .into(),
        );
    }
    let mut names = Vec::new();
    let mut checkable = true;
    for (number, line) in entries {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (marked, fields) = match fields.first() {
            Some(f) if f.starts_with('@') => (true, &fields[1..]),
            _ => (false, &fields[..]),
        };
        if fields.len() < 3 {
            return Err(format!(
                "known_hosts line {number} is not a host key line (NAMES KEYTYPE KEY)"
            ));
        }
        // Hashed names, patterns and certificate authorities cannot be
        // matched here; ssh checks them at the call.
        if marked || fields[0].starts_with('|') || fields[0].contains(['*', '?', '!']) {
            checkable = false;
        }
        names.extend(fields[0].split(','));
    }
    if checkable {
        for target in hosts.all() {
            let name = target.known_hosts_name();
            if !names.contains(&name.as_str()) {
                return Err(format!(
                    "the known_hosts file has no key for {name}, the name ssh looks {target} up \
                     under"
                ));
            }
        }
    }
    Ok(())
}

/// The remote command that sets passwords in container `vmid`.
pub fn chpasswd_command(vmid: u64) -> Vec<String> {
    vec![
        "pct".into(),
        "exec".into(),
        vmid.to_string(),
        "--".into(),
        "chpasswd".into(),
    ]
}

/// The arguments of one ssh call: no configuration file, no agent, no
/// prompt, only the given key and host keys, then `remote` as the command.
pub fn ssh_arguments(
    user: &str,
    target: &SshTarget,
    identity: &Path,
    known_hosts: &Path,
    remote: &[String],
) -> Vec<OsString> {
    let mut known_hosts_option = OsString::from("UserKnownHostsFile=\"");
    // Quoted: the option takes a list of files separated by spaces.
    known_hosts_option.push(known_hosts);
    known_hosts_option.push("\"");
    let mut args: Vec<OsString> = vec!["-F".into(), "/dev/null".into(), "-T".into()];
    for option in [
        "BatchMode=yes".into(),
        "StrictHostKeyChecking=yes".into(),
        known_hosts_option,
        "GlobalKnownHostsFile=/dev/null".into(),
        "IdentitiesOnly=yes".into(),
        "IdentityAgent=none".into(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}").into(),
        "LogLevel=ERROR".into(),
    ] {
        args.push("-o".into());
        args.push(option);
    }
    args.push("-i".into());
    args.push(identity.into());
    args.push("-p".into());
    args.push(target.port.to_string().into());
    args.push("-l".into());
    args.push(user.into());
    args.push(target.host.clone().into());
    args.push("--".into());
    args.extend(remote.iter().map(OsString::from));
    args
}

/// What `chpasswd` reads: one `USER:PASSWORD` line.
fn chpasswd_input(user: &str, password: &str) -> DriverResult<String> {
    if password.is_empty() || password.contains(['\n', '\r', '\0']) {
        return Err(DriverError::Engine(
            "a password for chpasswd must be one non-empty line".into(),
        ));
    }
    Ok(format!("{user}:{password}\n"))
}

/// Error output cut down to what says why: no banner, no file names of
/// the call's private directory (nor the line announcing one), at most a
/// few lines and [`MESSAGE_LIMIT`] characters, and never the password.
/// Empty when nothing is left.
pub fn summarize_output(output: &str, password: &str, private_dir: Option<&Path>) -> String {
    let dir = private_dir.map(|d| d.to_string_lossy().into_owned());
    let all: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@'))
        .collect();
    let private = |l: &str| dir.as_deref().is_some_and(|d| l.contains(d));
    let lines: Vec<&str> = all
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let announces_private = l.ends_with(':') && all.get(i + 1).is_some_and(|n| private(n));
            !private(l) && !announces_private
        })
        .map(|(_, l)| *l)
        .collect();
    let mut text = lines[lines.len().saturating_sub(3)..].join(" ");
    if !password.is_empty() {
        text = text.replace(password, "<redacted>");
    }
    if text.chars().count() > MESSAGE_LIMIT {
        text = text.chars().take(MESSAGE_LIMIT).collect::<String>() + "…";
    }
    text
}

/// Whether an exit status of 255 came from ssh itself: ssh uses 255 for its
/// own failures, but a remote Perl program such as `pct` also exits 255
/// when it dies, so the message decides.
pub fn is_ssh_failure(stderr: &str) -> bool {
    const SSH_MESSAGES: &[&str] = &[
        "ssh:",
        "host key verification failed",
        "remote host identification has changed",
        "permission denied (",
        "connection closed by",
        "connection reset by",
        "connection timed out",
        "connection refused",
        "kex_exchange_identification",
        "banner exchange",
        "no route to host",
        "could not resolve hostname",
        "too many authentication failures",
        "load key",
        "unprotected private key file",
        "bad owner or permissions",
        "unable to negotiate",
        "received disconnect",
        "disconnected from",
        "client_loop",
        "broken pipe",
    ];
    let lower = stderr.to_ascii_lowercase();
    lower.trim().is_empty() || SSH_MESSAGES.iter().any(|m| lower.contains(m))
}

/// Maps a finished ssh call to the driver's vocabulary. `summary` is what
/// the call printed, summarized. Only ssh's own failures name the SSH
/// account and host (`destination`): the engine's refusals reach the API's
/// clients, who have no business knowing them.
pub fn classify_exit(
    code: Option<i32>,
    stderr_raw: &str,
    summary: &str,
    node: &str,
    destination: &str,
    vmid: u64,
) -> DriverResult<()> {
    let summary = if summary.is_empty() {
        "no error output"
    } else {
        summary
    };
    match code {
        Some(0) => Ok(()),
        Some(255) if is_ssh_failure(stderr_raw) => {
            let lower = stderr_raw.to_ascii_lowercase();
            let hint = if lower.contains("host key") || lower.contains("host identification") {
                " (the node's SSH host key is not one registered with --ssh-known-hosts)"
            } else if lower.contains("permission denied") {
                " (the node did not accept the key registered with --ssh-key)"
            } else {
                ""
            };
            Err(DriverError::Unreachable(format!(
                "SSH to node {node} ({destination}) failed: {summary}{hint}"
            )))
        }
        // The container stopped between the power check and the call.
        Some(_) if stderr_raw.to_ascii_lowercase().contains("not running") => {
            Err(DriverError::NotRunning)
        }
        Some(code) => Err(DriverError::Engine(format!(
            "`pct exec {vmid} -- chpasswd` on node {node} failed (exit {code}): {summary}"
        ))),
        None => Err(DriverError::Engine(format!(
            "ssh to node {node} was killed by a signal"
        ))),
    }
}

/// Runs `pct exec` on the cluster's nodes over SSH.
#[derive(Clone)]
pub struct PctExec {
    user: String,
    hosts: SshHosts,
    private_key: String,
    known_hosts: String,
    timeout: Duration,
    program: PathBuf,
}

/// Never prints the private key.
impl fmt::Debug for PctExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PctExec")
            .field("user", &self.user)
            .field("hosts", &self.hosts)
            .field("private_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PctExec {
    /// Checks and parses the stored settings; nothing is run here.
    pub fn new(settings: &PveSsh) -> Result<PctExec, String> {
        check_user(&settings.user)?;
        let hosts = SshHosts::parse(&settings.hosts)?;
        check_private_key(&settings.private_key)?;
        check_known_hosts(&settings.known_hosts, &hosts)?;
        let mut private_key = settings.private_key.trim().to_string();
        // OpenSSH refuses a key file whose last line has no newline.
        private_key.push('\n');
        let mut known_hosts = settings.known_hosts.trim().to_string();
        known_hosts.push('\n');
        Ok(PctExec {
            user: settings.user.clone(),
            hosts,
            private_key,
            known_hosts,
            timeout: PCT_EXEC_TIMEOUT,
            program: PathBuf::from("ssh"),
        })
    }

    /// How long a call may take before ssh is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> PctExec {
        self.timeout = timeout;
        self
    }

    /// The OpenSSH client to run (`ssh`, found on `PATH`, by default).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> PctExec {
        self.program = program.into();
        self
    }

    /// Which sshd serves which node.
    pub fn hosts(&self) -> &SshHosts {
        &self.hosts
    }

    /// The sshd of `node`, or why there is none.
    pub fn target_for(&self, node: &str) -> DriverResult<&SshTarget> {
        self.hosts.for_node(node).ok_or_else(|| {
            DriverError::Unsupported(format!(
                "no SSH host is registered for Proxmox VE node '{node}', where the container \
                 runs (register NODE=HOST[:PORT] with --ssh-host)"
            ))
        })
    }

    /// Sets the password of `username` in running container `vmid` on
    /// `node`.
    pub async fn set_password(
        &self,
        node: &str,
        vmid: u64,
        username: &str,
        password: &str,
    ) -> DriverResult<()> {
        crate::check_username(username)?;
        let input = chpasswd_input(username, password)?;
        let target = self.target_for(node)?;
        let destination = format!("{}@{target}", self.user);
        let dir = KeyFiles::create(&self.private_key, &self.known_hosts)?;
        let args = ssh_arguments(
            &self.user,
            target,
            &dir.identity,
            &dir.known_hosts,
            &chpasswd_command(vmid),
        );
        let mut command = Command::new(&self.program);
        command
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DriverError::Unsupported(format!(
                    "the OpenSSH client ('{}') is not installed where advps runs; install \
                     openssh-client to set container passwords through `pct exec`",
                    self.program.display()
                ))
            } else {
                DriverError::Engine(format!("cannot run '{}': {e}", self.program.display()))
            }
        })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let run = async move {
            // A write error means ssh exited early; its status says why.
            let _ = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
            child.wait_with_output().await
        };
        // On the deadline the child is dropped, which kills it.
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                DriverError::Timeout(format!("`pct exec {vmid}` on node {node} ({destination})"))
            })?
            .map_err(|e| DriverError::Engine(format!("ssh to node {node}: {e}")))?;
        let stderr_raw = String::from_utf8_lossy(&output.stderr);
        let mut summary = summarize_output(&stderr_raw, password, Some(dir.dir.path()));
        if summary.is_empty() {
            // pct passes on what chpasswd printed, wherever it printed it.
            let stdout = String::from_utf8_lossy(&output.stdout);
            summary = summarize_output(&stdout, password, Some(dir.dir.path()));
        }
        classify_exit(
            output.status.code(),
            &stderr_raw,
            &summary,
            node,
            &destination,
            vmid,
        )
    }
}

/// The key and host keys of one call, in a directory only this user can
/// read, removed when dropped.
struct KeyFiles {
    dir: PrivateDir,
    identity: PathBuf,
    known_hosts: PathBuf,
}

impl KeyFiles {
    fn create(private_key: &str, known_hosts: &str) -> DriverResult<KeyFiles> {
        let failed = |e: std::io::Error| {
            DriverError::Engine(format!(
                "cannot write the SSH key to a temporary directory: {e}"
            ))
        };
        let dir = PrivateDir::create("advps-ssh-").map_err(failed)?;
        let identity = dir.write("id", private_key, 0o600).map_err(failed)?;
        let known_hosts = dir
            .write("known_hosts", known_hosts, 0o600)
            .map_err(failed)?;
        Ok(KeyFiles {
            dir,
            identity,
            known_hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n\
                       -----END OPENSSH PRIVATE KEY-----\n";
    const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE";

    fn target(host: &str, port: u16) -> SshTarget {
        SshTarget {
            host: host.into(),
            port,
        }
    }

    fn settings(hosts: &[&str], known_hosts: &str) -> PveSsh {
        PveSsh {
            user: "root".into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            private_key: KEY.into(),
            known_hosts: known_hosts.into(),
        }
    }

    #[test]
    fn hosts_parse_with_and_without_ports() {
        assert_eq!(
            SshTarget::parse("pve1.example.net").unwrap(),
            target("pve1.example.net", 22)
        );
        assert_eq!(
            SshTarget::parse("10.0.0.2:2222").unwrap(),
            target("10.0.0.2", 2222)
        );
        assert_eq!(SshTarget::parse("fd00::2").unwrap(), target("fd00::2", 22));
        assert_eq!(
            SshTarget::parse("[fd00::2]:2200").unwrap(),
            target("fd00::2", 2200)
        );
        assert_eq!(
            SshTarget::parse("[fd00::2]").unwrap(),
            target("fd00::2", 22)
        );
        for bad in [
            "",
            "host:",
            "host:0",
            "host:65536",
            "host:ssh",
            "-oProxyCommand=x",
            "a b",
            "[fd00::2",
            "[fd00::2]x",
            "fd00::zz",
            "user@host",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(target("10.0.0.2", 22).to_string(), "10.0.0.2:22");
        assert_eq!(target("fd00::2", 22).to_string(), "[fd00::2]:22");
        assert_eq!(target("10.0.0.2", 22).known_hosts_name(), "10.0.0.2");
        assert_eq!(
            target("10.0.0.2", 2222).known_hosts_name(),
            "[10.0.0.2]:2222"
        );
    }

    #[test]
    fn each_node_gets_its_own_host_or_the_default() {
        let hosts = SshHosts::parse(&["10.0.0.1", "pve2=10.0.0.2:2222"]).unwrap();
        assert_eq!(hosts.for_node("pve2"), Some(&target("10.0.0.2", 2222)));
        assert_eq!(hosts.for_node("pve1"), Some(&target("10.0.0.1", 22)));
        assert_eq!(hosts.for_node("pve3"), Some(&target("10.0.0.1", 22)));

        let only_named = SshHosts::parse(&["pve1=10.0.0.1"]).unwrap();
        assert_eq!(only_named.for_node("pve1"), Some(&target("10.0.0.1", 22)));
        assert_eq!(only_named.for_node("pve2"), None);

        let empty: [&str; 0] = [];
        for bad in [
            &empty[..],
            &["10.0.0.1", "10.0.0.2"],
            &["pve1=10.0.0.1", "pve1=10.0.0.2"],
            &["=10.0.0.1"],
            &["-x=10.0.0.1"],
            &["pve 1=10.0.0.1"],
            &["pve1=bad host"],
        ] {
            assert!(SshHosts::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_arguments_pin_everything_and_carry_no_password() {
        let args = ssh_arguments(
            "root",
            &target("10.0.0.2", 2222),
            Path::new("/tmp/advps-ssh-x/id"),
            Path::new("/tmp/advps-ssh-x/known_hosts"),
            &chpasswd_command(101),
        );
        let args: Vec<String> = args.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-F",
                "/dev/null",
                "-T",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=\"/tmp/advps-ssh-x/known_hosts\"",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                "-i",
                "/tmp/advps-ssh-x/id",
                "-p",
                "2222",
                "-l",
                "root",
                "10.0.0.2",
                "--",
                "pct",
                "exec",
                "101",
                "--",
                "chpasswd",
            ]
        );
        assert_eq!(chpasswd_input("root", "Pw1:x").unwrap(), "root:Pw1:x\n");
        for bad in ["", "a\nroot:other", "a\r", "a\0"] {
            assert!(chpasswd_input("root", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settings_are_checked_without_quoting_the_key() {
        let known = format!("10.0.0.1 {HOST_KEY}\n[10.0.0.2]:2222 {HOST_KEY}\n");
        let good = settings(&["10.0.0.1", "pve2=10.0.0.2:2222"], &known);
        assert!(good.validate().is_ok(), "{:?}", good.validate());

        // A host ssh would look up under a name the file does not list.
        let missing = settings(
            &["10.0.0.1", "pve2=10.0.0.2:2222"],
            &format!("10.0.0.1 {HOST_KEY}"),
        );
        let message = missing.validate().unwrap_err();
        assert!(message.contains("[10.0.0.2]:2222"), "{message}");
        // Hashed names cannot be checked here, so they are accepted.
        let hashed = settings(&["10.0.0.1"], &format!("|1|abc=|def= {HOST_KEY}"));
        assert!(hashed.validate().is_ok());

        let mut public = good.clone();
        public.private_key = format!("{HOST_KEY} root@pve");
        assert!(public.validate().unwrap_err().contains("private key"));
        let mut encrypted = good.clone();
        encrypted.private_key = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIsecret\n\
                                 -----END ENCRYPTED PRIVATE KEY-----"
            .into();
        let message = encrypted.validate().unwrap_err();
        assert!(message.contains("passphrase"), "{message}");
        assert!(!message.contains("MIIsecret"), "{message}");
        let mut no_keys = good.clone();
        no_keys.known_hosts = "# nothing\n\n".into();
        assert!(no_keys.validate().unwrap_err().contains("no host key"));
        let mut bad_line = good.clone();
        bad_line.known_hosts = "10.0.0.1 ssh-ed25519".into();
        assert!(bad_line.validate().unwrap_err().contains("line 1"));
        let mut bad_user = good.clone();
        bad_user.user = "-oProxyCommand=x".into();
        assert!(bad_user.validate().is_err());

        let shown = format!("{good:?} {:?}", PctExec::new(&good).unwrap());
        assert!(!shown.contains("b3BlbnNzaC1rZXktdjEAAAAA"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn stored_settings_default_to_root_and_refuse_unknown_fields() {
        let parsed: PveSsh =
            serde_json::from_str(r#"{"hosts":["10.0.0.1"],"private_key":"k","known_hosts":"h"}"#)
                .unwrap();
        assert_eq!(parsed.user, "root");
        assert!(serde_json::from_str::<PveSsh>(
            r#"{"hosts":[],"private_key":"k","known_hosts":"h","password":"x"}"#
        )
        .is_err());
    }

    #[test]
    fn failures_are_told_apart_and_cut_short() {
        let banner = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
            Add correct host key in /tmp/advps-ssh-q/known_hosts to get rid of this message.\n\
            Offending ED25519 key in /tmp/advps-ssh-q/known_hosts:1\n\
            \x20 remove with:\n\
            \x20 ssh-keygen -f \"/tmp/advps-ssh-q/known_hosts\" -R \"[127.0.0.1]:2222\"\n\
            Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n\
            Host key verification failed.\n";
        let summary = summarize_output(banner, "pw", Some(Path::new("/tmp/advps-ssh-q")));
        assert!(!summary.contains("/tmp/advps-ssh-q"), "{summary}");
        assert!(!summary.contains('@'), "{summary}");
        assert!(!summary.contains("remove with"), "{summary}");
        assert!(
            summary.contains("Host key for [127.0.0.1]:2222 has changed"),
            "{summary}"
        );
        assert!(
            summary.ends_with("Host key verification failed."),
            "{summary}"
        );
        match classify_exit(Some(255), banner, &summary, "pve2", "root@10.0.0.2:22", 101) {
            Err(DriverError::Unreachable(m)) => {
                assert!(m.contains("host key"), "{m}");
                assert!(m.contains("--ssh-known-hosts"), "{m}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        let refused = "ssh: connect to host 10.0.0.2 port 22: Connection refused\n";
        assert!(matches!(
            classify_exit(Some(255), refused, refused, "pve2", "root@10.0.0.2:22", 101),
            Err(DriverError::Unreachable(_))
        ));
        let denied = "root@10.0.0.2: Permission denied (publickey).\n";
        assert!(matches!(
            classify_exit(Some(255), denied, denied, "pve2", "root@10.0.0.2:22", 101),
            Err(DriverError::Unreachable(m)) if m.contains("--ssh-key")
        ));

        // pct dies with 255 too: its message makes it the engine's refusal.
        let locked = "CT 101 is locked (backup)\n";
        assert!(matches!(
            classify_exit(Some(255), locked, locked.trim(), "pve2", "root@10.0.0.2:22", 101),
            Err(DriverError::Engine(m)) if m.contains("pct exec 101") && m.contains("locked")
        ));
        let missing = "Configuration file 'nodes/pve2/lxc/101.conf' does not exist";
        assert!(matches!(
            classify_exit(Some(2), missing, missing, "pve2", "root@10.0.0.2:22", 101),
            Err(DriverError::Engine(m)) if m.contains("exit 2") && m.contains("does not exist")
                && !m.contains("10.0.0.2")
        ));
        let stopped = "CT 101 not running\n";
        assert_eq!(
            classify_exit(Some(2), stopped, stopped, "pve2", "root@10.0.0.2:22", 101),
            Err(DriverError::NotRunning)
        );
        assert_eq!(
            classify_exit(Some(0), "", "", "pve2", "root@10.0.0.2:22", 101),
            Ok(())
        );

        // Long output is cut, and the password never shows.
        let long = format!("chpasswd: bad line Secr3tPw {}", "x".repeat(1000));
        let summary = summarize_output(&long, "Secr3tPw", None);
        assert!(!summary.contains("Secr3tPw"), "{summary}");
        assert!(summary.chars().count() <= MESSAGE_LIMIT + 1, "{summary}");
        assert_eq!(summarize_output("\n \n", "pw", None), "");
    }
}
