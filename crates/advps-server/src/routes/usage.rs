//! `GET /api/v1/services` (the caller's services) and
//! `GET /api/v1/services/{serviceId}/metrics` (a service's usage history),
//! and `data.resources` of the status answer (its usage now).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{time, Pagination, PowerState, ServiceType};

use super::products::PageInfo;
use super::{OsRef, ServiceTypeWord};
use crate::auth::Caller;
use crate::envelope::{
    ApiResponse, EntityTag, ErrorEnvelope, IfNoneMatch, RequestContext, Success,
};
use crate::ops::usage::{default_step_secs, Measured, MetricsRange, MAX_POINTS};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_services))
        .routes(routes!(get_service_metrics))
}

/// `resources.cpu`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuUsage {
    /// Cores the service may use; null when the engine does not say.
    #[schema(example = 2)]
    pub cores: Option<u32>,
    /// Percent of those cores busy since the reading before (0 when
    /// stopped); null for the first reading after a start.
    #[schema(example = 12.5)]
    pub usage_percent: Option<f64>,
}

/// `resources.memory` and `resources.disk`, in bytes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BytesUsage {
    /// Null when the engine cannot tell (disk usage on storage without quotas).
    #[schema(example = 1073741824)]
    pub used_bytes: Option<u64>,
    #[schema(example = 4294967296_u64)]
    pub total_bytes: Option<u64>,
}

/// `resources.network`: counters since the guest last started, and rates
/// since the reading before.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUsage {
    #[schema(example = 52428800)]
    pub rx_bytes: Option<u64>,
    #[schema(example = 10485760)]
    pub tx_bytes: Option<u64>,
    /// Null for the first reading after a start.
    #[schema(example = 2048.0)]
    pub rx_bytes_per_second: Option<f64>,
    #[schema(example = 512.0)]
    pub tx_bytes_per_second: Option<f64>,
}

/// `data.resources` of status: the service's usage, measured on its engine
/// (simulated in the sandbox). A figure the engine cannot give is null.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu: CpuUsage,
    pub memory: BytesUsage,
    pub disk: BytesUsage,
    pub network: NetworkUsage,
    /// When it was read (RFC 3339 UTC).
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub sampled_at: String,
}

impl From<&Measured> for Resources {
    fn from(m: &Measured) -> Self {
        Resources {
            cpu: CpuUsage {
                cores: m.cores,
                usage_percent: m.cpu_percent,
            },
            memory: BytesUsage {
                used_bytes: m.memory_used,
                total_bytes: m.memory_total,
            },
            disk: BytesUsage {
                used_bytes: m.disk_used,
                total_bytes: m.disk_total,
            },
            network: NetworkUsage {
                rx_bytes: m.rx_bytes,
                tx_bytes: m.tx_bytes,
                rx_bytes_per_second: m.rx_rate,
                tx_bytes_per_second: m.tx_rate,
            },
            sampled_at: time::format_millis(m.sampled_at),
        }
    }
}

/// The `type` filter of the service list.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceTypeFilter {
    Vps,
    Linux,
    ProvisionalVps,
}

/// The `status` filter of the service list.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunningStatusFilter {
    Running,
    Stopped,
    Rebuilding,
    Provisioning,
    Suspended,
}

/// One of the caller's services.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    pub service_type: ServiceTypeWord,
    /// The state advps holds; status reads the engine.
    #[schema(example = "RUNNING")]
    pub running_status: String,
    #[schema(example = "192.168.1.100")]
    pub ip: Option<String>,
    pub os: Option<OsRef>,
    /// The product it was bought as; null for services not bought by API.
    #[schema(example = "prod_abc123")]
    pub product_id: Option<String>,
    /// RFC 3339 UTC, or null for a service that does not expire.
    pub expiry_date: Option<String>,
}

/// `data` of the service list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceListData {
    pub services: Vec<ServiceRow>,
    pub pagination: PageInfo,
}

const LIST_TYPE_ERROR: &str = "Invalid type value — must be 'VPS', 'LINUX' or 'PROVISIONAL_VPS'";
const LIST_STATUS_ERROR: &str = "Invalid status value — must be 'RUNNING', 'STOPPED', 'REBUILDING', 'PROVISIONING' or 'SUSPENDED'";

#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "Services",
    operation_id = "listServices",
    summary = "List Services",
    description = "The caller's services in the key's mode, sorted by service id, optionally of one type and running status, with the same `pagination` as product stock. `runningStatus` is the state advps holds; the status endpoint reads the engine. A page past the end is an empty list. Sends an `ETag`; a matching `If-None-Match` answers `304 Not Modified` at no quota cost.",
    params(
        ("type" = Option<ServiceTypeFilter>, Query, description = "Only services of this type.", example = "VPS"),
        ("status" = Option<RunningStatusFilter>, Query, description = "Only services in this running status.", example = "RUNNING"),
        ("page" = Option<u32>, Query, minimum = 1, description = "Page number. Default: 1.", example = 1),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Results per page, max 100: larger values are clamped. Default: 10.", example = 10),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 if the page is unchanged."),
    ),
    responses(
        (status = 200, description = "A page of the caller's services.", body = ApiResponse<ServiceListData>, example = json!({
            "status": "success",
            "message": "Services retrieved successfully",
            "data": {
                "services": [
                    {"serviceId": "lxc_service_1", "serviceType": "LINUX", "runningStatus": "RUNNING", "ip": "192.168.1.150", "os": {"id": "debian-12", "name": "Debian 12"}, "productId": null, "expiryDate": null},
                    {"serviceId": "vps_service_1", "serviceType": "VPS", "runningStatus": "RUNNING", "ip": "192.168.1.100", "os": {"id": "ubuntu-22.04", "name": "Ubuntu 22.04"}, "productId": null, "expiryDate": null}
                ],
                "pagination": {"page": 1, "limit": 2, "total": 4, "totalPages": 2, "hasNext": true, "hasPrev": false},
                "mode": "test",
                "requestId": "req_1706611200000_abc123def"
            },
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current. No body; costs no quota."),
        (status = 400, description = "Invalid type value — must be 'VPS', 'LINUX' or 'PROVISIONAL_VPS'\nInvalid status value — must be 'RUNNING', 'STOPPED', 'REBUILDING', 'PROVISIONING' or 'SUSPENDED'\nInvalid page value — must be a positive integer\nInvalid limit value — must be a positive integer", body = ErrorEnvelope),
    )
)]
pub async fn list_services(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    if_none_match: IfNoneMatch,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let service_type = match query.get("type") {
        None => None,
        Some(raw) => Some(
            raw.trim()
                .parse::<ServiceType>()
                .map_err(|_| ApiError::bad_request(LIST_TYPE_ERROR))?,
        ),
    };
    let power = match query.get("status") {
        None => None,
        Some(raw) => Some(
            raw.trim()
                .to_ascii_uppercase()
                .parse::<PowerState>()
                .map_err(|_| ApiError::bad_request(LIST_STATUS_ERROR))?,
        ),
    };
    let page = super::page_of(&query)?;
    let (services, total) = state
        .ops
        .list_own_services(caller.scope(), service_type, power, page)
        .await?;
    let rows = services
        .iter()
        .map(|s| ServiceRow {
            service_id: s.service_id.clone(),
            service_type: s.service_type.into(),
            running_status: s.power_state.as_str().to_string(),
            ip: s.ip.clone(),
            os: s.os_slug.as_ref().map(|slug| OsRef {
                id: slug.clone(),
                name: s.os_name.clone().unwrap_or_else(|| slug.clone()),
            }),
            product_id: s.product_id.clone(),
            expiry_date: s.expires_at.map(time::format_millis),
        })
        .collect();
    let data = ServiceListData {
        services: rows,
        pagination: Pagination::new(page, total).into(),
    };
    let tag = EntityTag::of(&data);
    Ok(
        Success::new("Services retrieved successfully", data, caller.mode, &ctx)
            .with_etag(if_none_match, tag),
    )
}

/// The series of a metrics answer, each `[[unixSeconds, value], ...]`,
/// oldest first; a step with no sample has no point. (Each point is
/// declared as an array of numbers: tuple schemas, `prefixItems`, are not
/// read by common client generators.)
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct TimeSeries {
    /// Percent of the service's cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = Option<Vec<Vec<f64>>>, example = json!([[1706608800, 12.5], [1706608860, 14.0]]))]
    pub cpu: Option<Vec<(i64, f64)>>,
    /// Bytes.
    #[serde(rename = "memory.used", skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = Option<Vec<Vec<f64>>>, example = json!([[1706608800, 1073741824]]))]
    pub memory_used: Option<Vec<(i64, i64)>>,
    /// Bytes; empty where the engine cannot tell.
    #[serde(rename = "disk.used", skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = Option<Vec<Vec<f64>>>, example = json!([[1706608800, 6442450944_u64]]))]
    pub disk_used: Option<Vec<(i64, i64)>>,
    /// Bytes per second received.
    #[serde(rename = "network.in", skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = Option<Vec<Vec<f64>>>, example = json!([[1706608800, 2048]]))]
    pub network_in: Option<Vec<(i64, i64)>>,
    /// Bytes per second sent.
    #[serde(rename = "network.out", skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = Option<Vec<Vec<f64>>>, example = json!([[1706608800, 512]]))]
    pub network_out: Option<Vec<(i64, i64)>>,
}

/// `data` of metrics.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsData {
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    /// RFC 3339 UTC.
    #[schema(example = "2024-01-30T11:00:00.000Z")]
    pub start: String,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub end: String,
    /// Seconds per point.
    #[schema(example = 60)]
    pub step: i64,
    pub time_series: TimeSeries,
}

/// Which series a request asks for.
#[derive(Debug, Clone, Copy, Default)]
struct Wanted {
    cpu: bool,
    memory: bool,
    disk: bool,
    network: bool,
}

const TYPE_ERROR: &str =
    "Invalid type value — must be a comma-separated list of cpu, memory, disk, network";
const TIME_ERROR: &str = "Invalid start or end — must be ISO-8601 times with start before end";
const STEP_ERROR: &str = "Invalid step value — must be a positive number of seconds giving at most 500 points per series";

fn parse_time(raw: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::bad_request(TIME_ERROR))
}

fn parse_types(raw: Option<&String>) -> Result<Wanted, ApiError> {
    let Some(raw) = raw else {
        return Ok(Wanted {
            cpu: true,
            memory: true,
            disk: true,
            network: true,
        });
    };
    let mut wanted = Wanted::default();
    for word in raw.split(',') {
        match word.trim() {
            "cpu" => wanted.cpu = true,
            "memory" => wanted.memory = true,
            "disk" => wanted.disk = true,
            "network" => wanted.network = true,
            _ => return Err(ApiError::bad_request(TYPE_ERROR)),
        }
    }
    Ok(wanted)
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{serviceId}/metrics",
    tag = "Services",
    operation_id = "getServiceMetrics",
    summary = "Get Service Metrics",
    description = "Usage history of a service: `cpu` (percent of its cores), `memory.used` and `disk.used` (bytes), `network.in` and `network.out` (bytes per second), each as `[[unixSeconds, value], ...]`, averaged per `step`. A background sampler measures every service at a fixed interval (60 s by default); samples are kept as taken for 24 hours, then as 5-minute averages for 7 days, then hourly for 30 days. `start` and `end` default to the last 24 hours; without `step` the server picks one giving at most 500 points. A step with no sample (the service did not exist, the engine did not answer, a figure it cannot give) has no point. Sends an `ETag`; a matching `If-None-Match` answers `304 Not Modified` at no quota cost.",
    params(
        ("serviceId" = String, Path, description = "The unique identifier of the service.", example = "vps_service_1"),
        ("type" = Option<String>, Query, description = "Comma-separated series to return, of cpu, memory, disk, network. Default: all.", example = "cpu,network"),
        ("start" = Option<String>, Query, description = "ISO-8601 start (inclusive). Default: 24 hours before `end`.", example = "2024-01-30T11:00:00Z"),
        ("end" = Option<String>, Query, description = "ISO-8601 end (exclusive). Default: now.", example = "2024-01-30T12:00:00Z"),
        ("step" = Option<i64>, Query, minimum = 1, description = "Seconds per point; at most 500 points per series. Default: chosen by the server.", example = 60),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 if the history is unchanged."),
    ),
    responses(
        (status = 200, description = "The service's usage history.", body = ApiResponse<MetricsData>, example = json!({
            "status": "success",
            "message": "Service metrics retrieved successfully",
            "data": {
                "serviceId": "vps_service_1", "start": "2024-01-30T11:00:00.000Z", "end": "2024-01-30T12:00:00.000Z", "step": 60,
                "timeSeries": {
                    "cpu": [[1706612400, 12.5], [1706612460, 14.0]],
                    "memory.used": [[1706612400, 1073741824], [1706612460, 1075838976]],
                    "disk.used": [[1706612400, 6442450944_u64], [1706612460, 6442450944_u64]],
                    "network.in": [[1706612400, 2048], [1706612460, 1980]],
                    "network.out": [[1706612400, 512], [1706612460, 530]]
                },
                "mode": "test", "requestId": "req_1706611200000_abc123def"
            },
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current. No body; costs no quota."),
        (status = 400, description = "Invalid type value — must be a comma-separated list of cpu, memory, disk, network\nInvalid start or end — must be ISO-8601 times with start before end\nInvalid step value — must be a positive number of seconds giving at most 500 points per series", body = ErrorEnvelope),
        (status = 404, description = "Service not found or not accessible", body = ErrorEnvelope),
    )
)]
pub async fn get_service_metrics(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    if_none_match: IfNoneMatch,
    Path(service_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let wanted = parse_types(query.get("type"))?;
    let end = match query.get("end") {
        Some(raw) => parse_time(raw)?,
        None => time::now_millis(),
    };
    let start = match query.get("start") {
        Some(raw) => parse_time(raw)?,
        None => end - advps_store::DAY_MS,
    };
    if start >= end {
        return Err(ApiError::bad_request(TIME_ERROR));
    }
    let step = match query.get("step") {
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|s| (1..=1_000_000_000).contains(s))
            .filter(|s| (end - start + s * 1000 - 1) / (s * 1000) <= MAX_POINTS)
            .ok_or_else(|| ApiError::bad_request(STEP_ERROR))?,
        None => default_step_secs(end - start, state.ops.sample_millis()),
    };
    let range = MetricsRange {
        start,
        end,
        step_ms: step * 1000,
    };
    let (service, points) = state
        .ops
        .metrics(caller.scope(), &service_id, range)
        .await?;
    let series = |f: &dyn Fn(&advps_store::UsagePoint) -> Option<i64>| -> Vec<(i64, i64)> {
        points
            .iter()
            .filter_map(|p| f(p).map(|v| (p.at / 1000, v)))
            .collect()
    };
    let time_series = TimeSeries {
        cpu: wanted.cpu.then(|| {
            points
                .iter()
                .filter_map(|p| {
                    p.cpu_milli
                        .map(|m| (p.at / 1000, (m as f64 / 10.0).round() / 100.0))
                })
                .collect()
        }),
        memory_used: wanted.memory.then(|| series(&|p| p.memory_used)),
        disk_used: wanted.disk.then(|| series(&|p| p.disk_used)),
        network_in: wanted.network.then(|| series(&|p| p.net_in)),
        network_out: wanted.network.then(|| series(&|p| p.net_out)),
    };
    let data = MetricsData {
        service_id: service.service_id.clone(),
        start: time::format_millis(start),
        end: time::format_millis(end),
        step,
        time_series,
    };
    let tag = EntityTag::of(&data);
    Ok(Success::new(
        "Service metrics retrieved successfully",
        data,
        caller.mode,
        &ctx,
    )
    .with_etag(if_none_match, tag))
}
