//! Retry delays: exponential backoff with equal jitter.

use std::time::Duration;

use rand::Rng;

/// The exponential backoff before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped at
/// `max`, with "equal jitter" (uniform in the upper half), so retries of many tasks spread out.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(if jitter_ms == 0 {
        0
    } else {
        rand::rng().random_range(0..=jitter_ms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..100 {
            let b1 = backoff(base, max, 1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = backoff(base, max, 3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b10 = backoff(base, max, 10);
            assert!(b10 >= Duration::from_secs(1) && b10 <= max, "{b10:?}");
        }
    }
}
