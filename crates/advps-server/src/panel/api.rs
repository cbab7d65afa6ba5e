//! `/panel/api/v1/...`: the API through a panel session.
//!
//! The session cookie stands in for the key: a request is checked here
//! (a live session; for anything but `GET`/`HEAD`, the session's CSRF token
//! in `X-CSRF-Token`), its path is turned into the `/api/v1/...` one, and
//! it is handed to the API's own router with a [`SessionKey`], so the same
//! authentication, quota, audit record, idempotent replay and handler serve
//! it as would serve the key itself. A form posted from another site sends
//! the cookie at most (SameSite=Strict keeps it from other sites, but not
//! from another port of the same host) and never the header, so it is
//! refused before anything runs; so is any change a browser says comes
//! from another site.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, OriginalUri, Request};
use axum::http::Extensions;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_service::Service;

use crate::auth::SessionKey;
use crate::envelope::RequestContext;
use crate::panel::session::{self, BAD_CSRF};
use crate::{ApiError, AppState};

/// The prefix that the panel's API paths carry in front of `/api/v1`.
const PREFIX: &str = "/panel";

/// Checks the session of `req` and serves it with the API router `api`.
pub async fn forward(state: AppState, mut api: Router, req: Request) -> Response {
    let now = req
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.received_ms)
        .unwrap_or_else(advps_domain::time::now_millis);
    let session = match session::find(&state, req.headers(), now).await {
        Ok(Some(session)) => session,
        Ok(None) => return session::no_session(),
        Err(e) => return e.into_response(),
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"));
    if !safe && (cross_site || !session::csrf_ok(req.headers(), &session)) {
        return ApiError::Forbidden(BAD_CSRF.into()).into_response();
    }
    let Some(uri) = api_uri(req.uri()) else {
        return ApiError::NotFound("Route not found").into_response();
    };
    // The API's router sees a request of its own: its path, and only the
    // extensions that outer layers made for every request (the path
    // parameters of the panel's route would confuse its extractors).
    let (mut parts, body) = req.into_parts();
    let mut extensions = Extensions::new();
    if let Some(ctx) = parts.extensions.remove::<RequestContext>() {
        extensions.insert(ctx);
    }
    if let Some(remote) = parts.extensions.remove::<ConnectInfo<SocketAddr>>() {
        extensions.insert(remote);
    }
    extensions.insert(OriginalUri(uri.clone()));
    extensions.insert(SessionKey {
        key_id: session.key_id,
        key_hash: session.key_hash,
    });
    parts.extensions = extensions;
    parts.uri = uri;
    // The session is the only credential: a key sent beside it is not the
    // one the session was made with, and must not be the one served.
    parts.headers.remove("x-api-key");
    let req = Request::from_parts(parts, body);
    // A router is always ready; `call` needs no `poll_ready` first.
    match api.call(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `/panel/api/v1/x?q` as `/api/v1/x?q`.
fn api_uri(uri: &Uri) -> Option<Uri> {
    let path_and_query = uri.path_and_query()?.as_str();
    let rest = path_and_query.strip_prefix(PREFIX)?;
    rest.starts_with("/api/v1/").then_some(())?;
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_paths_become_api_paths() {
        let uri: Uri = "/panel/api/v1/services/vps_service_1/metrics?period=1h"
            .parse()
            .unwrap();
        assert_eq!(
            api_uri(&uri).unwrap().to_string(),
            "/api/v1/services/vps_service_1/metrics?period=1h"
        );
        assert!(api_uri(&"/panel/session".parse().unwrap()).is_none());
    }
}
