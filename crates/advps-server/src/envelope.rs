//! The response envelope of the reference and the per-request context that
//! fills it (request id, time).
//!
//! Success: `{status: "success", message, data, timestamp}`; error:
//! `{status: "error", message, errors, timestamp}`. `data` carries `mode` and
//! `requestId`, and the request id is also sent as `X-Request-Id`.
//!
//! The typed shapes here ([`Data`], [`ApiResponse`], [`ErrorEnvelope`]) are
//! what the OpenAPI document is generated from; [`Success`] serialises a
//! handler's typed `data` through [`Data`], so the document and the wire
//! cannot disagree. A success can also carry an entity tag, computed over
//! `data` without the request id, and answer `304 Not Modified` to a
//! matching `If-None-Match`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

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

/// The request's `If-None-Match` (all its values, comma-joined), for the
/// handlers that answer conditionally. Taken alone so that those handlers
/// do not copy every header of the request.
#[derive(Debug, Clone, Default)]
pub struct IfNoneMatch(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts
            .headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let Some(first) = values.next() else {
            return Ok(IfNoneMatch(None));
        };
        let mut joined = first.to_string();
        for more in values {
            joined.push(',');
            joined.push_str(more);
        }
        Ok(IfNoneMatch((!joined.is_empty()).then_some(joined)))
    }
}

/// The API mode of the calling key: `test` for `sk_test_`, `live` for `sk_live_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiMode {
    Test,
    Live,
}

impl From<Mode> for ApiMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Test => ApiMode::Test,
            Mode::Live => ApiMode::Live,
        }
    }
}

/// `data` of an authenticated success: the endpoint's own fields, then the
/// caller's `mode` and the `requestId` (also sent as `X-Request-Id`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Data<T> {
    #[serde(flatten)]
    pub fields: T,
    pub mode: ApiMode,
    /// `req_<epoch ms>_<9 lowercase alphanumerics>`, unique per request.
    #[schema(example = "req_1706611200000_abc123def")]
    pub request_id: String,
}

/// The literal `"success"`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuccessWord {
    Success,
}

/// The literal `"error"`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorWord {
    Error,
}

/// The success envelope of an authenticated endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiResponse<T> {
    pub status: SuccessWord,
    /// `true` on rebuild answers only, as the reference's rebuild example shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub success: Option<bool>,
    pub message: String,
    pub data: Data<T>,
    /// RFC 3339 UTC with milliseconds.
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub timestamp: String,
}

/// The success envelope of an endpoint without a key (no mode, no request id in `data`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlainResponse<T> {
    pub status: SuccessWord,
    pub message: String,
    pub data: T,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub timestamp: String,
}

/// Every error, whatever its status: `errors` is `null` or an object of details.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub status: ErrorWord,
    #[schema(example = "Service not found or not accessible")]
    pub message: String,
    #[schema(value_type = Option<Object>)]
    pub errors: Option<Value>,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub timestamp: String,
}

/// A weak entity tag: a digest of the JSON of what identifies a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag(String);

impl EntityTag {
    /// The tag of `basis`: the answer's data, or the part of it that says
    /// whether the state changed (without values that move on their own,
    /// like uptime). Serialised straight into the hash.
    pub fn of(basis: &impl Serialize) -> EntityTag {
        let mut hasher = HashWriter(Sha256::new());
        // Neither hashing nor serialising these types can fail.
        let _ = serde_json::to_writer(&mut hasher, basis);
        let digest = hasher.0.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Weak: the envelope around `data` (timestamp, request id) differs
        // on every answer, so two answers are equivalent, never identical.
        let mut tag = String::with_capacity(28);
        tag.push_str("W/\"");
        for b in &digest[..12] {
            tag.push(char::from(HEX[usize::from(b >> 4)]));
            tag.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        tag.push('"');
        EntityTag(tag)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Feeds serialised JSON into a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a success takes part in conditional requests.
struct Conditional {
    /// The client's `If-None-Match`, if any.
    if_none_match: Option<String>,
    tag: EntityTag,
}

/// A success response under construction. `data` is serialised at once,
/// from the handler's typed value, and written into the envelope as is.
pub struct Success {
    message: String,
    /// The JSON object of `data`.
    data: Vec<u8>,
    success_flag: bool,
    conditional: Option<Conditional>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Success {
    /// `data` must serialise to a JSON object; `mode` and `requestId` are appended.
    pub fn new<T: Serialize>(
        message: impl Into<String>,
        data: T,
        mode: Mode,
        ctx: &RequestContext,
    ) -> Success {
        Success::from_data(
            message,
            &Data {
                fields: data,
                mode: mode.into(),
                request_id: ctx.request_id.clone(),
            },
        )
    }

    /// A success without an API mode (unauthenticated endpoints).
    pub fn plain<T: Serialize>(message: impl Into<String>, data: T) -> Success {
        Success::from_data(message, &data)
    }

    fn from_data(message: impl Into<String>, data: &impl Serialize) -> Success {
        let mut bytes = Vec::with_capacity(512);
        if serde_json::to_writer(&mut bytes, data).is_err() || bytes.first() != Some(&b'{') {
            // Handlers' data types are objects of plain values; should one
            // ever fail, the envelope stays well-formed.
            bytes = b"{}".to_vec();
        }
        Success {
            message: message.into(),
            data: bytes,
            success_flag: false,
            conditional: None,
            headers: Vec::new(),
        }
    }

    /// Adds the top-level `success: true` that the reference's rebuild
    /// example shows (the handler's data carries `apiMode`).
    pub fn with_rebuild_shape(mut self) -> Success {
        self.success_flag = true;
        self
    }

    /// Sends `tag` as the `ETag` and answers `304 Not Modified` when the
    /// request's `If-None-Match` matches it.
    pub fn with_etag(mut self, if_none_match: IfNoneMatch, tag: EntityTag) -> Success {
        self.conditional = Some(Conditional {
            if_none_match: if_none_match.0,
            tag,
        });
        self
    }

    /// Adds a response header (sent on 200 and on 304).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Success {
        self.headers.push((name, value));
        self
    }

    /// The success envelope with `data` written in place: the same members,
    /// in the same order, as [`ApiResponse`].
    fn body(&self) -> Vec<u8> {
        let timestamp = time::format_timestamp(chrono::Utc::now());
        let mut out = Vec::with_capacity(self.data.len() + self.message.len() + 96);
        out.extend_from_slice(b"{\"status\":\"success\",");
        if self.success_flag {
            out.extend_from_slice(b"\"success\":true,");
        }
        out.extend_from_slice(b"\"message\":");
        // Strings are escaped by the JSON writer, which cannot fail on them.
        let _ = serde_json::to_writer(&mut out, &self.message);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b",\"timestamp\":");
        let _ = serde_json::to_writer(&mut out, &timestamp);
        out.push(b'}');
        out
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, as
/// RFC 9110 asks for this header; `*` matches any current representation).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let wanted = opaque(etag);
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || opaque(candidate) == wanted)
}

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        let fresh = self.conditional.as_ref().is_some_and(|c| {
            c.if_none_match
                .as_deref()
                .is_some_and(|inm| etag_matches(inm, c.tag.as_str()))
        });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = (StatusCode::OK, self.body()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        };
        let headers = response.headers_mut();
        if let Some(conditional) = self.conditional {
            if let Ok(value) = HeaderValue::from_str(conditional.tag.as_str()) {
                headers.insert(header::ETAG, value);
            }
            // Tell caches the answer depends on who asks.
            headers.insert(header::VARY, HeaderValue::from_static("x-api-key"));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
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

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    // Most answers are a few hundred bytes: one allocation, no regrowth.
    let mut bytes = Vec::with_capacity(1024);
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes = b"{}".to_vec();
    }
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_in_lists() {
        let tag = "W/\"abc\"";
        assert!(etag_matches("W/\"abc\"", tag));
        assert!(etag_matches("\"abc\"", tag));
        assert!(etag_matches("\"x\", W/\"abc\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("\"abd\"", tag));
    }

    #[test]
    fn tags_follow_the_basis_not_the_request() {
        let a = EntityTag::of(&serde_json::json!({"s": 1, "state": "RUNNING"}));
        let b = EntityTag::of(&serde_json::json!({"s": 1, "state": "RUNNING"}));
        let c = EntityTag::of(&serde_json::json!({"s": 1, "state": "STOPPED"}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.as_str().starts_with("W/\"") && a.as_str().ends_with('"'));
        assert_eq!(a.as_str().len(), 2 + 1 + 24 + 1);
    }

    #[test]
    fn the_body_is_the_envelope_with_data_in_place() {
        let ctx = RequestContext::new();
        let success = Success::new(
            "Done \"now\"",
            serde_json::json!({"taskId": "t1"}),
            Mode::Live,
            &ctx,
        )
        .with_rebuild_shape();
        let body: Value = serde_json::from_slice(&success.body()).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["status", "success", "message", "data", "timestamp"]);
        assert_eq!(body["status"], "success");
        assert_eq!(body["success"], true);
        assert_eq!(body["message"], "Done \"now\"");
        assert_eq!(body["data"]["taskId"], "t1");
        assert_eq!(body["data"]["mode"], "live");
        assert_eq!(body["data"]["requestId"], ctx.request_id.as_str());
        let plain: Value =
            serde_json::from_slice(&Success::plain("ok", serde_json::json!({"a": 1})).body())
                .unwrap();
        assert!(plain.get("success").is_none());
        assert_eq!(plain["data"], serde_json::json!({"a": 1}));
    }
}
