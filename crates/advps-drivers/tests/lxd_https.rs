//! The LXD driver over HTTPS against the real LXD of the test machine.
//!
//! Each test opens LXD's remote API on a free loopback port through the unix
//! socket (`core.https_address`), makes its own client certificates with
//! `openssl`, trusts the ones it needs, and puts everything back when it
//! ends, pass or fail: the previous `core.https_address`, and no test
//! certificate left in LXD's trust store. The tests take turns, since they
//! share that one server setting.
//!
//! They check what an operator relies on: a trusted certificate with the
//! server's pinned certificate reaches the node; a wrong pin, a wrong name
//! under CA verification, and an untrusted client certificate are refused
//! with errors that say so.
//!
//! Without a local LXD these tests are skipped with a notice, unless
//! `ADVPS_REQUIRE_LXD` is set (as in `.ci/test`), where that is a failure.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use advps_drivers::lxd::client::{Body, LxdClient, ServerTrust, TlsCredentials};
use advps_drivers::lxd::LxdDriver;
use advps_drivers::{Driver, DriverError};
use hyper::Method;
use serde_json::{json, Value};

#[path = "support/require.rs"]
#[allow(dead_code)]
mod require;

const SOCKET: &str = require::LXD_SOCKET;
const SERVER_CERT: &str = "/var/lib/lxd/server.crt";
const IMAGE: &str = "advps-debian-12";
const WAIT: Duration = Duration::from_secs(30);

/// Whether the local LXD is missing (then the notice is printed, or the
/// test fails when LXD is required).
fn lxd_skipped() -> bool {
    let why = require::lxd_missing(&[IMAGE])
        .or_else(|| {
            (!require::has_program("openssl", "version"))
                .then(|| "openssl is not installed".to_string())
        })
        .or_else(|| {
            std::fs::File::open(SERVER_CERT)
                .err()
                .map(|e| format!("LXD's certificate {SERVER_CERT} is not readable ({e})"))
        });
    match why {
        Some(why) => {
            require::missing(
                require::REQUIRE_LXD,
                "the LXD driver's tests over HTTPS (lxd_https)",
                &why,
                require::LXD_HOW,
            );
            true
        }
        None => false,
    }
}

/// One test at a time changes `core.https_address`.
static HTTPS_ADDRESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn local() -> LxdClient {
    assert!(
        Path::new(SOCKET).exists(),
        "these tests need the local LXD (socket {SOCKET}); .ci/lxd-up sets it up"
    );
    LxdClient::new(SOCKET)
}

/// A client certificate and its key, made by openssl.
struct Identity {
    cert: String,
    key: String,
    cert_path: PathBuf,
}

fn make_identity(dir: &Path, name: &str) -> Identity {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=advps-test",
            "-keyout",
        ])
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl req failed");
    Identity {
        cert: std::fs::read_to_string(&cert_path).unwrap(),
        key: std::fs::read_to_string(&key_path).unwrap(),
        cert_path,
    }
}

/// LXD's fingerprint of a certificate file (lower-case hex SHA-256 of the DER).
fn fingerprint(cert_path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert_path)
        .output()
        .expect("openssl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split('=')
        .nth(1)
        .expect("fingerprint line")
        .trim()
        .replace(':', "")
        .to_ascii_lowercase()
}

/// The base64 DER between the PEM armour lines, as LXD's API takes it.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

async fn https_address() -> String {
    let server = local()
        .call(Method::GET, "/1.0", Body::None, WAIT)
        .await
        .expect("GET /1.0 on the socket");
    server
        .pointer("/config/core.https_address")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

async fn set_https_address(address: &str) {
    let body = json!({"config": {"core.https_address": address}});
    local()
        .call(Method::PATCH, "/1.0", Body::Json(&body), WAIT)
        .await
        .unwrap_or_else(|e| panic!("setting core.https_address to '{address}': {e}"));
}

async fn trust(identity: &Identity, name: &str) {
    let body = json!({
        "type": "client",
        "certificate": pem_body(&identity.cert),
        "name": name,
    });
    local()
        .call(Method::POST, "/1.0/certificates", Body::Json(&body), WAIT)
        .await
        .expect("trusting the test certificate");
}

async fn untrust(fingerprint: &str) {
    let path = format!("/1.0/certificates/{fingerprint}");
    match local().call(Method::DELETE, &path, Body::None, WAIT).await {
        Ok(_) | Err(DriverError::NotFound) => {}
        Err(e) => panic!("removing test certificate {fingerprint}: {e}"),
    }
}

/// What a test body gets: the HTTPS endpoint and a scratch directory.
struct Remote {
    port: u16,
    dir: PathBuf,
}

impl Remote {
    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// Runs `body` with LXD listening on a loopback port, trusting the client
/// certificates `body` registers in `trusted` (by fingerprint), and undoes
/// both afterwards whatever happened; a panic in `body` is re-raised then.
async fn with_remote<F, Fut>(body: F)
where
    F: FnOnce(Remote, tokio::sync::mpsc::UnboundedSender<String>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if lxd_skipped() {
        return;
    }
    let _turn = HTTPS_ADDRESS.lock().await;
    let previous = https_address().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    set_https_address(&format!("127.0.0.1:{port}")).await;
    // LXD starts the listener as part of the update; wait until it accepts.
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (trusted_tx, mut trusted_rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = tokio::spawn(body(
        Remote {
            port,
            dir: dir.path().to_path_buf(),
        },
        trusted_tx,
    ))
    .await;
    while let Ok(fingerprint) = trusted_rx.try_recv() {
        untrust(&fingerprint).await;
    }
    set_https_address(&previous).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn pinned(identity: &Identity, server_pem: String) -> TlsCredentials {
    TlsCredentials {
        client_cert: identity.cert.clone(),
        client_key: identity.key.clone(),
        server: ServerTrust::PinnedCert(server_pem),
    }
}

fn server_cert() -> String {
    std::fs::read_to_string(SERVER_CERT).expect("LXD's server certificate")
}

#[tokio::test]
async fn trusted_client_with_pinned_server_certificate_drives_the_node() {
    with_remote(|remote, trusted| async move {
        let me = make_identity(&remote.dir, "client");
        trusted.send(fingerprint(&me.cert_path)).unwrap();
        trust(&me, &format!("advps-test-{}-pinned", std::process::id())).await;

        let client = LxdClient::https(&remote.endpoint(), &pinned(&me, server_cert())).unwrap();
        assert_eq!(client.endpoint(), remote.endpoint());
        assert!(client.socket().is_none());
        let driver = LxdDriver::connect(client)
            .await
            .expect("connect over HTTPS");

        let caps = driver.capabilities().await.unwrap();
        assert!(caps.containers, "{caps:?}");
        let images = driver.list_images().await.unwrap();
        assert!(
            images.iter().any(|i| i.alias == IMAGE),
            "{IMAGE} not among {images:?}"
        );
        // Other tests create and delete containers meanwhile, so the list
        // itself is not compared; that it comes back is the point.
        driver
            .list_instances()
            .await
            .expect("list instances over HTTPS");
    })
    .await;
}

#[tokio::test]
async fn ca_verification_checks_the_name() {
    with_remote(|remote, trusted| async move {
        let me = make_identity(&remote.dir, "client");
        trusted.send(fingerprint(&me.cert_path)).unwrap();
        trust(&me, &format!("advps-test-{}-ca", std::process::id())).await;
        let credentials = TlsCredentials {
            client_cert: me.cert.clone(),
            client_key: me.key.clone(),
            // LXD's self-signed certificate is its own issuer, so it can
            // stand as the CA; it names 127.0.0.1 but not "localhost".
            server: ServerTrust::Ca(server_cert()),
        };
        let client = LxdClient::https(&remote.endpoint(), &credentials).unwrap();
        let driver = LxdDriver::connect(client).await.expect("connect with CA");
        driver.list_instances().await.unwrap();

        let by_name = format!("https://localhost:{}", remote.port);
        let client = LxdClient::https(&by_name, &credentials).unwrap();
        match LxdDriver::connect(client).await {
            Err(DriverError::Unreachable(message)) => {
                assert!(message.contains("certificate"), "{message}");
                assert!(message.contains("localhost"), "{message}");
            }
            Err(other) => panic!("expected Unreachable, got {other:?}"),
            Ok(_) => panic!("a certificate without the name was accepted"),
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_pinned_certificate_is_refused() {
    with_remote(|remote, _trusted| async move {
        let me = make_identity(&remote.dir, "client");
        let impostor = make_identity(&remote.dir, "not-the-server");
        let client =
            LxdClient::https(&remote.endpoint(), &pinned(&me, impostor.cert.clone())).unwrap();
        match LxdDriver::connect(client).await {
            Err(DriverError::Unreachable(message)) => {
                assert!(
                    message.contains("not the pinned server certificate"),
                    "{message}"
                );
                assert!(message.contains("sha256:"), "{message}");
                assert!(message.contains(&remote.endpoint()[8..]), "{message}");
            }
            Err(other) => panic!("expected Unreachable, got {other:?}"),
            Ok(_) => panic!("a server with another certificate was accepted"),
        }
    })
    .await;
}

#[tokio::test]
async fn untrusted_client_certificate_gets_a_clear_error() {
    with_remote(|remote, _trusted| async move {
        let stranger = make_identity(&remote.dir, "stranger");
        let credentials = pinned(&stranger, server_cert());
        let client = LxdClient::https(&remote.endpoint(), &credentials).unwrap();
        match LxdDriver::connect(client.clone()).await {
            Err(DriverError::Engine(message)) => {
                assert!(
                    message.contains("does not trust this client certificate"),
                    "{message}"
                );
            }
            Err(other) => panic!("expected Engine, got {other:?}"),
            Ok(_) => panic!("an untrusted client was let in"),
        }
        // The other endpoints answer 403, which says what to look at.
        match client
            .call(Method::GET, "/1.0/instances", Body::None, WAIT)
            .await
        {
            Err(DriverError::Engine(message)) => {
                assert!(message.contains("forbidden"), "{message}");
                assert!(message.contains("trusted"), "{message}");
            }
            other => panic!("expected a 403 refusal, got {other:?}"),
        }
    })
    .await;
}
