//! Stateful rule options: `threshold` and `suppress`.
//!
//! A rule matches lines one at a time; these options decide, from what came
//! before, whether a match becomes an event:
//!
//! - `threshold = { count = 5, within = "10m", group_by = ["source.ip"] }`:
//!   an event only when `count` matches with the same `group_by` values fall
//!   within `within` (fail2ban's maxretry/findtime); the window then starts over.
//! - `suppress = { for = "1h", key = ["source.ip"] }`: at most one event per
//!   key per period; the next event after the period carries how many matches
//!   it stands for.
//!
//! The event's `count` is the number of matching lines it stands for.
//!
//! Time is the event's time, when the line says it happened
//! ([`super::LineTimes::gate_time`]), so a backfill of lines spread over
//! days fires only what the original traffic fired, and a burst fires as it
//! did, however late it is read. Lines reach a gate out of order (several
//! files, one written late, clocks apart), so:
//! - a threshold group keeps its matches sorted by time and counts those
//!   within `within` of its newest one: a late line counts if it falls in
//!   that window, else it is too old to complete any window still open;
//!   a late line no later than the match that last fired the group is
//!   already accounted for by that event, and counts for nothing new;
//! - a suppress key's period runs from the event that opened it; any line
//!   dated before the period's end, late or not, is held and counted into
//!   the next event.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use crate::event::Fields;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    pub count: u32,
    #[serde(with = "crate::config::humantime_duration")]
    pub within: Duration,
    #[serde(default)]
    pub group_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressSpec {
    #[serde(rename = "for", with = "crate::config::humantime_duration")]
    pub period: Duration,
    #[serde(default)]
    pub key: Vec<String>,
}

/// What [`Gate::admit`] decided for one match.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send an event; `count` is set when the rule has a threshold or suppress.
    Emit { count: Option<u64> },
    /// Counted, no event (below the threshold, or suppressed).
    Hold,
}

/// Keys are kept at most this long after they were last useful, and expired
/// keys are swept every this many matches, so memory follows live keys only.
const SWEEP_EVERY: u32 = 1024;

#[derive(Default)]
pub struct Gate {
    threshold: Option<Threshold>,
    suppress: Option<Suppress>,
    /// The latest time admitted: where sweeping measures "expired" from.
    newest: Option<Timestamp>,
    since_sweep: u32,
}

struct Threshold {
    spec: ThresholdSpec,
    within: SignedDuration,
    groups: HashMap<String, Group>,
}

#[derive(Default)]
struct Group {
    /// Times of the matches counted so far, oldest first.
    seen: VecDeque<Timestamp>,
    /// The time of the match that last fired this group.
    fired: Option<Timestamp>,
}

impl Group {
    fn last_activity(&self) -> Option<Timestamp> {
        self.seen.back().copied().max(self.fired)
    }
}

struct Suppress {
    spec: SuppressSpec,
    period: SignedDuration,
    keys: HashMap<String, Suppressed>,
}

struct Suppressed {
    until: Timestamp,
    held: u64,
}

/// A rule's duration as a span between timestamps (saturating: a period
/// longer than jiff's range never ends).
fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

fn key_of(fields: &Fields, names: &[String]) -> String {
    let mut key = String::new();
    for name in names {
        match fields.get(name.as_str()) {
            Some(serde_json::Value::String(s)) => key.push_str(s),
            Some(other) => key.push_str(&other.to_string()),
            None => {}
        }
        key.push('\u{1f}');
    }
    key
}

impl Gate {
    pub fn new(threshold: Option<ThresholdSpec>, suppress: Option<SuppressSpec>) -> Gate {
        Gate {
            threshold: threshold.map(|spec| Threshold {
                within: signed(spec.within),
                spec,
                groups: HashMap::new(),
            }),
            suppress: suppress.map(|spec| Suppress {
                period: signed(spec.period),
                spec,
                keys: HashMap::new(),
            }),
            newest: None,
            since_sweep: 0,
        }
    }

    /// Whether this gate counts by exactly `threshold` and `suppress`, so
    /// that its state still means the same for a rule reloaded with them.
    pub fn counts_by(
        &self,
        threshold: Option<&ThresholdSpec>,
        suppress: Option<&SuppressSpec>,
    ) -> bool {
        self.threshold.as_ref().map(|t| &t.spec) == threshold
            && self.suppress.as_ref().map(|s| &s.spec) == suppress
    }

    /// Decides about a match whose event's time is `at`.
    pub fn admit(&mut self, fields: &Fields, at: Timestamp) -> Admit {
        if self.threshold.is_none() && self.suppress.is_none() {
            return Admit::Emit { count: None };
        }
        self.newest = self.newest.max(Some(at));
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep();
        }
        let mut count = 1;
        if let Some(threshold) = &mut self.threshold {
            let spec = &threshold.spec;
            let group = threshold
                .groups
                .entry(key_of(fields, &spec.group_by))
                .or_default();
            if group.fired.is_some_and(|fired| at <= fired) {
                return Admit::Hold;
            }
            let seen = &mut group.seen;
            seen.insert(seen.partition_point(|&t| t <= at), at);
            let newest = *seen.back().expect("just inserted");
            while seen
                .front()
                .is_some_and(|&t| newest.duration_since(t) >= threshold.within)
            {
                seen.pop_front();
            }
            if seen.len() < spec.count as usize {
                return Admit::Hold;
            }
            count = seen.len() as u64;
            seen.clear();
            group.fired = Some(newest);
        }
        if let Some(suppress) = &mut self.suppress {
            let key = key_of(fields, &suppress.spec.key);
            let until = at.checked_add(suppress.period).unwrap_or(Timestamp::MAX);
            match suppress.keys.get_mut(&key) {
                Some(state) if at < state.until => {
                    state.held += count;
                    return Admit::Hold;
                }
                Some(state) => {
                    count += std::mem::take(&mut state.held);
                    state.until = until;
                }
                None => {
                    suppress.keys.insert(key, Suppressed { until, held: 0 });
                }
            }
        }
        Admit::Emit { count: Some(count) }
    }

    /// Forgets groups with nothing within the window of the newest time
    /// admitted, and suppressed keys whose period is over with nothing held.
    fn sweep(&mut self) {
        self.since_sweep = 0;
        let Some(newest) = self.newest else {
            return;
        };
        if let Some(threshold) = &mut self.threshold {
            let within = threshold.within;
            threshold.groups.retain(|_, group| {
                group
                    .last_activity()
                    .is_some_and(|t| newest.duration_since(t) < within)
            });
        }
        if let Some(suppress) = &mut self.suppress {
            suppress
                .keys
                .retain(|_, state| newest < state.until || state.held > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(ip: &str) -> Fields {
        Fields::from([("source.ip".into(), serde_json::json!(ip))])
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// `n` seconds, to add to a timestamp.
    fn after(n: i64) -> SignedDuration {
        SignedDuration::from_secs(n)
    }

    #[test]
    fn threshold_emits_on_the_countth_match_per_group_within_the_window() {
        let spec = ThresholdSpec {
            count: 3,
            within: secs(60),
            group_by: vec!["source.ip".into()],
        };
        let mut gate = Gate::new(Some(spec), None);
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(gate.admit(&fields("a"), t0), Admit::Hold);
        assert_eq!(gate.admit(&fields("b"), t0), Admit::Hold);
        assert_eq!(gate.admit(&fields("a"), t0 + after(10)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("a"), t0 + after(20)),
            Admit::Emit { count: Some(3) }
        );
        // The window starts over after an event.
        assert_eq!(gate.admit(&fields("a"), t0 + after(21)), Admit::Hold);
        // Matches older than the window no longer count.
        assert_eq!(gate.admit(&fields("b"), t0 + after(61)), Admit::Hold);
        assert_eq!(gate.admit(&fields("b"), t0 + after(62)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("b"), t0 + after(63)),
            Admit::Emit { count: Some(3) }
        );
    }

    #[test]
    fn suppress_sends_one_event_per_key_per_period_and_counts_the_rest() {
        let spec = SuppressSpec {
            period: secs(3600),
            key: vec!["source.ip".into()],
        };
        let mut gate = Gate::new(None, Some(spec));
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(gate.admit(&fields("a"), t0), Admit::Emit { count: Some(1) });
        assert_eq!(gate.admit(&fields("a"), t0 + after(1)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("b"), t0 + after(1)),
            Admit::Emit { count: Some(1) }
        );
        assert_eq!(gate.admit(&fields("a"), t0 + after(2)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("a"), t0 + after(3601)),
            Admit::Emit { count: Some(3) }
        );
    }

    #[test]
    fn threshold_then_suppress_compose() {
        let threshold = ThresholdSpec {
            count: 2,
            within: secs(60),
            group_by: vec![],
        };
        let suppress = SuppressSpec {
            period: secs(600),
            key: vec![],
        };
        let mut gate = Gate::new(Some(threshold), Some(suppress));
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let decisions: Vec<Admit> = (0..6)
            .map(|i| gate.admit(&fields("x"), t0 + after(i)))
            .collect();
        use Admit::*;
        assert_eq!(
            decisions,
            vec![Hold, Emit { count: Some(2) }, Hold, Hold, Hold, Hold]
        );
        assert_eq!(gate.admit(&fields("x"), t0 + after(700)), Hold);
        assert_eq!(
            gate.admit(&fields("x"), t0 + after(701)),
            Emit { count: Some(6) }
        );
    }

    #[test]
    fn matches_hours_apart_never_make_a_burst() {
        let spec = ThresholdSpec {
            count: 3,
            within: secs(600),
            group_by: vec!["source.ip".into()],
        };
        let mut gate = Gate::new(Some(spec), None);
        let t0: Timestamp = "2026-11-20T00:00:00Z".parse().unwrap();
        // A backfill: read within a second, dated an hour apart.
        for hour in 0..48 {
            assert_eq!(
                gate.admit(&fields("a"), t0 + after(hour * 3600)),
                Admit::Hold
            );
        }
    }

    #[test]
    fn late_lines_count_within_the_window_of_the_newest() {
        let spec = ThresholdSpec {
            count: 3,
            within: secs(60),
            group_by: vec![],
        };
        let mut gate = Gate::new(Some(spec), None);
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(gate.admit(&fields("a"), t0 + after(100)), Admit::Hold);
        // Older than the window of the newest: completes no window.
        assert_eq!(gate.admit(&fields("a"), t0), Admit::Hold);
        assert_eq!(gate.admit(&fields("a"), t0 + after(30)), Admit::Hold);
        // Late but within the window: they complete the burst.
        assert_eq!(gate.admit(&fields("a"), t0 + after(90)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("a"), t0 + after(95)),
            Admit::Emit { count: Some(3) }
        );
        // Lines of that burst read after it fired fire nothing new.
        assert_eq!(gate.admit(&fields("a"), t0 + after(99)), Admit::Hold);
        assert_eq!(gate.admit(&fields("a"), t0 + after(100)), Admit::Hold);
        assert_eq!(gate.admit(&fields("a"), t0 + after(101)), Admit::Hold);
        assert_eq!(gate.admit(&fields("a"), t0 + after(102)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("a"), t0 + after(103)),
            Admit::Emit { count: Some(3) }
        );
    }

    #[test]
    fn suppress_holds_late_lines_of_an_open_period() {
        let spec = SuppressSpec {
            period: secs(60),
            key: vec![],
        };
        let mut gate = Gate::new(None, Some(spec));
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(
            gate.admit(&fields("a"), t0 + after(100)),
            Admit::Emit { count: Some(1) }
        );
        assert_eq!(gate.admit(&fields("a"), t0), Admit::Hold);
        assert_eq!(gate.admit(&fields("a"), t0 + after(159)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("a"), t0 + after(160)),
            Admit::Emit { count: Some(3) }
        );
    }

    #[test]
    fn without_options_every_match_is_an_event() {
        let mut gate = Gate::new(None, None);
        assert_eq!(
            gate.admit(&fields("a"), Timestamp::now()),
            Admit::Emit { count: None }
        );
    }

    #[test]
    fn sweeping_forgets_idle_keys() {
        let spec = SuppressSpec {
            period: secs(1),
            key: vec!["source.ip".into()],
        };
        let mut gate = Gate::new(None, Some(spec));
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        for i in 0..SWEEP_EVERY {
            gate.admit(&fields(&i.to_string()), t0);
        }
        let later = t0 + after(5);
        for _ in 0..SWEEP_EVERY {
            gate.admit(&fields("new"), later);
        }
        assert!(gate.suppress.as_ref().unwrap().keys.len() < 10);
    }
}
