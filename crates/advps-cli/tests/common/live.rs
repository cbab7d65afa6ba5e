//! Harness for the live-mode tests: real LXD containers behind `sk_live_` keys.
//!
//! - [`Lxd`] is a tiny HTTP/1.1 client for LXD's REST API on its unix socket. It creates
//!   containers named `advps-test-<random>` from an imported image, starts them, waits for
//!   their init to come up, and deletes (forcefully) every container it made when dropped. It
//!   refuses to act on any container whose name lacks the `advps-test-` prefix.
//! - [`exec`] runs a shell snippet inside a guest (`lxc exec`) and returns its exit code and
//!   standard output; [`verify_root_password`] checks a password against the guest's
//!   `/etc/shadow` with the host's `crypt(3)` (through Python).
//! - [`address_block`] hands every test its own block of eight addresses of 198.51.100.0/24
//!   so that tests running in parallel never configure the same address.
//! - [`LiveSetup`] runs the operator commands that register the local LXD node, the Debian
//!   images, an IP pool and an account with a live key, then binds containers as services.
//! - [`FakeLxd`] is a fake engine on a unix socket that answers the discovery calls and then
//!   never answers anything else, for deadline tests.
//!
//! Without a local LXD (its socket, trust on it, the two images, the `lxc` client),
//! [`LiveSetup::new`] prints a notice and gives `None`, and the test returns; with
//! `ADVPS_REQUIRE_LXD` set (as in `.ci/test`) it fails instead.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::common::{last_line, TestServer};

#[path = "../../../advps-drivers/tests/support/require.rs"]
pub mod require;

/// LXD's unix socket on the test machines.
pub const LXD_SOCKET: &str = require::LXD_SOCKET;
/// Every container the tests make has a name starting with this.
pub const NAME_PREFIX: &str = "advps-test-";
/// The image test containers are created from.
pub const BASE_IMAGE: &str = "advps-debian-12";
/// The network of the test bridge and its gateway.
pub const NETWORK: &str = "198.51.100";
pub const GATEWAY: &str = "198.51.100.1";

/// How long a container may take to be created and booted.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of one exchange with LXD (operations are waited for in slices below it).
const LXD_IO_TIMEOUT: Duration = Duration::from_secs(180);

fn ensure_test_name(name: &str) {
    assert!(
        name.starts_with(NAME_PREFIX) && name.len() > NAME_PREFIX.len(),
        "refusing to touch container {name:?}: not a test container"
    );
}

/// A short random suffix (time, process and a counter mixed together).
fn random_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = u64::from(COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    format!("{:010x}", x & 0xff_ffff_ffff)
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client over a unix socket.
// ---------------------------------------------------------------------------------------------

/// One HTTP exchange over a unix socket (`Connection: close`); returns status and JSON body.
pub fn unix_http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let what = format!("{method} {path}");
    let io = |e: std::io::Error| format!("{what}: {e}");
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(LXD_IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(LXD_IO_TIMEOUT)).map_err(io)?;
    let payload = body.map(|b| serde_json::to_vec(b).unwrap());
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: lxd\r\nConnection: close\r\n");
    if let Some(p) = &payload {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            p.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io)?;
    if let Some(p) = &payload {
        stream.write_all(p).map_err(io)?;
    }
    stream.flush().map_err(io)?;

    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(io)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            if name == "content-length" {
                content_length = value.parse::<usize>().ok();
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut bytes = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).map_err(io)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("0");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("{what}: bad chunk size {size_line:?}"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).map_err(io)?;
            bytes.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).map_err(io)?;
        }
    } else if let Some(len) = content_length {
        bytes.resize(len, 0);
        reader.read_exact(&mut bytes).map_err(io)?;
    } else {
        reader.read_to_end(&mut bytes).map_err(io)?;
    }
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}

// ---------------------------------------------------------------------------------------------
// LXD containers.
// ---------------------------------------------------------------------------------------------

/// Test containers on the local LXD; every one of them is deleted on drop.
pub struct Lxd {
    socket: PathBuf,
    made: Mutex<Vec<String>>,
}

impl Default for Lxd {
    fn default() -> Self {
        Self::new()
    }
}

impl Lxd {
    pub fn new() -> Lxd {
        Lxd {
            socket: PathBuf::from(LXD_SOCKET),
            made: Mutex::new(Vec::new()),
        }
    }

    /// A request to LXD; returns status and body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        unix_http(&self.socket, method, path, body).unwrap_or_else(|e| panic!("LXD: {e}"))
    }

    /// A request whose answer may be an async operation: waits for it; panics on failure.
    fn call_and_wait(&self, method: &str, path: &str, body: Option<&Value>, wait: Duration) {
        let (status, value) = self.call(method, path, body);
        match value["type"].as_str() {
            Some("sync") => {}
            Some("async") => {
                let op = value["operation"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        value["metadata"]["id"]
                            .as_str()
                            .map(|id| format!("/1.0/operations/{id}"))
                    })
                    .unwrap_or_else(|| panic!("{method} {path}: async answer without id"));
                self.wait_operation(&op, wait, &format!("{method} {path}"));
            }
            _ => panic!("{method} {path} failed ({status}): {value}"),
        }
    }

    fn wait_operation(&self, op: &str, wait: Duration, what: &str) {
        let deadline = Instant::now() + wait;
        loop {
            let (status, value) = self.call("GET", &format!("{op}/wait?timeout=30"), None);
            let op_status = value["metadata"]["status"].as_str().unwrap_or_default();
            match op_status {
                "Success" => return,
                "Running" | "Pending" | "Queued" => {}
                _ => panic!("{what}: operation failed ({status}): {value}"),
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not done within {wait:?}"
            );
        }
    }

    /// Creates, starts and waits for a fresh container from `image`; returns its name.
    pub fn create(&self, image: &str) -> String {
        self.create_with(image, None)
    }

    /// Like [`Lxd::create`], with instance configuration keys (e.g. `limits.memory`).
    pub fn create_with_config(&self, image: &str, config: &Value) -> String {
        assert!(config.is_object(), "instance config must be an object");
        self.create_with(image, Some(config))
    }

    fn create_with(&self, image: &str, config: Option<&Value>) -> String {
        assert!(!image.is_empty(), "a container needs an image source");
        let name = format!("{NAME_PREFIX}{}", random_suffix());
        ensure_test_name(&name);
        // Recorded first, so that even a half-made container is removed.
        self.made.lock().unwrap().push(name.clone());
        let mut body = json!({
            "name": name,
            "type": "container",
            "source": { "type": "image", "alias": image },
        });
        if let Some(config) = config {
            body["config"] = config.clone();
        }
        self.call_and_wait("POST", "/1.0/instances", Some(&body), BOOT_TIMEOUT);
        self.call_and_wait(
            "PUT",
            &format!("/1.0/instances/{name}/state"),
            Some(&json!({ "action": "start", "timeout": 30 })),
            BOOT_TIMEOUT,
        );
        wait_for_boot(&name);
        name
    }

    /// The engine's view of a container: `status` ("Running", "Stopped"...).
    pub fn status(&self, name: &str) -> String {
        ensure_test_name(name);
        let (code, value) = self.call("GET", &format!("/1.0/instances/{name}"), None);
        assert_eq!(code, 200, "GET instance {name}: {value}");
        value["metadata"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The container's own configuration keys (`config`, not the expanded one), or `None`
    /// when the container does not exist.
    pub fn config(&self, name: &str) -> Option<Value> {
        ensure_test_name(name);
        let (code, value) = self.call("GET", &format!("/1.0/instances/{name}"), None);
        match code {
            404 => None,
            200 => Some(value["metadata"]["config"].clone()),
            _ => panic!("GET instance {name} ({code}): {value}"),
        }
    }

    /// The state of a container as `lxc list` shows it (RUNNING, STOPPED...).
    pub fn lxc_list_state(&self, name: &str) -> String {
        ensure_test_name(name);
        let out = Command::new("lxc")
            .args(["list", &format!("^{name}$"), "--format", "csv", "-c", "s"])
            .output()
            .expect("run lxc list");
        assert!(out.status.success(), "lxc list failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Deletes one container forcefully (stopped first if needed); reports instead of panicking
    /// so that it can run while a failed test unwinds.
    pub fn delete(&self, name: &str) {
        ensure_test_name(name);
        let path = format!("/1.0/instances/{name}");
        let try_call = |method: &str, path: &str, body: Option<&Value>| {
            unix_http(&self.socket, method, path, body)
        };
        let wait_op = |value: &Value| {
            if let Some(op) = value["operation"].as_str().filter(|o| !o.is_empty()) {
                let _ = try_call("GET", &format!("{op}/wait?timeout=60"), None);
            }
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut last = String::new();
        while Instant::now() < deadline {
            match try_call("GET", &path, None) {
                Ok((404, _)) => return,
                Ok((_, value)) if value["metadata"]["status"] == "Stopped" => {
                    match try_call("DELETE", &path, None) {
                        Ok((_, value)) => {
                            last = value.to_string();
                            wait_op(&value);
                        }
                        Err(e) => last = e,
                    }
                }
                Ok(_) => {
                    let stop = json!({ "action": "stop", "force": true, "timeout": 30 });
                    match try_call("PUT", &format!("{path}/state"), Some(&stop)) {
                        Ok((_, value)) => {
                            last = value.to_string();
                            wait_op(&value);
                        }
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("warning: could not delete test container {name}: {last}");
    }
}

impl Drop for Lxd {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names {
            self.delete(&name);
        }
    }
}

/// Waits until the guest's init is up and commands can run in it.
pub fn wait_for_boot(name: &str) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let (code, out) = exec(name, "systemctl is-system-running 2>/dev/null || true");
        let state = out.trim();
        if code == 0 && (state == "running" || state == "degraded") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not boot within {BOOT_TIMEOUT:?} (last state {state:?})"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `sh -c script` in the guest; returns (exit code, standard output).
pub fn exec(name: &str, script: &str) -> (i32, String) {
    ensure_test_name(name);
    let out = Command::new("lxc")
        .args(["exec", name, "--", "sh", "-c", script])
        .output()
        .expect("run lxc exec");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Like [`exec`], asserting exit code 0; returns standard output.
pub fn exec_ok(name: &str, script: &str) -> String {
    let (code, out) = exec(name, script);
    assert_eq!(code, 0, "`{script}` in {name} exited {code}; stdout: {out}");
    out
}

/// The IPv4 addresses (without prefix) on the guest's eth0.
pub fn guest_ipv4(name: &str) -> Vec<String> {
    exec_ok(name, "ip -4 -o addr show dev eth0")
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words
                .next()
                .map(|a| a.split('/').next().unwrap().to_string())
        })
        .collect()
}

/// Whether the guest has its own /proc/uptime (lxcfs); without it the file shows the host's.
pub fn guest_has_own_uptime(name: &str) -> bool {
    exec(name, "grep -q ' /proc/uptime ' /proc/mounts").0 == 0
}

/// The guest's uptime in seconds (meaningful when [`guest_has_own_uptime`]).
pub fn guest_uptime(name: &str) -> f64 {
    exec_ok(name, "cat /proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime number")
}

/// `VERSION_CODENAME` of the guest's os-release.
pub fn guest_codename(name: &str) -> String {
    exec_ok(name, ". /etc/os-release && echo \"$VERSION_CODENAME\"")
        .trim()
        .to_string()
}

/// A file of the guest's root filesystem (`lxc file pull`), readable whether the container
/// runs or not.
pub fn guest_file(name: &str, path: &str) -> String {
    ensure_test_name(name);
    let out = Command::new("lxc")
        .args(["file", "pull", &format!("{name}{path}"), "-"])
        .output()
        .expect("run lxc file pull");
    assert!(
        out.status.success(),
        "lxc file pull {name}{path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `VERSION_CODENAME` of the installed system's os-release, read from its filesystem (so
/// also of a stopped container).
pub fn installed_codename(name: &str) -> String {
    guest_file(name, "/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_default()
}

/// Whether `password` matches root's entry of the installed system's /etc/shadow, read from
/// its filesystem (so also of a stopped container).
pub fn installed_root_password_matches(name: &str, password: &str) -> bool {
    let shadow = guest_file(name, "/etc/shadow");
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no root entry in /etc/shadow of {name}"));
    crypt_matches(password, hash)
}

/// The root entry's hash from the guest's /etc/shadow.
pub fn root_hash(name: &str) -> String {
    let shadow = exec_ok(name, "cat /etc/shadow");
    let line = shadow
        .lines()
        .find(|l| l.starts_with("root:"))
        .unwrap_or_else(|| panic!("no root entry in /etc/shadow of {name}"));
    line.split(':').nth(1).unwrap_or_default().to_string()
}

/// Whether `password` matches `hash` according to the host's crypt(3) (libxcrypt, so
/// yescrypt `$y$` hashes work).
pub fn crypt_matches(password: &str, hash: &str) -> bool {
    if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
        return false;
    }
    let mut child = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt, sys\n\
             pw, h = sys.stdin.read().split('\\n')[:2]\n\
             print('match' if crypt.crypt(pw, h) == h else 'mismatch')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n{hash}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("python3 output");
    let verdict = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        verdict == "match" || verdict == "mismatch",
        "crypt check failed: {out:?}"
    );
    verdict == "match"
}

/// Whether `password` is root's password in the guest.
pub fn verify_root_password(name: &str, password: &str) -> bool {
    crypt_matches(password, &root_hash(name))
}

// ---------------------------------------------------------------------------------------------
// Addresses.
// ---------------------------------------------------------------------------------------------

/// A block of eight consecutive addresses (last octets `first..=last`).
#[derive(Debug, Clone, Copy)]
pub struct AddressBlock {
    pub first: u8,
    pub last: u8,
}

impl AddressBlock {
    /// `198.51.100.A-198.51.100.B`, for `ippools add --range`.
    pub fn range(&self) -> String {
        format!("{NETWORK}.{}-{NETWORK}.{}", self.first, self.last)
    }

    pub fn contains(&self, address: &str) -> bool {
        address
            .strip_prefix(&format!("{NETWORK}."))
            .and_then(|o| o.parse::<u8>().ok())
            .is_some_and(|o| (self.first..=self.last).contains(&o))
    }
}

/// The next free block of eight addresses at `offset + 8 * n` (n counts blocks handed out in
/// this process). Never hands out .0-.1, .50-.60 or .255.
pub fn address_block(offset: u8) -> AddressBlock {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let first = u32::from(offset) + 8 * n;
    let last = first + 7;
    assert!(
        first >= 2 && last <= 254,
        "address blocks exhausted (offset {offset}, block {n})"
    );
    assert!(
        last < 50 || first > 60,
        "address block {first}-{last} overlaps .50-.60; choose another offset"
    );
    AddressBlock {
        first: first as u8,
        last: last as u8,
    }
}

// ---------------------------------------------------------------------------------------------
// Operator setup of a live server.
// ---------------------------------------------------------------------------------------------

/// Environment for a live server: a rate limit that never gets in the way.
pub fn live_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("ADVPS_RATE_LIMIT_LIVE", "100000")];
    env.extend_from_slice(extra);
    env
}

/// A server with the local LXD registered, the Debian images mapped, an IP pool for this
/// test's block, an account `acme` with a live key, and test containers bound as services.
/// Fields drop in order: the server stops before the containers are deleted.
pub struct LiveSetup {
    pub server: TestServer,
    pub lxd: Lxd,
    pub block: AddressBlock,
    pub key: String,
}

/// One container bound as a LINUX service.
#[derive(Debug, Clone)]
pub struct Bound {
    pub container: String,
    pub service_id: String,
    /// The address the binding configured (from the CLI output).
    pub address: String,
}

/// Whether the tests of the local LXD must be skipped here (after the notice; a failure
/// when `ADVPS_REQUIRE_LXD` is set).
pub fn lxd_skipped() -> bool {
    let why = require::lxd_missing(&[BASE_IMAGE, "advps-debian-13"]).or_else(|| {
        (!require::has_program("lxc", "version"))
            .then(|| "the lxc client is not installed".to_string())
    });
    match why {
        Some(why) => {
            require::missing(
                require::REQUIRE_LXD,
                "the live-mode tests on the local LXD",
                &why,
                require::LXD_HOW,
            );
            true
        }
        None => false,
    }
}

impl LiveSetup {
    /// Starts a server with `extra_env` and does the operator setup; `offset` is the first
    /// address of this test file's blocks. `None` when the local LXD is missing
    /// ([`lxd_skipped`]).
    pub fn new(offset: u8, extra_env: &[(&str, &str)]) -> Option<LiveSetup> {
        if lxd_skipped() {
            return None;
        }
        let block = address_block(offset);
        let server = TestServer::start_with_env(&live_env(extra_env));
        server.create_account("acme");
        server.cli_ok(&[
            "nodes",
            "add",
            "local",
            "--driver",
            "lxd",
            "--endpoint",
            &format!("unix://{LXD_SOCKET}"),
        ]);
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
        server.cli_ok(&[
            "os",
            "add",
            "debian-13",
            "--name",
            "Debian 13",
            "--type",
            "lxc",
            "--image",
            "advps-debian-13",
        ]);
        server.cli_ok(&[
            "ippools",
            "add",
            "t1",
            "--cidr",
            &format!("{NETWORK}.0/24"),
            "--gateway",
            GATEWAY,
            "--range",
            &block.range(),
        ]);
        let key = server.create_key("acme", "live");
        Some(LiveSetup {
            server,
            lxd: Lxd::new(),
            block,
            key,
        })
    }

    /// Creates a container and binds it to `acme` as a LINUX service running debian-12.
    pub fn bind_new(&self) -> Bound {
        self.bind_container(self.lxd.create(BASE_IMAGE))
    }

    /// Binds an existing test container (made with [`Lxd::create_with_config`], say) to
    /// `acme` as a LINUX service running debian-12.
    pub fn bind_container(&self, container: String) -> Bound {
        self.server.cli_ok(&["nodes", "sync", "local"]);
        let out = self.server.cli_ok(&[
            "services",
            "create",
            "--account",
            "acme",
            "--node",
            "local",
            "--instance",
            &container,
            "--type",
            "LINUX",
            "--os",
            "debian-12",
        ]);
        let service_id = last_line(&out);
        assert!(
            !service_id.is_empty()
                && service_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "last line of services create is not a service id: {out:?}"
        );
        let address = out
            .lines()
            .find_map(|l| {
                let rest = l.trim().strip_prefix("Address ")?;
                Some(rest.split('/').next()?.to_string())
            })
            .unwrap_or_else(|| panic!("services create configured no address: {out:?}"));
        assert!(
            self.block.contains(&address),
            "address {address} not from the pool range {}: {out:?}",
            self.block.range()
        );
        Bound {
            container,
            service_id,
            address,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A fake engine that stops answering.
// ---------------------------------------------------------------------------------------------

/// A fake LXD on a unix socket. It answers `GET /1.0`, the instance and image lists, and the
/// one instance's record and state while "discoverable"; once [`FakeLxd::stop_answering`] is
/// called it answers only `GET /1.0` and holds every other request open without an answer.
pub struct FakeLxd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    silent: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<UnixStream>>>,
    seen: Arc<Mutex<Vec<String>>>,
    accept_thread: Option<std::thread::JoinHandle<()>>,
}

/// The one container the fake engine has.
pub const FAKE_INSTANCE: &str = "advps-test-hang";

impl Default for FakeLxd {
    fn default() -> Self {
        Self::start()
    }
}

impl FakeLxd {
    pub fn start() -> FakeLxd {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("fake-lxd.socket");
        let listener = UnixListener::bind(&socket).expect("bind fake socket");
        let silent = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accept_thread = {
            let (silent, shutdown, held, seen) = (
                Arc::clone(&silent),
                Arc::clone(&shutdown),
                Arc::clone(&held),
                Arc::clone(&seen),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (silent, held, seen) =
                        (Arc::clone(&silent), Arc::clone(&held), Arc::clone(&seen));
                    std::thread::spawn(move || fake_serve(stream, &silent, &held, &seen));
                }
            })
        };
        FakeLxd {
            dir,
            socket,
            silent,
            shutdown,
            held,
            seen,
            accept_thread: Some(accept_thread),
        }
    }

    /// `unix://<socket>` for `nodes add --endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// From now on, only `GET /1.0` is answered.
    pub fn stop_answering(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    /// Request lines received so far ("METHOD path").
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests are being held without an answer.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for FakeLxd {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn fake_serve(
    stream: UnixStream,
    silent: &AtomicBool,
    held: &Mutex<Vec<UnixStream>>,
    seen: &Mutex<Vec<String>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(format!("{method} {path}"));

    let sync = |metadata: Value| {
        json!({
            "type": "sync",
            "status": "Success",
            "status_code": 200,
            "operation": "",
            "error_code": 0,
            "error": "",
            "metadata": metadata,
        })
    };
    let instance = json!({
        "name": FAKE_INSTANCE,
        "status": "Running",
        "status_code": 103,
        "type": "container",
        "config": {},
        "expanded_config": {},
        "devices": {},
        "profiles": ["default"],
        "last_used_at": "2026-01-01T00:00:00Z",
    });
    let answer = match (method.as_str(), path.as_str()) {
        ("GET", "/1.0") => Some(sync(json!({
            "api_extensions": [],
            "environment": { "instance_types": ["container"] },
        }))),
        _ if silent.load(Ordering::SeqCst) => None,
        ("GET", "/1.0/instances?recursion=1") => Some(sync(json!([instance]))),
        ("GET", "/1.0/images?recursion=1") => Some(sync(json!([]))),
        ("GET", p) if p == format!("/1.0/instances/{FAKE_INSTANCE}") => Some(sync(instance)),
        ("GET", p) if p == format!("/1.0/instances/{FAKE_INSTANCE}/state") => Some(sync(
            json!({ "status": "Running", "status_code": 103, "network": {} }),
        )),
        _ => None,
    };
    let mut stream = stream;
    match answer {
        Some(value) => {
            let bytes = serde_json::to_vec(&value).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&bytes);
            let _ = stream.flush();
        }
        None => {
            // Never answered: kept open until the fake goes away.
            held.lock().unwrap().push(stream);
        }
    }
}
