//! `/api/v1/purchase`: buying Linux containers and VPS, and reading orders;
//! `/api/v1/orders`: the account's orders, newest first.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{money, time, OsChoice, Pagination};
use advps_store::OrderRecord;

use super::{OsRef, ServiceTypeWord};
use crate::auth::Caller;
use crate::envelope::{ApiResponse, ErrorEnvelope, RequestContext, Success};
use crate::extract::{Field, JsonBody, Object, RequestBody, Whole};
use crate::ops::selling::{
    is_email, OrderView, OsWanted, Purchase, PurchaseKind, MAX_QUANTITY, MAX_VALIDITY_DAYS,
};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(purchase_linux))
        .routes(routes!(purchase_vps))
        .routes(routes!(get_order))
        .routes(routes!(list_orders))
}

/// Body of a purchase. Unknown extra keys are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseRequest {
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "prod_abc123")]
    pub product_id: Field<String>,
    /// RAM size, written like "4 GB" (also "4GB").
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "4 GB")]
    pub ram: Field<String>,
    /// An OS id or slug from the OS list; null or absent for the product's default OS.
    #[serde(default)]
    #[schema(value_type = Option<String>, required = false, example = "ubuntu-22.04")]
    pub os_id: Field<OsChoice>,
    /// Default 1.
    #[serde(default)]
    #[schema(value_type = Option<u32>, required = false, minimum = 1, maximum = 10, example = 1)]
    pub quantity: Field<Whole>,
    /// Days, default 30.
    #[serde(default)]
    #[schema(value_type = Option<u32>, required = false, minimum = 1, maximum = 365, example = 30)]
    pub validity: Field<Whole>,
    #[serde(default)]
    #[schema(value_type = Option<String>, required = false, max_length = 500)]
    pub remark: Field<String>,
    /// VPS purchases only (required there).
    #[serde(default)]
    #[schema(value_type = Option<String>, required = false, example = "Jane Doe")]
    pub name: Field<String>,
    /// VPS purchases only (required there).
    #[serde(default)]
    #[schema(value_type = Option<String>, required = false, example = "jane@example.com")]
    pub email: Field<String>,
}

impl RequestBody for PurchaseRequest {
    /// A purchase names at least a product: no body is no purchase.
    const MAY_BE_ABSENT: bool = false;
}

/// The longest remark an order keeps, in bytes.
const MAX_REMARK: usize = 500;

/// A whole number in `1..=max`, `None` when not sent.
fn whole_in(field: Field<Whole>, max: i64, message: &str) -> Result<Option<i64>, ApiError> {
    let refuse = || ApiError::bad_request(message);
    match field.optional(refuse)? {
        None => Ok(None),
        Some(Whole(n)) => i64::try_from(n)
            .ok()
            .filter(|n| (1..=max).contains(n))
            .map(Some)
            .ok_or_else(refuse),
    }
}

impl PurchaseRequest {
    /// The purchase asked for, checked field by field in the reference's
    /// order, each bad field with its own message.
    pub fn into_purchase(self, kind: PurchaseKind) -> Result<Purchase, ApiError> {
        let product_id = self
            .product_id
            .required_text(|| ApiError::bad_request("productId is required"))?;
        let ram = self
            .ram
            .required(|| ApiError::bad_request("ram is required, e.g. \"4 GB\""))?;
        let ram_mb = money::parse_ram(&ram).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid ram value '{ram}': write it like \"4 GB\""))
        })?;
        let quantity = whole_in(
            self.quantity,
            MAX_QUANTITY,
            &format!("quantity must be a whole number from 1 to {MAX_QUANTITY}"),
        )?
        .unwrap_or(1);
        let validity_days = whole_in(
            self.validity,
            MAX_VALIDITY_DAYS,
            &format!("validity must be a whole number of days from 1 to {MAX_VALIDITY_DAYS}"),
        )?
        .unwrap_or(30);
        let remark = self
            .remark
            .optional(|| ApiError::bad_request("remark must be a string"))?;
        if remark.as_ref().is_some_and(|r| r.len() > MAX_REMARK) {
            return Err(ApiError::bad_request(format!(
                "remark must be at most {MAX_REMARK} characters"
            )));
        }
        let (customer_name, customer_email) = match kind {
            PurchaseKind::Vps => {
                let name = self
                    .name
                    .required_text(|| ApiError::bad_request("name is required"))?;
                let no_email =
                    || ApiError::bad_request("email is required and must be an email address");
                let email = self.email.required_text(no_email)?;
                if !is_email(&email) {
                    return Err(no_email());
                }
                (Some(name), Some(email))
            }
            PurchaseKind::Linux => (None, None),
        };
        let os = match self.os_id {
            Field::Absent | Field::Null => OsWanted::ProductDefault,
            Field::Valid(choice) => OsWanted::Choice(choice),
            Field::Invalid(_) => OsWanted::Unknown,
        };
        Ok(Purchase {
            kind,
            product_id,
            ram_mb,
            os,
            quantity,
            validity_days,
            remark,
            customer_name,
            customer_email,
        })
    }
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderData {
    #[schema(example = "VPS040426-0008")]
    pub order_id: String,
    /// `PENDING`, then `COMPLETED` (or `ASSIGNED`); `FAILED`, `CANCELLED` or `REJECTED` when it did not go through.
    #[schema(example = "PENDING")]
    pub status: String,
    #[schema(example = "prod_abc123")]
    pub product_id: String,
    #[schema(example = "4 GB")]
    pub ram: String,
    pub os: OsRef,
    #[schema(example = 1)]
    pub quantity: i64,
    /// Days.
    #[schema(example = 30)]
    pub validity: i64,
    #[schema(example = 12.5)]
    pub total_amount: f64,
    #[schema(example = "USD")]
    pub currency: String,
    pub remark: Option<String>,
    pub error: Option<String>,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub created_at: String,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub updated_at: String,
}

/// A service of an order; its address and password once the order is COMPLETED.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderService {
    #[schema(example = 42)]
    pub id: i64,
    #[schema(example = "KYOFMI")]
    pub service_id: String,
    pub service_type: ServiceTypeWord,
    pub ip: Option<String>,
    /// The login name, decided by the OS: `Administrator` for Windows, `root`
    /// otherwise, or what the operator set for the OS image.
    #[schema(example = "root")]
    pub username: String,
    pub password: Option<String>,
    #[schema(example = "Ubuntu 22.04")]
    pub os: Option<String>,
    #[schema(example = "RUNNING")]
    pub status: String,
    pub expiry_date: Option<String>,
}

/// `data` of purchases and order reads.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    pub order: OrderData,
    pub services: Vec<OrderService>,
}

fn order_data(order: &OrderRecord) -> OrderData {
    OrderData {
        order_id: order.id.clone(),
        status: order.status.clone(),
        product_id: order.product_id.clone(),
        ram: money::format_ram(order.ram_mb),
        os: OsRef {
            id: order.os_slug.clone(),
            name: order.os_name.clone(),
        },
        quantity: order.quantity,
        validity: order.validity_days,
        total_amount: money::as_decimal(order.amount_minor),
        currency: order.currency.clone(),
        remark: order.remark.clone(),
        error: order.error.clone(),
        created_at: time::format_millis(order.created_at),
        updated_at: time::format_millis(order.updated_at),
    }
}

fn order_response(view: &OrderView) -> OrderResponse {
    let order = &view.order;
    let done = order.status == "COMPLETED";
    OrderResponse {
        order: order_data(order),
        services: view
            .services
            .iter()
            .zip(&view.passwords)
            .map(|(s, password)| OrderService {
                id: s.pk,
                service_id: s.service_id.clone(),
                service_type: s.service_type.into(),
                ip: if done { s.ip.clone() } else { None },
                // A row without one takes the default for its OS.
                username: s.username.clone().unwrap_or_else(|| {
                    advps_domain::os::default_username(
                        s.os_slug.as_deref().unwrap_or_default(),
                        s.os_name.as_deref().unwrap_or_default(),
                    )
                    .to_string()
                }),
                password: password.clone(),
                os: s.os_name.clone().or_else(|| s.os_slug.clone()),
                status: s.power_state.as_str().to_string(),
                expiry_date: s.expires_at.map(time::format_millis),
            })
            .collect(),
    }
}

async fn purchase(
    state: AppState,
    caller: Caller,
    ctx: RequestContext,
    kind: PurchaseKind,
    body: PurchaseRequest,
) -> Result<Success, ApiError> {
    let purchase = body.into_purchase(kind)?;
    let view = state.ops.purchase(caller.scope(), purchase).await?;
    Ok(Success::new(
        "Order placed successfully",
        order_response(&view),
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/purchase/linux",
    tag = "Purchase",
    operation_id = "purchaseLinux",
    summary = "Buy Linux Containers",
    description = "Places an order for Linux (LXC) containers of a product, paid from the account's wallet. Provisioning runs in the background: poll the order until it is COMPLETED.",
    request_body(content = PurchaseRequest, content_type = "application/json", example = json!({"productId": "prod_abc123", "ram": "4 GB", "osId": null, "quantity": 1, "validity": 30, "remark": "web"})),
    responses(
        (status = 200, description = "The order was placed.", body = ApiResponse<OrderResponse>, example = json!({
            "status": "success",
            "message": "Order placed successfully",
            "data": {
                "order": {"orderId": "LXC300124-0001", "status": "PENDING", "productId": "prod_abc123", "ram": "4 GB", "os": {"id": "ubuntu-22.04", "name": "Ubuntu 22.04"}, "quantity": 1, "validity": 30, "totalAmount": 12.5, "currency": "USD", "remark": "web", "error": null, "createdAt": "2024-01-30T12:00:00.000Z", "updatedAt": "2024-01-30T12:00:00.000Z"},
                "services": [{"id": 42, "serviceId": "KYOFMI", "serviceType": "LINUX", "ip": null, "username": "root", "password": null, "os": "Ubuntu 22.04", "status": "PROVISIONING", "expiryDate": "2024-02-29T12:00:00.000Z"}],
                "mode": "test", "requestId": "req_1706611200000_abc123def"
            },
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "productId is required\nram is required, e.g. \"4 GB\"\nUnknown osId for this product type\nThe request body must be a JSON object\nMalformed JSON body", body = ErrorEnvelope),
        (status = 402, description = "Insufficient wallet balance", body = ErrorEnvelope),
        (status = 404, description = "Product not found", body = ErrorEnvelope),
        (status = 409, description = "Product is out of stock", body = ErrorEnvelope),
        (status = 500, description = "No OS templates available for the selected OS", body = ErrorEnvelope),
    )
)]
pub async fn purchase_linux(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(Object(body)): JsonBody<Object<PurchaseRequest>>,
) -> Result<Success, ApiError> {
    purchase(state, caller, ctx, PurchaseKind::Linux, body).await
}

#[utoipa::path(
    post,
    path = "/api/v1/purchase/vps",
    tag = "Purchase",
    operation_id = "purchaseVps",
    summary = "Buy VPS",
    description = "Places an order for virtual machines of a product, paid from the account's wallet; `name` and `email` are required. Provisioning runs in the background: poll the order until it is COMPLETED.",
    request_body(content = PurchaseRequest, content_type = "application/json", example = json!({"productId": "prod_vps4", "ram": "4 GB", "osId": "ubuntu-22.04", "quantity": 1, "validity": 30, "name": "Jane Doe", "email": "jane@example.com"})),
    responses(
        (status = 200, description = "The order was placed.", body = ApiResponse<OrderResponse>),
        (status = 400, description = "productId is required\nram is required, e.g. \"4 GB\"\nname is required\nemail is required and must be an email address\nThe request body must be a JSON object\nMalformed JSON body", body = ErrorEnvelope),
        (status = 402, description = "Insufficient wallet balance", body = ErrorEnvelope),
        (status = 404, description = "Product not found", body = ErrorEnvelope),
        (status = 409, description = "Product is out of stock", body = ErrorEnvelope),
        (status = 500, description = "No OS templates available for the selected OS", body = ErrorEnvelope),
    )
)]
pub async fn purchase_vps(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(Object(body)): JsonBody<Object<PurchaseRequest>>,
) -> Result<Success, ApiError> {
    purchase(state, caller, ctx, PurchaseKind::Vps, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/purchase/{orderId}",
    tag = "Purchase",
    operation_id = "getOrder",
    summary = "Get Order",
    description = "An order and its services. The password of each service is final once the order is COMPLETED and does not change between polls.",
    params(("orderId" = String, Path, description = "The order id a purchase returned.", example = "VPS040426-0008")),
    responses(
        (status = 200, description = "The order.", body = ApiResponse<OrderResponse>),
        (status = 404, description = "Order not found or not accessible", body = ErrorEnvelope),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(order_id): Path<String>,
) -> Result<Success, ApiError> {
    let view = state.ops.order(caller.scope(), &order_id).await?;
    Ok(Success::new(
        "Order retrieved successfully",
        order_response(&view),
        caller.mode,
        &ctx,
    ))
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderListData {
    pub orders: Vec<OrderData>,
    #[schema(value_type = super::products::PageInfo)]
    pub pagination: Pagination,
}

#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "Purchase",
    operation_id = "listOrders",
    summary = "List Orders",
    description = "The account's orders in the calling key's mode, newest first, without their services (read one with Get Order for those and their passwords).",
    params(
        ("page" = Option<u32>, Query, minimum = 1, description = "Page number. Default: 1.", example = 1),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Results per page, max 100: larger values are clamped. Default: 10.", example = 10),
    ),
    responses(
        (status = 200, description = "Orders retrieved successfully", body = ApiResponse<OrderListData>),
        (status = 400, description = "Invalid page value — must be a positive integer\nInvalid limit value — must be a positive integer", body = ErrorEnvelope),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let page = super::page_of(&query)?;
    let (orders, total) = state.ops.orders(caller.scope(), page).await?;
    let data = OrderListData {
        orders: orders.iter().map(order_data).collect(),
        pagination: Pagination::new(page, total),
    };
    Ok(Success::new(
        "Orders retrieved successfully",
        data,
        caller.mode,
        &ctx,
    ))
}
