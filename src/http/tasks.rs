//! Task routes: submit, list, get, cancel and the event stream (Server-Sent Events).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use capecontrol_core::agent::StepRecord;
use capecontrol_core::runtime::{TaskEvents, TaskRequest};
use capecontrol_core::store::{TaskFilter, TaskRecord};
use capecontrol_core::{Error, FieldError, TaskStatus};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::access::Tasks;
use super::extract::{Caller, JsonBody, Query, task_id};
use super::problem::{ApiResult, Problem};
use super::responses::{Lists, Reads, Writes};
use super::{ApiState, agents::Paged};

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `POST /api/agents/{id}/tasks`.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Submit {
    task: String,
    #[serde(default = "empty_object")]
    input: Value,
    /// Higher runs first (default 0); any 32-bit integer.
    #[serde(default, deserialize_with = "crate::validate::integral")]
    #[schema(minimum = -2_147_483_648, maximum = 2_147_483_647)]
    priority: i32,
    #[serde(default)]
    run_at: Option<DateTime<Utc>>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The answer to a submit.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    /// The task (an earlier one's for a repeated `Idempotency-Key`).
    pub task_id: Uuid,
}

/// A task as the API shows it (the principal's IP and user agent are not shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    /// Identifier.
    pub id: Uuid,
    /// Submitter.
    pub user_id: String,
    /// The agent.
    pub agent_id: String,
    /// The agent version.
    pub version: String,
    /// The task's name.
    pub task: String,
    /// Status.
    #[schema(value_type = String)]
    pub status: TaskStatus,
    /// The input.
    pub input: Value,
    /// The output, once completed.
    pub output: Option<Value>,
    /// The last error.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Error>,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Priority.
    pub priority: i32,
    /// Due time.
    pub run_at: DateTime<Utc>,
    /// Whether a cancellation was requested.
    pub cancel_requested: bool,
    /// When the last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// The task that spawned this one (`cx.spawn`), if any.
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// The journaled steps (only on `GET /api/agents/tasks/{task_id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub steps: Option<Vec<StepRecord>>,
}

impl TaskView {
    pub(crate) fn of(t: TaskRecord, steps: Option<Vec<StepRecord>>) -> Self {
        Self {
            id: t.id,
            user_id: t.user_id,
            agent_id: t.agent_id,
            version: t.version,
            task: t.task,
            status: t.status,
            input: t.input,
            output: t.output,
            error: t.error,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            priority: t.priority,
            run_at: t.run_at,
            cancel_requested: t.cancel_requested,
            started_at: t.started_at,
            completed_at: t.completed_at,
            created_at: t.created_at,
            parent_id: t.parent_id,
            steps,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/agents/{id}/tasks",
    tag = "tasks",
    params(("id" = String, Path, description = "The agent's id or slug"), ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]([\t -~]*[!-~])?$", description = "Submits with the same key return the same task. 1 to 255 visible ASCII characters (spaces and tabs allowed inside); anything else is a 400 at `/header/Idempotency-Key`")),
    request_body = Submit,
    responses(
        (status = 202, description = "Accepted", body = Submitted),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn submit(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(agent): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Submit>,
) -> ApiResult<Response> {
    let mut request = TaskRequest::new(agent, body.task, body.input, by).priority(body.priority);
    if let Some(at) = body.run_at {
        request = request.run_at(at);
    }
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .ok()
            .filter(|k| !k.trim().is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY);
        let Some(key) = key else {
            return Err(Problem::from(Error::invalid_field(
                "/header/Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )));
        };
        request = request.idempotency_key(key);
    }
    let task_id = state.platform.submit(request).await?;
    Ok((StatusCode::ACCEPTED, Json(Submitted { task_id })).into_response())
}

/// `GET /api/agents/tasks` query.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListTasks {
    #[serde(default)]
    #[param(value_type = Option<String>)]
    #[schema(value_type = Option<String>)]
    status: Option<TaskStatus>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// Only the children of this task (the tasks it spawned).
    #[serde(default)]
    parent: Option<Uuid>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

pub(crate) fn default_limit() -> usize {
    20
}

/// The largest `offset` of a paged list (deeper pages: narrow the filter or use a cursor).
pub const MAX_OFFSET: usize = 100_000;

/// The page check of every paged list: `limit` 1..=100, `offset` ≤ [`MAX_OFFSET`].
pub(crate) fn check_page(limit: usize, offset: usize) -> capecontrol_core::Result<()> {
    let mut errors = Vec::new();
    if !(1..=100).contains(&limit) {
        errors.push(FieldError::new("/query/limit", "must be between 1 and 100"));
    }
    if offset > MAX_OFFSET {
        errors.push(FieldError::new(
            "/query/offset",
            format!("must be at most {MAX_OFFSET}"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::validation("invalid page", errors))
    }
}

#[utoipa::path(
    get,
    path = "/api/agents/tasks",
    tag = "tasks",
    params(ListTasks),
    responses(
        (status = 200, description = "My tasks {items}", body = Paged<TaskView>),
        Lists
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Query(q): Query<ListTasks>,
) -> ApiResult<Json<Paged<TaskView>>> {
    check_page(q.limit, q.offset)?;
    let filter = TaskFilter {
        user_id: q.user,
        agent_id: q.agent,
        status: q.status,
        parent_id: q.parent,
        limit: Some(q.offset.saturating_add(q.limit)),
    };
    let tasks = Tasks::new(&state.platform, &by).list(filter).await?;
    let items: Vec<TaskView> = tasks
        .into_iter()
        .skip(q.offset)
        .map(|t| TaskView::of(t, None))
        .collect();
    Ok(Json(Paged::of(items, None)))
}

#[utoipa::path(
    get,
    path = "/api/agents/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's id (a UUID)")),
    responses(
        (status = 200, description = "The task with its steps", body = TaskView),
        Reads
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<TaskView>> {
    let id = task_id(&raw)?;
    let tasks = Tasks::new(&state.platform, &by);
    let task = tasks.get(id).await?;
    let steps = tasks.steps(&task).await?;
    Ok(Json(TaskView::of(task, Some(steps))))
}

#[utoipa::path(
    post,
    path = "/api/agents/tasks/{task_id}/cancel",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's id (a UUID)")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<TaskView>> {
    let id = task_id(&raw)?;
    let task = Tasks::new(&state.platform, &by).cancel(id).await?;
    Ok(Json(TaskView::of(task, None)))
}

/// `POST /api/agents/tasks/{task_id}/rating`: a score from 1 to 5.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rate {
    /// 1 (poor) to 5 (excellent).
    #[schema(minimum = 1, maximum = 5)]
    #[serde(deserialize_with = "crate::validate::integral")]
    score: u8,
}

/// What a rating leaves: the task's agent version and the mean of its ratings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RatingView {
    /// The rated task.
    pub task_id: Uuid,
    /// Its agent.
    pub agent_id: String,
    /// Its agent version.
    pub version: String,
    /// The score given.
    pub score: u8,
    /// The score it replaced, when the task was rated before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u8>,
    /// The mean score of the version's rated tasks (this one included).
    pub mean: f64,
    /// How many tasks of the version are rated.
    pub count: u64,
}

/// Rates a completed task of the caller's (the source of `user_satisfaction_score`).
#[utoipa::path(
    post,
    path = "/api/agents/tasks/{task_id}/rating",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's id (a UUID)")),
    request_body = Rate,
    responses(
        (status = 200, description = "The rating and its version's mean", body = RatingView),
        Writes
    ),
    security(("bearer" = []))
)]
pub(crate) async fn rate(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<Rate>,
) -> ApiResult<Json<RatingView>> {
    let id = task_id(&raw)?;
    let s = state.platform.rate(id, &by, body.score).await?;
    Ok(Json(RatingView {
        task_id: s.task_id,
        agent_id: s.agent_id,
        version: s.version,
        score: s.score,
        previous: s.previous,
        mean: s.mean,
        count: s.count,
    }))
}

/// `GET …/events` query: `after` (the same as `Last-Event-ID`; the header wins).
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Resume after this event sequence number (ignored when `Last-Event-ID` is sent).
    #[serde(default)]
    after: Option<u64>,
}

/// The task's events as Server-Sent Events: `id:` the event's sequence number, `event:` its
/// kind, `data:` the event as JSON; replayed after `Last-Event-ID` (or `?after=`), then live,
/// keep-alive comments while idle, closed after the terminal event. A store error ends the
/// stream with an `event: error` whose data is a problem object. The first event, `queued`,
/// names what started a triggered task in `kind.trigger` (a `TriggerSource`: the event and its
/// id, the schedule and its instant, or the webhook path and delivery id); a submitted task's is
/// `{"type": "queued"}`.
#[utoipa::path(
    get,
    path = "/api/agents/tasks/{task_id}/events",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's id (a UUID)"), EventsQuery, ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this event: an event's sequence number (a decimal unsigned 64-bit integer; anything else is a 400 at `/header/Last-Event-ID`); wins over `after`")),
    responses(
        (status = 200, description = "Server-Sent Events: id = sequence number, event = kind, data = the event as JSON (`queued` carries `kind.trigger`, a TriggerSource, when a trigger started the task)", content_type = "text/event-stream", body = String),
        Reads
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(
    State(state): State<ApiState>,
    Caller(by): Caller,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    let id = task_id(&raw)?;
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Problem::from(Error::invalid_field(
                    "/header/Last-Event-ID",
                    "must be an event sequence number",
                ))
            })?,
        None => q.after.unwrap_or(0),
    };
    let events = Tasks::new(&state.platform, &by)
        .watch_from(id, after)
        .await?;
    Ok(event_stream(events, state.config.keep_alive))
}

/// A task's events as a server-sent event stream (the API's and the console's): `id:` the
/// event's `seq` (for `Last-Event-ID`), `event:` its kind, the event as JSON data; an error of
/// the watch as an `error` event holding its problem; a comment every `keep_alive`.
pub(crate) fn event_stream(events: TaskEvents, keep_alive: Duration) -> Response {
    let stream = events.map(|event| {
        let sse = match event {
            Ok(event) => Event::default()
                .id(event.seq.to_string())
                .event(event.kind.name())
                .json_data(&event),
            Err(error) => Event::default()
                .event("error")
                .json_data(Problem::from(error)),
        };
        Ok::<Event, Infallible>(sse.unwrap_or_else(|_| Event::default().comment("unserializable")))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}
