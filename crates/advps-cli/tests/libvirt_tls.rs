//! A libvirt node over TLS (`qemu+tls://`) with a sealed CA, client certificate and key,
//! against the local libvirtd's TLS listener (127.0.0.1:16514, which `.ci/vm-up` turns on with
//! a test PKI in /var/lib/advps-vm/pki).
//!
//! The node is registered at a TCP relay the test runs on 127.0.0.1 in front of libvirtd. Each
//! connection through it records whether it opens with a TLS handshake and the modes and owner
//! of advps's private files at that moment (the call is under way), then is passed on to
//! libvirtd, or to an impostor TLS server whose certificate comes from another CA. The test
//! makes its client certificates itself, signed with the test PKI's CA key (root's), and an
//! unrelated CA of its own, and:
//!
//! - a CA that did not sign libvirtd's certificate fails fast, saying the server's certificate
//!   is not trusted and that --ca is what to fix; a client certificate that --ca did not issue
//!   is refused by libvirt before it connects; one libvirtd does not trust (issued by the
//!   unrelated CA, with a --ca holding both CAs) is refused by libvirtd; a key that is not the
//!   certificate's is refused before connecting; none of these shows the private paths;
//! - the right files register the node, `nodes sync` imports a domain the test defined, and a
//!   live service bound to it answers its status through the API, starts, and opens its serial
//!   console, all through TLS;
//! - the server checks libvirtd's certificate on every call: with the impostor behind the
//!   relay its calls fail ("the hypervisor is not reachable"), and work again once libvirtd is
//!   back;
//! - the private directory was 0700 and its files 0600, the user's, while in use, and nothing is
//!   left once the calls and the console ended;
//! - no line of the client key is in the database (WAL included), the server's log or any output.
//!
//! Without libvirtd, its TLS listener or the test PKI the test is skipped with a notice (a
//! failure with ADVPS_REQUIRE_LIBVIRT=1).

mod common;
#[path = "common/remote_node.rs"]
mod remote_node;
#[allow(dead_code)]
#[path = "../../advps-drivers/tests/support/require.rs"]
mod require;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use remote_node::*;
use serde_json::json;

const NODE: &str = "kvmtls";
const SUITE: &str = "the libvirt-over-TLS test";
/// The test PKI of `.ci/vm-up` and the listener it gives libvirtd.
const PKI: &str = "/var/lib/advps-vm/pki";
const LIBVIRTD_TLS: &str = "127.0.0.1:16514";
/// The first byte of a TLS record that carries a handshake (a ClientHello here).
const TLS_HANDSHAKE: u8 = 0x16;

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
        Ok(_) if TcpStream::connect(LIBVIRTD_TLS).is_err() => Some(format!(
            "libvirtd does not listen for TLS on {LIBVIRTD_TLS} (a libvirtd started before \
             .ci/vm-up turned it on)"
        )),
        Ok(_) if !require::has_program("openssl", "version") => {
            Some("openssl is not installed".to_string())
        }
        Ok(_) => ["cacert.pem", "cakey.pem"]
            .iter()
            .map(|f| Path::new(PKI).join(f))
            .find(|f| std::fs::File::open(f).is_err())
            .map(|f| format!("the test PKI's {} cannot be read", f.display())),
    };
    match why {
        Some(why) => {
            let how = "run .ci/vm-up as root (libvirtd with its TLS listener on \
                       127.0.0.1:16514 and the test PKI in /var/lib/advps-vm/pki), then the \
                       tests as root";
            require::missing(require::REQUIRE_LIBVIRT, SUITE, &why, how);
            true
        }
        None => false,
    }
}

/// Certificates made for the test with openssl, in a directory of their own.
struct Certs {
    dir: PathBuf,
}

/// A certificate and its key, as files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// A CA of the test's own, unrelated to libvirtd's.
    fn ca(&self, name: &str) -> Issued {
        let (cert, key) = (format!("{name}.pem"), format!("{name}-key.pem"));
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "2",
                "-subj",
                &format!("/O=advps test/CN={name}"),
                "-addext",
                "basicConstraints = critical, CA:TRUE",
                "-addext",
                "keyUsage = critical, keyCertSign, cRLSign",
                "-keyout",
                &self.arg(&key),
                "-out",
                &self.arg(&cert),
            ],
        );
        Issued {
            cert: self.path(&cert),
            key: self.path(&key),
        }
    }

    /// A certificate for `cn` signed by `ca`, with the extensions libvirt checks: a client's
    /// (clientAuth) or a server's for 127.0.0.1 (serverAuth).
    fn issue(&self, name: &str, cn: &str, ca: &Issued, server: bool) -> Issued {
        let (cert, key) = (format!("{name}.pem"), format!("{name}-key.pem"));
        let csr = self.arg(&format!("{name}.csr"));
        run(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/O=advps test/CN={cn}"),
                "-keyout",
                &self.arg(&key),
                "-out",
                &csr,
            ],
        );
        let usage = if server {
            "serverAuth\nsubjectAltName = IP:127.0.0.1"
        } else {
            "clientAuth"
        };
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature, keyEncipherment\n\
                 extendedKeyUsage = {usage}\n"
            ),
        )
        .unwrap();
        // A serial of its own: nothing is written beside the CA (the PKI's is root's).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let serial = format!("0x{:x}{:x}", std::process::id(), nanos);
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                ca.cert.to_str().unwrap(),
                "-CAkey",
                ca.key.to_str().unwrap(),
                "-set_serial",
                &serial,
                "-extfile",
                ext.to_str().unwrap(),
                "-out",
                &self.arg(&cert),
            ],
        );
        Issued {
            cert: self.path(&cert),
            key: self.path(&key),
        }
    }
}

/// What the relay saw of one connection.
struct Session {
    /// The first byte the client sent.
    first_byte: Option<u8>,
    /// `MODE UID PATH` of each private directory and file in the watched TMPDIR then.
    private_files: Vec<String>,
}

/// A TCP relay on 127.0.0.1 in front of libvirtd's TLS port (or the impostor's).
struct Relay {
    port: u16,
    target: Arc<AtomicU16>,
    sessions: Arc<Mutex<Vec<Session>>>,
}

/// The private directories and their files in `tmp`, as `MODE UID PATH`.
fn private_files(tmp: &Path) -> Vec<String> {
    let describe = |path: &Path| {
        std::fs::symlink_metadata(path).ok().map(|m| {
            format!(
                "{:o} {} {}",
                m.permissions().mode() & 0o7777,
                m.uid(),
                path.display()
            )
        })
    };
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return found;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("advps-virsh-")
        {
            continue;
        }
        let dir = entry.path();
        found.extend(describe(&dir));
        if let Ok(files) = std::fs::read_dir(&dir) {
            found.extend(files.flatten().filter_map(|f| describe(&f.path())));
        }
    }
    found
}

impl Relay {
    /// `watched` is the TMPDIR of the advps processes under test.
    fn start(watched: &Path, target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Relay {
            port,
            target: Arc::new(AtomicU16::new(target)),
            sessions: Arc::new(Mutex::new(Vec::new())),
        };
        let (target, sessions, watched) = (
            Arc::clone(&relay.target),
            Arc::clone(&relay.sessions),
            watched.to_path_buf(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                // The call is under way: its private files are there now.
                let seen = private_files(&watched);
                let to = target.load(Ordering::SeqCst);
                let sessions = Arc::clone(&sessions);
                std::thread::spawn(move || {
                    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut first = [0u8; 1];
                    let first_byte = match client.peek(&mut first) {
                        Ok(1) => Some(first[0]),
                        _ => None,
                    };
                    let _ = client.set_read_timeout(None);
                    sessions.lock().unwrap().push(Session {
                        first_byte,
                        private_files: seen,
                    });
                    let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                        return;
                    };
                    let (mut client_in, mut server_in) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (mut client_out, mut server_out) = (client, server);
                    let up = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut client_in, &mut server_out);
                        let _ = server_out.shutdown(Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut server_in, &mut client_out);
                    let _ = client_out.shutdown(Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        relay
    }

    fn endpoint(&self) -> String {
        format!("qemu+tls://127.0.0.1:{}/system", self.port)
    }

    fn count(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    fn send_to(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

/// A TLS server that is not libvirtd, with a certificate for 127.0.0.1 from another CA.
struct Impostor {
    child: Child,
    port: u16,
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Impostor {
    fn start(server: &Issued) -> Impostor {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&server.cert)
            .arg("-key")
            .arg(&server.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let mut impostor = Impostor { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = impostor.child.try_wait() {
                panic!("openssl s_server exited ({status})");
            }
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        impostor
    }
}

/// `nodes add NAME` at `endpoint` with these TLS files.
fn add_args<'a>(
    name: &'a str,
    endpoint: &'a str,
    client: &'a Issued,
    ca: &'a Path,
) -> Vec<&'a str> {
    vec![
        "nodes",
        "add",
        name,
        "--driver",
        "libvirt",
        "--endpoint",
        endpoint,
        "--client-cert",
        client.cert.to_str().unwrap(),
        "--client-key",
        client.key.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_libvirt_node_over_tls_uses_its_sealed_certificates_only() {
    if skipped() {
        return;
    }
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let tmp_text = tmp.to_str().unwrap().to_string();
    let certs = Certs {
        dir: scratch.path().join("certs"),
    };
    std::fs::create_dir(&certs.dir).unwrap();
    let libvirt_ca = Issued {
        cert: Path::new(PKI).join("cacert.pem"),
        key: Path::new(PKI).join("cakey.pem"),
    };
    let other_ca = certs.ca("unrelated-ca");
    let client = certs.issue(
        "client",
        &format!("advps-test-lvtls-{}", std::process::id()),
        &libvirt_ca,
        false,
    );
    let stranger = certs.issue("stranger", "stranger", &other_ca, false);
    let impostor = Impostor::start(&certs.issue("impostor", "127.0.0.1", &other_ca, true));
    // A --ca that holds both CAs: libvirt's check of its own certificate passes, libvirtd's not.
    let both_cas = certs.path("both-cas.pem");
    std::fs::write(
        &both_cas,
        std::fs::read_to_string(&libvirt_ca.cert).unwrap()
            + &std::fs::read_to_string(&other_ca.cert).unwrap(),
    )
    .unwrap();
    let libvirtd_port: u16 = LIBVIRTD_TLS.rsplit_once(':').unwrap().1.parse().unwrap();
    let relay = Relay::start(&tmp, libvirtd_port);
    let endpoint = relay.endpoint();
    let domain = Domain::define(scratch.path(), "lvtls");
    let server = TestServer::start_with_env(&[
        ("TMPDIR", tmp_text.as_str()),
        ("ADVPS_RATE_LIMIT_LIVE", "100000"),
    ]);
    let mut outputs = Vec::new();
    let refused = |name: &str, client: &Issued, ca: &Path| {
        let asked = Instant::now();
        let out = advps(&server, &tmp, &add_args(name, &endpoint, client, ca));
        let said = text(&out);
        assert!(!out.status.success(), "{said}");
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "{:?}: {said}",
            asked.elapsed()
        );
        assert!(!said.contains(&tmp_text), "the private paths leak: {said}");
        assert!(
            !said.contains("advps-virsh-"),
            "the private paths leak: {said}"
        );
        said
    };

    // Files from another CA altogether: libvirtd's certificate is not trusted, and the
    // message says what to fix.
    let before = relay.count();
    let said = refused("kvmbad", &stranger, &other_ca.cert);
    assert!(
        said.contains("libvirtd's TLS certificate is not trusted"),
        "{said}"
    );
    assert!(said.contains("--ca"), "{said}");
    assert!(said.contains("known issuer"), "{said}");
    assert!(relay.count() > before, "libvirtd was not reached: {said}");
    outputs.push(said);
    // The right client certificate with the unrelated CA: libvirt checks its own certificate
    // against --ca first, and connects nowhere.
    let before = relay.count();
    let said = refused("kvmbad", &client, &other_ca.cert);
    assert!(
        said.contains("--client-cert was not issued by the CA registered with --ca"),
        "{said}"
    );
    assert_eq!(relay.count(), before, "{said}");
    outputs.push(said);

    // A client certificate from the unrelated CA with the right --ca: the same local check.
    let said = refused("kvmbad", &stranger, &libvirt_ca.cert);
    assert!(
        said.contains("--client-cert was not issued by the CA registered with --ca"),
        "{said}"
    );
    assert_eq!(relay.count(), before, "{said}");
    outputs.push(said);
    // ... and past it (a --ca with both CAs), libvirtd itself refuses it.
    let said = refused("kvmbad", &stranger, &both_cas);
    assert!(
        said.contains("libvirtd refused the client certificate"),
        "{said}"
    );
    assert!(relay.count() > before, "libvirtd was not reached: {said}");
    outputs.push(said);
    // The right certificate with another certificate's key: refused before connecting.
    let mismatched = Issued {
        cert: client.cert.clone(),
        key: stranger.key.clone(),
    };
    let before = relay.count();
    let said = refused("kvmbad", &mismatched, &libvirt_ca.cert);
    assert!(
        said.contains("--client-key is not the key of the client certificate"),
        "{said}"
    );
    assert_eq!(relay.count(), before, "{said}");
    outputs.push(said);

    // The right files: registered over TLS, the files not shown.
    let before = relay.count();
    let out = advps_ok(
        &server,
        &tmp,
        &add_args(NODE, &endpoint, &client, &libvirt_ca.cert),
    );
    assert!(out.contains("virtual machines: yes"), "{out}");
    assert!(
        out.contains("Remote access: TLS (sealed client certificate)"),
        "{out}"
    );
    assert!(relay.count() > before, "the node was not reached over TLS");
    outputs.push(out);
    let listed = advps_ok(&server, &tmp, &["nodes", "list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(NODE))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("TLS"), "{line}");
    assert!(!listed.contains("kvmbad"), "{listed}");
    outputs.push(listed);

    // Listing the domains goes through TLS and finds the one defined here.
    let before = relay.count();
    let out = advps_ok(&server, &tmp, &["nodes", "sync", NODE]);
    assert!(out.contains(&format!("Synced node {NODE}")), "{out}");
    assert!(relay.count() > before, "sync did not go through TLS");
    outputs.push(out);
    let instances = advps_ok(&server, &tmp, &["nodes", "instances", "--node", NODE]);
    assert!(instances.contains(&domain.0), "{instances}");
    outputs.push(instances);

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
    let before = relay.count();
    let resp = server.status(&key, &id).await;
    let data = assert_success(&resp, "Service status retrieved successfully");
    assert_eq!(data["serviceType"], "VPS", "{data}");
    assert_eq!(data["vmStatus"]["status"], "stopped", "{data}");
    assert!(
        relay.count() > before,
        "the server did not go through TLS: {data}\n{}",
        server.stderr_log()
    );
    // ... and are gone once the calls ended.
    assert_eq!(leftovers(&tmp), Vec::<String>::new());

    // The serial console goes through the same TLS access; its files stay while it is open
    // and go with it.
    console_uses_private_access(&server, &key, &id, &tmp, "TLS", || relay.count()).await;

    // The server checks libvirtd's certificate on each call: behind the relay, a TLS server
    // with a certificate from another CA gets nothing done.
    relay.send_to(impostor.port);
    let before = relay.count();
    let stop = json!({ "mode": "force" });
    let resp = server
        .post_json(&format!("/api/v1/services/{id}/stop"), &key, &stop)
        .await;
    assert_eq!(resp.status, 500, "{}", resp.text);
    assert_eq!(
        resp.body["message"], "Failed to stop service: the hypervisor is not reachable",
        "{}",
        resp.text
    );
    // A status reports what advps knows, and that the hypervisor's state is unknown.
    let data = server.status_data(&key, &id).await;
    assert_eq!(data["vmStatus"]["status"], "unknown", "{data}");
    assert!(relay.count() > before, "the impostor was not asked");
    let log = server.stderr_log();
    assert!(
        log.contains("libvirtd's TLS certificate is not trusted"),
        "the server's log does not say why:\n{log}"
    );
    // libvirtd back: the same calls work.
    relay.send_to(libvirtd_port);
    let resp = server
        .post_json(&format!("/api/v1/services/{id}/stop"), &key, &stop)
        .await;
    assert_success(&resp, "VPS service stopped successfully");
    let data = server.status_data(&key, &id).await;
    assert_eq!(data["vmStatus"]["status"], "stopped", "{data}");
    assert!(
        eventually(|| leftovers(&tmp).is_empty()).await,
        "{:?}",
        leftovers(&tmp)
    );

    // Every connection opened with a TLS handshake, and while each was under way the
    // private files were the user's alone.
    let uid = run("id", &["-u"]).trim().to_string();
    let sessions = relay.sessions.lock().unwrap();
    let mut names = std::collections::BTreeSet::new();
    for (n, session) in sessions.iter().enumerate() {
        assert_eq!(
            session.first_byte,
            Some(TLS_HANDSHAKE),
            "connection {n} did not open with a TLS handshake"
        );
        for line in &session.private_files {
            let mut fields = line.splitn(3, ' ');
            let (mode, owner, path) = (
                fields.next().unwrap(),
                fields.next().unwrap(),
                fields.next().unwrap(),
            );
            let file = Path::new(path).strip_prefix(&tmp).unwrap();
            let expected = if file.components().count() == 1 {
                "700"
            } else {
                names.insert(file.file_name().unwrap().to_string_lossy().into_owned());
                "600"
            };
            assert_eq!(mode, expected, "{line}");
            assert_eq!(owner, uid, "{line}");
        }
    }
    let expected: std::collections::BTreeSet<String> =
        ["cacert.pem", "clientcert.pem", "clientkey.pem"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(names, expected, "the private files seen");
    assert!(
        sessions
            .iter()
            .filter(|s| !s.private_files.is_empty())
            .count()
            >= 5,
        "too few calls seen with their files"
    );
    drop(sessions);

    // No line of a client key in the database, the server's log or any output.
    let secret_lines: Vec<String> = [&client.key, &stranger.key]
        .iter()
        .flat_map(|k| {
            std::fs::read_to_string(k)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 20)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
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
    for line in &secret_lines {
        for (path, bytes) in &stored {
            assert!(
                !bytes.windows(line.len()).any(|w| w == line.as_bytes()),
                "a line of the key is in {}",
                path.display()
            );
        }
        assert!(
            !log.contains(line.as_str()),
            "a line of the key is in the server's log"
        );
        for output in &outputs {
            assert!(
                !output.contains(line.as_str()),
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
