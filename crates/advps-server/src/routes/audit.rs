//! `/api/v1/audit`: the caller's own audit log, newest first, filterable by
//! service and time.

use std::collections::HashMap;

use axum::extract::{Query, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{time, Pagination};

use crate::auth::Caller;
use crate::envelope::{ApiResponse, ErrorEnvelope, RequestContext, Success};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// One mutating call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryData {
    pub id: i64,
    /// When the call was answered.
    pub time: String,
    pub key_id: Option<String>,
    pub mode: Option<String>,
    #[schema(example = "POST")]
    pub method: String,
    #[schema(example = "/api/v1/services/vps_service_1/rebuild")]
    pub path: String,
    pub service_id: Option<String>,
    /// The HTTP status it was answered with.
    #[schema(example = 200)]
    pub status: i64,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// The task it started, if any.
    pub task_id: Option<String>,
    /// The order it placed or renewed, if any.
    pub order_id: Option<String>,
    /// The caller's address.
    pub source: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditData {
    pub entries: Vec<AuditEntryData>,
    #[schema(value_type = super::products::PageInfo)]
    pub pagination: Pagination,
}

fn parse_time(name: &str, raw: Option<&String>) -> Result<Option<i64>, ApiError> {
    raw.map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|_| {
                ApiError::bad_request(format!("Invalid {name} value — must be an RFC 3339 time"))
            })
    })
    .transpose()
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "Audit", operation_id = "listAudit",
    summary = "List Audit Entries",
    description = "Every mutating call of the calling account and mode (time, key, method, path, service, outcome, request id, idempotency key, task or order), newest first. Bodies are never recorded.",
    params(
        ("page" = Option<u32>, Query, minimum = 1, description = "Page number. Default: 1."),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Results per page, max 100. Default: 10."),
        ("from" = Option<String>, Query, description = "Entries at or after this RFC 3339 time."),
        ("to" = Option<String>, Query, description = "Entries at or before this RFC 3339 time."),
        ("serviceId" = Option<String>, Query, description = "Entries about this service only."),
    ),
    responses(
        (status = 200, description = "Audit entries retrieved successfully", body = ApiResponse<AuditData>),
        (status = 400, description = "Invalid page value — must be a positive integer\nInvalid limit value — must be a positive integer\nInvalid from value — must be an RFC 3339 time\nInvalid to value — must be an RFC 3339 time", body = ErrorEnvelope),
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let page = super::page_of(&query)?;
    let from = parse_time("from", query.get("from"))?;
    let to = parse_time("to", query.get("to"))?;
    let service = query.get("serviceId").filter(|s| !s.is_empty()).cloned();
    let (entries, total) = state
        .ops
        .audit(caller.scope(), service, from, to, page)
        .await?;
    let data = AuditData {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryData {
                id: e.id,
                time: time::format_millis(e.at),
                key_id: e.key_id,
                mode: e.mode,
                method: e.method,
                path: e.path,
                service_id: e.service_id,
                status: e.status,
                request_id: e.request_id,
                idempotency_key: e.idempotency_key,
                task_id: e.task_id,
                order_id: e.order_id,
                source: e.source,
            })
            .collect(),
        pagination: Pagination::new(page, total),
    };
    Ok(Success::new(
        "Audit entries retrieved successfully",
        data,
        caller.mode,
        &ctx,
    ))
}
