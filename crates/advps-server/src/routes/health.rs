//! Unauthenticated liveness: answers without touching storage, so a load
//! balancer can tell the process is up.

use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::envelope::{PlainResponse, Success};

/// `data` of liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct LivezData {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(
    get,
    path = "/livez",
    tag = "Operations",
    operation_id = "getLivez",
    summary = "Liveness",
    description = "Answers as long as the process serves requests. Needs no key and costs no quota.",
    security(()),
    responses(
        (status = 200, description = "The server is up.", body = PlainResponse<LivezData>, example = json!({
            "status": "success", "message": "OK", "data": {"status": "ok"}, "timestamp": "2024-01-30T12:00:00.000Z"
        })),
    )
)]
pub async fn get_livez() -> impl IntoResponse {
    Success::plain("OK", LivezData { status: "ok" })
}
