//! A stateful stand-in for a Proxmox VE cluster, for the driver's tests.
//!
//! It listens on 127.0.0.1 (random port) over TLS with a certificate made
//! by `openssl` for the test (a CA and a server certificate it signed), so
//! the driver's fingerprint pinning and CA verification are exercised for
//! real. It follows PVE's behaviour where the driver depends on it:
//!
//! - the token header is checked (401 otherwise);
//! - errors are a status with the message as the HTTP reason phrase, and a
//!   missing guest is a 500 "... does not exist";
//! - long calls answer a UPID; the task runs for a few status polls, then
//!   stops with `OK` or an error, and only then does its effect happen;
//! - clone and create hold a config lock (`clone`, `create`) while they run;
//! - LXC refuses start/stop at once ("CT 101 already running"), QEMU fails
//!   inside the task ("VM 100 already running"), QEMU's reboot of a stopped
//!   VM succeeds doing nothing;
//! - numbers come as strings in places (an LXC `vmid` in
//!   `/cluster/resources`, an LXC `uptime`) and booleans as 0/1;
//! - the guest agent can be up or down;
//! - `termproxy` answers a port, a one-time ticket and the token's user, and
//!   `vncwebsocket` upgrades to a WebSocket that speaks termproxy's protocol
//!   (the `USER:TICKET\n` login answered `OK`, then `0:LEN:DATA`,
//!   `1:COLS:ROWS:` and `2` read as one byte stream) in front of a small
//!   shell that echoes what is typed and answers `echo` and `stty size`;
//!   every message is recorded, and one that breaks the protocol is a
//!   violation.
//!
//! Every request is first checked against the official API schema
//! ([`super::pve_schema`]); a request that does not fit is recorded as a
//! violation and answered 400 like PVE's parameter verification, and
//! [`FakePve::assert_clean`] fails the test if there was any.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::pve_schema::schema;

pub const TOKEN: &str = "advps@pve!advps=5f1b2c3d-0000-4000-8000-123456789abc";

#[derive(Debug, Clone)]
pub struct FakeGuest {
    pub node: String,
    /// `qemu` or `lxc`.
    pub kind: &'static str,
    pub running: bool,
    pub template: bool,
    pub config: BTreeMap<String, String>,
    pub lock: Option<String>,
    /// Requests after which `lock` goes away by itself (a backup ending).
    pub lock_ttl: Option<u32>,
    /// QEMU: whether the guest agent answers.
    pub agent_up: bool,
    pub uptime: u64,
    /// What the guest agent or the container's interfaces report.
    pub observed_ips: Vec<String>,
    /// The root password the guest has now, as set by the agent or create.
    pub root_password: Option<String>,
    /// The real cipassword (PVE shows it masked).
    pub cipassword: Option<String>,
    /// Whose password the guest agent set last (`set-user-password`'s
    /// `username`).
    pub password_user: Option<String>,
}

impl FakeGuest {
    pub fn qemu(node: &str, name: &str, running: bool) -> FakeGuest {
        let mut config = BTreeMap::new();
        config.insert("name".into(), name.into());
        config.insert("memory".into(), "2048".into());
        config.insert("cores".into(), "2".into());
        config.insert("agent".into(), "1".into());
        config.insert(
            "net0".into(),
            "virtio=BC:24:11:AA:00:01,bridge=vmbr0,firewall=1".into(),
        );
        config.insert("scsi0".into(), "local-lvm:vm-disk-0,size=20G".into());
        config.insert("ide2".into(), "local-lvm:cloudinit,media=cdrom".into());
        config.insert(
            "ipconfig0".into(),
            "ip=203.0.113.10/24,gw=203.0.113.1".into(),
        );
        FakeGuest {
            node: node.into(),
            kind: "qemu",
            running,
            template: false,
            config,
            lock: None,
            lock_ttl: None,
            agent_up: running,
            uptime: if running { 3600 } else { 0 },
            observed_ips: if running {
                vec!["203.0.113.10".into()]
            } else {
                vec![]
            },
            root_password: None,
            cipassword: None,
            password_user: None,
        }
    }

    pub fn lxc(node: &str, hostname: &str, running: bool) -> FakeGuest {
        let mut config = BTreeMap::new();
        config.insert("hostname".into(), hostname.into());
        config.insert("memory".into(), "1024".into());
        config.insert("swap".into(), "512".into());
        config.insert("cores".into(), "1".into());
        config.insert("unprivileged".into(), "1".into());
        config.insert("ostype".into(), "debian".into());
        config.insert(
            "net0".into(),
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:BB:00:01,ip=203.0.113.20/24,gw=203.0.113.1,type=veth"
                .into(),
        );
        config.insert("rootfs".into(), "local-lvm:vm-disk-1,size=8G".into());
        FakeGuest {
            node: node.into(),
            kind: "lxc",
            running,
            template: false,
            config,
            lock: None,
            lock_ttl: None,
            agent_up: false,
            uptime: if running { 7200 } else { 0 },
            observed_ips: if running {
                vec!["203.0.113.20".into()]
            } else {
                vec![]
            },
            root_password: None,
            cipassword: None,
            password_user: None,
        }
    }

    pub fn template(node: &str, name: &str) -> FakeGuest {
        let mut t = FakeGuest::qemu(node, name, false);
        t.template = true;
        t.config.insert("template".into(), "1".into());
        t.config.insert(
            "net0".into(),
            "virtio=BC:24:11:CC:00:01,bridge=vmbr0".into(),
        );
        t.config.insert("memory".into(), "1024".into());
        t.config.insert("cores".into(), "1".into());
        t.config.remove("ipconfig0");
        t
    }
}

/// What a task does to the cluster when it ends well.
#[derive(Debug, Clone)]
enum Effect {
    None,
    Start(u64),
    Stop(u64),
    Reboot(u64),
    Remove(u64),
    Unlock(u64),
}

#[derive(Debug, Clone)]
struct Task {
    polls_left: u32,
    exit: String,
    effect: Effect,
    /// Done when the task fails (a failed clone removes its half-made VM).
    on_failure: Effect,
    polled: bool,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub params: BTreeMap<String, String>,
}

/// A termproxy session waiting for its websocket.
#[derive(Debug, Clone)]
pub struct TermSession {
    pub vmid: u64,
    pub port: u64,
    pub ticket: String,
    pub used: bool,
}

/// The user termproxy makes tickets for: the token's.
pub const TICKET_USER: &str = "advps@pve!advps";

#[derive(Default)]
pub struct State {
    pub term_sessions: Vec<TermSession>,
    /// Every termproxy message the consoles received, as (vmid, message),
    /// the login's ticket left out.
    pub console_messages: Vec<(u64, String)>,
    pub guests: BTreeMap<u64, FakeGuest>,
    /// (node, storage, shared, volids).
    pub storages: Vec<(String, String, bool, Vec<String>)>,
    tasks: HashMap<String, Task>,
    next_pid: u32,
    /// Status polls a task takes before it stops.
    pub task_polls: u32,
    /// Task type (`qmclone`, `vzcreate`, ...) → exit status of its next run.
    pub fail_next: HashMap<String, String>,
    /// The next N task-starting calls fail with 500 "got timeout".
    pub transient_dispatches: u32,
    /// The first status poll of each task answers 400 (task file not there yet).
    pub first_poll_400: bool,
    pub violations: Vec<String>,
    pub requests: Vec<Recorded>,
}

impl State {
    pub fn count(&self, method: &str, path_suffix: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(path_suffix))
            .count()
    }
}

pub struct FakePve {
    pub url: String,
    /// SHA-256 of the server certificate, as PVE shows it.
    pub fingerprint: String,
    /// The CA that signed the server certificate (PEM).
    pub ca_pem: String,
    pub state: Arc<Mutex<State>>,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakePve {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?} failed");
}

impl FakePve {
    /// A cluster of `pve1` and `pve2` with the given guests and storages.
    pub async fn start(state: State) -> FakePve {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-days",
            "2",
            "-subj",
            "/CN=Fake PVE Cluster CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&ca, d);
        let mut csr = vec!["req", "-new"];
        csr.extend(ec);
        csr.extend([
            "-subj",
            "/CN=pve1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        openssl(&csr, d);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:pve1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ],
            d,
        );
        let cert_pem = std::fs::read(d.join("server.pem")).unwrap();
        let cert = CertificateDer::from_pem_slice(&cert_pem).unwrap();
        let fingerprint = Sha256::digest(cert.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let key =
            PrivateKeyDer::from_pem_slice(&std::fs::read(d.join("server.key")).unwrap()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut state = state;
        if state.task_polls == 0 {
            state.task_polls = 2;
        }
        let state = Arc::new(Mutex::new(state));
        let shared = Arc::clone(&state);
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A client that refuses the certificate just goes away.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakePve {
            url: format!("https://127.0.0.1:{port}"),
            fingerprint,
            ca_pem: String::from_utf8(std::fs::read(d.join("ca.pem")).unwrap()).unwrap(),
            state,
            _dir: dir,
            server,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn guest(&self, vmid: u64) -> Option<FakeGuest> {
        self.with(|s| s.guests.get(&vmid).cloned())
    }

    /// Fails the test if any request did not fit the API schema.
    pub fn assert_clean(&self) {
        let violations = self.with(|s| s.violations.clone());
        assert!(
            violations.is_empty(),
            "requests that do not fit the PVE API schema:\n{}",
            violations.join("\n")
        );
        let count = self.with(|s| s.requests.len());
        assert!(count > 0, "the fake saw no request");
    }
}

/// The default test cluster: VM 100 (running) on pve1, CT 101 (running) on
/// pve2, VM 102 (stopped) on pve1, template VM 9000 on pve1, and container
/// templates on a local storage of each node plus a shared one.
impl FakeGuest {
    /// The usage figures PVE reports for this guest (in `/cluster/resources`
    /// and `status/current` alike): a quarter of its cores busy, 512 MiB
    /// used, counters that grow with the uptime; a VM's `disk` is 0, as PVE
    /// cannot see inside it.
    pub fn usage(&self) -> Value {
        let run = |v: u64| if self.running { v } else { 0 };
        json!({
            "cpu": if self.running { 0.25 } else { 0.0 },
            "maxcpu": 2,
            "mem": run(512 * 1024 * 1024),
            "disk": if self.kind == "lxc" { 1u64 << 30 } else { 0 },
            "maxdisk": 8u64 << 30,
            "netin": run(self.uptime * 1000),
            "netout": run(self.uptime * 500),
        })
    }
}

pub fn cluster() -> State {
    let mut s = State::default();
    s.guests.insert(100, FakeGuest::qemu("pve1", "web1", true));
    s.guests.insert(101, FakeGuest::lxc("pve2", "ct1", true));
    s.guests.insert(102, FakeGuest::qemu("pve1", "web2", false));
    s.guests
        .insert(9000, FakeGuest::template("pve1", "debian-12-cloud"));
    s.storages = vec![
        (
            "pve1".into(),
            "local".into(),
            false,
            vec!["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into()],
        ),
        (
            "pve2".into(),
            "local".into(),
            false,
            vec![
                "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
                "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz".into(),
            ],
        ),
        (
            "pve1".into(),
            "cephfs".into(),
            true,
            vec!["cephfs:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst".into()],
        ),
        (
            "pve2".into(),
            "cephfs".into(),
            true,
            vec!["cephfs:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst".into()],
        ),
    ];
    s
}

fn reply(status: u16, reason: &str, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json;charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    if let Ok(phrase) = ReasonPhrase::try_from(reason.to_string()) {
        response.extensions_mut().insert(phrase);
    }
    response
}

fn ok(data: Value) -> Response<Full<Bytes>> {
    reply(200, "OK", json!({ "data": data }))
}

/// PVE's way to fail: the message is the reason phrase, the body empty data.
fn fail(status: u16, message: &str) -> Response<Full<Bytes>> {
    reply(status, message, json!({ "data": null }))
}

fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(text: &str, into: &mut BTreeMap<String, String>) {
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(decode(k), decode(v));
    }
}

fn digest_of(config: &BTreeMap<String, String>) -> String {
    let text: String = config.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    Sha256::digest(text.as_bytes())
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_mac(seed: u64) -> String {
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (seed >> 16) & 0xff,
        (seed >> 8) & 0xff,
        seed & 0xff
    )
}

async fn handle(state: Arc<Mutex<State>>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let upgrade = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let websocket = upgrade.then(|| {
        let key = req.headers().get("sec-websocket-key").cloned();
        let protocol = req.headers().get("sec-websocket-protocol").cloned();
        (hyper::upgrade::on(&mut req), key, protocol)
    });
    let shared = Arc::clone(&state);
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("PVEAPIToken={TOKEN}").as_str());
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let mut params = BTreeMap::new();
    if let Some(query) = req.uri().query() {
        parse_form(query, &mut params);
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    if let Ok(body) = body {
        parse_form(&String::from_utf8_lossy(&body), &mut params);
    }
    if !authorized {
        return fail(401, "authentication failure");
    }
    let Some(rest) = path.strip_prefix("/api2/json/") else {
        return fail(501, "Not Implemented");
    };
    let segments: Vec<String> = rest.split('/').map(decode).collect();
    let mut s = state.lock().unwrap();
    s.requests.push(Recorded {
        method: method.clone(),
        path: format!("/{}", segments.join("/")),
        params: params.clone(),
    });
    if let Some(Err(violation)) = schema().map(|s| s.check(&method, &segments, &params)) {
        s.violations.push(violation.clone());
        return reply(
            400,
            "Parameter verification failed.",
            json!({"data": null, "errors": {"request": violation}}),
        );
    }
    // Locks with a lifetime (a backup) end on their own.
    for guest in s.guests.values_mut() {
        if let Some(ttl) = guest.lock_ttl.as_mut() {
            if *ttl == 0 {
                guest.lock = None;
                guest.lock_ttl = None;
            } else {
                *ttl -= 1;
            }
        }
    }
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    if let ("GET", ["nodes", _, "qemu" | "lxc", vmid, "vncwebsocket"]) = (method.as_str(), &seg[..])
    {
        let Some((on_upgrade, key, protocol)) = websocket else {
            return fail(501, "websocket upgrade expected");
        };
        let vmid: u64 = vmid.parse().unwrap_or(0);
        return open_terminal(&mut s, shared, vmid, &params, on_upgrade, key, protocol);
    }
    route(&mut s, &method, &seg, &params)
}

/// Answers `vncwebsocket`: the port and ticket must be those of a waiting
/// termproxy session of the guest, used once.
fn open_terminal(
    s: &mut State,
    state: Arc<Mutex<State>>,
    vmid: u64,
    params: &BTreeMap<String, String>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    key: Option<hyper::header::HeaderValue>,
    protocol: Option<hyper::header::HeaderValue>,
) -> Response<Full<Bytes>> {
    let Some(key) = key else {
        return fail(400, "missing websocket-key");
    };
    let port = params.get("port").and_then(|p| p.parse::<u64>().ok());
    let ticket = params.get("vncticket").cloned().unwrap_or_default();
    let Some(session) = s
        .term_sessions
        .iter_mut()
        .find(|t| t.vmid == vmid && Some(t.port) == port && t.ticket == ticket && !t.used)
    else {
        return fail(401, "permission denied - invalid PVE ticket");
    };
    session.used = true;
    let hostname = s
        .guests
        .get(&vmid)
        .and_then(|g| g.config.get("hostname").or(g.config.get("name")).cloned())
        .unwrap_or_else(|| "guest".into());
    let login = format!("{TICKET_USER}:{ticket}\n").into_bytes();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        terminal(socket, state, vmid, login, hostname).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-accept",
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
        );
    // pveproxy echoes the subprotocol asked for.
    if let Some(protocol) = protocol {
        response = response.header("sec-websocket-protocol", protocol);
    }
    response.body(Full::new(Bytes::new())).unwrap()
}

/// One message of termproxy's protocol, taken from the front of `buffer`
/// when it is complete: `Ok(None)` while more bytes are needed.
fn next_message(buffer: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    let Some(&first) = buffer.first() else {
        return Ok(None);
    };
    let field = |from: usize| -> Result<Option<(u64, usize)>, String> {
        let Some(end) = buffer[from..].iter().position(|b| *b == b':') else {
            return if buffer.len() - from > 10 {
                Err("a number that does not end".into())
            } else {
                Ok(None)
            };
        };
        let digits = std::str::from_utf8(&buffer[from..from + end]).unwrap_or("x");
        let n = digits
            .parse::<u64>()
            .map_err(|_| format!("'{digits}' is not a number"))?;
        Ok(Some((n, from + end + 1)))
    };
    let taken = match first {
        b'2' => 1,
        b'0' | b'1' if buffer.len() < 2 => return Ok(None),
        b'0' | b'1' if buffer[1] != b':' => return Err("no ':' after the type".into()),
        b'0' => {
            let Some((len, start)) = field(2)? else {
                return Ok(None);
            };
            let end = start + len as usize;
            if buffer.len() < end {
                return Ok(None);
            }
            end
        }
        b'1' => {
            let Some((_, next)) = field(2)? else {
                return Ok(None);
            };
            let Some((_, end)) = field(next)? else {
                return Ok(None);
            };
            end
        }
        other => return Err(format!("unknown message type {:?}", other as char)),
    };
    Ok(Some(buffer.drain(..taken).collect()))
}

/// The shell behind a fake console: after the login, reads termproxy
/// messages, echoes keystrokes as a terminal does and answers a line.
async fn terminal<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    state: Arc<Mutex<State>>,
    vmid: u64,
    login: Vec<u8>,
    hostname: String,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let violation = |text: String| state.lock().unwrap().violations.push(text);
    let mut buffer: Vec<u8> = Vec::new();
    let mut logged_in = false;
    let mut line: Vec<u8> = Vec::new();
    let mut size = (80u64, 24u64);
    let prompt = format!("root@{hostname}:~# ");
    while let Some(frame) = socket.next().await {
        let bytes = match frame {
            Ok(Message::Binary(b)) => b.to_vec(),
            Ok(Message::Text(t)) => t.as_bytes().to_vec(),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        buffer.extend_from_slice(&bytes);
        let mut out: Vec<u8> = Vec::new();
        if !logged_in {
            let Some(end) = buffer.iter().position(|b| *b == b'\n') else {
                continue;
            };
            let got: Vec<u8> = buffer.drain(..=end).collect();
            if got != login {
                violation(format!(
                    "console of {vmid}: login {:?} is not USER:TICKET\\n",
                    String::from_utf8_lossy(&got)
                ));
                break;
            }
            logged_in = true;
            out.extend_from_slice(b"OK");
            out.extend_from_slice(format!("\r\nfake console of {vmid}\r\n{prompt}").as_bytes());
        }
        loop {
            let message = match next_message(&mut buffer) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    violation(format!("console of {vmid}: not a termproxy message ({e})"));
                    return;
                }
            };
            state
                .lock()
                .unwrap()
                .console_messages
                .push((vmid, String::from_utf8_lossy(&message).into_owned()));
            match message[0] {
                b'1' => {
                    let text = String::from_utf8_lossy(&message).into_owned();
                    let parts: Vec<&str> = text.split(':').collect();
                    size = (parts[1].parse().unwrap_or(0), parts[2].parse().unwrap_or(0));
                }
                b'0' => {
                    let start = message.iter().skip(2).position(|b| *b == b':').unwrap() + 3;
                    for &b in &message[start..] {
                        match b {
                            b'\r' | b'\n' => {
                                out.extend_from_slice(b"\r\n");
                                let text = String::from_utf8_lossy(&line).into_owned();
                                line.clear();
                                let text = text.trim();
                                if let Some(rest) = text.strip_prefix("echo ") {
                                    out.extend_from_slice(format!("{rest}\r\n").as_bytes());
                                } else if text == "stty size" {
                                    out.extend_from_slice(
                                        format!("{} {}\r\n", size.1, size.0).as_bytes(),
                                    );
                                } else if !text.is_empty() {
                                    out.extend_from_slice(
                                        format!("sh: {text}: not found\r\n").as_bytes(),
                                    );
                                }
                                out.extend_from_slice(prompt.as_bytes());
                            }
                            b => {
                                line.push(b);
                                out.push(b);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !out.is_empty() && socket.send(Message::Binary(out.into())).await.is_err() {
            break;
        }
    }
}

fn missing(node: &str, kind: &str, vmid: u64) -> Response<Full<Bytes>> {
    let dir = if kind == "qemu" { "qemu-server" } else { "lxc" };
    fail(
        500,
        &format!("Configuration file 'nodes/{node}/{dir}/{vmid}.conf' does not exist"),
    )
}

fn who(kind: &str) -> &'static str {
    if kind == "qemu" {
        "VM"
    } else {
        "CT"
    }
}

impl State {
    fn start_task(
        &mut self,
        node: &str,
        task_type: &str,
        id: &str,
        mut exit: String,
        effect: Effect,
        on_failure: Effect,
    ) -> Response<Full<Bytes>> {
        if self.transient_dispatches > 0 {
            self.transient_dispatches -= 1;
            return fail(500, "got timeout");
        }
        if let Some(failure) = self.fail_next.remove(task_type) {
            exit = failure;
        }
        self.next_pid += 1;
        let upid = format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:{task_type}:{id}:advps@pve!advps:",
            0x1000 + self.next_pid,
            0x2000 + self.next_pid,
            0x65F0_0000 + self.next_pid
        );
        self.tasks.insert(
            upid.clone(),
            Task {
                polls_left: self.task_polls,
                exit,
                effect,
                on_failure,
                polled: false,
            },
        );
        ok(json!(upid))
    }

    fn apply(&mut self, effect: &Effect) {
        match *effect {
            Effect::None => {}
            Effect::Start(id) => {
                if let Some(g) = self.guests.get_mut(&id) {
                    g.running = true;
                    g.uptime = 1;
                    if g.kind == "qemu" && g.config.get("agent").map(String::as_str) == Some("1") {
                        g.agent_up = true;
                    }
                    g.observed_ips = address_of(g).into_iter().collect();
                }
            }
            Effect::Stop(id) => {
                if let Some(g) = self.guests.get_mut(&id) {
                    g.running = false;
                    g.uptime = 0;
                    g.agent_up = false;
                    g.observed_ips.clear();
                }
            }
            Effect::Reboot(id) => {
                if let Some(g) = self.guests.get_mut(&id) {
                    g.uptime = 1;
                    g.observed_ips = address_of(g).into_iter().collect();
                }
            }
            Effect::Remove(id) => {
                self.guests.remove(&id);
            }
            Effect::Unlock(id) => {
                if let Some(g) = self.guests.get_mut(&id) {
                    g.lock = None;
                }
            }
        }
    }

    fn task_status(&mut self, node: &str, upid: &str) -> Response<Full<Bytes>> {
        let first_poll_400 = self.first_poll_400;
        let Some(task) = self.tasks.get_mut(upid) else {
            return fail(500, &format!("no such task '{upid}'"));
        };
        if first_poll_400 && !task.polled {
            task.polled = true;
            return fail(400, "unable to open file - No such file or directory");
        }
        task.polled = true;
        let parts: Vec<&str> = upid.split(':').collect();
        let mut status = json!({
            "upid": upid, "node": node, "pid": 4096, "pstart": 8192, "starttime": 1710000000,
            "type": parts.get(5), "id": parts.get(6), "user": "advps@pve!advps",
            "status": "running",
        });
        if task.polls_left > 0 {
            task.polls_left -= 1;
            return ok(status);
        }
        let (exit, effect, on_failure) = (
            task.exit.clone(),
            task.effect.clone(),
            task.on_failure.clone(),
        );
        // Effects happen once, when the task is first seen stopped.
        let first_time =
            !matches!(task.effect, Effect::None) || !matches!(task.on_failure, Effect::None);
        if first_time {
            task.effect = Effect::None;
            task.on_failure = Effect::None;
            if exit == "OK" || exit.starts_with("WARNINGS") {
                self.apply(&effect);
            } else {
                self.apply(&on_failure);
            }
        }
        status["status"] = json!("stopped");
        status["exitstatus"] = json!(exit);
        ok(status)
    }
}

/// A guest's static address from its config.
fn address_of(g: &FakeGuest) -> Option<String> {
    let key = if g.kind == "qemu" {
        "ipconfig0"
    } else {
        "net0"
    };
    g.config.get(key)?.split(',').find_map(|item| {
        let ip = item.strip_prefix("ip=")?;
        (ip != "dhcp" && ip != "manual").then(|| ip.split('/').next().unwrap().to_string())
    })
}

fn route(
    s: &mut State,
    method: &str,
    seg: &[&str],
    params: &BTreeMap<String, String>,
) -> Response<Full<Bytes>> {
    match (method, seg) {
        ("GET", ["version"]) => ok(json!({"version": "8.2.4", "release": "8.2", "repoid": "faa83925"})),
        ("GET", ["cluster", "resources"]) => match params.get("type").map(String::as_str) {
            Some("storage") => ok(Value::Array(
                s.storages
                    .iter()
                    .map(|(node, storage, shared, _)| {
                        json!({
                            "id": format!("storage/{node}/{storage}"), "type": "storage",
                            "node": node, "storage": storage, "status": "available",
                            "content": "vztmpl,iso,backup", "shared": if *shared { 1 } else { 0 },
                            "plugintype": if *shared { "cephfs" } else { "dir" },
                        })
                    })
                    .collect(),
            )),
            _ => ok(Value::Array(
                s.guests
                    .iter()
                    .map(|(id, g)| {
                        let mut r = json!({
                            "id": format!("{}/{id}", g.kind), "type": g.kind, "node": g.node,
                            // PVE 7 sent some vmids as strings: keep the driver honest.
                            "vmid": if g.kind == "lxc" { json!(id.to_string()) } else { json!(id) },
                            "status": if g.running { "running" } else { "stopped" },
                            "template": if g.template { 1 } else { 0 },
                            "maxmem": g.config.get("memory").and_then(|m| m.parse::<u64>().ok()).unwrap_or(512) * 1024 * 1024,
                            "uptime": g.uptime,
                            "name": g.config.get("name").or(g.config.get("hostname")),
                        });
                        if let Some(lock) = &g.lock {
                            r["lock"] = json!(lock);
                        }
                        if !g.template {
                            for (k, v) in g.usage().as_object().into_iter().flatten() {
                                r[k] = v.clone();
                            }
                        }
                        r
                    })
                    .collect(),
            )),
        },
        ("GET", ["nodes", node, "storage", storage, "content"]) => {
            match s.storages.iter().find(|(n, st, _, _)| n == node && st == storage) {
                Some((_, _, _, volids)) => ok(Value::Array(
                    volids
                        .iter()
                        .map(|v| json!({"volid": v, "content": "vztmpl", "format": "tzst", "size": 123456789, "ctime": 1710000000}))
                        .collect(),
                )),
                None => fail(500, &format!("storage '{storage}' does not exist")),
            }
        }
        ("GET", ["nodes", node, "tasks", upid, "status"]) => s.task_status(node, upid),
        ("POST", ["nodes", node, "lxc"]) => create_ct(s, node, params),
        (_, ["nodes", node, kind @ ("qemu" | "lxc"), vmid, rest @ ..]) => {
            let Ok(vmid) = vmid.parse::<u64>() else {
                return fail(400, "invalid vmid");
            };
            let present = s.guests.get(&vmid).is_some_and(|g| g.node == *node && g.kind == *kind);
            if !present {
                return missing(node, kind, vmid);
            }
            guest_call(s, method, node, kind, vmid, rest, params)
        }
        _ => fail(501, &format!("Method '{method} /{}' not implemented by the fake", seg.join("/"))),
    }
}

fn create_ct(
    s: &mut State,
    node: &str,
    params: &BTreeMap<String, String>,
) -> Response<Full<Bytes>> {
    let vmid: u64 = params["vmid"].parse().unwrap();
    if s.guests.contains_key(&vmid) {
        return fail(
            500,
            &format!("unable to create CT {vmid} - CT {vmid} already exists on node '{node}'"),
        );
    }
    let template = params.get("ostemplate").cloned().unwrap_or_default();
    let available = s
        .storages
        .iter()
        .any(|(n, _, _, volids)| n == node && volids.contains(&template));
    let exit = if available {
        "OK".to_string()
    } else {
        format!("volume '{template}' does not exist")
    };
    let mut guest = FakeGuest::lxc(node, "new", false);
    guest.config.clear();
    for (k, v) in params {
        if !matches!(k.as_str(), "vmid" | "ostemplate" | "password" | "start") {
            guest.config.insert(k.clone(), v.clone());
        }
    }
    if let Some(rootfs) = params.get("rootfs") {
        let (storage, size) = rootfs.split_once(':').unwrap_or(("local-lvm", "8"));
        guest.config.insert(
            "rootfs".into(),
            format!("{storage}:vm-{vmid}-disk-0,size={size}G"),
        );
    }
    if let Some(net0) = guest.config.get("net0").cloned() {
        if !net0.contains("hwaddr=") {
            guest
                .config
                .insert("net0".into(), format!("{net0},hwaddr={}", random_mac(vmid)));
        }
    }
    guest.config.insert("ostype".into(), "debian".into());
    guest.root_password = params.get("password").cloned();
    guest.lock = Some("create".into());
    s.guests.insert(vmid, guest);
    s.start_task(
        node,
        "vzcreate",
        &vmid.to_string(),
        exit,
        Effect::Unlock(vmid),
        Effect::Remove(vmid),
    )
}

fn guest_call(
    s: &mut State,
    method: &str,
    node: &str,
    kind: &str,
    vmid: u64,
    rest: &[&str],
    params: &BTreeMap<String, String>,
) -> Response<Full<Bytes>> {
    let g = s.guests.get(&vmid).unwrap().clone();
    let who = who(kind);
    let locked = g.lock.clone();
    let prefix = if kind == "qemu" { "qm" } else { "vz" };
    let id = vmid.to_string();
    match (method, rest) {
        ("GET", ["status", "current"]) => {
            let mut r = json!({
                "vmid": vmid, "status": if g.running { "running" } else { "stopped" },
                "name": g.config.get("name").or(g.config.get("hostname")),
                "maxmem": 2147483648u64, "cpus": 2,
                // LXC's uptime as a string: numbers are not always numbers.
                "uptime": if kind == "lxc" { json!(g.uptime.to_string()) } else { json!(g.uptime) },
            });
            for (k, v) in g.usage().as_object().into_iter().flatten() {
                if k != "maxcpu" {
                    r[k] = v.clone();
                }
            }
            if kind == "qemu" {
                r["qmpstatus"] = json!(if g.running { "running" } else { "stopped" });
                r["agent"] = json!(1);
            } else {
                r["type"] = json!("lxc");
            }
            if let Some(lock) = &locked {
                r["lock"] = json!(lock);
            }
            ok(r)
        }
        ("GET", ["config"]) => {
            let mut config: serde_json::Map<String, Value> = g
                .config
                .iter()
                .map(|(k, v)| {
                    // 0/1 and numbers come as JSON numbers where PVE types them so.
                    let value = match v.parse::<u64>() {
                        Ok(n)
                            if matches!(
                                k.as_str(),
                                "memory" | "cores" | "swap" | "template" | "unprivileged" | "agent"
                            ) =>
                        {
                            json!(n)
                        }
                        _ => json!(v),
                    };
                    (k.clone(), value)
                })
                .collect();
            if g.cipassword.is_some() {
                config.insert("cipassword".into(), json!("**********"));
            }
            if let Some(lock) = &locked {
                config.insert("lock".into(), json!(lock));
            }
            config.insert("digest".into(), json!(digest_of(&g.config)));
            ok(Value::Object(config))
        }
        ("POST" | "PUT", ["config"]) => {
            if let Some(lock) = &locked {
                return fail(500, &format!("{who} is locked ({lock})"));
            }
            if let Some(digest) = params.get("digest") {
                if *digest != digest_of(&g.config) {
                    return fail(
                        500,
                        "detected modified configuration - file changed by other user? Try again.",
                    );
                }
            }
            let guest = s.guests.get_mut(&vmid).unwrap();
            for (k, v) in params {
                match k.as_str() {
                    "digest" => {}
                    "delete" => {
                        for key in v.split(',') {
                            guest.config.remove(key);
                        }
                    }
                    "cipassword" => guest.cipassword = Some(v.clone()),
                    _ => {
                        guest.config.insert(k.clone(), v.clone());
                    }
                }
            }
            if kind == "lxc" && guest.running {
                // PVE applies a container's network change live.
                guest.observed_ips = address_of(guest).into_iter().collect();
            }
            if kind == "qemu" && method == "POST" {
                s.start_task(
                    node,
                    "qmconfig",
                    &id,
                    "OK".into(),
                    Effect::None,
                    Effect::None,
                )
            } else {
                ok(Value::Null)
            }
        }
        ("PUT", ["cloudinit"]) => ok(Value::Null),
        ("POST", ["status", action]) => {
            if let Some(lock) = &locked {
                return fail(500, &format!("{who} is locked ({lock})"));
            }
            let running = g.running;
            let (exit, effect) = match (*action, kind) {
                ("start", "lxc") if running => {
                    return fail(500, &format!("CT {vmid} already running"))
                }
                ("start", _) if running => (format!("VM {vmid} already running"), Effect::None),
                ("start", _) => ("OK".into(), Effect::Start(vmid)),
                ("stop" | "shutdown" | "reboot", "lxc") if !running => {
                    return fail(500, &format!("CT {vmid} not running"))
                }
                ("stop" | "shutdown", _) => ("OK".into(), Effect::Stop(vmid)),
                // QEMU's reboot of a stopped VM: nothing to do, and success.
                ("reboot", _) if !running => ("OK".into(), Effect::None),
                ("reboot", _) => ("OK".into(), Effect::Reboot(vmid)),
                _ => return fail(501, "not implemented by the fake"),
            };
            s.start_task(
                node,
                &format!("{prefix}{action}"),
                &id,
                exit,
                effect,
                Effect::None,
            )
        }
        ("DELETE", []) => {
            if let Some(lock) = &locked {
                return fail(500, &format!("{who} is locked ({lock})"));
            }
            if g.running {
                return fail(500, &format!("{who} {vmid} is running - destroy failed"));
            }
            s.start_task(
                node,
                &format!("{prefix}destroy"),
                &id,
                "OK".into(),
                Effect::Remove(vmid),
                Effect::None,
            )
        }
        ("POST", ["clone"]) => {
            if !g.template {
                return fail(500, "clone of a running guest is not what the fake models");
            }
            let newid: u64 = params["newid"].parse().unwrap();
            if s.guests.contains_key(&newid) {
                return fail(
                    500,
                    &format!("unable to create VM {newid}: config file already exists"),
                );
            }
            let target = params
                .get("target")
                .cloned()
                .unwrap_or_else(|| node.to_string());
            let mut clone = g.clone();
            clone.template = false;
            clone.node = target;
            clone.config.remove("template");
            clone.config.insert(
                "net0".into(),
                format!("virtio={},bridge=vmbr0", random_mac(newid)),
            );
            if let Some(name) = params.get("name") {
                clone.config.insert("name".into(), name.clone());
            }
            clone.lock = Some("clone".into());
            s.guests.insert(newid, clone);
            s.start_task(
                node,
                "qmclone",
                &id,
                "OK".into(),
                Effect::Unlock(newid),
                Effect::Remove(newid),
            )
        }
        ("GET", ["agent", "network-get-interfaces"]) | ("POST", ["agent", "set-user-password"]) => {
            if !g.running {
                return fail(500, &format!("VM {vmid} is not running"));
            }
            if !g.agent_up {
                return fail(500, "QEMU guest agent is not running");
            }
            if method == "POST" {
                let guest = s.guests.get_mut(&vmid).unwrap();
                guest.root_password = params.get("password").cloned();
                guest.password_user = params.get("username").cloned();
                return ok(json!({"result": {}}));
            }
            let mut nics = vec![
                json!({"name": "lo", "hardware-address": "00:00:00:00:00:00",
                "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]}),
            ];
            nics.push(json!({"name": "eth0", "hardware-address": "bc:24:11:aa:00:01",
                "ip-addresses": g.observed_ips.iter().map(|ip| json!({"ip-address": ip, "ip-address-type": "ipv4", "prefix": 24}))
                    .chain([json!({"ip-address": "fe80::be24:11ff:feaa:1", "ip-address-type": "ipv6", "prefix": 64})])
                    .collect::<Vec<_>>()}));
            ok(json!({"result": nics}))
        }
        ("POST", ["termproxy"]) => {
            if !g.running {
                return fail(500, &format!("{who} {vmid} not running"));
            }
            if kind == "qemu" {
                let serial = params
                    .get("serial")
                    .map(String::as_str)
                    .unwrap_or("serial0");
                if !g.config.contains_key(serial) {
                    return fail(500, &format!("VM {vmid} has no serial port '{serial}'"));
                }
            }
            let port = 5900 + s.term_sessions.len() as u64 % 100;
            let ticket = format!(
                "PVEVNC:{:08X}::{}+a/b==",
                0x6700_0000 + s.term_sessions.len(),
                random_mac(vmid * 1000 + s.term_sessions.len() as u64).replace(':', "")
            );
            s.term_sessions.push(TermSession {
                vmid,
                port,
                ticket: ticket.clone(),
                used: false,
            });
            s.next_pid += 1;
            let upid = format!(
                "UPID:{node}:{:08X}:{:08X}:{:08X}:vncproxy:{vmid}:{TICKET_USER}:",
                0x1000 + s.next_pid,
                0x2000 + s.next_pid,
                0x65F0_0000 + s.next_pid
            );
            ok(json!({"port": port, "ticket": ticket, "user": TICKET_USER, "upid": upid}))
        }
        ("GET", ["interfaces"]) => {
            if !g.running {
                return fail(500, &format!("CT {vmid} not running"));
            }
            let mut nics =
                vec![json!({"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8"})];
            let mut eth0 =
                json!({"name": "eth0", "hwaddr": "bc:24:11:bb:00:01", "inet6": "fe80::1/64"});
            if let Some(ip) = g.observed_ips.first() {
                eth0["inet"] = json!(format!("{ip}/24"));
            }
            nics.push(eth0);
            ok(Value::Array(nics))
        }
        _ => fail(
            501,
            &format!(
                "Method '{method} {}' not implemented by the fake",
                rest.join("/")
            ),
        ),
    }
}
