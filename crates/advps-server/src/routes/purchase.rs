//! `/api/v1/purchase`: buying Linux containers and VPS, and reading orders.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use advps_domain::{money, time};

use crate::auth::Caller;
use crate::envelope::{RequestContext, Success};
use crate::extract::JsonBody;
use crate::ops::selling::{OrderView, PurchaseKind};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/linux", post(purchase_linux))
        .route("/vps", post(purchase_vps))
        .route("/{order_id}", get(get_order))
}

/// The order object of purchase and order responses.
fn order_json(view: &OrderView) -> Value {
    let order = &view.order;
    json!({
        "orderId": order.id,
        "status": order.status,
        "productId": order.product_id,
        "ram": money::format_ram(order.ram_mb),
        "os": { "id": order.os_slug, "name": order.os_name },
        "quantity": order.quantity,
        "validity": order.validity_days,
        "totalAmount": money::as_decimal(order.amount_minor),
        "currency": order.currency,
        "remark": order.remark,
        "error": order.error,
        "createdAt": time::format_millis(order.created_at),
        "updatedAt": time::format_millis(order.updated_at),
    })
}

fn services_json(view: &OrderView) -> Vec<Value> {
    let done = view.order.status == "COMPLETED";
    view.services
        .iter()
        .zip(&view.passwords)
        .map(|(s, password)| {
            json!({
                "id": s.pk,
                "serviceId": s.service_id,
                "serviceType": s.service_type.as_str(),
                "ip": if done { s.ip.clone() } else { None },
                "username": s.username.as_deref().unwrap_or("root"),
                "password": password,
                "os": s.os_name.clone().or_else(|| s.os_slug.clone()),
                "status": s.power_state.as_str(),
                "expiryDate": s.expires_at.map(time::format_millis),
            })
        })
        .collect()
}

async fn purchase(
    state: AppState,
    caller: Caller,
    ctx: RequestContext,
    kind: PurchaseKind,
    body: Value,
) -> Result<Success, ApiError> {
    let view = state.ops.purchase(caller.scope(), kind, &body).await?;
    Ok(Success::new(
        "Order placed successfully",
        json!({ "order": order_json(&view), "services": services_json(&view) }),
        caller.mode,
        &ctx,
    ))
}

pub async fn purchase_linux(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> Result<Success, ApiError> {
    purchase(state, caller, ctx, PurchaseKind::Linux, body).await
}

pub async fn purchase_vps(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> Result<Success, ApiError> {
    purchase(state, caller, ctx, PurchaseKind::Vps, body).await
}

pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(order_id): Path<String>,
) -> Result<Success, ApiError> {
    let view = state.ops.order(caller.scope(), &order_id).await?;
    Ok(Success::new(
        "Order retrieved successfully",
        json!({ "order": order_json(&view), "services": services_json(&view) }),
        caller.mode,
        &ctx,
    ))
}
