//! [`RatingStore`]: the ratings users give their completed tasks (the source of blueprint
//! §10.1's `user_satisfaction_score`).
//!
//! A rating is a score from 1 to 5 by the task's own user, of a task that is `completed`;
//! one rating per task (rating again replaces the score). The write and its `task.rated` audit
//! event (payload: `score`, `version`, and `previous` when it replaced one) commit together,
//! and the call returns the mean of all ratings of the task's agent version.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::policy::Principal;
use crate::state::TaskStatus;
use crate::store::TaskRecord;

/// The lowest score.
pub const MIN_SCORE: u8 = 1;
/// The highest score.
pub const MAX_SCORE: u8 = 5;

/// What a rating leaves: the task's agent version and the aggregate of its ratings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingSummary {
    /// The rated task.
    pub task_id: Uuid,
    /// Its agent.
    pub agent_id: String,
    /// Its agent version.
    pub version: String,
    /// The score given.
    pub score: u8,
    /// The score it replaced, when the task was rated before.
    pub previous: Option<u8>,
    /// The mean score of the version's rated tasks (this one included).
    pub mean: f64,
    /// How many tasks of the version are rated.
    pub count: u64,
}

/// Ratings of completed tasks.
#[async_trait]
pub trait RatingStore: Send + Sync {
    /// Records `by`'s rating of task `task_id` with a `task.rated` audit event in the same
    /// write. Errors: the score outside 1..=5 (validation at `/score`), no such task
    /// (not found), a task of another user (permission), a task not completed (conflict).
    async fn rate(&self, task_id: Uuid, by: &Principal, score: u8) -> Result<RatingSummary>;
}

/// The checks every backend makes before a rating is written (the score first, then the task).
pub fn check_rating(
    task: Option<&TaskRecord>,
    task_id: Uuid,
    by: &Principal,
    score: u8,
) -> Result<()> {
    check_score(score)?;
    let task = task.ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
    if task.user_id != by.user_id {
        return Err(Error::forbidden(format!(
            "task {task_id} is not a task of user {}",
            by.user_id
        )));
    }
    if task.status != TaskStatus::Completed {
        return Err(Error::conflict(format!(
            "task {task_id} is {}: only a completed task can be rated",
            task.status
        )));
    }
    Ok(())
}

/// A validation error at `/score` unless `score` is within 1..=5.
pub fn check_score(score: u8) -> Result<()> {
    if (MIN_SCORE..=MAX_SCORE).contains(&score) {
        Ok(())
    } else {
        Err(Error::invalid_field(
            "/score",
            format!("must be an integer from {MIN_SCORE} to {MAX_SCORE}, got {score}"),
        ))
    }
}
