//! The response envelope of the reference and the per-request context that
//! fills it (request id, time).
//!
//! Success: `{status: "success", message, data, timestamp}`; error:
//! `{status: "error", message, errors, timestamp}`. `data` carries `mode` and
//! `requestId`, and the request id is also sent as `X-Request-Id`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use advps_domain::{time, Mode};

use crate::ApiError;

/// Made by the request-id middleware for every request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// When the request arrived, Unix milliseconds.
    pub received_ms: i64,
}

impl RequestContext {
    pub fn new() -> RequestContext {
        let received_ms = time::now_millis();
        RequestContext {
            request_id: advps_domain::ids::request_id(received_ms),
            received_ms,
        }
    }
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| ApiError::internal("request context missing"))
    }
}

/// A success response under construction.
pub struct Success {
    message: String,
    data: Map<String, Value>,
    success_flag: bool,
}

impl Success {
    /// `data` must be a JSON object; `mode` and `requestId` are appended.
    pub fn new(
        message: impl Into<String>,
        data: Value,
        mode: Mode,
        ctx: &RequestContext,
    ) -> Success {
        let mut data = match data {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        data.insert("mode".into(), Value::from(mode.as_str()));
        data.insert("requestId".into(), Value::from(ctx.request_id.as_str()));
        Success {
            message: message.into(),
            data,
            success_flag: false,
        }
    }

    /// A success without an API mode (unauthenticated endpoints).
    pub fn plain(message: impl Into<String>, data: Value) -> Success {
        Success {
            message: message.into(),
            data: match data {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            success_flag: false,
        }
    }

    /// Adds `apiMode` beside `mode` and the top-level `success: true` that the
    /// reference's rebuild example shows.
    pub fn with_rebuild_shape(mut self) -> Success {
        if let Some(mode) = self.data.get("mode").cloned() {
            self.data.insert("apiMode".into(), mode);
        }
        self.success_flag = true;
        self
    }
}

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("status".into(), Value::from("success"));
        if self.success_flag {
            body.insert("success".into(), Value::Bool(true));
        }
        body.insert("message".into(), Value::from(self.message));
        body.insert("data".into(), Value::Object(self.data));
        body.insert(
            "timestamp".into(),
            Value::from(time::format_timestamp(chrono::Utc::now())),
        );
        json_response(StatusCode::OK, &Value::Object(body))
    }
}

/// The error envelope.
pub fn error_body(message: &str, errors: Option<Value>) -> Value {
    serde_json::json!({
        "status": "error",
        "message": message,
        "errors": errors.unwrap_or(Value::Null),
        "timestamp": time::format_timestamp(chrono::Utc::now()),
    })
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
