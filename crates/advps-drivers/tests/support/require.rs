//! Suites that need an engine the machine may not have: the local LXD,
//! PostgreSQL, an OpenSSH server.
//!
//! When one is missing, the test returns early and the binary prints, once
//! per suite, a notice saying what was skipped and how to turn it on. The
//! notice goes to the process's own standard error, which the test harness
//! does not capture, so that `cargo test` shows it. When the environment
//! says the suite is required (`ADVPS_REQUIRE_LXD`, `ADVPS_REQUIRE_POSTGRES`,
//! `ADVPS_REQUIRE_SSHD` set to anything but empty or `0`, as `.ci/test`
//! does), a missing engine fails the test instead.
//!
//! Shared by the driver's tests and the CLI's (through `#[path]`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// Fails instead of skipping the tests of the local LXD.
pub const REQUIRE_LXD: &str = "ADVPS_REQUIRE_LXD";
/// Fails instead of skipping the tests that need PostgreSQL.
pub const REQUIRE_POSTGRES: &str = "ADVPS_REQUIRE_POSTGRES";
/// Fails instead of skipping the tests of `pct exec` over SSH.
pub const REQUIRE_SSHD: &str = "ADVPS_REQUIRE_SSHD";

/// LXD's unix socket on the test machines (Debian's `lxd` package).
pub const LXD_SOCKET: &str = "/var/lib/lxd/unix.socket";
/// How to get the local LXD the tests drive.
pub const LXD_HOW: &str = "run .ci/lxd-up as root (LXD, the bridge advpsbr0 and the images \
                           advps-debian-12/13), then the tests as root or as a member of the \
                           lxd group";

/// Whether the environment variable `var` asks for the suite to run.
pub fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A requirement of `suite` is missing (`why`): panics when `var` says the
/// suite is required, otherwise prints the notice (once per suite and test
/// binary) and returns, for the test to return early.
pub fn missing(var: &str, suite: &str, why: &str, how: &str) {
    assert!(
        !required(var),
        "{var} is set, but {suite} cannot run: {why}; {how}"
    );
    static SHOWN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SHOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(format!("{var} {suite}"));
    if first {
        // Straight to the process's standard error: the harness captures
        // eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\nNOTICE ({binary}): skipped {suite}: {why}.\n    To run it: {how}; \
             {var}=1 makes this a failure instead of a skip.\n",
            binary = test_binary(),
        );
    }
}

/// The name of this test binary (`live_lxd` for `live_lxd-0123abcd`).
fn test_binary() -> String {
    let exe = std::env::args().next().unwrap_or_default();
    let stem = Path::new(&exe)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    }
}

/// Why the local LXD cannot be driven by the tests, if it cannot: its
/// socket must answer as a trusted client, and the `images` aliases exist.
pub fn lxd_missing(images: &[&str]) -> Option<String> {
    if !Path::new(LXD_SOCKET).exists() {
        return Some(format!("LXD is not running here (no socket {LXD_SOCKET})"));
    }
    let get = |path: &str| -> Result<String, String> {
        let mut stream = UnixStream::connect(LXD_SOCKET).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                format!("no access to LXD's socket {LXD_SOCKET} ({e})")
            } else {
                format!("LXD's socket {LXD_SOCKET} does not answer ({e})")
            }
        })?;
        let io = |e: std::io::Error| format!("LXD's socket {LXD_SOCKET}: {e}");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: lxd\r\nConnection: close\r\n\r\n"
        )
        .map_err(io)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(io)?;
        Ok(answer)
    };
    let status = |answer: &str| answer.split_whitespace().nth(1).map(str::to_string);
    match get("/1.0") {
        Err(why) => return Some(why),
        Ok(answer) if status(&answer).as_deref() != Some("200") => {
            return Some(format!("LXD's socket {LXD_SOCKET} answers with an error"));
        }
        Ok(answer) if !answer.contains("\"trusted\"") => {
            return Some("LXD does not trust this user on its socket".to_string());
        }
        Ok(_) => {}
    }
    let absent: Vec<&str> = images
        .iter()
        .copied()
        .filter(|image| {
            !get(&format!("/1.0/images/aliases/{image}"))
                .is_ok_and(|answer| status(&answer).as_deref() == Some("200"))
        })
        .collect();
    if !absent.is_empty() {
        return Some(format!("LXD has no image {}", absent.join(", ")));
    }
    None
}

/// Whether `program` can be run (`program ARG` starts at all).
pub fn has_program(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Fails instead of skipping the tests of real virtual machines on the
/// local libvirt.
pub const REQUIRE_LIBVIRT: &str = "ADVPS_REQUIRE_LIBVIRT";
/// The local libvirt the VM tests drive.
pub const LIBVIRT_URI: &str = "qemu:///system";
/// How to get the local libvirt and the guest image the VM tests drive.
pub const LIBVIRT_HOW: &str = "run .ci/vm-up as root (QEMU, libvirtd and the Debian 12 guest \
                               image), then the tests as root";

/// Why real VMs cannot be driven here, if they cannot: virsh must answer
/// for the local QEMU driver, and `.ci/vm-up` must have built the image.
pub fn libvirt_missing() -> Option<String> {
    let out = Command::new("virsh")
        .args(["-q", "-c", LIBVIRT_URI, "version"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) => return Some(format!("virsh cannot run ({e})")),
        Ok(out) if !out.status.success() => {
            return Some(format!(
                "libvirtd does not answer at {LIBVIRT_URI} ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Ok(_) => {}
    }
    let images = std::fs::read_dir("/var/cache/advps-vm/images")
        .map(|dir| {
            dir.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".qcow2"))
        })
        .unwrap_or(false);
    if !images {
        return Some("no guest image in /var/cache/advps-vm/images".into());
    }
    None
}
