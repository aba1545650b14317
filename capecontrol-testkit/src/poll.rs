//! Polling for a condition the code under test reaches on its own time (a background sealer, a
//! node's heartbeat, a task moving to a state), with one deadline and one failure message,
//! instead of a hand-written loop in each test.
//!
//! The clock is tokio's, so a test with a paused clock polls in its virtual time.

use std::time::Duration;

/// Calls `probe` every `every` until it returns `Ok`, and returns that value; panics once
/// `within` has passed, with the message of the probe's last `Err` (what it saw instead).
///
/// The probe runs at least once, even when `within` is zero.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use capecontrol_testkit::poll::eventually;
///
/// let mut calls = 0;
/// let seen = eventually(Duration::from_secs(1), Duration::from_millis(1), async || {
///     calls += 1;
///     if calls < 3 { Err(format!("{calls} calls")) } else { Ok(calls) }
/// })
/// .await;
/// assert_eq!(seen, 3);
/// # }
/// ```
pub async fn eventually<T>(
    within: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {within:?}: {seen}"
            ),
        }
        tokio::time::sleep(every).await;
    }
}

/// [`eventually`] for a yes-or-no condition: polls `holds` every `every` until it is true;
/// panics with `what` (the condition that did not come about) once `within` has passed.
pub async fn until(
    within: Duration,
    every: Duration,
    what: &str,
    mut holds: impl AsyncFnMut() -> bool,
) {
    eventually(within, every, async || {
        if holds().await {
            Ok(())
        } else {
            Err(what.to_owned())
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_ok_value() {
        let mut calls = 0;
        let got = eventually(
            Duration::from_secs(5),
            Duration::from_millis(10),
            async || {
                calls += 1;
                if calls == 4 {
                    Ok("ready")
                } else {
                    Err(format!("call {calls}"))
                }
            },
        )
        .await;
        assert_eq!((got, calls), ("ready", 4));
    }

    #[tokio::test]
    #[should_panic(expected = "not within 50ms: still 0")]
    async fn panics_with_what_the_last_probe_saw() {
        eventually::<()>(
            Duration::from_millis(50),
            Duration::from_millis(10),
            async || Err("still 0".into()),
        )
        .await;
    }

    #[tokio::test]
    async fn probes_once_even_with_no_time() {
        let mut calls = 0;
        until(
            Duration::ZERO,
            Duration::from_millis(10),
            "never",
            async || {
                calls += 1;
                true
            },
        )
        .await;
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    #[should_panic(expected = "not within 30ms: the flag is set")]
    async fn until_names_the_condition() {
        until(
            Duration::from_millis(30),
            Duration::from_millis(10),
            "the flag is set",
            async || false,
        )
        .await;
    }
}
