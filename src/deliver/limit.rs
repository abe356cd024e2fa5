//! Rate limiting: every window of a webhook (`["5/1m", "5000/1d"]`) at once.
//!
//! Each window remembers when its recent attempts were made; an attempt may go
//! when every window has room. Every attempt is charged, retries included,
//! because the receiver counts them too.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

pub struct RateLimiter {
    windows: Vec<Window>,
}

struct Window {
    limit: RateLimit,
    /// Attempts within the last `limit.period`, oldest first.
    attempts: VecDeque<Instant>,
}

impl Window {
    fn forget_before(&mut self, now: Instant) {
        while self
            .attempts
            .front()
            .is_some_and(|&at| now.duration_since(at) >= self.limit.period)
        {
            self.attempts.pop_front();
        }
    }

    /// When this window next has room.
    fn free_at(&self, now: Instant) -> Instant {
        if self.attempts.len() < self.limit.count as usize {
            now
        } else {
            let oldest_that_counts = self.attempts[self.attempts.len() - self.limit.count as usize];
            oldest_that_counts + self.limit.period
        }
    }
}

impl RateLimiter {
    pub fn new(limits: &[RateLimit]) -> RateLimiter {
        RateLimiter {
            windows: limits
                .iter()
                .map(|&limit| Window {
                    limit,
                    attempts: VecDeque::new(),
                })
                .collect(),
        }
    }

    /// The earliest instant at which an attempt fits every window.
    pub fn next_free(&mut self, now: Instant) -> Instant {
        self.windows
            .iter_mut()
            .map(|w| {
                w.forget_before(now);
                w.free_at(now)
            })
            .max()
            .unwrap_or(now)
    }

    /// Waits until an attempt fits, then charges it to every window.
    pub async fn acquire(&mut self) -> Duration {
        let start = Instant::now();
        loop {
            let now = Instant::now();
            let free = self.next_free(now);
            if free <= now {
                for w in &mut self.windows {
                    w.attempts.push_back(now);
                }
                return now - start;
            }
            tokio::time::sleep_until(free).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(spec: &[&str]) -> Vec<RateLimit> {
        spec.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn every_window_is_enforced_at_once() {
        let mut limiter = RateLimiter::new(&limits(&["2/1s", "3/10s"]));
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            limiter.acquire().await;
            times.push(Instant::now() - start);
        }
        let secs: Vec<u64> = times.iter().map(|d| d.as_secs()).collect();
        // 2 at once, the 3rd after a second, then the 10 s window holds the rest.
        assert_eq!(secs, vec![0, 0, 1, 10, 10, 11]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_means_no_wait() {
        let mut limiter = RateLimiter::new(&[]);
        for _ in 0..100 {
            assert_eq!(limiter.acquire().await, Duration::ZERO);
        }
    }
}
