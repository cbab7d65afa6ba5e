//! `/api/v1/services/task/{taskId}/status`: polling an asynchronous task.

use axum::extract::{Path, State};
use serde_json::json;

use advps_domain::time;

use crate::auth::Caller;
use crate::envelope::{RequestContext, Success};
use crate::{ApiError, AppState};

pub async fn get_task_status(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(task_id): Path<String>,
) -> Result<Success, ApiError> {
    let view = state.ops.task(caller.scope(), &task_id).await?;
    Ok(Success::new(
        "Task status retrieved successfully",
        json!({
            "taskId": view.task.id,
            "status": view.status.as_str(),
            "progress": view.progress,
            "serviceId": view.task.service_id,
            "type": view.task.kind.as_str(),
            "error": view.task.error,
            "createdAt": time::format_millis(view.task.created_at),
            "finishedAt": view.task.finished_at.map(time::format_millis),
        }),
        caller.mode,
        &ctx,
    ))
}
