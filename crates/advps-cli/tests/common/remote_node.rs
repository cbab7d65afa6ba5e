//! What the tests of remote libvirt nodes (`libvirt_ssh`, `libvirt_tls`)
//! share: a domain to import, `advps` run with its own temporary directory,
//! and the searches for private files left behind or a secret written down.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{TestServer, BIN};
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
