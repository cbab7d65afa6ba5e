//! Unauthenticated liveness: answers without touching storage, so a load
//! balancer can tell the process is up.

use axum::response::IntoResponse;
use serde_json::json;

use crate::envelope::Success;

pub async fn get_livez() -> impl IntoResponse {
    Success::plain("OK", json!({ "status": "ok" }))
}
