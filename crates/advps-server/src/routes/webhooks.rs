//! `/api/v1/webhooks`: endpoints that receive signed events, their delivery
//! log, and manual redelivery.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{time, Pagination};
use advps_store::{WebhookDelivery, WebhookEndpoint};

use crate::auth::Caller;
use crate::envelope::{ApiResponse, ErrorEnvelope, RequestContext, Success};
use crate::extract::{Field, JsonBody, Object, RequestBody};
use crate::ops::events::NewWebhook;
use crate::webhooks::EVENT_TYPES;
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

/// Body of a new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateWebhookRequest {
    /// Where events are POSTed (http or https; public addresses unless the operator allows others).
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "https://hooks.example.com/advps")]
    pub url: Field<String>,
    /// Event types to receive; absent or empty: all of them.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, required = false, example = json!(["task.completed", "task.failed"]))]
    pub events: Field<Vec<Field<String>>>,
    #[serde(default)]
    #[schema(value_type = Option<String>, required = false, max_length = 200)]
    pub description: Field<String>,
}

const URL_REQUIRED: &str = "url is required";
/// The longest URL an endpoint may have, in bytes.
const MAX_URL: usize = 2048;
/// The longest description an endpoint may have, in bytes.
const MAX_DESCRIPTION: usize = 200;

impl RequestBody for CreateWebhookRequest {
    fn not_an_object() -> ApiError {
        ApiError::bad_request(URL_REQUIRED)
    }
}

impl CreateWebhookRequest {
    /// The endpoint asked for, checked field by field; the address itself
    /// (its scheme, where it resolves) is checked by the service layer.
    pub fn into_webhook(self) -> Result<NewWebhook, ApiError> {
        let url = self
            .url
            .required_text(|| ApiError::bad_request(URL_REQUIRED))?;
        if url.len() > MAX_URL {
            return Err(ApiError::bad_request(format!(
                "url must be at most {MAX_URL} characters"
            )));
        }
        let mut events: Vec<String> = Vec::new();
        let listed = self
            .events
            .optional(|| ApiError::bad_request("events must be a list of event types"))?
            .unwrap_or_default();
        for entry in listed {
            // An entry that is not a string names no event type.
            let name = match entry {
                Field::Valid(name) => name,
                _ => String::new(),
            };
            if !EVENT_TYPES.contains(&name.as_str()) {
                return Err(ApiError::BadRequest {
                    message: format!("Unknown event type '{name}'"),
                    errors: Some(serde_json::json!({ "known": EVENT_TYPES })),
                });
            }
            if !events.contains(&name) {
                events.push(name);
            }
        }
        let too_long = || {
            ApiError::bad_request(format!(
                "description must be a string of at most {MAX_DESCRIPTION} characters"
            ))
        };
        let description = self.description.optional(too_long)?;
        if description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION)
        {
            return Err(too_long());
        }
        Ok(NewWebhook {
            url,
            events,
            description,
        })
    }
}

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookData {
    #[schema(example = "we_3k2j5h1g9f8d7s6a")]
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives.
    #[schema(example = json!(["task.completed", "task.failed"]))]
    pub events: Vec<String>,
    pub created_at: String,
    /// The signing secret (`whsec_...`): only when the endpoint is created or its secret rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub secret: Option<String>,
    /// After a rotation: until when the previous secret also signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub previous_secret_valid_until: Option<String>,
}

/// The account's endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookListData {
    pub webhooks: Vec<WebhookData>,
}

/// The id of a deleted endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedData {
    pub id: String,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryData {
    /// Also the `webhook-id` header, the same on every attempt.
    #[schema(example = "msg_2b7f1c0e9d8a4f6b8c3d2e1f0a9b8c7d")]
    pub id: String,
    pub event_id: String,
    #[schema(example = "task.completed")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (given up).
    #[schema(example = "delivered")]
    pub status: String,
    pub attempts: i64,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    /// The event as sent: `{type, timestamp, data}`.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// A page of an endpoint's deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesData {
    pub deliveries: Vec<DeliveryData>,
    #[schema(value_type = super::products::PageInfo)]
    pub pagination: Pagination,
}

/// A delivery queued again.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliveredData {
    pub id: String,
    #[schema(example = "pending")]
    pub status: String,
}

fn endpoint_data(e: &WebhookEndpoint) -> WebhookData {
    WebhookData {
        id: e.id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: if e.events.is_empty() {
            crate::webhooks::EVENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            e.events.clone()
        },
        created_at: time::format_millis(e.created_at),
        secret: None,
        previous_secret_valid_until: None,
    }
}

fn delivery_data(d: &WebhookDelivery) -> DeliveryData {
    DeliveryData {
        id: d.id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: (d.status == "pending").then(|| time::format_millis(d.next_attempt_at)),
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        created_at: time::format_millis(d.created_at),
        delivered_at: d.delivered_at.map(time::format_millis),
        payload: serde_json::from_str(&d.payload).unwrap_or(Value::Null),
    }
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "Webhooks", operation_id = "createWebhook",
    summary = "Create Webhook Endpoint",
    description = "Registers a URL that receives signed events (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`). The secret is shown only in this answer.",
    request_body(content = CreateWebhookRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Webhook endpoint created; its secret is shown only this once", body = ApiResponse<WebhookData>),
        (status = 400, description = "url is required\nurl must be at most 2048 characters\nevents must be a list of event types\nWebhook URL must use http or https\nWebhook URL resolves to a private or loopback address, which this server does not allow", body = ErrorEnvelope),
        (status = 409, description = "At most 20 webhook endpoints per account and mode", body = ErrorEnvelope),
    ))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(Object(body)): JsonBody<Object<CreateWebhookRequest>>,
) -> Result<Success, ApiError> {
    let webhook = body.into_webhook()?;
    let (endpoint, secret) = state.ops.create_webhook(caller.scope(), webhook).await?;
    let mut data = endpoint_data(&endpoint);
    data.secret = Some(secret);
    Ok(Success::new(
        "Webhook endpoint created; its secret is shown only this once",
        data,
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "Webhooks", operation_id = "listWebhooks",
    summary = "List Webhook Endpoints",
    responses((status = 200, description = "Webhook endpoints retrieved successfully", body = ApiResponse<WebhookListData>)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
) -> Result<Success, ApiError> {
    let endpoints = state.ops.webhooks(caller.scope()).await?;
    let data = WebhookListData {
        webhooks: endpoints.iter().map(endpoint_data).collect(),
    };
    Ok(Success::new(
        "Webhook endpoints retrieved successfully",
        data,
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{webhookId}", tag = "Webhooks", operation_id = "getWebhook",
    summary = "Get Webhook Endpoint",
    params(("webhookId" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "Webhook endpoint retrieved successfully", body = ApiResponse<WebhookData>),
        (status = 404, description = "Webhook endpoint not found", body = ErrorEnvelope),
    ))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(webhook_id): Path<String>,
) -> Result<Success, ApiError> {
    let endpoint = state.ops.webhook(caller.scope(), &webhook_id).await?;
    Ok(Success::new(
        "Webhook endpoint retrieved successfully",
        endpoint_data(&endpoint),
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{webhookId}", tag = "Webhooks", operation_id = "deleteWebhook",
    summary = "Delete Webhook Endpoint",
    params(("webhookId" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "Webhook endpoint deleted", body = ApiResponse<DeletedData>),
        (status = 404, description = "Webhook endpoint not found", body = ErrorEnvelope),
    ))]
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
        DeletedData { id: webhook_id },
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{webhookId}/rotate-secret", tag = "Webhooks", operation_id = "rotateWebhookSecret",
    summary = "Rotate Webhook Secret",
    description = "Issues a new secret. For a day the previous one keeps signing too (a second signature in `webhook-signature`), so receivers can switch without losing events.",
    params(("webhookId" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "Webhook secret rotated; the new secret is shown only this once", body = ApiResponse<WebhookData>),
        (status = 404, description = "Webhook endpoint not found", body = ErrorEnvelope),
    ))]
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
    let mut data = endpoint_data(&endpoint);
    data.secret = Some(secret);
    data.previous_secret_valid_until = Some(time::format_millis(until));
    Ok(Success::new(
        "Webhook secret rotated; the new secret is shown only this once",
        data,
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{webhookId}/deliveries", tag = "Webhooks", operation_id = "listWebhookDeliveries",
    summary = "List Deliveries",
    params(
        ("webhookId" = String, Path, description = "The endpoint's id."),
        ("page" = Option<u32>, Query, minimum = 1, description = "Page number. Default: 1."),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Results per page, max 100. Default: 10."),
    ),
    responses(
        (status = 200, description = "Webhook deliveries retrieved successfully", body = ApiResponse<DeliveriesData>),
        (status = 400, description = "Invalid page value — must be a positive integer\nInvalid limit value — must be a positive integer", body = ErrorEnvelope),
        (status = 404, description = "Webhook endpoint not found", body = ErrorEnvelope),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(webhook_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let page = super::page_of(&query)?;
    let (deliveries, total) = state
        .ops
        .webhook_deliveries(caller.scope(), &webhook_id, page)
        .await?;
    let data = DeliveriesData {
        deliveries: deliveries.iter().map(delivery_data).collect(),
        pagination: Pagination::new(page, total),
    };
    Ok(Success::new(
        "Webhook deliveries retrieved successfully",
        data,
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver", tag = "Webhooks", operation_id = "redeliverWebhook",
    summary = "Redeliver",
    description = "Sends a delivery again now, with the same `webhook-id`.",
    params(
        ("webhookId" = String, Path, description = "The endpoint's id."),
        ("deliveryId" = String, Path, description = "The delivery's id."),
    ),
    responses(
        (status = 200, description = "Delivery queued again", body = ApiResponse<RedeliveredData>),
        (status = 404, description = "Webhook endpoint not found\nDelivery not found", body = ErrorEnvelope),
    ))]
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
    let data = RedeliveredData {
        id: delivery_id,
        status: "pending".into(),
    };
    Ok(Success::new(
        "Delivery queued again",
        data,
        caller.mode,
        &ctx,
    ))
}
