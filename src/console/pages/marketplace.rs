//! The marketplace and an agent's page.

use super::*;

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
pub(super) fn page_link(filters: &[(&str, &str)], offset: usize) -> String {
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
pub(super) async fn manifest_of(
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

pub(super) struct VersionRow {
    pub(super) version: String,
    pub(super) status: String,
    pub(super) changelog: String,
    pub(super) published: String,
}

impl VersionRow {
    /// A version as the agent page and the admin's agent list show it.
    pub(super) fn of(r: &VersionSummary) -> Self {
        Self {
            version: r.version.clone(),
            status: r.status.to_string(),
            changelog: r.changelog.clone().unwrap_or_default(),
            published: r.published_at.map(when).unwrap_or_default(),
        }
    }
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
        versions: detail.versions.iter().rev().map(VersionRow::of).collect(),
        installed: installation.map(|i| i.version),
        settings,
        tasks,
    };
    render(&page)
}
