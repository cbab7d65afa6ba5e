//! `advps-bench soak`: the server under hostile and ordinary load at once.
//!
//! For `--seconds` (60) it runs `--connections` (32) keep-alive connections of
//! mixed reads and writes (status, stock, the OS list, `me`, password
//! generation, forced reboots with an `Idempotency-Key`) against a fresh
//! release server, while a second client opens `--idle` (1,000) connections
//! that send one request and then say nothing, and `--slowloris` (4)
//! connections that send a request's headers one byte a second, again and
//! again. It checks what a provider needs to hold under that: no response of
//! 5xx and no transport failure on the mixed load, its p99 under
//! `--p99-ms` (50), every idle connection closed by the server's idle
//! timeout, no slow client holding a connection past the header timeout, and
//! resident memory back under `--rss-mb` (30) once the load is gone.
//!
//! The server runs with its default timeouts. A kept-alive connection with no
//! next request is closed after the shorter of `idle_timeout_secs` (60) and
//! `header_read_timeout_secs` (10): the HTTP library starts the header clock
//! as soon as it waits for the next request. Each idle client opens a new
//! connection when its last one is closed, so a thousand are held through the
//! whole window. The connection cap is raised above what the soak holds (the
//! default cap, 1,024, is below it).
//!
//! Reproduce:
//!
//! ```text
//! cargo build --release -p advps-cli -p advps-bench && target/release/advps-bench soak
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::kib_to_mb;
use crate::server::{self, Server};
use crate::stats;

/// Options of the soak.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Path of the advps server binary [default: <workspace>/target/release/advps]
    #[arg(long)]
    server: Option<PathBuf>,
    /// Seconds of mixed load
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Connections of mixed reads and writes
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Idle connections opened beside the load
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Connections that send their headers one byte a second
    #[arg(long, default_value_t = 4)]
    slowloris: usize,
    /// The server's idle keep-alive timeout for the run, in seconds [default: the server's, 60]
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// The server's header read timeout for the run, in seconds [default: the server's, 10]
    #[arg(long)]
    header_timeout: Option<u64>,
    /// Largest acceptable p99 of the mixed load, in milliseconds
    #[arg(long, default_value_t = 50.0)]
    p99_ms: f64,
    /// Largest acceptable resident memory after the load, in MB
    #[arg(long, default_value_t = 30.0)]
    rss_mb: f64,
    /// Seconds to wait after the load before sampling memory
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Write the figures as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit with status 1 when a behaviour check fails (5xx, transport
    /// failures, connections held past their timeout)
    #[arg(long)]
    strict: bool,
    /// Exit with status 1 also when a figure misses its target (p99, memory)
    #[arg(long)]
    strict_figures: bool,
}

/// Upper bound for one request of the mixed load.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's defaults, for the limits the soak checks.
const DEFAULT_IDLE_TIMEOUT: u64 = 60;
const DEFAULT_HEADER_TIMEOUT: u64 = 10;
/// Slack on top of a server timeout before a connection counts as held.
const TIMEOUT_SLACK: Duration = Duration::from_secs(3);

pub fn main(args: SoakArgs) -> ExitCode {
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
        Ok(report) => {
            let failed = |figures: bool| {
                report
                    .checks
                    .iter()
                    .any(|c| !c.pass && (figures || !c.figure))
            };
            if (args.strict && failed(false)) || (args.strict_figures && failed(true)) {
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

/// One request of the mix.
struct Step {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    /// A fresh `Idempotency-Key` per request.
    idempotent: bool,
}

const fn get(path: &'static str) -> Step {
    Step {
        method: Method::GET,
        path,
        body: None,
        idempotent: false,
    }
}

/// Five reads to two writes: the writes commit (a sealed password, a power
/// action with its audit entry and idempotency record), the reads are the
/// calls client programs make most.
const MIX: [Step; 7] = [
    get("/api/v1/services/vps_service_1/status"),
    get("/api/v1/products/stock"),
    get("/api/v1/services/lxc_service_1/status"),
    Step {
        method: Method::POST,
        path: "/api/v1/services/lxc_service_1/generate-password",
        body: None,
        idempotent: false,
    },
    get("/api/v1/os"),
    get("/api/v1/me"),
    Step {
        method: Method::POST,
        path: "/api/v1/services/vps_service_1/reboot",
        body: Some(r#"{"mode":"force"}"#),
        idempotent: true,
    },
];

#[derive(Default)]
struct MixedResult {
    latencies_us: Vec<u32>,
    /// The same latencies by request of the mix.
    per_step: BTreeMap<usize, Vec<u32>>,
    by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    timeouts: u64,
    sample_5xx: Option<String>,
    sample_transport: Option<String>,
}

impl MixedResult {
    fn merge(&mut self, other: MixedResult) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        for (k, v) in other.per_step {
            self.per_step.entry(k).or_default().extend(v);
        }
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_insert(0) += v;
        }
        self.transport_errors += other.transport_errors;
        self.timeouts += other.timeouts;
        self.sample_5xx = self.sample_5xx.take().or(other.sample_5xx);
        self.sample_transport = self.sample_transport.take().or(other.sample_transport);
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One connection of the mixed load, from `offset` in the mix.
async fn mixed_worker(
    addr: SocketAddr,
    key: HeaderValue,
    offset: usize,
    end: Instant,
    counter: Arc<AtomicU64>,
) -> MixedResult {
    let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a header value");
    let json = HeaderValue::from_static("application/json");
    let mut out = MixedResult::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut i = offset;
    while Instant::now() < end {
        let sender = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    out.transport_errors += 1;
                    out.sample_transport.get_or_insert_with(|| format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if sender.ready().await.is_err() {
            conn = None;
            continue;
        }
        let index = i % MIX.len();
        let step = &MIX[index];
        i += 1;
        let body = step
            .body
            .map(|b| Bytes::from_static(b.as_bytes()))
            .unwrap_or_default();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = step.method.clone();
        *req.uri_mut() = hyper::Uri::from_static(step.path);
        let headers = req.headers_mut();
        headers.insert(HOST, host.clone());
        headers.insert("x-api-key", key.clone());
        if step.body.is_some() {
            headers.insert(CONTENT_TYPE, json.clone());
        }
        if step.idempotent {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let value = format!("soak-{offset}-{n}");
            headers.insert(
                "idempotency-key",
                HeaderValue::from_str(&value).expect("ascii"),
            );
        }
        let t0 = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        match result {
            Ok(Ok((status, body))) => {
                let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                out.latencies_us.push(us);
                out.per_step.entry(index).or_default().push(us);
                *out.by_status.entry(status.as_u16()).or_insert(0) += 1;
                if status.is_server_error() {
                    out.sample_5xx.get_or_insert_with(|| {
                        format!(
                            "{} {}: {status} {}",
                            step.method,
                            step.path,
                            String::from_utf8_lossy(&body)
                        )
                    });
                }
            }
            Ok(Err(e)) => {
                conn = None;
                out.transport_errors += 1;
                out.sample_transport
                    .get_or_insert_with(|| format!("{} {}: {e}", step.method, step.path));
            }
            Err(_) => {
                conn = None;
                out.timeouts += 1;
            }
        }
    }
    out
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `stream`.
async fn read_response(stream: &mut TcpStream) -> Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut have = buf.len() - end - 4;
            while have < length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("closed inside a response body");
                }
                have += n;
            }
            return Ok(());
        }
    }
}

/// How an idle connection ended.
enum IdleEnd {
    /// The server closed it this long after its one response.
    Closed(Duration),
    /// Still open past its limit.
    StillOpen,
    /// Still open, within its limit, when the soak stopped waiting.
    Unjudged,
    /// It never got its first response.
    Failed,
}

/// Opens a connection, makes one request, then waits for the server to
/// close it: for `limit` and some, but not past `stop`.
async fn idle_connection(addr: SocketAddr, limit: Duration, stop: Instant) -> IdleEnd {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return IdleEnd::Failed;
    };
    let request = format!("GET /livez HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return IdleEnd::Failed;
    }
    if tokio::time::timeout(REQUEST_TIMEOUT, read_response(&mut stream))
        .await
        .map_or(true, |r| r.is_err())
    {
        return IdleEnd::Failed;
    }
    let since = Instant::now();
    let give_up = (since + limit + TIMEOUT_SLACK).min(stop.max(since));
    let mut byte = [0u8; 1];
    match tokio::time::timeout_at(give_up.into(), stream.read(&mut byte)).await {
        // End of stream, a reset, or a last word before the close: the
        // server let go of the connection.
        Ok(_) => IdleEnd::Closed(since.elapsed()),
        // Held past its limit; or opened too late in the soak to judge.
        Err(_) if since.elapsed() > limit => IdleEnd::StillOpen,
        Err(_) => IdleEnd::Unjudged,
    }
}

/// What the idle clients saw.
#[derive(Default)]
struct IdleResult {
    closed: u64,
    late: u64,
    still_open: u64,
    failed: u64,
    longest: Duration,
}

/// One idle client: holds an idle connection, and when the server closes it
/// opens the next, until `end`.
async fn idle_client(addr: SocketAddr, end: Instant, limit: Duration) -> IdleResult {
    let mut out = IdleResult::default();
    while Instant::now() < end {
        match idle_connection(addr, limit, end + TIMEOUT_SLACK).await {
            IdleEnd::Closed(d) => {
                out.closed += 1;
                out.longest = out.longest.max(d);
                if d > limit {
                    out.late += 1;
                }
            }
            IdleEnd::StillOpen => out.still_open += 1,
            IdleEnd::Unjudged => {}
            IdleEnd::Failed => {
                out.failed += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    out
}

/// What the slow clients saw.
#[derive(Default)]
struct SlowResult {
    /// Connections the server cut.
    cut: u64,
    /// Longest time one connection was held before the server cut it.
    longest: Duration,
    /// Connections still being fed when the soak ended (not cut in time).
    held_to_end: u64,
}

/// Feeds request headers one byte a second; when the server cuts the
/// connection, starts over, until `end`.
async fn slowloris(addr: SocketAddr, end: Instant, limit: Duration) -> SlowResult {
    let mut out = SlowResult::default();
    let preamble = format!("GET /livez HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    while Instant::now() < end {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opened = Instant::now();
        if stream.write_all(preamble.as_bytes()).await.is_err() {
            continue;
        }
        let mut byte = [0u8; 256];
        let cut = loop {
            if Instant::now() >= end {
                break false;
            }
            // Whatever the server says (a 408, or nothing and a close) ends
            // the attempt; otherwise one more byte after a second.
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await {
                Ok(_) => break true,
                Err(_) => {
                    if stream.write_all(b"a").await.is_err() {
                        break true;
                    }
                }
            }
        };
        let held = opened.elapsed();
        if cut {
            out.cut += 1;
            out.longest = out.longest.max(held);
        } else if held > limit {
            out.held_to_end += 1;
        }
    }
    out
}

#[derive(Serialize)]
struct Check {
    name: String,
    pass: bool,
    /// A figure to reach on a quiet machine (latency, memory) rather than a
    /// behaviour that must hold anywhere.
    figure: bool,
    detail: String,
}

#[derive(Serialize)]
struct SoakReport {
    seconds: f64,
    connections: usize,
    idle: usize,
    slowloris: usize,
    idle_timeout_secs: u64,
    header_timeout_secs: u64,
    mixed: stats::Summary,
    per_request: BTreeMap<String, stats::Summary>,
    responses_by_status: BTreeMap<u16, u64>,
    responses_5xx: u64,
    transport_errors: u64,
    timeouts: u64,
    idle_closed: u64,
    idle_closed_late: u64,
    idle_still_open: u64,
    idle_failed: u64,
    idle_longest_secs: f64,
    slow_cut: u64,
    slow_longest_secs: f64,
    slow_held_to_end: u64,
    rss_idle_mb: f64,
    rss_peak_mb: f64,
    rss_after_mb: f64,
    checks: Vec<Check>,
    all_checks_pass: bool,
}

async fn run(args: &SoakArgs) -> Result<SoakReport> {
    if !args.seconds.is_finite() || args.seconds <= 0.0 {
        bail!("--seconds must be a positive number");
    }
    if args.connections == 0 {
        bail!("--connections must be >= 1");
    }
    let bin = server::locate(args.server.as_deref())?;
    println!("server binary: {}", bin.display());
    let cap = (args.connections + args.idle + args.slowloris + 256).to_string();
    let mut env = vec![("ADVPS_MAX_CONNECTIONS".to_string(), cap)];
    if let Some(v) = args.idle_timeout {
        env.push(("ADVPS_IDLE_TIMEOUT_SECS".into(), v.to_string()));
    }
    if let Some(v) = args.header_timeout {
        env.push(("ADVPS_HEADER_READ_TIMEOUT_SECS".into(), v.to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut srv = Server::start_with_env(&bin, &env).await?;
    let result = soak(args, &mut srv).await;
    if result.is_err() {
        eprintln!("--- server stderr (tail) ---\n{}", srv.log_tail());
    }
    let stop = srv.stop().await;
    let report = result?;
    match stop {
        Ok(o) if o.forced => println!("server did not stop on SIGTERM and was killed"),
        Ok(o) => println!("server: {} after SIGTERM", o.status),
        Err(e) => println!("server stop failed: {e:#}"),
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(report)
}

async fn soak(args: &SoakArgs, srv: &mut Server) -> Result<SoakReport> {
    let addr = srv.addr;
    let header_timeout = args.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT);
    let idle_timeout = args
        .idle_timeout
        .unwrap_or(DEFAULT_IDLE_TIMEOUT)
        .min(header_timeout);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_mem = srv.memory().context("sampling idle memory")?;
    println!(
        "server pid {} on http://{addr}; idle RSS {:.1} MB",
        srv.pid(),
        kib_to_mb(idle_mem.rss_kib)
    );
    println!(
        "soak: {} s of {} mixed connections, {} idle connections (idle timeout {} s), \
         {} slow clients (header timeout {} s)",
        args.seconds, args.connections, args.idle, idle_timeout, args.slowloris, header_timeout
    );

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let idle_limit = Duration::from_secs(idle_timeout) + TIMEOUT_SLACK;
    let header_limit = Duration::from_secs(header_timeout) + TIMEOUT_SLACK;

    // The idle connections open first, in waves, so that the load below runs
    // with all of them held.
    let mut idle = Vec::with_capacity(args.idle);
    for _ in 0..args.idle {
        idle.push(tokio::spawn(idle_client(addr, end, idle_limit)));
        if idle.len() % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let slow: Vec<_> = (0..args.slowloris)
        .map(|_| tokio::spawn(slowloris(addr, end, header_limit)))
        .collect();
    let key = HeaderValue::from_str(&srv.key).context("key is not a header value")?;
    let counter = Arc::new(AtomicU64::new(0));
    let mixed: Vec<_> = (0..args.connections)
        .map(|i| {
            tokio::spawn(mixed_worker(
                addr,
                key.clone(),
                i,
                end,
                Arc::clone(&counter),
            ))
        })
        .collect();

    let mut peak_kib = 0;
    let sampler_end = end;
    let mut all = MixedResult::default();
    let mut samples = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < sampler_end {
        samples.tick().await;
        if let Ok(m) = srv.memory() {
            peak_kib = peak_kib.max(m.rss_kib);
        }
        if !srv.is_running() {
            bail!("the server exited during the soak");
        }
    }
    for h in mixed {
        all.merge(h.await.map_err(|e| anyhow!("load task: {e}"))?);
    }
    let mut slow_all = SlowResult::default();
    for h in slow {
        let s = h.await.map_err(|e| anyhow!("slow client task: {e}"))?;
        slow_all.cut += s.cut;
        slow_all.longest = slow_all.longest.max(s.longest);
        slow_all.held_to_end += s.held_to_end;
    }
    let mut idle_all = IdleResult::default();
    for h in idle {
        let r = h.await.map_err(|e| anyhow!("idle task: {e}"))?;
        idle_all.closed += r.closed;
        idle_all.late += r.late;
        idle_all.still_open += r.still_open;
        idle_all.failed += r.failed;
        idle_all.longest = idle_all.longest.max(r.longest);
    }
    let IdleResult {
        closed,
        late,
        still_open: open,
        failed,
        longest: idle_longest,
    } = idle_all;

    // Everything this client held is closed now; give the server a moment
    // to let go of what the connections used.
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let after = srv.memory().context("sampling memory after the soak")?;
    peak_kib = peak_kib.max(after.hwm_kib);

    let responses_5xx: u64 = all
        .by_status
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    let mut latencies = std::mem::take(&mut all.latencies_us);
    let summary = stats::summarize(&mut latencies, 0, args.seconds);
    let rss_after_mb = kib_to_mb(after.rss_kib);

    let mut checks = vec![
        Check {
            name: "no 5xx on the mixed load".into(),
            pass: responses_5xx == 0,
            figure: false,
            detail: format!(
                "{responses_5xx} of {}{}",
                summary.requests,
                all.sample_5xx
                    .as_deref()
                    .map(|s| format!("; e.g. {s}"))
                    .unwrap_or_default()
            ),
        },
        Check {
            name: "no transport failure or timeout on the mixed load".into(),
            pass: all.transport_errors == 0 && all.timeouts == 0,
            figure: false,
            detail: format!(
                "{} failures, {} timeouts{}",
                all.transport_errors,
                all.timeouts,
                all.sample_transport
                    .as_deref()
                    .map(|s| format!("; e.g. {s}"))
                    .unwrap_or_default()
            ),
        },
        Check {
            name: format!("mixed-load p99 < {} ms", args.p99_ms),
            pass: summary.p99_ms < args.p99_ms,
            figure: true,
            detail: format!("p99 {:.2} ms", summary.p99_ms),
        },
    ];
    if args.idle > 0 {
        checks.push(Check {
            name: format!(
                "idle connections closed by the idle timeout ({} s)",
                idle_timeout
            ),
            pass: closed >= args.idle as u64 && late == 0 && open == 0 && failed == 0,
            figure: false,
            detail: format!(
                "{closed} closed (longest {:.1} s, {late} late), {open} still open, \
                 {failed} without a first response",
                idle_longest.as_secs_f64()
            ),
        });
    }
    if args.slowloris > 0 {
        checks.push(Check {
            name: format!(
                "slow clients cut by the header timeout ({} s)",
                header_timeout
            ),
            pass: slow_all.cut > 0 && slow_all.longest <= header_limit && slow_all.held_to_end == 0,
            figure: false,
            detail: format!(
                "{} cut, longest held {:.1} s, {} held past the limit",
                slow_all.cut,
                slow_all.longest.as_secs_f64(),
                slow_all.held_to_end
            ),
        });
    }
    checks.push(Check {
        name: format!("resident memory after the soak < {} MB", args.rss_mb),
        pass: rss_after_mb < args.rss_mb,
        figure: true,
        detail: format!(
            "{rss_after_mb:.1} MB (idle {:.1} MB, peak {:.1} MB; heap and stacks {:.1} MB after, {:.1} MB idle)",
            kib_to_mb(idle_mem.rss_kib),
            kib_to_mb(peak_kib),
            kib_to_mb(after.anon_kib),
            kib_to_mb(idle_mem.anon_kib)
        ),
    });
    let all_checks_pass = checks.iter().all(|c| c.pass);

    println!(
        "mixed load: {} responses, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        summary.requests, summary.rps, summary.p50_ms, summary.p99_ms, summary.max_ms
    );
    let statuses: Vec<String> = all
        .by_status
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!("responses by status: {}", statuses.join(", "));
    let mut per_request = BTreeMap::new();
    for (index, mut lat) in std::mem::take(&mut all.per_step) {
        let step = &MIX[index];
        let s = stats::summarize(&mut lat, 0, args.seconds);
        let name = format!("{} {}", step.method, step.path);
        println!(
            "  {name:<55} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            s.p50_ms, s.p99_ms, s.max_ms
        );
        per_request.insert(name, s);
    }
    for c in &checks {
        let verdict = match (c.pass, c.figure) {
            (true, _) => "PASS",
            (false, false) => "FAIL",
            (false, true) => "MISS",
        };
        println!("{verdict} {} — {}", c.name, c.detail);
    }

    Ok(SoakReport {
        seconds: args.seconds,
        connections: args.connections,
        idle: args.idle,
        slowloris: args.slowloris,
        idle_timeout_secs: idle_timeout,
        header_timeout_secs: header_timeout,
        responses_by_status: all.by_status.clone(),
        mixed: summary,
        per_request,
        responses_5xx,
        transport_errors: all.transport_errors,
        timeouts: all.timeouts,
        idle_closed: closed,
        idle_closed_late: late,
        idle_still_open: open,
        idle_failed: failed,
        idle_longest_secs: idle_longest.as_secs_f64(),
        slow_cut: slow_all.cut,
        slow_longest_secs: slow_all.longest.as_secs_f64(),
        slow_held_to_end: slow_all.held_to_end,
        rss_idle_mb: kib_to_mb(idle_mem.rss_kib),
        rss_peak_mb: kib_to_mb(peak_kib),
        rss_after_mb,
        checks,
        all_checks_pass,
    })
}
