//! `advps-bench`: load benchmark for the `advps` HTTP server.
//!
//! In one run it starts a fresh `advps serve` (ephemeral port, temporary data
//! directory, test-key rate limit raised so it never triggers), measures the
//! idle resident memory, then loads two targets alternately over keep-alive
//! HTTP/1.1 connections — the unauthenticated constant endpoint `GET /livez`
//! and the authenticated `GET /api/v1/services/vps_service_1/status` — and
//! prints requests, errors, req/s and latency percentiles per target, the
//! status/constant throughput ratio, memory after the load, and PASS/FAIL for
//! the targets (status >= 0.5 x constant req/s, status p99 < 5 ms, idle RSS
//! < 30 MB). The server is stopped with SIGTERM and its directory removed.
//!
//! Reproduce:
//!
//! ```text
//! cargo build --release -p advps-cli -p advps-bench && target/release/advps-bench
//! ```
//!
//! `advps-bench soak` runs 32 connections of mixed reads and writes beside
//! 1,000 idle connections and slow clients and checks the server holds (see
//! `soak.rs`).
//!
//! `advps-bench sampler` measures the usage sampler on a stand-in LXD node
//! of 1,000 containers and the metrics endpoint over 30 days of history
//! (see `sampler.rs`).
//!
//! `advps-bench lxd [--iterations N]` is a separate mode: the wall time of
//! start, stop and rebuild through the API against the same operations on
//! LXD's own API (see `overhead.rs`). `advps-bench libvirt [--iterations N]`
//! does the same for start, stop, reboot and rebuild of two VMs against
//! `virsh` (see `vm_overhead.rs`); both share `engine.rs`.
//!
//! Options: `--server PATH`, `--connections N` (32), `--seconds S` (10),
//! `--warmup S` (2), `--rounds N` (2), `--settle S` (2), `--threads N`
//! (client worker threads, 0 = one per CPU), `--json FILE`, `--strict`
//! (exit 1 when a check fails or a request errored). The load generator and
//! the server share the machine's CPUs, so absolute req/s are a lower bound
//! and move with other activity on the machine; the ratio between targets and
//! the server CPU time per request (sampled from `/proc/PID/stat` over each
//! measured window, also printed) are the steadier figures.

mod engine;
mod libvirt;
mod load;
mod lxd;
mod overhead;
mod report;
mod sampler;
mod scale;
mod server;
mod soak;
mod stats;
mod vm_overhead;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use load::{PhaseConfig, PhaseResult, Target};
use report::{Config, MemoryReport, Report, RoundFigures, TargetReport};
use server::Server;

#[derive(Parser, Debug)]
#[command(
    name = "advps-bench",
    about = "Load benchmark for the advps server (throughput, latency, memory)",
    // The load options belong to the default mode only.
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Another benchmark instead of the default load benchmark
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Path of the advps server binary [default: <workspace>/target/release/advps]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Concurrent keep-alive connections (one task each)
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds per target and round
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unrecorded warm-up seconds before each measured window
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rounds; each round loads the constant target then the status target
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Seconds to wait after start before sampling idle memory
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Client runtime worker threads (0 = one per CPU)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Write the figures as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit with status 1 when a check fails or any request errored
    #[arg(long)]
    strict: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Engine overhead: start, stop and rebuild through the API against the
    /// same operations on LXD's API (needs root, LXD and the advps images)
    Lxd(overhead::LxdArgs),
    /// Engine overhead: start, stop, reboot and rebuild of a VM through the
    /// API against the same operations with virsh (needs root, libvirt and
    /// the image of .ci/vm-up)
    Libvirt(vm_overhead::LibvirtArgs),
    /// Scale-out: the status endpoint on SQLite, one PostgreSQL instance and
    /// two, and the shared limiter's accuracy (needs PostgreSQL)
    Scale(scale::ScaleArgs),
    /// Soak: mixed reads and writes beside 1,000 idle connections and slow
    /// clients; no 5xx, p99, timeouts enforced, memory afterwards
    Soak(soak::SoakArgs),
    /// Usage sampler: one round over 1,000 services on a stand-in LXD node
    /// (engine calls, server CPU), then the metrics endpoint over 30 days
    /// of history and the history's bytes per service
    Sampler(sampler::SamplerArgs),
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    match args.mode.take() {
        Some(Mode::Scale(scale_args)) => return scale::main(scale_args),
        Some(Mode::Lxd(lxd_args)) => return overhead::main(lxd_args),
        Some(Mode::Libvirt(vm_args)) => return vm_overhead::main(vm_args),
        Some(Mode::Soak(soak_args)) => return soak::main(soak_args),
        Some(Mode::Sampler(sampler_args)) => return sampler::main(sampler_args),
        None => {}
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = if args.threads == 0 {
        cpus
    } else {
        args.threads
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: building the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args, threads, cpus)) {
        Ok(report) => {
            if args.strict && (!report.all_checks_pass || report.total_errors > 0) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Key shown in logs: prefix and last four characters only.
fn mask(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk_test_…{tail}")
}

/// Everything measured before the server is stopped.
struct Measured {
    idle: server::Memory,
    after: server::Memory,
    per_target: Vec<(Vec<PhaseResult>, String)>,
}

async fn run(args: &Args, threads: usize, cpus: usize) -> Result<Report> {
    let measure = secs("seconds", args.seconds)?;
    let warmup = secs("warmup", args.warmup)?;
    let settle = secs("settle", args.settle)?;
    if measure.is_zero() {
        bail!("--seconds must be > 0");
    }
    if args.connections == 0 || args.rounds == 0 {
        bail!("--connections and --rounds must be >= 1");
    }

    let bin = server::locate(args.server.as_deref())?;
    println!("server binary: {}", bin.display());
    if bin.components().any(|c| c.as_os_str() == "debug") {
        println!("WARNING: this looks like a debug build; figures are meaningless for targets");
    }
    let srv = Server::start(&bin).await?;
    println!(
        "server pid {} listening on http://{} (key {}{})",
        srv.pid(),
        srv.addr,
        mask(&srv.key),
        if srv.key_from_cli {
            ", created via CLI"
        } else {
            ", from serve output"
        }
    );
    println!(
        "load: {} connections, {} s warm-up + {} s measured per target, {} round(s), \
         {} client thread(s) on {} CPU(s)",
        args.connections, args.warmup, args.seconds, args.rounds, threads, cpus
    );

    let targets = [
        Target {
            name: "constant",
            path: "/livez",
            api_key: None,
        },
        Target {
            name: "status",
            path: "/api/v1/services/vps_service_1/status",
            api_key: Some(srv.key.clone()),
        },
    ];
    let cfg = PhaseConfig {
        connections: args.connections,
        warmup,
        measure,
    };

    let mut srv = srv;
    let measured = measure_all(&mut srv, &targets, cfg, settle, args.rounds).await;
    let tail = match &measured {
        Err(_) => srv.log_tail(),
        Ok(_) => String::new(),
    };
    let stop = srv.stop().await;
    let measured = match measured {
        Ok(m) => m,
        Err(e) => {
            if !tail.is_empty() {
                eprintln!("--- server stderr (tail) ---\n{tail}");
            }
            return Err(e);
        }
    };
    let server_exit = match stop {
        Ok(o) if o.forced => format!("did not stop on SIGTERM, killed ({})", o.status),
        Ok(o) => format!("{} after SIGTERM", o.status),
        Err(e) => format!("stop failed: {e:#}"),
    };

    // Aggregate per target over rounds.
    let mut reports = Vec::new();
    for (target, (phases, request)) in targets.iter().zip(measured.per_target) {
        let rounds: Vec<RoundFigures> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut lat = p.latencies_us.clone();
                let s = stats::summarize(&mut lat, p.error_count(), p.seconds);
                RoundFigures {
                    round: i as u32 + 1,
                    requests: s.requests,
                    errors: s.errors,
                    rps: s.rps,
                    p50_ms: s.p50_ms,
                    p99_ms: s.p99_ms,
                }
            })
            .collect();
        let mut all = PhaseResult::default();
        let requests_all: u64 = phases
            .iter()
            .map(|p| p.latencies_us.len() as u64 + p.error_count())
            .sum();
        for p in phases {
            all.merge(p);
        }
        let errors = all.error_count();
        let summary = stats::summarize(&mut all.latencies_us, errors, all.seconds);
        let per_request_us = |cpu: f64| {
            if requests_all > 0 {
                cpu * 1e6 / requests_all as f64
            } else {
                f64::NAN
            }
        };
        reports.push(TargetReport {
            name: target.name.to_string(),
            request,
            server_cpu_us_per_request: per_request_us(all.server_cpu_secs),
            client_cpu_us_per_request: per_request_us(all.client_cpu_secs),
            server_cpu_percent: 100.0 * all.server_cpu_secs / all.seconds,
            summary,
            errors_by_kind: all.errors,
            error_sample: all.error_sample,
            reconnects: all.reconnects,
            rounds,
        });
    }

    let constant = &reports[0].summary;
    let status = &reports[1].summary;
    let ratio = if constant.rps > 0.0 {
        status.rps / constant.rps
    } else {
        f64::NAN
    };
    let memory = MemoryReport {
        idle_rss_mb: report::kib_to_mb(measured.idle.rss_kib),
        after_load_rss_mb: report::kib_to_mb(measured.after.rss_kib),
        peak_hwm_mb: report::kib_to_mb(measured.after.hwm_kib),
    };
    let checks = report::checks(status, ratio, memory.idle_rss_mb);
    let all_checks_pass = checks.iter().all(|c| c.pass);
    let total_errors = reports.iter().map(|t| t.summary.errors).sum();
    let rep = Report {
        config: Config {
            server_binary: bin.display().to_string(),
            connections: args.connections,
            seconds: args.seconds,
            warmup_seconds: args.warmup,
            rounds: args.rounds,
            settle_seconds: args.settle,
            client_threads: threads,
            cpus,
        },
        targets: reports,
        status_over_constant_rps: ratio,
        memory,
        checks,
        all_checks_pass,
        total_errors,
        server_exit,
    };
    report::print(&rep);
    if let Some(path) = &args.json {
        report::write_json(&rep, path)?;
        println!("figures written to {}", path.display());
    }
    Ok(rep)
}

/// Idle memory, sanity probes, the alternating load phases and memory after.
async fn measure_all(
    srv: &mut Server,
    targets: &[Target; 2],
    cfg: PhaseConfig,
    settle: Duration,
    rounds: u32,
) -> Result<Measured> {
    tokio::time::sleep(settle).await;
    if !srv.is_running() {
        bail!("server exited during the settle period");
    }
    let idle = srv.memory().context("sampling idle memory")?;
    println!(
        "idle memory: RSS {:.1} MB (VmHWM {:.1} MB)",
        report::kib_to_mb(idle.rss_kib),
        report::kib_to_mb(idle.hwm_kib)
    );

    for t in targets {
        let (status, body) = load::probe(srv.addr, t)
            .await
            .with_context(|| format!("probing {}", t.path))?;
        if status != hyper::StatusCode::OK {
            println!(
                "WARNING: probe GET {} answered {status} (every such response counts as an \
                 error): {body}",
                t.path
            );
        }
    }

    let mut per_target: Vec<(Vec<PhaseResult>, String)> = targets
        .iter()
        .map(|t| (Vec::new(), format!("GET {}", t.path)))
        .collect();
    for round in 1..=rounds {
        for (i, t) in targets.iter().enumerate() {
            let phase = load::run_phase(srv.addr, t, cfg, srv.pid()).await?;
            let mut lat = phase.latencies_us.clone();
            let s = stats::summarize(&mut lat, phase.error_count(), phase.seconds);
            println!(
                "round {round} {:<9} {:>9} req {:>6} err {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  \
                 server CPU {:.0}%  client CPU {:.0}%",
                t.name,
                s.requests,
                s.errors,
                s.rps,
                s.p50_ms,
                s.p99_ms,
                100.0 * phase.server_cpu_secs / phase.seconds,
                100.0 * phase.client_cpu_secs / phase.seconds
            );
            per_target[i].0.push(phase);
            if !srv.is_running() {
                bail!("server exited during the load on {}", t.path);
            }
        }
    }
    let after = srv.memory().context("sampling memory after the load")?;
    Ok(Measured {
        idle,
        after,
        per_target,
    })
}
