//! `/api/v1/webhooks`: endpoints that receive signed events, their delivery
//! log, and manual redelivery.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use advps_domain::{time, PageRequest, Pagination};
use advps_store::{WebhookDelivery, WebhookEndpoint};

use crate::auth::Caller;
use crate::envelope::{RequestContext, Success};
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_webhooks).post(create_webhook))
        .route("/{webhook_id}", get(get_webhook).delete(delete_webhook))
        .route("/{webhook_id}/rotate-secret", post(rotate_webhook_secret))
        .route("/{webhook_id}/deliveries", get(list_deliveries))
        .route(
            "/{webhook_id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
}

fn endpoint_json(e: &WebhookEndpoint) -> Value {
    json!({
        "id": e.id,
        "url": e.url,
        "description": e.description,
        "events": if e.events.is_empty() { json!(crate::webhooks::EVENT_TYPES) } else { json!(e.events) },
        "createdAt": time::format_millis(e.created_at),
    })
}

fn delivery_json(d: &WebhookDelivery) -> Value {
    json!({
        "id": d.id,
        "eventId": d.event_id,
        "eventType": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "nextAttemptAt": (d.status == "pending").then(|| time::format_millis(d.next_attempt_at)),
        "lastStatusCode": d.last_status_code,
        "lastError": d.last_error,
        "createdAt": time::format_millis(d.created_at),
        "deliveredAt": d.delivered_at.map(time::format_millis),
        "payload": serde_json::from_str::<Value>(&d.payload).unwrap_or(Value::Null),
    })
}

pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> Result<Success, ApiError> {
    let (endpoint, secret) = state.ops.create_webhook(caller.scope(), &body).await?;
    let mut data = endpoint_json(&endpoint);
    data["secret"] = json!(secret);
    Ok(Success::new(
        "Webhook endpoint created; its secret is shown only this once",
        data,
        caller.mode,
        &ctx,
    ))
}

pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
) -> Result<Success, ApiError> {
    let endpoints = state.ops.webhooks(caller.scope()).await?;
    let list: Vec<Value> = endpoints.iter().map(endpoint_json).collect();
    Ok(Success::new(
        "Webhook endpoints retrieved successfully",
        json!({ "webhooks": list }),
        caller.mode,
        &ctx,
    ))
}

pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(webhook_id): Path<String>,
) -> Result<Success, ApiError> {
    let endpoint = state.ops.webhook(caller.scope(), &webhook_id).await?;
    Ok(Success::new(
        "Webhook endpoint retrieved successfully",
        endpoint_json(&endpoint),
        caller.mode,
        &ctx,
    ))
}

pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(webhook_id): Path<String>,
) -> Result<Success, ApiError> {
    state
        .ops
        .delete_webhook(caller.scope(), &webhook_id)
        .await?;
    Ok(Success::new(
        "Webhook endpoint deleted",
        json!({ "id": webhook_id }),
        caller.mode,
        &ctx,
    ))
}

pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(webhook_id): Path<String>,
) -> Result<Success, ApiError> {
    let (endpoint, secret, until) = state
        .ops
        .rotate_webhook_secret(caller.scope(), &webhook_id)
        .await?;
    let mut data = endpoint_json(&endpoint);
    data["secret"] = json!(secret);
    data["previousSecretValidUntil"] = json!(time::format_millis(until));
    Ok(Success::new(
        "Webhook secret rotated; the new secret is shown only this once",
        data,
        caller.mode,
        &ctx,
    ))
}

pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(webhook_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let page = PageRequest::parse(
        query.get("page").map(String::as_str),
        query.get("limit").map(String::as_str),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (deliveries, total) = state
        .ops
        .webhook_deliveries(caller.scope(), &webhook_id, page)
        .await?;
    let list: Vec<Value> = deliveries.iter().map(delivery_json).collect();
    Ok(Success::new(
        "Webhook deliveries retrieved successfully",
        json!({ "deliveries": list, "pagination": Pagination::new(page, total) }),
        caller.mode,
        &ctx,
    ))
}

pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
) -> Result<Success, ApiError> {
    state
        .ops
        .redeliver(caller.scope(), &webhook_id, &delivery_id)
        .await?;
    Ok(Success::new(
        "Delivery queued again",
        json!({ "id": delivery_id, "status": "pending" }),
        caller.mode,
        &ctx,
    ))
}
