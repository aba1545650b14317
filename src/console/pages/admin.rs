//! Admin pages: agents and versions (publish, archive), API keys.

use super::*;

struct AdminAgent {
    id: String,
    name: String,
    status: String,
    owner: String,
    versions: Vec<VersionRow>,
}

#[derive(Template)]
#[template(path = "admin_agents.html")]
struct AdminAgents {
    chrome: Chrome,
    agents: Vec<AdminAgent>,
}

pub(crate) async fn admin_agents(State(state): State<Console>, v: Viewer) -> Response {
    if let Err(r) = v.admin_only(&state, "console.admin.agents").await {
        return r;
    }
    let registry = state.api.platform.registry();
    let result = async {
        let mut out = Vec::new();
        for a in registry.list_agents(&AgentFilter::default()).await? {
            let versions = registry.versions(&a.id).await?;
            out.push(AdminAgent {
                versions: versions
                    .into_iter()
                    .rev()
                    .map(|r| VersionRow::of(&VersionSummary::from(r)))
                    .collect(),
                id: a.id,
                name: a.name,
                status: a.status.to_string(),
                owner: a.owner.unwrap_or_default(),
            });
        }
        Ok::<_, Error>(out)
    }
    .await;
    match result {
        Ok(agents) => render(&AdminAgents {
            chrome: v.chrome(),
            agents,
        }),
        Err(e) => v.fail(&e),
    }
}

/// The checks of every admin form: its CSRF token, then the admin role.
async fn admin_form(
    state: &Console,
    v: &Viewer,
    form: &Form,
    action: &str,
) -> Result<(), Response> {
    v.check_csrf(state, form).await?;
    v.admin_only(state, action).await
}

pub(crate) async fn admin_publish(
    State(state): State<Console>,
    v: Viewer,
    Path((id, ver)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Err(r) = admin_form(&state, &v, &form, "console.admin.publish").await {
        return r;
    }
    match state
        .api
        .platform
        .registry()
        .publish(&v.by, &id, &ver)
        .await
    {
        Ok(_) => v.to("/admin/agents"),
        Err(e) => v.fail(&e),
    }
}

pub(crate) async fn admin_archive_version(
    State(state): State<Console>,
    v: Viewer,
    Path((id, ver)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Err(r) = admin_form(&state, &v, &form, "console.admin.archive_version").await {
        return r;
    }
    match state
        .api
        .platform
        .registry()
        .archive_version(&v.by, &id, &ver)
        .await
    {
        Ok(_) => v.to("/admin/agents"),
        Err(e) => v.fail(&e),
    }
}

pub(crate) async fn admin_archive_agent(
    State(state): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = admin_form(&state, &v, &form, "console.admin.archive_agent").await {
        return r;
    }
    match state
        .api
        .platform
        .registry()
        .archive_agent(&v.by, &id)
        .await
    {
        Ok(_) => v.to("/admin/agents"),
        Err(e) => v.fail(&e),
    }
}

struct KeyRow {
    id: String,
    user: String,
    roles: String,
    name: String,
    created: String,
    revoked: String,
}

#[derive(Template)]
#[template(path = "admin_keys.html")]
struct AdminKeys {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    created: Option<CreatedKey>,
}

async fn keys_page(state: &Console, v: &Viewer, created: Option<CreatedKey>) -> Response {
    let keys = match state.api.platform.store().list_keys(None).await {
        Ok(k) => k,
        Err(e) => return v.fail(&e),
    };
    render(&AdminKeys {
        chrome: v.chrome(),
        keys: keys
            .into_iter()
            .map(|k| KeyRow {
                id: k.id,
                user: k.user_id,
                roles: k.roles.join(", "),
                name: k.name,
                created: when(k.created_at),
                revoked: k.revoked_at.map(when).unwrap_or_default(),
            })
            .collect(),
        created,
    })
}

pub(crate) async fn admin_keys(State(state): State<Console>, v: Viewer) -> Response {
    if let Err(r) = v.admin_only(&state, "console.admin.keys").await {
        return r;
    }
    keys_page(&state, &v, None).await
}

pub(crate) async fn admin_create_key(
    State(state): State<Console>,
    v: Viewer,
    form: Form,
) -> Response {
    if let Err(r) = admin_form(&state, &v, &form, "api_key.create").await {
        return r;
    }
    let user = forms::value(&form.fields, "user_id")
        .unwrap_or_default()
        .trim();
    let roles: Vec<String> = forms::value(&form.fields, "roles")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    let name = forms::value(&form.fields, "name")
        .unwrap_or_default()
        .trim();
    match state.api.keys.create(&v.by, user, &roles, name).await {
        Ok(created) => keys_page(&state, &v, Some(created)).await,
        Err(e) => v.fail(&e),
    }
}

pub(crate) async fn admin_revoke_key(
    State(state): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = admin_form(&state, &v, &form, "api_key.revoke").await {
        return r;
    }
    match state.api.keys.revoke(&v.by, &id).await {
        Ok(_) => v.to("/admin/keys"),
        Err(e) => v.fail(&e),
    }
}
