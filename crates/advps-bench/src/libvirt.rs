//! The direct side of `advps-bench libvirt`: libvirt driven the way an
//! operator drives it by hand, with `virsh -c qemu:///system` and the QEMU
//! guest agent through `virsh qemu-agent-command`, without advps.
//!
//! Every call is one virsh child process with a deadline (killed when it
//! passes). The client refuses to touch any domain whose name does not
//! start with [`BENCH_PREFIX`], so a mistake here can never reach another
//! VM on the host. The parsers (agent answers, `.ci/vm-new`'s line, disk
//! lists, the backing image, the disk swap in a domain's XML) are pure and
//! unit-tested.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::lxd::{ensure_bench_name, BENCH_PREFIX};

/// The local system connection the test VMs live on.
pub const URI: &str = "qemu:///system";
/// How long an ordinary virsh call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the guest agent gets to answer one command.
const AGENT_SECS: u64 = 5;
/// How often a guest command's status is asked for while it runs.
const EXEC_POLL: Duration = Duration::from_millis(100);
/// How long a guest command may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

/// One libvirt connection.
#[derive(Debug, Clone)]
pub struct Virsh {
    uri: String,
}

impl Virsh {
    pub fn new(uri: &str) -> Virsh {
        Virsh {
            uri: uri.to_string(),
        }
    }

    /// `virsh -q -c URI ARGS`; returns stdout, fails with virsh's stderr.
    pub async fn run(&self, args: &[&str], within: Duration) -> Result<String> {
        let what = format!("virsh {}", args.first().copied().unwrap_or_default());
        let output = Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(within, output)
            .await
            .map_err(|_| anyhow!("{what}: no answer within {within:?}"))?
            .with_context(|| format!("running {what} (package libvirt-clients)"))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A virsh verb on one of the benchmark's domains: `virsh VERB NAME
    /// EXTRA...`.
    pub async fn on(&self, verb: &str, name: &str, extra: &[&str]) -> Result<String> {
        ensure_bench_name(name)?;
        let mut args = vec![verb, name];
        args.extend_from_slice(extra);
        self.run(&args, CALL_TIMEOUT).await
    }

    /// `virsh domstate`: `running`, `shut off`, ...
    pub async fn domstate(&self, name: &str) -> Result<String> {
        Ok(self.on("domstate", name, &[]).await?.trim().to_string())
    }

    /// One guest agent command; returns its `return` value.
    pub async fn agent(&self, name: &str, command: &Value) -> Result<Value> {
        let secs = AGENT_SECS.to_string();
        let text = command.to_string();
        ensure_bench_name(name)?;
        let out = self
            .run(
                &["qemu-agent-command", name, "--timeout", &secs, &text],
                Duration::from_secs(AGENT_SECS + 10),
            )
            .await?;
        agent_return(&out)
    }

    /// Runs `path ARGS` in the guest and waits for it; (exit code, stdout).
    pub async fn guest_exec(&self, name: &str, path: &str, args: &[&str]) -> Result<(i64, String)> {
        let started = self
            .agent(
                name,
                &json!({
                    "execute": "guest-exec",
                    "arguments": { "path": path, "arg": args, "capture-output": true },
                }),
            )
            .await?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("guest-exec gave no pid: {started}"))?;
        let deadline = Instant::now() + EXEC_TIMEOUT;
        loop {
            let status = self
                .agent(
                    name,
                    &json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } }),
                )
                .await?;
            if let Some(done) = exec_result(&status) {
                return Ok(done);
            }
            if Instant::now() >= deadline {
                bail!("{path} in {name} did not finish within {EXEC_TIMEOUT:?}");
            }
            tokio::time::sleep(EXEC_POLL).await;
        }
    }

    /// Ready: the agent answers and systemd says running or degraded (the
    /// same test the driver makes before it sends an ACPI request).
    pub async fn is_ready(&self, name: &str) -> bool {
        match self
            .guest_exec(name, "systemctl", &["is-system-running"])
            .await
        {
            Ok((_, out)) => is_ready_word(&out),
            Err(_) => false,
        }
    }

    /// Polls readiness every `poll` until it holds or `within` passes.
    pub async fn wait_ready(&self, name: &str, within: Duration, poll: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while !self.is_ready(name).await {
            if Instant::now() >= deadline {
                bail!("{name} was not ready within {within:?}");
            }
            tokio::time::sleep(poll).await;
        }
        Ok(())
    }

    /// The guest's boot id, `None` while the agent does not answer.
    pub async fn boot_id(&self, name: &str) -> Option<String> {
        let (code, out) = self
            .guest_exec(name, "cat", &["/proc/sys/kernel/random/boot_id"])
            .await
            .ok()?;
        let id = out.trim();
        (code == 0 && !id.is_empty()).then(|| id.to_string())
    }

    /// Polls `domstate` every `poll` until the domain is shut off.
    pub async fn wait_shut_off(&self, name: &str, within: Duration, poll: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.domstate(name).await? == "shut off" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{name} was not shut off within {within:?}");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// The path of volume `volume` in `pool`.
    pub async fn vol_path(&self, pool: &str, volume: &str) -> Result<String> {
        ensure_bench_name(volume)?;
        Ok(self
            .run(&["vol-path", "--pool", pool, volume], CALL_TIMEOUT)
            .await?
            .trim()
            .to_string())
    }

    /// Deletes a volume of the benchmark's (by path).
    pub async fn vol_delete(&self, path: &str) -> Result<()> {
        let file = path.rsplit('/').next().unwrap_or(path);
        ensure_bench_name(file)?;
        self.run(&["vol-delete", path], CALL_TIMEOUT).await?;
        Ok(())
    }
}

/// A VM as `.ci/vm-new` describes it: `NAME ADDRESS MAC UUID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestVm {
    pub name: String,
    pub address: String,
    pub mac: String,
    pub uuid: String,
}

/// Reads `.ci/vm-new`'s last line.
pub fn parse_vm_new(stdout: &str) -> Option<TestVm> {
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut words = line.split_whitespace();
    let vm = TestVm {
        name: words.next()?.to_string(),
        address: words.next()?.to_string(),
        mac: words.next()?.to_string(),
        uuid: words.next()?.to_string(),
    };
    let looks_right = words.next().is_none()
        && vm.address.split('.').count() == 4
        && vm.mac.split(':').count() == 6
        && vm.uuid.len() == 36;
    looks_right.then_some(vm)
}

/// Makes and starts a test VM with `.ci/vm-new NAME`. Without `--wait`:
/// readiness is waited for by the caller, and `--wait`'s check that the
/// guest's eth0 has its address is left out, since the benchmark never
/// uses the guest's network and on a loaded host the guest's ifupdown
/// sometimes runs before its NIC has appeared.
pub async fn vm_new(repo: &Path, name: &str) -> Result<TestVm> {
    ensure_bench_name(name)?;
    let out = Command::new(repo.join(".ci/vm-new"))
        .arg(name)
        .current_dir(repo)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running .ci/vm-new")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            ".ci/vm-new {name} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_vm_new(&stdout).ok_or_else(|| anyhow!(".ci/vm-new {name} printed {stdout:?}"))
}

/// Removes a test VM and its volumes with `.ci/vm-down NAME`.
pub async fn vm_down(repo: &Path, name: &str) -> Result<()> {
    ensure_bench_name(name)?;
    let out = Command::new(repo.join(".ci/vm-down"))
        .arg(name)
        .current_dir(repo)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running .ci/vm-down")?;
    if !out.status.success() {
        bail!(
            ".ci/vm-down {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The `return` member of the agent's JSON answer.
pub fn agent_return(out: &str) -> Result<Value> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("the guest agent gave no answer: {out:?}"))?;
    let parsed: Value = serde_json::from_str(line).context("the guest agent's answer")?;
    if let Some(error) = parsed.get("error") {
        bail!("the guest agent refused: {error}");
    }
    parsed
        .get("return")
        .cloned()
        .ok_or_else(|| anyhow!("the guest agent's answer has no return: {line}"))
}

/// (exit code, stdout) of a `guest-exec-status` answer once the command
/// has exited; `None` while it runs.
pub fn exec_result(status: &Value) -> Option<(i64, String)> {
    if status.get("exited").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let code = status
        .get("exitcode")
        .and_then(Value::as_i64)
        .or_else(|| {
            status
                .get("signal")
                .and_then(Value::as_i64)
                .map(|s| 128 + s)
        })
        .unwrap_or(-1);
    let out = status
        .get("out-data")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Some((code, out))
}

/// What `systemctl is-system-running` prints for a booted guest.
pub fn is_ready_word(out: &str) -> bool {
    matches!(out.trim(), "running" | "degraded")
}

/// The file behind disk `target` in `virsh domblklist --details` output
/// (`TYPE DEVICE TARGET SOURCE`).
pub fn disk_source(domblklist: &str, target: &str) -> Option<String> {
    domblklist.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["file", "disk", t, source] if *t == target => Some(source.to_string()),
            _ => None,
        }
    })
}

/// The backing file in `virsh vol-dumpxml` of an overlay.
pub fn backing_path(vol_xml: &str) -> Option<String> {
    let store = &vol_xml[vol_xml.find("<backingStore>")?..];
    let start = store.find("<path>")? + "<path>".len();
    let end = store[start..].find("</path>")? + start;
    Some(store[start..end].trim().to_string())
}

/// The capacity in `virsh vol-info --bytes` output (`Capacity: N bytes`).
pub fn capacity_bytes(vol_info: &str) -> Option<u64> {
    vol_info.lines().find_map(|line| {
        line.trim()
            .strip_prefix("Capacity:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The domain's XML with each `(old, new)` disk file swapped; fails when
/// one of the old files is not in it.
pub fn swap_sources(xml: &str, swaps: &[(&str, &str)]) -> Result<String> {
    let mut out = xml.to_string();
    for (old, new) in swaps {
        let from = format!("file='{old}'");
        if !out.contains(&from) {
            bail!("the domain's definition has no disk {old}");
        }
        out = out.replace(&from, &format!("file='{new}'"));
    }
    Ok(out)
}

/// NoCloud seed files for a rebuilt guest: a new instance id, its host
/// name and its static address on its MAC (no gateway on the test bridge).
pub fn seed_files(
    name: &str,
    instance_id: &str,
    mac: &str,
    address: &str,
) -> [(String, String); 3] {
    [
        (
            "meta-data".to_string(),
            format!("instance-id: {instance_id}\nlocal-hostname: {name}\n"),
        ),
        (
            "user-data".to_string(),
            "#cloud-config\nssh_pwauth: false\n".to_string(),
        ),
        (
            "network-config".to_string(),
            format!(
                "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    \
                 mac_address: \"{mac}\"\n    subnets:\n      - type: static\n        \
                 address: {address}/24\n"
            ),
        ),
    ]
}

/// The name every benchmark domain starts with.
pub fn bench_name(suffix: &str) -> String {
    format!("{BENCH_PREFIX}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_new_line() {
        let out = "noise\nadvps-test-bench-0a1b2c3d 198.51.100.203 52:54:00:64:c8:cb \
                   5f0c7a52-3f0e-4c36-9a0e-7c1d2b3a4f50\n";
        let vm = parse_vm_new(out).expect("parsed");
        assert_eq!(vm.name, "advps-test-bench-0a1b2c3d");
        assert_eq!(vm.address, "198.51.100.203");
        assert_eq!(vm.mac, "52:54:00:64:c8:cb");
        assert_eq!(parse_vm_new("vm-new: error: no free test address"), None);
        assert_eq!(parse_vm_new(""), None);
    }

    #[test]
    fn agent_answers() {
        let ok = agent_return("{\"return\":{\"pid\":812}}\n").unwrap();
        assert_eq!(ok["pid"], 812);
        let refused = agent_return("{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"}}");
        let message = format!("{:#}", refused.unwrap_err());
        assert!(
            message.contains("refused") && message.contains("GenericError"),
            "{message}"
        );
        assert!(agent_return("").is_err());
    }

    #[test]
    fn exec_status() {
        assert_eq!(exec_result(&json!({"exited": false})), None);
        assert_eq!(exec_result(&json!({})), None);
        // "running\n" in base64.
        let done = json!({"exited": true, "exitcode": 0, "out-data": "cnVubmluZwo="});
        assert_eq!(exec_result(&done), Some((0, "running\n".to_string())));
        let killed = json!({"exited": true, "signal": 9});
        assert_eq!(exec_result(&killed), Some((137, String::new())));
    }

    #[test]
    fn ready_words() {
        assert!(is_ready_word("running\n"));
        assert!(is_ready_word("degraded"));
        assert!(!is_ready_word("starting"));
        assert!(!is_ready_word("stopping"));
        assert!(!is_ready_word(""));
    }

    #[test]
    fn disks_and_backing() {
        let list = " file   disk   vda   /var/lib/libvirt/images/advps/x-disk0.qcow2\n \
                    file   disk   vdb   /var/lib/libvirt/images/advps/x-seed0.iso\n";
        assert_eq!(
            disk_source(list, "vdb").as_deref(),
            Some("/var/lib/libvirt/images/advps/x-seed0.iso")
        );
        assert_eq!(disk_source(list, "vdc"), None);
        let xml = "<volume><target><path>/p/x.qcow2</path></target><backingStore>\n\
                   <path>/var/cache/advps-vm/images/debian-12-r3.qcow2</path>\n\
                   <format type='qcow2'/></backingStore></volume>";
        assert_eq!(
            backing_path(xml).as_deref(),
            Some("/var/cache/advps-vm/images/debian-12-r3.qcow2")
        );
        assert_eq!(backing_path("<volume/>"), None);
        let info = "Name:           x.qcow2\nType:           file\n\
                    Capacity:       4294967296 bytes\nAllocation:     1 bytes\n";
        assert_eq!(capacity_bytes(info), Some(4_294_967_296));
        assert_eq!(capacity_bytes("Capacity: lots"), None);
    }

    #[test]
    fn disk_swap() {
        let xml = "<disk><source file='/p/a.qcow2'/></disk><disk><source file='/p/s.iso'/></disk>";
        let swapped = swap_sources(
            xml,
            &[("/p/a.qcow2", "/p/b.qcow2"), ("/p/s.iso", "/p/t.iso")],
        )
        .unwrap();
        assert_eq!(
            swapped,
            "<disk><source file='/p/b.qcow2'/></disk><disk><source file='/p/t.iso'/></disk>"
        );
        assert!(swap_sources(xml, &[("/p/zz.qcow2", "/p/b.qcow2")]).is_err());
    }

    #[test]
    fn seed_carries_the_address_on_the_mac() {
        let files = seed_files(
            "advps-test-bench-1",
            "advps-test-bench-1-r2",
            "52:54:00:64:c8:cb",
            "198.51.100.203",
        );
        assert_eq!(files[0].0, "meta-data");
        assert!(files[0].1.contains("instance-id: advps-test-bench-1-r2"));
        assert!(files[2].1.contains("mac_address: \"52:54:00:64:c8:cb\""));
        assert!(files[2].1.contains("address: 198.51.100.203/24"));
    }
}
