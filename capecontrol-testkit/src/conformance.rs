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
//! - A task's `queued` event carries the trigger of [`NewTask::trigger`](capecontrol_core::store::NewTask::trigger)
//!   (stored and live); a released task's second `queued` carries none.
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
//!   the caller's audit events before `task.queued`, and with
//!   [`NewTask::policy_allowed`](capecontrol_core::store::NewTask::policy_allowed) its own
//!   `policy.allowed` row before both (the row the caller's event of it would be).
//! - The audit trail is a hash chain that `capecontrol_core::audit::verify_chain` finds intact after
//!   appends and task writes (payloads with floats, Unicode, control characters, nesting);
//!   `list_audit` pages by the `after` cursor in chain order.
//! - `enqueue` enforces [`NewTask::check`]'s bounds: at the limit accepted, one byte past it a
//!   validation error at the field's pointer (never a database error).
//! - Timestamps are kept to the microsecond; `upsert_installation` keeps `created_at` and sets
//!   `updated_at`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use capecontrol_core::store::Store;

mod audit;
mod events;
mod helpers;
mod keys;
mod outcomes;
mod queue;
mod ratings;
mod registry;

pub use audit::*;
pub use events::*;
pub use keys::*;
pub use outcomes::*;
pub use queue::*;
pub use ratings::*;
pub use registry::*;

pub use crate::conformance_live::live_events_do_not_pin_large_outputs;
/// Not in [`run_all`]: for a store that claims in its enqueue (a store may leave every task
/// to a claim).
pub use crate::conformance_queue::an_enqueue_claims_its_task_only_when_a_claim_would;
pub use crate::conformance_triggers::trigger_state;
pub(crate) use helpers::{claim_one, completed, fresh_agent, new_task};

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
    the_claim_reads_the_attempt_s_catalog(make().await).await;
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
    the_queued_event_carries_the_trigger(make().await).await;
    live_events_do_not_pin_large_outputs(make().await).await;
    misnumbered_events_change_nothing(make().await).await;
    references_must_exist(make().await).await;
    audit_rows_for_every_state_change(make().await).await;
    the_store_writes_the_policy_decision_it_is_asked_to(make().await).await;
    timestamps_are_kept_to_the_microsecond(make().await).await;
    audit_chain_is_intact_and_pages(make().await).await;
    enqueue_enforces_the_task_bounds(make().await).await;
    api_keys_by_hash_revoke_and_list(make().await).await;
    ratings_of_completed_tasks(make().await).await;
    concurrent_claimers_never_share_a_task(make().await, 16, 500).await;
    trigger_state(make().await).await;
    crate::conformance_queue::run_all(&make).await;
    crate::conformance_waits::run_all(&make).await;
}
