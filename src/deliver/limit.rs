//! Rate limiting: every window of a webhook (`["5/1m", "5000/1d"]`) at once.
//!
//! Each window remembers when its recent attempts were made; an attempt may go
//! when every window has room. Every attempt is charged, retries included,
//! because the receiver counts them too.
//!
//! Windows are held slightly longer than configured: the receiver's window
//! starts when a request arrives, which varies by the network's jitter, so an
//! attempt sent exactly one period after another may arrive just inside it.
//!
//! Windows of whole days (`5000/1d`) count calendar days in UTC, as SecureX
//! and XDR count their daily budget: the budget returns at midnight UTC.
//! Shorter windows slide.
//!
//! Pacing: a body that is not full need not go the moment a window has room.
//! Spent greedily, a steady trickle runs `5/1m` at 7,200 requests a day and
//! `5000/1d` dry by the afternoon. So each window also has a pace, the gap
//! between attempts that spreads what is left of it over the time it has
//! left, less a reserve (a fraction of the window, in whole attempts, kept
//! for retries, full bodies and `tailhook send`): a sliding window paces by
//! its period over its paced count, a calendar day by what is left of the
//! UTC day over what is left of its paced count. The slowest pace binds.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::config::RateLimit;

pub struct RateLimiter {
    windows: Vec<Window>,
}

/// One attempt, on both clocks: sliding windows measure by the monotonic
/// clock (a clock step must not stretch or shrink them), calendar windows
/// count by the wall clock's UTC day (that is what the receiver counts).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Attempt {
    at: Instant,
    wall: SystemTime,
}

impl Attempt {
    /// The attempt made at `at`, dated on the wall clock by how long ago that was.
    fn at(at: Instant) -> Attempt {
        let ago = Instant::now().saturating_duration_since(at);
        Attempt {
            at,
            wall: SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH),
        }
    }

    /// An attempt an earlier run made at `wall`, placed on this run's monotonic clock.
    fn remembered(wall: SystemTime) -> Attempt {
        let ago = SystemTime::now().duration_since(wall).unwrap_or_default();
        let now = Instant::now();
        Attempt {
            at: now.checked_sub(ago).unwrap_or(now),
            wall,
        }
    }
}

struct Window {
    limit: RateLimit,
    /// `limit.period` plus the jitter margin.
    held_for: Duration,
    /// Attempts within the current window, oldest first.
    attempts: VecDeque<Attempt>,
    /// Counts calendar periods (UTC days) rather than sliding ones.
    calendar: bool,
}

const DAY: Duration = Duration::from_secs(86_400);

/// How far into its calendar period (periods counted from the Unix epoch,
/// so whole days start at midnight UTC) the moment `since_epoch` is.
fn into_calendar_period(since_epoch: Duration, period: Duration) -> Duration {
    Duration::from_nanos((since_epoch.as_nanos() % period.as_nanos()) as u64)
}

/// Which calendar period (counted from the Unix epoch) `wall` falls in.
fn calendar_period(wall: SystemTime, period: Duration) -> u128 {
    wall.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        / period.as_nanos()
}

impl Window {
    fn new(limit: RateLimit, past: &[Attempt]) -> Window {
        Window {
            limit,
            held_for: held_for(limit),
            attempts: past.iter().copied().collect(),
            calendar: is_calendar(limit),
        }
    }

    fn forget_before(&mut self, now: Instant) {
        if self.calendar {
            // By each attempt's own date: one made on an earlier UTC day no
            // longer counts, whatever the monotonic clock says.
            let today = calendar_period(SystemTime::now(), self.limit.period);
            let period = self.limit.period;
            self.attempts
                .retain(|a| calendar_period(a.wall, period) >= today);
            return;
        }
        while self
            .attempts
            .front()
            .is_some_and(|a| now.duration_since(a.at) >= self.held_for)
        {
            self.attempts.pop_front();
        }
    }

    /// How long the current calendar period (UTC day) still runs.
    fn left_in_calendar_period(&self) -> Duration {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.limit.period - into_calendar_period(since_epoch, self.limit.period)
    }

    /// When this window next has room.
    fn free_at(&self, now: Instant) -> Instant {
        if self.attempts.len() < self.limit.count as usize {
            now
        } else if self.calendar {
            now + self.left_in_calendar_period() + jitter_margin(self.limit.period)
        } else {
            let oldest_that_counts = self.attempts[self.attempts.len() - self.limit.count as usize];
            oldest_that_counts.at + self.held_for
        }
    }
}

impl Window {
    /// The gap between attempts that makes this window's budget, less the
    /// `reserve` fraction (in whole attempts, so a small window keeps all
    /// of its few), last its time (after [`Window::forget_before`]).
    fn pace(&self, reserve: f64) -> Duration {
        let reserved = (f64::from(self.limit.count) * reserve).floor() as u32;
        let paced_count = self.limit.count.saturating_sub(reserved).max(1);
        if self.calendar {
            let left = self.left_in_calendar_period();
            match paced_count.checked_sub(self.attempts.len() as u32) {
                // The paced budget is spent: what remains is the reserve,
                // and bodies that are not full wait for the next day.
                None | Some(0) => left + jitter_margin(self.limit.period),
                Some(budget_left) => left / budget_left,
            }
        } else {
            self.limit.period / paced_count
        }
    }

    /// When a paced attempt may go: its pace after this window's last attempt.
    fn paced_at(&self, now: Instant, reserve: f64) -> Instant {
        self.attempts
            .back()
            .map_or(now, |last| last.at + self.pace(reserve))
    }
}

/// Whether `limit` counts calendar periods (whole UTC days) rather than sliding.
pub fn is_calendar(limit: RateLimit) -> bool {
    !limit.period.is_zero()
        && (limit.period.as_secs() % DAY.as_secs() == 0)
        && limit.period.subsec_nanos() == 0
}

/// How long an attempt counts in the window of `limit`: its period plus the jitter margin.
pub fn held_for(limit: RateLimit) -> Duration {
    limit.period + jitter_margin(limit.period)
}

/// 2 % of the period, at least 50 ms and at most 1 s.
pub fn jitter_margin(period: Duration) -> Duration {
    (period / 50).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

impl RateLimiter {
    pub fn new(limits: &[RateLimit]) -> RateLimiter {
        Self::with_history(limits, &[])
    }

    /// A limiter that already counts attempts an earlier run made at
    /// `times` (wall clock, as persisted): a restart loop must not get a
    /// fresh budget each time.
    pub fn with_history(limits: &[RateLimit], times: &[SystemTime]) -> RateLimiter {
        let mut past: Vec<Attempt> = times.iter().map(|&t| Attempt::remembered(t)).collect();
        past.sort_by_key(|a| a.at);
        RateLimiter {
            windows: limits
                .iter()
                .map(|&limit| Window::new(limit, &past))
                .collect(),
        }
    }

    /// How long an attempt counts in some window; `None` without windows.
    pub fn memory(&self) -> Option<Duration> {
        self.windows.iter().map(|w| w.held_for).max()
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

    /// The earliest instant at which a body that is not full should go:
    /// every window has room and the binding window's pace since its last
    /// attempt has passed, keeping the `reserve` fraction of each window.
    pub fn next_paced(&mut self, now: Instant, reserve: f64) -> Instant {
        let free = self.next_free(now);
        self.windows
            .iter()
            .map(|w| w.paced_at(now, reserve))
            .fold(free, Instant::max)
    }

    /// Charges an attempt to every window if it fits now; otherwise says
    /// when it will. Never waits, so a limiter shared between the delivery
    /// task and a manual send is never locked across a sleep.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        let free = self.next_free(now);
        if free > now {
            return Err(free);
        }
        let attempt = Attempt::at(now);
        for w in &mut self.windows {
            w.attempts.push_back(attempt);
        }
        Ok(())
    }

    /// The attempt charged at `charged` was answered at `answered`. The
    /// receiver counted it somewhere in between, and may start its window
    /// then: counting ours from the answer keeps a slow request (a loaded
    /// receiver, a long body) from letting the next one arrive inside the
    /// receiver's window. The caller persists the answer's wall time too.
    pub fn answered(&mut self, charged: Instant, answered: Instant) {
        let answer = Attempt::at(answered);
        for window in &mut self.windows {
            if let Some(at) = window.attempts.iter().position(|a| a.at == charged) {
                window.attempts.remove(at);
                let later = window.attempts.partition_point(|a| a.at <= answered);
                window.attempts.insert(later, answer);
            }
        }
    }

    /// Each window with the attempts it counts at `now` and, when paced
    /// with `reserve`, its pace.
    pub fn usage(&mut self, now: Instant, reserve: Option<f64>) -> Vec<WindowUsage> {
        self.windows
            .iter_mut()
            .map(|w| {
                w.forget_before(now);
                WindowUsage {
                    limit: w.limit,
                    used: w.attempts.len() as u32,
                    free_in: w.free_at(now).saturating_duration_since(now),
                    pace: reserve.map(|reserve| w.pace(reserve)),
                }
            })
            .collect()
    }
}

/// How much of one rate window is spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowUsage {
    pub limit: RateLimit,
    /// Attempts counted in the window (may exceed the limit's count only
    /// for a window made smaller since those attempts).
    pub used: u32,
    /// Zero while the window has room; else how long until it has.
    pub free_in: Duration,
    /// With pacing: the gap this window wants between attempts now.
    pub pace: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(spec: &[&str]) -> Vec<RateLimit> {
        spec.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// Waits until an attempt fits, then charges it; returns the wait.
    async fn acquire(limiter: &mut RateLimiter) -> Duration {
        let start = Instant::now();
        while let Err(free) = limiter.try_acquire(Instant::now()) {
            tokio::time::sleep_until(free).await;
        }
        Instant::now() - start
    }

    #[tokio::test(start_paused = true)]
    async fn every_window_is_enforced_at_once() {
        let mut limiter = RateLimiter::new(&limits(&["2/1s", "3/10s"]));
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            acquire(&mut limiter).await;
            times.push(Instant::now() - start);
        }
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        // 2 at once, the 3rd after a second, then the 10 s window holds the
        // rest; each window is held 50 ms (1 s) or 200 ms (10 s) longer.
        assert_eq!(ms, vec![0, 0, 1_050, 10_200, 10_200, 11_250]);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_of_an_earlier_run_still_count() {
        let now = SystemTime::now();
        let times = [now - Duration::from_secs(30), now - Duration::from_secs(10)];
        let mut limiter = RateLimiter::with_history(&limits(&["3/1m"]), &times);
        let start = Instant::now();
        acquire(&mut limiter).await;
        assert_eq!(
            Instant::now() - start,
            Duration::ZERO,
            "one attempt left in the window"
        );
        acquire(&mut limiter).await;
        // The attempt made 30 s before start leaves the window 30 s (+ 1 s margin) in.
        let waited = (Instant::now() - start).as_millis();
        assert!((30_999..=31_001).contains(&waited), "{waited}");
        assert_eq!(limiter.memory(), Some(Duration::from_secs(61)));
    }

    #[test]
    fn a_day_window_counts_attempts_by_their_utc_date() {
        let day: RateLimit = "2/1d".parse().unwrap();
        let now = SystemTime::now();
        let since_midnight = into_calendar_period(now.duration_since(UNIX_EPOCH).unwrap(), DAY);
        let yesterday = now - since_midnight - Duration::from_secs(1);
        let today = now - since_midnight / 2;
        let mut limiter = RateLimiter::with_history(&[day], &[yesterday, yesterday, today]);
        let usage = limiter.usage(Instant::now(), None);
        assert_eq!(
            usage[0].used, 1,
            "yesterday's attempts are forgotten: {usage:?}"
        );
        assert_eq!(usage[0].free_in, Duration::ZERO);
    }

    #[test]
    fn whole_days_are_utc_calendar_days() {
        let day: RateLimit = "5000/1d".parse().unwrap();
        assert!(Window::new(day, &[]).calendar);
        assert!(!Window::new("5/1m".parse().unwrap(), &[]).calendar);
        assert!(!Window::new("5/36h".parse().unwrap(), &[]).calendar);
        // 2026-11-22T10:00:00Z is 10 h into its UTC day.
        let at = Duration::from_secs(1_795_341_600);
        assert_eq!(
            into_calendar_period(at, DAY),
            Duration::from_secs(10 * 3600)
        );
    }

    #[tokio::test]
    async fn a_spent_day_frees_up_at_the_next_utc_midnight() {
        let mut limiter = RateLimiter::new(&limits(&["2/1d"]));
        acquire(&mut limiter).await;
        acquire(&mut limiter).await;
        let now = Instant::now();
        let wait = limiter.next_free(now) - now;
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let to_midnight = DAY - into_calendar_period(since_epoch, DAY);
        let margin = Duration::from_secs(1);
        let expected = to_midnight + margin;
        let off = wait.abs_diff(expected);
        assert!(off < Duration::from_secs(2), "{wait:?} vs {expected:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn usage_counts_each_window_and_says_when_a_full_one_frees() {
        let mut limiter = RateLimiter::new(&limits(&["2/10s", "5/1m"]));
        let start = Instant::now();
        assert!(limiter.try_acquire(start).is_ok());
        assert!(limiter.try_acquire(start).is_ok());
        // Full: refused, uncharged, with the instant it frees (10 s + 200 ms margin).
        assert_eq!(
            limiter.try_acquire(start),
            Err(start + Duration::from_millis(10_200))
        );
        let usage = limiter.usage(start, None);
        assert_eq!(
            usage
                .iter()
                .map(|w| (w.used, w.free_in))
                .collect::<Vec<_>>(),
            vec![(2, Duration::from_millis(10_200)), (2, Duration::ZERO)]
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        let usage = limiter.usage(Instant::now(), None);
        assert_eq!(usage[0].used, 0, "the attempts left the 10 s window");
        assert_eq!(usage[1].used, 2, "and are still in the minute");
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_counts_an_attempt_from_its_answer() {
        let mut limiter = RateLimiter::new(&limits(&["1/2s"]));
        let charged = Instant::now();
        assert!(limiter.try_acquire(charged).is_ok());
        let answered = charged + Duration::from_millis(700);
        limiter.answered(charged, answered);
        let margin = jitter_margin(Duration::from_secs(2));
        assert_eq!(
            limiter.next_free(answered),
            answered + Duration::from_secs(2) + margin
        );
    }

    /// Sends paced attempts at `next_paced` for `span`; their times from the start.
    async fn paced_attempts(
        limiter: &mut RateLimiter,
        reserve: f64,
        span: Duration,
    ) -> Vec<Duration> {
        let start = Instant::now();
        let mut times = Vec::new();
        loop {
            let at = limiter.next_paced(Instant::now(), reserve);
            if at - start > span {
                return times;
            }
            tokio::time::sleep_until(at).await;
            assert!(
                limiter.try_acquire(Instant::now()).is_ok(),
                "paced means allowed"
            );
            times.push(Instant::now() - start);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_windows_pace_by_period_over_the_paced_count_and_the_slowest_binds() {
        let mut limiter = RateLimiter::new(&limits(&["5/2s", "40/60s"]));
        let times = paced_attempts(&mut limiter, 0.05, Duration::from_secs(600)).await;
        // 40/60s binds: 60 s / (40 - 2 reserved) = 1.579 s apart, so 38 a minute.
        let pace = Duration::from_secs(60).div_f64(38.0);
        // The paused clock counts whole milliseconds.
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap.abs_diff(pace) <= Duration::from_millis(1), "{times:?}");
        }
        for (i, at) in times.iter().enumerate() {
            let in_minute = times[i..]
                .iter()
                .take_while(|t| **t - *at < Duration::from_secs(60))
                .count();
            assert!(
                in_minute <= 38,
                "{in_minute} attempts in the minute from {at:?}"
            );
        }
        assert_eq!(times.len(), 380, "600 s at the pace, from the first at 0");
        let usage = limiter.usage(Instant::now(), Some(0.05));
        // 5 × 5 % reserves no whole attempt: 2 s / 5.
        assert_eq!(usage[0].pace, Some(Duration::from_millis(400)));
        assert_eq!(usage[1].pace, Some(pace));
    }

    #[tokio::test(start_paused = true)]
    async fn a_day_window_spreads_what_is_left_over_what_is_left_of_the_utc_day() {
        let mut limiter = RateLimiter::new(&limits(&["5000/1d"]));
        let left_of_day = Window::new("5000/1d".parse().unwrap(), &[]).left_in_calendar_period();
        let pace = limiter.usage(Instant::now(), Some(0.05))[0].pace.unwrap();
        // The wall clock moves on between the two readings.
        let expected = left_of_day / 4750;
        assert!(
            pace.abs_diff(expected) < Duration::from_millis(1),
            "{pace:?} vs {expected:?}"
        );
        // With 4,749 of the paced 4,750 spent, the last paced one takes the rest of the day.
        let mut limiter = RateLimiter::new(&limits(&["5000/1d"]));
        for _ in 0..4_749 {
            limiter.try_acquire(Instant::now()).unwrap();
        }
        let pace = limiter.usage(Instant::now(), Some(0.05))[0].pace.unwrap();
        assert!(
            pace.abs_diff(left_of_day) < Duration::from_secs(2),
            "{pace:?} vs {left_of_day:?}"
        );
        // Once the paced budget is spent, bodies that are not full wait for
        // the next day; the reserve still lets an attempt go now.
        limiter.try_acquire(Instant::now()).unwrap();
        let now = Instant::now();
        assert!(limiter.next_paced(now, 0.05) - now >= left_of_day - Duration::from_secs(2));
        assert_eq!(limiter.next_free(now), now);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_never_goes_before_the_windows_allow() {
        // Without reserve a window's pace equals its even spread; the limit still holds.
        let mut limiter = RateLimiter::new(&limits(&["2/1s", "3/10s"]));
        let times = paced_attempts(&mut limiter, 0.0, Duration::from_secs(60)).await;
        for (i, at) in times.iter().enumerate() {
            let in_ten = times[i..]
                .iter()
                .take_while(|t| **t - *at < Duration::from_secs(10))
                .count();
            assert!(in_ten <= 3, "{times:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the sliding windows and reserve, attempts sent at
        /// `next_paced` are always allowed, and none goes before `next_free`.
        #[test]
        fn paced_attempts_always_fit_every_window(
            windows in proptest::collection::vec((1u32..50, 1u64..120), 1..4),
            reserve in 0.0f64..=0.5,
            attempts in 1usize..120,
        ) {
            let limits: Vec<RateLimit> = windows
                .iter()
                .map(|&(count, secs)| RateLimit { count, period: Duration::from_secs(secs) })
                .collect();
            let mut limiter = RateLimiter::new(&limits);
            let mut now = Instant::now();
            for _ in 0..attempts {
                let paced = limiter.next_paced(now, reserve);
                proptest::prop_assert!(paced >= limiter.next_free(now));
                now = paced;
                proptest::prop_assert!(limiter.try_acquire(now).is_ok());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_means_no_wait() {
        let mut limiter = RateLimiter::new(&[]);
        for _ in 0..100 {
            assert_eq!(acquire(&mut limiter).await, Duration::ZERO);
        }
    }
}
