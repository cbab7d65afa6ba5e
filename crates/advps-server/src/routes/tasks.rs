//! `/api/v1/services/task/{taskId}/status`: polling an asynchronous task.
//!
//! Polling is what clients do most, so the answer carries a weak `ETag` (a
//! matching `If-None-Match` gets a free `304`) and, while the task runs, a
//! `Retry-After` saying when to ask again.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use serde::Serialize;
use utoipa::ToSchema;

use advps_domain::{time, TaskStatus};

use super::{TaskKindWord, TaskStatusWord};
use crate::auth::Caller;
use crate::envelope::{
    ApiResponse, EntityTag, ErrorEnvelope, IfNoneMatch, RequestContext, Success,
};
use crate::{ApiError, AppState};

/// `data` of task status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskData {
    #[schema(example = "uuid-task-id")]
    pub task_id: String,
    pub status: TaskStatusWord,
    /// 0 to 100.
    #[schema(example = 100, minimum = 0, maximum = 100)]
    pub progress: u8,
    #[schema(example = "vps_service_1")]
    pub service_id: String,
    #[serde(rename = "type")]
    pub kind: TaskKindWord,
    /// Why a FAILED task failed; null otherwise.
    pub error: Option<String>,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// Seconds a client should wait before polling a running task again, within
/// the 3 to 5 seconds the reference recommends: a task that has not started
/// yet is polled less eagerly than one that moves.
fn retry_after(status: TaskStatus) -> Option<u64> {
    match status {
        TaskStatus::Pending => Some(5),
        TaskStatus::InProgress => Some(3),
        TaskStatus::Completed | TaskStatus::Failed => None,
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/services/task/{taskId}/status",
    tag = "Services",
    operation_id = "getTaskStatus",
    summary = "Get Task Status",
    description = "Poll the status of an asynchronous task, such as a rebuild operation. Poll every 3–5 seconds until status is COMPLETED or FAILED: while the task runs, `Retry-After` says how long to wait. Send the `ETag` back in `If-None-Match`: an unchanged task answers `304 Not Modified`, which costs no quota.",
    params(
        ("taskId" = String, Path, description = "The unique task identifier returned by a rebuild request.", example = "uuid-task-id"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 if the task is unchanged."),
    ),
    responses(
        (status = 200, description = "The task's status.", body = ApiResponse<TaskData>, example = json!({
            "status": "success",
            "message": "Task status retrieved successfully",
            "data": {"taskId": "uuid-task-id", "status": "COMPLETED", "progress": 100, "serviceId": "vps_service_1", "type": "REBUILD", "error": null, "createdAt": "2024-01-30T11:59:40.000Z", "finishedAt": "2024-01-30T12:00:00.000Z", "mode": "test", "requestId": "req_1706611200000_abc123def"},
            "timestamp": "2024-01-30T12:00:00.000Z"
        })),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current. No body; costs no quota."),
        (status = 404, description = "Task not found or not accessible", body = ErrorEnvelope),
    )
)]
pub async fn get_task_status(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    if_none_match: IfNoneMatch,
    Path(task_id): Path<String>,
) -> Result<Success, ApiError> {
    let view = state.ops.task(caller.scope(), &task_id).await?;
    let data = TaskData {
        task_id: view.task.id.clone(),
        status: view.status.into(),
        progress: view.progress,
        service_id: view.task.service_id.clone(),
        kind: view.task.kind.into(),
        error: view.task.error.clone(),
        created_at: time::format_millis(view.task.created_at),
        finished_at: view.task.finished_at.map(time::format_millis),
    };
    let tag = EntityTag::of(&data);
    let mut success = Success::new(
        "Task status retrieved successfully",
        data,
        caller.mode,
        &ctx,
    )
    .with_etag(if_none_match, tag);
    if let Some(secs) = retry_after(view.status) {
        success = success.with_header(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(success)
}
