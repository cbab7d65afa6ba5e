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
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hyper::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{
    self, median, ms, random_suffix, remember, Api, Names, OperationReport, Pair, MAX_RATIO,
};
use crate::lxd::{recreate_body, Lxd, BENCH_PREFIX};
use crate::server::{self, Server};

/// The image both containers start from.
const BASE_IMAGE: &str = "advps-debian-12";
/// Rebuilds alternate between these (image alias, advps OS slug).
const REBUILD_TARGETS: [(&str, &str); 2] = [
    ("advps-debian-13", "debian-13"),
    ("advps-debian-12", "debian-12"),
];
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

pub fn main(args: LxdArgs) -> ExitCode {
    let lxd = Lxd::new(&args.socket);
    let result = engine::run_guarded(
        |names| run(&args, names),
        |name| {
            let lxd = lxd.clone();
            async move {
                match lxd.remove(&name, Duration::from_secs(180)).await {
                    Ok(()) => println!("deleted container {name}"),
                    Err(e) => eprintln!("warning: {e:#}; delete it with `lxc delete -f {name}`"),
                }
            }
        },
    );
    engine::exit_code(result.map(|r| r.all_pass), args.strict)
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
}

#[derive(Default)]
struct Measured {
    stop: Pair,
    start: Pair,
    rebuild: Pair,
    task_ms: Vec<f64>,
}

async fn run(args: &LxdArgs, names: Names) -> Result<LxdReport> {
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
        remember(&names, name);
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
                service,
            },
        };
        let m = measure(&sides, args.iterations).await?;
        Ok::<_, anyhow::Error>((sides.api.service, m))
    }
    .await;
    let server_exit = engine::stop_server(srv, measured.is_err()).await;
    let (service, m) = measured?;

    let operations = vec![
        OperationReport::new("stop", &m.stop),
        OperationReport::new("start", &m.start),
        OperationReport::new("rebuild", &m.rebuild),
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
        engine::write_json(&report, path)?;
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
    engine::bind_service(bin, data_dir, &steps, ACCOUNT).await
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

async fn measure(s: &Sides, iterations: u32) -> Result<Measured> {
    let mut m = Measured::default();
    for i in 0..iterations {
        // Alternating which side goes first spreads any drift in the
        // machine's load (other builds) over both sides.
        let order = engine::order(i);
        for via_api in order {
            let (stop, start) = if via_api {
                let (stop, _) = s.api.power("stop", None).await?;
                (stop, s.api.power("start", None).await?.0)
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
                let (wall, own) = s.api.rebuild(os, CREATE_WAIT).await?;
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
    print!("{}", engine::table(&r.operations));
    println!(
        "API rebuild task's own duration (finishedAt - createdAt): median {:.0} ms, \
         {:.2} x the direct rebuild's median",
        r.api_rebuild_task_median_ms, r.api_rebuild_task_ratio
    );
    println!("note: {}", r.note);
    println!("server: {}", r.server_exit);
}
