//! A small client for the LXD/Incus REST API, over the local unix socket or
//! over HTTPS with a client certificate (LXD's remote API).
//!
//! Every call has a deadline. Responses come in LXD's three shapes (`sync`,
//! `async` with an operation, `error`); [`LxdClient::call`] waits for async
//! operations through `/1.0/operations/<id>/wait` and turns failures into
//! [`DriverError`]s, so callers deal with results only.
//!
//! Both transports do one HTTP/1.1 exchange per connection: the unix socket
//! costs nothing to open, and over HTTPS the shared TLS configuration keeps
//! rustls' session cache, so later connections resume instead of doing a
//! full handshake.
//!
//! HTTPS always verifies the server, in one of two ways ([`ServerTrust`]):
//! pinning the exact certificate (LXD generates a self-signed one per host,
//! and `lxc remote add` trusts it the same way), or checking the chain and
//! the name against a CA. There is deliberately no way to switch verification
//! off: the client certificate gives full control of the node, and a
//! connection to an impostor would hand it the guests' root passwords.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use tokio_tungstenite::WebSocketStream;

use crate::{DriverError, DriverResult};

/// A connection to the server, on either transport.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Default deadline of a single HTTP exchange with the engine.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// LXD's port for its remote API when an endpoint names none.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

/// How the client proves itself to a remote LXD and how it recognises the
/// server: what a node's encrypted credentials hold, as JSON.
///
/// All values are PEM text, kept as given so that an operator can compare
/// them with the files they came from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCredentials {
    /// The client certificate (chain), as trusted on the server.
    pub client_cert: String,
    /// Its private key (PKCS#8, SEC1 or PKCS#1).
    pub client_key: String,
    /// How to verify the server.
    pub server: ServerTrust,
}

/// How the server's certificate is verified. There is no "insecure" choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerTrust {
    /// Accept exactly this certificate, whatever names or dates it carries:
    /// the usual way for LXD's self-signed server certificate, whose names
    /// rarely match the address the node is reached at.
    PinnedCert(String),
    /// Verify the chain up to this CA (PEM, one or more certificates) and
    /// that the certificate is valid for the endpoint's host name or address.
    Ca(String),
}

/// Never prints the key, so that credentials can sit in structures that are
/// logged or shown with `{:?}`.
impl fmt::Debug for TlsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCredentials")
            .field("client_cert", &fingerprint_of_pem(&self.client_cert))
            .field("client_key", &"<redacted>")
            .field("server", &self.server)
            .finish()
    }
}

impl TlsCredentials {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("credentials serialize to JSON")
    }

    pub fn from_json(text: &str) -> Result<TlsCredentials, String> {
        serde_json::from_str(text).map_err(|e| format!("stored TLS credentials are malformed: {e}"))
    }

    /// Parses every PEM part and builds the TLS configuration, so that a
    /// wrong file is reported when it is given, not at the first call.
    pub fn validate(&self) -> Result<(), String> {
        tls_config(self).map(|_| ())
    }
}

/// A `https://host[:port][/]` endpoint, split into host and port.
///
/// IPv6 addresses are written in brackets (`https://[::1]:8443`). Paths,
/// queries and user information are refused rather than ignored, since the
/// API lives at the root and a stray part is a mistake worth reporting.
pub fn parse_https_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("endpoint '{endpoint}': {why}");
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| bad("expected https://host:port"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "only https://host:port is allowed (no path, query or user)",
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in the address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("brackets must hold an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected ':' after ']'"))?,
            ),
        };
        (host.to_string(), port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        return Err(bad("the host name has characters a host name cannot have"));
    }
    let port = match port {
        None => DEFAULT_HTTPS_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok((host, port))
}

/// Where the client connects.
#[derive(Clone)]
enum Transport {
    Unix(PathBuf),
    Https {
        host: String,
        port: u16,
        server_name: ServerName<'static>,
        connector: TlsConnector,
    },
}

#[derive(Clone)]
pub struct LxdClient {
    transport: Transport,
    request_timeout: Duration,
}

impl fmt::Debug for LxdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LxdClient")
            .field("endpoint", &self.endpoint())
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A body to send: JSON, or raw bytes with extra headers (file uploads).
pub enum Body<'a> {
    None,
    Json(&'a Value),
    Raw {
        bytes: Bytes,
        headers: &'a [(&'a str, String)],
    },
}

impl LxdClient {
    /// A client for the local server behind a unix socket.
    pub fn new(socket: impl AsRef<Path>) -> LxdClient {
        LxdClient {
            transport: Transport::Unix(socket.as_ref().to_path_buf()),
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// A client for a remote server's HTTPS API at `https://host:port`.
    /// Fails if the endpoint or any of the credentials cannot be parsed;
    /// nothing is sent over the network here.
    pub fn https(endpoint: &str, credentials: &TlsCredentials) -> DriverResult<LxdClient> {
        let (host, port) = parse_https_endpoint(endpoint).map_err(DriverError::Unreachable)?;
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.clone()).map_err(|_| {
                DriverError::Unreachable(format!("endpoint '{endpoint}': invalid host name"))
            })?,
        };
        let config = tls_config(credentials).map_err(DriverError::Unreachable)?;
        Ok(LxdClient {
            transport: Transport::Https {
                host,
                port,
                server_name,
                connector: TlsConnector::from(Arc::new(config)),
            },
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> LxdClient {
        self.request_timeout = timeout;
        self
    }

    /// The unix socket, for a local client.
    pub fn socket(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Unix(path) => Some(path),
            Transport::Https { .. } => None,
        }
    }

    /// Where the client connects, for messages (`unix:///...`,
    /// `https://host:port`).
    pub fn endpoint(&self) -> String {
        match &self.transport {
            Transport::Unix(path) => format!("unix://{}", path.display()),
            Transport::Https { .. } => format!("https://{}", self.authority()),
        }
    }

    /// The `Host` header: LXD ignores it on the socket, but over TCP it is
    /// the server's address as HTTP/1.1 wants it.
    fn authority(&self) -> String {
        match &self.transport {
            Transport::Unix(_) => "lxd".to_string(),
            Transport::Https { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Transport::Https { host, port, .. } => format!("{host}:{port}"),
        }
    }

    /// One HTTP exchange; returns the status and the parsed JSON body.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> DriverResult<(u16, Value)> {
        let what = format!("{method} {path}");
        tokio::time::timeout(
            self.request_timeout,
            self.exchange_inner(method, path, body),
        )
        .await
        .map_err(|_| DriverError::Timeout(what))?
    }

    async fn exchange_inner(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> DriverResult<(u16, Value)> {
        let stream = self.open_stream().await?;
        self.exchange_on(stream, method, path, body).await
    }

    /// Opens a WebSocket on the server (an operation's data or control
    /// channel, `/1.0/operations/{id}/websocket?secret=...`), over either
    /// transport, within the request deadline.
    pub async fn websocket(&self, path: &str) -> DriverResult<WebSocketStream<Box<dyn Io>>> {
        let what = format!("websocket {}", path.split('?').next().unwrap_or(path));
        tokio::time::timeout(self.request_timeout, async {
            let stream = self.open_stream().await?;
            let url = format!("ws://{}{path}", self.authority());
            let (socket, _) = tokio_tungstenite::client_async(url, stream)
                .await
                .map_err(|e| DriverError::Unreachable(self.failure(&e)))?;
            Ok(socket)
        })
        .await
        .map_err(|_| DriverError::Timeout(what))?
    }

    /// A connection to the server on its transport (TLS established).
    async fn open_stream(&self) -> DriverResult<Box<dyn Io>> {
        match &self.transport {
            Transport::Unix(socket) => {
                let stream = UnixStream::connect(socket)
                    .await
                    .map_err(|e| DriverError::Unreachable(format!("{}: {e}", socket.display())))?;
                Ok(Box::new(stream))
            }
            Transport::Https {
                host,
                port,
                server_name,
                connector,
            } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| DriverError::Unreachable(format!("{}: {e}", self.authority())))?;
                let _ = tcp.set_nodelay(true);
                let tls = connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| {
                        DriverError::Unreachable(format!(
                            "{}: TLS handshake failed: {}",
                            self.authority(),
                            crate::tls::describe_tls_error(&e, true)
                        ))
                    })?;
                Ok(Box::new(tls))
            }
        }
    }

    /// A failed exchange in words: where, and every cause (over TLS 1.3 the
    /// server's refusal of a client certificate only shows up as the cause
    /// of a broken read).
    fn failure(&self, error: &(dyn std::error::Error + 'static)) -> String {
        let mut text = format!("{}: {error}", self.endpoint());
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    /// The HTTP/1.1 exchange on an open connection of either transport.
    async fn exchange_on<S>(
        &self,
        stream: S,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> DriverResult<(u16, Value)>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| DriverError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.authority());
        let payload = match body {
            Body::None => Bytes::new(),
            Body::Json(value) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(
                    serde_json::to_vec(value).map_err(|e| DriverError::Engine(e.to_string()))?,
                )
            }
            Body::Raw { bytes, headers } => {
                for (name, value) in headers {
                    builder = builder.header(*name, value.as_str());
                }
                bytes
            }
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| DriverError::Engine(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| DriverError::Unreachable(self.failure(&e)))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| DriverError::Unreachable(self.failure(&e)))?
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// Calls the API and returns the `metadata` of a sync answer, or of the
    /// finished operation for an async one (waiting up to `op_wait`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        op_wait: Duration,
    ) -> DriverResult<Value> {
        let is_server_info = method == Method::GET && path == "/1.0";
        let (status, value) = self.exchange(method, path, body).await?;
        match value.get("type").and_then(Value::as_str) {
            Some("sync") => {
                let metadata = value.get("metadata").cloned().unwrap_or(Value::Null);
                // An untrusted client still gets a (reduced) answer to
                // `GET /1.0`, and then public data or 403s on the rest:
                // catch it at the first call rather than as odd results.
                if is_server_info
                    && matches!(self.transport, Transport::Https { .. })
                    && metadata.get("auth").and_then(Value::as_str) == Some("untrusted")
                {
                    return Err(DriverError::Engine(format!(
                        "{} does not trust this client certificate (add it to the \
                         server's trust store, e.g. `lxc config trust add`)",
                        self.endpoint()
                    )));
                }
                Ok(metadata)
            }
            Some("async") => {
                let id = value
                    .pointer("/metadata/id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        DriverError::Engine("async answer without an operation id".into())
                    })?
                    .to_string();
                self.wait_operation(&id, op_wait).await
            }
            _ => Err(error_from(status, &value)),
        }
    }

    /// Waits for an operation and returns its metadata once it succeeded.
    pub async fn wait_operation(&self, id: &str, wait: Duration) -> DriverResult<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout(format!("operation {id}")));
            }
            // Long-poll in slices shorter than the request deadline.
            let slice = left
                .min(self.request_timeout.saturating_sub(Duration::from_secs(2)))
                .max(Duration::from_secs(1));
            let path = format!(
                "/1.0/operations/{id}/wait?timeout={}",
                slice.as_secs().max(1)
            );
            let (status, value) = self.exchange(Method::GET, &path, Body::None).await?;
            if value.get("type").and_then(Value::as_str) == Some("error") {
                return Err(error_from(status, &value));
            }
            let op = value.get("metadata").cloned().unwrap_or(Value::Null);
            match op.get("status").and_then(Value::as_str) {
                Some("Success") => return Ok(op),
                Some("Running") | Some("Pending") | Some("Queued") => continue,
                _ => {
                    let err = op
                        .get("err")
                        .and_then(Value::as_str)
                        .unwrap_or("operation failed");
                    return Err(classify(0, err));
                }
            }
        }
    }
}

/// Builds the TLS client configuration: ring provider, TLS 1.2/1.3, the
/// client certificate, and the server verification asked for.
fn tls_config(credentials: &TlsCredentials) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&credentials.client_cert, "client certificate")?;
    // The parser's own message can quote a line of the input: leave it out,
    // as that line could be key material.
    let key = PrivateKeyDer::from_pem_slice(credentials.client_key.as_bytes()).map_err(|_| {
        "client key: no usable PEM private key (PKCS#8, SEC1 or PKCS#1)".to_string()
    })?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &credentials.server {
        ServerTrust::PinnedCert(pem) => {
            let mut certs = certificates(pem, "pinned server certificate")?;
            if certs.len() != 1 {
                return Err(format!(
                    "pinned server certificate: expected exactly one certificate, found {}",
                    certs.len()
                ));
            }
            let verifier = crate::tls::PinnedFingerprint::of_certificate(
                &certs.remove(0),
                Arc::clone(&provider),
                show_fingerprint,
            );
            // The custom verifier replaces the chain and name checks with an
            // exact comparison; the handshake signatures are still checked
            // against the pinned certificate's key.
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
        ServerTrust::Ca(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem, "CA certificate")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate: unusable as a trust anchor: {e}"))?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("CA certificate: {e}"))?;
            builder.with_webpki_verifier(verifier)
        }
    };
    let mut config = builder.with_client_auth_cert(chain, key).map_err(|e| {
        format!("client key: unsupported, or not the key of the client certificate: {e}")
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// All certificates of a PEM text; at least one.
fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

/// `sha256:<hex>` of a DER certificate, the form `lxc` shows fingerprints in.
fn fingerprint(der: &[u8]) -> String {
    show_fingerprint(&crate::tls::sha256(der))
}

/// LXD's notation for a certificate fingerprint.
fn show_fingerprint(digest: &[u8]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn fingerprint_of_pem(pem: &str) -> String {
    match CertificateDer::from_pem_slice(pem.as_bytes()) {
        Ok(cert) => fingerprint(&cert),
        Err(_) => "<no certificate>".to_string(),
    }
}

/// The driver error for an LXD error answer.
pub fn error_from(status: u16, value: &Value) -> DriverError {
    let code = value
        .get("error_code")
        .and_then(Value::as_u64)
        .map(|c| c as u16)
        .unwrap_or(status);
    let message = value
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string());
    classify(code, &message)
}

/// Maps LXD's error text to the driver's vocabulary.
pub fn classify(code: u16, message: &str) -> DriverError {
    let lower = message.to_ascii_lowercase();
    if code == 404 || lower.contains("not found") {
        DriverError::NotFound
    } else if code == 403 {
        // Over HTTPS this is LXD's answer to a client it does not trust.
        DriverError::Engine(format!(
            "forbidden: {message} (is this client trusted by the server?)"
        ))
    } else if lower.contains("already running") {
        DriverError::AlreadyRunning
    } else if lower.contains("already stopped")
        || lower.contains("not running")
        || lower.contains("isn't running")
    {
        DriverError::NotRunning
    } else {
        DriverError::Engine(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn https_endpoints_parse() {
        let ok = |e: &str| parse_https_endpoint(e).unwrap();
        assert_eq!(ok("https://127.0.0.1:8443"), ("127.0.0.1".into(), 8443));
        assert_eq!(ok("https://127.0.0.1:9443/"), ("127.0.0.1".into(), 9443));
        assert_eq!(
            ok("https://lxd1.example.net"),
            ("lxd1.example.net".into(), 8443)
        );
        assert_eq!(ok("https://[::1]:8444"), ("::1".into(), 8444));
        assert_eq!(ok("https://[fd00::2]"), ("fd00::2".into(), 8443));
        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://",
            "https://:8443",
            "https://127.0.0.1:0",
            "https://127.0.0.1:65536",
            "https://127.0.0.1:port",
            "https://127.0.0.1:8443/1.0",
            "https://user@127.0.0.1:8443",
            "https://127.0.0.1:8443?x=1",
            "https://[::1",
            "https://[not-v6]:8443",
            "https://[::1]8443",
            "https://a b:8443",
        ] {
            let err = parse_https_endpoint(bad).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }

    fn sample() -> TlsCredentials {
        TlsCredentials {
            client_cert: "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n".into(),
            client_key: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0*\n-----END PRIVATE KEY-----\n"
                .into(),
            server: ServerTrust::PinnedCert(
                "-----BEGIN CERTIFICATE-----\nREVG\n-----END CERTIFICATE-----\n".into(),
            ),
        }
    }

    #[test]
    fn credentials_json_round_trip() {
        let pinned = sample();
        let text = pinned.to_json();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["client_cert"], pinned.client_cert.as_str());
        assert!(value["server"]["pinned_cert"].is_string(), "{value}");
        assert_eq!(TlsCredentials::from_json(&text).unwrap(), pinned);

        let ca = TlsCredentials {
            server: ServerTrust::Ca(
                "-----BEGIN CERTIFICATE-----\nR0hJ\n-----END CERTIFICATE-----\n".into(),
            ),
            ..sample()
        };
        let text = ca.to_json();
        assert!(text.contains("\"ca\""), "{text}");
        assert_eq!(TlsCredentials::from_json(&text).unwrap(), ca);

        // A document without a way to verify the server, or with an unknown
        // one (say, a switch to turn verification off), is refused.
        for bad in [
            r#"{"client_cert":"a","client_key":"b"}"#,
            r#"{"client_cert":"a","client_key":"b","server":{"insecure":true}}"#,
            r#"{"client_cert":"a","client_key":"b","server":{"ca":"c"},"verify":false}"#,
            "not json",
        ] {
            assert!(TlsCredentials::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn unusable_credentials_are_reported_when_the_client_is_built() {
        // Not a certificate at all.
        let no_cert = TlsCredentials {
            client_cert: "hello".into(),
            ..sample()
        };
        let err = no_cert.validate().unwrap_err();
        assert!(err.contains("client certificate"), "{err}");
        // A key that does not parse; the message must not quote it.
        let err = sample().validate().unwrap_err();
        assert!(err.contains("client key"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        match LxdClient::https("https://127.0.0.1:8443", &sample()) {
            Err(DriverError::Unreachable(message)) => assert!(message.contains("client key")),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        match LxdClient::https("http://127.0.0.1:8443", &sample()) {
            Err(DriverError::Unreachable(message)) => assert!(message.contains("https://")),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn forbidden_answers_say_why() {
        match error_from(
            403,
            &json!({"type":"error","error_code":403,"error":"not authorized"}),
        ) {
            DriverError::Engine(message) => {
                assert!(message.contains("not authorized"), "{message}");
                assert!(message.contains("trusted"), "{message}");
            }
            other => panic!("expected Engine, got {other:?}"),
        }
    }

    #[test]
    fn lxd_errors_map_to_driver_errors() {
        assert_eq!(
            error_from(
                404,
                &json!({"type":"error","error_code":404,"error":"Instance not found"})
            ),
            DriverError::NotFound
        );
        assert_eq!(
            classify(400, "The instance is already running"),
            DriverError::AlreadyRunning
        );
        assert_eq!(
            classify(400, "The instance is already stopped"),
            DriverError::NotRunning
        );
        assert_eq!(
            classify(400, "The instance isn't running"),
            DriverError::NotRunning
        );
        assert_eq!(
            classify(500, "Failed creating instance"),
            DriverError::Engine("Failed creating instance".into())
        );
    }
}
