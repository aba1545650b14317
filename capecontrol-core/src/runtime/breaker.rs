//! A circuit breaker per agent version: opens after repeated failures, fails fast while open,
//! half-opens after a cool-down (one trial attempt), closes on success.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Circuit-breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting one trial through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts pass.
    Closed,
    /// Attempts fail fast until the cool-down is over.
    Open,
    /// One trial attempt is under way.
    HalfOpen,
}

impl BreakerState {
    /// The gauge value of the `agent_circuit_breaker_state` metric (0 closed, 1 half-open,
    /// 2 open).
    pub fn as_gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
}

/// What the breaker says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run it.
    Admitted,
    /// Run it as the half-open trial.
    Trial,
    /// Fail fast; the breaker is open for about this long still.
    Rejected(Duration),
}

/// Breakers keyed by `agent@version`.
#[derive(Debug, Default)]
pub struct CircuitBreakers {
    config: BreakerConfig,
    /// Looked up by every submission and by every attempt (three times), hence hashed as a
    /// [`crate::FastMap`] rather than with `std`'s SipHash.
    entries: Mutex<crate::FastMap<String, Entry>>,
    /// The state last published per key (see [`CircuitBreakers::to_publish`]).
    published: Mutex<crate::FastMap<String, BreakerState>>,
}

impl CircuitBreakers {
    /// Breakers with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            entries: Mutex::default(),
            published: Mutex::default(),
        }
    }

    /// The key of an agent version.
    pub fn key(agent_id: &str, version: &str) -> String {
        format!("{agent_id}@{version}")
    }

    /// The current state of a breaker (closed when never used).
    pub fn state(&self, key: &str) -> BreakerState {
        let Ok(entries) = self.entries.lock() else {
            return BreakerState::Closed;
        };
        entries.get(key).map_or(BreakerState::Closed, |e| {
            if e.state == BreakerState::Open
                && e.opened_at
                    .is_some_and(|t| t.elapsed() >= self.config.cool_down)
            {
                BreakerState::HalfOpen
            } else {
                e.state
            }
        })
    }

    /// The breaker's current state if it is not the one last returned here for `key` (the
    /// first call for a key returns it): what the `agent_circuit_breaker_state` gauge must be
    /// set to, or `None` when it already holds it. An attempt publishes its breaker's state
    /// when it ends; most ends change nothing, and building the gauge's key is what costs.
    pub fn to_publish(&self, key: &str) -> Option<BreakerState> {
        let state = self.state(key);
        let Ok(mut published) = self.published.lock() else {
            return Some(state);
        };
        match published.get_mut(key) {
            Some(last) if *last == state => None,
            Some(last) => {
                *last = state;
                Some(state)
            }
            None => {
                published.insert(key.to_owned(), state);
                Some(state)
            }
        }
    }

    /// Asks to run an attempt.
    pub fn admit(&self, key: &str) -> Admission {
        let Ok(mut entries) = self.entries.lock() else {
            return Admission::Admitted;
        };
        let Some(e) = entries.get_mut(key) else {
            return Admission::Admitted;
        };
        match e.state {
            BreakerState::Closed => Admission::Admitted,
            BreakerState::HalfOpen => Admission::Rejected(Duration::from_millis(100)),
            BreakerState::Open => {
                let elapsed = e.opened_at.map_or(self.config.cool_down, |t| t.elapsed());
                if elapsed >= self.config.cool_down {
                    e.state = BreakerState::HalfOpen;
                    Admission::Trial
                } else {
                    Admission::Rejected(self.config.cool_down - elapsed)
                }
            }
        }
    }

    /// Whether submits should be refused (open and cooling down); returns the time left.
    pub fn is_open(&self, key: &str) -> Option<Duration> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(key)?;
        if e.state != BreakerState::Open {
            return None;
        }
        let elapsed = e.opened_at.map_or(self.config.cool_down, |t| t.elapsed());
        self.config
            .cool_down
            .checked_sub(elapsed)
            .filter(|d| !d.is_zero())
    }

    /// Records a successful attempt: closes the breaker.
    pub fn record_success(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// Records a failed attempt (one that counts: an agent or resource error).
    pub fn record_failure(&self, key: &str) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let e = entries.entry(key.to_owned()).or_insert(Entry {
            state: BreakerState::Closed,
            failures: 0,
            opened_at: None,
        });
        e.failures = e.failures.saturating_add(1);
        if e.state == BreakerState::HalfOpen || e.failures >= self.config.failure_threshold {
            e.state = BreakerState::Open;
            e.opened_at = Some(Instant::now());
        }
    }

    /// Releases a half-open trial that ended neither in success nor in a counted failure.
    pub fn record_neutral(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(e) = entries.get_mut(key)
            && e.state == BreakerState::HalfOpen
        {
            e.state = BreakerState::Open;
            e.opened_at = Instant::now().checked_sub(self.config.cool_down);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each key's state is to be published the first time and after each change, not again
    /// while it holds; keys are apart.
    #[test]
    fn a_state_is_published_once_per_change() {
        let b = CircuitBreakers::new(BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
        });
        let (k, other) = ("a@1.0.0", "b@1.0.0");
        assert_eq!(b.to_publish(k), Some(BreakerState::Closed));
        assert_eq!(b.to_publish(k), None);
        b.record_success(k);
        b.record_failure(k);
        assert_eq!(b.to_publish(k), None, "still closed");
        assert_eq!(b.to_publish(other), Some(BreakerState::Closed));
        b.record_failure(k);
        assert_eq!(b.to_publish(k), Some(BreakerState::Open));
        assert_eq!(b.to_publish(k), None);
        assert_eq!(b.to_publish(other), None);
    }

    #[test]
    fn opens_half_opens_and_closes() {
        let b = CircuitBreakers::new(BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_millis(50),
        });
        let k = "a@1.0.0";
        assert_eq!(b.admit(k), Admission::Admitted);
        b.record_failure(k);
        b.record_failure(k);
        assert_eq!(b.state(k), BreakerState::Closed);
        b.record_failure(k);
        assert_eq!(b.state(k), BreakerState::Open);
        assert!(matches!(b.admit(k), Admission::Rejected(_)));
        assert!(b.is_open(k).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(k), Admission::Trial);
        assert!(
            matches!(b.admit(k), Admission::Rejected(_)),
            "one trial at a time"
        );
        b.record_failure(k);
        assert_eq!(b.state(k), BreakerState::Open, "a failed trial reopens");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(k), Admission::Trial);
        b.record_success(k);
        assert_eq!(b.state(k), BreakerState::Closed);
        assert_eq!(b.admit(k), Admission::Admitted);
    }
}
