//! Server process management for the advps load benchmark: locates the
//! `advps` binary, starts `advps serve` on an ephemeral port with a fresh
//! temporary data directory, reads the test API key and the listening address
//! from its standard output, samples its memory from `/proc/PID/status`, and
//! stops it with SIGTERM at the end.
//!
//! Reproduce with
//! `cargo build --release -p advps-cli -p advps-bench && target/release/advps-bench`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long `advps serve` may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Rate limit for test keys during the run, high enough never to trigger.
pub const RATE_LIMIT_FOR_RUN: &str = "1000000000";

/// Root of the Cargo workspace this crate was built from.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Resolves the server binary: the explicit `--server` path, else
/// `<workspace>/target/release/advps`, else an `advps` next to this binary
/// when that is a `release` directory.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!(
            "server binary {} not found (given with --server); build it with \
             `cargo build --release -p advps-cli`",
            p.display()
        );
    }
    let default = workspace_root().join("target/release/advps");
    if default.is_file() {
        return Ok(default);
    }
    // A release build next to this binary (e.g. under a custom target dir).
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let sibling = dir.join("advps");
        if dir.file_name().is_some_and(|n| n == "release") && sibling.is_file() {
            return Ok(sibling);
        }
    }
    bail!(
        "server binary {} not found; run `cargo build --release -p advps-cli` first \
         (or pass --server PATH)",
        default.display()
    )
}

/// Extracts the `sk_test_…` key from a line of `advps serve` output.
///
/// The key is `sk_test_` followed by a run of ASCII alphanumerics (32 in the
/// contract); anything shorter than 16 characters is not taken for a key.
pub fn parse_key(line: &str) -> Option<String> {
    let start = line.find("sk_test_")?;
    let rest = &line[start + "sk_test_".len()..];
    let body: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    if body.len() < 16 {
        return None;
    }
    Some(format!("sk_test_{body}"))
}

/// Extracts the bound address from a `Listening on http://HOST:PORT` line.
///
/// Tolerant of case, a missing `http://`, a trailing path or punctuation, and
/// an unspecified bind address (mapped to the loopback address).
pub fn parse_listen(line: &str) -> Option<SocketAddr> {
    let lower = line.to_ascii_lowercase();
    let idx = lower.find("listening on")?;
    let rest = line[idx + "listening on".len()..].trim_start();
    let rest = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("HTTP://"))
        .unwrap_or(rest);
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    let token = token.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != ']');
    let token = token.replacen("localhost:", "127.0.0.1:", 1);
    let mut addr: SocketAddr = token.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Some(addr)
}

/// Memory figures of the server process, in KiB as reported by the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// The part of the resident set that is the process's own heap and
    /// stacks (`RssAnon`); the rest is mapped files, mostly the binary.
    pub anon_kib: u64,
}

/// Reads `VmRSS`, `VmHWM` and `RssAnon` from `/proc/PID/status`.
pub fn read_memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{name} missing in {path}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
    })
}

/// A running `advps serve` process and its scratch directory.
pub struct Server {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    pub key: String,
    /// Whether the key had to be created with `advps keys create` because
    /// `serve` did not print one.
    pub key_from_cli: bool,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin serve --listen 127.0.0.1:0 --data-dir <temp>` and waits
    /// for its key and listening lines.
    pub async fn start(bin: &Path) -> Result<Server> {
        Self::start_with_env(bin, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables for the
    /// server (the engine benchmark raises the live-key limits this way).
    pub async fn start_with_env(bin: &Path, env: &[(&str, &str)]) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("advps-bench-")
            .tempdir()
            .context("creating temporary directory")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).context("creating data directory")?;
        let log_path = dir.path().join("server-stderr.log");
        let log = std::fs::File::create(&log_path).context("creating server log file")?;

        let mut command = Command::new(bin);
        // The quota is raised for load runs unless the caller sets one.
        command.env("ADVPS_RATE_LIMIT_TEST", RATE_LIMIT_FOR_RUN);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("ADVPS_LISTEN")
            .env_remove("ADVPS_DATA_DIR")
            .env_remove("ADVPS_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("server exited immediately"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;

        let startup = tokio::time::timeout(STARTUP_TIMEOUT, read_startup(stdout)).await;
        let (key, addr, lines) = match startup {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                let exited = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let how = match exited {
                    Ok(Ok(status)) => format!("server ended with {status}"),
                    _ => {
                        let _ = child.kill().await;
                        "server still running; killed".to_string()
                    }
                };
                let tail = log_tail(&log_path);
                bail!("{e:#}\n({how})\n--- server stderr (tail) ---\n{tail}");
            }
            Err(_) => {
                let tail = log_tail(&log_path);
                let _ = child.kill().await;
                bail!(
                    "server printed no `Listening on http://...` line within {}s\n\
                     --- server stderr (tail) ---\n{tail}",
                    STARTUP_TIMEOUT.as_secs()
                );
            }
        };

        let (key, key_from_cli) = match key {
            Some(k) => (k, false),
            None => {
                eprintln!(
                    "note: `advps serve` printed no sk_test_ key before its listening line; \
                     creating one with `advps keys create --account demo --mode test`"
                );
                (create_key(bin, &data_dir).await?, true)
            }
        };

        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = lines;
            while let Ok(Some(_)) = lines.next_line().await {}
        });

        Ok(Server {
            child,
            pid,
            addr,
            key,
            key_from_cli,
            log_path,
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's data directory, for CLI commands run beside it.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn memory(&self) -> Result<Memory> {
        read_memory(self.pid)
    }

    /// Whether the process is still alive (not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// Sends SIGTERM with the `kill` command, waits for exit (SIGKILL after a
    /// timeout) and removes the temporary directory.
    pub async fn stop(mut self) -> Result<StopOutcome> {
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let mut forced = false;
        let status = match sent {
            Ok(s) if s.success() => {
                match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.child.wait()).await {
                    Ok(r) => Some(r.context("waiting for server")?),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let status = match status {
            Some(s) => s,
            None => {
                forced = true;
                self.child.kill().await.ok();
                self.child.wait().await.context("waiting for server")?
            }
        };
        let dir_path = self.dir.path().to_path_buf();
        self.dir
            .close()
            .with_context(|| format!("removing {}", dir_path.display()))?;
        Ok(StopOutcome { status, forced })
    }
}

/// How the server ended.
pub struct StopOutcome {
    pub status: ExitStatus,
    /// SIGTERM did not stop it in time and SIGKILL was needed.
    pub forced: bool,
}

type Lines = tokio::io::Lines<BufReader<ChildStdout>>;

async fn read_startup(stdout: ChildStdout) -> Result<(Option<String>, SocketAddr, Lines)> {
    let mut lines = BufReader::new(stdout).lines();
    let mut key = None;
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next_line()
            .await
            .context("reading server stdout")?
            .ok_or_else(|| {
                anyhow!(
                    "server closed stdout (exited?) before its listening line; stdout was:\n{}",
                    seen.join("\n")
                )
            })?;
        if key.is_none() {
            key = parse_key(&line);
        }
        if let Some(addr) = parse_listen(&line) {
            return Ok((key, addr, lines));
        }
        seen.push(line);
    }
}

/// Fallback: creates a test key for the `demo` account through the CLI.
async fn create_key(bin: &Path, data_dir: &Path) -> Result<String> {
    let out = Command::new(bin)
        .args(["keys", "create", "--account", "demo", "--mode", "test"])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running `advps keys create`")?;
    if !out.status.success() {
        bail!(
            "`advps keys create` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(parse_key)
        .ok_or_else(|| anyhow!("`advps keys create` printed no sk_test_ key:\n{stdout}"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    lines[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_line() {
        let k = "sk_test_AbCdEfGhIjKlMnOpQrStUvWxYz012345";
        assert_eq!(parse_key(k).as_deref(), Some(k));
        assert_eq!(parse_key(&format!("  key: {k}  ")).as_deref(), Some(k));
        assert_eq!(
            parse_key("Created account \"demo\" with a test key (shown only this once):"),
            None
        );
        assert_eq!(parse_key("sk_test_short"), None);
    }

    #[test]
    fn listen_line() {
        let want: SocketAddr = "127.0.0.1:43125".parse().unwrap();
        assert_eq!(
            parse_listen("Listening on http://127.0.0.1:43125"),
            Some(want)
        );
        assert_eq!(
            parse_listen("2024 INFO advps: listening on http://127.0.0.1:43125/ (pid 3)"),
            Some(want)
        );
        assert_eq!(parse_listen("Listening on 127.0.0.1:43125."), Some(want));
        assert_eq!(
            parse_listen("Listening on http://0.0.0.0:43125"),
            Some(want)
        );
        assert_eq!(
            parse_listen("Listening on http://localhost:43125"),
            Some(want)
        );
        assert_eq!(parse_listen("Created account \"demo\""), None);
    }
}
