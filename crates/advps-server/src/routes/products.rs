//! `/api/v1/products/stock`: stock levels of the products of the caller's mode.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use advps_domain::{PageRequest, Pagination, StockStatus, VmType};
use advps_store::ProductStock;

use crate::auth::Caller;
use crate::envelope::{RequestContext, Success};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/stock", get(list_product_stock))
        .route("/stock/{product_id}", get(get_product_stock))
}

fn stock_row(state: &AppState, product: &ProductStock) -> Value {
    let status = StockStatus::classify(product.stock, state.ops.low_stock_threshold(product));
    json!({
        "id": product.id,
        "name": product.name,
        "vmType": product.vm_type.as_str(),
        "packName": product.pack_name,
        "stock": product.stock.max(0),
        "stockStatus": status.as_str(),
    })
}

pub async fn list_product_stock(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let vm_type = match query.get("type") {
        None => None,
        Some(raw) => Some(VmType::from_filter(raw).ok_or_else(|| {
            ApiError::bad_request("Invalid type value — must be 'linux' or 'vps'")
        })?),
    };
    let page = PageRequest::parse(
        query.get("page").map(String::as_str),
        query.get("limit").map(String::as_str),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let result = state.ops.list_stock(caller.scope(), vm_type, page).await?;
    let rows: Vec<Value> = result
        .products
        .iter()
        .map(|p| stock_row(&state, p))
        .collect();
    Ok(Success::new(
        "Product stock retrieved successfully",
        json!({
            "stock": rows,
            "pagination": Pagination::new(page, result.total),
        }),
        caller.mode,
        &ctx,
    ))
}

pub async fn get_product_stock(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(product_id): Path<String>,
) -> Result<Success, ApiError> {
    let product = state.ops.stock(caller.scope(), &product_id).await?;
    Ok(Success::new(
        "Product stock retrieved successfully",
        json!({ "stock": stock_row(&state, &product) }),
        caller.mode,
        &ctx,
    ))
}
