//! The lifecycle state machines (agent, version, task, step; listed in `docs/contracts.md`), as enums with explicit transition
//! functions. An illegal transition is a typed [`TransitionError`], never a silent overwrite.
//! `Display` / `FromStr` round-trip the strings stored in the database (the `status` columns of `docs/contracts.md`'s data model).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, UnknownValue};

/// An illegal state transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {machine} transition {from} -> {to}")]
pub struct TransitionError {
    /// Which machine (`task`, `agent version`, …).
    pub machine: &'static str,
    /// The current state.
    pub from: String,
    /// The state asked for.
    pub to: String,
}

impl From<TransitionError> for Error {
    fn from(e: TransitionError) -> Self {
        Error::conflict(e.to_string())
    }
}

macro_rules! state_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $machine:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every state.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The state's database string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }

            /// Moves to `to` if the machine allows it.
            pub fn transition(self, to: $name) -> Result<$name, TransitionError> {
                if self.can_transition_to(to) {
                    Ok(to)
                } else {
                    Err(TransitionError {
                        machine: $machine,
                        from: self.as_str().to_owned(),
                        to: to.as_str().to_owned(),
                    })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownValue::new($machine, s)),
                }
            }
        }
    };
}

state_enum! {
    /// The status of an agent (the `agents.status` column): `draft` until a version is
    /// published, `published` while one is, `archived` when withdrawn.
    AgentStatus, "agent status" {
        /// Created, nothing published yet.
        Draft = "draft",
        /// Has a published version; discoverable.
        Published = "published",
        /// Withdrawn from the marketplace.
        Archived = "archived",
    }
}

impl AgentStatus {
    /// `draft → published`, `published → archived`, `archived → published` (a new version
    /// published), `published → published` (a newer version replaces the old).
    pub fn can_transition_to(self, to: AgentStatus) -> bool {
        use AgentStatus::*;
        matches!(
            (self, to),
            (Draft, Published)
                | (Published, Published)
                | (Published, Archived)
                | (Archived, Published)
                | (Draft, Archived)
        )
    }
}

state_enum! {
    /// The status of an agent version: `draft → published → archived`.
    VersionStatus, "agent version" {
        /// Attached, not yet discoverable.
        Draft = "draft",
        /// Discoverable and installable.
        Published = "published",
        /// Superseded or withdrawn: finishes in-flight tasks, takes no new ones.
        Archived = "archived",
    }
}

impl VersionStatus {
    /// `draft → published`, `published → archived`, `draft → archived`.
    pub fn can_transition_to(self, to: VersionStatus) -> bool {
        use VersionStatus::*;
        matches!(
            (self, to),
            (Draft, Published) | (Published, Archived) | (Draft, Archived)
        )
    }
}

state_enum! {
    /// The status of a task.
    TaskStatus, "task" {
        /// Waiting for a worker.
        Queued = "queued",
        /// Claimed by a worker and running.
        Running = "running",
        /// Finished with an output.
        Completed = "completed",
        /// Failed; goes back to `queued` while retries remain.
        Failed = "failed",
        /// Cancelled by a user.
        Cancelled = "cancelled",
        /// Suspended durably (an answer, a timer): no worker, no lease; queued again when woken.
        Waiting = "waiting",
    }
}

impl TaskStatus {
    /// The task transitions: `queued → running | cancelled`,
    /// `running → completed | failed | cancelled | waiting`, `failed → queued` (retry),
    /// `waiting → queued | cancelled` (woken by an answer or a timer, or cancelled).
    pub fn can_transition_to(self, to: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Failed, Queued)
                | (Running, Waiting)
                | (Waiting, Queued)
                | (Waiting, Cancelled)
        )
    }

    /// Whether no transition leads out of this state except a retry (`completed`, `cancelled`,
    /// and `failed` once no retry is left).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

state_enum! {
    /// The status of a run row, one step of a task.
    RunStatus, "run step" {
        /// Known but not started.
        Pending = "pending",
        /// Started.
        Running = "running",
        /// Finished; its result is journaled.
        Completed = "completed",
        /// Failed.
        Failed = "failed",
    }
}

impl RunStatus {
    /// `pending → running → completed | failed`; a failed step may run again on a retry
    /// (`failed → running`).
    pub fn can_transition_to(self, to: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, to),
            (Pending, Running) | (Running, Completed) | (Running, Failed) | (Failed, Running)
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn task_machine_matches_the_blueprint() {
        use TaskStatus::*;
        let allowed = [
            (Queued, Running),
            (Queued, Cancelled),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
            (Failed, Queued),
            (Running, Waiting),
            (Waiting, Queued),
            (Waiting, Cancelled),
        ];
        for &from in TaskStatus::ALL {
            for &to in TaskStatus::ALL {
                let ok = allowed.contains(&(from, to));
                assert_eq!(from.transition(to).is_ok(), ok, "{from} -> {to}");
            }
        }
        let err = Completed.transition(Running).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal task transition completed -> running"
        );
        assert_eq!(Error::from(err).http_status(), 409);
    }

    #[test]
    fn version_machine() {
        use VersionStatus::*;
        assert!(Draft.transition(Published).is_ok());
        assert!(Published.transition(Archived).is_ok());
        assert!(Archived.transition(Published).is_err());
        assert!(Published.transition(Draft).is_err());
        assert!(Archived.transition(Draft).is_err());
    }

    #[test]
    fn run_machine() {
        use RunStatus::*;
        assert!(Pending.transition(Running).is_ok());
        assert!(Running.transition(Completed).is_ok());
        assert!(Completed.transition(Running).is_err());
        assert!(Pending.transition(Completed).is_err());
    }

    #[test]
    fn database_strings() {
        assert_eq!(TaskStatus::Cancelled.to_string(), "cancelled");
        assert_eq!(
            "archived".parse::<VersionStatus>(),
            Ok(VersionStatus::Archived)
        );
        assert!("Queued".parse::<TaskStatus>().is_err());
        assert_eq!(serde_json::to_value(RunStatus::Pending).unwrap(), "pending");
    }

    fn any_task() -> impl Strategy<Value = TaskStatus> {
        proptest::sample::select(TaskStatus::ALL)
    }

    proptest! {
        #[test]
        fn display_from_str_round_trip(s in any_task(), v in proptest::sample::select(VersionStatus::ALL),
                                       r in proptest::sample::select(RunStatus::ALL), a in proptest::sample::select(AgentStatus::ALL)) {
            prop_assert_eq!(s.to_string().parse::<TaskStatus>().unwrap(), s);
            prop_assert_eq!(v.to_string().parse::<VersionStatus>().unwrap(), v);
            prop_assert_eq!(r.to_string().parse::<RunStatus>().unwrap(), r);
            prop_assert_eq!(a.to_string().parse::<AgentStatus>().unwrap(), a);
        }

        /// Any walk through the task machine: completed and cancelled are absorbing, and every
        /// accepted step is one the task state machine lists.
        #[test]
        fn random_walks_respect_the_machine(steps in proptest::collection::vec(any_task(), 0..40)) {
            let mut state = TaskStatus::Queued;
            for to in steps {
                match state.transition(to) {
                    Ok(next) => {
                        prop_assert!(!matches!(state, TaskStatus::Completed | TaskStatus::Cancelled));
                        prop_assert_eq!(next, to);
                        state = next;
                    }
                    Err(e) => {
                        prop_assert_eq!(e.from, state.as_str());
                        prop_assert!(!state.can_transition_to(to));
                    }
                }
            }
        }
    }
}
