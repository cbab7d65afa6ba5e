//! A small client for the Proxmox VE REST API (`https://HOST:8006/api2/json`)
//! with an API token.
//!
//! - Authentication is the stateless token header
//!   `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`: no ticket to
//!   renew and no CSRF token on writes.
//! - The server is always verified, by a pinned SHA-256 fingerprint of its
//!   certificate (what the PVE web interface shows under Certificates, and
//!   what `qm remote-migrate` pins) or against a CA such as the cluster's
//!   `pve-root-ca.pem`. There is no way to switch verification off: the token
//!   can power off and wipe every guest of the cluster.
//! - Parameters go as `application/x-www-form-urlencoded` (query string for
//!   GET and DELETE), the encoding every PVE version accepts.
//! - Errors: PVE puts the message in the HTTP reason phrase (`500 VM 100
//!   already running`), and parameter errors in a 400 body's `errors`.
//!   [`classify`] maps them to [`DriverError`]s.
//! - Long operations answer a UPID; [`PveClient::wait_task`] polls the
//!   task's status on the node the UPID names until it has stopped.
//! - Transient refusals (`got timeout`, `got no worker upid`, config locks)
//!   are retried for a while, since they mean nothing was done.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

use super::ssh::PveSsh;
use crate::lxd::client::parse_https_endpoint;
use crate::{DriverError, DriverResult};

/// Default deadline of a single HTTP exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The port of `pveproxy` when an endpoint names none.
pub const DEFAULT_PORT: u16 = 8006;
/// How long a call refused for a transient reason (lock, busy worker) is
/// tried again before the refusal is reported.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// What a Proxmox node's encrypted credentials hold, as JSON: the API token,
/// how the server is recognised, and optionally the SSH access that lets
/// advps run `pct exec` on the nodes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PveCredentials {
    /// `USER@REALM!TOKENID=SECRET`.
    pub token: String,
    pub server: PveTrust,
    /// Absent in credentials stored before SSH access existed, and left out
    /// when there is none, so that both read back the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<PveSsh>,
}

/// How the server's certificate is verified. There is no "insecure" choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PveTrust {
    /// Accept exactly the certificate with this SHA-256 fingerprint, written
    /// as PVE shows it (`AB:CD:...`, 32 bytes).
    Fingerprint(String),
    /// Verify the chain up to this CA (PEM) and the endpoint's name.
    Ca(String),
}

/// Never prints the token's secret or the SSH private key.
impl fmt::Debug for PveCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.token.split_once('=').map(|(id, _)| id).unwrap_or("?");
        f.debug_struct("PveCredentials")
            .field("token", &format!("{id}=<redacted>"))
            .field("server", &self.server)
            .field("ssh", &self.ssh)
            .finish()
    }
}

impl PveCredentials {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("credentials serialize to JSON")
    }

    pub fn from_json(text: &str) -> Result<PveCredentials, String> {
        serde_json::from_str(text)
            .map_err(|e| format!("stored Proxmox credentials are malformed: {e}"))
    }

    /// Checks the token's form, builds the TLS configuration and checks the
    /// SSH access, so that a mistake is reported when the node is added, not
    /// at the first call.
    pub fn validate(&self) -> Result<(), String> {
        check_token(&self.token)?;
        tls_config(&self.server)?;
        match &self.ssh {
            Some(ssh) => ssh.validate(),
            None => Ok(()),
        }
    }
}

/// Checks `USER@REALM!TOKENID=SECRET` without ever quoting the secret.
pub fn check_token(token: &str) -> Result<(), String> {
    let bad = || {
        "the API token must look like USER@REALM!TOKENID=SECRET (e.g. advps@pve!advps=xxxxxxxx-...)"
            .to_string()
    };
    let (id, secret) = token.split_once('=').ok_or_else(bad)?;
    let (user, token_id) = id.split_once('!').ok_or_else(bad)?;
    let (name, realm) = user.split_once('@').ok_or_else(bad)?;
    let printable = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic());
    if !(printable(name) && printable(realm) && printable(token_id) && printable(secret)) {
        return Err(bad());
    }
    Ok(())
}

/// Parses a SHA-256 fingerprint: colon-separated hex as PVE and openssl show
/// it, or plain hex; any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bad = || {
        format!(
            "fingerprint '{text}': expected the certificate's SHA-256 fingerprint, 32 bytes in \
             hex (AB:CD:...)"
        )
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A fingerprint in PVE's notation (upper-case colon-hex).
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A `https://host[:port]` endpoint with PVE's port as the default.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let (host, port) = parse_https_endpoint(endpoint)?;
    // The shared parser defaults to LXD's port; tell "no port" apart.
    let authority = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let explicit = authority.rsplit_once(':').is_some_and(|(before, p)| {
        !p.is_empty()
            && (!before.contains(':') || before.ends_with(']'))
            && p.chars().all(|c| c.is_ascii_digit())
    });
    Ok((host, if explicit { port } else { DEFAULT_PORT }))
}

/// An error answer of the API, before it becomes a [`DriverError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// The HTTP status, or 0 for a failed task.
    pub status: u16,
    pub message: String,
}

impl ApiFailure {
    /// Whether the refusal means nothing was done and the same call may
    /// succeed shortly: a busy config lock, or pveproxy/pvedaemon too busy to
    /// start a worker.
    pub fn is_transient(&self) -> bool {
        is_transient_message(&self.message)
    }

    pub fn into_driver_error(self) -> DriverError {
        classify(self.status, &self.message)
    }
}

pub fn is_transient_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("got timeout") || lower.contains("no worker upid") || is_lock_message(message)
}

/// A guest's configuration is locked by another operation.
pub fn is_lock_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("is locked") || lower.contains("can't lock file")
}

/// Maps PVE's error text to the driver's vocabulary.
pub fn classify(status: u16, message: &str) -> DriverError {
    let lower = message.to_ascii_lowercase();
    if status == 401 {
        return DriverError::Engine(format!(
            "authentication failed ({message}): check the API token (USER@REALM!TOKENID=SECRET)"
        ));
    }
    if status == 403 {
        return DriverError::Engine(format!(
            "permission denied ({message}): the token's role lacks a privilege advps needs"
        ));
    }
    if lower.contains("guest agent") {
        // Before "not running": "QEMU guest agent is not running" is about
        // the agent, not the guest.
        return DriverError::Engine(format!(
            "{message} (the guest needs qemu-guest-agent running and 'agent: 1')"
        ));
    }
    if lower.contains("does not exist") || lower.contains("no such resource") {
        DriverError::NotFound
    } else if lower.contains("already running") {
        DriverError::AlreadyRunning
    } else if lower.contains("not running") {
        DriverError::NotRunning
    } else if status == 0 || message.is_empty() {
        DriverError::Engine(if message.is_empty() {
            "the task failed".into()
        } else {
            message.to_string()
        })
    } else {
        DriverError::Engine(message.to_string())
    }
}

/// The node a UPID (`UPID:node:pid:pstart:starttime:type:id:user:`) ran on.
pub fn upid_node(upid: &str) -> Option<&str> {
    let mut parts = upid.split(':');
    (parts.next() == Some("UPID"))
        .then(|| parts.next())
        .flatten()
        .filter(|n| !n.is_empty())
}

/// Percent-encodes a path segment, query value or form value.
pub fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Form parameters, in order.
pub type Params = Vec<(String, String)>;

fn form(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Clone)]
pub struct PveClient {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    authorization: String,
    request_timeout: Duration,
    poll_interval: Duration,
    lock_wait: Duration,
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveClient")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl PveClient {
    /// A client for `https://host[:8006]`. Fails if the endpoint, the token or
    /// the trust settings cannot be used; nothing is sent here.
    pub fn new(endpoint: &str, credentials: &PveCredentials) -> DriverResult<PveClient> {
        let (host, port) = parse_endpoint(endpoint).map_err(DriverError::Unreachable)?;
        check_token(&credentials.token).map_err(DriverError::Unreachable)?;
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.clone()).map_err(|_| {
                DriverError::Unreachable(format!("endpoint '{endpoint}': invalid host name"))
            })?,
        };
        let config = tls_config(&credentials.server).map_err(DriverError::Unreachable)?;
        Ok(PveClient {
            host,
            port,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            authorization: format!("PVEAPIToken={}", credentials.token),
            request_timeout: REQUEST_TIMEOUT,
            poll_interval: Duration::from_millis(500),
            lock_wait: LOCK_WAIT,
        })
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> PveClient {
        self.request_timeout = timeout;
        self
    }

    /// The first pause between task status polls (it grows to 6x that).
    pub fn with_poll_interval(mut self, interval: Duration) -> PveClient {
        self.poll_interval = interval;
        self
    }

    /// How long transient refusals (locks, busy workers) are retried.
    pub fn with_lock_wait(mut self, wait: Duration) -> PveClient {
        self.lock_wait = wait;
        self
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    pub fn lock_wait(&self) -> Duration {
        self.lock_wait
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.authority())
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// One HTTP exchange with the deadline `timeout`. Returns the `data` of
    /// a success, or the failure with PVE's message.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
        timeout: Duration,
    ) -> DriverResult<Result<Value, ApiFailure>> {
        let what = format!("{method} {path}");
        tokio::time::timeout(timeout, self.exchange_inner(method, path, params))
            .await
            .map_err(|_| DriverError::Timeout(what))?
    }

    /// A TLS connection to the API endpoint, verified as the node's
    /// settings say: every call and the console's WebSocket start here.
    async fn connect_tls(&self) -> DriverResult<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| DriverError::Unreachable(format!("{}: {e}", self.authority())))?;
        let _ = tcp.set_nodelay(true);
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                DriverError::Unreachable(format!(
                    "{}: TLS handshake failed: {}",
                    self.authority(),
                    crate::tls::describe_tls_error(&e, false)
                ))
            })
    }

    async fn exchange_inner(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
    ) -> DriverResult<Result<Value, ApiFailure>> {
        let tls = self.connect_tls().await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| DriverError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let in_query = matches!(method, Method::GET | Method::DELETE);
        let mut uri = format!("/api2/json{path}");
        if in_query && !params.is_empty() {
            uri.push('?');
            uri.push_str(&form(params));
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", self.authority())
            .header("authorization", &self.authorization)
            .header("accept", "application/json");
        let body = if in_query {
            Bytes::new()
        } else {
            builder = builder.header("content-type", "application/x-www-form-urlencoded");
            Bytes::from(form(params))
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| DriverError::Engine(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| DriverError::Unreachable(format!("{}: {e}", self.endpoint())))?;
        let status = response.status();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| DriverError::Unreachable(format!("{}: {e}", self.endpoint())))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(value.get("data").cloned().unwrap_or(Value::Null)));
        }
        let mut message = reason.trim().to_string();
        // Parameter errors name each parameter in the body.
        if let Some(errors) = value.get("errors").and_then(Value::as_object) {
            let details: Vec<String> = errors
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or(&v.to_string()).trim()))
                .collect();
            if !details.is_empty() {
                message = format!("{message} ({})", details.join("; "));
            }
        }
        Ok(Err(ApiFailure {
            status: status.as_u16(),
            message,
        }))
    }

    /// Opens a WebSocket on the API (`vncwebsocket`): the same endpoint, TLS
    /// verification and token header as every other call, with the
    /// `binary` subprotocol PVE's own console clients ask for (pveproxy
    /// echoes it). `params` go into the query string.
    pub async fn websocket(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> DriverResult<WebSocketStream<TlsStream<TcpStream>>> {
        let what = format!("websocket {path}");
        tokio::time::timeout(self.request_timeout, async {
            let tls = self.connect_tls().await?;
            let mut url = format!("wss://{}/api2/json{path}", self.authority());
            if !params.is_empty() {
                url.push('?');
                url.push_str(&form(params));
            }
            let mut request = url
                .into_client_request()
                .map_err(|e| DriverError::Engine(format!("websocket request: {e}")))?;
            let headers = request.headers_mut();
            let header = |v: &str| {
                HeaderValue::from_str(v)
                    .map_err(|_| DriverError::Engine("unusable header value".into()))
            };
            headers.insert("authorization", header(&self.authorization)?);
            headers.insert("sec-websocket-protocol", header("binary")?);
            let (socket, _) = tokio_tungstenite::client_async(request, tls)
                .await
                .map_err(|e| match e {
                    // PVE refused the upgrade (a stale ticket, a missing
                    // privilege).
                    tokio_tungstenite::tungstenite::Error::Http(response) => classify(
                        response.status().as_u16(),
                        &format!(
                            "the console's websocket was refused ({})",
                            response.status()
                        ),
                    ),
                    other => DriverError::Unreachable(format!("{}: {other}", self.endpoint())),
                })?;
            Ok(socket)
        })
        .await
        .map_err(|_| DriverError::Timeout(what))?
    }

    /// Calls the API, trying again while PVE refuses for a transient reason;
    /// returns the `data` of the answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
    ) -> DriverResult<Value> {
        self.call_with_timeout(method, path, params, self.request_timeout)
            .await
    }

    pub async fn call_with_timeout(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
        timeout: Duration,
    ) -> DriverResult<Value> {
        let deadline = tokio::time::Instant::now() + self.lock_wait;
        let mut pause = self.poll_interval;
        loop {
            match self.exchange(method.clone(), path, params, timeout).await? {
                Ok(data) => return Ok(data),
                Err(failure) if failure.is_transient() => {
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(failure.into_driver_error());
                    }
                    tracing::debug!(path, message = %failure.message, "transient refusal, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.poll_interval * 6);
                }
                Err(failure) => return Err(failure.into_driver_error()),
            }
        }
    }

    pub async fn get(&self, path: &str, params: &[(String, String)]) -> DriverResult<Value> {
        self.call(Method::GET, path, params).await
    }

    /// Polls a task until it has stopped, for at most `wait`. `Ok` with the
    /// exit status when it is `OK` or `WARNINGS: n`; otherwise the exit
    /// status is the error.
    pub async fn wait_task(&self, upid: &str, wait: Duration) -> DriverResult<String> {
        self.wait_task_raw(upid, wait)
            .await?
            .map_err(ApiFailure::into_driver_error)
    }

    /// Like [`PveClient::wait_task`], keeping a task's failure apart from a
    /// failure to learn its outcome.
    pub async fn wait_task_raw(
        &self,
        upid: &str,
        wait: Duration,
    ) -> DriverResult<Result<String, ApiFailure>> {
        let node = upid_node(upid)
            .ok_or_else(|| DriverError::Engine(format!("not a task id: '{upid}'")))?;
        let path = format!("/nodes/{}/tasks/{}/status", encode(node), encode(upid));
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = self.poll_interval;
        loop {
            match self
                .exchange(Method::GET, &path, &[], self.request_timeout)
                .await
            {
                Ok(Ok(status)) => {
                    if status.get("status").and_then(Value::as_str) == Some("stopped") {
                        let exit = status
                            .get("exitstatus")
                            .and_then(Value::as_str)
                            .unwrap_or("unexpected status")
                            .to_string();
                        return Ok(if exit == "OK" || exit.starts_with("WARNINGS") {
                            Ok(exit)
                        } else {
                            Err(ApiFailure {
                                status: 0,
                                message: exit,
                            })
                        });
                    }
                }
                // Right after dispatch the task file may not be there yet: PVE
                // answers 400 for a moment.
                Ok(Err(failure)) if failure.status == 400 || failure.is_transient() => {}
                Ok(Err(failure)) => return Err(failure.into_driver_error()),
                // A lost poll is not a lost task: try again until the deadline.
                Err(e) if e.is_transient() => {
                    tracing::debug!(upid, error = %e, "task poll failed, retrying")
                }
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(DriverError::Timeout(format!("task {upid}")));
            }
            tokio::time::sleep(pause).await;
            pause = (pause + pause / 2).min(self.poll_interval * 6);
        }
    }

    /// Calls an API that may start a task and waits for it. A refusal for a
    /// transient reason, at dispatch or as the task's outcome (QEMU checks
    /// some locks inside the worker), is tried again while the lock wait
    /// lasts: either way nothing was done.
    pub async fn run(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
        wait: Duration,
    ) -> DriverResult<()> {
        let deadline = tokio::time::Instant::now() + self.lock_wait;
        let mut pause = self.poll_interval;
        loop {
            let data = self.call(method.clone(), path, params).await?;
            let Some(upid) = data.as_str().filter(|s| s.starts_with("UPID:")) else {
                return Ok(());
            };
            tracing::debug!(path, upid, "task started");
            match self.wait_task_raw(upid, wait).await? {
                Ok(_) => return Ok(()),
                // Only a lock counts here: inside a task "got timeout" can be
                // a real failure (a shutdown the guest ignored).
                Err(failure)
                    if is_lock_message(&failure.message)
                        && tokio::time::Instant::now() + pause <= deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.poll_interval * 6);
                }
                Err(failure) => return Err(failure.into_driver_error()),
            }
        }
    }
}

/// The TLS configuration: ring provider, TLS 1.2/1.3, no client certificate,
/// and the server verification asked for.
fn tls_config(trust: &PveTrust) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match trust {
        PveTrust::Fingerprint(text) => {
            let verifier = crate::tls::PinnedFingerprint::new(
                parse_fingerprint(text)?,
                Arc::clone(&provider),
                format_fingerprint,
            );
            // Replaces the chain and name checks with the fingerprint
            // comparison; handshake signatures are still verified against the
            // presented certificate's key.
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        PveTrust::Ca(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("CA certificate: not valid PEM: {e}"))?;
            if certs.is_empty() {
                return Err("CA certificate: no PEM certificate found".into());
            }
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate: unusable as a trust anchor: {e}"))?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("CA certificate: {e}"))?;
            builder.with_webpki_verifier(verifier).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_default_to_port_8006() {
        assert_eq!(
            parse_endpoint("https://pve1.example.net").unwrap(),
            ("pve1.example.net".into(), 8006)
        );
        assert_eq!(
            parse_endpoint("https://10.0.0.2:8443/").unwrap(),
            ("10.0.0.2".into(), 8443)
        );
        assert_eq!(
            parse_endpoint("https://[fd00::2]").unwrap(),
            ("fd00::2".into(), 8006)
        );
        assert_eq!(
            parse_endpoint("https://[fd00::2]:9006").unwrap(),
            ("fd00::2".into(), 9006)
        );
        assert!(parse_endpoint("http://pve1:8006").is_err());
        assert!(parse_endpoint("https://pve1:8006/api2/json").is_err());
    }

    #[test]
    fn tokens_and_fingerprints_are_checked() {
        assert!(check_token("advps@pve!advps=0b6e-11").is_ok());
        for bad in ["advps@pve=x", "advps!t=x", "advps@pve!t=", "@pve!t=x", "x"] {
            assert!(check_token(bad).is_err(), "{bad}");
        }
        let hex = "AB:".repeat(31) + "CD";
        assert_eq!(parse_fingerprint(&hex).unwrap()[31], 0xcd);
        assert_eq!(
            parse_fingerprint(&hex.to_lowercase().replace(':', "")).unwrap()[0],
            0xab
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"ZZ:".repeat(32)[..95]).is_err());
        assert_eq!(format_fingerprint(&[0xab, 0x01]), "AB:01");
    }

    #[test]
    fn credentials_round_trip_and_never_show_the_secret() {
        let mut credentials = PveCredentials {
            token: "advps@pve!advps=s3cr3t-uuid".into(),
            server: PveTrust::Fingerprint("AB:".repeat(31) + "CD"),
            ssh: None,
        };
        let text = credentials.to_json();
        // Without SSH access the stored form is the one from before it existed.
        assert!(!text.contains("ssh"), "{text}");
        assert_eq!(PveCredentials::from_json(&text).unwrap(), credentials);
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("advps@pve!advps"), "{shown}");
        assert!(credentials.validate().is_ok());

        credentials.ssh = Some(PveSsh {
            user: "root".into(),
            hosts: vec!["10.0.0.1".into(), "pve2=10.0.0.2:2222".into()],
            private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkSECRET\n\
                          -----END OPENSSH PRIVATE KEY-----\n"
                .into(),
            known_hosts: "10.0.0.1 ssh-ed25519 AAAAC3Nza\n[10.0.0.2]:2222 ssh-ed25519 AAAAC3Nzb\n"
                .into(),
        });
        let text = credentials.to_json();
        assert_eq!(PveCredentials::from_json(&text).unwrap(), credentials);
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("b3BlbnNzaC1rZXkSECRET"), "{shown}");
        assert!(shown.contains("pve2=10.0.0.2:2222"), "{shown}");
        assert!(credentials.validate().is_ok());
        credentials.ssh.as_mut().unwrap().hosts = vec!["bad host".into()];
        assert!(credentials.validate().is_err());
        for bad in [
            r#"{"token":"a@b!c=d"}"#,
            r#"{"token":"a@b!c=d","server":{"insecure":true}}"#,
            r#"{"token":"a@b!c=d","server":{"ca":"x"},"verify":false}"#,
        ] {
            assert!(PveCredentials::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_map_to_driver_errors() {
        assert_eq!(
            classify(
                500,
                "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist"
            ),
            DriverError::NotFound
        );
        assert_eq!(
            classify(500, "CT 101 already running"),
            DriverError::AlreadyRunning
        );
        assert_eq!(
            classify(0, "VM 100 already running"),
            DriverError::AlreadyRunning
        );
        assert_eq!(classify(500, "CT 101 not running"), DriverError::NotRunning);
        assert!(matches!(
            classify(500, "QEMU guest agent is not running"),
            DriverError::Engine(m) if m.contains("qemu-guest-agent")
        ));
        assert!(
            matches!(classify(401, "no ticket"), DriverError::Engine(m) if m.contains("token"))
        );
        assert!(is_transient_message("VM is locked (clone)"));
        assert!(is_transient_message(
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
        ));
        assert!(is_transient_message(
            "got no worker upid - start worker failed"
        ));
        assert!(!is_transient_message("VM 100 already running"));
    }

    #[test]
    fn upids_name_their_node() {
        assert_eq!(
            upid_node("UPID:pve2:000A1B2C:0012D687:65F0A0B1:qmstart:100:advps@pve!advps:"),
            Some("pve2")
        );
        assert_eq!(upid_node("nonsense"), None);
        assert_eq!(encode("advps@pve!t:x"), "advps%40pve%21t%3Ax");
    }
}
