//! `/api/v1/os`: the OS images a service can be bought with or rebuilt to.

use std::collections::HashMap;

use axum::extract::{Query, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::OsType;

use super::OsTypeWord;
use crate::auth::Caller;
use crate::envelope::{ApiResponse, ErrorEnvelope, RequestContext, Success};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_os))
}

/// The `type` filter of the OS list.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OsFilter {
    Vps,
    Lxc,
    Linux,
}

/// One OS image.
#[derive(Debug, Serialize, ToSchema)]
pub struct OsItem {
    /// The id purchases and rebuilds accept as `osId` / `os`.
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "Ubuntu 22.04")]
    pub name: String,
    #[serde(rename = "type")]
    pub os_type: OsTypeWord,
    /// The identifier rebuilds accept as `os`.
    #[schema(example = "ubuntu-22.04")]
    pub slug: String,
}

/// `data` of the OS list.
#[derive(Debug, Serialize, ToSchema)]
pub struct OsListData {
    pub os: Vec<OsItem>,
}

#[utoipa::path(
    get,
    path = "/api/v1/os",
    tag = "Catalogue",
    operation_id = "listOs",
    summary = "List Operating Systems",
    description = "The OS images a service can be bought with (`osId`) or rebuilt to (`os`), optionally of one family.",
    params(("type" = Option<OsFilter>, Query, description = "One of: vps, lxc (linux is accepted for lxc).", example = "vps")),
    responses(
        (status = 200, description = "The OS images.", body = ApiResponse<OsListData>, example = json!({
            "status": "success",
            "message": "OS list retrieved successfully",
            "data": {"os": [{"id": 1, "name": "Ubuntu 22.04", "type": "vps", "slug": "ubuntu-22.04"}], "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 400, description = "Invalid type value — must be 'vps', 'lxc' or 'linux'", body = ErrorEnvelope),
    )
)]
pub async fn list_os(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let family = match query.get("type").map(String::as_str) {
        None => None,
        Some(raw) => Some(raw.parse::<OsType>().map_err(|_| {
            ApiError::bad_request("Invalid type value — must be 'vps', 'lxc' or 'linux'")
        })?),
    };
    let entries = state.ops.os_catalogue(caller.mode, family).await?;
    let os = entries
        .iter()
        .map(|e| OsItem {
            id: e.id,
            name: e.name.clone(),
            os_type: e.os_type.into(),
            slug: e.slug.clone(),
        })
        .collect();
    Ok(Success::new(
        "OS list retrieved successfully",
        OsListData { os },
        caller.mode,
        &ctx,
    ))
}
