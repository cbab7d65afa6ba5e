//! `/api/v1/audit`: the caller's own audit log, newest first, filterable by
//! service and time.

use std::collections::HashMap;

use axum::extract::{Query, State};
use serde_json::{json, Value};

use advps_domain::{time, PageRequest, Pagination};

use crate::auth::Caller;
use crate::envelope::{RequestContext, Success};
use crate::{ApiError, AppState};

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

pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let page = PageRequest::parse(
        query.get("page").map(String::as_str),
        query.get("limit").map(String::as_str),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let from = parse_time("from", query.get("from"))?;
    let to = parse_time("to", query.get("to"))?;
    let service = query.get("serviceId").filter(|s| !s.is_empty()).cloned();
    let (entries, total) = state
        .ops
        .audit(caller.scope(), service, from, to, page)
        .await?;
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "time": time::format_millis(e.at),
                "keyId": e.key_id,
                "mode": e.mode,
                "method": e.method,
                "path": e.path,
                "serviceId": e.service_id,
                "status": e.status,
                "requestId": e.request_id,
                "idempotencyKey": e.idempotency_key,
                "taskId": e.task_id,
                "orderId": e.order_id,
                "source": e.source,
            })
        })
        .collect();
    Ok(Success::new(
        "Audit entries retrieved successfully",
        json!({ "entries": list, "pagination": Pagination::new(page, total) }),
        caller.mode,
        &ctx,
    ))
}
