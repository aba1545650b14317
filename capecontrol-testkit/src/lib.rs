//! The test kit of the CapeControl workspace (`publish = false`): what the tests of several
//! crates share, written once.
//!
//! - [`conformance`]: the store conformance suite, run on `MemoryStore` (core's
//!   `tests/store_conformance.rs`) and on `PostgresStore` (`capecontrol-store`'s
//!   `tests/conformance.rs`).
//! - [`conformance_queue`]: the queue's batched paths (many heartbeats in one write, claims
//!   past backlogs that cannot run), part of [`conformance::run_all`].
//! - [`conformance_triggers`]: the trigger store's cases, run by `conformance::run_all`.
//! - [`checks`]: further generic store checks (`check_*`, any `Store`), run on both stores.
//! - [`fixtures`]: records, tasks and claim requests the store tests build.
//! - [`children`]: runtime scenarios of child tasks (`cx.spawn`, `cx.join`), on both stores.
//! - [`poll`]: polling for a condition with one deadline ([`poll::eventually`],
//!   [`poll::until`]).
//! - [`runtime`]: a closure-driven test agent, its manifest, a fast `PlatformConfig`, the test
//!   user and its installation, a task's events.

pub mod checks;
pub mod children;
pub mod conformance;
pub mod conformance_live;
pub mod conformance_queue;
pub mod conformance_triggers;
pub mod conformance_waits;
pub mod fixtures;
pub mod poll;
pub mod runtime;
pub mod waits;
