//! `POST /api/agents/tasks/{task_id}/answer`: answers the question a waiting task asked
//! (`ask_user`), through `Platform::answer` (its checks: who may answer, the answer's schema).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::Value;

use super::ApiState;
use super::extract::{Caller, JsonBody, task_id};
use super::problem::ApiResult;
use super::responses::Writes;
use super::tasks::TaskView;

/// `POST /api/agents/tasks/{task_id}/answer`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Answer {
    /// The answer: must match the JSON Schema of the task's `waiting_for_input` event.
    answer: Value,
}

/// Answers the task's question and queues it again. Only the task's user, an admin or a user
/// the question names may answer (anyone else: 404, audited). An answer that does not match the
/// question's schema is a 400 with each field at its JSON pointer under `/answer` (the task
/// keeps waiting); a task not waiting for an answer is a 409.
#[utoipa::path(
    post,
    path = "/api/agents/tasks/{task_id}/answer",
    tag = "tasks",
    params(("task_id" = uuid::Uuid, Path, description = "The task's id (a UUID)")),
    request_body = Answer,
    responses(
        (status = 200, description = "The task, queued again", body = TaskView),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn answer(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<Answer>,
) -> ApiResult<Json<TaskView>> {
    let id = task_id(&raw)?;
    let task = state.platform.answer(id, &by, body.answer).await?;
    Ok(Json(TaskView::of(task, None)))
}
