//! Consoles: `POST /api/v1/services/{serviceId}/console` hands out a
//! single-use WebSocket URL, and `GET /api/v1/console/{ticket}` is that
//! WebSocket. The WebSocket needs no API key (browsers cannot send one on a
//! WebSocket): the ticket in its path is the credential, bound to the
//! account, mode, key and service that asked for it (see [`crate::console`]).

use axum::extract::ws::WebSocketUpgrade;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::time;
use advps_store::{ConsoleTicket, Scope};

use crate::auth::Caller;
use crate::console::{self, MAX_FRAME_BYTES};
use crate::envelope::{ApiResponse, ErrorEnvelope, RequestContext, Success};
use crate::{ApiError, AppState};

/// The 404 of a ticket that is unknown, used or expired.
const CONSOLE_NOT_FOUND: &str = "Console not found, already used or expired";

/// The route that hands out tickets (behind authentication and the audit
/// log); its path and method are the ones its `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_console))
}

/// The WebSocket route (outside authentication: the ticket authenticates).
/// A plain axum route: a WebSocket is not an operation the OpenAPI document
/// can describe, so the overview of the document tells of it instead.
pub fn websocket_router() -> Router<AppState> {
    Router::new().route("/api/v1/console/{ticket}", get(connect_console))
}

/// `data` of a new console URL.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleData {
    /// The WebSocket to open: once, before `expiresAt`.
    #[schema(
        example = "ws://advps.example.com/api/v1/console/Hq3v0S2m1YbS8d1cVx4h0bH2tS7f9Q0a6e5r4t3y2u1"
    )]
    pub url: String,
    /// Until when the URL can be opened; an open console outlives it.
    #[schema(example = "2024-01-30T12:01:00.000Z")]
    pub expires_at: String,
}

/// The URL's scheme and authority: as the client reached advps (`Host`),
/// `wss` behind a proxy that says it terminated TLS.
fn base_of(headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .ok_or_else(|| ApiError::bad_request("Missing or invalid Host header"))?;
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    Ok(format!("{}://{host}", if secure { "wss" } else { "ws" }))
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/console",
    tag = "Services",
    operation_id = "createConsole",
    summary = "Open Console",
    description = "Hands out a single-use WebSocket URL to the service's text console, valid for 60 seconds and bound to the caller's account, mode, key and service. The WebSocket (`GET` on the URL, no API key; `?cols=N&rows=M` sets the starting size, 80x24 without) carries the console: binary frames are the console's bytes both ways; text frames from the client are JSON control messages, `{\"type\":\"resize\",\"cols\":N,\"rows\":M}` or `{\"type\":\"input\",\"data\":\"...\"}`; the server answers a malformed one with a text frame `{\"type\":\"error\",\"message\":...}`. The server closes the console with code 4000 when the service stops, 4001 when a rebuild begins, 4003 when the key is revoked, 4004 when the service is removed, 1000 when the console ends and 1011 when the engine's console fails. Sandbox services get a simulated shell (help, echo, uname, uptime, stty size, exit). At most 3 consoles are open on a service at once, and at most `console_max_sessions` (64 by default) in one server process: past that the call (and a WebSocket whose URL was handed out before) answers 503 with `Retry-After`.",
    params(("serviceId" = String, Path, description = "The unique identifier of the service.", example = "vps_service_1")),
    responses(
        (status = 200, description = "The console URL.", body = ApiResponse<ConsoleData>, example = json!({
            "status": "success",
            "message": "Console URL created successfully",
            "data": {"url": "ws://advps.example.com/api/v1/console/Hq3v0S2m1YbS8d1cVx4h0bH2tS7f9Q0a6e5r4t3y2u1", "expiresAt": "2024-01-30T12:01:00.000Z", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "Service must be running to open a console", body = ErrorEnvelope),
        (status = 403, description = "Service has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress\nAt most 3 consoles can be open on a service at once", body = ErrorEnvelope),
        (status = 503, description = "Too many consoles are open on this server; retry later (the process's `console_max_sessions`, 64 by default; `Retry-After` says when)", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    )
)]
pub async fn create_console(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    headers: HeaderMap,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let service = state
        .ops
        .console_target(caller.scope(), &service_id)
        .await?;
    state
        .consoles
        .check(service.pk)
        .map_err(console::Full::into_error)?;
    let base = base_of(&headers)?;
    let (secret, digest) = console::new_ticket();
    let now = time::now_millis();
    let expires_at =
        now.saturating_add((state.config.console_ttl_secs as i64).saturating_mul(1000));
    state
        .store
        .insert_console_ticket(&ConsoleTicket {
            digest,
            account_id: caller.account_id,
            mode: caller.mode,
            key_id: caller.key_id.clone(),
            service_pk: service.pk,
            service_id: service.service_id.clone(),
            created_at: now,
            expires_at,
        })
        .await?;
    Ok(Success::new(
        "Console URL created successfully",
        ConsoleData {
            url: format!("{base}/api/v1/console/{secret}"),
            expires_at: time::format_millis(expires_at),
        },
        caller.mode,
        &ctx,
    ))
}

/// The WebSocket: takes the ticket (so it opens once), checks that its key
/// and service still allow a console, opens the machine's console and
/// carries it until one side ends it.
pub async fn connect_console(
    State(state): State<AppState>,
    Path(ticket): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // The size may come with the URL (`?cols=N&rows=M`), so the console
    // starts at the client's size; checked before the ticket is spent.
    let size = console::initial_size(query.get("cols"), query.get("rows"))
        .map_err(ApiError::bad_request)?;
    if !console::plausible_ticket(&ticket) {
        return Err(ApiError::NotFound(CONSOLE_NOT_FOUND));
    }
    let ticket = state
        .store
        .take_console_ticket(&console::ticket_digest(&ticket), time::now_millis())
        .await?
        .ok_or(ApiError::NotFound(CONSOLE_NOT_FOUND))?;
    let key_alive = state
        .store
        .list_api_keys(ticket.account_id)
        .await?
        .iter()
        .any(|k| k.id == ticket.key_id && k.revoked_at.is_none());
    if !key_alive {
        return Err(ApiError::Unauthorized);
    }
    let scope = Scope {
        account_id: ticket.account_id,
        mode: ticket.mode,
    };
    let service = state.ops.console_target(scope, &ticket.service_id).await?;
    if service.pk != ticket.service_pk {
        return Err(ApiError::NotFound("Service not found or not accessible"));
    }
    let slot = state
        .consoles
        .acquire(service.pk)
        .map_err(console::Full::into_error)?;
    let stream = state.ops.open_console(&service, size).await?;
    let store = state.store.clone();
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| console::run(socket, stream, ticket, store, slot))
        .into_response())
}
