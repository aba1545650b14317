//! The audit trail with its filters.

use super::*;

struct AuditRow {
    seq: u64,
    at: String,
    event_type: String,
    user: String,
    agent: String,
    task: String,
    ip: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    task: String,
    agent: String,
    event_type: String,
    user: String,
    rows: Vec<AuditRow>,
    next: Option<String>,
}

pub(crate) async fn audit(
    State(state): State<Console>,
    v: Viewer,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query_pairs(raw.as_deref());
    let task = param(&q, "task").unwrap_or_default();
    let agent = param(&q, "agent").unwrap_or_default();
    let event_type = param(&q, "type").unwrap_or_default();
    let user = param(&q, "user").unwrap_or_default();
    let result = async {
        let task_id = match task.as_str() {
            "" => None,
            t => Some(
                t.parse::<Uuid>()
                    .map_err(|_| Error::invalid_field("/query/task", "must be a UUID"))?,
            ),
        };
        let after = number_param(&q, "after")?;
        let filter = AuditFilter {
            task_id,
            agent_id: Some(agent.clone()).filter(|a| !a.is_empty()),
            user_id: Some(user.clone()).filter(|u| !u.is_empty()),
            event_type: Some(event_type.clone()).filter(|t| !t.is_empty()),
            after,
            limit: Some(PAGE + 1),
            ..AuditFilter::default()
        };
        Tasks::new(&state.api.platform, &v.by).audit(filter).await
    }
    .await;
    let mut rows = match result {
        Ok(r) => r,
        Err(e) => return v.fail(&e),
    };
    let next = if rows.len() > PAGE {
        rows.truncate(PAGE);
        rows.last().map(|e| {
            let mut link = form_urlencoded::Serializer::new(String::new());
            for (k, val) in [
                ("task", &task),
                ("agent", &agent),
                ("type", &event_type),
                ("user", &user),
            ] {
                if !val.is_empty() {
                    link.append_pair(k, val);
                }
            }
            link.append_pair("after", &e.seq.to_string());
            format!("?{}", link.finish())
        })
    } else {
        None
    };
    let rows = rows
        .into_iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: when(e.created_at),
            event_type: e.event_type,
            user: e.user_id.unwrap_or_default(),
            agent: e.agent_id.unwrap_or_default(),
            task: e.task_id.map(|t| t.to_string()).unwrap_or_default(),
            ip: e.ip_address.map(|ip| ip.to_string()).unwrap_or_default(),
            payload: e.payload.to_string(),
        })
        .collect();
    render(&AuditPage {
        chrome: v.chrome(),
        task,
        agent,
        event_type,
        user,
        rows,
        next,
    })
}
