//! The store conformance suite: the behaviour every [`Store`] backend must show, written once
//! against the traits.
//!
//! Each case is a public async function taking a store; [`run_all`] runs every case, each on a
//! fresh store from a factory. The cases use unique agent ids and claim only their own agents'
//! tasks, so they also pass on a database shared between cases. Leases are short (200 ms) and
//! time is the backend's own clock, so the suite is backend-agnostic and quick.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn conformance() {
//!     capecontrol_testkit::conformance::run_all(|| async {
//!         std::sync::Arc::new(MemoryStore::new()) as std::sync::Arc<dyn Store>
//!     })
//!     .await;
//! }
//! ```
//!
//! Failures panic, as tests do.
//!
//! # What the suite pins down beyond the port's docs
//!
//! - Not-found errors for an unknown agent, version, installation or task; conflicts for a
//!   duplicate agent id or slug, a duplicate (agent, version) and an illegal version move.
//! - `insert_version` of an unknown agent is not-found; `upsert_installation` keeps the id of
//!   the installation it replaces.
//! - The catalog: published agents with a published version; `category` matches the agent's
//!   category, `placement` the published manifest's `placement`, `text` the agent's name or
//!   description case-insensitively; `total` counts every match, `offset`/`limit` page.
//! - Lifecycle events and their order (`queued`, `started`, `retrying`, `failed`, `cancelled`,
//!   `completed`), and `task.queued` / `task.started` / `task.completed` / `task.cancelled`
//!   audit rows with the acting user, IP and user agent where the port carries them.
//! - Fenced writes: events must be of the lease's task and gap-free (else validation) and
//!   continue at the task's `last + 1` (else conflict); a refused write writes nothing.
//! - A finish or release writes the step rows it carries with its events and outcome, all or
//!   nothing (a stale lease's or a misnumbered write writes no step).
//! - A reclaim writes `task.retrying` or `task.failed` audit rows (`reason: lease_expired`); a
//!   release or reclaim of a task whose cancellation was requested cancels it.
//! - Extra audit events of a task write default to the task's id and agent; an enqueue writes
//!   the caller's audit events before `task.queued`.
//! - The audit trail is a hash chain that `capecontrol_core::audit::verify_chain` finds intact after
//!   appends and task writes (payloads with floats, Unicode, control characters, nesting);
//!   `list_audit` pages by the `after` cursor in chain order.
//! - `enqueue` enforces [`NewTask::check`]'s bounds: at the limit accepted, one byte past it a
//!   validation error at the field's pointer (never a database error).
//! - Timestamps are kept to the microsecond; `upsert_installation` keeps `created_at` and sets
//!   `updated_at`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use capecontrol_core::agent::StepRecord;
use capecontrol_core::error::{Error, ErrorCategory};
use capecontrol_core::events::{TaskEvent, TaskEventKind};
use capecontrol_core::policy::Principal;
use capecontrol_core::state::{AgentStatus, RunStatus, TaskStatus, VersionStatus};
use capecontrol_core::store::{
    AgentFilter, AgentPatch, AgentRecord, AuditFilter, CatalogQuery, CatalogSort, ClaimRequest,
    Claimed, Finish, InstallationRecord, JournalWrite, NewAuditEvent, NewTask, Outcome, Store,
    TaskFilter, VersionRecord,
};

pub use crate::conformance_triggers::trigger_state;
pub use crate::conformance_live::live_events_do_not_pin_large_outputs;

/// The lease the queue cases claim with.
pub const SHORT_LEASE: Duration = Duration::from_millis(200);

/// Runs every case, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    registry_crud_and_conflicts(make().await).await;
    versions_publish_and_archive(make().await).await;
    installations(make().await).await;
    catalog_filters_sort_and_pages(make().await).await;
    enqueue_and_idempotency(make().await).await;
    claim_by_priority_age_and_run_at(make().await).await;
    heartbeat_extends_the_lease(make().await).await;
    fencing_after_lease_loss(make().await).await;
    reclaim_fails_when_no_attempt_is_left(make().await).await;
    finish_outcomes(make().await).await;
    release_does_not_count_the_attempt(make().await).await;
    finish_and_release_write_steps_atomically(make().await).await;
    cancel_queued_and_running(make().await).await;
    cancel_requested_ends_the_task_on_release_or_reclaim(make().await).await;
    cancel_requested_wins_over_a_retry_or_a_failure_not_a_completion(make().await).await;
    concurrency_limit_per_agent(make().await).await;
    events_are_numbered_without_gaps(make().await).await;
    live_events_do_not_pin_large_outputs(make().await).await;
    misnumbered_events_change_nothing(make().await).await;
    references_must_exist(make().await).await;
    audit_rows_for_every_state_change(make().await).await;
    timestamps_are_kept_to_the_microsecond(make().await).await;
    audit_chain_is_intact_and_pages(make().await).await;
    enqueue_enforces_the_task_bounds(make().await).await;
    api_keys_by_hash_revoke_and_list(make().await).await;
    ratings_of_completed_tasks(make().await).await;
    trigger_state(make().await).await;
    concurrent_claimers_never_share_a_task(make().await, 16, 500).await;
    crate::conformance_queue::run_all(&make).await;
    crate::conformance_waits::run_all(&make).await;
}

// ----- helpers ------------------------------------------------------------------------------

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

fn agent_record(id: &str, name: &str) -> AgentRecord {
    let now = Utc::now();
    AgentRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        slug: id.to_owned(),
        description: Some(format!("{name} does things")),
        category: None,
        capabilities: None,
        policy_scopes: Vec::new(),
        manifest: None,
        status: AgentStatus::Draft,
        owner: Some("owner-1".to_owned()),
        created_at: now,
        updated_at: now,
    }
}

fn version_record(agent_id: &str, version: &str, manifest: Value) -> VersionRecord {
    VersionRecord {
        id: Uuid::new_v4(),
        agent_id: agent_id.to_owned(),
        version: version.to_owned(),
        manifest,
        status: VersionStatus::Draft,
        changelog: Some(format!("changes of {version}")),
        published_at: None,
        created_at: Utc::now(),
    }
}

fn manifest(name: &str, version: &str, placement: &str) -> Value {
    json!({ "name": name, "version": version, "description": "d", "placement": placement })
}

/// Inserts a fresh agent with a published version, for the queue cases.
pub(crate) async fn fresh_agent(store: &Arc<dyn Store>) -> String {
    let id = unique("queue-agent");
    store.insert_agent(agent_record(&id, &id)).await.unwrap();
    store
        .insert_version(version_record(&id, "1.0.0", manifest(&id, "1.0.0", "chat")))
        .await
        .unwrap();
    store.publish_version(&id, "1.0.0").await.unwrap();
    id
}

pub(crate) fn new_task(agent: &str) -> NewTask {
    NewTask {
        id: Uuid::new_v4(),
        agent_id: agent.to_owned(),
        version: "1.0.0".into(),
        task: "run".into(),
        input: json!({ "n": 1 }),
        principal: Principal::new("user-1").with_roles(["user"]),
        priority: 0,
        run_at: None,
        idempotency_key: None,
        max_attempts: 3,
        concurrency_limit: 100,
        timeout: Duration::from_secs(30),
        traceparent: Some(TRACEPARENT.into()),
        audit: Vec::new(),
    }
}

/// The trace context of [`new_task`]'s tasks (stored and read back with the task).
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn claim_request(worker: &str, agent: &str, limit: usize) -> ClaimRequest {
    ClaimRequest {
        worker: worker.to_owned(),
        limit,
        lease: SHORT_LEASE,
        agents: Some(vec![agent.to_owned()]),
    }
}

pub(crate) async fn claim_one(store: &Arc<dyn Store>, worker: &str, agent: &str) -> Claimed {
    let mut claimed = store.claim(&claim_request(worker, agent, 1)).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one task to claim");
    claimed.remove(0)
}

pub(crate) fn completed(output: Value) -> Finish {
    Finish {
        outcome: Outcome::Completed { output },
        steps: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
    }
}

fn assert_category<T: std::fmt::Debug>(r: Result<T, Error>, category: ErrorCategory) {
    match r {
        Err(e) => assert_eq!(e.category(), category, "{e}"),
        Ok(v) => panic!("expected a {category} error, got {v:?}"),
    }
}

fn event(task_id: Uuid, seq: u64, kind: TaskEventKind) -> TaskEvent {
    TaskEvent {
        task_id,
        seq,
        at: Utc::now(),
        kind,
    }
}

fn seqs(events: &[TaskEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn kinds(events: &[TaskEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

// ----- registry -----------------------------------------------------------------------------

/// Agents: insert, duplicate id and slug, get by id and slug, PATCH, list with filters.
pub async fn registry_crud_and_conflicts(store: Arc<dyn Store>) {
    let id = unique("crud");
    let category = unique("cat");
    let mut record = agent_record(&id, "Zeta");
    record.category = Some(category.clone());
    let inserted = store.insert_agent(record.clone()).await.unwrap();
    assert_eq!(inserted.id, id);
    assert_eq!(inserted.status, AgentStatus::Draft);
    assert_eq!(
        inserted.owner.as_deref(),
        Some("owner-1"),
        "the owner is kept"
    );

    assert_category(
        store.insert_agent(record.clone()).await,
        ErrorCategory::Conflict,
    );
    let mut same_slug = agent_record(&unique("other"), "Other");
    same_slug.slug = id.clone();
    assert_category(store.insert_agent(same_slug).await, ErrorCategory::Conflict);

    let mut by_slug = agent_record(&unique("slugged"), "Alpha");
    by_slug.slug = unique("alpha-slug");
    by_slug.category = Some(category.clone());
    store.insert_agent(by_slug.clone()).await.unwrap();
    assert_eq!(store.get_agent(&by_slug.slug).await.unwrap().id, by_slug.id);
    assert_eq!(store.get_agent(&id).await.unwrap(), inserted);
    assert_category(
        store.get_agent(&unique("missing")).await,
        ErrorCategory::NotFound,
    );

    let patched = store
        .update_agent(
            &id,
            AgentPatch {
                description: Some("new description".into()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.description.as_deref(), Some("new description"));
    assert_eq!(patched.name, "Zeta", "PATCH leaves other fields");
    assert_eq!(patched.slug, id);
    assert_eq!(patched.owner, inserted.owner, "an update keeps the owner");
    assert!(patched.updated_at >= inserted.updated_at);
    assert_category(
        store
            .update_agent(&unique("missing"), AgentPatch::default())
            .await,
        ErrorCategory::NotFound,
    );

    let listed = store
        .list_agents(&AgentFilter {
            status: None,
            category: Some(category.clone()),
        })
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["Alpha", "Zeta"], "by name");
    let published = store
        .list_agents(&AgentFilter {
            status: Some(AgentStatus::Published),
            category: Some(category),
        })
        .await
        .unwrap();
    assert!(published.is_empty());
}

/// Versions: insert, duplicate, publish (archiving the previous one atomically), illegal
/// transitions change nothing.
pub async fn versions_publish_and_archive(store: Arc<dyn Store>) {
    let id = unique("versions");
    store.insert_agent(agent_record(&id, "V")).await.unwrap();
    assert_category(
        store
            .insert_version(version_record(&unique("nobody"), "1.0.0", json!({})))
            .await,
        ErrorCategory::NotFound,
    );
    for v in ["1.0.0", "1.1.0"] {
        store
            .insert_version(version_record(&id, v, manifest("V", v, "chat")))
            .await
            .unwrap();
    }
    assert_category(
        store
            .insert_version(version_record(&id, "1.0.0", json!({})))
            .await,
        ErrorCategory::Conflict,
    );
    let list = store.list_versions(&id).await.unwrap();
    assert_eq!(
        list.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(),
        ["1.0.0", "1.1.0"]
    );
    assert_category(
        store.get_version(&id, "9.9.9").await,
        ErrorCategory::NotFound,
    );

    let (published, archived) = store.publish_version(&id, "1.0.0").await.unwrap();
    assert_eq!(published.status, VersionStatus::Published);
    assert!(published.published_at.is_some());
    assert!(archived.is_none());
    let agent = store.get_agent(&id).await.unwrap();
    assert_eq!(agent.status, AgentStatus::Published);
    assert_eq!(agent.manifest, Some(manifest("V", "1.0.0", "chat")));

    let (published, archived) = store.publish_version(&id, "1.1.0").await.unwrap();
    assert_eq!(published.version, "1.1.0");
    let archived = archived.expect("the previous version is archived");
    assert_eq!(
        (archived.version.as_str(), archived.status),
        ("1.0.0", VersionStatus::Archived)
    );
    assert_eq!(
        store.get_version(&id, "1.0.0").await.unwrap().status,
        VersionStatus::Archived
    );
    assert_eq!(
        store.get_agent(&id).await.unwrap().manifest,
        Some(manifest("V", "1.1.0", "chat"))
    );

    // Publishing an archived version is illegal and changes nothing.
    assert_category(
        store.publish_version(&id, "1.0.0").await,
        ErrorCategory::Conflict,
    );
    let after = store.list_versions(&id).await.unwrap();
    assert_eq!(
        after.iter().map(|v| v.status).collect::<Vec<_>>(),
        [VersionStatus::Archived, VersionStatus::Published]
    );
    assert_category(
        store.publish_version(&id, "7.0.0").await,
        ErrorCategory::NotFound,
    );

    // set_version_status: from must match, and the move must be legal.
    assert_category(
        store
            .set_version_status(&id, "1.1.0", VersionStatus::Draft, VersionStatus::Archived)
            .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .set_version_status(
                &id,
                "1.0.0",
                VersionStatus::Archived,
                VersionStatus::Published,
            )
            .await,
        ErrorCategory::Conflict,
    );
    let v = store
        .set_version_status(
            &id,
            "1.1.0",
            VersionStatus::Published,
            VersionStatus::Archived,
        )
        .await
        .unwrap();
    assert_eq!(v.status, VersionStatus::Archived);
}

/// Installations: upsert (one per agent and user, replacing keeps the id), get, list, delete.
pub async fn installations(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let user = unique("user");
    let now = Utc::now();
    let first = InstallationRecord {
        id: Uuid::new_v4(),
        agent_id: agent.clone(),
        user_id: user.clone(),
        version: "1.0.0".into(),
        granted_scopes: vec!["a:read".into()],
        settings: json!({ "api_key": "secret" }),
        created_at: now,
        updated_at: now,
    };
    let stored = store.upsert_installation(first.clone()).await.unwrap();
    assert_eq!(stored.granted_scopes, ["a:read"]);
    let got = store.get_installation(&agent, &user).await.unwrap();
    assert_eq!(got.id, first.id);
    assert_eq!(got.settings, json!({ "api_key": "secret" }));

    let replaced = store
        .upsert_installation(InstallationRecord {
            id: Uuid::new_v4(),
            granted_scopes: vec!["a:read".into(), "b:write".into()],
            ..first.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        replaced.id, first.id,
        "an upsert keeps the installation's id"
    );
    assert_eq!(replaced.created_at, stored.created_at, "and its created_at");
    assert!(replaced.updated_at >= stored.updated_at);
    assert_eq!(replaced.granted_scopes.len(), 2);
    let listed = store.list_installations(&user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        store
            .list_installations(&unique("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    store.delete_installation(&agent, &user).await.unwrap();
    assert_category(
        store.get_installation(&agent, &user).await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store.delete_installation(&agent, &user).await,
        ErrorCategory::NotFound,
    );
}

/// The catalog: published agents only, filters, case-insensitive text, sort, pagination.
pub async fn catalog_filters_sort_and_pages(store: Arc<dyn Store>) {
    let tag = unique("tag");
    let category = unique("category");
    let make = |name: &str, description: &str, placement: &str, publish: bool| {
        let store = store.clone();
        let name = format!("{tag} {name}");
        let description = description.to_owned();
        let placement = placement.to_owned();
        let category = category.clone();
        async move {
            let id = unique("cat-agent");
            let mut r = agent_record(&id, &name);
            r.description = Some(description);
            r.category = Some(category);
            store.insert_agent(r).await.unwrap();
            store
                .insert_version(version_record(
                    &id,
                    "1.0.0",
                    manifest(&name, "1.0.0", &placement),
                ))
                .await
                .unwrap();
            if publish {
                store.publish_version(&id, "1.0.0").await.unwrap();
            }
            id
        }
    };
    make("Charlie", "Energy dashboards", "dashboard", true).await;
    make("Alpha", "Guides new USERS", "chat", true).await;
    make("Bravo", "Budget tracking", "dashboard", true).await;
    make("Delta", "never published", "dashboard", false).await;
    let text_query = CatalogQuery {
        text: Some(tag.to_uppercase()),
        ..CatalogQuery::default()
    };
    let page = store.catalog(&text_query).await.unwrap();
    assert_eq!(page.total, 3, "drafts are not in the catalog");
    let names: Vec<String> = page.items.iter().map(|e| e.agent.name.clone()).collect();
    assert_eq!(
        names,
        [
            format!("{tag} Alpha"),
            format!("{tag} Bravo"),
            format!("{tag} Charlie")
        ]
    );
    for e in &page.items {
        assert_eq!(e.version.status, VersionStatus::Published);
    }

    let dashboards = store
        .catalog(&CatalogQuery {
            placement: Some("dashboard".into()),
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(dashboards.total, 2);

    let by_description = store
        .catalog(&CatalogQuery {
            category: Some(category.clone()),
            text: Some("new users".into()),
            ..CatalogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_description.total, 1);
    assert_eq!(by_description.items[0].agent.name, format!("{tag} Alpha"));

    let other_category = store
        .catalog(&CatalogQuery {
            category: Some(unique("nothing")),
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(other_category.total, 0);

    let second_page = store
        .catalog(&CatalogQuery {
            offset: 1,
            limit: 1,
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(second_page.total, 3);
    assert_eq!(second_page.items.len(), 1);
    assert_eq!(second_page.items[0].agent.name, format!("{tag} Bravo"));

    let recent = store
        .catalog(&CatalogQuery {
            sort: CatalogSort::RecentlyPublished,
            ..text_query.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        recent.items[0].agent.name,
        format!("{tag} Bravo"),
        "the last published comes first"
    );
}

// ----- queue --------------------------------------------------------------------------------

/// Enqueue writes a queued task; an idempotency key (per user) returns the first task.
pub async fn enqueue_and_idempotency(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut wakeups = store.wakeups();
    let mut task = new_task(&agent);
    task.idempotency_key = Some("key-1".into());
    let first = store.enqueue(task.clone()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.task.status, TaskStatus::Queued);
    assert_eq!(first.task.attempts, 0);
    assert_eq!(first.task.user_id, "user-1");
    tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("an enqueue wakes the workers")
        .unwrap();

    let again = store
        .enqueue(NewTask {
            id: Uuid::new_v4(),
            ..task.clone()
        })
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.task.id, first.task.id);
    assert_eq!(first.task.traceparent.as_deref(), Some(TRACEPARENT));
    let read = store.get_task(first.task.id).await.unwrap();
    assert_eq!(read.traceparent.as_deref(), Some(TRACEPARENT));

    let mut other_user = task.clone();
    other_user.id = Uuid::new_v4();
    other_user.principal = Principal::new("user-2");
    let other = store.enqueue(other_user).await.unwrap();
    assert!(other.created, "keys are per user");
    assert_ne!(other.task.id, first.task.id);

    let listed = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent.clone()),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [other.task.id, first.task.id],
        "newest first"
    );
    let mine = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent.clone()),
            user_id: Some("user-2".into()),
            status: Some(TaskStatus::Queued),
            limit: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert!(store.queue_depth().await.unwrap() >= 2);
    assert_eq!(
        store.get_task(first.task.id).await.unwrap().status,
        TaskStatus::Queued
    );
    assert_category(
        store.get_task(Uuid::new_v4()).await,
        ErrorCategory::NotFound,
    );
}

/// Claims take due tasks only, by priority (higher first) then age.
pub async fn claim_by_priority_age_and_run_at(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut ids = Vec::new();
    for (priority, delay) in [(0, None), (5, None), (1, None), (9, Some(3600)), (5, None)] {
        let mut t = new_task(&agent);
        t.priority = priority;
        t.run_at = delay.map(|s| Utc::now() + chrono::Duration::seconds(s));
        if delay.is_none() {
            t.run_at = Some(Utc::now() - chrono::Duration::seconds(1));
        }
        ids.push(store.enqueue(t).await.unwrap().task.id);
    }
    let mut order = Vec::new();
    loop {
        let claimed = store.claim(&claim_request("w1", &agent, 1)).await.unwrap();
        let Some(c) = claimed.into_iter().next() else {
            break;
        };
        assert_eq!(c.task.status, TaskStatus::Running);
        assert_eq!(c.task.attempts, 1);
        assert_eq!(c.task.lease_owner.as_deref(), Some("w1"));
        assert_eq!(c.lease.owner, "w1");
        order.push(c.task.id);
    }
    assert_eq!(
        order,
        [ids[1], ids[4], ids[2], ids[0]],
        "priority, then age; the future task is not due"
    );
    assert_eq!(
        store.get_task(ids[3]).await.unwrap().status,
        TaskStatus::Queued
    );
    let other_agent = store
        .claim(&ClaimRequest {
            agents: Some(vec![unique("nobody")]),
            ..claim_request("w1", &agent, 10)
        })
        .await
        .unwrap();
    assert!(other_agent.is_empty());
}

/// A heartbeat extends the lease past its first expiry; reclaim leaves the task alone.
pub async fn heartbeat_extends_the_lease(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    assert_eq!(c.lease.task_id, id);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let hb = store.heartbeat(&c.lease, SHORT_LEASE).await.unwrap();
        assert!(!hb.cancel_requested);
        assert!(hb.expires_at > c.lease.expires_at - chrono::Duration::seconds(1));
    }
    let hb = store
        .heartbeat(&c.lease, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(hb.expires_at > Utc::now() + chrono::Duration::seconds(20));
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(100)).await;
    assert!(!store.reclaim_expired().await.unwrap().contains(&id));
    let done = store.finish(&c.lease, completed(json!(1))).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
}

/// After the lease is lost (expired and reclaimed, then claimed by another worker), the stale
/// worker's heartbeat, journal, finish and release are conflicts and change nothing.
pub async fn fencing_after_lease_loss(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let stale = claim_one(&store, "w1", &agent).await;
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    let reclaimed = store.reclaim_expired().await.unwrap();
    assert!(reclaimed.contains(&id));
    let task = store.get_task(id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Queued, "requeued: attempts remain");
    assert_eq!(task.attempts, 1);
    assert!(task.lease_owner.is_none());
    assert!(task.error_message.is_some());
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["queued", "started", "retrying"]);
    let audit = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            event_type: Some("task.retrying".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "a reclaim writes a task.retrying audit row");
    assert_eq!(audit[0].payload["reason"], json!("lease_expired"));
    assert_eq!(audit[0].payload["worker"], json!("w1"));
    assert_eq!(audit[0].payload["attempt"], json!(1));

    let stale_calls = |store: Arc<dyn Store>, lease: capecontrol_core::store::Lease| async move {
        assert_category(
            store.heartbeat(&lease, SHORT_LEASE).await,
            ErrorCategory::Conflict,
        );
        let step = StepRecord {
            step: 1,
            name: "stale".into(),
            status: RunStatus::Completed,
            output: Some(json!("stale")),
            error: None,
            started_at: None,
            finished_at: None,
        };
        assert_category(
            store
                .journal(
                    &lease,
                    JournalWrite {
                        step: Some(step),
                        events: Vec::new(),
                        audit: Vec::new(),
                    },
                )
                .await,
            ErrorCategory::Conflict,
        );
        assert_category(
            store.finish(&lease, completed(json!("stale"))).await,
            ErrorCategory::Conflict,
        );
        assert_category(
            store.release(&lease, Vec::new(), Vec::new()).await,
            ErrorCategory::Conflict,
        );
    };

    // Lost and not yet claimed again.
    let before = store.get_task(id).await.unwrap();
    stale_calls(store.clone(), stale.lease.clone()).await;
    assert_eq!(store.get_task(id).await.unwrap(), before);
    assert!(store.steps(id).await.unwrap().is_empty());

    // Claimed again, by the same worker name even: a new token; the stale one still changes
    // nothing.
    let fresh = claim_one(&store, "w1", &agent).await;
    assert_eq!(fresh.task.id, id);
    assert_eq!(fresh.task.attempts, 2);
    assert_ne!(fresh.lease.token, stale.lease.token);
    let before = store.get_task(id).await.unwrap();
    let events_before = store.events(id, 0).await.unwrap();
    stale_calls(store.clone(), stale.lease.clone()).await;
    assert_eq!(store.get_task(id).await.unwrap(), before);
    assert_eq!(store.events(id, 0).await.unwrap(), events_before);
    assert!(store.steps(id).await.unwrap().is_empty());

    // The holder of the lease finishes.
    let done = store
        .finish(&fresh.lease, completed(json!("fresh")))
        .await
        .unwrap();
    assert_eq!(done.output, Some(json!("fresh")));
    // Finished: the lease is gone for the holder too.
    assert_category(
        store.finish(&fresh.lease, completed(json!(2))).await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store.heartbeat(&fresh.lease, SHORT_LEASE).await,
        ErrorCategory::Conflict,
    );
}

/// A task whose lease expires on its last attempt fails for good.
pub async fn reclaim_fails_when_no_attempt_is_left(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut t = new_task(&agent);
    t.max_attempts = 1;
    let id = store.enqueue(t).await.unwrap().task.id;
    let _c = claim_one(&store, "w1", &agent).await;
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    assert!(store.reclaim_expired().await.unwrap().contains(&id));
    let task = store.get_task(id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(task.error.is_some());
    assert!(task.error_message.is_some());
    assert!(task.completed_at.is_some());
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["queued", "started", "failed"]);
    let audit = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            event_type: Some("task.failed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        audit.len(),
        1,
        "a final reclaim writes a task.failed audit row"
    );
    assert_eq!(audit[0].payload["reason"], json!("lease_expired"));
    assert!(!store.reclaim_expired().await.unwrap().contains(&id));
}

/// Finish: completed; failed with a retry (queued again at `retry_at`, error kept); failed for
/// good; cancelled. A final task cannot be finished again.
pub async fn finish_outcomes(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;

    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let done = store
        .finish(&c.lease, completed(json!({ "ok": true })))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output, Some(json!({ "ok": true })));
    assert!(done.completed_at.is_some());
    assert!(done.lease_owner.is_none());
    assert_eq!(store.get_task(id).await.unwrap(), done);

    // Failed with a retry in the future: queued, not due.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let retry_at = Utc::now() + chrono::Duration::seconds(3600);
    let error = Error::agent("boom");
    let retried = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: error.clone(),
                    retry_at: Some(retry_at),
                },
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(retried.status, TaskStatus::Queued);
    assert_eq!(retried.error, Some(error.clone()));
    assert_eq!(retried.error_message, Some(error.to_string()));
    assert!(
        (retried.run_at - retry_at).num_milliseconds().abs() < 5,
        "run_at is retry_at"
    );
    assert!(
        store
            .claim(&claim_request("w1", &agent, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(kinds(&events), ["queued", "started", "retrying"]);

    // Failed with a retry now: claimed again as attempt 2, then failed for good.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: Error::resource("timeout"),
                    retry_at: Some(Utc::now() - chrono::Duration::seconds(1)),
                },
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    let c = claim_one(&store, "w1", &agent).await;
    assert_eq!((c.task.id, c.task.attempts), (id, 2));
    let failed = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Failed {
                    error: Error::validation("bad input", Vec::new()),
                    retry_at: None,
                },
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(
        failed.error.as_ref().map(Error::category),
        Some(ErrorCategory::Validation)
    );
    assert!(failed.error_message.is_some());
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(
        kinds(&events),
        ["queued", "started", "retrying", "started", "failed"]
    );

    // Cancelled by the worker.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let cancelled = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Cancelled,
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(
        kinds(&store.events(id, 0).await.unwrap()),
        ["queued", "started", "cancelled"]
    );
}

/// Release puts a running task back without counting the attempt.
pub async fn release_does_not_count_the_attempt(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut wakeups = store.wakeups();
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    while wakeups.try_recv().is_ok() {}
    store
        .release(&c.lease, Vec::new(), Vec::new())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("a release wakes the workers")
        .unwrap();
    let task = store.get_task(id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.attempts, 0);
    assert!(task.lease_owner.is_none());
    assert_category(
        store.heartbeat(&c.lease, SHORT_LEASE).await,
        ErrorCategory::Conflict,
    );
    let again = claim_one(&store, "w2", &agent).await;
    assert_eq!((again.task.id, again.task.attempts), (id, 1));
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().map(|e| e.kind.name()), Some("started"));
}

fn step_row(step: u32, output: Value) -> StepRecord {
    let now = Utc::now().trunc_subsecs(6);
    StepRecord {
        step,
        name: format!("step-{step}"),
        status: RunStatus::Completed,
        output: Some(output),
        error: None,
        started_at: Some(now),
        finished_at: Some(now),
    }
}

/// A finish or release carrying step rows writes them with its events and outcome in one
/// transaction; a stale lease's or a misnumbered one writes nothing.
pub async fn finish_and_release_write_steps_atomically(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;

    // Finish with two steps (one replacing an earlier row of the same step) and their events.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .journal(
            &c.lease,
            JournalWrite {
                step: Some(step_row(1, json!("first"))),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    let steps = vec![step_row(1, json!("one")), step_row(2, json!("two"))];
    let n = c.last_seq;
    let started = |seq, step| {
        event(
            id,
            seq,
            TaskEventKind::StepStarted {
                step,
                name: format!("step-{step}"),
            },
        )
    };
    let done = |seq, step| {
        event(
            id,
            seq,
            TaskEventKind::StepCompleted {
                step,
                name: format!("step-{step}"),
            },
        )
    };
    let task = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed { output: json!(2) },
                steps: steps.clone(),
                events: vec![started(n + 1, 2), done(n + 2, 2)],
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(store.steps(id).await.unwrap(), steps);
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "queued",
            "started",
            "step_started",
            "step_completed",
            "completed"
        ]
    );
    assert_eq!(seqs(&events), (1..=5).collect::<Vec<_>>());

    // A stale lease (expired and reclaimed) finishes or releases with steps: nothing written.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let stale = claim_one(&store, "w1", &agent).await;
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    assert!(store.reclaim_expired().await.unwrap().contains(&id));
    let before = store.get_task(id).await.unwrap();
    let events_before = store.events(id, 0).await.unwrap();
    let n = stale.last_seq;
    let stale_finish = Finish {
        outcome: Outcome::Completed { output: json!(1) },
        steps: vec![step_row(1, json!("stale"))],
        events: vec![event(
            id,
            n + 1,
            TaskEventKind::StepCompleted {
                step: 1,
                name: "step-1".into(),
            },
        )],
        audit: Vec::new(),
    };
    assert_category(
        store.finish(&stale.lease, stale_finish.clone()).await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .release(
                &stale.lease,
                stale_finish.events.clone(),
                stale_finish.steps.clone(),
            )
            .await,
        ErrorCategory::Conflict,
    );
    assert_eq!(store.get_task(id).await.unwrap(), before);
    assert_eq!(store.events(id, 0).await.unwrap(), events_before);
    assert!(store.steps(id).await.unwrap().is_empty());

    // The holder's misnumbered finish with steps writes nothing either.
    let fresh = claim_one(&store, "w2", &agent).await;
    assert_eq!(fresh.task.id, id);
    let misnumbered = Finish {
        outcome: Outcome::Completed { output: json!(1) },
        steps: vec![step_row(1, json!("early"))],
        events: vec![event(
            id,
            fresh.last_seq + 2,
            TaskEventKind::StepCompleted {
                step: 1,
                name: "step-1".into(),
            },
        )],
        audit: Vec::new(),
    };
    assert_category(
        store.finish(&fresh.lease, misnumbered).await,
        ErrorCategory::Conflict,
    );
    assert!(store.steps(id).await.unwrap().is_empty());

    // A release with a step: written with the release, the attempt not counted.
    let row = step_row(1, json!("kept"));
    store
        .release(
            &fresh.lease,
            vec![event(
                id,
                fresh.last_seq + 1,
                TaskEventKind::StepCompleted {
                    step: 1,
                    name: "step-1".into(),
                },
            )],
            vec![row.clone()],
        )
        .await
        .unwrap();
    assert_eq!(store.steps(id).await.unwrap(), vec![row]);
    let task = store.get_task(id).await.unwrap();
    assert_eq!((task.status, task.attempts), (TaskStatus::Queued, 1));
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events
            .iter()
            .rev()
            .take(2)
            .map(|e| e.kind.name())
            .collect::<Vec<_>>(),
        ["queued", "step_completed"]
    );
}

/// Cancel: a queued task at once; a running one by a flag its worker learns from a heartbeat;
/// a final task is a conflict.
pub async fn cancel_queued_and_running(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let admin = Principal::new("admin-1");

    let queued = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let t = store.cancel(queued, &admin).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(
        kinds(&store.events(queued, 0).await.unwrap()),
        ["queued", "cancelled"]
    );
    assert!(
        store
            .claim(&claim_request("w1", &agent, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_category(store.cancel(queued, &admin).await, ErrorCategory::Conflict);
    assert_category(
        store.cancel(Uuid::new_v4(), &admin).await,
        ErrorCategory::NotFound,
    );

    let running = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let t = store.cancel(running, &admin).await.unwrap();
    assert_eq!(t.status, TaskStatus::Running);
    assert!(t.cancel_requested);
    let hb = store.heartbeat(&c.lease, SHORT_LEASE).await.unwrap();
    assert!(hb.cancel_requested);
    let done = store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Cancelled,
                steps: Vec::new(),
                events: Vec::new(),
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Cancelled);
    assert_category(store.cancel(running, &admin).await, ErrorCategory::Conflict);
    let audit = store
        .list_audit(&AuditFilter {
            task_id: Some(queued),
            event_type: Some("task.cancelled".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].user_id.as_deref(), Some("admin-1"));
}

/// At most `concurrency_limit` tasks of one agent run at once, across claims and workers.
pub async fn concurrency_limit_per_agent(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    for _ in 0..5 {
        let mut t = new_task(&agent);
        t.concurrency_limit = 2;
        store.enqueue(t).await.unwrap();
    }
    let first = store.claim(&claim_request("w1", &agent, 10)).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        store
            .claim(&claim_request("w2", &agent, 10))
            .await
            .unwrap()
            .is_empty(),
        "the limit holds across workers"
    );
    store
        .finish(&first[0].lease, completed(json!(1)))
        .await
        .unwrap();
    let next = store.claim(&claim_request("w2", &agent, 10)).await.unwrap();
    assert_eq!(next.len(), 1);
    let running = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent.clone()),
            status: Some(TaskStatus::Running),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
}

/// Events: per task, from 1, without gaps; the worker numbers its own after `last_seq`, the
/// store its lifecycle events after those; committed events reach subscribers; steps are
/// journaled by number.
pub async fn events_are_numbered_without_gaps(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut live = store.subscribe();
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    assert_eq!(c.last_seq, 2, "queued, started");
    assert!(c.steps.is_empty());

    let mut seq = c.last_seq;
    let mut next = |kind| {
        seq += 1;
        event(id, seq, kind)
    };
    let started = next(TaskEventKind::StepStarted {
        step: 1,
        name: "ingest".into(),
    });
    store.publish(started.clone()).await.unwrap();
    let step = StepRecord {
        step: 1,
        name: "ingest".into(),
        status: RunStatus::Completed,
        output: Some(json!([1, 2, 3])),
        error: None,
        // Microseconds: what the stores keep (see `timestamps_are_kept_to_the_microsecond`).
        started_at: Some(Utc::now().trunc_subsecs(6)),
        finished_at: Some(Utc::now().trunc_subsecs(6)),
    };
    let step_done = next(TaskEventKind::StepCompleted {
        step: 1,
        name: "ingest".into(),
    });
    store
        .journal(
            &c.lease,
            JournalWrite {
                step: Some(step.clone()),
                events: vec![started, step_done],
                audit: vec![NewAuditEvent {
                    event_type: "tool.called".into(),
                    payload: json!({ "tool": "ingest" }),
                    ..NewAuditEvent::default()
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(store.steps(id).await.unwrap(), [step]);
    let tool = next(TaskEventKind::ToolCalled {
        tool: "report".into(),
        allowed: true,
    });
    store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed { output: json!(6) },
                steps: Vec::new(),
                events: vec![tool],
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();

    let events = store.events(id, 0).await.unwrap();
    assert_eq!(seqs(&events), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        kinds(&events),
        [
            "queued",
            "started",
            "step_started",
            "step_completed",
            "tool_called",
            "completed"
        ]
    );
    assert!(events.iter().all(|e| e.task_id == id));
    assert_eq!(seqs(&store.events(id, 4).await.unwrap()), [5, 6]);
    assert!(store.events(id, 6).await.unwrap().is_empty());

    // Subscribers saw every committed event (and the live one), in order per task.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(&6) {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(e)) if e.task_id == id => seen.push(e.seq),
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("subscription closed: {e}"),
            Err(_) => panic!("timed out waiting for events; saw {seen:?}"),
        }
    }
    seen.dedup();
    let mut unique_seen = seen.clone();
    unique_seen.sort_unstable();
    unique_seen.dedup();
    assert_eq!(unique_seen, [1, 2, 3, 4, 5, 6]);
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "in order per task: {seen:?}"
    );
}

/// A fenced write whose events do not continue the task's sequence is a conflict (a gap inside
/// the batch, or another task's event, a validation error) and writes nothing: no event, no
/// step, no state change.
pub async fn misnumbered_events_change_nothing(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    let tool = || TaskEventKind::ToolCalled {
        tool: "t".into(),
        allowed: true,
    };
    let step = StepRecord {
        step: 1,
        name: "s".into(),
        status: RunStatus::Completed,
        output: Some(json!(1)),
        error: None,
        started_at: None,
        finished_at: None,
    };
    let write = |events: Vec<TaskEvent>| JournalWrite {
        step: Some(step.clone()),
        events,
        audit: Vec::new(),
    };
    let next = c.last_seq + 1;
    assert_category(
        store
            .journal(&c.lease, write(vec![event(id, next + 1, tool())]))
            .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .journal(&c.lease, write(vec![event(id, c.last_seq, tool())]))
            .await,
        ErrorCategory::Conflict,
    );
    assert_category(
        store
            .journal(
                &c.lease,
                write(vec![event(id, next, tool()), event(id, next + 2, tool())]),
            )
            .await,
        ErrorCategory::Validation,
    );
    assert_category(
        store
            .journal(&c.lease, write(vec![event(Uuid::new_v4(), next, tool())]))
            .await,
        ErrorCategory::Validation,
    );
    assert_category(
        store
            .finish(
                &c.lease,
                Finish {
                    outcome: Outcome::Completed { output: json!(1) },
                    steps: Vec::new(),
                    events: vec![event(id, next + 5, tool())],
                    audit: Vec::new(),
                },
            )
            .await,
        ErrorCategory::Conflict,
    );
    assert_eq!(seqs(&store.events(id, 0).await.unwrap()), [1, 2]);
    assert!(store.steps(id).await.unwrap().is_empty());
    assert_eq!(
        store.get_task(id).await.unwrap().status,
        TaskStatus::Running
    );
    // The lease still holds: a correctly numbered write goes through.
    store
        .journal(&c.lease, write(vec![event(id, next, tool())]))
        .await
        .unwrap();
    assert_eq!(seqs(&store.events(id, 0).await.unwrap()), [1, 2, 3]);
}

/// Tasks, installations and audit events refer to existing agents and tasks (the SQL
/// schema's foreign keys): an unknown one is not-found and nothing is written.
pub async fn references_must_exist(store: Arc<dyn Store>) {
    let nobody = unique("no-agent");
    let mut t = new_task(&nobody);
    t.idempotency_key = Some(unique("key"));
    let id = t.id;
    assert_category(store.enqueue(t).await, ErrorCategory::NotFound);
    assert_category(store.get_task(id).await, ErrorCategory::NotFound);
    let now = Utc::now();
    assert_category(
        store
            .upsert_installation(InstallationRecord {
                id: Uuid::new_v4(),
                agent_id: nobody.clone(),
                user_id: "u".into(),
                version: "1.0.0".into(),
                granted_scopes: Vec::new(),
                settings: json!({}),
                created_at: now,
                updated_at: now,
            })
            .await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store
            .append_audit(
                NewAuditEvent {
                    event_type: "x".into(),
                    ..NewAuditEvent::default()
                }
                .agent(nobody.clone()),
            )
            .await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store
            .append_audit(
                NewAuditEvent {
                    event_type: "x".into(),
                    ..NewAuditEvent::default()
                }
                .task(Uuid::new_v4()),
            )
            .await,
        ErrorCategory::NotFound,
    );
    let rows = store
        .list_audit(&AuditFilter {
            agent_id: Some(nobody),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(rows.is_empty());
}

/// The audit trail is a chain that verifies, whatever wrote the rows; `list_audit` pages by its
/// `after` cursor in chain order, and a limit past [`capecontrol_core::store::MAX_AUDIT_PAGE`] is capped.
pub async fn audit_chain_is_intact_and_pages(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let principal = Principal::new("chain-user")
        .with_ip("2001:db8::7".parse().unwrap())
        .with_user_agent("chain/1.0 \"quoted\"");
    let payloads = [
        json!({ "float": 1.5, "tiny": 1e-7, "big": 1.5e20, "int": -42, "u": u64::MAX }),
        json!({ "text": "é ✓ \u{1} \t \\ \"", "nested": { "bb": [1, {"a": null}], "a": true } }),
        json!(null),
        json!([]),
        json!("plain"),
    ];
    let mut appended = Vec::new();
    for i in 0..25 {
        let e = store
            .append_audit(
                NewAuditEvent::by(
                    &principal,
                    "chain.test",
                    payloads[i % payloads.len()].clone(),
                )
                .agent(agent.clone()),
            )
            .await
            .unwrap();
        assert!(e.seq > 0, "an appended row is chained");
        assert_eq!(
            e.hash,
            capecontrol_core::audit::row_hash(&e),
            "its hash is its content's"
        );
        appended.push(e);
    }
    for pair in appended.windows(2) {
        assert!(pair[1].seq > pair[0].seq, "chain order follows appends");
    }
    // Rows written by the queue's own statements are chained too.
    let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .finish(&c.lease, completed(json!(0.25)))
        .await
        .unwrap();
    let report = capecontrol_core::audit::verify_chain(&*store)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(report.rows >= 28, "{report:?}");
    let head = store.audit_head().await.unwrap();
    assert_eq!(report.last, head);

    // Pages of 10 by the cursor give every row of the agent once, in chain order.
    let all = store
        .list_audit(&AuditFilter {
            agent_id: Some(agent.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(all.iter().any(|e| e.task_id == Some(id)));
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_audit(&AuditFilter {
                agent_id: Some(agent.clone()),
                after,
                limit: Some(10),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        AuditFilter {
            limit: Some(usize::MAX),
            ..AuditFilter::default()
        }
        .page_size(),
        capecontrol_core::store::MAX_AUDIT_PAGE
    );
}

/// Each bound of [`NewTask::check`]: the limit is accepted, the limit + 1 is a validation error
/// at the field's pointer, and nothing is stored.
pub async fn enqueue_enforces_the_task_bounds(store: Arc<dyn Store>) {
    use capecontrol_core::store::{
        MAX_IDEMPOTENCY_KEY_BYTES, MAX_TASK_NAME_BYTES, MAX_USER_AGENT_BYTES, MAX_USER_ID_BYTES,
    };
    let agent = fresh_agent(&store).await;
    type Set = fn(&mut NewTask, usize);
    let bounds: [(&str, usize, Set); 4] = [
        ("/idempotency_key", MAX_IDEMPOTENCY_KEY_BYTES, |t, n| {
            t.idempotency_key = Some(format!("{}{}", t.id.simple(), "k".repeat(n - 32)));
        }),
        ("/task", MAX_TASK_NAME_BYTES, |t, n| t.task = "t".repeat(n)),
        ("/principal/user_id", MAX_USER_ID_BYTES, |t, n| {
            t.principal.user_id = "u".repeat(n);
        }),
        ("/principal/user_agent", MAX_USER_AGENT_BYTES, |t, n| {
            // Multi-byte characters: the bound is in bytes.
            t.principal.user_agent = Some(format!("{}{}", "é".repeat(n / 2), "a".repeat(n % 2)));
            assert_eq!(t.principal.user_agent.as_ref().unwrap().len(), n);
        }),
    ];
    for (pointer, max, set) in bounds {
        let mut ok = new_task(&agent);
        set(&mut ok, max);
        let id = ok.id;
        assert!(
            store.enqueue(ok).await.unwrap().created,
            "{pointer} at its limit"
        );
        let mut over = new_task(&agent);
        set(&mut over, max + 1);
        let over_id = over.id;
        let e = store.enqueue(over).await.unwrap_err();
        assert_eq!(e.category(), ErrorCategory::Validation, "{pointer}: {e}");
        assert_eq!(e.category().http_status(), 400);
        let pointers: Vec<_> = e.field_errors().iter().map(|f| f.pointer.clone()).collect();
        assert_eq!(pointers, vec![pointer.to_owned()]);
        assert!(
            !e.to_string().contains("kkkkkkkk"),
            "never echoes the value"
        );
        assert_category(store.get_task(over_id).await, ErrorCategory::NotFound);
        store.get_task(id).await.unwrap();
    }
}

/// Every task state change writes one audit event in the same transaction; extra audit events
/// of an enqueue, a journal write or a finish are written with the task.
pub async fn audit_rows_for_every_state_change(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let mut t = new_task(&agent);
    t.principal = Principal::new("auditor")
        .with_ip("10.0.0.7".parse().unwrap())
        .with_user_agent("conformance/1.0");
    t.audit = vec![
        NewAuditEvent::by(
            &t.principal,
            "policy.allowed",
            json!({ "scopes": ["a:read"] }),
        )
        .agent(agent.clone())
        .task(t.id),
    ];
    let id = store.enqueue(t).await.unwrap().task.id;
    let c = claim_one(&store, "w1", &agent).await;
    store
        .finish(
            &c.lease,
            Finish {
                outcome: Outcome::Completed { output: json!(1) },
                steps: Vec::new(),
                events: Vec::new(),
                audit: vec![
                    NewAuditEvent {
                        event_type: "moderation.passed".into(),
                        ..NewAuditEvent::default()
                    }
                    .task(id),
                ],
            },
        )
        .await
        .unwrap();
    let rows = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let pos = |t: &str| {
        types
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("no `{t}` audit row in {types:?}"))
    };
    assert!(pos("task.queued") < pos("task.started"));
    assert!(pos("task.started") < pos("task.completed"));
    assert!(
        pos("policy.allowed") < pos("task.queued"),
        "the caller's audit first"
    );
    pos("moderation.passed");
    for extra in ["policy.allowed", "moderation.passed"] {
        let row = &rows[pos(extra)];
        assert_eq!(row.agent_id.as_deref(), Some(agent.as_str()), "{extra}");
    }
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    let queued = &rows[pos("task.queued")];
    assert_eq!(queued.user_id.as_deref(), Some("auditor"));
    assert_eq!(queued.agent_id.as_deref(), Some(agent.as_str()));
    assert_eq!(queued.ip_address, Some("10.0.0.7".parse().unwrap()));
    assert_eq!(queued.user_agent.as_deref(), Some("conformance/1.0"));
    let completed_rows = store
        .list_audit(&AuditFilter {
            agent_id: Some(agent.clone()),
            event_type: Some("task.completed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(completed_rows.len(), 1);
    let limited = store
        .list_audit(&AuditFilter {
            task_id: Some(id),
            limit: Some(2),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);

    let appended = store
        .append_audit(NewAuditEvent {
            agent_id: Some(agent.clone()),
            event_type: "agent.created".into(),
            payload: json!({ "name": "x" }),
            ..NewAuditEvent::default()
        })
        .await
        .unwrap();
    assert!(appended.id > rows.last().map_or(0, |r| r.id));
    assert_eq!(appended.payload, json!({ "name": "x" }));
}

/// `claimers` concurrent claim loops over `tasks` tasks: every task is claimed exactly once.
pub async fn concurrent_claimers_never_share_a_task(
    store: Arc<dyn Store>,
    claimers: usize,
    tasks: usize,
) {
    let agent = fresh_agent(&store).await;
    let mut expected = HashSet::new();
    for _ in 0..tasks {
        let mut t = new_task(&agent);
        t.concurrency_limit = u32::try_from(tasks * 2).unwrap_or(u32::MAX);
        expected.insert(store.enqueue(t).await.unwrap().task.id);
    }
    let mut handles = Vec::new();
    for w in 0..claimers {
        let store = store.clone();
        let agent = agent.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim(&ClaimRequest {
                        worker: format!("w{w}"),
                        limit: 1 + w % 4,
                        lease: Duration::from_secs(60),
                        agents: Some(vec![agent.clone()]),
                    })
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    break;
                }
                for c in claimed {
                    mine.push(c.task.id);
                    store.finish(&c.lease, completed(json!(w))).await.unwrap();
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a task was claimed twice");
    assert_eq!(distinct, expected, "every task was claimed");
    let left = store
        .list_tasks(&TaskFilter {
            agent_id: Some(agent),
            status: Some(TaskStatus::Queued),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert!(left.is_empty());
}

/// A task whose cancellation was requested while it ran is cancelled, not requeued, when its
/// worker releases it or when its lease expires and it is reclaimed.
pub async fn cancel_requested_ends_the_task_on_release_or_reclaim(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let admin = Principal::new("admin-1");
    let released = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let reclaimed = store.enqueue(new_task(&agent)).await.unwrap().task.id;
    let claimed = store.claim(&claim_request("w1", &agent, 2)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    store.cancel(released, &admin).await.unwrap();
    store.cancel(reclaimed, &admin).await.unwrap();
    let lease = |id: Uuid| {
        claimed
            .iter()
            .find(|c| c.task.id == id)
            .map(|c| c.lease.clone())
            .unwrap()
    };

    store
        .release(&lease(released), Vec::new(), Vec::new())
        .await
        .unwrap();
    let t = store.get_task(released).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(t.completed_at.is_some());
    assert!(t.lease_owner.is_none());
    assert_eq!(
        kinds(&store.events(released, 0).await.unwrap()),
        ["queued", "started", "cancelled"]
    );

    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(150)).await;
    assert!(store.reclaim_expired().await.unwrap().contains(&reclaimed));
    let t = store.get_task(reclaimed).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(t.completed_at.is_some());
    assert_eq!(
        kinds(&store.events(reclaimed, 0).await.unwrap()),
        ["queued", "started", "cancelled"]
    );
    for id in [released, reclaimed] {
        let audit = store
            .list_audit(&AuditFilter {
                task_id: Some(id),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
        assert_eq!(types.last().copied(), Some("task.cancelled"), "{types:?}");
    }
    assert!(
        store
            .claim(&claim_request("w2", &agent, 10))
            .await
            .unwrap()
            .is_empty(),
        "nothing was requeued"
    );
}

/// A cancel requested while a task runs ends it `cancelled` when its attempt finishes with a
/// retry or a failure (timed out, say); a completion that got there first stays completed.
/// Either way exactly one terminal state, the same in the row, the events and the audit rows.
pub async fn cancel_requested_wins_over_a_retry_or_a_failure_not_a_completion(
    store: Arc<dyn Store>,
) {
    let agent = fresh_agent(&store).await;
    let admin = Principal::new("admin-1");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.enqueue(new_task(&agent)).await.unwrap().task.id);
    }
    let claimed = store.claim(&claim_request("w1", &agent, 3)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for id in &ids {
        let t = store.cancel(*id, &admin).await.unwrap();
        assert!(t.cancel_requested);
        assert_eq!(t.status, TaskStatus::Running);
    }
    let lease = |id: Uuid| {
        claimed
            .iter()
            .find(|c| c.task.id == id)
            .map(|c| c.lease.clone())
            .unwrap()
    };
    let failed = |retry_at| Finish {
        outcome: Outcome::Failed {
            error: Error::resource("attempt timed out"),
            retry_at,
        },
        steps: Vec::new(),
        events: Vec::new(),
        audit: Vec::new(),
    };
    let (retried, failed_for_good, done) = (ids[0], ids[1], ids[2]);
    let at = Utc::now() + chrono::Duration::milliseconds(10);
    let r = store
        .finish(&lease(retried), failed(Some(at)))
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Cancelled);
    let r = store
        .finish(&lease(failed_for_good), failed(None))
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Cancelled);
    let r = store
        .finish(&lease(done), completed(json!("won the race")))
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Completed);

    for (id, status, last_event, last_audit) in [
        (
            retried,
            TaskStatus::Cancelled,
            "cancelled",
            "task.cancelled",
        ),
        (
            failed_for_good,
            TaskStatus::Cancelled,
            "cancelled",
            "task.cancelled",
        ),
        (done, TaskStatus::Completed, "completed", "task.completed"),
    ] {
        let t = store.get_task(id).await.unwrap();
        assert_eq!(t.status, status);
        assert!(t.completed_at.is_some());
        assert!(t.lease_owner.is_none());
        let events = store.events(id, 0).await.unwrap();
        let terminal: Vec<&str> = events
            .iter()
            .filter(|e| e.kind.is_terminal())
            .map(|e| e.kind.name())
            .collect();
        assert_eq!(terminal, [last_event], "{:?}", kinds(&events));
        assert!(!kinds(&events).contains(&"retrying"));
        let audit = store
            .list_audit(&AuditFilter {
                task_id: Some(id),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let types: Vec<&str> = audit.iter().map(|a| a.event_type.as_str()).collect();
        let ends: Vec<&str> = types
            .iter()
            .copied()
            .filter(|t| {
                [
                    "task.completed",
                    "task.failed",
                    "task.cancelled",
                    "task.retrying",
                ]
                .contains(t)
            })
            .collect();
        assert_eq!(ends, [last_audit], "{types:?}");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        store
            .claim(&claim_request("w2", &agent, 10))
            .await
            .unwrap()
            .is_empty(),
        "nothing was requeued"
    );
}

/// Timestamps are kept to the microsecond (PostgreSQL's resolution): what a write returns, what
/// is read back and what subscribers see are equal.
pub async fn timestamps_are_kept_to_the_microsecond(store: Arc<dyn Store>) {
    use chrono::Timelike;
    let fine = |t: chrono::DateTime<Utc>| {
        t.with_nanosecond(t.nanosecond() / 1000 * 1000 + 789)
            .unwrap()
    };
    let agent = fresh_agent(&store).await;
    let mut t = new_task(&agent);
    let run_at = fine(Utc::now() - chrono::Duration::seconds(1));
    t.run_at = Some(run_at);
    let enqueued = store.enqueue(t).await.unwrap().task;
    assert_eq!(enqueued.run_at, run_at.trunc_subsecs(6));
    assert_eq!(store.get_task(enqueued.id).await.unwrap(), enqueued);

    let c = claim_one(&store, "w1", &agent).await;
    let at = fine(Utc::now());
    let step = StepRecord {
        step: 1,
        name: "s".into(),
        status: RunStatus::Completed,
        output: None,
        error: None,
        started_at: Some(at),
        finished_at: Some(at),
    };
    let e = event(
        c.task.id,
        c.last_seq + 1,
        TaskEventKind::StepCompleted {
            step: 1,
            name: "s".into(),
        },
    );
    let e = TaskEvent { at, ..e };
    store
        .journal(
            &c.lease,
            JournalWrite {
                step: Some(step),
                events: vec![e],
                audit: Vec::new(),
            },
        )
        .await
        .unwrap();
    let steps = store.steps(c.task.id).await.unwrap();
    assert_eq!(steps[0].started_at, Some(at.trunc_subsecs(6)));
    assert_eq!(steps[0].finished_at, Some(at.trunc_subsecs(6)));
    let events = store.events(c.task.id, c.last_seq).await.unwrap();
    assert_eq!(events[0].at, at.trunc_subsecs(6));
    let done = store.finish(&c.lease, completed(json!(1))).await.unwrap();
    assert_eq!(store.get_task(c.task.id).await.unwrap(), done);

    let mut agent_record = agent_record(&unique("micro"), "Micro");
    agent_record.created_at = fine(agent_record.created_at);
    let inserted = store.insert_agent(agent_record.clone()).await.unwrap();
    assert_eq!(
        inserted.created_at,
        agent_record.created_at.trunc_subsecs(6)
    );
    assert_eq!(store.get_agent(&inserted.id).await.unwrap(), inserted);
}

/// API keys: inserted by hash, found by hash, duplicates rejected, revoked once, listed per user.
pub async fn api_keys_by_hash_revoke_and_list(store: Arc<dyn Store>) {
    use capecontrol_core::store::ApiKeyRecord;
    let id = unique("key");
    let hash = format!("{:0>64}", Uuid::new_v4().simple());
    let user = unique("user");
    let record = ApiKeyRecord {
        id: id.clone(),
        hash: hash.clone(),
        user_id: user.clone(),
        roles: vec!["user".into(), "publisher".into()],
        name: "ci".into(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    let inserted = store.insert_key(record.clone()).await.unwrap();
    assert_eq!(inserted.id, id);
    assert_eq!(inserted.roles, ["user", "publisher"]);
    assert_eq!(inserted.revoked_at, None);
    assert_eq!(store.key_by_hash(&hash).await.unwrap(), inserted);
    let unknown = store.key_by_hash(&"0".repeat(64)).await.unwrap_err();
    assert_eq!(unknown.category(), ErrorCategory::NotFound);

    let same_id = store.insert_key(record.clone()).await.unwrap_err();
    assert_eq!(same_id.category(), ErrorCategory::Conflict);
    let same_hash = ApiKeyRecord {
        id: unique("key"),
        ..record.clone()
    };
    let same_hash = store.insert_key(same_hash).await.unwrap_err();
    assert_eq!(same_hash.category(), ErrorCategory::Conflict);

    let other = ApiKeyRecord {
        id: unique("key"),
        hash: format!("{:0>64}", Uuid::new_v4().simple()),
        user_id: unique("user"),
        ..record
    };
    store.insert_key(other.clone()).await.unwrap();
    let mine = store.list_keys(Some(&user)).await.unwrap();
    assert_eq!(mine, vec![inserted.clone()]);
    let all = store.list_keys(None).await.unwrap();
    assert!(all.iter().any(|k| k.id == id) && all.iter().any(|k| k.id == other.id));

    let revoked = store.revoke_key(&id).await.unwrap();
    let at = revoked.revoked_at.expect("revoked");
    assert_eq!(store.key_by_hash(&hash).await.unwrap().revoked_at, Some(at));
    let again = store.revoke_key(&id).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(at),
        "the first revocation time is kept"
    );
    let missing = store.revoke_key("no-such-key").await.unwrap_err();
    assert_eq!(missing.category(), ErrorCategory::NotFound);
}

/// Ratings: 1..=5 by the task's own user of a completed task, one per task (a second replaces
/// the first), each audited as `task.rated`; the summary is the mean over the agent version.
pub async fn ratings_of_completed_tasks(store: Arc<dyn Store>) {
    let agent = fresh_agent(&store).await;
    let user = Principal::new("user-1").with_roles(["user"]);
    let mut done = Vec::new();
    for _ in 0..2 {
        let id = store.enqueue(new_task(&agent)).await.unwrap().task.id;
        let c = claim_one(&store, "w1", &agent).await;
        assert_eq!(c.task.id, id);
        store.finish(&c.lease, completed(json!(1))).await.unwrap();
        done.push(id);
    }
    let queued = store.enqueue(new_task(&agent)).await.unwrap().task.id;

    // Bad input first, in the order a caller learns it: the score, then the task.
    for bad in [0u8, 6, 255] {
        let e = store.rate(done[0], &user, bad).await.unwrap_err();
        assert_eq!(e.category(), ErrorCategory::Validation, "{bad}: {e}");
        assert_eq!(e.field_errors()[0].pointer, "/score", "{e}");
    }
    assert_category(
        store.rate(Uuid::new_v4(), &user, 3).await,
        ErrorCategory::NotFound,
    );
    assert_category(
        store.rate(done[0], &Principal::new("user-2"), 3).await,
        ErrorCategory::Permission,
    );
    assert_category(store.rate(queued, &user, 3).await, ErrorCategory::Conflict);
    let rated = |store: &Arc<dyn Store>, task: Uuid| {
        let store = Arc::clone(store);
        async move {
            store
                .list_audit(&AuditFilter {
                    task_id: Some(task),
                    event_type: Some("task.rated".into()),
                    ..AuditFilter::default()
                })
                .await
                .unwrap()
        }
    };
    assert!(
        rated(&store, done[0]).await.is_empty(),
        "a refused rating writes nothing"
    );

    let s = store.rate(done[0], &user, 5).await.unwrap();
    assert_eq!(
        (
            s.agent_id.as_str(),
            s.version.as_str(),
            s.score,
            s.previous,
            s.count
        ),
        (agent.as_str(), "1.0.0", 5, None, 1)
    );
    assert_eq!(s.mean, 5.0);
    let s = store.rate(done[1], &user, 2).await.unwrap();
    assert_eq!((s.count, s.mean), (2, 3.5));
    // Rating again replaces the score.
    let s = store.rate(done[1], &user, 4).await.unwrap();
    assert_eq!((s.previous, s.count, s.mean), (Some(2), 2, 4.5));

    let rows = rated(&store, done[1]).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].payload, json!({"score": 2, "version": "1.0.0"}));
    assert_eq!(
        rows[1].payload,
        json!({"score": 4, "version": "1.0.0", "previous": 2})
    );
    assert_eq!(rows[1].user_id.as_deref(), Some("user-1"));
    assert_eq!(rows[1].agent_id.as_deref(), Some(agent.as_str()));
}
