//! `advps doctor`: against a healthy setup (the local LXD registered, the Debian images mapped,
//! an address pool with room) every check passes and it exits 0; against broken ones it exits
//! non-zero and names each problem with what to do: a node whose engine no longer answers (a
//! fake LXD socket that went away, standing for a stopped LXD), an OS image the node lacks, a
//! full address pool, a nearly full disk. `advps --version` names the commit.

mod common;
#[path = "common/live.rs"]
mod live;

use common::*;
use live::*;
use std::process::{Command, Output};

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn line_with<'a>(report: &'a str, start: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{report}"))
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    let commit = text
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no commit in {text:?}"));
    assert!(
        commit == "unknown" || commit.chars().take(12).all(|c| c.is_ascii_hexdigit()),
        "{text:?}"
    );
    assert!(
        text.starts_with(&format!("advps {} ", env!("CARGO_PKG_VERSION"))),
        "{text:?}"
    );
}

#[tokio::test]
async fn a_healthy_setup_passes_every_check() {
    if lxd_skipped() {
        return;
    }
    let server = TestServer::start();
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
        BASE_IMAGE,
    ]);
    server.cli_ok(&[
        "ippools",
        "add",
        "lan",
        "--cidr",
        "198.51.100.0/24",
        "--gateway",
        GATEWAY,
        "--range",
        "198.51.100.250-198.51.100.251",
    ]);
    let out = server.cli(&["doctor"]);
    let report = said(&out);
    assert!(
        out.status.success(),
        "doctor failed on a healthy setup:\n{report}"
    );
    assert!(!report.contains("FAIL"), "{report}");
    for start in [
        "ok    configuration",
        "ok    database: ",
        "ok    secret key",
        "ok    node local: lxd",
        "ok    node local image debian-12",
        "ok    node local pool lan: 2 of 2 addresses free",
        "ok    task backlog",
        "ok    disk space",
    ] {
        line_with(&report, start);
    }
    assert!(report.contains("All checks passed"), "{report}");
    // The node's line names the engine's version as LXD reports it.
    let node = line_with(&report, "ok    node local: lxd");
    let version = lxc_server_version();
    assert!(
        node.contains(&format!("lxd {version}")),
        "no engine version (LXD says {version}): {node}"
    );
}

/// The version the local LXD reports of itself, through its own client.
fn lxc_server_version() -> String {
    let out = Command::new("lxc")
        .args(["query", "/1.0"])
        .output()
        .expect("run lxc query");
    let info: Value = serde_json::from_slice(&out.stdout).expect("lxc query /1.0 answers JSON");
    info["environment"]["server_version"]
        .as_str()
        .expect("server_version")
        .to_string()
}

#[tokio::test]
async fn a_broken_setup_names_each_problem() {
    let fake = FakeLxd::start();
    let gone = FakeLxd::start();
    let server = TestServer::start();
    server.create_account("acme");
    for (name, node) in [("fake", &fake), ("gone", &gone)] {
        server.cli_ok(&[
            "nodes",
            "add",
            name,
            "--driver",
            "lxd",
            "--endpoint",
            &node.endpoint(),
        ]);
    }
    server.cli_ok(&["nodes", "sync", "fake"]);
    // The fake node has no images at all.
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
        "--node",
        "fake",
    ]);
    server.cli_ok(&[
        "ippools",
        "add",
        "tiny",
        "--cidr",
        "198.51.100.0/24",
        "--gateway",
        GATEWAY,
        "--range",
        "198.51.100.252-198.51.100.252",
        "--node",
        "fake",
    ]);
    let ok = server.cli(&["doctor"]);
    assert!(
        !ok.status.success(),
        "a missing image is a failure:\n{}",
        said(&ok)
    );
    // Binding takes the pool's one address (configuring it on the fake engine times out,
    // and the address stays taken).
    let config = server.data_dir().parent().unwrap().join("short.toml");
    std::fs::write(&config, "engine_timeout_secs = 2\n").unwrap();
    server.cli(&[
        "--config",
        config.to_str().unwrap(),
        "services",
        "create",
        "--account",
        "acme",
        "--node",
        "fake",
        "--instance",
        FAKE_INSTANCE,
        "--type",
        "LINUX",
    ]);
    // The second engine stops: its socket no longer answers.
    drop(gone);

    let out = server.cli(&["--config", config.to_str().unwrap(), "doctor"]);
    let report = said(&out);
    assert!(
        !out.status.success(),
        "doctor passed a broken setup:\n{report}"
    );
    let node = line_with(&report, "FAIL  node gone: ");
    assert!(node.contains("->"), "no advice: {node}");
    let image = line_with(&report, "FAIL  node fake image debian-12: ");
    assert!(image.contains("advps-debian-12 is missing"), "{image}");
    let pool = line_with(&report, "FAIL  node fake pool tiny: ");
    assert!(pool.contains("0 of 1 addresses free: full"), "{pool}");
    line_with(&report, "ok    node fake: lxd");
    assert!(report.contains("checks failed"), "{report}");
}

#[tokio::test]
async fn a_nearly_full_disk_is_named() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        eprintln!(
            "NOTICE (doctor): skipped the disk check: it mounts a small tmpfs and needs root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(mounted.success());
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["migrate", "--data-dir", data_s])
        .env_remove("ADVPS_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    let out = Command::new(BIN)
        .args(["doctor", "--data-dir", data_s])
        .env_remove("ADVPS_DATABASE_URL")
        .output()
        .unwrap();
    let report = said(&out);
    assert!(!out.status.success(), "{report}");
    let disk = line_with(&report, "FAIL  disk space: ");
    assert!(
        disk.contains("nearly full") && disk.contains("->"),
        "{disk}"
    );
}
