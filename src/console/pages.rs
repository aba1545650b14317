//! The console's pages: extractors (the signed-in viewer, posted forms), the handlers and
//! their templates.

use std::convert::Infallible;
use std::net::IpAddr;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, RawQuery, Request, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use capecontrol_core::manifest::TaskDecl;
use capecontrol_core::registry::InstallRequest;
use capecontrol_core::runtime::TaskRequest;
use capecontrol_core::store::{
    AgentFilter, AuditFilter, CatalogQuery, CatalogSort, NewAuditEvent, TaskFilter,
};
use capecontrol_core::{Error, ErrorCategory, Manifest, Principal, TaskStatus};
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Console;
use super::forms::{self, Field, scope_words};
use super::session::{
    CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE, cookie, same_token, set_cookie, token,
};
use crate::http::{AuthError, CreatedKey, Problem, Tasks, check_page, client, hash_key, is_admin};

/// Rows per page of the marketplace, task and audit lists.
pub(crate) const PAGE: usize = 20;

/// The categories and placements offered by the marketplace's filters.
const CATEGORIES: [&str; 4] = ["ai-assisted", "domain-specific", "middleware", "utility"];
const PLACEMENTS: [&str; 4] = ["chat", "dashboard", "workflow", "background"];

// ---------------------------------------------------------------------------------------------
// Extractors

/// Where the console is mounted (`/console`, or under the host's prefix).
#[derive(Debug, Clone)]
pub(crate) struct Base(pub(crate) String);

fn base_of(parts: &Parts) -> String {
    let inner = parts.uri.path();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map(|u| u.0.path().to_owned())
        .unwrap_or_else(|| format!("/console{inner}"));
    let base = if inner == "/" {
        original.trim_end_matches('/')
    } else {
        original.strip_suffix(inner).unwrap_or("/console")
    };
    if base.is_empty() {
        "/console".into()
    } else {
        base.to_owned()
    }
}

impl FromRequestParts<Console> for Base {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &Console) -> Result<Self, Infallible> {
        Ok(Base(base_of(parts)))
    }
}

/// The client's IP address and user agent (as the API sees them).
#[derive(Debug, Clone)]
pub(crate) struct Client(Option<IpAddr>, Option<String>);

impl FromRequestParts<Console> for Client {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Infallible> {
        let (ip, ua) = client(parts, &state.api.config);
        Ok(Client(ip, ua))
    }
}

/// What every page's frame shows: where the console is, who is signed in, the CSRF token of
/// the sign-out form.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chrome {
    pub(crate) base: String,
    pub(crate) user: String,
    pub(crate) admin: bool,
    pub(crate) csrf: String,
}

/// The signed-in viewer: the principal every page acts as, its session's CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    by: Principal,
    csrf: String,
    token: String,
    base: String,
}

impl Viewer {
    fn chrome(&self) -> Chrome {
        Chrome {
            base: self.base.clone(),
            user: self.by.user_id.clone(),
            admin: is_admin(&self.by),
            csrf: self.csrf.clone(),
        }
    }

    /// The error page of `e`, in the viewer's frame.
    fn fail(&self, e: &Error) -> Response {
        error_page(status_of(e), e, Some(&self.chrome()))
    }

    /// A redirect (303) to `path` under the console.
    fn to(&self, path: &str) -> Response {
        see_other(&format!("{}{path}", self.base))
    }

    /// Refuses a form without the session's CSRF token (403, audited `policy.denied`).
    async fn check_csrf(&self, state: &Console, form: &Form) -> Result<(), Response> {
        let sent = forms::value(&form.fields, CSRF_FIELD).unwrap_or_default();
        if same_token(sent, &self.csrf) {
            return Ok(());
        }
        let event = NewAuditEvent::by(
            &self.by,
            "policy.denied",
            json!({"action": "console.form", "reason": "CSRF token missing or wrong",
                   "path": form.path}),
        );
        if let Err(e) = state.api.platform.store().append_audit(event).await {
            return Err(self.fail(&e));
        }
        Err(self.fail(&Error::forbidden(
            "the form's CSRF token is missing or wrong: reload the page and try again",
        )))
    }

    /// Only an admin; anyone else gets 403 and an audited `policy.denied`.
    async fn admin_only(&self, state: &Console, action: &str) -> Result<(), Response> {
        if is_admin(&self.by) {
            return Ok(());
        }
        let event = NewAuditEvent::by(
            &self.by,
            "policy.denied",
            json!({"action": action, "reason": "role",
                   "required_roles": [crate::http::ADMIN_ROLE]}),
        );
        if let Err(e) = state.api.platform.store().append_audit(event).await {
            return Err(self.fail(&e));
        }
        Err(self.fail(&Error::forbidden(format!(
            "`{action}` needs the `{}` role",
            crate::http::ADMIN_ROLE
        ))))
    }
}

fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, location.to_owned())]).into_response()
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Response> {
        let base = base_of(parts);
        let sign_in = || see_other(&format!("{base}/sign-in"));
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned) else {
            return Err(sign_in());
        };
        let Some(session) = state.sessions.get(&token) else {
            return Err(sign_in());
        };
        let record = match state
            .api
            .platform
            .store()
            .key_by_hash(&session.key_hash)
            .await
        {
            Ok(record) if record.revoked_at.is_none() => record,
            Ok(_) => {
                state.sessions.remove(&token);
                return Err(sign_in());
            }
            Err(e) if e.category() == ErrorCategory::NotFound => {
                state.sessions.remove(&token);
                return Err(sign_in());
            }
            Err(e) => return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &e, None)),
        };
        let (ip, user_agent) = client(parts, &state.api.config);
        Ok(Viewer {
            by: Principal {
                user_id: record.user_id,
                roles: record.roles,
                scopes: Vec::new(),
                ip_address: ip,
                user_agent,
            },
            csrf: session.csrf,
            token,
            base,
        })
    }
}

/// A posted `application/x-www-form-urlencoded` body (at most the API's body limit).
#[derive(Debug, Clone)]
pub(crate) struct Form {
    fields: Vec<(String, String)>,
    path: String,
}

impl FromRequest<Console> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Console) -> Result<Self, Response> {
        let path = req.uri().path().to_owned();
        let limit = state.api.config.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                error_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Error::invalid_field("", format!("the form is over {limit} bytes")),
                    None,
                )
            })?;
        let fields = form_urlencoded::parse(&bytes).into_owned().collect();
        Ok(Form { fields, path })
    }
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A non-empty query parameter.
fn param(q: &[(String, String)], name: &str) -> Option<String> {
    forms::value(q, name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// A numeric query parameter; not a number → validation error at `/query/<name>`.
fn number_param(q: &[(String, String)], name: &str) -> Result<Option<u64>, Error> {
    match param(q, name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid_field(format!("/query/{name}"), "must be a whole number")),
    }
}

fn status_of(e: &Error) -> StatusCode {
    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: String,
    status: u16,
    detail: String,
    errors: Vec<(String, String)>,
    missing: Vec<String>,
}

/// The page of an error, with its field errors and missing scopes.
pub(crate) fn error_page(status: StatusCode, e: &Error, chrome: Option<&Chrome>) -> Response {
    let page = ErrorPage {
        chrome: chrome.cloned().unwrap_or_else(|| Chrome {
            base: "/console".into(),
            ..Chrome::default()
        }),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: e.to_string(),
        errors: e
            .field_errors()
            .iter()
            .map(|f| (f.pointer.clone(), f.message.clone()))
            .collect(),
        missing: e.missing_scopes().to_vec(),
    };
    (status, render(&page)).into_response()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

// ---------------------------------------------------------------------------------------------
// Sign-in

pub(crate) async fn home(v: Viewer) -> Response {
    v.to("/marketplace")
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    chrome: Chrome,
    error: String,
}

fn sign_in_page(base: &str, status: StatusCode, error: &str) -> Response {
    let csrf = token();
    let page = SignIn {
        chrome: Chrome {
            base: base.to_owned(),
            csrf: csrf.clone(),
            ..Chrome::default()
        },
        error: error.to_owned(),
    };
    (
        status,
        [(
            SET_COOKIE,
            set_cookie(SIGN_IN_COOKIE, &csrf, base, Some(3600)),
        )],
        render(&page),
    )
        .into_response()
}

pub(crate) async fn sign_in_form(Base(base): Base) -> Response {
    sign_in_page(&base, StatusCode::OK, "")
}

pub(crate) async fn sign_in(
    State(state): State<Console>,
    Base(base): Base,
    Client(ip, user_agent): Client,
    headers: HeaderMap,
    form: Form,
) -> Response {
    let audit = |reason: String| NewAuditEvent {
        event_type: "auth.denied".into(),
        payload: json!({"reason": reason, "method": "POST", "path": form.path}),
        ip_address: ip,
        user_agent: user_agent.clone(),
        ..NewAuditEvent::default()
    };
    let sent = forms::value(&form.fields, CSRF_FIELD).unwrap_or_default();
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if !same_token(sent, expected) {
        let _ = state
            .api
            .platform
            .store()
            .append_audit(audit("CSRF token missing or wrong".into()))
            .await;
        return sign_in_page(
            &base,
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong: try again.",
        );
    }
    let key = forms::value(&form.fields, "key").unwrap_or_default().trim();
    let identified = if key.is_empty() {
        Err(AuthError::Missing)
    } else {
        state.api.keys.identify(key).await
    };
    match identified {
        Ok(_) => {
            let (session, _csrf) = state.sessions.create(hash_key(key));
            let mut response = see_other(&format!("{base}/marketplace"));
            let h = response.headers_mut();
            for c in [
                set_cookie(SESSION_COOKIE, &session, &base, None),
                set_cookie(SIGN_IN_COOKIE, "", &base, Some(0)),
            ] {
                if let Ok(c) = c.parse() {
                    h.append(SET_COOKIE, c);
                }
            }
            response
        }
        Err(AuthError::Unavailable(e)) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e, None),
        Err(e) => {
            let reason = match &e {
                AuthError::Missing => "no API key".to_owned(),
                other => other.to_string(),
            };
            if let Err(e) = state.api.platform.store().append_audit(audit(reason)).await {
                tracing::warn!(error = %e, "could not audit a failed sign-in");
            }
            sign_in_page(
                &base,
                StatusCode::UNAUTHORIZED,
                "That API key is unknown or revoked.",
            )
        }
    }
}

pub(crate) async fn sign_out(State(state): State<Console>, v: Viewer, form: Form) -> Response {
    if let Err(r) = v.check_csrf(&state, &form).await {
        return r;
    }
    state.sessions.remove(&v.token);
    let mut response = v.to("/sign-in");
    if let Ok(c) = set_cookie(SESSION_COOKIE, "", &v.base, Some(0)).parse() {
        response.headers_mut().append(SET_COOKIE, c);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Marketplace and agents

struct Card {
    slug: String,
    name: String,
    description: String,
    category: String,
    placement: String,
    version: String,
}

#[derive(Template)]
#[template(path = "marketplace.html")]
struct Marketplace {
    chrome: Chrome,
    categories: Vec<String>,
    placements: Vec<String>,
    category: String,
    placement: String,
    q: String,
    cards: Vec<Card>,
    total: usize,
    first: usize,
    last: usize,
    prev: Option<String>,
    next: Option<String>,
}

/// The query string of a list page at `offset`, keeping its filters.
fn page_link(filters: &[(&str, &str)], offset: usize) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.append_pair("offset", &offset.to_string());
    format!("?{}", q.finish())
}

pub(crate) async fn marketplace(
    State(state): State<Console>,
    v: Viewer,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query_pairs(raw.as_deref());
    let offset = match number_param(&q, "offset") {
        Ok(o) => o.unwrap_or(0) as usize,
        Err(e) => return v.fail(&e),
    };
    if let Err(e) = check_page(PAGE, offset) {
        return v.fail(&e);
    }
    let category = param(&q, "category").unwrap_or_default();
    let placement = param(&q, "placement").unwrap_or_default();
    let text = param(&q, "q").unwrap_or_default();
    let query = CatalogQuery {
        category: Some(category.clone()).filter(|c| !c.is_empty()),
        placement: Some(placement.clone()).filter(|p| !p.is_empty()),
        text: Some(text.clone()).filter(|t| !t.is_empty()),
        sort: CatalogSort::Name,
        offset,
        limit: PAGE,
    };
    let page = match state.api.platform.registry().catalog(&query).await {
        Ok(p) => p,
        Err(e) => return v.fail(&e),
    };
    let cards: Vec<Card> = page
        .items
        .into_iter()
        .map(|e| Card {
            placement: e
                .version
                .manifest
                .get("placement")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            slug: e.agent.slug,
            name: e.agent.name,
            description: e.agent.description.unwrap_or_default(),
            category: e.agent.category.unwrap_or_default(),
            version: e.version.version,
        })
        .collect();
    let filters = [
        ("category", category.as_str()),
        ("placement", placement.as_str()),
        ("q", text.as_str()),
    ];
    let shown = cards.len();
    let page = Marketplace {
        chrome: v.chrome(),
        categories: CATEGORIES.iter().map(|c| c.to_string()).collect(),
        placements: PLACEMENTS.iter().map(|p| p.to_string()).collect(),
        prev: (offset > 0).then(|| page_link(&filters, offset.saturating_sub(PAGE))),
        next: (offset + shown < page.total).then(|| page_link(&filters, offset + PAGE)),
        category,
        placement,
        q: text,
        first: if shown == 0 { 0 } else { offset + 1 },
        last: offset + shown,
        total: page.total,
        cards,
    };
    render(&page)
}

/// The manifest of `agent`'s version `version`, or of its published version.
async fn manifest_of(
    state: &Console,
    agent: &str,
    version: Option<&str>,
) -> Result<Option<Manifest>, Error> {
    let versions = state.api.platform.registry().versions(agent).await?;
    let record = versions.into_iter().find(|r| match version {
        Some(v) => r.version == v,
        None => r.status == capecontrol_core::VersionStatus::Published,
    });
    Ok(record.and_then(|r| serde_json::from_value(r.manifest).ok()))
}

struct ScopeRow {
    scope: String,
    words: String,
    granted: bool,
}

struct VersionRow {
    version: String,
    status: String,
    changelog: String,
    published: String,
}

struct TaskLink {
    name: String,
    description: String,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    chrome: Chrome,
    slug: String,
    name: String,
    description: String,
    category: String,
    placement: String,
    published: String,
    excerpt: String,
    scopes: Vec<ScopeRow>,
    roles: Vec<String>,
    versions: Vec<VersionRow>,
    installed: Option<String>,
    settings: Vec<Field>,
    tasks: Vec<TaskLink>,
}

pub(crate) async fn agent(
    State(state): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> Response {
    let registry = state.api.platform.registry();
    let detail = match registry.detail(&id).await {
        Ok(d) => d,
        Err(e) => return v.fail(&e),
    };
    let installation = match registry.installation(&id, &v.by.user_id).await {
        Ok(i) => Some(i),
        Err(e) if e.category() == ErrorCategory::NotFound => None,
        Err(e) => return v.fail(&e),
    };
    let manifest = match manifest_of(&state, &id, None).await {
        Ok(m) => m,
        Err(e) => return v.fail(&e),
    };
    let granted: Vec<String> = installation
        .as_ref()
        .map(|i| i.granted_scopes.clone())
        .unwrap_or_default();
    let (scopes, roles, excerpt, published) = match &detail.published {
        Some(p) => (
            p.permissions.scopes.clone(),
            p.permissions.required_roles.clone(),
            pretty(&serde_json::to_value(p).unwrap_or_default()),
            p.version.clone(),
        ),
        None => (Vec::new(), Vec::new(), String::new(), String::new()),
    };
    let settings = manifest
        .as_ref()
        .and_then(|m| m.ui.as_ref())
        .and_then(|ui| forms::fields(ui.settings_schema.as_ref(), "settings"))
        .unwrap_or_default();
    let tasks = manifest
        .as_ref()
        .map(|m| {
            m.tasks
                .iter()
                .map(|t| TaskLink {
                    name: t.name.clone(),
                    description: t.description.clone().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let page = AgentPage {
        chrome: v.chrome(),
        slug: detail.agent.slug.clone(),
        name: detail.agent.name.clone(),
        description: detail.agent.description.clone().unwrap_or_default(),
        category: detail.agent.category.clone().unwrap_or_default(),
        placement: manifest
            .as_ref()
            .and_then(|m| m.placement)
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|p| p.as_str().map(String::from))
            .unwrap_or_default(),
        published,
        excerpt,
        scopes: scopes
            .into_iter()
            .map(|s| ScopeRow {
                words: scope_words(&s),
                granted: installation.is_none() || granted.contains(&s),
                scope: s,
            })
            .collect(),
        roles,
        versions: detail
            .versions
            .iter()
            .rev()
            .map(|r| VersionRow {
                version: r.version.clone(),
                status: r.status.to_string(),
                changelog: r.changelog.clone().unwrap_or_default(),
                published: r.published_at.map(when).unwrap_or_default(),
            })
            .collect(),
        installed: installation.map(|i| i.version),
        settings,
        tasks,
    };
    render(&page)
}

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

// ---------------------------------------------------------------------------------------------
// Tasks

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
        Ok::<_, Error>((task, steps))
    }
    .await;
    let (t, steps) = match result {
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
    let keep_alive = KeepAlive::new().interval(state.api.config.keep_alive);
    Sse::new(stream).keep_alive(keep_alive).into_response()
}

// ---------------------------------------------------------------------------------------------
// Audit

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

// ---------------------------------------------------------------------------------------------
// Admin

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
                    .iter()
                    .rev()
                    .map(|r| VersionRow {
                        version: r.version.clone(),
                        status: r.status.to_string(),
                        changelog: r.changelog.clone().unwrap_or_default(),
                        published: r.published_at.map(when).unwrap_or_default(),
                    })
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
