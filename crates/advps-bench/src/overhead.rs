//! `advps-bench lxd`: the engine overhead of advps against LXD itself.
//!
//! In one run it creates two containers `advps-test-bench-<random>` from
//! `advps-debian-12` through LXD's REST API. One is driven directly on LXD's
//! API; the other is bound to an account of a fresh advps data directory
//! (set up with the release binary's CLI: node, OS slugs, an address pool,
//! a LINUX service and a live key) and driven through `advps serve`. Each
//! iteration then times, for both, in alternating order:
//!
//! - **stop**: direct `PUT state {"action":"stop","force":false,"timeout":60}`
//!   until its operation ends, against `POST /api/v1/services/ID/stop` until
//!   the HTTP answer (which comes after the engine finished; an empty body
//!   is the same graceful stop with a 60 s timeout);
//! - **start**: direct `PUT state {"action":"start"}` against
//!   `POST /api/v1/services/ID/start`;
//! - **rebuild**: directly the way an engine without a native rebuild (LXD
//!   5.0) has to do it — save the record, graceful stop, `DELETE`, `POST
//!   /1.0/instances` from the next image with the saved configuration and
//!   devices, start, then wait until `exec true` succeeds — against `POST
//!   /api/v1/services/ID/rebuild` and polling the task every 250 ms until
//!   `COMPLETED`. Images alternate between `advps-debian-13` and
//!   `advps-debian-12` on both sides.
//!
//! Between timed operations the guest is left to finish booting (untimed),
//! so every stop meets a fully started system on both sides. The API
//! rebuild also re-applies the service's address and root password inside
//! the guest, which the direct one does not: both figures are reported raw,
//! with the task's own duration (`finishedAt - createdAt`) beside them.
//!
//! Both containers are deleted at the end, on errors and on Ctrl-C too (a
//! drop guard that owns the runtime), after the server has been stopped.
//! Needs root (the LXD socket) and the images; see `.ci/lxd-up`.
//!
//! Reproduce:
//!
//! ```text
//! cargo build --release -p advps-cli -p advps-bench
//! target/release/advps-bench lxd --iterations 5 --json lxd-figures.json
//! ```

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::lxd::{http_exchange, recreate_body, Lxd, BENCH_PREFIX};
use crate::server::{self, Server};

/// The image both containers start from.
const BASE_IMAGE: &str = "advps-debian-12";
/// Rebuilds alternate between these (image alias, advps OS slug).
const REBUILD_TARGETS: [(&str, &str); 2] = [
    ("advps-debian-13", "debian-13"),
    ("advps-debian-12", "debian-12"),
];
/// Largest API/direct ratio that meets the target.
pub const MAX_RATIO: f64 = 1.2;
/// How often the task status is polled during an API rebuild.
const TASK_POLL: Duration = Duration::from_millis(250);
/// Graceful stop timeout the API applies without a body, used directly too.
const STOP_TIMEOUT_SECS: u64 = 60;
/// Graceful stop timeout the engine uses before re-creating an instance.
const REBUILD_STOP_TIMEOUT_SECS: u64 = 30;
/// Deadline for one power operation.
const POWER_WAIT: Duration = Duration::from_secs(120);
/// Creating an instance unpacks an image: allow longer.
const CREATE_WAIT: Duration = Duration::from_secs(300);
/// How long a guest may take to finish booting.
const BOOT_WAIT: Duration = Duration::from_secs(180);
/// The address pool the advps side binds its container with; kept apart
/// from the blocks the live test suites hand out.
const POOL_CIDR: &str = "198.51.100.0/24";
const POOL_GATEWAY: &str = "198.51.100.1";
const POOL_RANGE: &str = "198.51.100.240-198.51.100.247";
const ACCOUNT: &str = "bench";

#[derive(Args, Debug)]
pub struct LxdArgs {
    /// Timed rounds of stop, start and rebuild per side
    #[arg(long, default_value_t = 5)]
    iterations: u32,
    /// Path of the advps binary [default: <workspace>/target/release/advps]
    #[arg(long)]
    server: Option<PathBuf>,
    /// LXD's unix socket
    #[arg(long, default_value = "/var/lib/lxd/unix.socket")]
    socket: PathBuf,
    /// Write the figures as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit with status 1 when an operation misses the 1.2x target
    #[arg(long)]
    strict: bool,
}

/// Deletes the benchmark's containers when dropped. It owns the runtime,
/// so it is dropped outside of it and can still drive LXD after an error,
/// a panic or Ctrl-C ended the measured part.
struct Cleanup {
    runtime: Option<tokio::runtime::Runtime>,
    lxd: Lxd,
    names: Arc<Mutex<Vec<String>>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let lxd = self.lxd.clone();
        runtime.block_on(async move {
            for name in names {
                match lxd.remove(&name, Duration::from_secs(180)).await {
                    Ok(()) => println!("deleted container {name}"),
                    Err(e) => eprintln!("warning: {e:#}; delete it with `lxc delete -f {name}`"),
                }
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

pub fn main(args: LxdArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: building the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let cleanup = Cleanup {
        runtime: Some(runtime),
        lxd: Lxd::new(&args.socket),
        names: Arc::new(Mutex::new(Vec::new())),
    };
    let names = Arc::clone(&cleanup.names);
    let result = cleanup
        .runtime
        .as_ref()
        .map(|rt| {
            rt.block_on(async {
                tokio::select! {
                    r = run(&args, names) => r,
                    _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
                }
            })
        })
        .unwrap_or_else(|| Err(anyhow!("no runtime")));
    drop(cleanup);
    match result {
        Ok(report) if args.strict && !report.all_pass => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A short random suffix for container names (time and pid, mixed).
fn random_suffix(salt: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ (u64::from(std::process::id()) << 40) ^ salt.wrapping_mul(0x9E37_79B9);
    // Mixing so that names made within the same nanosecond still differ.
    for shift in [33, 29, 32] {
        x ^= x >> shift;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    format!("{:08x}", x & 0xffff_ffff)
}

/// Creates a container from the base image, starts it and waits for boot.
async fn create_container(lxd: &Lxd, name: &str) -> Result<()> {
    let body = json!({
        "name": name,
        "type": "container",
        "source": { "type": "image", "alias": BASE_IMAGE },
    });
    lxd.create(&body, CREATE_WAIT).await?;
    lxd.change_state(
        name,
        &json!({ "action": "start", "timeout": 30 }),
        POWER_WAIT,
    )
    .await?;
    wait_for_boot(lxd, name).await
}

/// Waits until the guest's init has finished starting its units, so that a
/// following stop meets the same fully booted system on both sides.
async fn wait_for_boot(lxd: &Lxd, name: &str) -> Result<()> {
    wait_for_exec(lxd, name).await?;
    // Exits non-zero for "degraded", which is booted all the same.
    lxd.exec(
        name,
        &["systemctl", "is-system-running", "--wait"],
        BOOT_WAIT,
    )
    .await
    .with_context(|| format!("waiting for {name} to boot"))?;
    Ok(())
}

/// Retries `exec true` until it succeeds: the point from which commands can
/// run in a freshly started guest.
async fn wait_for_exec(lxd: &Lxd, name: &str) -> Result<()> {
    let deadline = Instant::now() + BOOT_WAIT;
    loop {
        match lxd.exec(name, &["true"], POWER_WAIT).await {
            Ok(0) => return Ok(()),
            Ok(code) if Instant::now() >= deadline => bail!("`true` in {name} exited {code}"),
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs the advps CLI on the benchmark's data directory; returns stdout.
async fn cli(bin: &Path, data_dir: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars() {
        // The operator's own settings must not leak into the scratch setup.
        if key.starts_with("ADVPS_") {
            command.env_remove(key);
        }
    }
    let out = command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running advps {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "advps {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// The advps server's API as one customer with a live key sees it.
struct Api {
    addr: std::net::SocketAddr,
    key: String,
}

impl Api {
    /// One call; fails unless the envelope says success. Returns `data`.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let host = self.addr.to_string();
        let what = format!("{method} {path}");
        let (status, bytes) = http_exchange(
            stream,
            method,
            &host,
            path,
            &[("x-api-key", self.key.as_str())],
            body,
        )
        .await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| anyhow!("{what}: not JSON ({status}): {bytes:?}"))?;
        if status != StatusCode::OK
            || value.get("status").and_then(Value::as_str) != Some("success")
        {
            bail!("{what} answered {status}: {value}");
        }
        Ok(value.get("data").cloned().unwrap_or(Value::Null))
    }
}

/// Milliseconds since the epoch of a `YYYY-MM-DDTHH:MM:SS[.fff]Z` stamp.
fn parse_utc_millis(stamp: &str) -> Option<i64> {
    let s = stamp.strip_suffix('Z')?;
    let (date, clock) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let millis = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        digits.parse::<i64>().ok()?
    };
    // Days since 1970-01-01 in the proleptic Gregorian calendar, counting
    // years from March so that the leap day is the last day of a year.
    let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
    let era_days = 365 * y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400);
    let days = era_days + (153 * (m - 3) + 2) / 5 + day - 1 - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000 + millis)
}

/// Timings of one operation on one side, in milliseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Samples {
    pub ms: Vec<f64>,
}

impl Samples {
    fn push(&mut self, elapsed: Duration) {
        self.ms.push(elapsed.as_secs_f64() * 1000.0);
    }

    pub fn median(&self) -> f64 {
        median(&self.ms)
    }

    pub fn mean(&self) -> f64 {
        if self.ms.is_empty() {
            f64::NAN
        } else {
            self.ms.iter().sum::<f64>() / self.ms.len() as f64
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Debug, Serialize)]
pub struct OperationReport {
    pub operation: String,
    pub direct_ms: Vec<f64>,
    pub api_ms: Vec<f64>,
    pub direct_median_ms: f64,
    pub direct_mean_ms: f64,
    pub api_median_ms: f64,
    pub api_mean_ms: f64,
    /// API median / direct median: the figure checked against the target.
    pub ratio_median: f64,
    pub ratio_mean: f64,
    /// API median minus direct median: the absolute cost advps adds.
    pub overhead_median_ms: f64,
    pub pass: bool,
}

impl OperationReport {
    fn new(operation: &str, direct: &Samples, api: &Samples) -> OperationReport {
        let ratio_median = api.median() / direct.median();
        OperationReport {
            operation: operation.to_string(),
            direct_ms: direct.ms.clone(),
            api_ms: api.ms.clone(),
            direct_median_ms: direct.median(),
            direct_mean_ms: direct.mean(),
            api_median_ms: api.median(),
            api_mean_ms: api.mean(),
            ratio_median,
            ratio_mean: api.mean() / direct.mean(),
            overhead_median_ms: api.median() - direct.median(),
            pass: ratio_median <= MAX_RATIO,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LxdReport {
    pub iterations: u32,
    pub server_binary: String,
    pub direct_container: String,
    pub api_container: String,
    pub service_id: String,
    pub target_ratio: f64,
    pub operations: Vec<OperationReport>,
    /// The rebuild tasks' own durations (`finishedAt - createdAt`), without
    /// the client's polling granularity.
    pub api_rebuild_task_ms: Vec<f64>,
    pub api_rebuild_task_median_ms: f64,
    /// The task's median duration over the direct rebuild's median.
    pub api_rebuild_task_ratio: f64,
    pub note: String,
    pub all_pass: bool,
    pub server_exit: String,
}

const REBUILD_NOTE: &str = "the API rebuild also re-applies the service's address (an exec in \
     the guest after waiting for it to take commands) and its root password (a file push and \
     an exec of chpasswd), and its completion is seen through a 250 ms task poll; the direct \
     rebuild ends when `exec true` first succeeds";

/// Both sides of the run once set up.
struct Sides {
    lxd: Lxd,
    direct: String,
    api_container: String,
    api: Api,
    service: String,
}

#[derive(Default)]
struct Measured {
    stop: (Samples, Samples),
    start: (Samples, Samples),
    rebuild: (Samples, Samples),
    task_ms: Vec<f64>,
}

async fn run(args: &LxdArgs, names: Arc<Mutex<Vec<String>>>) -> Result<LxdReport> {
    if args.iterations == 0 {
        bail!("--iterations must be >= 1");
    }
    let bin = server::locate(args.server.as_deref())?;
    println!("server binary: {}", bin.display());
    let lxd = Lxd::new(&args.socket);
    lxd.raw(Method::GET, "/1.0", None)
        .await
        .with_context(|| format!("LXD on {} (root needed)", args.socket.display()))?;

    let direct = format!("{BENCH_PREFIX}{}", random_suffix(1));
    let api_container = format!("{BENCH_PREFIX}{}", random_suffix(2));
    for name in [&direct, &api_container] {
        // Recorded before creating: a half-made container is removed too.
        names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        println!("creating {name} from {BASE_IMAGE}");
        create_container(&lxd, name).await?;
    }

    let srv = Server::start_with_env(
        &bin,
        &[
            ("ADVPS_RATE_LIMIT_LIVE", server::RATE_LIMIT_FOR_RUN),
            ("ADVPS_LIVE_REBUILD_LIMIT", "100000"),
        ],
    )
    .await?;
    println!("server pid {} listening on http://{}", srv.pid(), srv.addr);
    let measured = async {
        let (service, key) =
            setup_advps(&bin, &srv.data_dir(), &args.socket, &api_container).await?;
        println!("bound {api_container} as service {service}");
        let sides = Sides {
            lxd: lxd.clone(),
            direct: direct.clone(),
            api_container: api_container.clone(),
            api: Api {
                addr: srv.addr,
                key,
            },
            service,
        };
        let m = measure(&sides, args.iterations).await?;
        Ok::<_, anyhow::Error>((sides.service, m))
    }
    .await;
    let tail = if measured.is_err() {
        srv.log_tail()
    } else {
        String::new()
    };
    // Stopped before the containers go, so it never acts on a vanishing one.
    let server_exit = match srv.stop().await {
        Ok(o) if o.forced => format!("did not stop on SIGTERM, killed ({})", o.status),
        Ok(o) => format!("{} after SIGTERM", o.status),
        Err(e) => format!("stop failed: {e:#}"),
    };
    if measured.is_err() && !tail.is_empty() {
        eprintln!("--- server stderr (tail) ---\n{tail}");
    }
    let (service, m) = measured?;

    let operations = vec![
        OperationReport::new("stop", &m.stop.0, &m.stop.1),
        OperationReport::new("start", &m.start.0, &m.start.1),
        OperationReport::new("rebuild", &m.rebuild.0, &m.rebuild.1),
    ];
    let all_pass = operations.iter().all(|o| o.pass);
    let report = LxdReport {
        iterations: args.iterations,
        server_binary: bin.display().to_string(),
        direct_container: direct,
        api_container,
        service_id: service,
        target_ratio: MAX_RATIO,
        api_rebuild_task_median_ms: median(&m.task_ms),
        api_rebuild_task_ratio: median(&m.task_ms) / m.rebuild.0.median(),
        api_rebuild_task_ms: m.task_ms,
        operations,
        note: REBUILD_NOTE.to_string(),
        all_pass,
        server_exit,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(report)
}

/// The operator setup, through the CLI; returns the service id and the key.
async fn setup_advps(
    bin: &Path,
    data_dir: &Path,
    socket: &Path,
    instance: &str,
) -> Result<(String, String)> {
    let endpoint = format!("unix://{}", socket.display());
    let steps: [&[&str]; 7] = [
        &["accounts", "create", ACCOUNT],
        &[
            "nodes",
            "add",
            "local",
            "--driver",
            "lxd",
            "--endpoint",
            &endpoint,
        ],
        &["nodes", "sync", "local"],
        &[
            "os",
            "add",
            "debian-12",
            "--name",
            "Debian 12",
            "--type",
            "lxc",
            "--image",
            "advps-debian-12",
        ],
        &[
            "os",
            "add",
            "debian-13",
            "--name",
            "Debian 13",
            "--type",
            "lxc",
            "--image",
            "advps-debian-13",
        ],
        &[
            "ippools",
            "add",
            "b",
            "--cidr",
            POOL_CIDR,
            "--gateway",
            POOL_GATEWAY,
            "--range",
            POOL_RANGE,
        ],
        &[
            "services",
            "create",
            "--account",
            ACCOUNT,
            "--node",
            "local",
            "--instance",
            instance,
            "--type",
            "LINUX",
            "--os",
            "debian-12",
        ],
    ];
    let mut service = String::new();
    for step in steps {
        service = last_line(&cli(bin, data_dir, step).await?);
    }
    if service.is_empty()
        || !service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("`advps services create` printed no service id (last line {service:?})");
    }
    let key = last_line(
        &cli(
            bin,
            data_dir,
            &["keys", "create", "--account", ACCOUNT, "--mode", "live"],
        )
        .await?,
    );
    if !key.starts_with("sk_live_") {
        bail!("`advps keys create` printed no live key");
    }
    Ok((service, key))
}

fn stop_body(timeout_secs: u64) -> Value {
    json!({ "action": "stop", "force": false, "timeout": timeout_secs })
}

async fn direct_stop(s: &Sides) -> Result<Duration> {
    let t = Instant::now();
    s.lxd
        .change_state(&s.direct, &stop_body(STOP_TIMEOUT_SECS), POWER_WAIT)
        .await?;
    Ok(t.elapsed())
}

async fn direct_start(s: &Sides) -> Result<Duration> {
    let t = Instant::now();
    s.lxd
        .change_state(
            &s.direct,
            &json!({ "action": "start", "timeout": 30 }),
            POWER_WAIT,
        )
        .await?;
    Ok(t.elapsed())
}

async fn api_power(s: &Sides, action: &str) -> Result<Duration> {
    let path = format!("/api/v1/services/{}/{action}", s.service);
    let t = Instant::now();
    s.api.call(Method::POST, &path, None).await?;
    Ok(t.elapsed())
}

/// Re-creates the direct container from `image` the LXD 5.0 way.
async fn direct_rebuild(s: &Sides, image: &str) -> Result<Duration> {
    let name = s.direct.as_str();
    let t = Instant::now();
    let saved = s
        .lxd
        .instance(name)
        .await?
        .ok_or_else(|| anyhow!("{name} vanished"))?;
    if saved.get("status").and_then(Value::as_str) != Some("Stopped") {
        s.lxd
            .change_state(name, &stop_body(REBUILD_STOP_TIMEOUT_SECS), POWER_WAIT)
            .await?;
    }
    s.lxd.delete(name, CREATE_WAIT).await?;
    s.lxd
        .create(&recreate_body(&saved, name, image), CREATE_WAIT)
        .await?;
    s.lxd
        .change_state(
            name,
            &json!({ "action": "start", "timeout": 30 }),
            POWER_WAIT,
        )
        .await?;
    wait_for_exec(&s.lxd, name).await?;
    Ok(t.elapsed())
}

/// Rebuilds through the API; returns the wall time to the first poll that
/// saw `COMPLETED` and the task's own duration in ms, when it reports one.
async fn api_rebuild(s: &Sides, os: &str) -> Result<(Duration, Option<f64>)> {
    let path = format!("/api/v1/services/{}/rebuild", s.service);
    let t = Instant::now();
    let data = s
        .api
        .call(Method::POST, &path, Some(&json!({ "os": os })))
        .await?;
    let task = data
        .get("taskId")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("rebuild answered no taskId: {data}"))?
        .to_string();
    let status_path = format!("/api/v1/services/task/{task}/status");
    loop {
        tokio::time::sleep(TASK_POLL).await;
        let data = s.api.call(Method::GET, &status_path, None).await?;
        match data.get("status").and_then(Value::as_str) {
            Some("COMPLETED") => {
                let elapsed = t.elapsed();
                let stamp = |k: &str| {
                    data.get(k)
                        .and_then(Value::as_str)
                        .and_then(parse_utc_millis)
                };
                let own = match (stamp("createdAt"), stamp("finishedAt")) {
                    (Some(a), Some(b)) => Some((b - a) as f64),
                    _ => None,
                };
                return Ok((elapsed, own));
            }
            Some("FAILED") => bail!("rebuild task {task} failed: {data}"),
            _ if t.elapsed() > CREATE_WAIT => bail!("rebuild task {task} still running"),
            _ => {}
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(s: &Sides, iterations: u32) -> Result<Measured> {
    let mut m = Measured::default();
    for i in 0..iterations {
        // Alternating which side goes first spreads any drift in the
        // machine's load (other builds) over both sides.
        let api_first = i % 2 == 1;
        let order = if api_first {
            [true, false]
        } else {
            [false, true]
        };
        for via_api in order {
            let (stop, start) = if via_api {
                let stop = api_power(s, "stop").await?;
                (stop, api_power(s, "start").await?)
            } else {
                let stop = direct_stop(s).await?;
                (stop, direct_start(s).await?)
            };
            let name = if via_api { &s.api_container } else { &s.direct };
            wait_for_boot(&s.lxd, name).await?;
            let (stops, starts) = if via_api {
                (&mut m.stop.1, &mut m.start.1)
            } else {
                (&mut m.stop.0, &mut m.start.0)
            };
            stops.push(stop);
            starts.push(start);
            println!(
                "iteration {} {:<6} stop {:>7.0} ms  start {:>7.0} ms",
                i + 1,
                if via_api { "api" } else { "direct" },
                ms(stop),
                ms(start)
            );
        }
        let (image, os) = REBUILD_TARGETS[i as usize % REBUILD_TARGETS.len()];
        for via_api in order {
            if via_api {
                let (wall, own) = api_rebuild(s, os).await?;
                wait_for_boot(&s.lxd, &s.api_container).await?;
                m.rebuild.1.push(wall);
                if let Some(own) = own {
                    m.task_ms.push(own);
                }
                println!(
                    "iteration {} api    rebuild to {os}: {:>7.0} ms (task {})",
                    i + 1,
                    ms(wall),
                    own.map(|o| format!("{o:.0} ms"))
                        .unwrap_or_else(|| "n/a".into())
                );
            } else {
                let wall = direct_rebuild(s, image).await?;
                wait_for_boot(&s.lxd, &s.direct).await?;
                m.rebuild.0.push(wall);
                println!(
                    "iteration {} direct rebuild to {image}: {:>7.0} ms",
                    i + 1,
                    ms(wall)
                );
            }
        }
    }
    Ok(m)
}

fn print_report(r: &LxdReport) {
    println!();
    println!(
        "engine overhead, {} iteration(s): direct {} vs API {} (service {})",
        r.iterations, r.direct_container, r.api_container, r.service_id
    );
    println!(
        "{:<9} {:>13} {:>11} {:>13} {:>11} {:>10} {:>6} {:>7}  target",
        "operation", "direct median", "mean", "API median", "mean", "API-direct", "ratio", "(mean)"
    );
    for o in &r.operations {
        println!(
            "{:<9} {:>10.0} ms {:>8.0} ms {:>10.0} ms {:>8.0} ms {:>+7.0} ms {:>6.2} {:>7.2}  {} (<= {MAX_RATIO})",
            o.operation,
            o.direct_median_ms,
            o.direct_mean_ms,
            o.api_median_ms,
            o.api_mean_ms,
            o.overhead_median_ms,
            o.ratio_median,
            o.ratio_mean,
            if o.pass { "PASS" } else { "FAIL" }
        );
    }
    println!(
        "API rebuild task's own duration (finishedAt - createdAt): median {:.0} ms, \
         {:.2} x the direct rebuild's median",
        r.api_rebuild_task_median_ms, r.api_rebuild_task_ratio
    );
    println!("note: {}", r.note);
    println!("server: {}", r.server_exit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(parse_utc_millis("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_utc_millis("1970-01-02T00:00:01.5Z"), Some(86_401_500));
        // 2024-01-30T12:00:00Z is 1706616000 s after the epoch.
        assert_eq!(
            parse_utc_millis("2024-01-30T12:00:00.123Z"),
            Some(1_706_616_000_123)
        );
        assert_eq!(
            parse_utc_millis("2024-03-01T00:00:00Z"),
            Some(1_709_251_200_000)
        );
        assert_eq!(parse_utc_millis("2024-01-30 12:00:00"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn suffixes_differ() {
        assert_ne!(random_suffix(1), random_suffix(2));
        assert_eq!(random_suffix(7).len(), 8);
    }
}
