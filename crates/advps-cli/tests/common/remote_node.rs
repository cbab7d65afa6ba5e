//! What the tests of remote libvirt nodes (`libvirt_ssh`, `libvirt_tls`)
//! share: a domain to import, `advps` run with its own temporary directory,
//! and the searches for private files left behind or a secret written down.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{assert_success, TestServer, BIN};
use crate::require;

/// Runs `program`; its standard output, or a panic with its error output.
pub fn run(program: &str, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A domain defined for the test (never started), undefined when dropped.
pub struct Domain(pub String);

impl Domain {
    /// `advps-test-<tag>-<pid>`, its XML written in `dir`.
    pub fn define(dir: &Path, tag: &str) -> Domain {
        let name = format!("advps-test-{tag}-{}", std::process::id());
        // No disk and no network: started, it sits in the firmware, its serial console open.
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type><bios useserial='yes'/></os>\
             <features><acpi/><apic/></features><devices><serial type='pty'><target port='0'/></serial>\
             <console type='pty'><target type='serial' port='0'/></console></devices></domain>"
        );
        let file = dir.join("domain.xml");
        std::fs::write(&file, xml).unwrap();
        let _ = Command::new("virsh")
            .args(["-q", "-c", require::LIBVIRT_URI, "undefine", &name])
            .output();
        run(
            "virsh",
            &[
                "-q",
                "-c",
                require::LIBVIRT_URI,
                "define",
                file.to_str().unwrap(),
            ],
        );
        Domain(name)
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        for command in ["destroy", "undefine"] {
            let _ = Command::new("virsh")
                .args(["-q", "-c", require::LIBVIRT_URI, command, &self.0])
                .output();
        }
    }
}

/// Waits up to ten seconds for `check`.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// `advps ARGS --data-dir DIR` with its temporary files in `tmp`.
pub fn advps(server: &TestServer, tmp: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("ADVPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .arg("--data-dir")
        .arg(server.data_dir())
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .output()
        .expect("run advps")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn advps_ok(server: &TestServer, tmp: &Path, args: &[&str]) -> String {
    let out = advps(server, tmp, args);
    assert!(
        out.status.success(),
        "advps {args:?} failed:\n{}",
        text(&out)
    );
    text(&out)
}

/// What is left of advps's private directories in `tmp`.
pub fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("advps-virsh-"))
        .collect()
}

/// Every file under `dir`, read as bytes (the database and its journal included).
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(all_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

/// Starts service `id`, opens its serial console through the API's WebSocket
/// and checks that the console reached the node through `via` (`reached`, a
/// count of the node's connections or sessions, moved on) with its private
/// files in `tmp` while it is open, and that those files go with it.
pub async fn console_uses_private_access(
    server: &TestServer,
    key: &str,
    id: &str,
    tmp: &Path,
    via: &str,
    reached: impl Fn() -> usize,
) {
    let resp = server.action(key, id, "start").await;
    assert_eq!(resp.status, 200, "{:?}\n{}", resp.body, server.stderr_log());
    let before = reached();
    let resp = server
        .post(&format!("/api/v1/services/{id}/console"), key)
        .await;
    let data = assert_success(&resp, "Console URL created successfully");
    let url = data["url"].as_str().expect("url").to_string();
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("the WebSocket handshake timed out")
    .expect("the console opened");
    assert!(
        eventually(|| reached() > before && !leftovers(tmp).is_empty()).await,
        "the console did not go through {via} with its private files\n{}",
        server.stderr_log()
    );
    match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        Err(_) => {}
        Ok(Some(Ok(
            Message::Binary(_) | Message::Text(_) | Message::Ping(_) | Message::Pong(_),
        ))) => {}
        Ok(other) => panic!("the console ended: {other:?}\n{}", server.stderr_log()),
    }
    drop(ws);
    assert!(
        eventually(|| leftovers(tmp).is_empty()).await,
        "the console's private files outlived it: {:?}",
        leftovers(tmp)
    );
}
