//! What the engine-overhead benchmarks (`advps-bench lxd`, `advps-bench
//! libvirt`) share: the run under a clean-up guard that removes the
//! benchmark's instances after an error, a panic or Ctrl-C; the advps CLI
//! runner for the operator setup; the customer's view of the API (power
//! calls, a rebuild polled to its end); the samples, medians and the
//! API/direct table checked against the 1.2 x target.
//!
//! Each mode's own file says how to reproduce its figures (`overhead.rs`
//! for LXD, `vm_overhead.rs` for libvirt); the unit tests here run with
//! `cargo test -p advps-bench`.

use std::future::Future;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::lxd::http_exchange;
use crate::server::Server;

/// Largest API/direct ratio that meets the target.
pub const MAX_RATIO: f64 = 1.2;
/// How often the task status is polled during an API rebuild.
pub const TASK_POLL: Duration = Duration::from_millis(250);

/// The names of the instances a run has made (recorded before each is
/// made, so a half-made one is removed too).
pub type Names = Arc<Mutex<Vec<String>>>;

/// Records `name` for removal at the end of the run.
pub fn remember(names: &Names, name: &str) {
    names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.to_string());
}

/// Removes the run's instances when dropped. It owns the runtime, so it is
/// dropped outside of it and can still drive the engine after an error, a
/// panic or Ctrl-C ended the measured part.
struct Guard<C, F>
where
    C: Fn(String) -> F,
    F: Future<Output = ()>,
{
    runtime: Option<tokio::runtime::Runtime>,
    names: Names,
    remove: C,
}

impl<C, F> Drop for Guard<C, F>
where
    C: Fn(String) -> F,
    F: Future<Output = ()>,
{
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        runtime.block_on(async {
            for name in names {
                (self.remove)(name).await;
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Runs `run` on a two-thread runtime until it ends or Ctrl-C, then calls
/// `remove` for every name it recorded, whatever happened.
pub fn run_guarded<T, R, RF, C, CF>(run: R, remove: C) -> Result<T>
where
    R: FnOnce(Names) -> RF,
    RF: Future<Output = Result<T>>,
    C: Fn(String) -> CF,
    CF: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    let guard = Guard {
        runtime: Some(runtime),
        names: Names::default(),
        remove,
    };
    let names = Arc::clone(&guard.names);
    let result = guard
        .runtime
        .as_ref()
        .map(|rt| {
            rt.block_on(async {
                tokio::select! {
                    r = run(names) => r,
                    _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
                }
            })
        })
        .unwrap_or_else(|| Err(anyhow!("no runtime")));
    drop(guard);
    result
}

/// The process's exit status for a finished run: 2 on an error, 1 when
/// `--strict` and a target was missed.
pub fn exit_code(result: Result<bool>, strict: bool) -> ExitCode {
    match result {
        Ok(all_pass) if strict && !all_pass => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Stops the server (before the instances go, so it never acts on a
/// vanishing one) and says how it ended; after a failed measurement it
/// prints the tail of the server's log first.
pub async fn stop_server(srv: Server, failed: bool) -> String {
    let tail = if failed {
        srv.log_tail()
    } else {
        String::new()
    };
    let exit = match srv.stop().await {
        Ok(o) if o.forced => format!("did not stop on SIGTERM, killed ({})", o.status),
        Ok(o) => format!("{} after SIGTERM", o.status),
        Err(e) => format!("stop failed: {e:#}"),
    };
    if !tail.is_empty() {
        eprintln!("--- server stderr (tail) ---\n{tail}");
    }
    exit
}

/// A short random suffix for instance names (time and pid, mixed).
pub fn random_suffix(salt: u64) -> String {
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

/// Runs the advps CLI on the benchmark's data directory; returns stdout.
pub async fn cli(bin: &Path, data_dir: &Path, args: &[&str]) -> Result<String> {
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

pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// Runs the CLI steps in order; the last one is `services create`, whose
/// last line is the service id. Then makes a live key for `account`.
/// Returns (service id, key).
pub async fn bind_service(
    bin: &Path,
    data_dir: &Path,
    steps: &[&[&str]],
    account: &str,
) -> Result<(String, String)> {
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
            &["keys", "create", "--account", account, "--mode", "live"],
        )
        .await?,
    );
    if !key.starts_with("sk_live_") {
        bail!("`advps keys create` printed no live key");
    }
    Ok((service, key))
}

/// The advps server's API as one customer with a live key sees it.
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub key: String,
    pub service: String,
}

impl Api {
    /// One call; fails unless the envelope says success. Returns `data`.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
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

    /// `POST /api/v1/services/ID/<action>`, timed to the HTTP answer;
    /// gives its `data` too (`powerMode` says whether it had to force).
    pub async fn power(&self, action: &str, body: Option<&Value>) -> Result<(Duration, Value)> {
        let path = format!("/api/v1/services/{}/{action}", self.service);
        let t = Instant::now();
        let data = self.call(Method::POST, &path, body).await?;
        Ok((t.elapsed(), data))
    }

    /// Rebuilds to `os`; returns the wall time to the first poll that saw
    /// `COMPLETED` and the task's own duration in ms, when it reports one.
    pub async fn rebuild(&self, os: &str, within: Duration) -> Result<(Duration, Option<f64>)> {
        let path = format!("/api/v1/services/{}/rebuild", self.service);
        let t = Instant::now();
        let data = self
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
            let data = self.call(Method::GET, &status_path, None).await?;
            match data.get("status").and_then(Value::as_str) {
                Some("COMPLETED") => return Ok((t.elapsed(), task_duration_ms(&data))),
                Some("FAILED") => bail!("rebuild task {task} failed: {data}"),
                _ if t.elapsed() > within => bail!("rebuild task {task} still running"),
                _ => {}
            }
        }
    }
}

/// `finishedAt - createdAt` of a task's status, in ms.
fn task_duration_ms(data: &Value) -> Option<f64> {
    let stamp = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .and_then(parse_utc_millis)
    };
    Some((stamp("finishedAt")? - stamp("createdAt")?) as f64)
}

/// Milliseconds since the epoch of a `YYYY-MM-DDTHH:MM:SS[.fff]Z` stamp.
pub fn parse_utc_millis(stamp: &str) -> Option<i64> {
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

/// Which side goes first in iteration `i` (`true` = the API): alternating
/// spreads any drift in the machine's load (other builds) over both sides.
pub fn order(i: u32) -> [bool; 2] {
    if i % 2 == 1 {
        [true, false]
    } else {
        [false, true]
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Timings of one operation on one side, in milliseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Samples {
    pub ms: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, elapsed: Duration) {
        self.ms.push(ms(elapsed));
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

/// One side of one operation: `.0` direct, `.1` through the API.
pub type Pair = (Samples, Samples);

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
    pub fn new(operation: &str, (direct, api): &Pair) -> OperationReport {
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
            // NaN (no samples) is a miss, never a pass.
            pass: ratio_median <= MAX_RATIO,
        }
    }
}

/// The table: one row per operation, medians, means, difference, ratios.
pub fn table(operations: &[OperationReport]) -> String {
    let mut out = format!(
        "{:<9} {:>13} {:>11} {:>13} {:>11} {:>10} {:>6} {:>7}  target\n",
        "operation", "direct median", "mean", "API median", "mean", "API-direct", "ratio", "(mean)"
    );
    for o in operations {
        out.push_str(&format!(
            "{:<9} {:>10.0} ms {:>8.0} ms {:>10.0} ms {:>8.0} ms {:>+7.0} ms {:>6.2} {:>7.2}  {} (<= {MAX_RATIO})\n",
            o.operation,
            o.direct_median_ms,
            o.direct_mean_ms,
            o.api_median_ms,
            o.api_mean_ms,
            o.overhead_median_ms,
            o.ratio_median,
            o.ratio_mean,
            if o.pass { "PASS" } else { "FAIL" }
        ));
    }
    out
}

/// Writes the figures as pretty JSON.
pub fn write_json<T: Serialize>(report: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("figures written to {}", path.display());
    Ok(())
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
    fn task_durations() {
        let data = json!({
            "createdAt": "2026-12-08T01:00:00.250Z",
            "finishedAt": "2026-12-08T01:00:42Z",
        });
        assert_eq!(task_duration_ms(&data), Some(41_750.0));
        assert_eq!(task_duration_ms(&json!({"createdAt": "x"})), None);
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

    #[test]
    fn sides_alternate() {
        assert_eq!(order(0), [false, true]);
        assert_eq!(order(1), [true, false]);
        assert_eq!(order(2), [false, true]);
    }

    fn samples(ms: &[f64]) -> Samples {
        Samples { ms: ms.to_vec() }
    }

    #[test]
    fn ratios_against_the_target() {
        let met = OperationReport::new("stop", &(samples(&[1000.0, 3000.0]), samples(&[2400.0])));
        assert_eq!(met.direct_median_ms, 2000.0);
        assert!((met.ratio_median - 1.2).abs() < 1e-12 && met.pass);
        assert_eq!(met.overhead_median_ms, 400.0);
        let missed = OperationReport::new("start", &(samples(&[1000.0]), samples(&[1201.0])));
        assert!(!missed.pass);
        let empty = OperationReport::new("reboot", &(samples(&[]), samples(&[5.0])));
        assert!(!empty.pass, "no direct sample cannot meet the target");
        let text = table(&[met, missed]);
        assert!(text.contains("PASS") && text.contains("FAIL"), "{text}");
        assert_eq!(text.lines().count(), 3);
    }
}
