//! `/api/v1/services/{serviceId}/...`: power, address, status, password and
//! rebuild of one service, renewal and MAC reset.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{time, OsChoice};
use advps_drivers::{PowerOutcome, StopMode};
use advps_store::ServiceRecord;

use super::{OsRef, ServiceTypeWord, TaskStatusWord};
use crate::auth::Caller;
use crate::envelope::{
    ApiMode, ApiResponse, EntityTag, ErrorEnvelope, IfNoneMatch, RequestContext, Success,
};
use crate::extract::{Field, JsonBody, Object, RequestBody, Whole};
use crate::ops::selling::{RenewServices, MAX_RENEW, MAX_VALIDITY_DAYS};
use crate::ops::{DEFAULT_GRACEFUL_SECS, INVALID_OS};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_service))
        .routes(routes!(stop_service))
        .routes(routes!(reboot_service))
        .routes(routes!(configure_ip))
        .routes(routes!(get_service_status))
        .routes(routes!(generate_password))
        .routes(routes!(rebuild_service))
        // Polling the tasks these operations start: registered here so that
        // the document lists it among them, where it has always been.
        .routes(routes!(super::tasks::get_task_status))
        .routes(routes!(renew_services))
        .routes(routes!(reset_mac))
}

/// The state word of a power answer.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PowerWord {
    Started,
    Stopped,
    Running,
}

/// Which path a stop or reboot took: the guest shut down on request
/// (`graceful`), the power was cut at once (`forced`), or the guest did not
/// shut down within the timeout and was forced off (`graceful_then_forced`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerModeWord {
    Graceful,
    Forced,
    GracefulThenForced,
}

impl From<PowerOutcome> for PowerModeWord {
    fn from(o: PowerOutcome) -> Self {
        match o {
            PowerOutcome::Graceful => PowerModeWord::Graceful,
            PowerOutcome::Forced => PowerModeWord::Forced,
            PowerOutcome::GracefulThenForced => PowerModeWord::GracefulThenForced,
        }
    }
}

/// `data` of start, stop and reboot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PowerData {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    pub service_type: ServiceTypeWord,
    pub status: PowerWord,
    #[schema(example = "vm1000")]
    pub vmid: String,
    /// Stop and reboot only: which path was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub power_mode: Option<PowerModeWord>,
}

/// How a stop or reboot asks the guest: `graceful` (the default) or `force`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerModeRequest {
    Graceful,
    Force,
}

/// Optional body of stop and reboot. Without a body (or with `{}`) the guest
/// is asked to shut down and forced off after 60 seconds. Other keys are
/// ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PowerRequest {
    #[serde(default)]
    #[schema(value_type = Option<PowerModeRequest>, required = false)]
    pub mode: Field<PowerModeRequest>,
    /// Seconds the guest gets to shut down before it is forced off (graceful mode only).
    #[serde(default)]
    #[schema(value_type = Option<u32>, required = false, minimum = 1, maximum = 600, example = 60)]
    pub timeout_seconds: Field<Whole>,
}

impl RequestBody for PowerRequest {}

impl PowerRequest {
    /// The stop mode asked for, with the reference's message for each bad field.
    pub fn into_mode(self) -> Result<StopMode, ApiError> {
        let mode = self
            .mode
            .optional(|| ApiError::bad_request("Invalid mode: must be 'graceful' or 'force'"))?;
        let timeout = self
            .timeout_seconds
            .optional(|| ApiError::bad_request(TIMEOUT_ERROR))?
            .map(|Whole(n)| n)
            .unwrap_or(DEFAULT_GRACEFUL_SECS);
        if !(1..=600).contains(&timeout) {
            return Err(ApiError::bad_request(TIMEOUT_ERROR));
        }
        Ok(match mode {
            Some(PowerModeRequest::Force) => StopMode::Force,
            None | Some(PowerModeRequest::Graceful) => StopMode::Graceful {
                timeout: std::time::Duration::from_secs(timeout),
            },
        })
    }
}

const TIMEOUT_ERROR: &str = "Invalid timeoutSeconds: must be an integer from 1 to 600";

fn power_response(
    service: &ServiceRecord,
    status: PowerWord,
    verb: &str,
    outcome: Option<PowerOutcome>,
    caller: &Caller,
    ctx: &RequestContext,
) -> Success {
    Success::new(
        format!(
            "{} service {verb} successfully",
            service.service_type.label()
        ),
        PowerData {
            service_id: service.service_id.clone(),
            service_type: service.service_type.into(),
            status,
            vmid: service.vmid.clone(),
            power_mode: outcome.map(Into::into),
        },
        caller.mode,
        ctx,
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/start",
    tag = "Services",
    operation_id = "startService",
    summary = "Start Service",
    description = "Start a stopped service. Works for both VPS (VM) and Linux (LXC) service types.",
    params(("serviceId" = String, Path, description = "The unique identifier of the service to start.", example = "vps_service_1")),
    responses(
        (status = 200, description = "The service was started.", body = ApiResponse<PowerData>, example = json!({
            "status": "success",
            "message": "VPS service started successfully",
            "data": {"serviceId": "vps_service_1", "serviceType": "VPS", "status": "STARTED", "vmid": "vm1000", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 403, description = "Service has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
        (status = 500, description = "Failed to start service: service is already running\nFailed to start service: the hypervisor did not answer in time", body = ErrorEnvelope),
    )
)]
pub async fn start_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let service = state.ops.start(caller.scope(), &service_id).await?;
    Ok(power_response(
        &service,
        PowerWord::Started,
        "started",
        None,
        &caller,
        &ctx,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/stop",
    tag = "Services",
    operation_id = "stopService",
    summary = "Stop Service",
    description = "Stop a running service gracefully. An optional body chooses the power mode: `{\"mode\": \"force\"}` cuts the power at once; `{\"mode\": \"graceful\", \"timeoutSeconds\": N}` asks the guest to shut down and forces it off after N seconds (default 60). `data.powerMode` says which path was taken.",
    params(("serviceId" = String, Path, description = "The unique identifier of the service to stop.", example = "vps_service_1")),
    request_body(content = Option<PowerRequest>, description = "Optional power mode.", content_type = "application/json", example = json!({"mode": "graceful", "timeoutSeconds": 60})),
    responses(
        (status = 200, description = "The service was stopped.", body = ApiResponse<PowerData>, example = json!({
            "status": "success",
            "message": "VPS service stopped successfully",
            "data": {"serviceId": "vps_service_1", "serviceType": "VPS", "status": "STOPPED", "vmid": "vm1000", "powerMode": "graceful", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "Invalid mode: must be 'graceful' or 'force'\nInvalid timeoutSeconds: must be an integer from 1 to 600\nThe request body must be a JSON object\nMalformed JSON body", body = ErrorEnvelope),
        (status = 403, description = "Service has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
        (status = 500, description = "Failed to stop service: service is already stopped\nFailed to stop service: the hypervisor did not answer in time", body = ErrorEnvelope),
    )
)]
pub async fn stop_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
    JsonBody(Object(body)): JsonBody<Object<PowerRequest>>,
) -> Result<Success, ApiError> {
    let mode = body.into_mode()?;
    let (service, outcome) = state.ops.stop(caller.scope(), &service_id, mode).await?;
    Ok(power_response(
        &service,
        PowerWord::Stopped,
        "stopped",
        Some(outcome),
        &caller,
        &ctx,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/reboot",
    tag = "Services",
    operation_id = "rebootService",
    summary = "Reboot Service",
    description = "Reboot a running service. The service will be briefly unavailable during the restart cycle. The optional body is the same as for stop: `force` restarts at once, `graceful` (the default) asks the guest and forces the restart after `timeoutSeconds`.",
    params(("serviceId" = String, Path, description = "The unique identifier of the service to reboot.", example = "vps_service_1")),
    request_body(content = Option<PowerRequest>, description = "Optional power mode.", content_type = "application/json", example = json!({"mode": "force"})),
    responses(
        (status = 200, description = "The service was rebooted; its uptime restarts.", body = ApiResponse<PowerData>, example = json!({
            "status": "success",
            "message": "VPS service rebooted successfully",
            "data": {"serviceId": "vps_service_1", "serviceType": "VPS", "status": "RUNNING", "vmid": "vm1000", "powerMode": "graceful", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "Invalid mode: must be 'graceful' or 'force'\nInvalid timeoutSeconds: must be an integer from 1 to 600\nThe request body must be a JSON object\nMalformed JSON body", body = ErrorEnvelope),
        (status = 403, description = "Service has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
        (status = 500, description = "Failed to reboot service: service is not running\nFailed to reboot service: the hypervisor did not answer in time", body = ErrorEnvelope),
    )
)]
pub async fn reboot_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
    JsonBody(Object(body)): JsonBody<Object<PowerRequest>>,
) -> Result<Success, ApiError> {
    let mode = body.into_mode()?;
    let (service, outcome) = state.ops.reboot(caller.scope(), &service_id, mode).await?;
    Ok(power_response(
        &service,
        PowerWord::Running,
        "rebooted",
        Some(outcome),
        &caller,
        &ctx,
    ))
}

/// `data` of get-ip.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpData {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    pub service_type: ServiceTypeWord,
    /// Always `IP_CONFIGURED`.
    #[schema(example = "IP_CONFIGURED")]
    pub status: &'static str,
    #[schema(example = "192.168.1.100")]
    pub ip: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/get-ip",
    tag = "Services",
    operation_id = "configureIp",
    summary = "Configure IP Address",
    description = "Assign or configure an IP address for a VPS or Provisional VPS service. Not available for standard Linux containers. The address is stable: calling it again returns the same one.",
    params(("serviceId" = String, Path, description = "The unique service identifier (VPS or Provisional VPS only).", example = "vps_service_1")),
    responses(
        (status = 200, description = "The address is configured.", body = ApiResponse<IpData>, example = json!({
            "status": "success",
            "message": "VPS IP configured successfully",
            "data": {"serviceId": "vps_service_1", "serviceType": "VPS", "status": "IP_CONFIGURED", "ip": "192.168.1.100", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "IP configuration not supported for this service type", body = ErrorEnvelope),
        (status = 403, description = "Service has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
        (status = 500, description = "Failed to configure IP: no free address in the node's IP pools\nFailed to configure IP: service is not running", body = ErrorEnvelope),
    )
)]
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
        IpData {
            service_id: service.service_id.clone(),
            service_type: service.service_type.into(),
            status: "IP_CONFIGURED",
            ip,
        },
        caller.mode,
        &ctx,
    ))
}

/// `data.service`: the nested shape that client programs read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusService {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    #[schema(example = "192.168.1.100")]
    pub ip: Option<String>,
    #[schema(example = "RUNNING")]
    pub running_status: String,
    pub os: Option<OsRef>,
    /// RFC 3339 UTC, or null for a service that does not expire.
    pub expiry_date: Option<String>,
}

/// `data.vmStatus`: the live state in lower case (`running`, `stopped`, ...), never empty.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmStatus {
    #[schema(example = "running")]
    pub status: String,
    /// `null` when it cannot be measured (a VM whose guest agent does not answer).
    #[schema(example = 86400)]
    pub uptime: Option<i64>,
}

/// `data` of service status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusData {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    pub service_type: ServiceTypeWord,
    /// `RUNNING`, `STOPPED` or a transitional state such as `REBUILDING`.
    #[schema(example = "RUNNING")]
    pub running_status: String,
    #[schema(example = "192.168.1.100")]
    pub ip: Option<String>,
    /// Seconds since the service last started; 0 when stopped; `null` when
    /// it cannot be measured (a VM whose guest agent does not answer).
    #[schema(example = 86400)]
    pub uptime: Option<i64>,
    pub service: StatusService,
    pub vm_status: VmStatus,
    pub resources: super::usage::Resources,
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{serviceId}/status",
    tag = "Services",
    operation_id = "getServiceStatus",
    summary = "Get Service Status",
    description = "Retrieve the current status and resource usage of a service. `data.resources` is measured on the engine at the call (simulated in the sandbox): CPU percent and byte rates are the change since the service's reading before (by this call or the background sampler), so the first reading after a start has null rates; a stopped service reports zero CPU and rates and its totals; a figure the engine cannot give is null (disk usage on storage without quotas, and a Proxmox VE VM's disk). The answer carries a weak `ETag` that ignores the uptime and usage (which move on their own): send it back in `If-None-Match` and an unchanged service answers `304 Not Modified`, which costs no quota.",
    params(
        ("serviceId" = String, Path, description = "The unique identifier of the service.", example = "vps_service_1"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 if the state is unchanged."),
    ),
    responses(
        (status = 200, description = "The service's status.", body = ApiResponse<StatusData>, example = json!({
            "status": "success",
            "message": "Service status retrieved successfully",
            "data": {
                "serviceId": "vps_service_1", "serviceType": "VPS", "runningStatus": "RUNNING", "ip": "192.168.1.100", "uptime": 86400,
                "service": {"serviceId": "vps_service_1", "ip": "192.168.1.100", "runningStatus": "RUNNING", "os": {"id": "ubuntu-22.04", "name": "Ubuntu 22.04"}, "expiryDate": null},
                "vmStatus": {"status": "running", "uptime": 86400},
                "resources": {
                    "cpu": {"cores": 2, "usagePercent": 12.5},
                    "memory": {"usedBytes": 1073741824, "totalBytes": 4294967296_u64},
                    "disk": {"usedBytes": 6442450944_u64, "totalBytes": 42949672960_u64},
                    "network": {"rxBytes": 52428800, "txBytes": 10485760, "rxBytesPerSecond": 2048.0, "txBytesPerSecond": 512.0},
                    "sampledAt": "2024-01-30T12:00:00.000Z"
                },
                "mode": "test", "requestId": "req_1706611200000_abc123def"
            },
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current. No body; costs no quota."),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
    )
)]
pub async fn get_service_status(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    if_none_match: IfNoneMatch,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let (view, resources) = state.ops.status(caller.scope(), &service_id).await?;
    let service = &view.service;
    let os = service.os_slug.as_ref().map(|slug| OsRef {
        id: slug.clone(),
        name: service.os_name.clone().unwrap_or_else(|| slug.clone()),
    });
    let data = StatusData {
        service_id: service.service_id.clone(),
        service_type: service.service_type.into(),
        running_status: view.running_status.clone(),
        ip: view.ip.clone(),
        uptime: view.uptime,
        service: StatusService {
            service_id: service.service_id.clone(),
            ip: view.ip.clone(),
            running_status: view.running_status.clone(),
            os,
            expiry_date: service.expires_at.map(time::format_millis),
        },
        vm_status: VmStatus {
            status: view.vm_status.clone(),
            uptime: view.uptime,
        },
        resources: (&resources).into(),
    };
    // Uptime and usage move on their own; the state is the rest.
    let tag = EntityTag::of(&(
        &data.service_id,
        &data.service_type,
        &data.running_status,
        &data.ip,
        &data.service.os,
        &data.service.expiry_date,
        &data.vm_status.status,
    ));
    Ok(Success::new(
        "Service status retrieved successfully",
        data,
        caller.mode,
        &ctx,
    )
    .with_etag(if_none_match, tag))
}

/// `data` of generate-password.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordData {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    /// The new root password, shown only this once.
    #[schema(example = "Xk9mP2nQr7vLa8Tz3WbY")]
    pub password: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/generate-password",
    tag = "Services",
    operation_id = "generatePassword",
    summary = "Generate Password",
    description = "Generate a new root/admin password for a service. The service must be running. The new password will be returned once and stored securely.",
    params(("serviceId" = String, Path, description = "The unique identifier of the service.", example = "vps_service_1")),
    responses(
        (status = 200, description = "The new password.", body = ApiResponse<PasswordData>, example = json!({
            "status": "success",
            "message": "Password generated successfully",
            "data": {"serviceId": "vps_service_1", "password": "Xk9mP2nQr7vL", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "Service must be running before generating a password", body = ErrorEnvelope),
        (status = 403, description = "Service has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
        (status = 500, description = "Failed to generate password: the hypervisor did not answer in time", body = ErrorEnvelope),
    )
)]
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
        PasswordData {
            service_id: service.service_id.clone(),
            password,
        },
        caller.mode,
        &ctx,
    ))
}

/// Body of rebuild.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RebuildRequest {
    /// The operating system identifier to install (a slug such as
    /// `ubuntu-22.04`, or the id the OS list gives it).
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "ubuntu-22.04")]
    pub os: Field<OsChoice>,
}

impl RequestBody for RebuildRequest {
    fn not_an_object() -> ApiError {
        ApiError::bad_request(INVALID_OS)
    }
}

/// `data` of rebuild.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildData {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    /// Poll it at `GET /api/v1/services/task/{taskId}/status`.
    #[schema(example = "4f9d2c1e-8a7b-4c3d-9e2f-1a2b3c4d5e6f")]
    pub task_id: String,
    pub service_type: ServiceTypeWord,
    pub status: TaskStatusWord,
    /// The same value as `mode`, under the name the reference's rebuild example uses.
    pub api_mode: ApiMode,
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/rebuild",
    tag = "Services",
    operation_id = "rebuildService",
    summary = "Rebuild Service",
    description = "Rebuild a service with a fresh OS image. This is an asynchronous operation — use the returned taskId to poll for completion. While it runs, the service's `runningStatus` is `REBUILDING` and other mutating calls answer 409 with `errors.taskId`. In the sandbox, `{\"os\": \"sandbox-fail\"}` makes the task end FAILED.",
    params(("serviceId" = String, Path, description = "The unique identifier of the service to rebuild.", example = "vps_service_1")),
    request_body(content = RebuildRequest, description = "JSON body with os (string, required) — the operating system identifier to install.", content_type = "application/json"),
    responses(
        (status = 200, description = "The rebuild task was created.", body = ApiResponse<RebuildData>, example = json!({
            "status": "success",
            "success": true,
            "message": "VPS rebuild initiated successfully",
            "data": {"serviceId": "vps_service_1", "taskId": "uuid-generated-task-id", "serviceType": "VPS", "status": "PENDING", "apiMode": "test", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "Missing or invalid os in request body\nMalformed JSON body", body = ErrorEnvelope),
        (status = 403, description = "Monthly rebuild limit reached\nService has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
        (status = 500, description = "No OS templates available for the selected OS\nFailed to rebuild service: service is provisioning", body = ErrorEnvelope),
    )
)]
pub async fn rebuild_service(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
    JsonBody(Object(body)): JsonBody<Object<RebuildRequest>>,
) -> Result<Success, ApiError> {
    let os = body.os.required(|| ApiError::bad_request(INVALID_OS))?;
    let (service, task) = state.ops.rebuild(caller.scope(), &service_id, os).await?;
    Ok(Success::new(
        format!(
            "{} rebuild initiated successfully",
            service.service_type.label()
        ),
        RebuildData {
            service_id: service.service_id.clone(),
            task_id: task.id.clone(),
            service_type: service.service_type.into(),
            status: task.status.into(),
            api_mode: caller.mode.into(),
        },
        caller.mode,
        &ctx,
    )
    .with_rebuild_shape())
}

/// One service's validity in a renewal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceValidity {
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "KYOFMI")]
    pub service_id: Field<String>,
    /// Days to add.
    #[serde(default)]
    #[schema(value_type = u32, required = true, example = 30, minimum = 1, maximum = 365)]
    pub validity: Field<Whole>,
}

/// Body of renew.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewRequest {
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "VPS040426-0008")]
    pub order_id: Field<String>,
    #[serde(default)]
    #[schema(value_type = Vec<String>, required = true, example = json!(["KYOFMI"]))]
    pub service_ids: Field<Vec<String>>,
    /// Days per service; a service not listed gets the order's validity.
    #[serde(default)]
    #[schema(value_type = Option<Vec<ServiceValidity>>, required = false)]
    pub service_validities: Field<Vec<Field<Object<ServiceValidity>>>>,
}

const ORDER_ID_REQUIRED: &str = "orderId is required";

impl RequestBody for RenewRequest {
    fn not_an_object() -> ApiError {
        ApiError::bad_request(ORDER_ID_REQUIRED)
    }
}

impl RenewRequest {
    /// The renewal asked for, checked in the reference's order: the order,
    /// the services (a list of ids, each named once, at most
    /// [`MAX_RENEW`]), then the days per service.
    pub fn into_renewal(self) -> Result<RenewServices, ApiError> {
        let order_id = self
            .order_id
            .required_text(|| ApiError::bad_request(ORDER_ID_REQUIRED))?;
        let service_ids = self
            .service_ids
            .required(|| ApiError::bad_request(SERVICE_IDS_REQUIRED))?;
        if service_ids.is_empty() {
            return Err(ApiError::bad_request(SERVICE_IDS_REQUIRED));
        }
        if service_ids.len() > MAX_RENEW {
            return Err(ApiError::bad_request(format!(
                "At most {MAX_RENEW} services can be renewed at once"
            )));
        }
        // A service named twice would be charged and extended twice.
        let mut seen = HashSet::new();
        let mut repeated: Vec<&str> = Vec::new();
        for id in &service_ids {
            if !seen.insert(id.as_str()) && !repeated.contains(&id.as_str()) {
                repeated.push(id);
            }
        }
        if !repeated.is_empty() {
            return Err(ApiError::BadRequest {
                message: "serviceIds must not name a service more than once".into(),
                errors: Some(serde_json::json!({ "duplicateServiceIds": repeated })),
            });
        }
        let mut validities = HashMap::new();
        let entries = self
            .service_validities
            .optional(|| ApiError::bad_request("serviceValidities must be a list"))?
            .unwrap_or_default();
        for entry in entries {
            let no_id = || ApiError::bad_request("serviceValidities[].serviceId is required");
            let Object(entry) = entry.required(no_id)?;
            let id = entry.service_id.required(no_id)?;
            let out_of_range = || {
                ApiError::bad_request(format!(
                    "serviceValidities[].validity must be 1 to {MAX_VALIDITY_DAYS} days"
                ))
            };
            let Whole(days) = entry.validity.required(out_of_range)?;
            let days = i64::try_from(days)
                .ok()
                .filter(|d| (1..=MAX_VALIDITY_DAYS).contains(d))
                .ok_or_else(out_of_range)?;
            validities.insert(id, days);
        }
        Ok(RenewServices {
            order_id,
            service_ids,
            validities,
        })
    }
}

const SERVICE_IDS_REQUIRED: &str = "serviceIds must be a non-empty list of service ids";

/// A renewed service.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewedService {
    #[schema(example = "KYOFMI")]
    pub service_id: String,
    pub expiry_date: Option<String>,
    #[schema(example = "RUNNING")]
    pub running_status: String,
}

/// `data` of renew.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewData {
    #[schema(example = "VPS040426-0008")]
    pub order_id: String,
    pub services: Vec<RenewedService>,
    /// A decimal amount, e.g. `12.5`.
    #[schema(example = 12.5)]
    pub total_amount: f64,
    #[schema(example = "USD")]
    pub currency: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/services/renew",
    tag = "Services",
    operation_id = "renewServices",
    summary = "Renew Services",
    description = "Extends the expiry of services of an order by `validity` days, paid from the account's wallet. Allowed from 5 days before expiry to 1 day after; a suspended service comes back up.",
    request_body(content = RenewRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The services were renewed.", body = ApiResponse<RenewData>, example = json!({
            "status": "success",
            "message": "Services renewed successfully",
            "data": {"orderId": "VPS040426-0008", "services": [{"serviceId": "KYOFMI", "expiryDate": "2024-03-01T12:00:00.000Z", "runningStatus": "RUNNING"}], "totalAmount": 12.5, "currency": "USD", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "orderId is required\nserviceIds must be a non-empty list of service ids\nserviceIds must not name a service more than once\nService KYOFMI can be renewed from 5 days before to 1 day after its expiry (2024-03-01T12:00:00.000Z)\nMalformed JSON body", body = ErrorEnvelope),
        (status = 402, description = "Insufficient wallet balance", body = ErrorEnvelope),
        (status = 404, description = "Order not found or not accessible\nService not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
    )
)]
pub async fn renew_services(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(Object(body)): JsonBody<Object<RenewRequest>>,
) -> Result<Success, ApiError> {
    let renewal = body.into_renewal()?;
    let (order_id, services, total, currency) = state.ops.renew(caller.scope(), renewal).await?;
    let renewed = services
        .iter()
        .map(|s| RenewedService {
            service_id: s.service_id.clone(),
            expiry_date: s.expires_at.map(time::format_millis),
            running_status: s.power_state.as_str().to_string(),
        })
        .collect();
    Ok(Success::new(
        "Services renewed successfully",
        RenewData {
            order_id,
            services: renewed,
            total_amount: advps_domain::money::as_decimal(total),
            currency,
        },
        caller.mode,
        &ctx,
    ))
}

/// `data` of reset-mac.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MacData {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    pub service_type: ServiceTypeWord,
    #[schema(example = "02:1a:2b:3c:4d:5e")]
    pub mac: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{serviceId}/reset-mac",
    tag = "Services",
    operation_id = "resetMac",
    summary = "Reset MAC Address",
    description = "Gives a VPS's network card a new MAC address (a running guest restarts for it). VPS only; once per 24 hours per service.",
    params(("serviceId" = String, Path, description = "The unique identifier of a VPS service.", example = "vps_service_1")),
    responses(
        (status = 200, description = "The new MAC address.", body = ApiResponse<MacData>, example = json!({
            "status": "success",
            "message": "MAC address reset successfully",
            "data": {"serviceId": "vps_service_1", "serviceType": "VPS", "mac": "02:1a:2b:3c:4d:5e", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 403, description = "Service has expired and is suspended; renew it to use it again", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
        (status = 409, description = "Service is busy: a task is in progress", body = ErrorEnvelope),
        (status = 429, description = "The MAC address can be reset once every 24 hours\nToo many requests: rate limit exceeded", body = ErrorEnvelope),
        (status = 500, description = "Failed to reset MAC address: the hypervisor did not answer in time", body = ErrorEnvelope),
    )
)]
pub async fn reset_mac(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(service_id): Path<String>,
) -> Result<Success, ApiError> {
    let (service, mac) = state.ops.reset_mac(caller.scope(), &service_id).await?;
    Ok(Success::new(
        "MAC address reset successfully",
        MacData {
            service_id: service.service_id.clone(),
            service_type: service.service_type.into(),
            mac,
        },
        caller.mode,
        &ctx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::FromJson;
    use crate::ops::DEFAULT_POWER_MODE;
    use serde_json::{json, Value};

    fn power_mode(body: &Value) -> Result<StopMode, ApiError> {
        Object::<PowerRequest>::from_json(body.clone())?
            .0
            .into_mode()
    }

    #[test]
    fn power_bodies() {
        assert_eq!(power_mode(&Value::Null).unwrap(), DEFAULT_POWER_MODE);
        assert_eq!(power_mode(&json!({})).unwrap(), DEFAULT_POWER_MODE);
        assert_eq!(
            power_mode(&json!({"mode": "force"})).unwrap(),
            StopMode::Force
        );
        assert_eq!(
            power_mode(&json!({"timeoutSeconds": 5.0})).unwrap(),
            StopMode::Graceful {
                timeout: std::time::Duration::from_secs(5)
            }
        );
        assert_eq!(
            power_mode(&json!({"mode": "graceful", "timeoutSeconds": 5})).unwrap(),
            StopMode::Graceful {
                timeout: std::time::Duration::from_secs(5)
            }
        );
        for bad in [
            json!({"mode": "hard"}),
            json!({"mode": 1}),
            json!({"timeoutSeconds": 0}),
            json!({"timeoutSeconds": 601}),
            json!({"timeoutSeconds": "5"}),
            json!({"timeoutSeconds": 1.5}),
            json!({"timeoutSeconds": -5.0}),
            json!([]),
        ] {
            assert!(power_mode(&bad).is_err(), "{bad}");
        }
    }
}
