//! The customer panel at `/panel`: a page, its scripts and styles, all
//! compiled into the binary, and the session that lets the page use the API.
//!
//! The page is plain HTML, ES modules and CSS with no build step; the
//! libraries it uses (xterm.js for the console, uPlot for the charts) are
//! vendored under `panel/vendor/` of this crate. It signs in once with an API
//! key, exchanged at `POST /panel/session` for an HttpOnly cookie (see
//! [`session`]), and then calls `/panel/api/v1/...`, which [`api`] hands on
//! to the very routes of `/api/v1/...`. Every panel response carries a
//! Content-Security-Policy that allows no inline script and nothing from
//! another origin, so a script injected into the page has nowhere to run
//! and nowhere to send what it reads.

pub mod api;
mod assets;
pub mod session;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, AppState};

/// The policy of every panel response. Styles may be inline because the
/// terminal and the charts size their elements through style attributes;
/// scripts may not. `connect-src 'self'` covers the console's WebSocket on
/// the same host.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The panel's documented routes: the page and the session. Each path and
/// method is the one its handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(index)).routes(routes!(
        session::sign_in,
        session::current,
        session::sign_out
    ))
}

/// The whole panel: `documented` (the axum half of [`router`]) and the
/// routes the document leaves out, which stay plain axum routes: `/panel/`
/// (the same page), the compiled-in assets, and `/panel/api/v1/...`, which
/// the document describes once, as `/api/v1/...`. `api` is the router of
/// `/api/v1/...` (with its authentication), which that path hands requests to.
pub fn site(state: AppState, api: Router, documented: Router<AppState>) -> Router<AppState> {
    documented
        .route("/panel/", get(index))
        .route("/panel/assets/{*path}", get(asset))
        .route(
            "/panel/api/v1/{*rest}",
            any(move |req: Request| api::forward(state.clone(), api.clone(), req)),
        )
        .layer(middleware::from_fn(security_headers))
}

#[utoipa::path(get, path = "/panel", tag = "Panel", operation_id = "getPanel",
    summary = "Customer Panel",
    description = "The customer panel, a page served by this binary with every asset compiled in. It signs in with an API key (Panel: Sign In) and then calls the API at `/panel/api/v1/...`: the same operations as `/api/v1/...`, authenticated by the session cookie instead of `x-api-key`, with the session's token in `X-CSRF-Token` on every change; cross-site requests are refused.",
    security(()),
    responses(
        (status = 200, description = "The HTML page.", content_type = "text/html", body = String),
    ))]
pub async fn index() -> Response {
    assets::response("index.html").unwrap_or_else(|| ApiError::internal("no page").into_response())
}

async fn asset(Path(path): Path<String>) -> Response {
    assets::response(&path)
        .unwrap_or_else(|| ApiError::NotFound("Panel asset not found").into_response())
}

const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");
const REFERRER_POLICY: HeaderName = HeaderName::from_static("referrer-policy");

/// The headers of every panel response, errors included: the policy, no
/// content sniffing, no referrer, and no caching (answers carry account
/// data; the assets change with the binary).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
