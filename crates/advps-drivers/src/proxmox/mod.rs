//! The Proxmox VE driver: QEMU virtual machines (`VPS`) and LXC containers
//! (`LINUX`) on a PVE cluster, through its REST API and an API token.
//!
//! - An instance is a guest's `vmid`. Any node of a cluster answers for all
//!   of them (pveproxy forwards), but every path names the node that owns
//!   the guest, so each call first finds the guest in `/cluster/resources`:
//!   guests migrate, and a cached node would go stale.
//! - Power maps onto `status/start|shutdown|stop|reboot`; each answers a
//!   task id that is polled to its end. The state is checked first, since
//!   PVE differs by kind: LXC refuses "already running" at once, QEMU only
//!   fails inside the task, and QEMU's reboot of a stopped VM succeeds
//!   silently.
//! - Status is `status/current`; addresses come from the guest agent (QEMU)
//!   or the host's view of the container's interfaces (LXC), falling back to
//!   the configured address when those have none to give.
//! - Addresses are configured in the guest's configuration: cloud-init
//!   `ipconfig0` (applied at boot, so a running VM whose address changed is
//!   rebooted) and the container's `net0 ip=` (PVE applies it live).
//! - Passwords are the OS's login's (`root`, `Administrator` on Windows):
//!   QEMU through the guest agent's `set-user-password` with that username,
//!   and `cipassword` with `ciuser` set to it so that cloud-init (or
//!   cloudbase-init) agrees at the next instance boot. LXC has no API for it
//!   on a running container: when the node was registered with SSH access,
//!   `pct exec VMID -- chpasswd` runs over SSH on the node that owns the
//!   container ([`ssh::PctExec`]); without it the call answers
//!   [`DriverError::Unsupported`] saying how to enable it (a rebuild sets
//!   root's password at creation either way; another login's needs the SSH
//!   access, checked before anything is destroyed).
//! - The text console is PVE's `termproxy` and its `vncwebsocket`
//!   ([`console`]): a container's console (its getty), a VM's `serial0`
//!   (a VM without one answers [`DriverError::Unsupported`] saying how to
//!   add it).
//! - Rebuild re-creates the guest under the same vmid: QEMU by a full clone
//!   of the template VM, LXC from a `vztmpl` archive, each with the saved
//!   network card (same MAC), size and the address and password asked for.

pub mod client;
pub mod console;
pub mod propstring;
pub mod ssh;

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::{
    AddressConfig, Capabilities, ConsoleStream, Driver, DriverError, DriverResult, ImageInfo,
    InstanceInfo, InstanceKind, LiveStatus, PowerOutcome, PowerStatus, RebuildRequest, StepOutcome,
    StopMode, TerminalSize, UsageReading,
};
use client::{encode, Params, PveClient};
use propstring::{PropString, QEMU_NIC_MODELS};
use ssh::PctExec;

/// How long a power task may run (a graceful stop adds its own timeout).
const POWER_WAIT: Duration = Duration::from_secs(120);
/// Cloning a disk or unpacking a template takes a while.
const CREATE_WAIT: Duration = Duration::from_secs(30 * 60);
const DELETE_WAIT: Duration = Duration::from_secs(10 * 60);
/// The guest agent answers fast or not at all; a status call must not hang
/// on a guest that is still booting.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Graceful stop before forcing, when the driver itself needs the guest off.
const INTERNAL_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One list for both kinds; a step a kind does not need does nothing.
const REBUILD_STEPS: &[&str] = &[
    "locate",
    "stop",
    "save",
    "delete",
    "create",
    "configure",
    "start",
];

/// Configuration keys put back on a re-created guest, so that it keeps its
/// size, network card and options. (The disk is the template's.)
const QEMU_KEPT_KEYS: &[&str] = &[
    "name",
    "memory",
    "balloon",
    "cores",
    "sockets",
    "cpu",
    "net0",
    "nameserver",
    "searchdomain",
    "onboot",
    "tags",
    "description",
];
const LXC_KEPT_KEYS: &[&str] = &[
    "hostname",
    "memory",
    "swap",
    "cores",
    "cpulimit",
    "nameserver",
    "searchdomain",
    "onboot",
    "tags",
    "description",
    "unprivileged",
    "features",
    "arch",
];

/// The two guest kinds, as PVE names them in paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    Qemu,
    Lxc,
}

impl GuestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }

    fn parse(text: &str) -> Option<GuestKind> {
        match text {
            "qemu" => Some(GuestKind::Qemu),
            "lxc" => Some(GuestKind::Lxc),
            _ => None,
        }
    }

    fn instance_kind(self) -> InstanceKind {
        match self {
            GuestKind::Qemu => InstanceKind::VirtualMachine,
            GuestKind::Lxc => InstanceKind::Container,
        }
    }
}

/// Where a guest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub node: String,
    pub kind: GuestKind,
    pub vmid: u64,
}

impl Guest {
    fn path(&self) -> String {
        format!(
            "/nodes/{}/{}/{}",
            encode(&self.node),
            self.kind.as_str(),
            self.vmid
        )
    }

    fn to_json(&self) -> Value {
        json!({"node": self.node, "kind": self.kind.as_str(), "vmid": self.vmid})
    }

    fn from_json(value: &Value) -> Option<Guest> {
        Some(Guest {
            node: value.get("node")?.as_str()?.to_string(),
            kind: GuestKind::parse(value.get("kind")?.as_str()?)?,
            vmid: number(value.get("vmid")?)?,
        })
    }
}

/// A number PVE may send as a number, a float or a string.
pub fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f.max(0.0) as u64),
        _ => None,
    }
}

/// A guest's usage from PVE's figures (`/cluster/resources` rows and
/// `status/current` use the same names): `cpu` is already a fraction of
/// the guest's cores, averaged by PVE; `netin`/`netout` count since start.
/// A VM's `disk` is 0 unless PVE can see inside it, so it is unknown.
pub fn usage_from(kind: GuestKind, r: &Value) -> UsageReading {
    let running = r.get("status").and_then(Value::as_str) == Some("running");
    let field = |key: &str| r.get(key).and_then(number);
    let cpu_fraction = r.get("cpu").and_then(|v| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    });
    let when_running = |v: Option<u64>| if running { v } else { Some(0) };
    UsageReading {
        running,
        cores: field("cpus")
            .or_else(|| field("maxcpu"))
            .map(|n| n.max(1) as u32),
        cpu_time_ns: None,
        cpu_fraction: if running { cpu_fraction } else { Some(0.0) },
        memory_used: when_running(field("mem")),
        memory_total: field("maxmem").filter(|n| *n > 0),
        disk_used: match kind {
            GuestKind::Lxc => field("disk"),
            GuestKind::Qemu => None,
        },
        disk_total: field("maxdisk").filter(|n| *n > 0),
        rx_bytes: when_running(field("netin")),
        tx_bytes: when_running(field("netout")),
    }
}

/// A boolean PVE may send as 0/1, "0"/"1" or true/false.
pub fn flag(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => matches!(s.trim(), "1" | "true" | "yes" | "on"),
        _ => false,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn p(key: &str, value: impl ToString) -> (String, String) {
    (key.to_string(), value.to_string())
}

/// Whether an address is one a customer would call the guest's address.
fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || ip.is_multicast())
}

/// The IPv4 address part of `a.b.c.d/nn`.
fn cidr_address(text: &str) -> Option<Ipv4Addr> {
    text.split('/').next()?.trim().parse().ok()
}

/// Addresses from the QEMU guest agent's `network-get-interfaces` answer.
pub fn addresses_from_agent(data: &Value) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let list = data.get("result").unwrap_or(data);
    for nic in list.as_array().into_iter().flatten() {
        if nic.get("name").and_then(Value::as_str) == Some("lo") {
            continue;
        }
        for addr in nic
            .get("ip-addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if addr.get("ip-address-type").and_then(Value::as_str) != Some("ipv4") {
                continue;
            }
            if let Some(ip) = addr
                .get("ip-address")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok())
            {
                out.push(ip);
            }
        }
    }
    finish(out)
}

/// Addresses from an LXC `interfaces` answer, old shape (`inet`) or new
/// (`ip-addresses`).
pub fn addresses_from_interfaces(data: &Value) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for nic in data.as_array().into_iter().flatten() {
        if nic.get("name").and_then(Value::as_str) == Some("lo") {
            continue;
        }
        if let Some(inet) = nic.get("inet").and_then(Value::as_str) {
            out.extend(inet.split([' ', ',']).filter_map(cidr_address));
        }
        for addr in nic
            .get("ip-addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if addr.get("ip-address-type").and_then(Value::as_str) == Some("inet")
                || addr.get("ip-address-type").and_then(Value::as_str) == Some("ipv4")
            {
                if let Some(ip) = addr
                    .get("ip-address")
                    .and_then(Value::as_str)
                    .and_then(cidr_address)
                {
                    out.push(ip);
                }
            }
        }
    }
    finish(out)
}

/// The statically configured address of a guest's first card: `ipconfig0`
/// for QEMU, `net0`'s `ip=` for LXC (`dhcp` and `manual` give none).
pub fn configured_address(kind: GuestKind, config: &Value) -> Vec<Ipv4Addr> {
    let key = match kind {
        GuestKind::Qemu => "ipconfig0",
        GuestKind::Lxc => "net0",
    };
    let address = config
        .get(key)
        .and_then(Value::as_str)
        .map(PropString::parse)
        .and_then(|p| p.get("ip").and_then(cidr_address));
    finish(address.into_iter().collect())
}

fn finish(mut out: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    out.retain(|ip| usable(*ip));
    out.sort();
    out.dedup();
    out
}

fn power_from(status: &Value) -> PowerStatus {
    match status.get("status").and_then(Value::as_str) {
        Some("running") => match status.get("qmpstatus").and_then(Value::as_str) {
            // A paused or suspended VM is "running" to PVE, not to a customer.
            Some(q) if q != "running" => PowerStatus::Other(q.to_ascii_lowercase()),
            _ => PowerStatus::Running,
        },
        Some("stopped") => PowerStatus::Stopped,
        Some(other) => PowerStatus::Other(other.to_ascii_lowercase()),
        None => PowerStatus::Other("unknown".into()),
    }
}

/// `net0` with `mac` as the card's address: QEMU keeps it as the value of
/// the model key (`virtio=MAC`), LXC as `hwaddr=`.
pub fn net0_with_mac(kind: GuestKind, net0: &str, mac: &str) -> DriverResult<String> {
    let mut p = PropString::parse(net0);
    match kind {
        GuestKind::Lxc => p.set("hwaddr", mac),
        GuestKind::Qemu => {
            let model = p.first().map(|(k, _)| k.to_string());
            match model {
                Some(m) if QEMU_NIC_MODELS.contains(&m.as_str()) => {
                    p.set_first_value(mac);
                    p.remove("macaddr");
                }
                _ if p.get("model").is_some() => p.set("macaddr", mac),
                _ => {
                    return Err(DriverError::Engine(format!(
                        "net0 '{net0}' names no network card model"
                    )))
                }
            }
        }
    }
    Ok(p.to_string())
}

/// `net0` of a container with a static address (or the rest unchanged).
pub fn net0_with_address(net0: &str, address: &AddressConfig) -> String {
    let mut p = PropString::parse(net0);
    p.set("ip", &format!("{}/{}", address.address, address.prefix));
    match address.gateway {
        Some(gw) => p.set("gw", &gw.to_string()),
        None => p.remove("gw"),
    }
    p.to_string()
}

/// Cloud-init's `ipconfig0` for an address.
pub fn ipconfig(address: &AddressConfig) -> String {
    let mut out = format!("ip={}/{}", address.address, address.prefix);
    if let Some(gw) = address.gateway {
        out.push_str(&format!(",gw={gw}"));
    }
    out
}

/// `STORAGE:SIZE_GB` for a new container's root disk, from the saved
/// `rootfs` (`local-lvm:vm-101-disk-0,size=8G`).
pub fn rootfs_for_create(saved_rootfs: &str) -> Option<String> {
    let p = PropString::parse(saved_rootfs);
    let (volume, _) = p.first()?;
    let storage = volume.split(':').next()?;
    let size = p.get("size").unwrap_or("8G");
    let gib = crate::parse_memory_mb(size).map(|mb| mb.div_ceil(1024).max(1))?;
    Some(format!("{storage}:{gib}"))
}

/// What a console of a VM without a serial port answers.
pub const NO_SERIAL_PORT: &str = "the VM has no serial port for a text console: add one \
     (`qm set VMID --serial0 socket`) and run a getty on ttyS0 in the guest";

/// Whether a rebuild's password is root's (a container's create sets only
/// root's).
fn is_root(request: &RebuildRequest) -> bool {
    request.username == "root"
}

/// What a container's password change answers when the node has no SSH
/// access registered.
pub const NO_PCT_EXEC: &str = "Proxmox VE has no API to change a password inside a running \
     container (only `pct exec` on the node can); register the node with --ssh-host and \
     --ssh-key to let advps run `pct exec` on the node, or rebuild to set a new password";

/// A driver for one Proxmox VE cluster (or single node).
pub struct ProxmoxDriver {
    client: PveClient,
    /// SSH access to the nodes, for what only `pct exec` can do.
    pct_exec: Option<PctExec>,
}

impl ProxmoxDriver {
    /// Checks that the API answers and accepts the token.
    pub async fn connect(client: PveClient) -> DriverResult<ProxmoxDriver> {
        client.get("/version", &[]).await?;
        Ok(ProxmoxDriver {
            client,
            pct_exec: None,
        })
    }

    /// Lets the driver run `pct exec` on the nodes over SSH (container
    /// passwords). Nothing is connected here.
    pub fn with_pct_exec(mut self, pct_exec: PctExec) -> ProxmoxDriver {
        self.pct_exec = Some(pct_exec);
        self
    }

    pub fn client(&self) -> &PveClient {
        &self.client
    }

    async fn resources(&self) -> DriverResult<Vec<Value>> {
        let data = self
            .client
            .get("/cluster/resources", &[p("type", "vm")])
            .await?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }

    /// Finds which node runs guest `instance` and of which kind it is.
    pub async fn locate(&self, instance: &str) -> DriverResult<Guest> {
        let vmid: u64 = instance.trim().parse().map_err(|_| {
            DriverError::Engine(format!(
                "'{instance}' is not a Proxmox VE guest id (a vmid, e.g. 100)"
            ))
        })?;
        for r in self.resources().await? {
            if r.get("vmid").and_then(number) != Some(vmid) {
                continue;
            }
            let kind = r
                .get("type")
                .and_then(Value::as_str)
                .and_then(GuestKind::parse);
            let node = r.get("node").and_then(Value::as_str);
            if let (Some(kind), Some(node)) = (kind, node) {
                return Ok(Guest {
                    node: node.to_string(),
                    kind,
                    vmid,
                });
            }
        }
        Err(DriverError::NotFound)
    }

    async fn current(&self, guest: &Guest) -> DriverResult<Value> {
        self.client
            .get(&format!("{}/status/current", guest.path()), &[])
            .await
    }

    async fn config(&self, guest: &Guest) -> DriverResult<Value> {
        self.client
            .get(&format!("{}/config", guest.path()), &[])
            .await
    }

    /// Writes configuration keys: QEMU's asynchronous `POST config` (it may
    /// answer a task), LXC's `PUT config`.
    async fn set_config(&self, guest: &Guest, params: &[(String, String)]) -> DriverResult<()> {
        let method = match guest.kind {
            GuestKind::Qemu => Method::POST,
            GuestKind::Lxc => Method::PUT,
        };
        self.client
            .run(
                method,
                &format!("{}/config", guest.path()),
                params,
                POWER_WAIT,
            )
            .await
    }

    async fn power_action(
        &self,
        guest: &Guest,
        action: &str,
        params: &[(String, String)],
    ) -> DriverResult<()> {
        let wait = POWER_WAIT
            + params
                .iter()
                .find(|(k, _)| k == "timeout")
                .and_then(|(_, v)| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or_default();
        self.client
            .run(
                Method::POST,
                &format!("{}/status/{action}", guest.path()),
                params,
                wait,
            )
            .await
    }

    async fn power_of(&self, guest: &Guest) -> DriverResult<PowerStatus> {
        Ok(power_from(&self.current(guest).await?))
    }

    async fn stop_guest(&self, guest: &Guest, mode: StopMode) -> DriverResult<PowerOutcome> {
        if self.power_of(guest).await? == PowerStatus::Stopped {
            return Err(DriverError::NotRunning);
        }
        match mode {
            StopMode::Force => {
                self.power_action(guest, "stop", &[]).await?;
                Ok(PowerOutcome::Forced)
            }
            StopMode::Graceful { timeout } => {
                // Not `forceStop=1`: PVE would force the guest off itself, but
                // the caller could not learn that it had to.
                let params = vec![p("timeout", timeout.as_secs().max(1))];
                match self.power_action(guest, "shutdown", &params).await {
                    Ok(()) => Ok(PowerOutcome::Graceful),
                    // The guest ignored the request (no ACPI, paused, hung):
                    // cut the power.
                    Err(DriverError::Engine(message)) | Err(DriverError::Timeout(message)) => {
                        tracing::warn!(vmid = guest.vmid, %message, "graceful shutdown failed, forcing");
                        match self.power_action(guest, "stop", &[]).await {
                            Ok(()) | Err(DriverError::NotRunning) => {
                                Ok(PowerOutcome::GracefulThenForced)
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn start_guest(&self, guest: &Guest) -> DriverResult<()> {
        if self.power_of(guest).await? == PowerStatus::Running {
            return Err(DriverError::AlreadyRunning);
        }
        self.power_action(guest, "start", &[]).await
    }

    async fn ensure_stopped(&self, guest: &Guest) -> DriverResult<()> {
        match self.stop_guest(guest, StopMode::Force).await {
            Ok(_) | Err(DriverError::NotRunning) | Err(DriverError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn ensure_started(&self, guest: &Guest) -> DriverResult<()> {
        match self.start_guest(guest).await {
            Ok(()) | Err(DriverError::AlreadyRunning) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What the guest itself reports, if it can; never fails the caller.
    async fn observed_addresses(&self, guest: &Guest) -> Vec<Ipv4Addr> {
        let result = match guest.kind {
            GuestKind::Qemu => self
                .client
                .call_with_timeout(
                    Method::GET,
                    &format!("{}/agent/network-get-interfaces", guest.path()),
                    &[],
                    AGENT_TIMEOUT,
                )
                .await
                .map(|d| addresses_from_agent(&d)),
            GuestKind::Lxc => self
                .client
                .call_with_timeout(
                    Method::GET,
                    &format!("{}/interfaces", guest.path()),
                    &[],
                    AGENT_TIMEOUT,
                )
                .await
                .map(|d| addresses_from_interfaces(&d)),
        };
        result.unwrap_or_else(|e| {
            tracing::debug!(vmid = guest.vmid, error = %e, "no observed addresses");
            Vec::new()
        })
    }

    /// Waits until a guest's config has no lock (a clone or create running
    /// in a task that outlived the process that started it).
    async fn wait_unlocked(&self, guest: &Guest, wait: Duration) -> DriverResult<()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let current = self.current(guest).await?;
            let Some(lock) = text(current.get("lock")).filter(|l| !l.is_empty()) else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Timeout(format!(
                    "guest {} is still locked ({lock})",
                    guest.vmid
                )));
            }
            tokio::time::sleep(self.client.poll_interval()).await;
        }
    }

    /// Finds a template VM by vmid or name.
    async fn find_template(&self, image: &str) -> DriverResult<Option<Guest>> {
        for r in self.resources().await? {
            if !flag(r.get("template")) || r.get("type").and_then(Value::as_str) != Some("qemu") {
                continue;
            }
            let vmid = r.get("vmid").and_then(number);
            let name = r.get("name").and_then(Value::as_str);
            if vmid.map(|v| v.to_string()).as_deref() == Some(image) || name == Some(image) {
                if let (Some(vmid), Some(node)) = (vmid, r.get("node").and_then(Value::as_str)) {
                    return Ok(Some(Guest {
                        node: node.to_string(),
                        kind: GuestKind::Qemu,
                        vmid,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Checks that container template `volid` (`storage:vztmpl/file`) is on
    /// `node`.
    async fn check_vztmpl(&self, node: &str, volid: &str) -> DriverResult<()> {
        let storage = volid
            .split_once(':')
            .filter(|(_, rest)| rest.starts_with("vztmpl/"))
            .map(|(s, _)| s)
            .ok_or_else(|| {
                DriverError::Engine(format!(
                    "'{volid}' is not a container template (expected STORAGE:vztmpl/FILE)"
                ))
            })?;
        let path = format!(
            "/nodes/{}/storage/{}/content",
            encode(node),
            encode(storage)
        );
        let content = self.client.get(&path, &[p("content", "vztmpl")]).await;
        let found = match content {
            Ok(list) => list
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c.get("volid").and_then(Value::as_str) == Some(volid)),
            Err(DriverError::NotFound) => false,
            Err(e) => return Err(e),
        };
        if found {
            Ok(())
        } else {
            Err(DriverError::Engine(format!(
                "container template '{volid}' is not on node {node}"
            )))
        }
    }

    fn guest_of(scratch: &Value) -> DriverResult<Guest> {
        scratch
            .get("guest")
            .and_then(Guest::from_json)
            .ok_or_else(|| DriverError::Engine("rebuild state lost: no guest located".into()))
    }

    async fn step_create(
        &self,
        request: &RebuildRequest,
        guest: &Guest,
        scratch: &Value,
    ) -> DriverResult<()> {
        // A previous attempt may have created it (and crashed after), or its
        // task may still be running: then wait for the lock to go.
        match self.current(guest).await {
            Ok(_) => return self.wait_unlocked(guest, CREATE_WAIT).await,
            Err(DriverError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let saved = scratch.get("saved").cloned().unwrap_or(Value::Null);
        match guest.kind {
            GuestKind::Qemu => {
                let template = scratch
                    .get("template")
                    .and_then(Guest::from_json)
                    .ok_or_else(|| DriverError::Engine("rebuild state lost: no template".into()))?;
                let mut params = vec![p("newid", guest.vmid), p("full", 1)];
                if let Some(name) = text(saved.get("name")) {
                    params.push(p("name", name));
                }
                if template.node != guest.node {
                    params.push(p("target", &guest.node));
                }
                self.client
                    .run(
                        Method::POST,
                        &format!("{}/clone", template.path()),
                        &params,
                        CREATE_WAIT,
                    )
                    .await
            }
            GuestKind::Lxc => {
                let mut params = vec![p("vmid", guest.vmid), p("ostemplate", &request.image)];
                let rootfs = text(saved.get("rootfs"))
                    .and_then(|r| rootfs_for_create(&r))
                    .ok_or_else(|| {
                        DriverError::Engine("the container's rootfs was not saved".into())
                    })?;
                params.push(p("rootfs", rootfs));
                for key in LXC_KEPT_KEYS {
                    if let Some(value) = text(saved.get(*key)) {
                        params.push(p(key, value));
                    }
                }
                if let Some(net0) = text(saved.get("net0")) {
                    let net0 = match &request.address {
                        Some(address) => net0_with_address(&net0, address),
                        None => net0,
                    };
                    params.push(p("net0", net0));
                }
                // `password` is root's; another login's is set once the
                // container runs (the start step).
                if let Some(password) = request.password.as_ref().filter(|_| is_root(request)) {
                    params.push(p("password", password));
                }
                self.client
                    .run(
                        Method::POST,
                        &format!("/nodes/{}/lxc", encode(&guest.node)),
                        &params,
                        CREATE_WAIT,
                    )
                    .await
            }
        }
    }

    async fn step_configure(
        &self,
        request: &RebuildRequest,
        guest: &Guest,
        scratch: &Value,
    ) -> DriverResult<()> {
        if guest.kind == GuestKind::Lxc {
            // Everything went into the create call.
            return Ok(());
        }
        let saved = scratch.get("saved").cloned().unwrap_or(Value::Null);
        let mut params: Params = QEMU_KEPT_KEYS
            .iter()
            .filter_map(|key| text(saved.get(*key)).map(|v| p(key, v)))
            .collect();
        match &request.address {
            Some(address) => params.push(p("ipconfig0", ipconfig(address))),
            None => {
                if let Some(old) = text(saved.get("ipconfig0")) {
                    params.push(p("ipconfig0", old));
                }
            }
        }
        if let Some(password) = &request.password {
            params.push(p("ciuser", &request.username));
            params.push(p("cipassword", password));
        }
        if params.is_empty() {
            return Ok(());
        }
        self.set_config(guest, &params).await
    }
}

#[async_trait]
impl Driver for ProxmoxDriver {
    fn name(&self) -> &'static str {
        "proxmox"
    }

    async fn engine_version(&self) -> DriverResult<Option<String>> {
        let answer = self.client.get("/version", &[]).await?;
        let data = answer.get("data").unwrap_or(&answer);
        Ok(data
            .get("version")
            .and_then(Value::as_str)
            .map(|v| format!("pve-manager {v}")))
    }

    async fn capabilities(&self) -> DriverResult<Capabilities> {
        Ok(Capabilities {
            containers: true,
            virtual_machines: true,
            // QEMU guests only; containers answer Unsupported.
            set_password: true,
            configure_address: true,
            rebuild: true,
        })
    }

    async fn start(&self, instance: &str) -> DriverResult<()> {
        let guest = self.locate(instance).await?;
        self.start_guest(&guest).await
    }

    async fn stop(&self, instance: &str, mode: StopMode) -> DriverResult<()> {
        self.stop_with_outcome(instance, mode).await.map(|_| ())
    }

    async fn stop_with_outcome(
        &self,
        instance: &str,
        mode: StopMode,
    ) -> DriverResult<PowerOutcome> {
        let guest = self.locate(instance).await?;
        self.stop_guest(&guest, mode).await
    }

    async fn reboot(&self, instance: &str) -> DriverResult<()> {
        let guest = self.locate(instance).await?;
        // QEMU's reboot of a stopped VM "succeeds" doing nothing.
        if self.power_of(&guest).await? != PowerStatus::Running {
            return Err(DriverError::NotRunning);
        }
        self.power_action(&guest, "reboot", &[]).await
    }

    async fn status(&self, instance: &str) -> DriverResult<LiveStatus> {
        let guest = self.locate(instance).await?;
        let current = self.current(&guest).await?;
        let power = power_from(&current);
        let running = current.get("status").and_then(Value::as_str) == Some("running");
        let mut addresses = Vec::new();
        if running {
            addresses = self.observed_addresses(&guest).await;
            if addresses.is_empty() {
                addresses = configured_address(guest.kind, &self.config(&guest).await?);
            }
        }
        Ok(LiveStatus {
            uptime_secs: Some(if running {
                current.get("uptime").and_then(number).unwrap_or(0)
            } else {
                0
            }),
            addresses,
            power,
        })
    }

    async fn usage(&self, instance: &str) -> DriverResult<UsageReading> {
        let guest = self.locate(instance).await?;
        let current = self.current(&guest).await?;
        Ok(usage_from(guest.kind, &current))
    }

    async fn usage_all(&self) -> DriverResult<Vec<(String, UsageReading)>> {
        // One call for the whole cluster.
        Ok(self
            .resources()
            .await?
            .iter()
            .filter(|r| !flag(r.get("template")))
            .filter_map(|r| {
                let vmid = r.get("vmid").and_then(number)?;
                let kind = GuestKind::parse(r.get("type")?.as_str()?)?;
                Some((vmid.to_string(), usage_from(kind, r)))
            })
            .collect())
    }

    async fn configure_address(&self, instance: &str, address: &AddressConfig) -> DriverResult<()> {
        let guest = self.locate(instance).await?;
        let config = self.config(&guest).await?;
        let digest = text(config.get("digest"));
        match guest.kind {
            GuestKind::Lxc => {
                let net0 = text(config.get("net0")).ok_or_else(|| {
                    DriverError::Engine(format!("container {} has no net0", guest.vmid))
                })?;
                let mut params = vec![p("net0", net0_with_address(&net0, address))];
                params.extend(digest.map(|d| p("digest", d)));
                // PVE applies a container's network change live.
                self.set_config(&guest, &params).await
            }
            GuestKind::Qemu => {
                let wanted = ipconfig(address);
                let before = text(config.get("ipconfig0"));
                if before.as_deref() == Some(wanted.as_str()) {
                    return Ok(());
                }
                let mut params = vec![p("ipconfig0", &wanted)];
                params.extend(digest.map(|d| p("digest", d)));
                self.set_config(&guest, &params).await?;
                // Cloud-init reads the address at boot only: a running VM is
                // rebooted (once, since an unchanged address returns above).
                if self.power_of(&guest).await? == PowerStatus::Running {
                    self.client
                        .call(Method::PUT, &format!("{}/cloudinit", guest.path()), &[])
                        .await?;
                    self.power_action(&guest, "reboot", &[]).await?;
                }
                Ok(())
            }
        }
    }

    async fn set_password(
        &self,
        instance: &str,
        username: &str,
        password: &str,
    ) -> DriverResult<()> {
        crate::check_username(username)?;
        let guest = self.locate(instance).await?;
        if guest.kind == GuestKind::Lxc {
            let Some(pct_exec) = &self.pct_exec else {
                return Err(DriverError::Unsupported(NO_PCT_EXEC.into()));
            };
            // `pct exec` needs the container running; checked first so that a
            // stopped one is the reference's "must be running", not an SSH call.
            if self.power_of(&guest).await? != PowerStatus::Running {
                return Err(DriverError::NotRunning);
            }
            return pct_exec
                .set_password(&guest.node, guest.vmid, username, password)
                .await;
        }
        if password.chars().count() < 5 {
            return Err(DriverError::Engine(
                "the guest agent needs a password of at least 5 characters".into(),
            ));
        }
        if self.power_of(&guest).await? != PowerStatus::Running {
            return Err(DriverError::NotRunning);
        }
        // The agent first: if it is not there, nothing changes and the
        // caller hears why, rather than a password that only works after the
        // next instance boot.
        self.client
            .call(
                Method::POST,
                &format!("{}/agent/set-user-password", guest.path()),
                &[
                    p("username", username),
                    p("password", password),
                    p("crypted", 0),
                ],
            )
            .await?;
        // PVE stores cipassword crypted; ciuser makes it that login's.
        self.set_config(&guest, &[p("ciuser", username), p("cipassword", password)])
            .await
    }

    async fn set_mac(&self, instance: &str, mac: &str) -> DriverResult<()> {
        let guest = self.locate(instance).await?;
        let config = self.config(&guest).await?;
        let net0 = text(config.get("net0"))
            .ok_or_else(|| DriverError::Engine(format!("guest {} has no net0", guest.vmid)))?;
        let wanted = net0_with_mac(guest.kind, &net0, mac)?;
        if wanted == net0 {
            return Ok(());
        }
        let running = self.power_of(&guest).await? == PowerStatus::Running;
        if running {
            self.stop_guest(
                &guest,
                StopMode::Graceful {
                    timeout: INTERNAL_STOP_TIMEOUT,
                },
            )
            .await?;
        }
        let written = self.set_config(&guest, &[p("net0", wanted)]).await;
        if running {
            self.ensure_started(&guest).await?;
        }
        written
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
        if !scratch.is_object() {
            *scratch = Value::Object(Map::new());
        }
        match name {
            "locate" => {
                // Once: after the delete step the guest cannot be found.
                if scratch.get("guest").is_none() {
                    let guest = self.locate(&request.instance).await?;
                    // The image is checked before anything is destroyed.
                    match guest.kind {
                        GuestKind::Qemu => {
                            let template =
                                self.find_template(&request.image).await?.ok_or_else(|| {
                                    DriverError::Engine(format!(
                                        "no template VM '{}' in the cluster",
                                        request.image
                                    ))
                                })?;
                            scratch["template"] = template.to_json();
                        }
                        GuestKind::Lxc => {
                            self.check_vztmpl(&guest.node, &request.image).await?;
                            if request.password.is_some()
                                && !is_root(request)
                                && self.pct_exec.is_none()
                            {
                                return Err(DriverError::Unsupported(NO_PCT_EXEC.into()));
                            }
                        }
                    }
                    scratch["guest"] = guest.to_json();
                }
            }
            "stop" => self.ensure_stopped(&Self::guest_of(scratch)?).await?,
            "save" => {
                if scratch.get("saved").is_none() {
                    let guest = Self::guest_of(scratch)?;
                    let config = self.config(&guest).await?;
                    let mut saved = Map::new();
                    for (key, value) in config.as_object().into_iter().flatten() {
                        if key != "digest" {
                            saved.insert(key.clone(), value.clone());
                        }
                    }
                    scratch["saved"] = Value::Object(saved);
                }
            }
            "delete" => {
                let guest = Self::guest_of(scratch)?;
                // Not purged: backup and replication jobs keep naming the vmid,
                // which lives on.
                let params = vec![p("destroy-unreferenced-disks", 1)];
                match self
                    .client
                    .run(Method::DELETE, &guest.path(), &params, DELETE_WAIT)
                    .await
                {
                    Ok(()) | Err(DriverError::NotFound) => {}
                    Err(e) => return Err(e),
                }
                // A guest created by this rebuild (resumed after the create
                // step) must not be deleted again: the delete runs only
                // before it.
            }
            "create" => {
                let guest = Self::guest_of(scratch)?;
                self.step_create(request, &guest, scratch).await?;
            }
            "configure" => {
                let guest = Self::guest_of(scratch)?;
                self.step_configure(request, &guest, scratch).await?;
            }
            "start" => {
                let guest = Self::guest_of(scratch)?;
                self.ensure_started(&guest).await?;
                if let (GuestKind::Lxc, Some(password), Some(pct_exec)) =
                    (guest.kind, &request.password, &self.pct_exec)
                {
                    if !is_root(request) {
                        pct_exec
                            .set_password(&guest.node, guest.vmid, &request.username, password)
                            .await?;
                    }
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
        let mut out = Vec::new();
        for r in self.resources().await? {
            if flag(r.get("template")) && r.get("type").and_then(Value::as_str) == Some("qemu") {
                if let Some(vmid) = r.get("vmid").and_then(number) {
                    out.push(ImageInfo {
                        alias: vmid.to_string(),
                        description: text(r.get("name")).unwrap_or_default(),
                        kind: InstanceKind::VirtualMachine,
                    });
                }
            }
        }
        let storages = self
            .client
            .get("/cluster/resources", &[p("type", "storage")])
            .await?;
        let mut seen_shared = std::collections::BTreeSet::new();
        for s in storages.as_array().into_iter().flatten() {
            let content = s.get("content").and_then(Value::as_str).unwrap_or("");
            if !content.split(',').any(|c| c.trim() == "vztmpl") {
                continue;
            }
            if s.get("status")
                .and_then(Value::as_str)
                .is_some_and(|st| st != "available")
            {
                continue;
            }
            let (Some(node), Some(storage)) = (
                s.get("node").and_then(Value::as_str),
                s.get("storage").and_then(Value::as_str),
            ) else {
                continue;
            };
            // A shared storage shows up once per node; list it once.
            if flag(s.get("shared")) && !seen_shared.insert(storage.to_string()) {
                continue;
            }
            let path = format!(
                "/nodes/{}/storage/{}/content",
                encode(node),
                encode(storage)
            );
            let list = self.client.get(&path, &[p("content", "vztmpl")]).await?;
            for item in list.as_array().into_iter().flatten() {
                if let Some(volid) = item.get("volid").and_then(Value::as_str) {
                    let file = volid.rsplit('/').next().unwrap_or(volid);
                    out.push(ImageInfo {
                        alias: volid.to_string(),
                        description: format!("{file} on {node}"),
                        kind: InstanceKind::Container,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.alias.cmp(&b.alias));
        out.dedup_by(|a, b| a.alias == b.alias);
        Ok(out)
    }

    async fn console(&self, instance: &str, size: TerminalSize) -> DriverResult<ConsoleStream> {
        let guest = self.locate(instance).await?;
        // termproxy of a stopped guest starts and fails inside its task;
        // asked first, the caller hears the reference's "must be running".
        if self.power_of(&guest).await? != PowerStatus::Running {
            return Err(DriverError::NotRunning);
        }
        let mut params = Vec::new();
        if guest.kind == GuestKind::Qemu {
            // A VM's text console is its serial port; termproxy would wait
            // on one that is not there.
            let config = self.config(&guest).await?;
            if text(config.get("serial0")).is_none() {
                return Err(DriverError::Unsupported(NO_SERIAL_PORT.into()));
            }
            params.push(p("serial", "serial0"));
        }
        let answer = self
            .client
            .call(
                Method::POST,
                &format!("{}/termproxy", guest.path()),
                &params,
            )
            .await?;
        let proxy = console::TermProxy {
            port: answer
                .get("port")
                .and_then(number)
                .ok_or_else(|| DriverError::Engine("termproxy answered no port".into()))?,
            ticket: text(answer.get("ticket"))
                .filter(|t| !t.is_empty())
                .ok_or_else(|| DriverError::Engine("termproxy answered no ticket".into()))?,
            // The ticket is made for the token (`USER@REALM!TOKENID`).
            user: text(answer.get("user"))
                .filter(|u| !u.is_empty())
                .ok_or_else(|| DriverError::Engine("termproxy answered no user".into()))?,
        };
        console::attach(&self.client, &guest.path(), proxy, size).await
    }

    async fn list_instances(&self) -> DriverResult<Vec<InstanceInfo>> {
        let mut out: Vec<InstanceInfo> = self
            .resources()
            .await?
            .iter()
            .filter(|r| !flag(r.get("template")))
            .filter_map(|r| {
                let vmid = r.get("vmid").and_then(number)?;
                let kind = GuestKind::parse(r.get("type")?.as_str()?)?;
                Some(InstanceInfo {
                    name: vmid.to_string(),
                    kind: kind.instance_kind(),
                    power: power_from(r),
                    memory_mb: r.get("maxmem").and_then(number).map(|b| b / (1024 * 1024)),
                })
            })
            .collect();
        out.sort_by_key(|i| i.name.parse::<u64>().unwrap_or(u64::MAX));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_numbers_and_flags() {
        assert_eq!(number(&json!(100)), Some(100));
        assert_eq!(number(&json!("100")), Some(100));
        assert_eq!(number(&json!(12.7)), Some(12));
        assert_eq!(number(&json!(null)), None);
        assert!(flag(Some(&json!(1))));
        assert!(flag(Some(&json!("1"))));
        assert!(flag(Some(&json!(true))));
        assert!(!flag(Some(&json!(0))));
        assert!(!flag(None));
    }

    #[test]
    fn macs_go_where_each_kind_keeps_them() {
        assert_eq!(
            net0_with_mac(
                GuestKind::Qemu,
                "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1",
                "02:00:00:00:00:09"
            )
            .unwrap(),
            "virtio=02:00:00:00:00:09,bridge=vmbr0,firewall=1"
        );
        assert_eq!(
            net0_with_mac(GuestKind::Qemu, "e1000,bridge=vmbr0", "02:00:00:00:00:09").unwrap(),
            "e1000=02:00:00:00:00:09,bridge=vmbr0"
        );
        assert_eq!(
            net0_with_mac(
                GuestKind::Lxc,
                "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp",
                "02:00:00:00:00:09"
            )
            .unwrap(),
            "name=eth0,bridge=vmbr0,hwaddr=02:00:00:00:00:09,ip=dhcp"
        );
        assert!(net0_with_mac(GuestKind::Qemu, "bridge=vmbr0", "02:00:00:00:00:09").is_err());
    }

    #[test]
    fn addresses_are_read_from_every_shape() {
        let agent = json!({"result": [
            {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]},
            {"name": "eth0", "hardware-address": "bc:24:11:00:00:01", "ip-addresses": [
                {"ip-address": "203.0.113.10", "ip-address-type": "ipv4", "prefix": 24},
                {"ip-address": "169.254.1.1", "ip-address-type": "ipv4", "prefix": 16},
                {"ip-address": "fe80::1", "ip-address-type": "ipv6", "prefix": 64}
            ]}
        ]});
        assert_eq!(
            addresses_from_agent(&agent),
            vec![Ipv4Addr::new(203, 0, 113, 10)]
        );
        let old = json!([
            {"name": "lo", "inet": "127.0.0.1/8"},
            {"name": "eth0", "hwaddr": "bc:24:11:00:00:02", "inet": "203.0.113.11/24", "inet6": "fe80::2/64"}
        ]);
        assert_eq!(
            addresses_from_interfaces(&old),
            vec![Ipv4Addr::new(203, 0, 113, 11)]
        );
        let config = json!({"net0": "name=eth0,bridge=vmbr0,ip=203.0.113.12/24,gw=203.0.113.1"});
        assert_eq!(
            configured_address(GuestKind::Lxc, &config),
            vec![Ipv4Addr::new(203, 0, 113, 12)]
        );
        let dhcp = json!({"ipconfig0": "ip=dhcp"});
        assert!(configured_address(GuestKind::Qemu, &dhcp).is_empty());
    }

    #[test]
    fn container_root_disks_keep_their_storage_and_size() {
        assert_eq!(
            rootfs_for_create("local-lvm:vm-101-disk-0,size=8G").as_deref(),
            Some("local-lvm:8")
        );
        assert_eq!(
            rootfs_for_create("tank:subvol-101-disk-0,size=512M").as_deref(),
            Some("tank:1")
        );
    }

    #[test]
    fn paused_vms_are_not_running() {
        assert_eq!(
            power_from(&json!({"status": "running", "qmpstatus": "paused"})),
            PowerStatus::Other("paused".into())
        );
        assert_eq!(
            power_from(&json!({"status": "running", "qmpstatus": "running"})),
            PowerStatus::Running
        );
        assert_eq!(
            power_from(&json!({"status": "stopped"})),
            PowerStatus::Stopped
        );
    }
}
