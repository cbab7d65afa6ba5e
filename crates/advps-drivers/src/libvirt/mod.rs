//! The libvirt driver: virtual machines on plain KVM/QEMU hosts.
//!
//! A node is one libvirt connection URI (`qemu:///system` on the same host,
//! `qemu+ssh://USER@HOST/system` or `qemu+tls://HOST/system` for remote
//! ones); every call goes through [`virsh::Virsh`]. What libvirt cannot see
//! from outside the guest (uptime, addresses, the root password, whether
//! the guest is ready to take an ACPI request) goes through the QEMU guest
//! agent, itself reached through libvirt.
//!
//! - **Ready** means the agent answers *and* `systemctl is-system-running`
//!   says `running` or `degraded`: before that an ACPI request is silently
//!   lost (logind is not up yet). Graceful stops and reboots therefore
//!   repeat their request, in lengthening rounds, while the guest is up and
//!   not yet going down, until it acts on it or the timeout passes; then
//!   they force.
//! - **Uptime** is the guest's `/proc/uptime`: libvirt's QEMU process age
//!   does not restart with a guest reboot. No agent, no uptime (`None`).
//! - **Rebuild** gives the domain a fresh copy-on-write overlay of the OS
//!   image and a NoCloud seed, in the same storage pool as its disk, and
//!   swaps both into the domain's definition: name, UUID, MAC and every
//!   other setting stay. The old disk is deleted only once the domain uses
//!   the new one. Every step can run again after a crash.
//! - **Usage** is libvirt's bulk domain statistics (`virsh domstats`), one
//!   call for the node or the domain ([`stats`]).
//! - **Console** is the domain's serial console through `virsh console`
//!   ([`console`]).

pub mod console;
pub mod domain;
pub mod stats;
pub mod virsh;

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::{
    AddressConfig, Capabilities, ConsoleStream, Driver, DriverError, DriverResult, ImageInfo,
    InstanceInfo, InstanceKind, LiveStatus, PowerOutcome, PowerStatus, RebuildRequest, StepOutcome,
    StopMode, TerminalSize, UsageReading,
};
pub use stats::parse_domstats;
use virsh::{is_agent_failure, Virsh};

/// How long a graceful reboot without a timeout of its own may take.
const REBOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a (re)built or started guest gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// How long one guest command (a script through the agent) may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the guest gets after the first shutdown or reboot request
/// before it is asked again; each later round is longer by as much (up to
/// [`MAX_ROUND`]), so a guest that is slow to act on a request on a busy
/// host is not asked over and over.
const SHUTDOWN_ROUND: Duration = Duration::from_secs(4);
const MAX_ROUND: Duration = Duration::from_secs(16);
/// How long a status may wait for the guest agent (uptime, addresses).
const STATUS_AGENT_BUDGET: Duration = Duration::from_secs(8);
/// How long a status may wait for the power state. The ordinary 30 s
/// call deadline plus the agent's budget would exceed a client's 30 s
/// wait when libvirtd is slow (its workers held by agent calls on a busy
/// host); a status answers within both bounds added up.
const STATUS_POWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest agent gets to answer the ping that comes before a
/// status's agent calls: a stopped or hung agent then costs this, not a
/// guest-exec's whole deadline.
const STATUS_PING_SECS: u64 = 2;
/// How long one domain's statistics may take (status waits for them).
const USAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long overlay and seed volume calls may take.
const VOLUME_TIMEOUT: Duration = Duration::from_secs(120);

const REBUILD_STEPS: &[&str] = &[
    "check", "stop", "overlay", "seed", "swap", "start", "ready", "address", "password",
];

/// A driver for one libvirt connection.
pub struct LibvirtDriver {
    virsh: Virsh,
}

/// Domain and volume names go to virsh as words; keep them to what libvirt
/// itself accepts in practice, so nothing can read as an option.
fn check_name(name: &str) -> DriverResult<()> {
    if name.is_empty()
        || name.starts_with('-')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | ':'))
    {
        return Err(DriverError::NotFound);
    }
    Ok(())
}

/// The power state `virsh domstate` prints.
pub fn power_from_domstate(raw: &str) -> PowerStatus {
    match raw.lines().next().unwrap_or("").trim() {
        "running" | "idle" | "blocked" | "in shutdown" => PowerStatus::Running,
        "shut off" => PowerStatus::Stopped,
        other => PowerStatus::Other(other.replace(' ', "-")),
    }
}

/// The power state of `state.state` in libvirt's domain statistics.
fn power_from_code(code: i64) -> PowerStatus {
    match code {
        1 | 2 | 4 => PowerStatus::Running,
        5 => PowerStatus::Stopped,
        3 => PowerStatus::Other("paused".into()),
        6 => PowerStatus::Other("crashed".into()),
        7 => PowerStatus::Other("pmsuspended".into()),
        _ => PowerStatus::Other("unknown".into()),
    }
}

/// Global IPv4 addresses from `guest-network-get-interfaces`.
pub fn addresses_from_agent(interfaces: &Value) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    for interface in interfaces.as_array().into_iter().flatten() {
        for address in interface
            .get("ip-addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if address.get("ip-address-type").and_then(Value::as_str) != Some("ipv4") {
                continue;
            }
            if let Some(ip) = address
                .get("ip-address")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            {
                if !ip.is_loopback() && !ip.is_link_local() && !found.contains(&ip) {
                    found.push(ip);
                }
            }
        }
    }
    found
}

/// Seconds of `/proc/uptime`.
pub fn uptime_from_proc(raw: &str) -> Option<u64> {
    let first = raw.split_whitespace().next()?;
    first.parse::<f64>().ok().map(|s| s as u64)
}

fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix(label)
            .map(|rest| rest.trim_start_matches(':').trim())
    })
}

impl LibvirtDriver {
    /// Connects to the node, refusing one libvirt does not answer for.
    pub async fn connect(virsh: Virsh) -> DriverResult<LibvirtDriver> {
        let uri = virsh.run(&["uri"]).await?;
        if uri.trim().is_empty() {
            return Err(DriverError::Unreachable(format!(
                "the hypervisor did not answer at {}",
                virsh.uri()
            )));
        }
        Ok(LibvirtDriver { virsh })
    }

    pub fn virsh(&self) -> &Virsh {
        &self.virsh
    }

    async fn power_of(&self, instance: &str) -> DriverResult<PowerStatus> {
        self.power_within(instance, self.virsh.timeout()).await
    }

    async fn power_within(&self, instance: &str, timeout: Duration) -> DriverResult<PowerStatus> {
        check_name(instance)?;
        let raw = self
            .virsh
            .run_within(&["domstate", instance], timeout)
            .await?;
        Ok(power_from_domstate(&raw))
    }

    async fn require_running(&self, instance: &str) -> DriverResult<()> {
        match self.power_of(instance).await? {
            PowerStatus::Running => Ok(()),
            _ => Err(DriverError::NotRunning),
        }
    }

    /// What `systemctl is-system-running` says in the guest (`running`,
    /// `degraded`, `starting`, `stopping`, ...). `Err` when the agent does
    /// not answer at all.
    async fn system_state(&self, instance: &str) -> DriverResult<GuestState> {
        let out = self
            .virsh
            .guest_exec(
                instance,
                "systemctl",
                &["is-system-running"],
                None,
                Duration::from_secs(10),
            )
            .await?;
        Ok(GuestState::from_word(out.stdout.trim()))
    }

    /// Whether the guest is ready: agent answers and systemd is up.
    /// `Err` when the agent does not answer at all.
    pub async fn is_ready(&self, instance: &str) -> DriverResult<bool> {
        Ok(self.system_state(instance).await? == GuestState::Ready)
    }

    /// Waits until the guest is ready or `deadline` passes.
    pub async fn wait_ready(&self, instance: &str, deadline: Instant) -> DriverResult<bool> {
        loop {
            match self.is_ready(instance).await {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) if is_agent_failure(&e) || e.is_transient() => {}
                Err(DriverError::Engine(m)) if m.contains("not running") => {
                    return Err(DriverError::NotRunning)
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            if self.power_of(instance).await? != PowerStatus::Running {
                return Err(DriverError::NotRunning);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn boot_id(&self, instance: &str) -> Option<String> {
        let out = self
            .virsh
            .guest_exec(
                instance,
                "cat",
                &["/proc/sys/kernel/random/boot_id"],
                None,
                Duration::from_secs(5),
            )
            .await
            .ok()?;
        let id = out.stdout.trim().to_string();
        (!id.is_empty()).then_some(id)
    }

    async fn addresses(&self, instance: &str) -> DriverResult<Vec<Ipv4Addr>> {
        let interfaces = self
            .virsh
            .agent(
                instance,
                &json!({ "execute": "guest-network-get-interfaces" }),
            )
            .await?;
        Ok(addresses_from_agent(&interfaces))
    }

    /// Waits for the domain to be shut off, until `deadline`.
    async fn wait_stopped(&self, instance: &str, deadline: Instant) -> DriverResult<bool> {
        loop {
            if self.power_of(instance).await? == PowerStatus::Stopped {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn destroy(&self, instance: &str) -> DriverResult<()> {
        match self.virsh.run(&["destroy", instance]).await {
            Ok(_) | Err(DriverError::NotRunning) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn graceful_stop(&self, instance: &str, timeout: Duration) -> DriverResult<PowerOutcome> {
        self.require_running(instance).await?;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut rounds = 0u32;
        loop {
            if Instant::now() >= deadline {
                self.destroy(instance).await?;
                return Ok(PowerOutcome::GracefulThenForced);
            }
            // Only a ready guest acts on ACPI (before logind is up the
            // request is lost), so the request is repeated until the guest
            // is seen going down; one that is already stopping is left to
            // it. A guest without an agent gets it every round, in case it
            // listens; one that stays "starting" past half the timeout (a
            // unit that never finishes) gets it too.
            let state = self.system_state(instance).await;
            let ask = match &state {
                Ok(GuestState::Ready) | Err(_) => true,
                Ok(GuestState::Stopping) => false,
                Ok(GuestState::Starting) => started.elapsed() * 2 >= timeout,
            };
            if ask {
                let _ = self
                    .virsh
                    .run(&["shutdown", instance, "--mode", "acpi"])
                    .await;
                // A ready guest that let one ACPI request pass unheeded
                // is asked through its agent too.
                if matches!(state, Ok(GuestState::Ready)) && rounds > 0 {
                    let _ = self
                        .virsh
                        .run(&["shutdown", instance, "--mode", "agent"])
                        .await;
                }
                rounds += 1;
            }
            if self
                .wait_stopped(instance, round_end(rounds, deadline))
                .await?
            {
                return Ok(PowerOutcome::Graceful);
            }
        }
    }

    /// The guest's boot id, asked a few times: one slow agent answer on a
    /// busy host must not read as "no agent".
    async fn boot_id_patiently(&self, instance: &str) -> Option<String> {
        for attempt in 0..5 {
            if let Some(id) = self.boot_id(instance).await {
                return Some(id);
            }
            if attempt < 4 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        None
    }

    async fn graceful_reboot(
        &self,
        instance: &str,
        timeout: Duration,
    ) -> DriverResult<PowerOutcome> {
        self.require_running(instance).await?;
        let deadline = Instant::now() + timeout;
        let ready = self.wait_ready(instance, deadline).await?;
        let before = if ready {
            self.boot_id_patiently(instance).await
        } else {
            None
        };
        let Some(before) = before else {
            // No agent to tell a new boot from the old one: ask once, and
            // force if that did not take before the deadline.
            if self
                .virsh
                .run(&["reboot", instance, "--mode", "acpi"])
                .await
                .is_err()
                || !ready && Instant::now() >= deadline
            {
                self.virsh.run(&["reset", instance]).await?;
                return Ok(PowerOutcome::GracefulThenForced);
            }
            return Ok(PowerOutcome::Graceful);
        };
        let _ = self
            .virsh
            .run(&["reboot", instance, "--mode", "acpi"])
            .await;
        let mut rounds = 1u32;
        let mut next_ask = round_end(rounds, deadline);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(now) = self.boot_id(instance).await {
                if now != before {
                    return Ok(PowerOutcome::Graceful);
                }
                // Still the old boot: ask again, through ACPI and the
                // agent, but only while the guest is up and ready (not
                // while it is already going down, which takes long on a
                // busy host).
                if Instant::now() >= next_ask
                    && matches!(self.system_state(instance).await, Ok(GuestState::Ready))
                {
                    let _ = self
                        .virsh
                        .run(&["reboot", instance, "--mode", "acpi"])
                        .await;
                    let _ = self
                        .virsh
                        .run(&["reboot", instance, "--mode", "agent"])
                        .await;
                    rounds += 1;
                    next_ask = round_end(rounds, deadline);
                }
            }
            if Instant::now() >= deadline {
                self.virsh.run(&["reset", instance]).await?;
                return Ok(PowerOutcome::GracefulThenForced);
            }
            if self.power_of(instance).await? == PowerStatus::Stopped {
                // The guest powered off instead (on_reboot=destroy): start it.
                self.virsh.run(&["start", instance]).await?;
                return Ok(PowerOutcome::Graceful);
            }
        }
    }

    async fn ensure_stopped(&self, instance: &str) -> DriverResult<()> {
        if self.power_of(instance).await? != PowerStatus::Stopped {
            self.destroy(instance).await?;
        }
        Ok(())
    }

    async fn ensure_started(&self, instance: &str) -> DriverResult<()> {
        match self.start(instance).await {
            Ok(()) | Err(DriverError::AlreadyRunning) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn define(&self, xml: &str) -> DriverResult<()> {
        use std::io::Write;
        let mut file = tempfile::Builder::new()
            .prefix("advps-domain-")
            .suffix(".xml")
            .tempfile()
            .map_err(|e| DriverError::Engine(format!("cannot write the domain definition: {e}")))?;
        file.write_all(xml.as_bytes())
            .map_err(|e| DriverError::Engine(format!("cannot write the domain definition: {e}")))?;
        let path = file.path().to_string_lossy().into_owned();
        self.virsh.run(&["define", &path]).await.map(|_| ())
    }

    async fn inactive_xml(&self, instance: &str) -> DriverResult<String> {
        check_name(instance)?;
        self.virsh.run(&["dumpxml", "--inactive", instance]).await
    }

    /// The pool and path of an OS image given as `POOL/VOLUME` or a path.
    async fn resolve_image(&self, image: &str) -> DriverResult<(String, String)> {
        let missing = || DriverError::Engine(format!("the node has no image '{image}'"));
        if image.starts_with('/') {
            let pool = self
                .virsh
                .run(&["vol-pool", image])
                .await
                .map_err(|_| missing())?;
            return Ok((pool.trim().to_string(), image.to_string()));
        }
        let (pool, volume) = image.split_once('/').ok_or_else(missing)?;
        check_name(pool).map_err(|_| missing())?;
        check_name(volume).map_err(|_| missing())?;
        let path = self
            .virsh
            .run(&["vol-path", "--pool", pool, volume])
            .await
            .map_err(|_| missing())?;
        Ok((pool.to_string(), path.trim().to_string()))
    }

    async fn volume_capacity(&self, path: &str) -> DriverResult<u64> {
        let info = self.virsh.run(&["vol-info", "--bytes", path]).await?;
        field(&info, "Capacity")
            .and_then(|c| c.split_whitespace().next())
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| DriverError::Engine(format!("no capacity for volume {path}")))
    }

    async fn volume_exists(&self, pool: &str, name: &str) -> bool {
        self.virsh
            .run(&["vol-info", "--pool", pool, name])
            .await
            .is_ok()
    }

    /// Writes the NoCloud seed as an ISO 9660 volume (label `cidata`) into
    /// `pool`, replacing an earlier attempt's.
    async fn upload_seed(
        &self,
        pool: &str,
        name: &str,
        files: &[(&'static str, String)],
    ) -> DriverResult<()> {
        let dir = tempfile::Builder::new()
            .prefix("advps-seed-")
            .tempdir()
            .map_err(|e| DriverError::Engine(format!("cannot make the seed: {e}")))?;
        let mut paths = Vec::new();
        for (file, content) in files {
            let path = dir.path().join(file);
            std::fs::write(&path, content)
                .map_err(|e| DriverError::Engine(format!("cannot make the seed: {e}")))?;
            paths.push(path);
        }
        let iso = dir.path().join("seed.iso");
        let mut command = tokio::process::Command::new("genisoimage");
        command
            .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
            .arg(&iso)
            .args(&paths)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .map_err(|_| DriverError::Timeout("genisoimage".into()))?
            .map_err(|e| {
                DriverError::Engine(format!(
                    "cannot run genisoimage to make the NoCloud seed (package genisoimage): {e}"
                ))
            })?;
        if !output.status.success() {
            return Err(DriverError::Engine(format!(
                "genisoimage failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let size = std::fs::metadata(&iso)
            .map_err(|e| DriverError::Engine(format!("cannot read the seed: {e}")))?
            .len()
            .to_string();
        if self.volume_exists(pool, name).await {
            self.virsh
                .run(&["vol-delete", "--pool", pool, name])
                .await?;
        }
        self.virsh
            .run_within(
                &["vol-create-as", pool, name, &size, "--format", "raw"],
                VOLUME_TIMEOUT,
            )
            .await?;
        let iso = iso.to_string_lossy().into_owned();
        self.virsh
            .run_within(&["vol-upload", "--pool", pool, name, &iso], VOLUME_TIMEOUT)
            .await?;
        Ok(())
    }

    /// The address is on the guest (read back through the agent), waiting
    /// a little for an interface that is coming up.
    async fn has_address(&self, instance: &str, address: Ipv4Addr, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(found) = self.addresses(instance).await {
                if found.contains(&address) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// What systemd says about the guest as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestState {
    /// `running` or `degraded`: logind and the agent act on requests.
    Ready,
    /// `stopping`: the guest is going down already.
    Stopping,
    /// `initializing`, `starting`, `maintenance`, anything else.
    Starting,
}

impl GuestState {
    fn from_word(word: &str) -> GuestState {
        match word {
            "running" | "degraded" => GuestState::Ready,
            "stopping" => GuestState::Stopping,
            _ => GuestState::Starting,
        }
    }
}

/// When round `rounds` (1 for the first request) of a shutdown or reboot
/// ends: 4 s after it, then 8, 12, up to 16 s; never after `deadline`.
fn round_end(rounds: u32, deadline: Instant) -> Instant {
    let round = (SHUTDOWN_ROUND * rounds.max(1)).min(MAX_ROUND);
    (Instant::now() + round).min(deadline)
}

fn scratch_str(scratch: &Value, key: &str) -> DriverResult<String> {
    scratch
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| DriverError::Engine(format!("rebuild state has no {key}; start it again")))
}

#[async_trait]
impl Driver for LibvirtDriver {
    fn name(&self) -> &'static str {
        "libvirt"
    }

    async fn engine_version(&self) -> DriverResult<Option<String>> {
        // `virsh version` prints lines such as "Using library: libvirt 9.0.0"
        // and "Running hypervisor: QEMU 10.0.2".
        let out = self.virsh.run(&["version"]).await?;
        let of = |label: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .map(|v| v.trim().to_string())
        };
        let parts: Vec<String> = [of("Running against daemon:"), of("Running hypervisor:")]
            .into_iter()
            .flatten()
            .collect();
        Ok((!parts.is_empty()).then(|| parts.join(", ")))
    }

    async fn capabilities(&self) -> DriverResult<Capabilities> {
        Ok(Capabilities {
            containers: false,
            virtual_machines: true,
            set_password: true,
            configure_address: true,
            rebuild: true,
        })
    }

    async fn start(&self, instance: &str) -> DriverResult<()> {
        if self.power_of(instance).await? == PowerStatus::Running {
            return Err(DriverError::AlreadyRunning);
        }
        self.virsh.run(&["start", instance]).await.map(|_| ())
    }

    async fn stop(&self, instance: &str, mode: StopMode) -> DriverResult<()> {
        self.stop_with_outcome(instance, mode).await.map(|_| ())
    }

    async fn stop_with_outcome(
        &self,
        instance: &str,
        mode: StopMode,
    ) -> DriverResult<PowerOutcome> {
        match mode {
            StopMode::Force => {
                self.require_running(instance).await?;
                self.destroy(instance).await?;
                Ok(PowerOutcome::Forced)
            }
            StopMode::Graceful { timeout } => self.graceful_stop(instance, timeout).await,
        }
    }

    async fn reboot(&self, instance: &str) -> DriverResult<()> {
        self.graceful_reboot(instance, REBOOT_TIMEOUT)
            .await
            .map(|_| ())
    }

    async fn reboot_with_mode(&self, instance: &str, mode: StopMode) -> DriverResult<PowerOutcome> {
        match mode {
            StopMode::Force => {
                self.require_running(instance).await?;
                self.virsh.run(&["reset", instance]).await?;
                Ok(PowerOutcome::Forced)
            }
            StopMode::Graceful { timeout } => self.graceful_reboot(instance, timeout).await,
        }
    }

    async fn status(&self, instance: &str) -> DriverResult<LiveStatus> {
        let power = self.power_within(instance, STATUS_POWER_TIMEOUT).await?;
        if power != PowerStatus::Running {
            return Ok(LiveStatus {
                power,
                uptime_secs: Some(0),
                addresses: Vec::new(),
            });
        }
        // The agent's part has one budget: an agent that hangs rather than
        // disconnects (libvirt then waits out every command's timeout, and
        // queues calls behind each other) makes the uptime unknown, not the
        // status late.
        let agent_part = async {
            let ping = json!({ "execute": "guest-ping" });
            if self
                .virsh
                .agent_within(instance, &ping, STATUS_PING_SECS)
                .await
                .is_err()
            {
                return (None, Vec::new());
            }
            let uptime = self
                .virsh
                .guest_exec(
                    instance,
                    "cat",
                    &["/proc/uptime"],
                    None,
                    Duration::from_secs(5),
                )
                .await
                .ok()
                .and_then(|out| uptime_from_proc(&out.stdout));
            let addresses = if uptime.is_some() {
                self.addresses(instance).await.unwrap_or_default()
            } else {
                Vec::new()
            };
            (uptime, addresses)
        };
        let (uptime, addresses) = tokio::time::timeout(STATUS_AGENT_BUDGET, agent_part)
            .await
            .unwrap_or((None, Vec::new()));
        Ok(LiveStatus {
            power,
            uptime_secs: uptime,
            addresses,
        })
    }

    async fn usage(&self, instance: &str) -> DriverResult<UsageReading> {
        check_name(instance)?;
        let mut args = vec!["domstats"];
        args.extend_from_slice(stats::GROUPS);
        args.push(instance);
        let raw = self.virsh.run_within(&args, USAGE_TIMEOUT).await?;
        parse_domstats(&raw)
            .into_iter()
            .find(|(name, _)| name == instance)
            .map(|(_, values)| stats::Stats::new(&values).usage())
            .ok_or(DriverError::NotFound)
    }

    async fn usage_all(&self) -> DriverResult<Vec<(String, UsageReading)>> {
        // One call for the whole node: libvirt's bulk domain statistics.
        let mut args = vec!["domstats"];
        args.extend_from_slice(stats::GROUPS);
        let raw = self.virsh.run(&args).await?;
        Ok(parse_domstats(&raw)
            .into_iter()
            .map(|(name, values)| {
                let usage = stats::Stats::new(&values).usage();
                (name, usage)
            })
            .collect())
    }

    async fn configure_address(&self, instance: &str, address: &AddressConfig) -> DriverResult<()> {
        self.require_running(instance).await?;
        let cidr = format!("{}/{}", address.address, address.prefix);
        let gateway = address.gateway.map(|g| g.to_string()).unwrap_or_default();
        let out = self
            .virsh
            .guest_exec(
                instance,
                "/bin/sh",
                &["-s", "--", &cidr, &gateway],
                Some(crate::lxd::CONFIGURE_ADDRESS_SCRIPT.as_bytes()),
                EXEC_TIMEOUT,
            )
            .await?;
        if out.exit_code != 0 {
            return Err(DriverError::Engine(format!(
                "the guest did not take the address: {}",
                out.stderr.trim()
            )));
        }
        if !self
            .has_address(instance, address.address, Duration::from_secs(10))
            .await
        {
            return Err(DriverError::Engine(format!(
                "the guest does not show {cidr} after it was configured"
            )));
        }
        Ok(())
    }

    async fn set_password(
        &self,
        instance: &str,
        username: &str,
        password: &str,
    ) -> DriverResult<()> {
        crate::check_username(username)?;
        self.require_running(instance).await?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(password.as_bytes());
        let command = json!({
            "execute": "guest-set-user-password",
            "arguments": { "username": username, "password": encoded, "crypted": false }
        });
        self.virsh
            .agent_secret(instance, &command)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                DriverError::Engine(m) if !m.starts_with("the guest agent") => {
                    DriverError::Engine(format!("the guest agent could not set the password: {m}"))
                }
                other => other,
            })
    }

    async fn set_mac(&self, instance: &str, mac: &str) -> DriverResult<()> {
        let xml = self.inactive_xml(instance).await?;
        let changed = domain::with_mac(&xml, mac)
            .ok_or_else(|| DriverError::Engine("the domain has no network interface".into()))?;
        let running = self.power_of(instance).await? == PowerStatus::Running;
        self.define(&changed).await?;
        if running {
            self.graceful_stop(instance, Duration::from_secs(30))
                .await?;
            self.ensure_started(instance).await?;
        }
        Ok(())
    }

    fn rebuild_steps(&self) -> &'static [&'static str] {
        REBUILD_STEPS
    }

    async fn rebuild_step(
        &self,
        request: &RebuildRequest,
        step: usize,
        scratch: &mut Value,
    ) -> DriverResult<StepOutcome> {
        let Some(&name) = REBUILD_STEPS.get(step) else {
            return Ok(StepOutcome::Done);
        };
        let instance = request.instance.as_str();
        check_name(instance)?;
        match name {
            "check" => {
                // Decided once: a resumed rebuild keeps the names it chose.
                if scratch.get("overlay").is_none() {
                    let (_, backing) = self.resolve_image(&request.image).await?;
                    let xml = self.inactive_xml(instance).await?;
                    let root = domain::root_disk(&xml).ok_or_else(|| {
                        DriverError::Engine("the domain has no writable disk".into())
                    })?;
                    let old = root.source.clone().ok_or_else(|| {
                        DriverError::Engine("the domain's disk has no file".into())
                    })?;
                    let pool = self
                        .virsh
                        .run(&["vol-pool", &old])
                        .await
                        .map_err(|_| {
                            DriverError::Engine(format!(
                                "the domain's disk {old} is in no libvirt storage pool"
                            ))
                        })?
                        .trim()
                        .to_string();
                    let capacity = self
                        .volume_capacity(&backing)
                        .await?
                        .max(self.volume_capacity(&old).await.unwrap_or(0));
                    let tag = format!("r{}", chrono::Utc::now().timestamp_millis());
                    *scratch = json!({
                        "backing": backing,
                        "pool": pool,
                        "capacity": capacity,
                        "old_disk": old,
                        "old_seed": domain::seed_disk(&xml).and_then(|d| d.source),
                        "mac": domain::first_mac(&xml),
                        "tag": tag,
                        "overlay": format!("{instance}-{tag}.qcow2"),
                        "seed": format!("{instance}-seed-{tag}.iso"),
                    });
                }
            }
            "stop" => self.ensure_stopped(instance).await?,
            "overlay" => {
                let pool = scratch_str(scratch, "pool")?;
                let overlay = scratch_str(scratch, "overlay")?;
                if !self.volume_exists(&pool, &overlay).await {
                    let backing = scratch_str(scratch, "backing")?;
                    let capacity = scratch
                        .get("capacity")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        .to_string();
                    self.virsh
                        .run_within(
                            &[
                                "vol-create-as",
                                &pool,
                                &overlay,
                                &capacity,
                                "--format",
                                "qcow2",
                                "--backing-vol",
                                &backing,
                                "--backing-vol-format",
                                "qcow2",
                            ],
                            VOLUME_TIMEOUT,
                        )
                        .await?;
                }
            }
            "seed" => {
                let pool = scratch_str(scratch, "pool")?;
                let seed = scratch_str(scratch, "seed")?;
                let tag = scratch_str(scratch, "tag")?;
                let mac = scratch
                    .get("mac")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let hostname = domain::hostname_for(instance);
                let instance_id = format!("{instance}-{tag}");
                let files = domain::seed_files(&domain::Seed {
                    instance_id: &instance_id,
                    hostname: &hostname,
                    mac: mac.as_deref(),
                    address: request.address,
                    ssh_keys: &[],
                });
                self.upload_seed(&pool, &seed, &files).await?;
            }
            "swap" => {
                let pool = scratch_str(scratch, "pool")?;
                let overlay = scratch_str(scratch, "overlay")?;
                let seed = scratch_str(scratch, "seed")?;
                let overlay_path = self
                    .virsh
                    .run(&["vol-path", "--pool", &pool, &overlay])
                    .await?
                    .trim()
                    .to_string();
                let seed_path = self
                    .virsh
                    .run(&["vol-path", "--pool", &pool, &seed])
                    .await?
                    .trim()
                    .to_string();
                let xml = self.inactive_xml(instance).await?;
                let root = domain::root_disk(&xml)
                    .ok_or_else(|| DriverError::Engine("the domain has no writable disk".into()))?;
                if root.source.as_deref() != Some(overlay_path.as_str()) {
                    let mut new_xml = domain::with_disk_source(&xml, &root, &overlay_path);
                    new_xml = match domain::seed_disk(&new_xml) {
                        Some(disk) => domain::with_disk_source(&new_xml, &disk, &seed_path),
                        None => {
                            let target = domain::free_target(&new_xml);
                            domain::with_seed_disk(&new_xml, &seed_path, &target).ok_or_else(
                                || DriverError::Engine("the domain has no devices".into()),
                            )?
                        }
                    };
                    self.define(&new_xml).await?;
                }
                // The old disk goes only now that the domain uses the new
                // one, and only if it was the domain's own (never the image).
                let prefix = format!("{instance}-");
                for key in ["old_disk", "old_seed"] {
                    let Some(old) = scratch.get(key).and_then(Value::as_str) else {
                        continue;
                    };
                    let file = old.rsplit('/').next().unwrap_or(old);
                    if file.starts_with(&prefix)
                        && old != overlay_path
                        && old != seed_path
                        && self.volume_exists(&pool, file).await
                    {
                        self.virsh
                            .run(&["vol-delete", "--pool", &pool, file])
                            .await?;
                    }
                }
            }
            "start" => self.ensure_started(instance).await?,
            "ready" => {
                if !self
                    .wait_ready(instance, Instant::now() + READY_TIMEOUT)
                    .await?
                {
                    return Err(DriverError::Engine(format!(
                        "the rebuilt guest was not ready within {} s",
                        READY_TIMEOUT.as_secs()
                    )));
                }
            }
            "address" => {
                if let Some(address) = &request.address {
                    if !self
                        .has_address(instance, address.address, Duration::from_secs(5))
                        .await
                    {
                        self.configure_address(instance, address).await?;
                    }
                }
            }
            "password" => {
                if let Some(password) = &request.password {
                    self.set_password(instance, &request.username, password)
                        .await?;
                }
            }
            other => return Err(DriverError::Unsupported(format!("rebuild step {other}"))),
        }
        Ok(if step + 1 >= REBUILD_STEPS.len() {
            StepOutcome::Done
        } else {
            StepOutcome::Next
        })
    }

    async fn list_images(&self) -> DriverResult<Vec<ImageInfo>> {
        let domains: Vec<String> = self
            .virsh
            .run(&["list", "--all", "--name"])
            .await?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let pools = self.virsh.run(&["pool-list", "--name"]).await?;
        let mut images = Vec::new();
        for pool in pools.lines().map(str::trim).filter(|p| !p.is_empty()) {
            let Ok(volumes) = self.virsh.run(&["vol-list", "--pool", pool]).await else {
                continue;
            };
            for line in volumes.lines() {
                let mut words = line.split_whitespace();
                let (Some(volume), Some(path)) = (words.next(), words.next()) else {
                    continue;
                };
                let is_disk = [".qcow2", ".img", ".raw"]
                    .iter()
                    .any(|e| volume.ends_with(e));
                // A domain's own disks are not images.
                let owned = domains
                    .iter()
                    .any(|d| volume.starts_with(&format!("{d}-")) || volume == d);
                if is_disk && !owned {
                    images.push(ImageInfo {
                        alias: format!("{pool}/{volume}"),
                        description: path.to_string(),
                        kind: InstanceKind::VirtualMachine,
                    });
                }
            }
        }
        Ok(images)
    }

    /// The domain's serial console (see [`console`]); the size is not
    /// passed on, a serial line has none.
    async fn console(&self, instance: &str, size: TerminalSize) -> DriverResult<ConsoleStream> {
        let _ = size;
        self.require_running(instance).await?;
        console::attach(&self.virsh, instance).await
    }

    async fn list_instances(&self) -> DriverResult<Vec<InstanceInfo>> {
        // One call for the whole node: libvirt's bulk domain statistics.
        let raw = self
            .virsh
            .run(&["domstats", "--state", "--balloon"])
            .await?;
        Ok(parse_domstats(&raw)
            .into_iter()
            .map(|(name, values)| {
                let get = |key: &str| {
                    values
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, v)| v.parse::<i64>().ok())
                };
                InstanceInfo {
                    name,
                    kind: InstanceKind::VirtualMachine,
                    power: power_from_code(get("state.state").unwrap_or(0)),
                    memory_mb: get("balloon.maximum").map(|kib| (kib / 1024) as u64),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domstate_words() {
        assert_eq!(power_from_domstate("running\n\n"), PowerStatus::Running);
        assert_eq!(power_from_domstate("shut off\n"), PowerStatus::Stopped);
        assert_eq!(
            power_from_domstate("paused"),
            PowerStatus::Other("paused".into())
        );
    }

    #[test]
    fn agent_interfaces_give_global_ipv4_only() {
        let interfaces = json!([
            {"name": "lo", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},
            {"name": "eth0", "hardware-address": "52:54:00:64:c8:d2", "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "198.51.100.210", "prefix": 24},
                {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64}
            ]}
        ]);
        assert_eq!(
            addresses_from_agent(&interfaces),
            vec!["198.51.100.210".parse::<Ipv4Addr>().unwrap()]
        );
    }

    #[test]
    fn proc_uptime_and_domstats() {
        assert_eq!(uptime_from_proc("123.45 200.10\n"), Some(123));
        assert_eq!(uptime_from_proc(""), None);
        let stats = parse_domstats(
            "Domain: 'vm1'\n  state.state=1\n  state.reason=1\n  balloon.maximum=786432\n\n\
             Domain: 'vm2'\n  state.state=5\n",
        );
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].0, "vm1");
        assert_eq!(stats[1].1[0], ("state.state".into(), "5".into()));
        assert_eq!(power_from_code(5), PowerStatus::Stopped);
    }

    #[test]
    fn names_that_could_read_as_options_are_refused() {
        assert!(check_name("advps-vm1").is_ok());
        assert!(check_name("--all").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("").is_err());
    }
}
