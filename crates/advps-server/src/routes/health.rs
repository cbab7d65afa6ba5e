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

/// `data` of the health check.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthData {
    /// `ok` when the database answered, else `unavailable`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub database: &'static str,
    /// How long the database took to answer, in milliseconds.
    #[schema(example = 1)]
    pub database_latency_ms: u64,
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "Operations",
    operation_id = "getHealth",
    summary = "Health",
    description = "Whether this instance can reach its database (a load balancer's readiness check). Needs no key and costs no quota; 503 when the database does not answer within 2 seconds.",
    security(()),
    responses(
        (status = 200, description = "The instance and its database are up.", body = PlainResponse<HealthData>, example = json!({
            "status": "success", "message": "OK", "data": {"status": "ok", "database": "sqlite", "databaseLatencyMs": 1}, "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 503, description = "Database unavailable", body = crate::envelope::ErrorEnvelope),
    )
)]
pub async fn get_health(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
) -> axum::response::Response {
    let database = if crate::is_shared(&state.config) {
        "postgres"
    } else {
        "sqlite"
    };
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.store.count_accounts(),
    )
    .await;
    let latency = started.elapsed().as_millis() as u64;
    match answered {
        Ok(Ok(_)) => Success::plain(
            "OK",
            HealthData {
                status: "ok",
                database,
                database_latency_ms: latency,
            },
        )
        .into_response(),
        _ => crate::envelope::json_response(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            &crate::envelope::error_body("Database unavailable", None),
        ),
    }
}
