//! `/api/v1/os`: the OS images a service can be bought with or rebuilt to.

use std::collections::HashMap;

use axum::extract::{Query, State};
use serde_json::json;

use advps_domain::OsType;

use crate::auth::Caller;
use crate::envelope::{RequestContext, Success};
use crate::{ApiError, AppState};

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
    let os: Vec<_> = entries
        .iter()
        .map(|e| json!({ "id": e.id, "name": e.name, "type": e.os_type.as_str(), "slug": e.slug }))
        .collect();
    Ok(Success::new(
        "OS list retrieved successfully",
        json!({ "os": os }),
        caller.mode,
        &ctx,
    ))
}
