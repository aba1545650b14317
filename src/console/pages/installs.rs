//! Install, upgrade and uninstall dialogs; my installations.

use super::*;

/// The grant and settings of an install or upgrade form (settings: `None` when every field
/// is empty, so an upgrade keeps the current ones).
async fn install_request(
    state: &Console,
    agent: &str,
    form: &Form,
) -> Result<InstallRequest, Error> {
    let manifest = manifest_of(state, agent, None).await?;
    let grant: Vec<String> = forms::values(&form.fields, "grant")
        .into_iter()
        .map(String::from)
        .collect();
    let fields = manifest
        .as_ref()
        .and_then(|m| m.ui.as_ref())
        .and_then(|ui| forms::fields(ui.settings_schema.as_ref(), "settings"))
        .unwrap_or_default();
    let any = fields.iter().any(|f| {
        !f.is_checkbox()
            && forms::value(&form.fields, &f.input).is_some_and(|v| !v.trim().is_empty())
    });
    let settings = if any {
        Some(Value::Object(forms::object(
            &fields,
            &form.fields,
            "settings",
        )?))
    } else {
        None
    };
    Ok(InstallRequest {
        agent: agent.to_owned(),
        version: None,
        grant: Some(grant),
        settings,
    })
}

pub(crate) async fn install(
    State(state): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = v.check_csrf(&state, &form).await {
        return r;
    }
    install_or_upgrade(&state, &v, &id, &form, false).await
}

pub(crate) async fn upgrade(
    State(state): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = v.check_csrf(&state, &form).await {
        return r;
    }
    install_or_upgrade(&state, &v, &id, &form, true).await
}

/// Installs `id` for the viewer, or upgrades their installation, from the dialog's form.
async fn install_or_upgrade(
    state: &Console,
    v: &Viewer,
    id: &str,
    form: &Form,
    upgrade: bool,
) -> Response {
    let result = async {
        let req = install_request(state, id, form).await?;
        let registry = state.api.platform.registry();
        if upgrade {
            registry.upgrade(&v.by, req).await
        } else {
            registry.install(&v.by, req).await
        }
    }
    .await;
    match result {
        Ok(_) => v.to("/installations"),
        Err(e) => v.fail(&e),
    }
}

pub(crate) async fn uninstall(
    State(state): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = v.check_csrf(&state, &form).await {
        return r;
    }
    match state.api.platform.registry().uninstall(&v.by, &id).await {
        Ok(()) => v.to("/installations"),
        Err(e) => v.fail(&e),
    }
}

struct InstallRow {
    agent: String,
    version: String,
    scopes: Vec<String>,
    settings: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "installations.html")]
struct InstallationsPage {
    chrome: Chrome,
    rows: Vec<InstallRow>,
}

/// How a settings value is shown: a secret is masked, anything else as JSON.
fn setting_shown(value: &Value, secret: bool) -> String {
    if secret || value.as_str() == Some(capecontrol_core::validate::REDACTED) {
        "•••••••• (secret, set; never shown)".into()
    } else {
        match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

pub(crate) async fn installations(State(state): State<Console>, v: Viewer) -> Response {
    let items = match state
        .api
        .platform
        .registry()
        .installations(&v.by.user_id)
        .await
    {
        Ok(i) => i,
        Err(e) => return v.fail(&e),
    };
    let rows = items
        .into_iter()
        .map(|i| InstallRow {
            settings: i
                .settings
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, val)| {
                            let secret = i.secrets.iter().any(|p| p == &format!("/{k}"));
                            (k.clone(), setting_shown(val, secret))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            agent: i.agent_id,
            version: i.version,
            scopes: i.granted_scopes.iter().map(|s| scope_words(s)).collect(),
        })
        .collect();
    render(&InstallationsPage {
        chrome: v.chrome(),
        rows,
    })
}
