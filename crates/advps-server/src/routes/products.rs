//! `/api/v1/products/stock`: stock levels of the products of the caller's mode.
//!
//! Both answers carry a weak `ETag`, so a client watching stock polls for
//! free while nothing changes (`If-None-Match` → `304`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{Pagination, StockStatus, VmType};
use advps_store::ProductStock;

use super::{StockStatusWord, VmTypeWord};
use crate::auth::Caller;
use crate::envelope::{
    ApiResponse, EntityTag, ErrorEnvelope, IfNoneMatch, RequestContext, Success,
};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_product_stock))
        .routes(routes!(get_product_stock))
}

/// The `type` filter of the stock list.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StockFilter {
    Linux,
    Vps,
}

/// One product's stock.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockRow {
    #[schema(example = "prod_abc123")]
    pub id: String,
    #[schema(example = "Linux VPS 4GB")]
    pub name: String,
    pub vm_type: VmTypeWord,
    #[schema(example = "4GB Linux Pack")]
    pub pack_name: String,
    #[schema(example = 25, minimum = 0)]
    pub stock: i64,
    pub stock_status: StockStatusWord,
}

/// Where a page stands in the whole list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    #[schema(example = 1)]
    pub page: u32,
    #[schema(example = 10)]
    pub limit: u32,
    #[schema(example = 12)]
    pub total: u64,
    #[schema(example = 2)]
    pub total_pages: u64,
    pub has_next: bool,
    pub has_prev: bool,
}

impl From<Pagination> for PageInfo {
    fn from(p: Pagination) -> Self {
        PageInfo {
            page: p.page,
            limit: p.limit,
            total: p.total,
            total_pages: p.total_pages,
            has_next: p.has_next,
            has_prev: p.has_prev,
        }
    }
}

/// `data` of the stock list.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockListData {
    pub stock: Vec<StockRow>,
    pub pagination: PageInfo,
}

/// `data` of one product's stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockData {
    pub stock: StockRow,
}

fn stock_row(state: &AppState, product: &ProductStock) -> StockRow {
    let status = StockStatus::classify(product.stock, state.ops.low_stock_threshold(product));
    StockRow {
        id: product.id.clone(),
        name: product.name.clone(),
        vm_type: product.vm_type.into(),
        pack_name: product.pack_name.clone(),
        stock: product.stock.max(0),
        stock_status: status.into(),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/products/stock",
    tag = "Products",
    operation_id = "listProductStock",
    summary = "List Product Stock",
    description = "Returns current stock levels for all visible products sorted by stock descending (ties by id, so pages never overlap). Supports optional filtering by product type. A page past the end is an empty list. Sends an `ETag`; a matching `If-None-Match` answers `304 Not Modified` at no quota cost.",
    params(
        ("page" = Option<u32>, Query, minimum = 1, description = "Page number for pagination. Default: 1.", example = 1),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Results per page, max 100: larger values are clamped. Default: 10.", example = 10),
        ("type" = Option<StockFilter>, Query, description = "Filter by product type. One of: linux, vps.", example = "linux"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 if the page is unchanged."),
    ),
    responses(
        (status = 200, description = "A page of product stock.", body = ApiResponse<StockListData>, example = json!({
            "status": "success",
            "message": "Product stock retrieved successfully",
            "data": {
                "stock": [
                    {"id": "prod_abc123", "name": "Linux VPS 4GB", "vmType": "LXC", "packName": "4GB Linux Pack", "stock": 25, "stockStatus": "IN_STOCK"},
                    {"id": "prod_def456", "name": "Linux VPS 2GB", "vmType": "LXC", "packName": "2GB Linux Pack", "stock": 4, "stockStatus": "LOW_STOCK"},
                    {"id": "prod_ghi789", "name": "Linux VPS 1GB", "vmType": "LXC", "packName": "1GB Linux Pack", "stock": 0, "stockStatus": "OUT_OF_STOCK"}
                ],
                "pagination": {"page": 1, "limit": 10, "total": 12, "totalPages": 2, "hasNext": true, "hasPrev": false},
                "mode": "test",
                "requestId": "req_1706611200000_abc123def"
            },
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current. No body; costs no quota."),
        (status = 400, description = "Invalid type value — must be 'linux' or 'vps'\nInvalid page value — must be a positive integer\nInvalid limit value — must be a positive integer", body = ErrorEnvelope),
    )
)]
pub async fn list_product_stock(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    if_none_match: IfNoneMatch,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let vm_type = match query.get("type") {
        None => None,
        Some(raw) => Some(VmType::from_filter(raw).ok_or_else(|| {
            ApiError::bad_request("Invalid type value — must be 'linux' or 'vps'")
        })?),
    };
    let page = super::page_of(&query)?;
    let result = state.ops.list_stock(caller.scope(), vm_type, page).await?;
    let rows = result
        .products
        .iter()
        .map(|p| stock_row(&state, p))
        .collect();
    let data = StockListData {
        stock: rows,
        pagination: Pagination::new(page, result.total).into(),
    };
    let tag = EntityTag::of(&data);
    Ok(Success::new(
        "Product stock retrieved successfully",
        data,
        caller.mode,
        &ctx,
    )
    .with_etag(if_none_match, tag))
}

#[utoipa::path(
    get,
    path = "/api/v1/products/stock/{id}",
    tag = "Products",
    operation_id = "getProductStock",
    summary = "Get Product Stock",
    description = "Returns the current stock level for a single product by its ID. Sends an `ETag`; a matching `If-None-Match` answers `304 Not Modified` at no quota cost.",
    params(
        ("id" = String, Path, description = "The unique product identifier.", example = "prod_abc123"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 if the stock is unchanged."),
    ),
    responses(
        (status = 200, description = "The product's stock.", body = ApiResponse<StockData>, example = json!({
            "status": "success",
            "message": "Product stock retrieved successfully",
            "data": {
                "stock": {"id": "prod_abc123", "name": "Linux VPS 4GB", "vmType": "LXC", "packName": "4GB Linux Pack", "stock": 25, "stockStatus": "IN_STOCK"},
                "mode": "test",
                "requestId": "req_1706611200000_abc123def"
            },
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current. No body; costs no quota."),
        (status = 404, description = "Product not found", body = ErrorEnvelope),
    )
)]
pub async fn get_product_stock(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    if_none_match: IfNoneMatch,
    Path(product_id): Path<String>,
) -> Result<Success, ApiError> {
    let product = state.ops.stock(caller.scope(), &product_id).await?;
    let data = StockData {
        stock: stock_row(&state, &product),
    };
    let tag = EntityTag::of(&data);
    Ok(Success::new(
        "Product stock retrieved successfully",
        data,
        caller.mode,
        &ctx,
    )
    .with_etag(if_none_match, tag))
}
