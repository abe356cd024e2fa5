//! Retry delays: exponential backoff with jitter, never above the cap.
//!
//! backon's jitter adds up to one more delay on top of the capped one, so a
//! `max_retry_delay` of 1 s waited up to 2 s. Here the cap is the ceiling of
//! each draw: the ceilings double from 500 ms up to `max_retry_delay` (backon
//! without jitter), and each delay is drawn evenly from the upper half below
//! its ceiling ("equal jitter"): agents retrying together spread out, and
//! none waits more than the cap.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff};

/// The first retry's ceiling.
const FIRST_DELAY: Duration = Duration::from_millis(500);

pub struct RetryDelays {
    ceilings: ExponentialBackoff,
    cap: Duration,
    /// xorshift64 state: jitter needs spread, not cryptographic quality.
    state: u64,
}

impl RetryDelays {
    pub fn new(cap: Duration) -> RetryDelays {
        let ceilings = backon::ExponentialBuilder::default()
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(cap)
            .without_max_times()
            .build();
        // Seeded from std's per-process random keys; never zero (xorshift's fixed point).
        let state = RandomState::new().hash_one(std::time::Instant::now()) | 1;
        RetryDelays {
            ceilings,
            cap,
            state,
        }
    }

    /// A number evenly spread over [0, 1).
    fn unit(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for RetryDelays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.ceilings.next().unwrap_or(self.cap).min(self.cap);
        let half = ceiling / 2;
        Some(half + half.mul_f64(self.unit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_delay_exceeds_the_cap_over_many_draws() {
        for cap_ms in [100, 1_000, 4_000, 300_000] {
            let cap = Duration::from_millis(cap_ms);
            for _ in 0..200 {
                for delay in RetryDelays::new(cap).take(40) {
                    assert!(delay <= cap, "{delay:?} above the cap {cap:?}");
                    assert!(delay >= FIRST_DELAY.min(cap) / 2, "{delay:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_cap_bounds_every_delay_and_ceilings_never_shrink(
            cap_ms in 0u64..10_000_000,
            draws in 1usize..80,
        ) {
            let cap = Duration::from_millis(cap_ms);
            let mut ceiling = Duration::ZERO;
            for delay in RetryDelays::new(cap).take(draws) {
                proptest::prop_assert!(delay <= cap);
                // Each draw is in the upper half below its ceiling, and ceilings only grow.
                proptest::prop_assert!(delay >= ceiling / 4);
                ceiling = ceiling.max(delay);
            }
        }
    }

    #[test]
    fn delays_double_under_their_ceiling_then_stay_jittered_below_the_cap() {
        let cap = Duration::from_secs(4);
        let ceilings = [500, 1_000, 2_000, 4_000, 4_000, 4_000].map(Duration::from_millis);
        let draws: Vec<Vec<Duration>> = (0..500)
            .map(|_| RetryDelays::new(cap).take(ceilings.len()).collect())
            .collect();
        for (i, ceiling) in ceilings.iter().enumerate() {
            let at_step: Vec<Duration> = draws.iter().map(|d| d[i]).collect();
            assert!(
                at_step.iter().all(|d| *d >= *ceiling / 2 && d <= ceiling),
                "step {i}: outside [{:?}, {ceiling:?}]",
                *ceiling / 2
            );
            // Jitter spreads them over the half below the ceiling: both quarters are used.
            let low = at_step
                .iter()
                .filter(|d| **d < ceiling.mul_f64(0.75))
                .count();
            assert!(
                (150..=350).contains(&low),
                "step {i}: {low} of 500 in the lower quarter"
            );
        }
        let mean = |i: usize| draws.iter().map(|d| d[i].as_secs_f64()).sum::<f64>() / 500.0;
        assert!((mean(1) / mean(0) - 2.0).abs() < 0.2, "doubles");
        assert!((mean(2) / mean(1) - 2.0).abs() < 0.2, "doubles");
        assert!((mean(5) / mean(4) - 1.0).abs() < 0.1, "flat at the cap");
    }
}
