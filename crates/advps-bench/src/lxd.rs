//! A small client for LXD's REST API on its unix socket, used by the engine
//! overhead benchmark (`advps-bench lxd`) to create, drive and delete its own
//! containers directly, without going through advps.
//!
//! Every exchange is one HTTP/1.1 request on a fresh connection (hyper's
//! low-level client). Async answers are followed through
//! `/1.0/operations/<id>/wait` until the operation ends. The client refuses
//! to touch any instance whose name does not start with
//! [`BENCH_PREFIX`], so a mistake here can never reach a real container.
//!
//! [`http_exchange`] is shared with the advps side of the benchmark, which
//! sends its API calls over TCP the same way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

/// Every container the benchmark makes is named with this prefix (the
/// `advps-test-` part is what the test suites' clean-up recognises too).
pub const BENCH_PREFIX: &str = "advps-test-bench-";

/// Upper bound for one HTTP exchange; LXD operations are waited for in
/// slices well below it. The advps API answers a graceful stop or reboot
/// of an emulated VM only when the guest has acted on it, which on a busy
/// host can take minutes.
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// Seconds LXD holds one `/wait` request before answering "still running".
const WAIT_SLICE_SECS: u64 = 30;

/// One request on a fresh HTTP/1.1 connection over `io`; returns the status
/// and the whole body.
pub async fn http_exchange<I>(
    io: I,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<(StatusCode, Bytes)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let what = format!("{method} {path}");
    let (mut sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .with_context(|| format!("{what}: HTTP/1.1 handshake"))?;
    tokio::spawn(async move {
        // Ends when the answer has been read and the sender dropped.
        let _ = conn.await;
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let payload = match body {
        Some(v) => {
            builder = builder.header(CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(v)?)
        }
        None => Bytes::new(),
    };
    let request = builder.body(Full::new(payload))?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, bytes))
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {IO_TIMEOUT:?}"))?
        .with_context(|| what.clone())
}

/// Fails unless `name` is one of the benchmark's own containers.
pub fn ensure_bench_name(name: &str) -> Result<()> {
    if name.starts_with(BENCH_PREFIX) && name.len() > BENCH_PREFIX.len() {
        Ok(())
    } else {
        bail!("refusing to touch instance {name:?}: not a benchmark container")
    }
}

/// The LXD server behind a unix socket.
#[derive(Clone)]
pub struct Lxd {
    socket: PathBuf,
}

impl Lxd {
    pub fn new(socket: &Path) -> Lxd {
        Lxd {
            socket: socket.to_path_buf(),
        }
    }

    /// One raw exchange; returns the HTTP status and the JSON body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        let (status, bytes) = http_exchange(stream, method, "lxd", path, &[], body).await?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// A request whose answer may be an async operation: waits for the
    /// operation (up to `wait`) and returns the `metadata` of the sync
    /// answer or of the finished operation. LXD errors become `Err`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        wait: Duration,
    ) -> Result<Value> {
        let what = format!("{method} {path}");
        let (status, value) = self.raw(method, path, body).await?;
        match value.get("type").and_then(Value::as_str) {
            Some("sync") => Ok(value.get("metadata").cloned().unwrap_or(Value::Null)),
            Some("async") => {
                let op = value
                    .get("operation")
                    .and_then(Value::as_str)
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .or_else(|| {
                        value
                            .pointer("/metadata/id")
                            .and_then(Value::as_str)
                            .map(|id| format!("/1.0/operations/{id}"))
                    })
                    .ok_or_else(|| anyhow!("{what}: async answer without an operation"))?;
                self.wait_operation(&op, wait)
                    .await
                    .with_context(|| what.clone())
            }
            _ => bail!(
                "{what} failed ({status}): {}",
                value
                    .get("error")
                    .and_then(Value::as_str)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string())
            ),
        }
    }

    /// Waits for an operation to end; returns its record on success.
    async fn wait_operation(&self, op: &str, wait: Duration) -> Result<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let path = format!("{op}/wait?timeout={WAIT_SLICE_SECS}");
            let (status, value) = self.raw(Method::GET, &path, None).await?;
            let record = value.get("metadata").cloned().unwrap_or(Value::Null);
            match record.get("status").and_then(Value::as_str) {
                Some("Success") => return Ok(record),
                Some("Running" | "Pending" | "Queued") => {}
                _ => bail!(
                    "operation failed ({status}): {}",
                    record
                        .get("err")
                        .and_then(Value::as_str)
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .unwrap_or_else(|| value.to_string())
                ),
            }
            if Instant::now() >= deadline {
                bail!("operation {op} not finished within {wait:?}");
            }
        }
    }

    fn instance_path(name: &str) -> Result<String> {
        ensure_bench_name(name)?;
        Ok(format!("/1.0/instances/{name}"))
    }

    /// The instance's record, or `None` when it does not exist.
    pub async fn instance(&self, name: &str) -> Result<Option<Value>> {
        let path = Self::instance_path(name)?;
        let (status, value) = self.raw(Method::GET, &path, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => Ok(value.get("metadata").cloned()),
            other => bail!("GET {path} answered {other}: {value}"),
        }
    }

    /// `PUT /1.0/instances/NAME/state` with `body`, waiting for the operation.
    pub async fn change_state(&self, name: &str, body: &Value, wait: Duration) -> Result<()> {
        let path = format!("{}/state", Self::instance_path(name)?);
        self.call(Method::PUT, &path, Some(body), wait)
            .await
            .map(|_| ())
    }

    /// Creates an instance (`POST /1.0/instances`) and waits until it exists.
    pub async fn create(&self, body: &Value, wait: Duration) -> Result<()> {
        let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
        ensure_bench_name(name)?;
        self.call(Method::POST, "/1.0/instances", Some(body), wait)
            .await
            .map(|_| ())
    }

    /// `DELETE /1.0/instances/NAME` (the instance must be stopped).
    pub async fn delete(&self, name: &str, wait: Duration) -> Result<()> {
        let path = Self::instance_path(name)?;
        self.call(Method::DELETE, &path, None, wait)
            .await
            .map(|_| ())
    }

    /// Runs `command` in the guest without a terminal or recorded output;
    /// returns its exit code. Fails when LXD cannot run it at all (e.g.
    /// the instance is not running).
    pub async fn exec(&self, name: &str, command: &[&str], wait: Duration) -> Result<i64> {
        let path = format!("{}/exec", Self::instance_path(name)?);
        let body = json!({
            "command": command,
            "environment": {},
            "interactive": false,
            "wait-for-websocket": false,
            // Only the exit code is read; recorded output would be left
            // behind as log files on the host.
            "record-output": false,
        });
        let record = self.call(Method::POST, &path, Some(&body), wait).await?;
        Ok(record
            .pointer("/metadata/return")
            .and_then(Value::as_i64)
            .unwrap_or(-1))
    }

    /// Removes a benchmark container whatever state it is in: forced stop,
    /// then delete, retried until it is gone or `within` has passed.
    pub async fn remove(&self, name: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.instance(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(info)) => {
                    let step = if info.get("status").and_then(Value::as_str) == Some("Stopped") {
                        self.delete(name, Duration::from_secs(60)).await
                    } else {
                        let stop = json!({ "action": "stop", "force": true, "timeout": 30 });
                        self.change_state(name, &stop, Duration::from_secs(60))
                            .await
                    };
                    if let Err(e) = step {
                        last = format!("{e:#}");
                    }
                }
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("could not delete {name} within {within:?}: {last}")
    }
}

/// The body that re-creates an instance from `image` with the saved
/// record's configuration, devices and profiles, as an engine without a
/// native rebuild has to. Of LXD's own `volatile.*` keys only the NICs'
/// MAC addresses are kept, so the guest keeps its link identity; the
/// `image.*` keys describe the old image and are left for LXD to fill in.
pub fn recreate_body(saved: &Value, name: &str, image: &str) -> Value {
    let mut config = Map::new();
    if let Some(old) = saved.get("config").and_then(Value::as_object) {
        for (key, value) in old {
            let volatile = key.starts_with("volatile.");
            let keep = if volatile {
                key.ends_with(".hwaddr")
            } else {
                !key.starts_with("image.")
            };
            if keep {
                config.insert(key.clone(), value.clone());
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_benchmark_names_are_touched() {
        assert!(ensure_bench_name("advps-test-bench-0123456789").is_ok());
        assert!(ensure_bench_name("advps-test-bench-").is_err());
        assert!(ensure_bench_name("web1").is_err());
        assert!(ensure_bench_name("advps-test-0123").is_err());
    }

    #[test]
    fn recreate_keeps_user_keys_and_macs_only() {
        let saved = json!({
            "type": "container",
            "config": {
                "limits.memory": "1GiB",
                "image.os": "Debian",
                "volatile.eth0.hwaddr": "00:16:3e:aa:bb:cc",
                "volatile.last_state.power": "RUNNING",
            },
            "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            "profiles": ["default"],
        });
        let body = recreate_body(&saved, "advps-test-bench-x", "advps-debian-13");
        assert_eq!(
            body["config"],
            json!({"limits.memory": "1GiB", "volatile.eth0.hwaddr": "00:16:3e:aa:bb:cc"})
        );
        assert_eq!(body["source"]["alias"], "advps-debian-13");
        assert_eq!(body["devices"]["root"]["pool"], "default");
        assert_eq!(body["description"], "");
    }
}
