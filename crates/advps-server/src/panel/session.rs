//! Panel sessions: `POST /panel/session` exchanges an API key for a session
//! cookie, `GET` tells the page who it is signed in as (and its CSRF token),
//! `DELETE` signs out.
//!
//! The key travels once, in a JSON body, and is never stored by the browser.
//! The cookie holds a random 256-bit token that the store keeps only as a
//! digest (a copy of the database opens no session); it is `HttpOnly` (no
//! script reads it), `SameSite=Strict` (no other site's page sends it) and
//! `Secure` when the client reached advps over TLS (a proxy in front says so
//! with `X-Forwarded-Proto: https`). A session is found only while its key
//! is unrevoked and it has been used within `panel.session_idle_secs`, so
//! revoking the key or leaving the page alone ends it.
//!
//! Sign-in attempts are counted per client address like requests of a key
//! (a wrong key costs its sender quota, so keys cannot be guessed at speed),
//! and a successful one costs one request of the key's own quota.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use advps_domain::{api_key, Mode};
use advps_store::{NewPanelSession, PanelSession};

use crate::auth::{caller_of_key, Caller};
use crate::envelope::{
    error_body, json_response, ApiResponse, ErrorEnvelope, RequestContext, Success,
};
use crate::extract::{Field, JsonBody, Object, RequestBody};
use crate::{ApiError, AppState};

/// The cookie's name.
pub const COOKIE: &str = "advps_session";

/// The header every change through the session must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sign-in attempts one client address may make per rate window.
pub const SIGN_INS_PER_WINDOW: u32 = 60;

/// The 401 of a request without a live session.
pub const NO_SESSION: &str = "Not signed in, or the session has ended";

/// The 403 of a change without the session's CSRF token.
pub const BAD_CSRF: &str = "Missing or invalid CSRF token";

/// What the page learns about its session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionData {
    /// Echo it in `X-CSRF-Token` on every request that changes something.
    pub csrf_token: String,
    pub account: String,
    pub key_id: String,
    pub key_last4: String,
    /// The session ends after this many seconds without a request.
    pub idle_seconds: u64,
}

/// A new random token (256 bits, URL-safe) and its digest.
fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = digest_of(&token);
    (token, digest)
}

fn digest_of(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// Whether a cookie value can be a token at all (junk costs no lookup).
fn plausible(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The session token the request's cookies carry, if any.
fn token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|t| plausible(t))
}

/// Whether the client reached advps over TLS, as the proxy in front of it
/// says (advps itself speaks plain HTTP).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

fn cookie(headers: &HeaderMap, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut cookie = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if over_tls(headers) {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn idle_ms(state: &AppState) -> i64 {
    (state.config.panel.session_idle_secs as i64).saturating_mul(1000)
}

/// The 401 of a request without a live session.
pub fn no_session() -> Response {
    json_response(StatusCode::UNAUTHORIZED, &error_body(NO_SESSION, None))
}

/// The live session of the request at `now`, having recorded this use of it.
pub async fn find(
    state: &AppState,
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<PanelSession>, ApiError> {
    let Some(token) = token_of(headers) else {
        return Ok(None);
    };
    let digest = digest_of(&token);
    let idle = idle_ms(state);
    let Some(session) = state
        .store
        .find_panel_session(&digest, now.saturating_sub(idle))
        .await?
    else {
        return Ok(None);
    };
    // Written at most every minute (sooner for short idle times): the idle
    // limit is that coarse, and a write per request would be felt.
    if now - session.last_seen_at >= (idle / 10).clamp(1, 60_000) {
        let store = Arc::clone(&state.store);
        let digest = session.digest.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_panel_session(&digest, now).await {
                tracing::warn!(error = %e, "could not record session use");
            }
        });
    }
    Ok(Some(session))
}

/// Whether the request carries the session's CSRF token.
pub fn csrf_ok(headers: &HeaderMap, session: &PanelSession) -> bool {
    let mut sent = headers.get_all(CSRF_HEADER).iter();
    match (sent.next().and_then(|v| v.to_str().ok()), sent.next()) {
        (Some(token), None) => api_key::hashes_match(token.trim(), &session.csrf_token),
        _ => false,
    }
}

fn session_data(state: &AppState, caller: &Caller, csrf_token: String) -> SessionData {
    SessionData {
        csrf_token,
        account: caller.account_name.clone(),
        key_id: caller.key_id.clone(),
        key_last4: caller.key_last4.clone(),
        idle_seconds: state.config.panel.session_idle_secs,
    }
}

fn rate_limit_of(state: &AppState, mode: Mode) -> u32 {
    match mode {
        Mode::Test => state.config.rate_limit_test,
        Mode::Live => state.config.rate_limit_live,
    }
}

/// Body of a sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInRequest {
    /// A test or live key of the account; it is not kept by the browser.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "sk_test_tWzgTeV3s1we1BVU3NzTjzDlK5de8Nk8")]
    pub api_key: Field<String>,
}

impl RequestBody for SignInRequest {
    fn not_an_object() -> ApiError {
        ApiError::bad_request(API_KEY_REQUIRED)
    }
}

const API_KEY_REQUIRED: &str = "apiKey is required";

/// `POST /panel/session` with `{"apiKey": "..."}`.
#[utoipa::path(post, path = "/panel/session", tag = "Panel", operation_id = "panelSignIn",
    summary = "Panel: Sign In",
    description = "Exchanges an API key for a panel session: the answer sets the `advps_session` cookie (HttpOnly, SameSite=Strict, Secure behind TLS) and carries the CSRF token to send in `X-CSRF-Token` on every change through `/panel/api/v1/...`. Attempts are counted per client address; a successful one costs one request of the key's quota.",
    security(()),
    request_body(content = SignInRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in", body = ApiResponse<SessionData>),
        (status = 400, description = "apiKey is required", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 429, description = "Too many requests: rate limit exceeded", body = ErrorEnvelope),
        (status = 503, description = "Storage is full or unavailable; retry later", body = ErrorEnvelope),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    ctx: RequestContext,
    headers: HeaderMap,
    JsonBody(Object(body)): JsonBody<Object<SignInRequest>>,
) -> Result<Response, ApiError> {
    let now = ctx.received_ms;
    let attempts = state
        .limiter
        .check(
            &format!("panel-sign-in:{}", remote.ip()),
            SIGN_INS_PER_WINDOW,
            now,
        )
        .await;
    if !attempts.allowed {
        return Err(ApiError::RateLimited {
            retry_after_secs: attempts.reset_secs,
        });
    }
    let presented = body
        .api_key
        .required_text(|| ApiError::bad_request(API_KEY_REQUIRED))?;
    let caller = caller_of_key(&state, &presented).await?;
    let quota = state
        .limiter
        .check(&caller.key_id, rate_limit_of(&state, caller.mode), now)
        .await;
    if !quota.allowed {
        return Err(ApiError::RateLimited {
            retry_after_secs: quota.reset_secs,
        });
    }
    let (token, digest) = new_token();
    let (csrf_token, _) = new_token();
    state
        .store
        .insert_panel_session(
            &NewPanelSession {
                digest,
                key_id: caller.key_id.clone(),
                account_id: caller.account_id,
                mode: caller.mode,
                csrf_token: csrf_token.clone(),
                created_at: now,
            },
            now.saturating_sub(idle_ms(&state)),
        )
        .await?;
    tracing::info!(key_id = %caller.key_id, "panel session started");
    let mut response = Success::new(
        "Signed in",
        session_data(&state, &caller, csrf_token),
        caller.mode,
        &ctx,
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&headers, &token, None));
    Ok(response)
}

/// `GET /panel/session`: the signed-in account and the CSRF token, so a
/// reloaded page carries on without asking for the key again.
#[utoipa::path(get, path = "/panel/session", tag = "Panel", operation_id = "panelSession",
    summary = "Panel: Current Session",
    description = "The account and key the session cookie belongs to, and its CSRF token, so a reloaded page carries on without the key. The session ends with its key's revocation or after `panel.session_idle_secs` without a request.",
    security(("panelSession" = [])),
    responses(
        (status = 200, description = "Signed in", body = ApiResponse<SessionData>),
        (status = 401, description = "Not signed in, or the session has ended", body = ErrorEnvelope),
    ))]
pub async fn current(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(session) = find(&state, &headers, ctx.received_ms).await? else {
        return Ok(no_session());
    };
    let caller = match crate::auth::caller_of_session(&state, &session).await {
        Ok(caller) => caller,
        Err(ApiError::Unauthorized) => return Ok(no_session()),
        Err(e) => return Err(e),
    };
    Ok(Success::new(
        "Signed in",
        session_data(&state, &caller, session.csrf_token.clone()),
        caller.mode,
        &ctx,
    )
    .into_response())
}

/// `DELETE /panel/session` (with the CSRF token): signs out.
#[utoipa::path(delete, path = "/panel/session", tag = "Panel", operation_id = "panelSignOut",
    summary = "Panel: Sign Out",
    description = "Ends the session and clears its cookie. Needs the session's `X-CSRF-Token`.",
    security(("panelSession" = [])),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token, from sign-in or Current Session.")),
    responses(
        (status = 200, description = "Signed out"),
        (status = 401, description = "Not signed in, or the session has ended", body = ErrorEnvelope),
        (status = 403, description = "Missing or invalid CSRF token", body = ErrorEnvelope),
    ))]
pub async fn sign_out(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(session) = find(&state, &headers, ctx.received_ms).await? else {
        return Ok(no_session());
    };
    if !csrf_ok(&headers, &session) {
        return Err(ApiError::Forbidden(BAD_CSRF.into()));
    }
    state.store.delete_panel_session(&session.digest).await?;
    let mut response = Success::plain("Signed out", serde_json::json!({})).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&headers, "", Some(0)));
    Ok(response)
}
