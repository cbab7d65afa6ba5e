//! Talking to libvirt through its own command-line client, `virsh`.
//!
//! Every call is one `virsh -c URI ...` child process driven by tokio (the
//! async runtime threads never block on it), killed when its deadline
//! passes. virsh speaks libvirt's remote protocol for advps, over the local
//! socket, SSH or TLS, so advps needs no C library at build time.
//!
//! Calls that carry a secret (a root password for the guest agent) never put
//! it on a command line, where any local user could read it in
//! `/proc/PID/cmdline`: they are written to virsh's standard input, which
//! virsh reads as a script of commands.
//!
//! virsh's failures are sorted into [`DriverError`]s by their message: no
//! connection is [`DriverError::Unreachable`] ("the hypervisor did not
//! answer"), an unknown domain [`DriverError::NotFound`], a guest agent that
//! is absent or silent [`AgentError`] through [`is_agent_failure`].
//!
//! A remote node can come with sealed credentials ([`LibvirtCredentials`]):
//! an SSH key and the host's known_hosts lines for `qemu+ssh://`, or a CA,
//! client certificate and key for `qemu+tls://`. Each virsh call (and each
//! console) writes them to a fresh directory only this user can read
//! ([`Connection`]), points the URI at it, and removes it when the call
//! ends, so they are on disk only while virsh runs.
//!
//! Why a wrapper as libvirt's `command=` for SSH: libvirt's `ssh` transport
//! runs the OpenSSH client with only `-p`, `-l`, `-i KEYFILE` (`keyfile=`),
//! `-T -e none`, `-o BatchMode=yes` (`no_tty=1`) and
//! `-o StrictHostKeyChecking=no` (`no_verify=1`); its `known_hosts=` and
//! `known_hosts_verify=` parameters belong to the libssh and libssh2
//! transports alone, and it hands the client only a fixed list of
//! environment variables (PATH, HOME, SSH_AUTH_SOCK and a few more), none
//! of which carries ssh options. So nothing in a `qemu+ssh://` URI can make
//! ssh check the host key against our file and nothing else. `command=`
//! names the program libvirt runs instead of `ssh`: a short script in the
//! private directory that runs ssh with no configuration file, no agent, no
//! prompt, strict host key checking against the written known_hosts only,
//! and the written key only, followed by libvirt's own arguments (ssh keeps
//! the first value of an option, so libvirt cannot loosen ours). The
//! operator's URI stays `qemu+ssh://`, with the OpenSSH client their own
//! setup and the Proxmox VE nodes' `pct exec` already use; the libssh
//! transports (`qemu+libssh://`) are optional in libvirt's build and, with
//! `known_hosts_verify=normal`, ask through virsh's callback about a host
//! key they do not know instead of refusing it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::private_dir::PrivateDir;
use crate::proxmox::ssh::{check_known_hosts, check_private_key, SshHosts, SshTarget};
use crate::{DriverError, DriverResult};

/// How long one ordinary virsh call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the guest agent gets to answer one command.
pub const AGENT_TIMEOUT_SECS: u64 = 5;

/// How long ssh may take to connect (its own `ConnectTimeout`), well
/// within a call's deadline.
const SSH_CONNECT_TIMEOUT_SECS: u32 = 10;

/// A libvirt connection, as a URI for virsh.
#[derive(Debug, Clone)]
pub struct Virsh {
    uri: String,
    program: PathBuf,
    timeout: Duration,
    access: Option<Arc<Access>>,
}

/// A remote node's sealed credentials, kept as JSON in the node's
/// `credentials_enc` (encrypted with the data directory's key).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtCredentials {
    /// For `qemu+ssh://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<LibvirtSsh>,
    /// For `qemu+tls://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<LibvirtTls>,
}

/// The key advps logs in with and the host keys it accepts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtSsh {
    /// The private key, OpenSSH or PEM text, without a passphrase.
    pub private_key: String,
    /// known_hosts lines with the host's SSH host keys.
    pub known_hosts: String,
}

/// libvirt's TLS client files (PEM), as its `pkipath` directory holds them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtTls {
    /// The CA that signed libvirtd's server certificate (`cacert.pem`).
    pub ca_cert: String,
    /// The client certificate (`clientcert.pem`).
    pub client_cert: String,
    /// Its private key (`clientkey.pem`).
    pub client_key: String,
}

/// Never prints a key.
impl fmt::Debug for LibvirtCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibvirtCredentials")
            .field(
                "ssh",
                &self.ssh.as_ref().map(|s| {
                    format!(
                        "<key redacted>, {} known_hosts lines",
                        s.known_hosts.lines().count()
                    )
                }),
            )
            .field("tls", &self.tls.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl LibvirtCredentials {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("credentials serialize")
    }

    /// Parses stored credentials; the error never quotes them.
    pub fn from_json(json: &str) -> Result<LibvirtCredentials, String> {
        serde_json::from_str(json)
            .map_err(|_| "the stored libvirt credentials are not readable".to_string())
    }

    /// Whether there is anything to write for a call.
    pub fn is_empty(&self) -> bool {
        self.ssh.is_none() && self.tls.is_none()
    }
}

/// The URI parameters that sealed credentials set, or that would undo
/// them (a key file, host key checking turned off, another program).
const RESERVED_PARAMS: &[&str] = &[
    "command",
    "keyfile",
    "no_verify",
    "known_hosts",
    "known_hosts_verify",
    "sshauth",
    "pkipath",
];

/// The query parameter names of a URI, lower-cased.
fn query_params(uri: &str) -> Vec<String> {
    let Some((_, query)) = uri.split_once('?') else {
        return Vec::new();
    };
    query
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or_default().to_ascii_lowercase())
        .collect()
}

/// Where `qemu+ssh://[USER@]HOST[:PORT]/...` reaches sshd.
pub fn ssh_target_of(uri: &str) -> Result<SshTarget, String> {
    let rest = uri
        .strip_prefix("qemu+ssh://")
        .ok_or_else(|| format!("'{uri}' is not a qemu+ssh:// URI"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return Err(format!(
            "'{uri}' names no host (qemu+ssh://USER@HOST[:PORT]/system)"
        ));
    }
    SshTarget::parse(host_port)
}

/// Percent-encodes a URI parameter value (libvirt decodes it).
fn encode_param(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `uri` with `name=value` added to its query.
fn with_param(uri: &str, name: &str, value: &str) -> String {
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{name}={}", encode_param(value))
}

fn check_pem(what: &str, text: &str, label: &str) -> Result<(), String> {
    let text = text.trim();
    let begins = text.lines().next().is_some_and(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ") && l.contains(label) && l.ends_with("-----")
    });
    let ends = text.lines().last().is_some_and(|l| {
        let l = l.trim();
        l.starts_with("-----END ") && l.contains(label) && l.ends_with("-----")
    });
    if begins && ends {
        Ok(())
    } else {
        Err(format!(
            "the {what} must be PEM text (-----BEGIN {label}-----)"
        ))
    }
}

/// Text as it goes to a file: trimmed, with the final newline OpenSSH
/// needs for a key.
fn file_text(text: &str) -> String {
    let mut text = text.trim().to_string();
    text.push('\n');
    text
}

/// What a connection writes for each call.
struct Access {
    credentials: LibvirtCredentials,
    ssh_program: PathBuf,
}

/// Never prints a key.
impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("credentials", &self.credentials)
            .field("ssh_program", &self.ssh_program)
            .finish()
    }
}

/// The URI one virsh process uses, and the private directory of files it
/// points at, removed when this is dropped.
pub struct Connection {
    uri: String,
    dir: Option<PrivateDir>,
}

impl Connection {
    /// The URI to give virsh, with `command=` or `pkipath=` when files were
    /// written.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The private directory, if credentials were written.
    pub fn private_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }
}

impl Access {
    /// Writes the files of one call and builds its URI.
    fn open(&self, base: &str) -> DriverResult<Connection> {
        let failed = |e: std::io::Error| {
            DriverError::Engine(format!(
                "cannot write the node's credentials to a private directory: {e}"
            ))
        };
        let dir = PrivateDir::create("advps-virsh-").map_err(failed)?;
        let dir_text = dir.path().to_str().unwrap_or_default().to_string();
        // The paths go into a shell script between single quotes.
        let unquotable = |text: &str| text.is_empty() || text.contains(['\'', '"', '\n', '\r']);
        if unquotable(&dir_text) || unquotable(&self.ssh_program.to_string_lossy()) {
            return Err(DriverError::Engine(format!(
                "the temporary directory {} or the ssh program {} has a name that cannot be \
                 quoted",
                dir.path().display(),
                self.ssh_program.display()
            )));
        }
        let write = |name: &str, text: &str, mode: u32| dir.write(name, text, mode);
        let mut uri = base.to_string();
        if let Some(ssh) = &self.credentials.ssh {
            write("id", &file_text(&ssh.private_key), 0o600).map_err(failed)?;
            write("known_hosts", &file_text(&ssh.known_hosts), 0o600).map_err(failed)?;
            let script = ssh_wrapper(&self.ssh_program, &dir_text);
            let wrapper = write("ssh", &script, 0o700).map_err(failed)?;
            uri = with_param(&uri, "command", &wrapper.to_string_lossy());
        }
        if let Some(tls) = &self.credentials.tls {
            write("cacert.pem", &file_text(&tls.ca_cert), 0o600).map_err(failed)?;
            write("clientcert.pem", &file_text(&tls.client_cert), 0o600).map_err(failed)?;
            write("clientkey.pem", &file_text(&tls.client_key), 0o600).map_err(failed)?;
            uri = with_param(&uri, "pkipath", &dir_text);
        }
        Ok(Connection {
            uri,
            dir: Some(dir),
        })
    }
}

/// The program libvirt runs instead of `ssh` (see the module's notes): the
/// OpenSSH client pinned to the files in `dir`, then libvirt's arguments.
pub fn ssh_wrapper(ssh_program: &Path, dir: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # ssh for virsh: this node's key and host keys only, never a prompt.\n\
         exec '{program}' -F /dev/null \
         -o BatchMode=yes \
         -o StrictHostKeyChecking=yes \
         -o 'UserKnownHostsFile=\"{dir}/known_hosts\"' \
         -o GlobalKnownHostsFile=/dev/null \
         -o IdentitiesOnly=yes \
         -o IdentityAgent=none \
         -o ConnectTimeout={SSH_CONNECT_TIMEOUT_SECS} \
         -o LogLevel=ERROR \
         -i '{dir}/id' \"$@\"\n",
        program = ssh_program.to_string_lossy(),
    )
}

/// The TLS files of a call as libvirt's messages name them (by their path
/// in the private directory), and the option each came from.
const TLS_FILES: &[(&str, &str)] = &[
    ("cacert.pem", "cacert.pem (--ca)"),
    ("clientcert.pem", "clientcert.pem (--client-cert)"),
    ("clientkey.pem", "clientkey.pem (--client-key)"),
];

/// Keeps virsh's error output free of the private directory: the TLS files
/// libvirt names (its own certificate failing against the CA, a key that
/// does not match) are named by the option they came from instead, the
/// other lines that name the directory (ssh's advice on editing the
/// known_hosts file there) are dropped, and so is the frame of ssh's host
/// key warning.
pub(super) fn scrub(stderr: &str, private_dir: Option<&Path>) -> String {
    let Some(dir) = private_dir.map(|d| d.to_string_lossy().into_owned()) else {
        return stderr.to_string();
    };
    stderr
        .lines()
        .map(|l| {
            TLS_FILES.iter().fold(l.to_string(), |line, (file, named)| {
                line.replace(&format!("{dir}/{file}"), named)
            })
        })
        .filter(|l| {
            let t = l.trim();
            !t.contains(&dir) && !t.starts_with("remove with:") && !t.starts_with("ssh-keygen -f")
        })
        .map(|l| l.trim().trim_matches('@').trim().to_string())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a guest command printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Whether a driver error says that the guest agent is missing or silent
/// (as opposed to the hypervisor itself).
pub fn is_agent_failure(error: &DriverError) -> bool {
    match error {
        DriverError::Engine(message) => message.starts_with(AGENT_PREFIX),
        _ => false,
    }
}

const AGENT_PREFIX: &str = "the guest agent does not answer";

/// A line of libvirt's own log that virsh printed on its standard error
/// (`2024-01-02 03:04:05.678+0000: 123: warning : func:42 : TEXT`): `None`
/// for another line, `Some(None)` for one to leave out (info, debug), and
/// `Some(Some(TEXT))` for a warning or an error, such as why a TLS
/// certificate failed its check.
fn libvirt_log_line(line: &str) -> Option<Option<&str>> {
    let (stamp, rest) = line.split_once(": ")?;
    let dated = stamp.len() > 19
        && stamp.as_bytes()[4] == b'-'
        && stamp.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    let (pid, rest) = rest.split_once(": ")?;
    if !dated || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (level, text) = rest.split_once(" : ")?;
    if !matches!(level.trim(), "warning" | "error") {
        return Some(None);
    }
    // The function and line that logged it, when given.
    let text = match text.split_once(" : ") {
        Some((place, after)) if !place.contains(' ') && place.contains(':') => after,
        _ => text,
    };
    Some(Some(text.trim()))
}

/// Sorts a virsh error message into a driver error.
pub fn classify(stderr: &str) -> DriverError {
    let message = stderr
        .lines()
        .filter_map(|l| libvirt_log_line(l).unwrap_or(Some(l)))
        .map(|l| l.trim().trim_start_matches("error: ").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let lower = message.to_ascii_lowercase();
    // TLS (qemu+tls://): which of the node's files to fix.
    if lower.contains("failed to verify peer's certificate") {
        return DriverError::Unreachable(format!(
            "the hypervisor did not answer: libvirtd's TLS certificate is not trusted: it must \
             be signed by the CA registered with --ca and name the endpoint's host ({message})"
        ));
    }
    if lower.contains("our own certificate") && lower.contains("failed validation") {
        return DriverError::Unreachable(format!(
            "the hypervisor did not answer: the client certificate registered with \
             --client-cert was not issued by the CA registered with --ca (libvirt checks its \
             own certificate against that CA before it connects: --ca must hold the CA of \
             libvirtd's certificate and the client certificate's issuer) ({message})"
        ));
    }
    if lower.contains("unable to read tls confirmation")
        || lower.contains("server verification (of our certificate")
    {
        return DriverError::Unreachable(format!(
            "the hypervisor did not answer: libvirtd refused the client certificate registered \
             with --client-cert: it must be issued by a CA libvirtd trusts (its ca_file) and \
             pass its tls_allowed_dn_list, if it has one ({message})"
        ));
    }
    if lower.contains("certificate and the given key do not match") {
        return DriverError::Unreachable(format!(
            "the hypervisor did not answer: the client key registered with --client-key is not \
             the key of the client certificate registered with --client-cert ({message})"
        ));
    }
    if lower.contains("host key verification failed")
        || lower.contains("remote host identification has changed")
    {
        return DriverError::Unreachable(format!(
            "the hypervisor did not answer: the host's SSH host key is not one its known_hosts \
             holds (registered with --ssh-known-hosts) ({message})"
        ));
    }
    if lower.contains("permission denied (publickey") {
        return DriverError::Unreachable(format!(
            "the hypervisor did not answer: the host did not accept the SSH key registered with \
             --ssh-key ({message})"
        ));
    }
    if lower.contains("failed to connect to the hypervisor")
        || lower.contains("failed to connect socket")
        || lower.contains("cannot recv data")
        || lower.contains("end of file while reading data")
        || lower.contains("no connection driver available")
        || lower.contains("cannot write data")
    {
        DriverError::Unreachable(format!("the hypervisor did not answer: {message}"))
    } else if lower.contains("domain not found")
        || lower.contains("failed to get domain")
        || lower.contains("no domain with matching")
    {
        DriverError::NotFound
    } else if lower.contains("guest agent is not")
        || lower.contains("qemu guest agent is not")
        || lower.contains("guest agent command failed")
        || lower.contains("unable to execute qemu agent command")
        || lower.contains("agent is not connected")
        || lower.contains("agent response")
        || lower.contains("guest agent not available")
    {
        DriverError::Engine(format!("{AGENT_PREFIX} ({message})"))
    } else if lower.contains("domain is not running") {
        DriverError::NotRunning
    } else if lower.contains("domain is already active") || lower.contains("already running") {
        DriverError::AlreadyRunning
    } else {
        DriverError::Engine(message)
    }
}

/// Quotes one word for virsh's own command parser (used for the script on
/// standard input): single quotes, with none inside.
fn quote_word(word: &str) -> DriverResult<String> {
    if word.contains(['\'', '\n', '\r']) {
        return Err(DriverError::Engine(
            "a value for the hypervisor holds a quote or a line break".into(),
        ));
    }
    Ok(format!("'{word}'"))
}

impl Virsh {
    pub fn new(uri: &str) -> Virsh {
        Virsh {
            uri: uri.to_string(),
            program: PathBuf::from(
                std::env::var_os("ADVPS_VIRSH").unwrap_or_else(|| "virsh".into()),
            ),
            timeout: CALL_TIMEOUT,
            access: None,
        }
    }

    /// The same connection with a remote node's sealed credentials, checked
    /// against the URI: an SSH key and known_hosts lines only for
    /// `qemu+ssh://` (with a host key for the URI's host and port), TLS
    /// files only for `qemu+tls://`, and no URI parameter that would set
    /// the same thing another way. Never quotes a key.
    pub fn with_credentials(mut self, credentials: &LibvirtCredentials) -> Result<Virsh, String> {
        if credentials.is_empty() {
            self.access = None;
            return Ok(self);
        }
        if credentials.ssh.is_some() && credentials.tls.is_some() {
            return Err("a libvirt node takes SSH or TLS credentials, not both".into());
        }
        if self.uri.contains('#') {
            return Err(format!("'{}': a connection URI has no fragment", self.uri));
        }
        if let Some(name) = query_params(&self.uri)
            .into_iter()
            .find(|n| RESERVED_PARAMS.contains(&n.as_str()))
        {
            return Err(format!(
                "'{}': the URI parameter '{name}' cannot be combined with sealed credentials, \
                 which set how the host is reached",
                self.uri
            ));
        }
        let mut stored = LibvirtCredentials::default();
        if let Some(ssh) = &credentials.ssh {
            let target = ssh_target_of(&self.uri).map_err(|e| {
                format!("an SSH key and known_hosts apply to qemu+ssh:// URIs only ({e})")
            })?;
            check_private_key(&ssh.private_key)?;
            let hosts = SshHosts {
                default: Some(target),
                nodes: Default::default(),
            };
            check_known_hosts(&ssh.known_hosts, &hosts)?;
            stored.ssh = Some(LibvirtSsh {
                private_key: file_text(&ssh.private_key),
                known_hosts: file_text(&ssh.known_hosts),
            });
        }
        if let Some(tls) = &credentials.tls {
            if !self.uri.starts_with("qemu+tls://") {
                return Err(format!(
                    "'{}': a CA, client certificate and key apply to qemu+tls:// URIs only",
                    self.uri
                ));
            }
            check_pem("CA certificate", &tls.ca_cert, "CERTIFICATE")?;
            check_pem("client certificate", &tls.client_cert, "CERTIFICATE")?;
            check_pem("client key", &tls.client_key, "PRIVATE KEY")?;
            stored.tls = Some(tls.clone());
        }
        self.access = Some(Arc::new(Access {
            credentials: stored,
            ssh_program: PathBuf::from("ssh"),
        }));
        Ok(self)
    }

    /// Whether calls write sealed credentials for virsh.
    pub fn has_credentials(&self) -> bool {
        self.access.is_some()
    }

    /// The URI and private files of one virsh process (see [`Connection`]):
    /// without credentials, the URI as it is.
    pub fn connection(&self) -> DriverResult<Connection> {
        match &self.access {
            None => Ok(Connection {
                uri: self.uri.clone(),
                dir: None,
            }),
            Some(access) => access.open(&self.uri),
        }
    }

    /// The same connection with another per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Virsh {
        self.timeout = timeout;
        self
    }

    /// The node's URI as registered (without the parameters a call adds
    /// for its credentials).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The virsh program (`ADVPS_VIRSH`, else `virsh` on the PATH).
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A virsh command for one call, with the connection it needs kept
    /// alive until the call ends.
    fn command(&self) -> DriverResult<(Command, Connection)> {
        let connection = self.connection()?;
        let mut command = Command::new(&self.program);
        command
            .arg("-q")
            .arg("-c")
            .arg(connection.uri())
            .env("LC_ALL", "C")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok((command, connection))
    }

    /// Runs `virsh ARGS` and returns what it printed.
    pub async fn run(&self, args: &[&str]) -> DriverResult<String> {
        self.run_within(args, self.timeout).await
    }

    /// [`Virsh::run`] with its own deadline.
    pub async fn run_within(&self, args: &[&str], timeout: Duration) -> DriverResult<String> {
        let (mut command, connection) = self.command()?;
        command.args(args).stdin(Stdio::null());
        let what = args.first().copied().unwrap_or("virsh");
        let output = self.finish(command, None, what, timeout).await?;
        if output.0 {
            Ok(output.1)
        } else {
            Err(classify(&scrub(&output.2, connection.private_dir())))
        }
    }

    /// Runs one virsh command given as a script on standard input, so that
    /// its words (a password) are on no command line. virsh's script mode
    /// always exits 0, so an error is what it printed on stderr.
    pub async fn run_secret(&self, words: &[&str], timeout: Duration) -> DriverResult<String> {
        let mut line = String::new();
        for word in words {
            line.push_str(&quote_word(word)?);
            line.push(' ');
        }
        line.push('\n');
        let (mut command, connection) = self.command()?;
        command.stdin(Stdio::piped());
        let what = words.first().copied().unwrap_or("virsh");
        let (_, stdout, stderr) = self.finish(command, Some(line), what, timeout).await?;
        if stderr.lines().any(|l| l.trim_start().starts_with("error:")) {
            return Err(classify(&scrub(&stderr, connection.private_dir())));
        }
        // The script mode echoes a prompt per command; the answer is the rest.
        Ok(stdout
            .lines()
            .filter(|l| !l.starts_with("virsh #"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    async fn finish(
        &self,
        mut command: Command,
        stdin: Option<String>,
        what: &str,
        timeout: Duration,
    ) -> DriverResult<(bool, String, String)> {
        let mut child = command.spawn().map_err(|e| {
            DriverError::Unreachable(format!(
                "cannot run {} (the libvirt client, package libvirt-clients): {e}",
                self.program.display()
            ))
        })?;
        let run = async {
            if let Some(input) = stdin {
                if let Some(mut pipe) = child.stdin.take() {
                    pipe.write_all(input.as_bytes()).await?;
                    pipe.shutdown().await?;
                }
            }
            child.wait_with_output().await
        };
        match tokio::time::timeout(timeout, run).await {
            Err(_) => Err(DriverError::Timeout(format!(
                "virsh {what} did not finish within {} s",
                timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(DriverError::Unreachable(format!("virsh {what}: {e}"))),
            Ok(Ok(output)) => Ok((
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )),
        }
    }

    /// Sends one command to the domain's guest agent and returns its
    /// `return` value.
    pub async fn agent(&self, domain: &str, command: &Value) -> DriverResult<Value> {
        self.agent_within(domain, command, AGENT_TIMEOUT_SECS).await
    }

    /// [`Virsh::agent`] with its own wait for the agent's answer, in seconds.
    pub async fn agent_within(
        &self,
        domain: &str,
        command: &Value,
        agent_secs: u64,
    ) -> DriverResult<Value> {
        let timeout = agent_secs.to_string();
        let text = command.to_string();
        let out = self
            .run_within(
                &["qemu-agent-command", domain, "--timeout", &timeout, &text],
                Duration::from_secs(agent_secs + 10),
            )
            .await?;
        agent_return(&out)
    }

    /// [`Virsh::agent`] for a command that holds a secret.
    pub async fn agent_secret(&self, domain: &str, command: &Value) -> DriverResult<Value> {
        let timeout = AGENT_TIMEOUT_SECS.to_string();
        // No single quote can reach virsh's parser: JSON lets it be escaped.
        let text = command.to_string().replace('\'', "\\u0027");
        let out = self
            .run_secret(
                &["qemu-agent-command", domain, "--timeout", &timeout, &text],
                Duration::from_secs(AGENT_TIMEOUT_SECS + 10),
            )
            .await?;
        agent_return(&out)
    }

    /// Runs a program in the guest through the agent and waits for it,
    /// feeding `input` on its standard input (scripts and values travel
    /// there, not on command lines).
    pub async fn guest_exec(
        &self,
        domain: &str,
        path: &str,
        args: &[&str],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> DriverResult<ExecOutput> {
        let mut arguments = json!({ "path": path, "arg": args, "capture-output": true });
        if let Some(input) = input {
            arguments["input-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(input));
        }
        let started = self
            .agent(
                domain,
                &json!({ "execute": "guest-exec", "arguments": arguments }),
            )
            .await?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| DriverError::Engine(format!("guest-exec gave no pid: {started}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let status = self
                .agent(
                    domain,
                    &json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } }),
                )
                .await?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                let decode = |key: &str| {
                    status
                        .get(key)
                        .and_then(Value::as_str)
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                };
                return Ok(ExecOutput {
                    exit_code: status
                        .get("exitcode")
                        .and_then(Value::as_i64)
                        .or_else(|| {
                            status
                                .get("signal")
                                .and_then(Value::as_i64)
                                .map(|s| 128 + s)
                        })
                        .unwrap_or(-1),
                    stdout: decode("out-data"),
                    stderr: decode("err-data"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Timeout(format!(
                    "{path} in the guest did not finish within {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// The `return` member of a guest agent's answer.
fn agent_return(out: &str) -> DriverResult<Value> {
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let parsed: Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| DriverError::Engine(format!("{AGENT_PREFIX} (unreadable answer)")))?;
    if let Some(error) = parsed.get("error") {
        return Err(DriverError::Engine(format!(
            "the guest agent refused: {}",
            error
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
        )));
    }
    Ok(parsed.get("return").cloned().unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn errors_are_sorted_by_their_message() {
        let down = classify(
            "error: failed to connect to the hypervisor\nerror: Failed to connect socket to \
             '/var/run/libvirt/libvirt-sock': No such file or directory\n",
        );
        assert!(
            matches!(&down, DriverError::Unreachable(m) if m.starts_with("the hypervisor did not answer")),
            "{down:?}"
        );
        assert_eq!(
            classify("error: failed to get domain 'nope'\n"),
            DriverError::NotFound
        );
        let agent =
            classify("error: Guest agent is not responding: QEMU guest agent is not connected");
        assert!(is_agent_failure(&agent), "{agent:?}");
        assert_eq!(
            classify("error: Failed to start domain 'x'\nerror: Requested operation is not valid: domain is already active"),
            DriverError::AlreadyRunning
        );
        assert_eq!(
            classify("error: Requested operation is not valid: domain is not running"),
            DriverError::NotRunning
        );
        assert!(!is_agent_failure(&DriverError::NotRunning));
    }

    #[test]
    fn agent_answers_are_unwrapped() {
        assert_eq!(
            agent_return("{\"return\":{\"pid\":7}}\n").unwrap(),
            json!({"pid": 7})
        );
        assert!(agent_return("virsh # \n").is_err());
        assert!(matches!(
            agent_return("{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"}}"),
            Err(DriverError::Engine(m)) if m.contains("no")
        ));
    }

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkSECRETKEY\n\
                       -----END OPENSSH PRIVATE KEY-----";
    const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE";

    fn ssh_credentials(known_hosts: &str) -> LibvirtCredentials {
        LibvirtCredentials {
            ssh: Some(LibvirtSsh {
                private_key: KEY.into(),
                known_hosts: known_hosts.into(),
            }),
            tls: None,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ssh_targets_come_from_the_uri() {
        let target = ssh_target_of("qemu+ssh://root@10.0.0.2:2222/system?socket=/x").unwrap();
        assert_eq!(target.known_hosts_name(), "[10.0.0.2]:2222");
        let target = ssh_target_of("qemu+ssh://kvm2/system").unwrap();
        assert_eq!(target.known_hosts_name(), "kvm2");
        let target = ssh_target_of("qemu+ssh://a@[fd00::2]:22/system").unwrap();
        assert_eq!(target.known_hosts_name(), "fd00::2");
        for bad in [
            "qemu+ssh:///system",
            "qemu+ssh://root@/system",
            "qemu+tls://kvm/system",
            "qemu+ssh://-oProxyCommand=x/system",
        ] {
            assert!(ssh_target_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sealed_ssh_access_writes_private_files_for_one_call() {
        let known = format!("[127.0.0.1]:2222 {HOST_KEY}\n");
        let virsh = Virsh::new("qemu+ssh://root@127.0.0.1:2222/system?socket=/run/x.sock")
            .with_credentials(&ssh_credentials(&known))
            .unwrap();
        assert!(virsh.has_credentials());
        let shown = format!("{virsh:?}");
        assert!(!shown.contains("SECRETKEY"), "{shown}");

        let connection = virsh.connection().unwrap();
        let dir = connection.private_dir().unwrap().to_path_buf();
        let wrapper = dir.join("ssh");
        assert_eq!(
            connection.uri(),
            format!(
                "qemu+ssh://root@127.0.0.1:2222/system?socket=/run/x.sock&command={}",
                wrapper.display()
            )
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("id")), 0o600);
        assert_eq!(mode(&dir.join("known_hosts")), 0o600);
        assert_eq!(mode(&wrapper), 0o700);
        let key = std::fs::read_to_string(dir.join("id")).unwrap();
        assert!(
            key.ends_with("-----END OPENSSH PRIVATE KEY-----\n"),
            "{key}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("known_hosts")).unwrap(),
            known
        );
        let script = std::fs::read_to_string(&wrapper).unwrap();
        for option in [
            "-F /dev/null",
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
            &format!("-o 'UserKnownHostsFile=\"{}/known_hosts\"'", dir.display()),
            "-o GlobalKnownHostsFile=/dev/null",
            "-o IdentitiesOnly=yes",
            "-o IdentityAgent=none",
            &format!("-i '{}/id'", dir.display()),
        ] {
            assert!(script.contains(option), "{option} missing from {script}");
        }
        // libvirt's own arguments come last: ssh keeps the first value.
        assert!(script.trim_end().ends_with("\"$@\""), "{script}");
        assert!(!script.contains("SECRETKEY"), "{script}");

        // A second call gets its own directory; each goes with its call.
        let second = virsh.connection().unwrap();
        assert_ne!(second.private_dir(), Some(dir.as_path()));
        drop(connection);
        assert!(!dir.exists());
        drop(second);

        // Without credentials the URI is used as it is and nothing is written.
        let plain = Virsh::new("qemu+ssh://root@kvm2/system")
            .connection()
            .unwrap();
        assert_eq!(plain.uri(), "qemu+ssh://root@kvm2/system");
        assert!(plain.private_dir().is_none());
    }

    #[test]
    fn sealed_credentials_are_checked_against_the_uri() {
        let known = format!("[127.0.0.1]:2222 {HOST_KEY}\n");
        let with = |uri: &str, credentials: &LibvirtCredentials| {
            Virsh::new(uri).with_credentials(credentials).map(|_| ())
        };
        let ssh = ssh_credentials(&known);
        assert!(with("qemu+ssh://root@127.0.0.1:2222/system", &ssh).is_ok());
        // The known_hosts must hold the name ssh looks the host up under.
        let message = with("qemu+ssh://root@127.0.0.1/system", &ssh).unwrap_err();
        assert!(message.contains("127.0.0.1"), "{message}");
        assert!(with("qemu+tls://kvm/system", &ssh)
            .unwrap_err()
            .contains("qemu+ssh://"));
        for param in [
            "keyfile=/k",
            "no_verify=1",
            "command=/bin/x",
            "Known_Hosts=/k",
        ] {
            let uri = format!("qemu+ssh://root@127.0.0.1:2222/system?{param}");
            let message = with(&uri, &ssh).unwrap_err();
            assert!(message.contains("cannot be combined"), "{message}");
        }
        let mut public = ssh.clone();
        public.ssh.as_mut().unwrap().private_key = HOST_KEY.into();
        let message = with("qemu+ssh://root@127.0.0.1:2222/system", &public).unwrap_err();
        assert!(message.contains("private key"), "{message}");
        assert!(!message.contains("AAAAC3"), "{message}");

        // Credentials round-trip through their stored form, and refuse
        // what they do not know.
        assert_eq!(LibvirtCredentials::from_json(&ssh.to_json()).unwrap(), ssh);
        let message =
            LibvirtCredentials::from_json(r#"{"ssh":{"private_key":"SECRETKEY"}}"#).unwrap_err();
        assert!(!message.contains("SECRETKEY"), "{message}");
        assert!(LibvirtCredentials::from_json(r#"{"password":"x"}"#).is_err());
    }

    #[test]
    fn host_key_failures_say_so_without_the_private_paths() {
        let dir = Path::new("/tmp/advps-virsh-Ab12");
        let stderr = "error: failed to connect to the hypervisor\n\
            error: Cannot recv data: @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            Add correct host key in /tmp/advps-virsh-Ab12/known_hosts to get rid of this message.\n\
            Offending ED25519 key in /tmp/advps-virsh-Ab12/known_hosts:1\n\
            \x20 remove with:\n\
            \x20 ssh-keygen -f \"/tmp/advps-virsh-Ab12/known_hosts\" -R \"[127.0.0.1]:2222\"\n\
            Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n\
            Host key verification failed.: Connection reset by peer\n";
        match classify(&scrub(stderr, Some(dir))) {
            DriverError::Unreachable(m) => {
                assert!(m.contains("--ssh-known-hosts"), "{m}");
                assert!(m.contains("Host key verification failed"), "{m}");
                assert!(!m.contains("/tmp/advps-virsh-Ab12"), "{m}");
                assert!(!m.contains("@@"), "{m}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        let denied = "error: failed to connect to the hypervisor\nerror: Cannot recv data: \
                      root@127.0.0.1: Permission denied (publickey).: Connection reset by peer";
        assert!(matches!(
            classify(&scrub(denied, Some(dir))),
            DriverError::Unreachable(m) if m.contains("--ssh-key") && m.contains("root@127.0.0.1")
        ));
    }

    /// virsh's words (libvirt 9.0) for each way the TLS files can be wrong.
    #[test]
    fn tls_failures_say_which_file_to_fix_without_the_private_paths() {
        let dir = Path::new("/tmp/advps-virsh-Tl5x");
        let unreachable = |stderr: &str| match classify(&scrub(stderr, Some(dir))) {
            DriverError::Unreachable(m) => {
                assert!(m.starts_with("the hypervisor did not answer: "), "{m}");
                assert!(!m.contains("/tmp/advps-virsh-Tl5x"), "{m}");
                m
            }
            other => panic!("expected Unreachable, got {other:?}"),
        };
        // The CA does not know libvirtd's certificate (or it names another host).
        let m = unreachable(
            "2024-05-06 07:08:09.123+0000: 4242: info : libvirt version: 9.0.0, package: 9.0.0\n\
             2024-05-06 07:08:09.123+0000: 4242: info : hostname: kvm1\n\
             2024-05-06 07:08:09.124+0000: 4242: warning : virNetTLSContextCheckCertificate:1086 \
             : Certificate check failed Certificate failed validation: The certificate hasn't \
             got a known issuer.\n\
             error: failed to connect to the hypervisor\n\
             error: authentication failed: Failed to verify peer's certificate\n",
        );
        assert!(
            m.contains("libvirtd's TLS certificate is not trusted"),
            "{m}"
        );
        assert!(m.contains("--ca"), "{m}");
        assert!(m.contains("hasn't got a known issuer"), "{m}");
        assert!(!m.contains("libvirt version") && !m.contains("4242"), "{m}");
        // The client certificate is not the CA's: libvirt refuses before connecting.
        let m = unreachable(
            "error: failed to connect to the hypervisor\n\
             error: Our own certificate /tmp/advps-virsh-Tl5x/clientcert.pem failed validation \
             against /tmp/advps-virsh-Tl5x/cacert.pem: The certificate hasn't got a known issuer.\n",
        );
        assert!(m.contains("--client-cert was not issued by the CA"), "{m}");
        assert!(
            m.contains(
                "Our own certificate clientcert.pem (--client-cert) failed validation \
                        against cacert.pem (--ca)"
            ),
            "{m}"
        );
        // libvirtd does not trust the client certificate.
        let m = unreachable(
            "error: failed to connect to the hypervisor\n\
             error: Unable to read TLS confirmation: Input/output error\n",
        );
        assert!(m.contains("libvirtd refused the client certificate"), "{m}");
        // The key is another certificate's.
        let m = unreachable(
            "error: failed to connect to the hypervisor\n\
             error: Unable to set x509 key and certificate: /tmp/advps-virsh-Tl5x/clientkey.pem, \
             /tmp/advps-virsh-Tl5x/clientcert.pem: The certificate and the given key do not match.\n",
        );
        assert!(m.contains("--client-key is not the key"), "{m}");
        assert!(m.contains("clientkey.pem (--client-key)"), "{m}");
        // Nothing reached: as before.
        let m = unreachable(
            "error: failed to connect to the hypervisor\n\
             error: unable to connect to server at 'kvm1:16514': Connection refused\n",
        );
        assert!(m.contains("Connection refused"), "{m}");
        // A line that only looks like a log line stays.
        assert_eq!(libvirt_log_line("error: a: b : c"), None);
    }

    #[test]
    fn sealed_tls_files_go_to_a_pki_directory() {
        let pem = |label: &str, body: &str| {
            format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
        };
        let tls = LibvirtCredentials {
            ssh: None,
            tls: Some(LibvirtTls {
                ca_cert: pem("CERTIFICATE", "MIIca"),
                client_cert: pem("CERTIFICATE", "MIIclient"),
                client_key: pem("PRIVATE KEY", "MIIsecretkey"),
            }),
        };
        let virsh = Virsh::new("qemu+tls://kvm3.example.net/system")
            .with_credentials(&tls)
            .unwrap();
        let connection = virsh.connection().unwrap();
        let dir = connection.private_dir().unwrap().to_path_buf();
        assert_eq!(
            connection.uri(),
            format!(
                "qemu+tls://kvm3.example.net/system?pkipath={}",
                dir.display()
            )
        );
        for (file, body) in [
            ("cacert.pem", "MIIca"),
            ("clientcert.pem", "MIIclient"),
            ("clientkey.pem", "MIIsecretkey"),
        ] {
            let path = dir.join(file);
            assert_eq!(mode(&path), 0o600, "{file}");
            assert!(
                std::fs::read_to_string(&path).unwrap().contains(body),
                "{file}"
            );
        }
        assert!(!format!("{virsh:?}").contains("MIIsecretkey"));
        drop(connection);
        assert!(!dir.exists());

        // Parameters are encoded for libvirt, which decodes them.
        assert_eq!(
            with_param("qemu+tls://h/system?mode=direct", "pkipath", "/tmp/a b&c"),
            "qemu+tls://h/system?mode=direct&pkipath=/tmp/a%20b%26c"
        );
        assert!(Virsh::new("qemu+ssh://root@kvm/system")
            .with_credentials(&tls)
            .unwrap_err()
            .contains("qemu+tls://"));
        let mut bad = tls.clone();
        bad.tls.as_mut().unwrap().client_key = "not a key".into();
        assert!(Virsh::new("qemu+tls://kvm/system")
            .with_credentials(&bad)
            .unwrap_err()
            .contains("client key"));
        assert!(Virsh::new("qemu+tls://kvm/system?pkipath=/etc/pki")
            .with_credentials(&tls)
            .is_err());
    }

    #[test]
    fn script_words_cannot_break_out() {
        assert_eq!(quote_word("a b").unwrap(), "'a b'");
        assert!(quote_word("a'b").is_err());
        assert!(quote_word("a\nb").is_err());
    }
}
