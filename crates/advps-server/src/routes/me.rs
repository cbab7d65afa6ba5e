//! `GET /api/v1/me`: what the calling key is, and how much of its quota is
//! left. It is served behind [`crate::auth::authenticate_without_quota`], so
//! asking costs nothing and works even when the quota is used up.

use axum::extract::Extension;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{time, Mode};

use crate::auth::Caller;
use crate::envelope::{ApiResponse, RequestContext, Success};
use crate::rate_limit::RateDecision;
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_me))
}

/// The key's quota, as the `RateLimit-*` headers report it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitInfo {
    /// The policy's name in `RateLimit-Policy`.
    #[schema(example = "default")]
    pub policy: &'static str,
    /// Requests per window.
    #[schema(example = 1000)]
    pub limit: u32,
    /// Requests left in the current window (this call took none).
    #[schema(example = 998)]
    pub remaining: u32,
    /// Seconds until the window closes (a new one opens with the next request).
    #[schema(example = 873)]
    pub reset_seconds: u64,
    #[schema(example = 900)]
    pub window_seconds: u64,
}

/// `data` of `/me`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeData {
    /// The name of the account the key belongs to.
    #[schema(example = "demo")]
    pub account: String,
    #[schema(example = "key_8f3k2j9d1m")]
    pub key_id: String,
    /// `sk_test_` or `sk_live_`.
    #[schema(example = "sk_test_")]
    pub key_prefix: &'static str,
    /// The last four characters of the key.
    #[schema(example = "Nk8x")]
    pub key_last4: String,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub created_at: String,
    /// When the key was last used before this call (recorded at most once a minute); null if never.
    #[schema(example = "2024-01-30T12:05:00.000Z")]
    pub last_used_at: Option<String>,
    pub rate_limit: RateLimitInfo,
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "Account",
    operation_id = "getMe",
    summary = "Who Am I",
    description = "The calling key's account, mode, prefix and last four characters, when it was created and last used, and its rate-limit policy with the quota left. This call costs no quota and answers even when the quota is used up.",
    responses(
        (status = 200, description = "The key and its quota.", body = ApiResponse<MeData>, example = json!({
            "status": "success",
            "message": "API key retrieved successfully",
            "data": {
                "account": "demo", "keyId": "key_8f3k2j9d1m", "keyPrefix": "sk_test_", "keyLast4": "Nk8x",
                "createdAt": "2024-01-30T12:00:00.000Z", "lastUsedAt": "2024-01-30T12:05:00.000Z",
                "rateLimit": {"policy": "default", "limit": 1000, "remaining": 998, "resetSeconds": 873, "windowSeconds": 900},
                "mode": "test", "requestId": "req_1706611200000_abc123def"
            },
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
    )
)]
pub async fn get_me(
    caller: Caller,
    ctx: RequestContext,
    Extension(decision): Extension<RateDecision>,
) -> Result<Success, ApiError> {
    Ok(Success::new(
        "API key retrieved successfully",
        MeData {
            account: caller.account_name.clone(),
            key_id: caller.key_id.clone(),
            key_prefix: match caller.mode {
                Mode::Test => "sk_test_",
                Mode::Live => "sk_live_",
            },
            key_last4: caller.key_last4.clone(),
            created_at: time::format_millis(caller.key_created_at),
            last_used_at: caller.key_last_used_at.map(time::format_millis),
            rate_limit: RateLimitInfo {
                policy: "default",
                limit: decision.limit,
                remaining: decision.remaining,
                reset_seconds: decision.reset_secs,
                window_seconds: decision.window_secs,
            },
        },
        caller.mode,
        &ctx,
    ))
}
