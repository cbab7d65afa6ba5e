//! `/api/v1/keys`: the caller's own API keys, so customers rotate keys
//! without the operator: list them, create one (its plaintext shown only in
//! that answer), revoke one. Everything is bounded by the calling key's
//! account and mode; the last key of an account and mode cannot be revoked.

use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{api_key, time};
use advps_store::ApiKeyRecord;

use crate::auth::Caller;
use crate::envelope::{ApiResponse, ErrorEnvelope, RequestContext, Success};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// An API key, as its owner sees it: never its secret part after creation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyData {
    #[schema(example = "key_5f1c9e2a7b3d4c6e")]
    pub id: String,
    /// The key's prefix and last four characters.
    #[schema(example = "sk_test_…Nk8x")]
    pub display: String,
    #[schema(example = "Nk8x")]
    pub last4: String,
    pub created_at: String,
    /// When the key was last used (recorded at most once a minute).
    pub last_used_at: Option<String>,
    /// Whether this is the key that made the request.
    pub current: bool,
    /// The whole key: only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, example = "sk_test_tWzgTeV3s1we1BVU3NzTjzDlK5de8Nk8")]
    pub key: Option<String>,
}

/// The unrevoked keys of the account and mode, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyListData {
    pub keys: Vec<KeyData>,
}

/// The id of a revoked key.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedKeyData {
    pub id: String,
    pub revoked: bool,
}

fn key_data(k: &ApiKeyRecord, caller: &Caller) -> KeyData {
    KeyData {
        id: k.id.clone(),
        display: api_key::display(k.mode, &k.last4),
        last4: k.last4.clone(),
        created_at: time::format_millis(k.created_at),
        last_used_at: k.last_used_at.map(time::format_millis),
        current: k.id == caller.key_id,
        key: None,
    }
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "Account", operation_id = "listKeys",
    summary = "List API Keys",
    description = "The unrevoked API keys of the calling key's account, in its mode, oldest first. Secrets are never shown here.",
    responses((status = 200, description = "API keys retrieved successfully", body = ApiResponse<KeyListData>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
) -> Result<Success, ApiError> {
    let keys = state.ops.keys(caller.scope()).await?;
    let data = KeyListData {
        keys: keys.iter().map(|k| key_data(k, &caller)).collect(),
    };
    Ok(Success::new(
        "API keys retrieved successfully",
        data,
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "Account", operation_id = "createKey",
    summary = "Create API Key",
    description = "Creates a key in the calling key's account and mode. The whole key is in `data.key` of this answer only: it is stored as a digest and cannot be shown again. Costs one request of quota, like every call.",
    responses(
        (status = 200, description = "API key created; it is shown only this once", body = ApiResponse<KeyData>),
        (status = 409, description = "At most 20 API keys per account and mode", body = ErrorEnvelope),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
) -> Result<Success, ApiError> {
    let (record, plaintext) = state.ops.create_key(caller.scope()).await?;
    let mut data = key_data(&record, &caller);
    data.key = Some(plaintext);
    Ok(Success::new(
        "API key created; it is shown only this once",
        data,
        caller.mode,
        &ctx,
    ))
}

#[utoipa::path(delete, path = "/api/v1/keys/{keyId}", tag = "Account", operation_id = "revokeKey",
    summary = "Revoke API Key",
    description = "Revokes one of the account's keys in this mode; it is refused from the next request on, in every instance within a second. The calling key may revoke itself, but the last key of an account and mode cannot be revoked.",
    params(("keyId" = String, Path, description = "The key's id, from List API Keys.")),
    responses(
        (status = 200, description = "API key revoked", body = ApiResponse<RevokedKeyData>),
        (status = 404, description = "API key not found", body = ErrorEnvelope),
        (status = 409, description = "Cannot revoke the last API key of this account and mode", body = ErrorEnvelope),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(key_id): Path<String>,
) -> Result<Success, ApiError> {
    state.ops.revoke_key(caller.scope(), &key_id).await?;
    Ok(Success::new(
        "API key revoked",
        RevokedKeyData {
            id: key_id,
            revoked: true,
        },
        caller.mode,
        &ctx,
    ))
}
