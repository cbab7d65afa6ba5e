//! Authentication and rate limiting of `/api/v1` requests.
//!
//! The key in `x-api-key` is checked for shape before any lookup, then found
//! by its digest and compared again in constant time; revoked keys fail on
//! the next request (the store forgets remembered keys on revocation). The
//! caller's quota is counted next, and
//! every authenticated response carries the `RateLimit-*` headers.
//!
//! The customer panel reaches the same routes with a session instead of a
//! key: it checks the session cookie and its CSRF token, then hands the
//! request on with a [`SessionKey`] naming the key the session was made
//! with, and that key is checked here exactly as a presented one would be.
//!
//! Two kinds of answer cost no quota: `304 Not Modified` (the request is
//! given back once the handler answered) and `GET /api/v1/me`, which is
//! served behind [`authenticate_without_quota`] and only reads the quota.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use advps_domain::{api_key, Mode};

use crate::envelope::RequestContext;
use crate::rate_limit::RateDecision;
use crate::{ApiError, AppState};

pub use crate::caller::Caller;

/// The key behind a panel session, put on the request by the panel once it
/// has checked the session cookie (and, for a change, its CSRF token).
/// Only the server can set it: a request from outside carries no extensions.
#[derive(Debug, Clone)]
pub struct SessionKey {
    pub key_id: String,
    /// The key's digest, as the key table keeps it.
    pub key_hash: String,
}

/// How often a key's last-used time is written: once a minute is precise
/// enough to tell a live key from a dead one, and keeps a write off the path
/// of almost every request.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Remembers when each key's last-used time was last written.
#[derive(Default)]
pub struct TouchThrottle {
    last: Mutex<HashMap<String, i64>>,
}

impl TouchThrottle {
    /// True when the key's last-used time should be written now.
    fn due(&self, key_id: &str, now_ms: i64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(key_id) {
            Some(&at) if now_ms - at < TOUCH_INTERVAL_MS => false,
            _ => {
                if last.len() > 100_000 {
                    last.clear();
                }
                last.insert(key_id.to_string(), now_ms);
                true
            }
        }
    }
}

/// Middleware on the authenticated routes: the key and its quota, then,
/// for mutating calls, the audit log and idempotent replay around the
/// handler.
///
/// One middleware rather than three layers: axum clones every layer of a
/// route for each request, and on the polling endpoints that cost more than
/// the checks themselves.
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let inner = state.clone();
    authenticate_counting(state, req, true, move |req| async move {
        crate::audit::record(&inner, req, |req| {
            crate::idempotency::replay(&inner, req, |req| next.run(req))
        })
        .await
    })
    .await
}

/// Middleware on authenticated routes that cost no quota: the key is
/// checked the same way, the quota is reported but not counted, and a
/// caller over its limit is still answered.
pub async fn authenticate_without_quota(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    authenticate_counting(state, req, false, |req| next.run(req)).await
}

async fn authenticate_counting<F, Fut>(
    state: AppState,
    mut req: Request,
    counted: bool,
    inner: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let now = req
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.received_ms)
        .unwrap_or_else(advps_domain::time::now_millis);
    let session = req.extensions().get::<SessionKey>().cloned();
    let caller = match identify(&state, req.headers(), session).await {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    let limit = match caller.mode {
        Mode::Test => state.config.rate_limit_test,
        Mode::Live => state.config.rate_limit_live,
    };
    let decision = if counted {
        state.limiter.check(&caller.key_id, limit, now).await
    } else {
        state.limiter.peek(&caller.key_id, limit, now).await
    };
    if counted && !decision.allowed {
        state.metrics.rate_limited();
        let mut response = ApiError::RateLimited {
            retry_after_secs: decision.reset_secs,
        }
        .into_response();
        rate_headers(response.headers_mut(), &decision);
        return response;
    }
    if state.touch.due(&caller.key_id, now) {
        let store = Arc::clone(&state.store);
        let key_id = caller.key_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&key_id, now).await {
                tracing::warn!(error = %e, "could not record key use");
            }
        });
    }
    let key_id = caller.key_id.clone();
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(decision);
    let mut response = inner(req).await;
    let mut decision = decision;
    if counted && response.status() == StatusCode::NOT_MODIFIED {
        // The client's copy is current: polling for that costs nothing.
        state.limiter.release(&key_id, now).await;
        decision.remaining = (decision.remaining + 1).min(decision.limit);
    }
    rate_headers(response.headers_mut(), &decision);
    response
}

async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    session: Option<SessionKey>,
) -> Result<Caller, ApiError> {
    if let Some(session) = session {
        let caller = caller_of_digest(state, &session.key_hash, None).await?;
        if caller.key_id != session.key_id {
            return Err(ApiError::Unauthorized);
        }
        return Ok(caller);
    }
    // Two keys in one request are refused before either is looked up: a
    // proxy that checks or logs one copy must not see another caller than
    // the one served.
    if headers.get_all("x-api-key").iter().nth(1).is_some() {
        return Err(ApiError::bad_request(MULTIPLE_KEYS));
    }
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    caller_of_key(state, presented).await
}

/// The caller behind a panel session: its key, checked as a presented one
/// would be (so a revoked key ends the session here too).
pub async fn caller_of_session(
    state: &AppState,
    session: &advps_store::PanelSession,
) -> Result<Caller, ApiError> {
    let caller = caller_of_digest(state, &session.key_hash, None).await?;
    if caller.key_id != session.key_id {
        return Err(ApiError::Unauthorized);
    }
    Ok(caller)
}

/// The caller a presented key stands for: its shape, then its digest, then
/// (in constant time) the stored digest, unrevoked and of the key's mode.
pub async fn caller_of_key(state: &AppState, presented: &str) -> Result<Caller, ApiError> {
    let mode = api_key::parse_mode(presented).map_err(|_| ApiError::Unauthorized)?;
    caller_of_digest(state, &api_key::hash(presented), Some(mode)).await
}

/// The caller of the key stored under `digest`, if it is unrevoked (and of
/// `mode`, when the key's own text named one).
async fn caller_of_digest(
    state: &AppState,
    digest: &str,
    mode: Option<Mode>,
) -> Result<Caller, ApiError> {
    let record = state
        .store
        .find_api_key(digest)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !api_key::hashes_match(&record.key_hash, digest)
        || record.revoked_at.is_some()
        || mode.is_some_and(|m| m != record.mode)
    {
        return Err(ApiError::Unauthorized);
    }
    Ok(Caller {
        key_id: record.id,
        account_id: record.account_id,
        account_name: record.account_name,
        mode: record.mode,
        key_last4: record.last4,
        key_created_at: record.created_at,
        key_last_used_at: record.last_used_at,
    })
}

/// The refusal of a request that sends `x-api-key` more than once.
pub const MULTIPLE_KEYS: &str = "Multiple API keys in one request";

// Parsed once: a name given as a string is checked on every insert.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn rate_headers(headers: &mut HeaderMap, d: &RateDecision) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(d.reset_secs));
    if let Ok(policy) =
        HeaderValue::from_str(&format!("\"default\";q={};w={}", d.limit, d.window_secs))
    {
        headers.insert(RATELIMIT_POLICY, policy);
    }
    if let Ok(current) =
        HeaderValue::from_str(&format!("\"default\";r={};t={}", d.remaining, d.reset_secs))
    {
        headers.insert(RATELIMIT, current);
    }
}
