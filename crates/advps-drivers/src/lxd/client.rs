//! A small client for the LXD/Incus REST API over its unix socket.
//!
//! Every call has a deadline. Responses come in LXD's three shapes (`sync`,
//! `async` with an operation, `error`); [`LxdClient::call`] waits for async
//! operations through `/1.0/operations/<id>/wait` and turns failures into
//! [`DriverError`]s, so callers deal with results only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::{DriverError, DriverResult};

/// Default deadline of a single HTTP exchange with the engine.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct LxdClient {
    socket: PathBuf,
    request_timeout: Duration,
}

/// A body to send: JSON, or raw bytes with extra headers (file uploads).
pub enum Body<'a> {
    None,
    Json(&'a Value),
    Raw {
        bytes: Bytes,
        headers: &'a [(&'a str, String)],
    },
}

impl LxdClient {
    pub fn new(socket: impl AsRef<Path>) -> LxdClient {
        LxdClient {
            socket: socket.as_ref().to_path_buf(),
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> LxdClient {
        self.request_timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One HTTP exchange; returns the status and the parsed JSON body.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> DriverResult<(u16, Value)> {
        let what = format!("{method} {path}");
        tokio::time::timeout(
            self.request_timeout,
            self.exchange_inner(method, path, body),
        )
        .await
        .map_err(|_| DriverError::Timeout(what))?
    }

    async fn exchange_inner(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> DriverResult<(u16, Value)> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| DriverError::Unreachable(format!("{}: {e}", self.socket.display())))?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| DriverError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "lxd");
        let payload = match body {
            Body::None => Bytes::new(),
            Body::Json(value) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(
                    serde_json::to_vec(value).map_err(|e| DriverError::Engine(e.to_string()))?,
                )
            }
            Body::Raw { bytes, headers } => {
                for (name, value) in headers {
                    builder = builder.header(*name, value.as_str());
                }
                bytes
            }
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| DriverError::Engine(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| DriverError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| DriverError::Unreachable(e.to_string()))?
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// Calls the API and returns the `metadata` of a sync answer, or of the
    /// finished operation for an async one (waiting up to `op_wait`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        op_wait: Duration,
    ) -> DriverResult<Value> {
        let (status, value) = self.exchange(method, path, body).await?;
        match value.get("type").and_then(Value::as_str) {
            Some("sync") => Ok(value.get("metadata").cloned().unwrap_or(Value::Null)),
            Some("async") => {
                let id = value
                    .pointer("/metadata/id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        DriverError::Engine("async answer without an operation id".into())
                    })?
                    .to_string();
                self.wait_operation(&id, op_wait).await
            }
            _ => Err(error_from(status, &value)),
        }
    }

    /// Waits for an operation and returns its metadata once it succeeded.
    pub async fn wait_operation(&self, id: &str, wait: Duration) -> DriverResult<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout(format!("operation {id}")));
            }
            // Long-poll in slices shorter than the request deadline.
            let slice = left
                .min(self.request_timeout.saturating_sub(Duration::from_secs(2)))
                .max(Duration::from_secs(1));
            let path = format!(
                "/1.0/operations/{id}/wait?timeout={}",
                slice.as_secs().max(1)
            );
            let (status, value) = self.exchange(Method::GET, &path, Body::None).await?;
            if value.get("type").and_then(Value::as_str) == Some("error") {
                return Err(error_from(status, &value));
            }
            let op = value.get("metadata").cloned().unwrap_or(Value::Null);
            match op.get("status").and_then(Value::as_str) {
                Some("Success") => return Ok(op),
                Some("Running") | Some("Pending") | Some("Queued") => continue,
                _ => {
                    let err = op
                        .get("err")
                        .and_then(Value::as_str)
                        .unwrap_or("operation failed");
                    return Err(classify(0, err));
                }
            }
        }
    }
}

/// The driver error for an LXD error answer.
pub fn error_from(status: u16, value: &Value) -> DriverError {
    let code = value
        .get("error_code")
        .and_then(Value::as_u64)
        .map(|c| c as u16)
        .unwrap_or(status);
    let message = value
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string());
    classify(code, &message)
}

/// Maps LXD's error text to the driver's vocabulary.
pub fn classify(code: u16, message: &str) -> DriverError {
    let lower = message.to_ascii_lowercase();
    if code == 404 || lower.contains("not found") {
        DriverError::NotFound
    } else if lower.contains("already running") {
        DriverError::AlreadyRunning
    } else if lower.contains("already stopped")
        || lower.contains("not running")
        || lower.contains("isn't running")
    {
        DriverError::NotRunning
    } else {
        DriverError::Engine(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lxd_errors_map_to_driver_errors() {
        assert_eq!(
            error_from(
                404,
                &json!({"type":"error","error_code":404,"error":"Instance not found"})
            ),
            DriverError::NotFound
        );
        assert_eq!(
            classify(400, "The instance is already running"),
            DriverError::AlreadyRunning
        );
        assert_eq!(
            classify(400, "The instance is already stopped"),
            DriverError::NotRunning
        );
        assert_eq!(
            classify(400, "The instance isn't running"),
            DriverError::NotRunning
        );
        assert_eq!(
            classify(500, "Failed creating instance"),
            DriverError::Engine("Failed creating instance".into())
        );
    }
}
