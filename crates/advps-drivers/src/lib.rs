//! Hypervisor drivers: one [`Driver`] trait for every engine advps can run
//! live services on, and its implementations (LXD/Incus, Proxmox VE and libvirt).
//!
//! A driver speaks to one node in the engine's own terms and reports back in
//! a small common vocabulary: power, live status (state, measured uptime,
//! addresses), address configuration, the login's password, rebuild from an image
//! (as resumable steps), the node's images and its instances. Drivers say
//! what they can do through [`Capabilities`]; the API turns a missing
//! capability into the reference's error instead of failing obscurely.

pub mod libvirt;
pub mod lxd;
mod private_dir;
pub mod proxmox;
pub mod tls;

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

/// What kind of guest an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    Container,
    VirtualMachine,
}

impl InstanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceKind::Container => "container",
            InstanceKind::VirtualMachine => "vm",
        }
    }
}

/// The engine's view of an instance's power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerStatus {
    Running,
    Stopped,
    /// Any other engine state (frozen, error, ...), lower case.
    Other(String),
}

impl PowerStatus {
    pub fn lower(&self) -> &str {
        match self {
            PowerStatus::Running => "running",
            PowerStatus::Stopped => "stopped",
            PowerStatus::Other(s) => s,
        }
    }
}

/// Live status of an instance, as measured on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStatus {
    pub power: PowerStatus,
    /// Seconds since the guest started, measured by the engine; 0 when
    /// stopped, `None` when it cannot be measured (a VM whose guest agent
    /// does not answer): never invented.
    pub uptime_secs: Option<u64>,
    /// Global IPv4 addresses the guest has now.
    pub addresses: Vec<Ipv4Addr>,
}

/// Resource usage of an instance at one moment, as its engine reports it.
/// Counters (CPU time, bytes) are cumulative since the guest last started,
/// as engines keep them; `None` is a figure the engine does not give (disk
/// usage on a storage backend without quotas, a limit that is not set).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageReading {
    pub running: bool,
    /// Cores the guest may use.
    pub cores: Option<u32>,
    /// CPU time used, in nanoseconds (engines that count it: LXD).
    pub cpu_time_ns: Option<u64>,
    /// CPU load now, as a fraction of `cores` (engines that average it
    /// themselves: Proxmox VE's `cpu`).
    pub cpu_fraction: Option<f64>,
    pub memory_used: Option<u64>,
    pub memory_total: Option<u64>,
    pub disk_used: Option<u64>,
    pub disk_total: Option<u64>,
    /// Bytes the guest received and sent.
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
}

/// An instance found on a node (inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub name: String,
    pub kind: InstanceKind,
    pub power: PowerStatus,
    pub memory_mb: Option<u64>,
}

/// An image a node can create guests from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The name to ask for it by (an alias, or the fingerprint if it has none).
    pub alias: String,
    pub description: String,
    pub kind: InstanceKind,
}

/// An IPv4 address to configure on a guest's first interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressConfig {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// How to stop a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Ask the guest to shut down; force it off if it has not after the timeout.
    Graceful { timeout: Duration },
    /// Cut the power.
    Force,
}

/// Which path a stop or reboot took on the engine, so the API can tell the
/// client whether its guest was shut down cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOutcome {
    /// The guest shut down (or restarted) on request, within the timeout.
    Graceful,
    /// The power was cut at once, as asked.
    Forced,
    /// The guest did not shut down in time and was forced off.
    GracefulThenForced,
}

impl PowerOutcome {
    /// The word the API reports (`powerMode`).
    pub fn as_str(self) -> &'static str {
        match self {
            PowerOutcome::Graceful => "graceful",
            PowerOutcome::Forced => "forced",
            PowerOutcome::GracefulThenForced => "graceful_then_forced",
        }
    }
}

/// What a driver can do on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub containers: bool,
    pub virtual_machines: bool,
    pub set_password: bool,
    pub configure_address: bool,
    pub rebuild: bool,
}

/// Everything a rebuild needs to know; kept by the task so a restart can
/// resume it.
#[derive(Debug, Clone)]
pub struct RebuildRequest {
    pub instance: String,
    /// The engine image (alias) to rebuild from.
    pub image: String,
    /// The address to put back on the guest, if it has one.
    pub address: Option<AddressConfig>,
    /// The password to put back, if one was set.
    pub password: Option<String>,
    /// Whose password it is: the login name of the OS being installed
    /// (`root`, `Administrator` for Windows), which need not be the old
    /// OS's.
    pub username: String,
}

/// Where a rebuild stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Run the next step.
    Next,
    /// The rebuild is finished.
    Done,
}

/// A terminal's size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// What a client sends into a text console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleInput {
    /// Keystrokes, as the terminal sends them.
    Bytes(Vec<u8>),
    /// The client's terminal changed size.
    Resize(TerminalSize),
}

/// An open text console of a guest. Input goes into `input`; the guest's
/// output comes out of `output`, which closes when the console ends.
/// Dropping `input` closes the console on the engine.
pub struct ConsoleStream {
    pub input: tokio::sync::mpsc::Sender<ConsoleInput>,
    pub output: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("instance not found on the node")]
    NotFound,
    #[error("instance is already running")]
    AlreadyRunning,
    #[error("instance is not running")]
    NotRunning,
    #[error("not supported by this node: {0}")]
    Unsupported(String),
    #[error("the hypervisor did not answer in time ({0})")]
    Timeout(String),
    #[error("cannot reach the hypervisor: {0}")]
    Unreachable(String),
    #[error("the hypervisor refused: {0}")]
    Engine(String),
}

impl DriverError {
    /// Whether trying the same call again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DriverError::Timeout(_) | DriverError::Unreachable(_))
    }
}

pub type DriverResult<T> = Result<T, DriverError>;

/// One hypervisor node.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The driver's name (`lxd`, `proxmox`, `libvirt`).
    fn name(&self) -> &'static str;
    async fn capabilities(&self) -> DriverResult<Capabilities>;

    /// The engine's own name and version as it reports them (`lxd 5.0.2`,
    /// `pve-manager 8.2.4`, `libvirt 9.0.0, QEMU 10.0.2`), for operators'
    /// checks; `None` when the engine does not say.
    async fn engine_version(&self) -> DriverResult<Option<String>> {
        Ok(None)
    }

    async fn start(&self, instance: &str) -> DriverResult<()>;
    async fn stop(&self, instance: &str, mode: StopMode) -> DriverResult<()>;
    async fn reboot(&self, instance: &str) -> DriverResult<()>;

    /// Stops the guest like [`Driver::stop`] and says which path was taken.
    /// The default cannot tell whether a graceful stop had to be forced, so
    /// it reports the mode asked for; drivers that know override it.
    async fn stop_with_outcome(
        &self,
        instance: &str,
        mode: StopMode,
    ) -> DriverResult<PowerOutcome> {
        self.stop(instance, mode).await?;
        Ok(match mode {
            StopMode::Force => PowerOutcome::Forced,
            StopMode::Graceful { .. } => PowerOutcome::Graceful,
        })
    }

    /// Restarts a running guest in the given mode and says which path was
    /// taken. The default reboots gracefully with [`Driver::reboot`], and for
    /// a forced reboot cuts the power and starts the guest again.
    async fn reboot_with_mode(&self, instance: &str, mode: StopMode) -> DriverResult<PowerOutcome> {
        match mode {
            StopMode::Graceful { .. } => {
                self.reboot(instance).await?;
                Ok(PowerOutcome::Graceful)
            }
            StopMode::Force => {
                self.stop(instance, StopMode::Force).await?;
                self.start(instance).await?;
                Ok(PowerOutcome::Forced)
            }
        }
    }

    async fn status(&self, instance: &str) -> DriverResult<LiveStatus>;

    /// The resource usage of one instance, measured on the engine.
    async fn usage(&self, instance: &str) -> DriverResult<UsageReading> {
        let _ = instance;
        Err(DriverError::Unsupported("usage readings".into()))
    }

    /// The usage of every instance of the node, by instance name, in one
    /// engine call (the sampler's round).
    async fn usage_all(&self) -> DriverResult<Vec<(String, UsageReading)>> {
        Err(DriverError::Unsupported("usage readings".into()))
    }

    /// Configures the address on the guest so that it holds across reboots.
    async fn configure_address(&self, instance: &str, address: &AddressConfig) -> DriverResult<()>;
    /// Sets the password of user `username` (the OS's login name: `root`,
    /// `Administrator` on Windows) inside the running guest. The password
    /// never appears on a command line or in a log.
    async fn set_password(
        &self,
        instance: &str,
        username: &str,
        password: &str,
    ) -> DriverResult<()>;

    /// Gives the guest's first network card the MAC address `mac`; a running
    /// guest is restarted for it to take effect.
    async fn set_mac(&self, instance: &str, mac: &str) -> DriverResult<()>;

    /// Names of the rebuild steps, in order (for progress and the task log).
    fn rebuild_steps(&self) -> &'static [&'static str];
    /// Runs rebuild step `step`. Each step can run again after a crash
    /// without harm; `scratch` is kept with the task between steps.
    async fn rebuild_step(
        &self,
        request: &RebuildRequest,
        step: usize,
        scratch: &mut Value,
    ) -> DriverResult<StepOutcome>;

    async fn list_images(&self) -> DriverResult<Vec<ImageInfo>>;
    async fn list_instances(&self) -> DriverResult<Vec<InstanceInfo>>;

    /// Attaches to the guest's text console (a container's `/dev/console`,
    /// a virtual machine's serial console) at the given size. Engines
    /// without one keep this default.
    async fn console(&self, instance: &str, size: TerminalSize) -> DriverResult<ConsoleStream> {
        let _ = (instance, size);
        Err(DriverError::Unsupported("text console".into()))
    }
}

/// Checks a login name before it reaches a guest (a `chpasswd` line, an
/// agent call, cloud-init's `ciuser`): letters, digits, `.`, `_`, `-` and
/// a trailing `$`, not starting with `-`, at most 32 characters; that covers
/// `root`, `Administrator` and what `useradd` accepts, and nothing a
/// `user:password` line or a property string could misread.
pub fn check_username(name: &str) -> DriverResult<()> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let fits = !body.is_empty()
        && name.len() <= 32
        && !body.starts_with('-')
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fits {
        Ok(())
    } else {
        Err(DriverError::Engine(format!(
            "'{name}' is not a login name a guest can take (letters, digits, '.', '_', '-')"
        )))
    }
}

/// The number of cores an LXD `limits.cpu` grants: a count (`2`), or a set
/// of pinned cores (`0-3`, `0,2,4-5`).
pub fn parse_cpu_limit(raw: &str) -> Option<u32> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if !raw.contains(['-', ',']) {
        return raw.parse().ok().filter(|n| *n > 0);
    }
    let mut total = 0u32;
    for part in raw.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                total += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u32>().ok()?;
                total += 1;
            }
        }
    }
    Some(total)
}

/// Parses a memory size as engines write it (`2GiB`, `512MB`, `1073741824`)
/// into mebibytes.
pub fn parse_memory_mb(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0 / (1024.0 * 1024.0),
        "kb" => 1000.0 / (1024.0 * 1024.0),
        "kib" => 1.0 / 1024.0,
        "mb" => 1_000_000.0 / (1024.0 * 1024.0),
        "mib" | "m" => 1.0,
        "gb" => 1_000_000_000.0 / (1024.0 * 1024.0),
        "gib" | "g" => 1024.0,
        "tb" => 1e12 / (1024.0 * 1024.0),
        "tib" | "t" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names() {
        for good in [
            "root",
            "Administrator",
            "debian",
            "svc_backup",
            "host$",
            "a.b-c",
        ] {
            assert!(check_username(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-root",
            "ro:ot",
            "root\n",
            "a b",
            "x,y",
            "$",
            &"a".repeat(33),
        ] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(parse_cpu_limit("2"), Some(2));
        assert_eq!(parse_cpu_limit("0-3"), Some(4));
        assert_eq!(parse_cpu_limit("0,2,4-5"), Some(4));
        assert_eq!(parse_cpu_limit("0"), None);
        assert_eq!(parse_cpu_limit("3-1"), None);
        assert_eq!(parse_cpu_limit("x"), None);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mb("2GiB"), Some(2048));
        assert_eq!(parse_memory_mb("512MiB"), Some(512));
        assert_eq!(parse_memory_mb("1073741824"), Some(1024));
        assert_eq!(parse_memory_mb("4GB"), Some(3815));
        assert_eq!(parse_memory_mb("lots"), None);
        assert_eq!(parse_memory_mb("2XB"), None);
    }
}
