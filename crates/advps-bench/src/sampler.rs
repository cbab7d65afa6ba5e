//! `advps-bench sampler`: the usage sampler's figures on the real binary.
//!
//! 1. A stand-in LXD engine runs inside the bench: HTTP/1.1 on a unix
//!    socket, answering what the LXD driver asks (`/1.0`, `/1.0/resources`,
//!    the instance list for `nodes sync`, one instance and its state for
//!    `services create`, and the bulk `GET /1.0/instances?recursion=2` with
//!    every instance's state) for N containers whose CPU, memory and network
//!    counters move with time. It counts the bulk calls, the per-instance
//!    calls and every other call, and notes the server's CPU time
//!    (`/proc/PID/stat`) the moment each bulk call arrives.
//! 2. A fresh data directory is prepared with the CLI: the node, its sync, an
//!    account and N LINUX services bound with `advps services create`
//!    (several at once, `--jobs`), and a live key.
//! 3. `advps worker` runs with a short sample interval, first before the
//!    services are bound (its idle CPU per interval), then with them. A
//!    round's CPU is the server's CPU between two consecutive bulk calls: a
//!    whole interval, so the idle work of the other loops is in it; the idle
//!    interval's CPU is also shown and subtracted for the net figure.
//! 4. 30 days of history (a sample a minute, pruned and rolled up as the
//!    sampler does) are written for a few services through the store; the
//!    database's growth divided by those services is the storage per
//!    service. Then `advps serve` runs on the same directory and
//!    `GET /api/v1/services/{id}/metrics` over the 30 days is timed with the
//!    live key.
//!
//! Targets (`--strict` exits 1 when one is missed): one bulk call per round
//! and no per-instance call, a round's net CPU under 200 ms, the metrics
//! read under 20 ms at p99.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};

use advps_store::{
    AccountStore, MaintenanceStore, MetricsStore, Scope, ServiceStore, SqlStore, UsagePoint,
    UsageSchedule, DATABASE_FILE,
};

use crate::load::cpu_secs;
use crate::server;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

#[derive(clap::Args, Debug)]
pub struct SamplerArgs {
    /// Path of the advps server binary [default: <workspace>/target/release/advps]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Containers on the stand-in node, each bound as a LINUX service
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// `advps services create` runs at once while preparing
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// The sampler's interval during the measurement, seconds
    #[arg(long, default_value_t = 3.0)]
    interval: f64,
    /// Rounds measured (each between two bulk calls)
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Services given 30 days of history for the storage figure
    #[arg(long, default_value_t = 10)]
    history_services: usize,
    /// Timed metrics requests (after 20 unrecorded ones)
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Keep the scratch directory (data directory, logs) for inspection
    #[arg(long)]
    keep: bool,
    /// Write the figures as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit with status 1 when a target is missed
    #[arg(long)]
    strict: bool,
}

// ---------------------------------------------------------------------------
// The stand-in engine

/// What the stand-in saw.
#[derive(Default)]
struct Seen {
    bulk: u64,
    per_instance: u64,
    other: u64,
    /// When each bulk call arrived and the server's CPU seconds then.
    bulk_marks: Vec<(Instant, f64)>,
}

struct Engine {
    count: usize,
    started: Instant,
    /// The process whose CPU is noted at each bulk call (0 = none).
    pid: AtomicU32,
    /// Bulk answers so far: counters also move between calls in one second.
    bulk_serial: AtomicU64,
    seen: Mutex<Seen>,
}

fn instance_name(i: usize) -> String {
    format!("bench-{i:05}")
}

impl Engine {
    fn record(&self, i: usize) -> Value {
        let config = json!({"limits.cpu": "1", "limits.memory": "1024MB"});
        json!({
            "name": instance_name(i),
            "type": "container",
            "status": "Running",
            "status_code": 103,
            "last_used_at": "2026-01-01T00:00:00Z",
            "config": config,
            "expanded_config": config,
            "expanded_devices": {"root": {"type": "disk", "path": "/", "pool": "default", "size": "10240MB"}},
        })
    }

    fn state(&self, i: usize) -> Value {
        let secs =
            self.started.elapsed().as_secs_f64() + self.bulk_serial.load(Ordering::Relaxed) as f64;
        let share = 0.05 + (i % 10) as f64 * 0.03;
        let memory = 200_000_000 + (i as u64 * 7_919) % 300_000_000 + (secs as u64 % 60) * 100_000;
        json!({
            "status": "Running",
            "status_code": 103,
            "cpu": {"usage": (secs * share * 1e9) as u64},
            "memory": {"usage": memory, "total": 0},
            "disk": {"root": {"usage": 1_500_000_000u64 + i as u64 * 1_000, "total": 10_737_418_240u64}},
            "network": {
                "eth0": {"type": "broadcast", "addresses": [], "counters": {
                    "bytes_received": (secs * (2_000.0 + i as f64)) as u64,
                    "bytes_sent": (secs * (500.0 + i as f64)) as u64,
                }},
                "lo": {"type": "loopback", "addresses": [], "counters": {"bytes_received": 1, "bytes_sent": 1}},
            },
        })
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix("bench-")?.parse().ok()?;
        (i < self.count).then_some(i)
    }

    /// The answer to one request, and counts it.
    fn answer(&self, path_and_query: &str) -> (StatusCode, Value) {
        let sync = |metadata: Value| {
            (
                StatusCode::OK,
                json!({"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}),
            )
        };
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                json!({"type": "error", "error": "not found", "error_code": 404}),
            )
        };
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        if path == "/1.0/instances" && query.contains("recursion=2") {
            let pid = self.pid.load(Ordering::Relaxed);
            let cpu = if pid == 0 {
                f64::NAN
            } else {
                cpu_secs(&pid.to_string())
            };
            {
                let mut seen = self.seen.lock().expect("stand-in state");
                seen.bulk += 1;
                seen.bulk_marks.push((Instant::now(), cpu));
            }
            self.bulk_serial.fetch_add(1, Ordering::Relaxed);
            let all: Vec<Value> = (0..self.count)
                .map(|i| {
                    let mut r = self.record(i);
                    r["state"] = self.state(i);
                    r
                })
                .collect();
            return sync(Value::Array(all));
        }
        if let Some(rest) = path.strip_prefix("/1.0/instances/") {
            self.seen.lock().expect("stand-in state").per_instance += 1;
            let (name, state) = match rest.strip_suffix("/state") {
                Some(name) => (name, true),
                None => (rest, false),
            };
            return match self.index_of(name) {
                Some(i) if state => sync(self.state(i)),
                Some(i) => sync(self.record(i)),
                None => not_found(),
            };
        }
        self.seen.lock().expect("stand-in state").other += 1;
        match path {
            "/1.0" => sync(json!({
                "api_extensions": ["instances_rebuild"],
                "api_status": "stable",
                "api_version": "1.0",
                "auth": "trusted",
                "environment": {"instance_types": ["container"], "server": "lxd", "server_version": "5.21.0"},
            })),
            "/1.0/resources" => sync(json!({
                "cpu": {"total": 2},
                "memory": {"total": 8_589_934_592u64},
            })),
            "/1.0/instances" => sync(Value::Array(
                (0..self.count).map(|i| self.record(i)).collect(),
            )),
            "/1.0/images" => sync(json!([])),
            _ => not_found(),
        }
    }
}

async fn serve_engine(listener: UnixListener, engine: Arc<Engine>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let engine = Arc::clone(&engine);
                async move {
                    let target = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default();
                    let (status, body) = engine.answer(&target);
                    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------
// The CLI and the processes

#[derive(Clone)]
struct Cli {
    bin: PathBuf,
    data_dir: PathBuf,
}

impl Cli {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("ADVPS_DATA_DIR")
            .env_remove("ADVPS_CONFIG")
            .env_remove("ADVPS_DATABASE_URL")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .with_context(|| format!("running advps {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`advps {}` failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A long-running `advps <args>` with its output in `log`.
    fn spawn(&self, args: &[&str], env: &[(&str, String)], log: &Path) -> Result<Child> {
        let log = std::fs::File::create(log).context("creating a log file")?;
        let mut c = self.command();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting advps {}", args.join(" ")))
    }
}

async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

// ---------------------------------------------------------------------------
// Figures

#[derive(Serialize)]
struct Figures {
    server_binary: String,
    services: usize,
    interval_seconds: f64,
    prepare_seconds: f64,
    prepare_jobs: usize,
    rounds: Vec<RoundFigure>,
    bulk_calls_during_rounds: u64,
    per_instance_calls_during_rounds: u64,
    other_calls_during_rounds: u64,
    idle_cpu_ms_per_interval: f64,
    round_cpu_ms_median: f64,
    round_cpu_ms_max: f64,
    round_net_cpu_ms_median: f64,
    round_net_cpu_ms_max: f64,
    history_services: usize,
    history_rows_per_service: [u64; 3],
    history_bytes_per_service: u64,
    history_live_file_bytes_per_service: u64,
    metrics_points_per_series: usize,
    metrics_requests: usize,
    metrics_p50_ms: f64,
    metrics_p99_ms: f64,
    metrics_max_ms: f64,
    checks: Vec<Check>,
    all_checks_pass: bool,
}

#[derive(Serialize)]
struct RoundFigure {
    round: usize,
    seconds: f64,
    cpu_ms: f64,
}

#[derive(Serialize)]
struct Check {
    name: String,
    pass: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn main(args: SamplerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: building the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(f) if args.strict && !f.all_checks_pass => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &SamplerArgs) -> Result<Figures> {
    if args.services == 0 || args.rounds == 0 || args.jobs == 0 || args.requests == 0 {
        bail!("--services, --rounds, --jobs and --requests must be >= 1");
    }
    if !args.interval.is_finite() || args.interval < 0.5 {
        bail!("--interval must be at least 0.5 seconds");
    }
    let bin = server::locate(args.server.as_deref())?;
    println!("server binary: {}", bin.display());
    let dir = tempfile::Builder::new()
        .prefix("advps-bench-sampler-")
        .tempdir()
        .context("creating a temporary directory")?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let socket = dir.path().join("standin.socket");
    let engine = Arc::new(Engine {
        count: args.services,
        started: Instant::now(),
        pid: AtomicU32::new(0),
        bulk_serial: AtomicU64::new(0),
        seen: Mutex::new(Seen::default()),
    });
    let listener = UnixListener::bind(&socket).context("binding the stand-in's socket")?;
    tokio::spawn(serve_engine(listener, Arc::clone(&engine)));
    let cli = Cli {
        bin: bin.clone(),
        data_dir: data_dir.clone(),
    };

    // The node, its inventory and the account.
    let prepare = Instant::now();
    let endpoint = format!("unix://{}", socket.display());
    cli.run(&[
        "nodes",
        "add",
        "standin",
        "--driver",
        "lxd",
        "--endpoint",
        &endpoint,
    ])
    .await?;
    cli.run(&["nodes", "sync", "standin"]).await?;
    cli.run(&["accounts", "create", "bench"]).await?;

    // The idle CPU of the background work, without live services.
    let interval = Duration::from_secs_f64(args.interval);
    let env = [("ADVPS_USAGE_SAMPLE_SECONDS", args.interval.to_string())];
    let idle_intervals = 3u32;
    let worker = cli.spawn(&["worker"], &env, &dir.path().join("worker-idle.log"))?;
    let pid = worker
        .id()
        .ok_or_else(|| anyhow!("worker exited at once"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_secs(&pid.to_string());
    tokio::time::sleep(interval * idle_intervals).await;
    let idle_ms = (cpu_secs(&pid.to_string()) - cpu0) * 1000.0 / f64::from(idle_intervals);
    stop(worker).await;
    println!(
        "idle worker: {idle_ms:.1} ms CPU per {} s interval",
        args.interval
    );

    // The services, several `services create` at once.
    let bound = Instant::now();
    let mut service_ids: Vec<String> = Vec::with_capacity(args.services);
    let names: Vec<String> = (0..args.services).map(instance_name).collect();
    for chunk in names.chunks(args.jobs) {
        let runs = chunk.iter().map(|name| {
            let (cli, name) = (cli.clone(), name.clone());
            async move {
                cli.run(&[
                    "services",
                    "create",
                    "--account",
                    "bench",
                    "--node",
                    "standin",
                    "--instance",
                    &name,
                    "--type",
                    "LINUX",
                ])
                .await
            }
        });
        for out in futures_join(runs).await {
            let out = out?;
            let id = out
                .lines()
                .find(|l| l.starts_with("Bound "))
                .and_then(|l| l.split_whitespace().last())
                .ok_or_else(|| anyhow!("`services create` printed no service id:\n{out}"))?;
            service_ids.push(id.to_string());
        }
    }
    println!(
        "bound {} services in {:.1} s ({} at once)",
        service_ids.len(),
        bound.elapsed().as_secs_f64(),
        args.jobs
    );
    let key_out = cli
        .run(&["keys", "create", "--account", "bench", "--mode", "live"])
        .await?;
    let key = key_out
        .lines()
        .rev()
        .find_map(|l| {
            let start = l.find("sk_live_")?;
            Some(
                l[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>(),
            )
        })
        .ok_or_else(|| anyhow!("`keys create` printed no sk_live_ key"))?;
    let prepare_seconds = prepare.elapsed().as_secs_f64();

    // The rounds: CPU between consecutive bulk calls.
    let worker = cli.spawn(&["worker"], &env, &dir.path().join("worker.log"))?;
    let pid = worker
        .id()
        .ok_or_else(|| anyhow!("worker exited at once"))?;
    let before = {
        let mut seen = engine.seen.lock().expect("stand-in state");
        seen.bulk_marks.clear();
        (seen.bulk, seen.per_instance, seen.other)
    };
    engine.pid.store(pid, Ordering::Relaxed);
    let deadline = Instant::now() + interval * (args.rounds as u32 + 3) + Duration::from_secs(30);
    loop {
        let marks = engine.seen.lock().expect("stand-in state").bulk_marks.len();
        if marks > args.rounds + 1 {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
            bail!("only {marks} bulk calls before the deadline; worker log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Wait past the last round's writes before the counts are read.
    tokio::time::sleep(interval / 2).await;
    engine.pid.store(0, Ordering::Relaxed);
    stop(worker).await;
    let (marks, calls) = {
        let seen = engine.seen.lock().expect("stand-in state");
        (
            seen.bulk_marks.clone(),
            (
                seen.bulk - before.0,
                seen.per_instance - before.1,
                seen.other - before.2,
            ),
        )
    };
    // The first call comes as the worker starts; each later one closes a round.
    let rounds: Vec<RoundFigure> = marks
        .windows(2)
        .skip(1)
        .take(args.rounds)
        .enumerate()
        .map(|(i, w)| RoundFigure {
            round: i + 1,
            seconds: (w[1].0 - w[0].0).as_secs_f64(),
            cpu_ms: (w[1].1 - w[0].1) * 1000.0,
        })
        .collect();
    for r in &rounds {
        println!(
            "round {}: {:.2} s, server CPU {:.1} ms (net of idle {:.1} ms)",
            r.round,
            r.seconds,
            r.cpu_ms,
            r.cpu_ms - idle_ms
        );
    }
    let mut cpu: Vec<f64> = rounds.iter().map(|r| r.cpu_ms).collect();
    cpu.sort_by(f64::total_cmp);
    let (median, max) = (
        percentile(&cpu, 0.5),
        cpu.last().copied().unwrap_or(f64::NAN),
    );
    let min_gap = marks
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let one_call_per_round =
        calls.0 as usize == marks.len() && min_gap > args.interval * 0.5 && calls.1 == 0;
    println!(
        "engine calls while sampling: {} bulk over {} intervals, {} per instance, {} other",
        calls.0,
        marks.len(),
        calls.1,
        calls.2
    );

    // 30 days of history for a few services, through the store.
    let history_n = args.history_services.min(service_ids.len()).max(1);
    let (rows, bytes_per_service, live_bytes_per_service) =
        fill_history(&data_dir, dir.path(), &service_ids[..history_n]).await?;
    println!(
        "30 days of history: {} rows per service (raw {}, 5-minute {}, hourly {}), \
         {bytes_per_service} bytes per service in a compact copy of the database, at most \
         {live_bytes_per_service} in the live file and its log (growth / {history_n} services)",
        rows.iter().sum::<u64>(),
        rows[0],
        rows[1],
        rows[2]
    );

    // The metrics endpoint on the filled directory.
    let serve = cli.spawn(
        &["serve", "--listen", "127.0.0.1:0"],
        &[(
            "ADVPS_RATE_LIMIT_LIVE",
            server::RATE_LIMIT_FOR_RUN.to_string(),
        )],
        &dir.path().join("serve.log"),
    );
    let serve = serve?;
    let addr = wait_listening(&dir.path().join("serve.log")).await;
    let measured = match addr {
        Ok(addr) => time_metrics(addr, &key, &service_ids[0], args.requests).await,
        Err(e) => Err(e),
    };
    stop(serve).await;
    let (mut lat, points) = measured.map_err(|e| {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        anyhow!("{e:#}\n--- serve log ---\n{log}")
    })?;
    lat.sort_by(f64::total_cmp);
    let (p50, p99, lat_max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "GET /api/v1/services/{}/metrics (30 days, {points} points per series): \
         p50 {p50:.2} ms, p99 {p99:.2} ms, max {lat_max:.2} ms over {} requests",
        service_ids[0], args.requests
    );

    let net_max = max - idle_ms;
    let checks = vec![
        Check {
            name: "one bulk engine call per round, none per service".into(),
            pass: one_call_per_round,
        },
        Check {
            name: "a round's server CPU (net of idle) < 200 ms".into(),
            pass: net_max < 200.0,
        },
        Check {
            name: "metrics over 30 days p99 < 20 ms".into(),
            pass: p99 < 20.0,
        },
    ];
    for c in &checks {
        println!("{} {}", if c.pass { "PASS" } else { "FAIL" }, c.name);
    }
    let all_checks_pass = checks.iter().all(|c| c.pass);
    let figures = Figures {
        server_binary: bin.display().to_string(),
        services: args.services,
        interval_seconds: args.interval,
        prepare_seconds,
        prepare_jobs: args.jobs,
        rounds,
        bulk_calls_during_rounds: calls.0,
        per_instance_calls_during_rounds: calls.1,
        other_calls_during_rounds: calls.2,
        idle_cpu_ms_per_interval: idle_ms,
        round_cpu_ms_median: median,
        round_cpu_ms_max: max,
        round_net_cpu_ms_median: median - idle_ms,
        round_net_cpu_ms_max: net_max,
        history_services: history_n,
        history_rows_per_service: rows,
        history_bytes_per_service: bytes_per_service,
        history_live_file_bytes_per_service: live_bytes_per_service,
        metrics_points_per_series: points,
        metrics_requests: args.requests,
        metrics_p50_ms: p50,
        metrics_p99_ms: p99,
        metrics_max_ms: lat_max,
        checks,
        all_checks_pass,
    };
    if args.keep {
        println!("scratch directory kept: {}", dir.keep().display());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&figures)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(figures)
}

/// Runs the futures at once and returns their results in order.
async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a preparation run panicked"));
    }
    out
}

/// The database file and its write-ahead log, in bytes.
fn file_bytes(dir: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(dir.join(format!("{DATABASE_FILE}{suffix}"))).ok())
        .map(|m| m.len())
        .sum()
}

/// 30 days up to now of a sample a minute for `services`, recorded and
/// pruned day by day as the sampler would have; returns the first
/// service's rows per level, the growth of a compact copy of the database
/// (`VACUUM INTO`, as `advps backup` makes it) per service, and the growth
/// of the live database file and its log per service (an upper bound: free
/// pages and the log are reused, not shrunk).
async fn fill_history(
    data_dir: &Path,
    scratch: &Path,
    services: &[String],
) -> Result<([u64; 3], u64, u64)> {
    let size_before = file_bytes(data_dir);
    let store = SqlStore::open_sqlite(data_dir).await?;
    let compact = |name: &str| scratch.join(name);
    store.snapshot_into(&compact("before.db")).await?;
    let schedule = UsageSchedule::default();
    let account = store
        .find_account("bench")
        .await?
        .ok_or_else(|| anyhow!("no account bench"))?;
    let scope = Scope {
        account_id: account.id,
        mode: advps_domain::Mode::Live,
    };
    let mut pks = Vec::new();
    for id in services {
        let s = store
            .find_service(scope, id)
            .await?
            .ok_or_else(|| anyhow!("service {id} not found"))?;
        pks.push(s.pk);
    }
    let now = advps_domain::time::now_millis();
    let t0 = now - 30 * DAY_MS;
    for day in 0..30 {
        let mut batch = Vec::with_capacity(pks.len() * 1_440);
        for (n, pk) in pks.iter().enumerate() {
            for m in 0..1_440i64 {
                let i = day * 1_440 + m + n as i64;
                batch.push((
                    *pk,
                    UsagePoint {
                        at: t0 + (day * 1_440 + m) * MINUTE_MS,
                        cpu_milli: Some(10_000 + (i * 7_919) % 40_000),
                        memory_used: Some(300_000_000 + (i * 104_729) % 300_000_000),
                        disk_used: Some(1_500_000_000),
                        net_in: Some(2_000 + (i * 31) % 5_000),
                        net_out: Some(500 + (i * 17) % 1_000),
                    },
                ));
            }
        }
        store.record_usage(&batch, &schedule).await?;
        store
            .prune_usage(t0 + (day + 1) * DAY_MS, &schedule)
            .await?;
    }
    let rows = store.usage_rows(pks[0]).await?;
    store.snapshot_into(&compact("after.db")).await?;
    store.close().await;
    let len = |name: &str| std::fs::metadata(compact(name)).map(|m| m.len());
    let n = pks.len() as u64;
    let compact_grown = len("after.db")?.saturating_sub(len("before.db")?);
    let live_grown = file_bytes(data_dir).saturating_sub(size_before);
    Ok((rows, compact_grown / n, live_grown / n))
}

/// The address from the server's `Listening on` line in its log.
async fn wait_listening(log: &Path) -> Result<std::net::SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let file = tokio::fs::File::open(log).await?;
        let mut lines = BufReader::new(file).lines();
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = server::parse_listen(&line) {
                return Ok(addr);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("serve printed no listening line within 60 s")
}

/// Times `requests` reads of 30 days of one service on one keep-alive
/// connection; returns the latencies (ms) and the points of the cpu series.
async fn time_metrics(
    addr: std::net::SocketAddr,
    key: &str,
    service: &str,
    requests: usize,
) -> Result<(Vec<f64>, usize)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut lat = Vec::with_capacity(requests);
    let mut points = 0;
    for n in 0..requests + 20 {
        let now = advps_domain::time::now_millis();
        let path = format!(
            "/api/v1/services/{service}/metrics?type=cpu,memory,disk,network&start={}&end={}",
            advps_domain::time::format_millis(now - 30 * DAY_MS),
            advps_domain::time::format_millis(now)
        );
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .header("x-api-key", key)
            .body(Empty::<Bytes>::new())?;
        sender.ready().await?;
        let t = Instant::now();
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if status != StatusCode::OK {
            bail!(
                "metrics answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        if n == 0 {
            let v: Value = serde_json::from_slice(&body)?;
            points = v
                .pointer("/data/timeSeries/cpu")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            if points == 0 {
                println!(
                    "note: no cpu series found in the answer: {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(400)
                        .collect::<String>()
                );
            }
        }
        if n >= 20 {
            lat.push(ms);
        }
    }
    Ok((lat, points))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(count: usize) -> Engine {
        Engine {
            count,
            started: Instant::now(),
            pid: AtomicU32::new(0),
            bulk_serial: AtomicU64::new(0),
            seen: Mutex::new(Seen::default()),
        }
    }

    #[test]
    fn the_bulk_answer_carries_every_state_and_counters_move() {
        let e = engine(3);
        let (status, first) = e.answer("/1.0/instances?recursion=2");
        assert_eq!(status, StatusCode::OK);
        let list = first["metadata"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[2]["name"], "bench-00002");
        let cpu = |v: &Value| v["metadata"][0]["state"]["cpu"]["usage"].as_u64().unwrap();
        let (_, second) = e.answer("/1.0/instances?recursion=2");
        assert!(cpu(&second) > cpu(&first), "CPU time grows between calls");
        let seen = e.seen.lock().unwrap();
        assert_eq!((seen.bulk, seen.per_instance, seen.other), (2, 0, 0));
    }

    #[test]
    fn per_instance_and_other_calls_are_counted_apart() {
        let e = engine(2);
        assert_eq!(e.answer("/1.0/instances/bench-00001").0, StatusCode::OK);
        assert_eq!(
            e.answer("/1.0/instances/bench-00001/state").0,
            StatusCode::OK
        );
        assert_eq!(
            e.answer("/1.0/instances/bench-00009").0,
            StatusCode::NOT_FOUND
        );
        let (_, list) = e.answer("/1.0/instances?recursion=1");
        assert!(list["metadata"][0].get("state").is_none());
        assert_eq!(e.answer("/1.0").0, StatusCode::OK);
        let seen = e.seen.lock().unwrap();
        assert_eq!((seen.bulk, seen.per_instance, seen.other), (0, 3, 2));
    }

    #[test]
    fn percentiles_pick_by_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
