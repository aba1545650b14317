//! Submit a task, the task list, a task's page with its live events, cancel.

use super::*;

#[derive(Template)]
#[template(path = "task_new.html")]
struct TaskForm {
    chrome: Chrome,
    agent: String,
    task: String,
    description: String,
    fields: Vec<Field>,
    generated: bool,
}

/// The declaration of `agent`'s task `task`, in the viewer's installed version (or the
/// published one).
async fn task_decl(
    state: &Console,
    v: &Viewer,
    agent: &str,
    task: &str,
) -> Result<TaskDecl, Error> {
    let installed = match state
        .api
        .platform
        .registry()
        .installation(agent, &v.by.user_id)
        .await
    {
        Ok(i) => Some(i.version),
        Err(e) if e.category() == ErrorCategory::NotFound => None,
        Err(e) => return Err(e),
    };
    let manifest = manifest_of(state, agent, installed.as_deref()).await?;
    manifest
        .and_then(|m| m.tasks.into_iter().find(|t| t.name == task))
        .ok_or_else(|| Error::not_found("task", format!("{agent}/{task}")))
}

pub(crate) async fn task_form(
    State(state): State<Console>,
    v: Viewer,
    Path((agent, task)): Path<(String, String)>,
) -> Response {
    let decl = match task_decl(&state, &v, &agent, &task).await {
        Ok(d) => d,
        Err(e) => return v.fail(&e),
    };
    let fields = forms::fields(decl.input_schema.as_ref(), "input");
    render(&TaskForm {
        chrome: v.chrome(),
        agent,
        task,
        description: decl.description.unwrap_or_default(),
        generated: fields.is_some(),
        fields: fields.unwrap_or_default(),
    })
}

pub(crate) async fn submit(
    State(state): State<Console>,
    v: Viewer,
    Path((agent, task)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Err(r) = v.check_csrf(&state, &form).await {
        return r;
    }
    let result = async {
        let decl = task_decl(&state, &v, &agent, &task).await?;
        let input = match forms::fields(decl.input_schema.as_ref(), "input") {
            Some(fields) => Value::Object(forms::object(&fields, &form.fields, "input")?),
            None => {
                let raw = forms::value(&form.fields, "input_json").unwrap_or("null");
                serde_json::from_str(raw)
                    .map_err(|_| Error::invalid_field("/input", "must be JSON"))?
            }
        };
        let request = TaskRequest::new(agent.clone(), task.clone(), input, v.by.clone());
        state.api.platform.submit(request).await
    }
    .await;
    match result {
        Ok(id) => v.to(&format!("/tasks/{id}")),
        Err(e) => v.fail(&e),
    }
}

struct TaskRow {
    id: String,
    agent: String,
    task: String,
    status: String,
    user: String,
    created: String,
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    chrome: Chrome,
    statuses: Vec<String>,
    status: String,
    rows: Vec<TaskRow>,
    prev: Option<String>,
    next: Option<String>,
}

pub(crate) async fn tasks(
    State(state): State<Console>,
    v: Viewer,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query_pairs(raw.as_deref());
    let result = async {
        let offset = number_param(&q, "offset")?.unwrap_or(0) as usize;
        check_page(PAGE, offset)?;
        let status = match param(&q, "status") {
            Some(s) => Some(
                s.parse::<TaskStatus>()
                    .map_err(|_| Error::invalid_field("/query/status", "must be a task status"))?,
            ),
            None => None,
        };
        let filter = TaskFilter {
            user_id: None,
            agent_id: None,
            status,
            parent_id: None,
            limit: Some(offset + PAGE + 1),
        };
        let tasks = Tasks::new(&state.api.platform, &v.by).list(filter).await?;
        Ok::<_, Error>((offset, status, tasks))
    }
    .await;
    let (offset, status, tasks) = match result {
        Ok(r) => r,
        Err(e) => return v.fail(&e),
    };
    let status = status.map(|s| s.as_str()).unwrap_or_default();
    let more = tasks.len() > offset + PAGE;
    let rows = tasks
        .into_iter()
        .skip(offset)
        .take(PAGE)
        .map(|t| TaskRow {
            id: t.id.to_string(),
            agent: t.agent_id,
            task: t.task,
            status: t.status.to_string(),
            user: t.user_id,
            created: when(t.created_at),
        })
        .collect();
    let filters = [("status", status)];
    render(&TasksPage {
        chrome: v.chrome(),
        statuses: TaskStatus::ALL.iter().map(|s| s.to_string()).collect(),
        status: status.to_owned(),
        rows,
        prev: (offset > 0).then(|| page_link(&filters, offset.saturating_sub(PAGE))),
        next: more.then(|| page_link(&filters, offset + PAGE)),
    })
}

struct StepRow {
    step: u32,
    name: String,
    status: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    chrome: Chrome,
    id: String,
    agent: String,
    task: String,
    status: String,
    user: String,
    attempts: u32,
    max_attempts: u32,
    created: String,
    /// What started the task (a trigger, from its `queued` event); empty when submitted.
    started_by: String,
    input: String,
    output: String,
    error: String,
    steps: Vec<StepRow>,
    live: bool,
    cancellable: bool,
}

fn task_id(raw: &str) -> Result<Uuid, Error> {
    raw.parse()
        .map_err(|_| Error::invalid_field("/path/task_id", "must be a UUID"))
}

pub(crate) async fn task(
    State(state): State<Console>,
    v: Viewer,
    Path(raw): Path<String>,
) -> Response {
    let result = async {
        let id = task_id(&raw)?;
        let tasks = Tasks::new(&state.api.platform, &v.by);
        let task = tasks.get(id).await?;
        let steps = tasks.steps(&task).await?;
        let trigger = tasks.trigger(&task).await?;
        Ok::<_, Error>((task, steps, trigger))
    }
    .await;
    let (t, steps, trigger) = match result {
        Ok(r) => r,
        Err(e) => return v.fail(&e),
    };
    let done = t.status.is_final();
    render(&TaskPage {
        chrome: v.chrome(),
        id: t.id.to_string(),
        agent: t.agent_id,
        task: t.task,
        status: t.status.to_string(),
        user: t.user_id,
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        created: when(t.created_at),
        started_by: trigger.map(|t| t.to_string()).unwrap_or_default(),
        input: pretty(&t.input),
        output: t.output.as_ref().map(pretty).unwrap_or_default(),
        error: t.error.map(|e| e.to_string()).unwrap_or_default(),
        steps: steps
            .into_iter()
            .map(|s| StepRow {
                step: s.step,
                name: s.name,
                status: s.status.to_string(),
                detail: s
                    .error
                    .map(|e| e.to_string())
                    .or_else(|| s.output.as_ref().map(|o| o.to_string()))
                    .unwrap_or_default(),
            })
            .collect(),
        live: !done,
        cancellable: !done && !t.cancel_requested,
    })
}

pub(crate) async fn cancel(
    State(state): State<Console>,
    v: Viewer,
    Path(raw): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = v.check_csrf(&state, &form).await {
        return r;
    }
    let result = async {
        let id = task_id(&raw)?;
        Tasks::new(&state.api.platform, &v.by).cancel(id).await
    }
    .await;
    match result {
        Ok(t) => v.to(&format!("/tasks/{}", t.id)),
        Err(e) => v.fail(&e),
    }
}

/// The task's events as Server-Sent Events, for the task page's live view: the API's stream
/// (`GET /api/agents/tasks/{task_id}/events`) with the session instead of a bearer key.
pub(crate) async fn events(
    State(state): State<Console>,
    v: Viewer,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    let after = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let result = async {
        let id = task_id(&raw)?;
        Tasks::new(&state.api.platform, &v.by)
            .watch_from(id, after)
            .await
    }
    .await;
    let events = match result {
        Ok(e) => e,
        Err(e) => return v.fail(&e),
    };
    event_stream(events, state.api.config.keep_alive)
}
