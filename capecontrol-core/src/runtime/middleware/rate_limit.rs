//! `RateLimiting` (blueprint §8 `SecurityAgent`): per-principal and per-agent rate limits with
//! `governor`; a submission over a limit is a 429 [`Error::RateLimit`] carrying `retry_after`.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::{Middleware, Submission, SubmitNext};
use crate::error::{Error, Result};
use crate::store::Enqueued;

/// A rate: `burst` submissions at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained submissions per second.
    pub per_second: NonZeroU32,
    /// Submissions allowed in a burst.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_second` sustained with a burst of the same size. Zero is taken as one.
    pub fn per_second(per_second: u32) -> Self {
        let n = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        Self {
            per_second: n,
            burst: n,
        }
    }

    /// Sets the burst size. Zero is taken as one.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        self
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// Settings of [`RateLimiting`]; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Limit per principal (user id).
    pub per_principal: Option<Rate>,
    /// Limit per agent.
    pub per_agent: Option<Rate>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_principal: Some(Rate::per_second(1_000).with_burst(2_000)),
            per_agent: Some(Rate::per_second(10_000).with_burst(20_000)),
        }
    }
}

/// Rate limits per principal and per agent.
pub struct RateLimiting {
    per_principal: Option<DefaultKeyedRateLimiter<String>>,
    per_agent: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiting").finish_non_exhaustive()
    }
}

impl RateLimiting {
    /// Limits as configured.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            per_principal: config
                .per_principal
                .map(|r| governor::RateLimiter::keyed(r.quota())),
            per_agent: config
                .per_agent
                .map(|r| governor::RateLimiter::keyed(r.quota())),
            clock: DefaultClock::default(),
        }
    }

    fn check(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<String>>,
        key: &str,
        what: &str,
    ) -> Result<()> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        match limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                // Round up to whole milliseconds so a client never retries too early.
                let wait = Duration::from_millis(
                    wait.as_millis().saturating_add(1).min(u64::MAX as u128) as u64,
                );
                Err(Error::rate_limit(
                    format!("too many requests for {what} `{key}`"),
                    wait,
                ))
            }
        }
    }
}

#[async_trait]
impl Middleware for RateLimiting {
    fn name(&self) -> &str {
        "rate_limiting"
    }

    async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> Result<Enqueued> {
        self.check(
            self.per_principal.as_ref(),
            &sub.request.principal.user_id,
            "principal",
        )?;
        self.check(self.per_agent.as_ref(), &sub.agent_id, "agent")?;
        next.run(sub).await
    }
}
