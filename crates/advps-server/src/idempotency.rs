//! `Idempotency-Key` on POST requests (IETF httpapi draft semantics).
//!
//! The first response to a key (per API key) is stored for 24 hours, with a
//! fingerprint of the request (method, path and body). A repeat with the
//! same request gets the stored status and body back, marked
//! `Idempotent-Replayed: true`, and does nothing again: a retried rebuild
//! starts one task, a retried purchase charges once. The same key with a
//! different request is 422; a repeat while the first still runs is 409.
//! Server errors are not stored, so the client can retry them for real:
//! the key's record is released, and should the storage refuse even that
//! (a full disk), this process remembers the key and the next request with
//! it takes the record over instead of being told it is still in flight.
//! The stored response is written by the audit log, in one commit with the
//! request's audit entry. Stored bodies are encrypted like every other secret at rest: a replayed
//! generate-password answer carries a password.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use advps_domain::time;
use advps_store::{IdempotencyBegin, IdempotentResponse};

use crate::caller::Caller;
use crate::{ApiError, AppState};

/// How long a response is kept for replay.
pub const TTL_MS: i64 = 24 * 3_600_000;
/// A request still marked in flight after this long is taken to have died
/// with its server.
pub const STALE_MS: i64 = 5 * 60_000;
/// Stored responses larger than this are not kept (none of the API's are).
const MAX_STORED_BODY: usize = 1024 * 1024;

/// Put on a request by the audit log, which then records the response of
/// an idempotent request with its audit entry; without it, this layer
/// records the response itself.
#[derive(Debug, Clone, Copy)]
pub struct AuditFinishes;

/// Keys whose request ended in a server error and whose in-flight record
/// could not be released, with when: the next request with the key takes
/// the record over. In this process only: another instance, or this one
/// restarted, takes it over once it is stale.
static ABANDONED: LazyLock<Mutex<HashMap<(String, String), i64>>> = LazyLock::new(Default::default);

/// At most this many abandoned keys are remembered (a long outage of the
/// storage must not grow the map without end); the oldest go first.
const MAX_ABANDONED: usize = 10_000;

fn remember_abandoned(key_id: &str, idem_key: &str, now: i64) {
    let mut abandoned = ABANDONED.lock().unwrap_or_else(|e| e.into_inner());
    // Past the stale time any request takes the record over anyway.
    abandoned.retain(|_, at| now - *at < STALE_MS);
    if abandoned.len() >= MAX_ABANDONED {
        if let Some(oldest) = abandoned
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(k, _)| k.clone())
        {
            abandoned.remove(&oldest);
        }
    }
    abandoned.insert((key_id.to_string(), idem_key.to_string()), now);
}

/// Whether the key was abandoned here; forgets it, so that of two repeats
/// only one takes the record over.
fn take_abandoned(key_id: &str, idem_key: &str) -> bool {
    let mut abandoned = ABANDONED.lock().unwrap_or_else(|e| e.into_inner());
    abandoned
        .remove(&(key_id.to_string(), idem_key.to_string()))
        .is_some()
}

/// Releases the key of a request that did nothing worth replaying; if the
/// storage refuses, the key is remembered as abandoned.
async fn release(state: &AppState, key_id: &str, idem_key: &str) {
    if let Err(e) = state.store.abandon_idempotent(key_id, idem_key).await {
        tracing::warn!(error = %e, "could not release an idempotency key; it is taken over on its next use");
        remember_abandoned(key_id, idem_key, time::now_millis());
    }
}

fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Runs `inner` on `req` under the request's `Idempotency-Key`, if it has
/// one: the first time for real, then by replaying what was stored.
pub async fn replay<F, Fut>(state: &AppState, req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if req.method() != Method::POST {
        return inner(req).await;
    }
    let Some(raw) = req.headers().get("idempotency-key") else {
        return inner(req).await;
    };
    let key = match raw.to_str() {
        Ok(k) if valid_key(k.trim_matches('"')) => k.trim_matches('"').to_string(),
        _ => {
            return ApiError::bad_request(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
            .into_response()
        }
    };
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return inner(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b"\n");
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.path().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(parts.uri.query().unwrap_or("").as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let fingerprint = hex_of(&hasher.finalize());
    let begin_with = |stale_ms| {
        state.store.begin_idempotent(
            &caller.key_id,
            &key,
            &fingerprint,
            time::now_millis(),
            TTL_MS,
            stale_ms,
        )
    };
    let mut begin = begin_with(STALE_MS).await;
    if matches!(begin, Ok(IdempotencyBegin::InFlight)) && take_abandoned(&caller.key_id, &key) {
        // The request that holds the key failed here and is over: take its
        // record over at once (stale from now on), as after its staleness.
        begin = begin_with(0).await;
        if begin.is_err() {
            // The takeover itself was refused: still abandoned.
            remember_abandoned(&caller.key_id, &key, time::now_millis());
        }
    }
    let audit_finishes = parts.extensions.get::<AuditFinishes>().is_some();
    match begin {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyBegin::Mismatch) => ApiError::Unprocessable(
            "Idempotency-Key was already used with a different request".into(),
        )
        .into_response(),
        Ok(IdempotencyBegin::InFlight) => ApiError::Conflict {
            message: "A request with this Idempotency-Key is still being processed".into(),
            errors: None,
        }
        .into_response(),
        Ok(IdempotencyBegin::Replay {
            status,
            body,
            content_type,
        }) => {
            let body = match state.cipher.decrypt(&body) {
                Ok(plain) => plain,
                Err(e) => {
                    return ApiError::internal(format!("stored response unreadable: {e}"))
                        .into_response()
                }
            };
            let mut response =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
        Ok(IdempotencyBegin::Started) => {
            let req = Request::from_parts(parts, Body::from(bytes));
            let response = inner(req).await;
            let status = response.status();
            if status.is_server_error() {
                release(state, &caller.key_id, &key).await;
                return response;
            }
            let (mut parts, body) = response.into_parts();
            let bytes = match to_bytes(body, MAX_STORED_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    release(state, &caller.key_id, &key).await;
                    return ApiError::internal("response too large to store").into_response();
                }
            };
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let stored = IdempotentResponse {
                key_id: caller.key_id,
                idem_key: key,
                status: status.as_u16(),
                body: state.cipher.encrypt(&String::from_utf8_lossy(&bytes)),
                content_type,
            };
            if audit_finishes {
                // One commit with the audit entry, as the response leaves.
                parts.extensions.insert(stored);
            } else {
                finish(state, &stored).await;
            }
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// Records a started request's response on its own.
pub async fn finish(state: &AppState, stored: &IdempotentResponse) {
    if let Err(e) = state
        .store
        .finish_idempotent(
            &stored.key_id,
            &stored.idem_key,
            stored.status,
            &stored.body,
            stored.content_type.as_deref(),
        )
        .await
    {
        tracing::warn!(error = %e, "could not store an idempotent response");
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn keys() {
        assert!(valid_key("8e03978e-40d5-43e8-bc93-6894a57f9324"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"x".repeat(256)));
    }
}
