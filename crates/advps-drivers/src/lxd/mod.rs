//! The LXD/Incus driver: containers (`LINUX` services) and, on hosts with
//! KVM, virtual machines (`VPS`), over LXD's REST API and its async
//! operations.
//!
//! - Power maps onto `PUT /1.0/instances/<name>/state`.
//! - Uptime is measured by the engine: LXD records each start of an
//!   instance in `last_used_at`, so a running instance's uptime is the time
//!   since then.
//! - Passwords are written to a root-only file in the guest's `/run` through
//!   the files API and fed to `chpasswd` on its standard input by a fixed
//!   command line, which removes the file; the password is on no command
//!   line and in no log. The user is the OS's login name (`root` unless the
//!   catalogue says otherwise).
//! - Rebuild uses `POST /1.0/instances/<name>/rebuild` where the server
//!   advertises `instances_rebuild`; otherwise (LXD 5.0) it stops, deletes
//!   and re-creates the instance from the image with its saved configuration
//!   and devices, then puts the address and password back and starts it.

pub mod client;
mod console;

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::{
    parse_memory_mb, AddressConfig, Capabilities, Driver, DriverError, DriverResult, ImageInfo,
    InstanceInfo, InstanceKind, LiveStatus, PowerOutcome, PowerStatus, RebuildRequest, StepOutcome,
    StopMode, UsageReading,
};
use client::{Body, LxdClient};

/// How long power operations may take before they count as failed.
const POWER_WAIT: Duration = Duration::from_secs(90);
/// Creating an instance unpacks an image: allow longer.
const CREATE_WAIT: Duration = Duration::from_secs(300);
/// Graceful stop before forcing, when a rebuild needs the instance stopped.
const REBUILD_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Shell run inside the guest to apply and persist an IPv4 address on eth0.
/// Arguments: address/prefix, gateway (may be empty). It writes the
/// configuration for whichever network stack the guest has, so the address
/// comes back after a reboot, and applies it at once with `ip`. ifupdown's
/// `allow-hotplug` beside `auto` brings eth0 up when its device appears after
/// networking.service ran (a virtual machine's NIC driver, late on a busy host).
pub(crate) const CONFIGURE_ADDRESS_SCRIPT: &str = r#"set -e
addr="$1"; gw="$2"
ip link set eth0 up
ip -4 addr flush dev eth0 scope global
ip addr add "$addr" dev eth0
if [ -n "$gw" ]; then ip route replace default via "$gw" dev eth0; fi
if [ -d /etc/network ] && command -v ifup >/dev/null 2>&1; then
  mkdir -p /etc/network/interfaces.d
  if [ -f /etc/network/interfaces ] && ! grep -q 'interfaces.d' /etc/network/interfaces; then
    printf 'source /etc/network/interfaces.d/*\n' >> /etc/network/interfaces
  fi
  sed -i '/^[^#]*eth0/d' /etc/network/interfaces 2>/dev/null || true
  {
    printf 'auto eth0\nallow-hotplug eth0\niface eth0 inet static\n    address %s\n' "$addr"
    if [ -n "$gw" ]; then printf '    gateway %s\n' "$gw"; fi
  } > /etc/network/interfaces.d/advps-eth0
elif [ -d /etc/systemd/network ]; then
  {
    printf '[Match]\nName=eth0\n\n[Network]\nDHCP=no\nAddress=%s\n' "$addr"
    if [ -n "$gw" ]; then printf 'Gateway=%s\n' "$gw"; fi
  } > /etc/systemd/network/10-advps-eth0.network
fi
"#;

/// Fixed command that sets the login's password from a root-only file and
/// removes the file whatever happens.
/// chpasswd exits 0 on empty input, so an empty file (a push that wrote
/// nothing) is refused first.
const CHPASSWD_SCRIPT: &str =
    "rc=0; if [ -s /run/advps-chpasswd ]; then chpasswd < /run/advps-chpasswd || rc=$?; \
     else rc=3; fi; rm -f /run/advps-chpasswd; exit $rc";

const REBUILD_STEPS_NATIVE: &[&str] = &["save", "stop", "rebuild", "start", "address", "password"];
const REBUILD_STEPS_RECREATE: &[&str] = &[
    "save", "stop", "delete", "create", "start", "address", "password",
];

/// A driver for one LXD or Incus server.
pub struct LxdDriver {
    client: LxdClient,
    native_rebuild: bool,
    capabilities: Capabilities,
    /// The host's cores and memory (`/1.0/resources`): what a guest without
    /// limits may use. Read once, on the first usage reading.
    host: tokio::sync::OnceCell<HostResources>,
}

/// What a guest without limits may use of its host.
#[derive(Debug, Clone, Copy, Default)]
struct HostResources {
    cores: Option<u32>,
    memory: Option<u64>,
}

impl LxdDriver {
    /// Connects to the server behind `socket` and reads what it supports.
    pub async fn connect(client: LxdClient) -> DriverResult<LxdDriver> {
        let server = client
            .call(Method::GET, "/1.0", Body::None, POWER_WAIT)
            .await?;
        let extensions: Vec<&str> = server
            .get("api_extensions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let native_rebuild = extensions.contains(&"instances_rebuild");
        let instance_types = server
            .pointer("/environment/instance_types")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            });
        let (containers, virtual_machines) = match instance_types {
            Some(types) => (
                types.iter().any(|t| t == "container"),
                types.iter().any(|t| t == "virtual-machine"),
            ),
            None => (true, false),
        };
        Ok(LxdDriver {
            client,
            native_rebuild,
            capabilities: Capabilities {
                containers,
                virtual_machines,
                set_password: true,
                configure_address: true,
                rebuild: true,
            },
            host: tokio::sync::OnceCell::new(),
        })
    }

    async fn host(&self) -> HostResources {
        *self
            .host
            .get_or_init(|| async {
                match self
                    .client
                    .call(Method::GET, "/1.0/resources", Body::None, POWER_WAIT)
                    .await
                {
                    Ok(r) => HostResources {
                        cores: r
                            .pointer("/cpu/total")
                            .and_then(Value::as_u64)
                            .map(|n| n as u32),
                        memory: r.pointer("/memory/total").and_then(Value::as_u64),
                    },
                    // Unknown totals are reported as such; the next
                    // driver (after a reconnect) tries again.
                    Err(_) => HostResources::default(),
                }
            })
            .await
    }

    fn instance_path(instance: &str) -> String {
        format!("/1.0/instances/{}", encode_segment(instance))
    }

    async fn change_state(&self, instance: &str, body: Value) -> DriverResult<()> {
        self.change_state_within(instance, body, POWER_WAIT).await
    }

    /// Like [`Self::change_state`], waiting up to `wait` for the operation: a
    /// graceful stop may be given longer than the usual power wait.
    async fn change_state_within(
        &self,
        instance: &str,
        body: Value,
        wait: Duration,
    ) -> DriverResult<()> {
        let path = format!("{}/state", Self::instance_path(instance));
        self.client
            .call(Method::PUT, &path, Body::Json(&body), wait)
            .await
            .map(|_| ())
    }

    /// Stops (`action` "stop") or restarts ("restart") the instance in
    /// `mode`; a guest that ignores a graceful request within its timeout is
    /// forced, and the outcome says so.
    async fn power_cycle(
        &self,
        instance: &str,
        action: &str,
        mode: StopMode,
    ) -> DriverResult<PowerOutcome> {
        let forced = json!({ "action": action, "force": true, "timeout": 30 });
        match mode {
            StopMode::Force => {
                self.change_state(instance, forced).await?;
                Ok(PowerOutcome::Forced)
            }
            StopMode::Graceful { timeout } => {
                let secs = timeout.as_secs().max(1);
                // The engine gives up after `secs`; wait a little beyond it
                // so its own verdict arrives rather than our deadline.
                let wait = POWER_WAIT.max(Duration::from_secs(secs + 30));
                let graceful = self
                    .change_state_within(
                        instance,
                        json!({ "action": action, "force": false, "timeout": secs }),
                        wait,
                    )
                    .await;
                match graceful {
                    Ok(()) => Ok(PowerOutcome::Graceful),
                    Err(DriverError::Engine(_)) | Err(DriverError::Timeout(_)) => {
                        // The guest ignored the request: cut the power.
                        tracing::warn!(instance, action, "graceful power change failed, forcing");
                        self.change_state(instance, forced).await?;
                        Ok(PowerOutcome::GracefulThenForced)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Runs a command in the guest and fails unless it exits 0.
    async fn exec(&self, instance: &str, command: Vec<String>) -> DriverResult<()> {
        let path = format!("{}/exec", Self::instance_path(instance));
        let body = json!({
            "command": command,
            "environment": {},
            "interactive": false,
            "wait-for-websocket": false,
            // The exit code is all that is read; recorded output would pile
            // up as log files on the node.
            "record-output": false,
        });
        let op = self
            .client
            .call(Method::POST, &path, Body::Json(&body), POWER_WAIT)
            .await?;
        let code = op
            .pointer("/metadata/return")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        if code == 0 {
            Ok(())
        } else {
            Err(DriverError::Engine(format!(
                "command in the guest exited with status {code}"
            )))
        }
    }

    /// Writes a root-only file into the guest.
    async fn push_file(
        &self,
        instance: &str,
        path_in_guest: &str,
        content: Bytes,
    ) -> DriverResult<()> {
        let path = format!(
            "{}/files?path={}",
            Self::instance_path(instance),
            encode_segment(path_in_guest)
        );
        let headers = [
            ("x-lxd-uid", "0".to_string()),
            ("x-lxd-gid", "0".to_string()),
            ("x-lxd-mode", "0600".to_string()),
            ("x-lxd-type", "file".to_string()),
            ("x-lxd-write", "overwrite".to_string()),
            ("content-type", "application/octet-stream".to_string()),
        ];
        self.client
            .call(
                Method::POST,
                &path,
                Body::Raw {
                    bytes: content,
                    headers: &headers,
                },
                POWER_WAIT,
            )
            .await
            .map(|_| ())
    }

    async fn instance(&self, instance: &str) -> DriverResult<Value> {
        self.client
            .call(
                Method::GET,
                &Self::instance_path(instance),
                Body::None,
                POWER_WAIT,
            )
            .await
    }

    async fn power_of(&self, instance: &str) -> DriverResult<PowerStatus> {
        let info = self.instance(instance).await?;
        Ok(power_from(info.get("status").and_then(Value::as_str)))
    }

    /// The engine's power state of an instance, as tests see it.
    pub async fn power_status_for_tests(&self, instance: &str) -> PowerStatus {
        self.power_of(instance)
            .await
            .unwrap_or(PowerStatus::Other("error".into()))
    }

    async fn ensure_stopped(&self, instance: &str) -> DriverResult<()> {
        match self.power_of(instance).await {
            Ok(PowerStatus::Stopped) | Err(DriverError::NotFound) => Ok(()),
            Ok(_) => match self
                .stop(
                    instance,
                    StopMode::Graceful {
                        timeout: REBUILD_STOP_TIMEOUT,
                    },
                )
                .await
            {
                Ok(()) | Err(DriverError::NotRunning) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn ensure_started(&self, instance: &str) -> DriverResult<()> {
        match self.start(instance).await {
            Ok(()) | Err(DriverError::AlreadyRunning) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Percent-encodes a path segment or query value (instance names are
/// restricted by LXD, but nothing from outside reaches a URL unescaped).
fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn power_from(status: Option<&str>) -> PowerStatus {
    match status {
        Some("Running") => PowerStatus::Running,
        Some("Stopped") => PowerStatus::Stopped,
        Some(other) => PowerStatus::Other(other.to_ascii_lowercase()),
        None => PowerStatus::Other("unknown".into()),
    }
}

fn kind_from(value: Option<&str>) -> InstanceKind {
    match value {
        Some("virtual-machine") => InstanceKind::VirtualMachine,
        _ => InstanceKind::Container,
    }
}

/// Global IPv4 addresses from an instance state's `network` object,
/// ignoring the loopback interface.
pub fn addresses_from_state(state: &Value) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    if let Some(networks) = state.get("network").and_then(Value::as_object) {
        for (name, nic) in networks {
            if name == "lo" {
                continue;
            }
            for addr in nic
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let family = addr.get("family").and_then(Value::as_str);
                let scope = addr.get("scope").and_then(Value::as_str);
                if family == Some("inet") && scope != Some("local") {
                    if let Some(ip) = addr
                        .get("address")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse().ok())
                    {
                        out.push(ip);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Seconds since `last_used_at` (the last start), measured against `now`.
pub fn uptime_from(last_used_at: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> u64 {
    last_used_at
        .and_then(|raw| chrono::DateTime::parse_from_rfc3339(raw).ok())
        .map(|started| {
            (now - started.with_timezone(&chrono::Utc))
                .num_seconds()
                .max(0) as u64
        })
        .unwrap_or(0)
}

/// The configuration to re-create an instance with: user keys, and the
/// interfaces' MAC addresses so the guest keeps them across a rebuild; LXD
/// regenerates the other `volatile.*` and the `image.*` keys.
pub fn recreate_body(saved: &Value, name: &str, image: &str) -> Value {
    let config: Map<String, Value> = saved
        .get("config")
        .and_then(Value::as_object)
        .map(|c| {
            c.iter()
                .filter(|(k, _)| {
                    let mac = k.starts_with("volatile.") && k.ends_with(".hwaddr");
                    mac || !(k.starts_with("volatile.") || k.starts_with("image."))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": name,
        "type": saved.get("type").cloned().unwrap_or_else(|| json!("container")),
        "source": { "type": "image", "alias": image },
        "config": config,
        "devices": saved.get("devices").cloned().unwrap_or_else(|| json!({})),
        "profiles": saved.get("profiles").cloned().unwrap_or_else(|| json!(["default"])),
        "description": saved.get("description").cloned().unwrap_or_else(|| json!("")),
    })
}

#[async_trait]
impl Driver for LxdDriver {
    fn name(&self) -> &'static str {
        "lxd"
    }

    async fn capabilities(&self) -> DriverResult<Capabilities> {
        Ok(self.capabilities)
    }

    async fn engine_version(&self) -> DriverResult<Option<String>> {
        let server = self
            .client
            .call(Method::GET, "/1.0", Body::None, POWER_WAIT)
            .await?;
        let text = |pointer: &str| server.pointer(pointer).and_then(Value::as_str);
        Ok(text("/environment/server_version")
            .map(|version| format!("{} {version}", text("/environment/server").unwrap_or("lxd"))))
    }

    async fn console(
        &self,
        instance: &str,
        size: crate::TerminalSize,
    ) -> DriverResult<crate::ConsoleStream> {
        console::attach(&self.client, instance, size).await
    }

    async fn start(&self, instance: &str) -> DriverResult<()> {
        self.change_state(instance, json!({ "action": "start", "timeout": 30 }))
            .await
    }

    async fn stop(&self, instance: &str, mode: StopMode) -> DriverResult<()> {
        self.power_cycle(instance, "stop", mode).await.map(|_| ())
    }

    async fn stop_with_outcome(
        &self,
        instance: &str,
        mode: StopMode,
    ) -> DriverResult<PowerOutcome> {
        self.power_cycle(instance, "stop", mode).await
    }

    async fn reboot(&self, instance: &str) -> DriverResult<()> {
        if self.power_of(instance).await? != PowerStatus::Running {
            return Err(DriverError::NotRunning);
        }
        self.change_state(instance, json!({ "action": "restart", "timeout": 30 }))
            .await
    }

    async fn reboot_with_mode(&self, instance: &str, mode: StopMode) -> DriverResult<PowerOutcome> {
        if self.power_of(instance).await? != PowerStatus::Running {
            return Err(DriverError::NotRunning);
        }
        self.power_cycle(instance, "restart", mode).await
    }

    async fn status(&self, instance: &str) -> DriverResult<LiveStatus> {
        let info = self.instance(instance).await?;
        let power = power_from(info.get("status").and_then(Value::as_str));
        let state_path = format!("{}/state", Self::instance_path(instance));
        let state = self
            .client
            .call(Method::GET, &state_path, Body::None, POWER_WAIT)
            .await?;
        let running = power == PowerStatus::Running;
        Ok(LiveStatus {
            uptime_secs: Some(if running {
                uptime_from(
                    info.get("last_used_at").and_then(Value::as_str),
                    chrono::Utc::now(),
                )
            } else {
                0
            }),
            addresses: if running {
                addresses_from_state(&state)
            } else {
                Vec::new()
            },
            power,
        })
    }

    async fn usage(&self, instance: &str) -> DriverResult<UsageReading> {
        let info = self.instance(instance).await?;
        let state_path = format!("{}/state", Self::instance_path(instance));
        let state = self
            .client
            .call(Method::GET, &state_path, Body::None, POWER_WAIT)
            .await?;
        Ok(usage_from(&info, &state, self.host().await))
    }

    async fn usage_all(&self) -> DriverResult<Vec<(String, UsageReading)>> {
        let host = self.host().await;
        // `recursion=2` carries each instance's state: one call for the node.
        let instances = self
            .client
            .call(
                Method::GET,
                "/1.0/instances?recursion=2",
                Body::None,
                POWER_WAIT,
            )
            .await?;
        Ok(instances
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let name = i.get("name").and_then(Value::as_str)?.to_string();
                let state = i.get("state").cloned().unwrap_or(Value::Null);
                Some((name, usage_from(i, &state, host)))
            })
            .collect())
    }

    async fn configure_address(&self, instance: &str, address: &AddressConfig) -> DriverResult<()> {
        if self.power_of(instance).await? != PowerStatus::Running {
            return Err(DriverError::NotRunning);
        }
        let command = vec![
            "sh".to_string(),
            "-c".to_string(),
            CONFIGURE_ADDRESS_SCRIPT.to_string(),
            "advps-configure-address".to_string(),
            format!("{}/{}", address.address, address.prefix),
            address.gateway.map(|g| g.to_string()).unwrap_or_default(),
        ];
        self.exec(instance, command).await
    }

    async fn set_password(
        &self,
        instance: &str,
        username: &str,
        password: &str,
    ) -> DriverResult<()> {
        crate::check_username(username)?;
        if password.contains(['\n', '\r', ':']) {
            return Err(DriverError::Engine(
                "the password holds a character chpasswd cannot take".into(),
            ));
        }
        if self.power_of(instance).await? != PowerStatus::Running {
            return Err(DriverError::NotRunning);
        }
        self.push_file(
            instance,
            "/run/advps-chpasswd",
            Bytes::from(format!("{username}:{password}\n")),
        )
        .await?;
        let result = self
            .exec(
                instance,
                vec!["sh".into(), "-c".into(), CHPASSWD_SCRIPT.into()],
            )
            .await;
        if result.is_err() {
            // The script removes the file, but if it never ran, do it now.
            let _ = self
                .exec(
                    instance,
                    vec!["rm".into(), "-f".into(), "/run/advps-chpasswd".into()],
                )
                .await;
        }
        result.map_err(|e| match e {
            DriverError::Engine(_) => DriverError::Engine("chpasswd failed in the guest".into()),
            other => other,
        })
    }

    async fn set_mac(&self, instance: &str, mac: &str) -> DriverResult<()> {
        let info = self.instance(instance).await?;
        let running =
            power_from(info.get("status").and_then(Value::as_str)) == PowerStatus::Running;
        // The key LXD keeps the MAC of eth0 in; it applies at the next start.
        let body = json!({ "config": { "volatile.eth0.hwaddr": mac } });
        if running {
            self.stop(
                instance,
                StopMode::Graceful {
                    timeout: REBUILD_STOP_TIMEOUT,
                },
            )
            .await?;
        }
        let patched = self
            .client
            .call(
                Method::PATCH,
                &Self::instance_path(instance),
                Body::Json(&body),
                POWER_WAIT,
            )
            .await;
        if running {
            self.ensure_started(instance).await?;
        }
        patched.map(|_| ())
    }

    fn rebuild_steps(&self) -> &'static [&'static str] {
        if self.native_rebuild {
            REBUILD_STEPS_NATIVE
        } else {
            REBUILD_STEPS_RECREATE
        }
    }

    async fn rebuild_step(
        &self,
        request: &RebuildRequest,
        step: usize,
        scratch: &mut Value,
    ) -> DriverResult<StepOutcome> {
        let steps = self.rebuild_steps();
        let Some(&name) = steps.get(step) else {
            return Ok(StepOutcome::Done);
        };
        let instance = request.instance.as_str();
        match name {
            "save" => {
                // Saved once: a resumed rebuild must not save the half-made one.
                if scratch.get("saved").is_none() {
                    // Nothing is destroyed for an image the node does not have:
                    // the machine must survive a mistyped OS mapping.
                    let alias_path =
                        format!("/1.0/images/aliases/{}", encode_segment(&request.image));
                    match self
                        .client
                        .call(Method::GET, &alias_path, Body::None, POWER_WAIT)
                        .await
                    {
                        Ok(_) => {}
                        Err(DriverError::NotFound) => {
                            return Err(DriverError::Engine(format!(
                                "the node has no image '{}'",
                                request.image
                            )))
                        }
                        Err(e) => return Err(e),
                    }
                    let info = self.instance(instance).await?;
                    scratch["saved"] = json!({
                        "type": info.get("type"),
                        "config": info.get("config"),
                        "devices": info.get("devices"),
                        "profiles": info.get("profiles"),
                        "description": info.get("description"),
                    });
                }
            }
            "stop" => self.ensure_stopped(instance).await?,
            "rebuild" => {
                let body = json!({ "source": { "type": "image", "alias": request.image } });
                let path = format!("{}/rebuild", Self::instance_path(instance));
                self.client
                    .call(Method::POST, &path, Body::Json(&body), CREATE_WAIT)
                    .await?;
            }
            "delete" => {
                match self
                    .client
                    .call(
                        Method::DELETE,
                        &Self::instance_path(instance),
                        Body::None,
                        CREATE_WAIT,
                    )
                    .await
                {
                    Ok(_) | Err(DriverError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            "create" => {
                // Already re-created by an attempt that crashed afterwards?
                match self.instance(instance).await {
                    Ok(_) => {}
                    Err(DriverError::NotFound) => {
                        let saved = scratch.get("saved").cloned().unwrap_or(Value::Null);
                        let body = recreate_body(&saved, instance, &request.image);
                        self.client
                            .call(
                                Method::POST,
                                "/1.0/instances",
                                Body::Json(&body),
                                CREATE_WAIT,
                            )
                            .await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            "start" => self.ensure_started(instance).await?,
            "address" => {
                if let Some(address) = &request.address {
                    wait_for_guest(self, instance).await;
                    self.configure_address(instance, address).await?;
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
        Ok(if step + 1 >= steps.len() {
            StepOutcome::Done
        } else {
            StepOutcome::Next
        })
    }

    async fn list_images(&self) -> DriverResult<Vec<ImageInfo>> {
        let images = self
            .client
            .call(
                Method::GET,
                "/1.0/images?recursion=1",
                Body::None,
                POWER_WAIT,
            )
            .await?;
        let mut out = Vec::new();
        for image in images.as_array().into_iter().flatten() {
            let kind = kind_from(image.get("type").and_then(Value::as_str));
            let description = image
                .pointer("/properties/description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let aliases: Vec<String> = image
                .get("aliases")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            if aliases.is_empty() {
                if let Some(fp) = image.get("fingerprint").and_then(Value::as_str) {
                    out.push(ImageInfo {
                        alias: fp.to_string(),
                        description,
                        kind,
                    });
                }
            } else {
                for alias in aliases {
                    out.push(ImageInfo {
                        alias,
                        description: description.clone(),
                        kind,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.alias.cmp(&b.alias));
        Ok(out)
    }

    async fn list_instances(&self) -> DriverResult<Vec<InstanceInfo>> {
        let instances = self
            .client
            .call(
                Method::GET,
                "/1.0/instances?recursion=1",
                Body::None,
                POWER_WAIT,
            )
            .await?;
        let mut out: Vec<InstanceInfo> = instances
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let name = i.get("name").and_then(Value::as_str)?.to_string();
                let memory = i
                    .pointer("/expanded_config/limits.memory")
                    .or_else(|| i.pointer("/config/limits.memory"))
                    .and_then(Value::as_str)
                    .and_then(parse_memory_mb);
                Some(InstanceInfo {
                    name,
                    kind: kind_from(i.get("type").and_then(Value::as_str)),
                    power: power_from(i.get("status").and_then(Value::as_str)),
                    memory_mb: memory,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// The usage of an instance from its record (`expanded_config`) and its
/// state (`/state`, or `state` in a `recursion=2` list), with the host's
/// totals for what its limits leave open.
fn usage_from(info: &Value, state: &Value, host: HostResources) -> UsageReading {
    let running = power_from(info.get("status").and_then(Value::as_str)) == PowerStatus::Running;
    let config = |key: &str| {
        info.pointer(&format!("/expanded_config/{key}"))
            .or_else(|| info.pointer(&format!("/config/{key}")))
            .and_then(Value::as_str)
    };
    let positive = |v: Option<u64>| v.filter(|n| *n > 0);
    let memory_total = config("limits.memory")
        .filter(|v| !v.trim().ends_with('%'))
        .and_then(parse_memory_mb)
        .map(|mb| mb * 1024 * 1024)
        .or_else(|| positive(state.pointer("/memory/total").and_then(Value::as_u64)))
        .or(host.memory);
    let disk_total =
        positive(state.pointer("/disk/root/total").and_then(Value::as_u64)).or_else(|| {
            info.pointer("/expanded_devices/root/size")
                .and_then(Value::as_str)
                .and_then(parse_memory_mb)
                .map(|mb| mb * 1024 * 1024)
        });
    // Every interface but loopback: what the guest exchanged with the world.
    let (mut rx, mut tx, mut counted) = (0u64, 0u64, false);
    if let Some(nics) = state.get("network").and_then(Value::as_object) {
        for (name, nic) in nics {
            if name == "lo" || nic.get("type").and_then(Value::as_str) == Some("loopback") {
                continue;
            }
            if let Some(c) = nic.get("counters") {
                rx += c.get("bytes_received").and_then(Value::as_u64).unwrap_or(0);
                tx += c.get("bytes_sent").and_then(Value::as_u64).unwrap_or(0);
                counted = true;
            }
        }
    }
    let (rx, tx) = match (running, counted) {
        (false, _) => (Some(0), Some(0)),
        (true, true) => (Some(rx), Some(tx)),
        (true, false) => (None, None),
    };
    UsageReading {
        running,
        cores: config("limits.cpu")
            .and_then(crate::parse_cpu_limit)
            .or(host.cores),
        cpu_time_ns: if running {
            state.pointer("/cpu/usage").and_then(Value::as_u64)
        } else {
            Some(0)
        },
        cpu_fraction: None,
        memory_used: if running {
            state.pointer("/memory/usage").and_then(Value::as_u64)
        } else {
            Some(0)
        },
        memory_total,
        // A pool without quotas (`dir`) reports no usage at all.
        disk_used: state.pointer("/disk/root/usage").and_then(Value::as_u64),
        disk_total,
        rx_bytes: rx,
        tx_bytes: tx,
    }
}

/// Gives a freshly started guest a moment to bring its init up before
/// commands run in it (exec fails while the container is still booting).
async fn wait_for_guest(driver: &LxdDriver, instance: &str) {
    for _ in 0..20 {
        if driver.exec(instance, vec!["true".into()]).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_skip_loopback_and_ipv6() {
        let state = json!({"network": {
            "lo": {"addresses": [{"family":"inet","address":"127.0.0.1","scope":"local"}]},
            "eth0": {"addresses": [
                {"family":"inet","address":"198.51.100.50","netmask":"24","scope":"global"},
                {"family":"inet6","address":"fe80::1","netmask":"64","scope":"link"}
            ]}
        }});
        assert_eq!(
            addresses_from_state(&state),
            vec![Ipv4Addr::new(198, 51, 100, 50)]
        );
        assert!(addresses_from_state(&json!({})).is_empty());
    }

    #[test]
    fn uptime_counts_from_the_last_start() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:01:40Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(uptime_from(Some("2026-01-01T00:00:00Z"), now), 100);
        assert_eq!(uptime_from(Some("2026-01-01T00:00:00.123456789Z"), now), 99);
        assert_eq!(uptime_from(Some("not a time"), now), 0);
        assert_eq!(uptime_from(None, now), 0);
        assert_eq!(uptime_from(Some("2027-01-01T00:00:00Z"), now), 0);
    }

    #[test]
    fn recreate_keeps_user_config_and_devices_but_not_volatile_keys() {
        let saved = json!({
            "type": "virtual-machine",
            "config": {"limits.memory": "2GiB", "volatile.eth0.hwaddr": "00:16:3e:00:00:01", "image.os": "debian"},
            "devices": {"eth0": {"type": "nic", "nictype": "bridged", "parent": "advpsbr0"}},
            "profiles": ["default"],
        });
        let body = recreate_body(&saved, "c1", "advps-debian-13");
        assert_eq!(body["type"], "virtual-machine");
        assert_eq!(body["source"]["alias"], "advps-debian-13");
        assert_eq!(
            body["config"],
            json!({"limits.memory": "2GiB", "volatile.eth0.hwaddr": "00:16:3e:00:00:01"})
        );
        assert_eq!(body["devices"]["eth0"]["parent"], "advpsbr0");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode_segment("c1"), "c1");
        assert_eq!(encode_segment("a b?c"), "a%20b%3Fc");
        assert_eq!(encode_segment("/run/x"), "/run/x");
    }

    #[test]
    fn password_script_reads_stdin_from_the_file_only() {
        assert!(!CHPASSWD_SCRIPT.contains("root:"));
        assert!(CHPASSWD_SCRIPT.contains("rm -f /run/advps-chpasswd"));
    }
}
