//! Unauthenticated liveness: answers without touching storage, so a load
//! balancer can tell the process is up.

use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::envelope::{PlainResponse, Success};
use crate::AppState;

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_livez))
        .routes(routes!(get_health))
}

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
    /// `ok` when the database took a write.
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
    description = "Whether this instance can write to its database (a load balancer's readiness check): each call commits a one-row write, so a full disk or a database server that went away shows here, not only a database that does not answer. Needs no key and costs no quota; 503 when the write fails or takes over 2 seconds.",
    security(()),
    responses(
        (status = 200, description = "The instance and its database are up.", body = PlainResponse<HealthData>, example = json!({
            "status": "success", "message": "OK", "data": {"status": "ok", "database": "sqlite", "databaseLatencyMs": 1}, "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 503, description = "Database unavailable", body = crate::envelope::ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds after which to check again."))),
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
        state.store.check_writes(advps_domain::time::now_millis()),
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
        outcome => {
            if let Ok(Err(e)) = outcome {
                tracing::warn!(error = %e, "health check: the database took no write");
            }
            let mut response = crate::envelope::json_response(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                &crate::envelope::error_body("Database unavailable", None),
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::error::STORAGE_RETRY_AFTER_SECS),
            );
            response
        }
    }
}
