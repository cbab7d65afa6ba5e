//! Closed-loop HTTP/1.1 load generation for the advps load benchmark.
//!
//! Each phase opens `connections` keep-alive connections (hyper's low-level
//! client over a plain `TcpStream`, `TCP_NODELAY` on), one task per
//! connection, each sending GET requests back to back. Requests sent during
//! the warm-up are not recorded; afterwards every `200 OK` latency is kept in
//! microseconds and anything else is counted as an error.
//!
//! Reproduce with
//! `cargo build --release -p advps-cli -p advps-bench && target/release/advps-bench`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request stream to measure.
pub struct Target {
    /// Short name used in the report (`constant`, `status`).
    pub name: &'static str,
    pub path: &'static str,
    /// Value of the `x-api-key` header, if the endpoint needs one.
    pub api_key: Option<String>,
}

/// Pre-built request parts, cloned for every request.
struct Prepared {
    uri: Uri,
    host: HeaderValue,
    key: Option<HeaderValue>,
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Upper bound for one request; past it the request is an error and the
/// connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Prepared {
    fn new(addr: SocketAddr, target: &Target) -> Result<Prepared> {
        Ok(Prepared {
            uri: target
                .path
                .parse()
                .with_context(|| format!("bad path {}", target.path))?,
            host: HeaderValue::from_str(&addr.to_string())?,
            key: target
                .api_key
                .as_deref()
                .map(HeaderValue::from_str)
                .transpose()
                .context("API key is not a valid header value")?,
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        if let Some(k) = &self.key {
            headers.insert(X_API_KEY, k.clone());
        }
        req
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the peer closes.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on a fresh connection and returns status and body; used
/// to check each target before loading it.
pub async fn probe(addr: SocketAddr, target: &Target) -> Result<(StatusCode, String)> {
    let prepared = Prepared::new(addr, target)?;
    let mut sender = connect(addr).await?;
    sender.ready().await?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(prepared.request()))
        .await
        .map_err(|_| anyhow!("probe of {} timed out", target.path))??;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Phase timing and concurrency.
#[derive(Clone, Copy)]
pub struct PhaseConfig {
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one phase (one target, one round) recorded.
#[derive(Default)]
pub struct PhaseResult {
    /// Latency of every recorded `200 OK`, microseconds, unsorted.
    pub latencies_us: Vec<u32>,
    /// Error kind (`HTTP 401`, `transport`, `timeout`, …) to count.
    pub errors: BTreeMap<String, u64>,
    /// One example of an error (status and body, or the transport error).
    pub error_sample: Option<String>,
    /// Connections re-opened because the server closed one (keep-alive lost).
    pub reconnects: u64,
    /// Measured window in seconds.
    pub seconds: f64,
    /// CPU seconds (user + system) the server used in the measured window.
    pub server_cpu_secs: f64,
    /// CPU seconds this load generator used in the measured window.
    pub client_cpu_secs: f64,
}

impl PhaseResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn record_error(&mut self, kind: String, sample: impl FnOnce() -> String) {
        *self.errors.entry(kind).or_insert(0) += 1;
        if self.error_sample.is_none() {
            self.error_sample = Some(sample());
        }
    }

    /// Adds another record (another connection or another round) to this one.
    pub fn merge(&mut self, other: PhaseResult) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        if self.error_sample.is_none() {
            self.error_sample = other.error_sample;
        }
        self.reconnects += other.reconnects;
        self.seconds += other.seconds;
        self.server_cpu_secs += other.server_cpu_secs;
        self.client_cpu_secs += other.client_cpu_secs;
    }
}

/// Runs one phase against `target` and merges the per-connection records.
/// `server_pid` is sampled for CPU time at the start and end of the
/// measured window.
pub async fn run_phase(
    addr: SocketAddr,
    target: &Target,
    cfg: PhaseConfig,
    server_pid: u32,
) -> Result<PhaseResult> {
    let prepared = Arc::new(Prepared::new(addr, target)?);
    let start = Instant::now();
    let measure_start = start + cfg.warmup;
    let end = measure_start + cfg.measure;

    let mut handles = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        let prepared = Arc::clone(&prepared);
        handles.push(tokio::spawn(worker(addr, prepared, measure_start, end)));
    }
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_start.into()).await;
        let before = (cpu_secs("self"), cpu_secs(&server_pid.to_string()));
        tokio::time::sleep_until(end.into()).await;
        let after = (cpu_secs("self"), cpu_secs(&server_pid.to_string()));
        (after.0 - before.0, after.1 - before.1)
    });
    let mut total = PhaseResult::default();
    for h in handles {
        total.merge(h.await.context("load task panicked")?);
    }
    // Workers carry no duration; the phase's measured window is the figure.
    total.seconds = cfg.measure.as_secs_f64();
    let (client_cpu, server_cpu) = cpu.await.context("CPU sampler panicked")?;
    total.client_cpu_secs = client_cpu;
    total.server_cpu_secs = server_cpu;
    Ok(total)
}

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of `/proc/<which>/stat` (`which` is a pid or
/// `self`); NaN when unreadable.
pub fn cpu_secs(which: &str) -> f64 {
    let ticks = clock_ticks();
    std::fs::read_to_string(format!("/proc/{which}/stat"))
        .ok()
        .and_then(|text| parse_stat_cpu_ticks(&text))
        .map(|t| t as f64 / ticks)
        .unwrap_or(f64::NAN)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

async fn worker(
    addr: SocketAddr,
    prepared: Arc<Prepared>,
    measure_start: Instant,
    end: Instant,
) -> PhaseResult {
    let mut out = PhaseResult {
        latencies_us: Vec::with_capacity(64 * 1024),
        ..PhaseResult::default()
    };
    let mut conn: Option<SendRequest<Empty<Bytes>>> = None;
    let mut opened_once = false;

    while Instant::now() < end {
        let sender = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => {
                    if opened_once {
                        out.reconnects += 1;
                    }
                    opened_once = true;
                    conn.insert(s)
                }
                Err(e) => {
                    if Instant::now() >= measure_start {
                        out.record_error("connect".into(), || format!("{e:#}"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if sender.ready().await.is_err() {
            // The server closed the idle connection; open another one.
            conn = None;
            continue;
        }
        let req = prepared.request();
        let t0 = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        let elapsed = t0.elapsed();
        let recorded = t0 >= measure_start;
        match result {
            Ok(Ok((status, body))) => {
                if !recorded {
                    continue;
                }
                if status == StatusCode::OK {
                    let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
                    out.latencies_us.push(us);
                } else {
                    out.record_error(format!("HTTP {}", status.as_u16()), || {
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&body))
                    });
                }
            }
            Ok(Err(e)) => {
                conn = None;
                if recorded {
                    out.record_error("transport".into(), || format!("{e}"));
                }
            }
            Err(_) => {
                conn = None;
                if recorded {
                    out.record_error("timeout".into(), || {
                        format!("no response within {}s", REQUEST_TIMEOUT.as_secs())
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_cpu_fields() {
        let line = "4242 (advps (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 567 0 0 20 0 9 0 12345 123456789 2300 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(line), Some(1234 + 567));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert!(cpu_secs("self").is_finite());
    }
}
