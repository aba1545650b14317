//! Triggers: what starts an agent's task besides a direct submit — the manifest's
//! `triggers.events`, `triggers.schedules` and `triggers.webhooks`.
//!
//! # Which task, with which input
//!
//! A trigger starts the agent's **first declared task** (`tasks[0]` of the installed version's
//! manifest; an agent that declares no task cannot be triggered). The input is:
//!
//! - for an event, the event's payload;
//! - for a schedule, `{"schedule": <cron>, "instant": <RFC 3339 UTC>, "missed": <n>}` (`missed`:
//!   how many earlier instants of a missed window this fire stands for, 0 when on time);
//! - for a webhook, the request body (JSON).
//!
//! The task's input schema validates it as it validates any submission.
//!
//! # As whom
//!
//! The task runs for the installation's user: the principal is that user, with the roles the
//! manifest requires (installing checked them), no scopes of its own and the user agent
//! `capecontrol-trigger/<kind>`. It goes through the gateway like any submission: the
//! installation's grants, the version's status, rate limits, sanitization, moderation, audit.
//!
//! # Exactly once
//!
//! Each fire carries a deterministic idempotency key (unique per user, claimed by the store's
//! enqueue): `event:<event id>`, `schedule:<installation>:<cron>@<instant>`,
//! `webhook:<delivery id>`. However many nodes fire the same instant or receive the same event,
//! one task exists. Each fire also writes a `task.triggered` audit event, in the enqueue's
//! transaction, naming its source ([`TriggerSource`]); the task's first event, `queued`, names it too
//! ([`TaskEventKind::Queued`](crate::events::TaskEventKind::Queued)).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::gateway::Gateway;
use super::node::Node;
use super::platform::Platform;
use super::request::TaskRequest;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::policy::{Principal, Scope};
use crate::store::{InstallationRecord, NewAuditEvent};

pub use crate::events::TriggerSource;

/// The scope a non-admin principal needs to emit events.
pub const EMIT_SCOPE: &str = "events:emit";
/// The longest event id, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 128;

/// What a node does with schedule instants it finds missed (older than
/// [`TriggerConfig::misfire_grace`]: every node was down, or busy, when they came).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Fire once for the whole missed window: one task for its last instant, with `missed` the
    /// number of instants in the window.
    #[default]
    FireOnce,
    /// Fire nothing for missed instants.
    Skip,
}

/// The triggers' settings of a node (in [`PlatformConfig`](super::config::PlatformConfig)).
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerConfig {
    /// How often this node's scheduler looks for due schedule instants (`None`: it runs no
    /// scheduler; [`Platform::run_schedules`] still fires by hand). Default 15 s.
    pub schedule_tick: Option<Duration>,
    /// What to do with missed instants.
    pub misfire: MisfirePolicy,
    /// An instant is *missed* once it is older than this when a node first sees it (keep it
    /// above `schedule_tick`). Default 60 s.
    pub misfire_grace: Duration,
    /// A webhook's timestamp may differ from the node's clock by this much at most. Default
    /// 5 minutes.
    pub webhook_tolerance: Duration,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            schedule_tick: Some(Duration::from_secs(15)),
            misfire: MisfirePolicy::FireOnce,
            misfire_grace: Duration::from_secs(60),
            webhook_tolerance: Duration::from_secs(300),
        }
    }
}

/// An event to emit: a dotted lowercase name, an id (a fresh UUID unless given: emitting the
/// same id again starts nothing new) and a JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's name (`user.onboard`).
    pub name: String,
    /// The event's id, 1 to [`MAX_EVENT_ID_BYTES`] bytes.
    pub id: String,
    /// The payload: the input of the tasks it starts.
    pub payload: Value,
}

impl Event {
    /// An event with a fresh id.
    pub fn new(name: impl Into<String>, payload: Value) -> Self {
        Self {
            name: name.into(),
            id: Uuid::now_v7().to_string(),
            payload,
        }
    }

    /// Sets the event's id (the host's own, for idempotency across retries).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Checks the event's name (`/event`: a dotted lowercase name), id (`/id`: 1 to
    /// [`MAX_EVENT_ID_BYTES`] bytes) and payload (`/payload`: at most
    /// [`MAX_VALUE_DEPTH`](crate::store::MAX_VALUE_DEPTH) levels deep, as a task's input), as
    /// [`Platform::emit`] does; a store's `emit_in` calls it before writing the event to its
    /// outbox.
    pub fn check(&self) -> Result<()> {
        if !capecontrol_rules::event(&self.name) {
            return Err(Error::invalid_field(
                "/event",
                "must be a dotted lowercase event name (like payment.completed)",
            ));
        }
        if self.id.is_empty() || self.id.len() > MAX_EVENT_ID_BYTES {
            return Err(Error::invalid_field(
                "/id",
                format!("must be 1 to {MAX_EVENT_ID_BYTES} bytes"),
            ));
        }
        // The payload becomes the input of the tasks it starts: held to the same depth.
        if crate::store::nests_too_deep(&self.payload) {
            return Err(Error::invalid_field(
                "/payload",
                format!(
                    "is nested deeper than {} levels",
                    crate::store::MAX_VALUE_DEPTH
                ),
            ));
        }
        Ok(())
    }
}

/// One task a trigger started (or tried to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fired {
    /// The installation.
    pub installation_id: Uuid,
    /// Its agent.
    pub agent_id: String,
    /// Its user.
    pub user_id: String,
    /// What started it.
    pub source: TriggerSource,
    /// The task (an existing one when this fire was seen before), or why none was started.
    pub task: std::result::Result<Uuid, Error>,
}

/// A schedule of an installation, with its next fire time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    /// The installation.
    pub installation_id: Uuid,
    /// Its agent.
    pub agent_id: String,
    /// Its user.
    pub user_id: String,
    /// The cron expression (UTC).
    pub schedule: String,
    /// The latest instant dealt with (`None`: none yet).
    pub last_instant: Option<DateTime<Utc>>,
    /// The next instant after `now`.
    pub next_fire: Option<DateTime<Utc>>,
}

/// The task a trigger of `manifest` starts: its first declared task.
pub fn trigger_task(manifest: &Manifest) -> Result<&str> {
    manifest
        .tasks
        .first()
        .map(|t| t.name.as_str())
        .ok_or_else(|| {
            Error::invalid_field(
                "/tasks",
                format!(
                    "agent `{}` declares no task for its triggers to start",
                    manifest.name
                ),
            )
        })
}

/// The principal a triggered task runs as: the installation's user with the manifest's
/// required roles.
pub(crate) fn trigger_principal(
    installation: &InstallationRecord,
    manifest: &Manifest,
    kind: &str,
) -> Principal {
    Principal::new(installation.user_id.clone())
        .with_roles(manifest.permissions().required_roles)
        .with_user_agent(format!("capecontrol-trigger/{kind}"))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Platform {
    /// Starts the task of every installation whose installed version lists `event.name` in
    /// `triggers.events`, with the payload as input, each as its installation's user through
    /// the gateway. Emitting the same event id again starts nothing new (the same tasks are
    /// returned). `by` must be an admin or hold the `events:emit` scope (else 403, audited as
    /// `event.denied`); the emit is audited as `event.emitted`.
    pub async fn emit(&self, event: Event, by: &Principal) -> Result<Vec<Fired>> {
        event.check()?;
        let (node, gateway) = self.parts();
        let emit: Scope = EMIT_SCOPE
            .parse()
            .map_err(|e| Error::agent(format!("{e}")))?;
        if !by.is_admin() && !by.scopes.iter().any(|s| s.covers(&emit)) {
            let error = Error::permission([EMIT_SCOPE.to_owned()]);
            node.store
                .append_audit(NewAuditEvent::by(
                    by,
                    "event.denied",
                    json!({"event": event.name, "event_id": event.id, "error": error.to_string()}),
                ))
                .await?;
            return Err(error);
        }
        let mut fired = Vec::new();
        for installation in node.store.all_installations().await? {
            let Ok(manifest) = node
                .manifest(&installation.agent_id, &installation.version)
                .await
            else {
                continue;
            };
            let subscribed = manifest
                .triggers
                .as_ref()
                .is_some_and(|t| t.events.contains(&event.name));
            if !subscribed {
                continue;
            }
            let source = TriggerSource::Event {
                event: event.name.clone(),
                event_id: event.id.clone(),
            };
            let key = format!("event:{}", event.id);
            let input = event.payload.clone();
            fired.push(fire(node, gateway, &installation, &manifest, source, input, key).await);
        }
        node.store
            .append_audit(NewAuditEvent::by(
                by,
                "event.emitted",
                json!({"event": event.name, "event_id": event.id,
                       "tasks": fired.iter().filter(|f| f.task.is_ok()).count(),
                       "installations": fired.len()}),
            ))
            .await?;
        Ok(fired)
    }

    /// Fires every schedule instant due at `now` (the scheduler's tick; call it with a fake
    /// clock's time in tests). For each installation and each cron expression of its installed
    /// version: the instants after the schedule's cursor (or, for a schedule never dealt with,
    /// the installation's last update: an install or an upgrade) up to `now`; those within
    /// [`TriggerConfig::misfire_grace`] of `now` fire one task each, older ones follow the
    /// [`MisfirePolicy`]. Then the cursor moves to the last instant up to `now`. Any number of
    /// nodes may tick at once: each instant starts one task.
    pub async fn run_schedules(&self, now: DateTime<Utc>) -> Result<Vec<Fired>> {
        let (node, gateway) = self.parts();
        run_schedules(node, gateway, now).await
    }
}

/// Submits one trigger's task for an installation.
pub(crate) async fn fire(
    node: &Node,
    gateway: &Gateway,
    installation: &InstallationRecord,
    manifest: &Manifest,
    source: TriggerSource,
    input: Value,
    key: String,
) -> Fired {
    let task = match trigger_task(manifest) {
        Ok(task) => {
            let principal = trigger_principal(installation, manifest, source.kind());
            let request = TaskRequest::new(
                installation.agent_id.clone(),
                task,
                input,
                principal.clone(),
            )
            .idempotency_key(key)
            .triggered_by(source.clone());
            let triggered = NewAuditEvent::by(
                &principal,
                "task.triggered",
                serde_json::to_value(&source).unwrap_or(Value::Null),
            )
            .agent(installation.agent_id.clone());
            gateway.submit_with(node, request, vec![triggered]).await
        }
        Err(e) => Err(e),
    };
    Fired {
        installation_id: installation.id,
        agent_id: installation.agent_id.clone(),
        user_id: installation.user_id.clone(),
        source,
        task,
    }
}

/// [`Platform::run_schedules`] over a node and a gateway.
pub(crate) async fn run_schedules(
    node: &Node,
    gateway: &Gateway,
    now: DateTime<Utc>,
) -> Result<Vec<Fired>> {
    let config = &node.config.triggers;
    let grace = to_chrono(config.misfire_grace);
    let mut fired = Vec::new();
    for installation in node.store.all_installations().await? {
        let Ok(manifest) = node
            .manifest(&installation.agent_id, &installation.version)
            .await
        else {
            continue;
        };
        let Some(triggers) = manifest.triggers.as_ref() else {
            continue;
        };
        for expr in &triggers.schedules {
            let Ok(cron) = capecontrol_rules::schedule(expr) else {
                continue;
            };
            let cursor = node
                .store
                .schedule_cursor(installation.id, expr)
                .await?
                .unwrap_or(installation.updated_at);
            // Due instants: in (cursor, now]; on time: in [now - grace, now].
            let on_time_from = (now - grace).max(cursor);
            let mut due: Vec<DateTime<Utc>> = Vec::new();
            let mut t = on_time_from;
            while let Ok(next) = cron.find_next_occurrence(&t, false) {
                if next > now {
                    break;
                }
                due.push(next);
                t = next;
            }
            let mut fires: Vec<(DateTime<Utc>, u32)> = Vec::new();
            if config.misfire == MisfirePolicy::FireOnce
                && let Ok(last_late) = cron.find_previous_occurrence(&on_time_from, true)
                && last_late > cursor
                && last_late <= on_time_from
            {
                let missed = count_between(&cron, cursor, last_late);
                fires.push((last_late, missed));
            }
            fires.extend(due.iter().map(|t| (*t, 0)));
            for (instant, missed) in &fires {
                let source = TriggerSource::Schedule {
                    schedule: expr.clone(),
                    instant: *instant,
                    missed: *missed,
                };
                let input =
                    json!({"schedule": expr, "instant": rfc3339(*instant), "missed": missed});
                let key = format!("schedule:{}:{expr}@{}", installation.id, rfc3339(*instant));
                let f = fire(node, gateway, &installation, &manifest, source, input, key).await;
                if let Err(e) = &f.task
                    && e.is_transient()
                {
                    // Not dealt with: the next tick tries again.
                    return Err(e.clone());
                }
                fired.push(f);
            }
            let last = cron
                .find_previous_occurrence(&now, true)
                .ok()
                .filter(|l| *l > cursor);
            if let Some(last) = last {
                node.store
                    .advance_schedule(installation.id, expr, last)
                    .await?;
            }
        }
    }
    Ok(fired)
}

impl Platform {
    /// The schedules of `by`'s installations (every installation's for an admin), each with
    /// its next fire time after `now`.
    pub async fn schedules(
        &self,
        by: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Vec<ScheduleEntry>> {
        let (node, _) = self.parts();
        let mut entries = Vec::new();
        for installation in node.store.all_installations().await? {
            if !by.is_admin() && installation.user_id != by.user_id {
                continue;
            }
            let Ok(manifest) = node
                .manifest(&installation.agent_id, &installation.version)
                .await
            else {
                continue;
            };
            for expr in manifest.triggers.iter().flat_map(|t| t.schedules.iter()) {
                let next_fire = capecontrol_rules::schedule(expr)
                    .ok()
                    .and_then(|c| c.find_next_occurrence(&now, false).ok());
                entries.push(ScheduleEntry {
                    installation_id: installation.id,
                    agent_id: installation.agent_id.clone(),
                    user_id: installation.user_id.clone(),
                    schedule: expr.clone(),
                    last_instant: node.store.schedule_cursor(installation.id, expr).await?,
                    next_fire,
                });
            }
        }
        Ok(entries)
    }
}

/// The instants of `cron` in `(after, until]`, counted up to 100,000.
fn count_between(
    cron: &capecontrol_rules::Schedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> u32 {
    let mut n = 0u32;
    let mut t = after;
    while n < 100_000
        && let Ok(next) = cron.find_next_occurrence(&t, false)
        && next <= until
    {
        n += 1;
        t = next;
    }
    n
}

/// The scheduler loop of a node: [`Platform::run_schedules`] every `tick` with the wall clock,
/// until the node stops.
pub(crate) async fn schedule_loop(node: Arc<Node>, tick: Duration) {
    let gateway = Gateway::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = node.stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = run_schedules(&node, &gateway, Utc::now()).await {
            tracing::warn!(error = %e, "schedule tick failed");
        }
    }
}
