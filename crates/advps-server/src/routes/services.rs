//! `/api/v1/services/{serviceId}/...`: power, address, status, password and
//! rebuild of one service.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use advps_domain::time;
use advps_store::ServiceRecord;

use crate::auth::Caller;
use crate::envelope::{RequestContext, Success};
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/{service_id}/start", post(start_service))
        .route("/{service_id}/stop", post(stop_service))
        .route("/{service_id}/reboot", post(reboot_service))
        .route("/{service_id}/get-ip", post(configure_ip))
        .route("/{service_id}/status", get(get_service_status))
        .route("/{service_id}/generate-password", post(generate_password))
        .route("/{service_id}/rebuild", post(rebuild_service))
        .route("/{service_id}/reset-mac", post(reset_mac))
        .route("/renew", post(renew_services))
}

fn power_response(
    service: &ServiceRecord,
    status: &str,
    verb: &str,
    caller: &Caller,
    ctx: &RequestContext,
) -> Success {
    Success::new(
        format!(
            "{} service {verb} successfully",
            service.service_type.label()
        ),
        json!({
            "serviceId": service.service_id,
            "serviceType": service.service_type.as_str(),
            "status": status,
            "vmid": service.vmid,
        }),
        caller.mode,
        ctx,
    )
}

pub async fn start_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let service = state.ops.start(caller.scope(), &service_id).await?;
    Ok(power_response(
        &service, "STARTED", "started", &caller, &ctx,
    ))
}

pub async fn stop_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let service = state.ops.stop(caller.scope(), &service_id).await?;
    Ok(power_response(
        &service, "STOPPED", "stopped", &caller, &ctx,
    ))
}

pub async fn reboot_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let service = state.ops.reboot(caller.scope(), &service_id).await?;
    Ok(power_response(
        &service, "RUNNING", "rebooted", &caller, &ctx,
    ))
}

pub async fn configure_ip(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let (service, ip) = state.ops.configure_ip(caller.scope(), &service_id).await?;
    Ok(Success::new(
        format!(
            "{} IP configured successfully",
            service.service_type.label()
        ),
        json!({
            "serviceId": service.service_id,
            "serviceType": service.service_type.as_str(),
            "status": "IP_CONFIGURED",
            "ip": ip,
        }),
        caller.mode,
        &ctx,
    ))
}

pub async fn get_service_status(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let view = state.ops.status(caller.scope(), &service_id).await?;
    let service = &view.service;
    let os = match &service.os_slug {
        Some(slug) => json!({ "id": slug, "name": service.os_name.as_deref().unwrap_or(slug) }),
        None => Value::Null,
    };
    Ok(Success::new(
        "Service status retrieved successfully",
        json!({
            "serviceId": service.service_id,
            "serviceType": service.service_type.as_str(),
            "runningStatus": view.running_status,
            "ip": view.ip,
            "uptime": view.uptime,
            "service": {
                "serviceId": service.service_id,
                "ip": view.ip,
                "runningStatus": view.running_status,
                "os": os,
                "expiryDate": service.expires_at.map(time::format_millis),
            },
            "vmStatus": {
                "status": view.vm_status,
                "uptime": view.uptime,
            },
        }),
        caller.mode,
        &ctx,
    ))
}

pub async fn generate_password(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let (service, password) = state
        .ops
        .generate_password(caller.scope(), &service_id)
        .await?;
    Ok(Success::new(
        "Password generated successfully",
        json!({ "serviceId": service.service_id, "password": password }),
        caller.mode,
        &ctx,
    ))
}

pub async fn rebuild_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Success, ApiError> {
    let (service, task) = state
        .ops
        .rebuild(caller.scope(), &service_id, &body)
        .await?;
    Ok(Success::new(
        format!(
            "{} rebuild initiated successfully",
            service.service_type.label()
        ),
        json!({
            "serviceId": service.service_id,
            "taskId": task.id,
            "serviceType": service.service_type.as_str(),
            "status": task.status.as_str(),
        }),
        caller.mode,
        &ctx,
    )
    .with_rebuild_shape())
}

pub async fn renew_services(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> Result<Success, ApiError> {
    let (order_id, services, total, currency) = state.ops.renew(caller.scope(), &body).await?;
    let renewed: Vec<Value> = services
        .iter()
        .map(|s| {
            json!({
                "serviceId": s.service_id,
                "expiryDate": s.expires_at.map(time::format_millis),
                "runningStatus": s.power_state.as_str(),
            })
        })
        .collect();
    Ok(Success::new(
        "Services renewed successfully",
        json!({
            "orderId": order_id,
            "services": renewed,
            "totalAmount": advps_domain::money::as_decimal(total),
            "currency": currency,
        }),
        caller.mode,
        &ctx,
    ))
}

pub async fn reset_mac(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let (service, mac) = state.ops.reset_mac(caller.scope(), &service_id).await?;
    Ok(Success::new(
        "MAC address reset successfully",
        json!({
            "serviceId": service.service_id,
            "serviceType": service.service_type.as_str(),
            "mac": mac,
        }),
        caller.mode,
        &ctx,
    ))
}
