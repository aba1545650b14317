//! `RateLimiting` (blueprint §8 `SecurityAgent`): per-principal and per-agent rate limits with
//! `governor`; a submission over a limit is a 429 [`Error::RateLimit`] carrying `retry_after`.
//!
//! The keyed state does not grow without bound: every [`PRUNE_EVERY`] checks, the keys whose
//! state is back to that of a fresh key (their bucket refilled) are dropped and the maps shrunk
//! (governor's `retain_recent` and `shrink_to_fit`), so memory follows the keys active within
//! about one burst's refill time, not every principal ever seen.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::{Chains, Middleware, Submission, SubmitNext};
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

/// How many checks pass between two prunings of the keyed state.
pub const PRUNE_EVERY: u64 = 1024;

/// Rate limits per principal and per agent.
pub struct RateLimiting {
    per_principal: Option<DefaultKeyedRateLimiter<String>>,
    per_agent: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    checks: AtomicU64,
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
            checks: AtomicU64::new(0),
        }
    }

    /// Drops the state of keys that are back to a fresh key's (nothing to remember) and
    /// shrinks the maps. Called every [`PRUNE_EVERY`] checks.
    pub fn prune(&self) {
        for limiter in [&self.per_principal, &self.per_agent].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys tracked now (principals plus agents).
    pub fn tracked_keys(&self) -> usize {
        [&self.per_principal, &self.per_agent]
            .into_iter()
            .flatten()
            .map(|l| l.len())
            .sum()
    }

    fn count_check(&self) {
        let n = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(PRUNE_EVERY) {
            self.prune();
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

    fn chains(&self) -> Chains {
        // Only its submit is its own: out of the other chain.
        Chains::Submit
    }

    async fn submit(&self, sub: Submission, next: SubmitNext<'_>) -> Result<Enqueued> {
        self.count_check();
        self.check(
            self.per_principal.as_ref(),
            &sub.request.principal.user_id,
            "principal",
        )?;
        self.check(self.per_agent.as_ref(), &sub.agent_id, "agent")?;
        next.run(sub).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiting {
        RateLimiting::new(RateLimitConfig {
            per_principal: Some(Rate::per_second(1_000).with_burst(1)),
            per_agent: None,
        })
    }

    #[test]
    fn prune_drops_keys_whose_bucket_refilled() {
        let rl = limiter();
        for i in 0..2_000 {
            rl.check(rl.per_principal.as_ref(), &format!("user-{i}"), "principal")
                .unwrap();
        }
        assert_eq!(rl.tracked_keys(), 2_000);
        std::thread::sleep(Duration::from_millis(20));
        rl.prune();
        assert_eq!(rl.tracked_keys(), 0, "refilled keys are forgotten");
    }

    #[test]
    fn a_limited_key_is_kept_until_it_refills() {
        let rl = RateLimiting::new(RateLimitConfig {
            per_principal: Some(Rate::per_second(1).with_burst(1)),
            per_agent: None,
        });
        rl.check(rl.per_principal.as_ref(), "busy", "principal")
            .unwrap();
        rl.prune();
        assert_eq!(rl.tracked_keys(), 1, "its state still matters");
        assert!(
            rl.check(rl.per_principal.as_ref(), "busy", "principal")
                .is_err()
        );
    }

    #[test]
    fn submissions_prune_every_prune_every_checks() {
        let rl = limiter();
        let n = usize::try_from(PRUNE_EVERY).unwrap();
        for round in 0..4 {
            for i in 0..n {
                rl.count_check();
                rl.check(
                    rl.per_principal.as_ref(),
                    &format!("user-{round}-{i}"),
                    "principal",
                )
                .unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Without pruning: 4 × PRUNE_EVERY keys.
        assert!(rl.tracked_keys() <= n, "{} keys kept", rl.tracked_keys());
    }
}
