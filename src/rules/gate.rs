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
//! The event's `count` is the number of matching lines it stands for. Time is
//! when the agent reads a line, so a log replayed from its beginning counts as
//! if it all happened now.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

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
    threshold: Option<(ThresholdSpec, HashMap<String, VecDeque<Instant>>)>,
    suppress: Option<(SuppressSpec, HashMap<String, Suppressed>)>,
    since_sweep: u32,
}

struct Suppressed {
    until: Instant,
    held: u64,
}

fn key_of(fields: &Fields, names: &[String]) -> String {
    let mut key = String::new();
    for name in names {
        match fields.get(name) {
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
            threshold: threshold.map(|t| (t, HashMap::new())),
            suppress: suppress.map(|s| (s, HashMap::new())),
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
        self.threshold.as_ref().map(|(spec, _)| spec) == threshold
            && self.suppress.as_ref().map(|(spec, _)| spec) == suppress
    }

    pub fn admit(&mut self, fields: &Fields, now: Instant) -> Admit {
        if self.threshold.is_none() && self.suppress.is_none() {
            return Admit::Emit { count: None };
        }
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        let mut count = 1;
        if let Some((spec, groups)) = &mut self.threshold {
            let seen = groups.entry(key_of(fields, &spec.group_by)).or_default();
            seen.push_back(now);
            while seen
                .front()
                .is_some_and(|&t| now.duration_since(t) >= spec.within)
            {
                seen.pop_front();
            }
            if seen.len() < spec.count as usize {
                return Admit::Hold;
            }
            count = seen.len() as u64;
            seen.clear();
        }
        if let Some((spec, keys)) = &mut self.suppress {
            let key = key_of(fields, &spec.key);
            match keys.get_mut(&key) {
                Some(state) if now < state.until => {
                    state.held += count;
                    return Admit::Hold;
                }
                Some(state) => {
                    count += std::mem::take(&mut state.held);
                    state.until = now + spec.period;
                }
                None => {
                    keys.insert(
                        key,
                        Suppressed {
                            until: now + spec.period,
                            held: 0,
                        },
                    );
                }
            }
        }
        Admit::Emit { count: Some(count) }
    }

    /// Forgets groups whose matches all left the window, and suppressed keys
    /// whose period is over with nothing held.
    fn sweep(&mut self, now: Instant) {
        self.since_sweep = 0;
        if let Some((spec, groups)) = &mut self.threshold {
            groups.retain(|_, seen| {
                seen.back()
                    .is_some_and(|&t| now.duration_since(t) < spec.within)
            });
        }
        if let Some((_, keys)) = &mut self.suppress {
            keys.retain(|_, state| now < state.until || state.held > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(ip: &str) -> Fields {
        Fields::from([("source.ip".to_string(), serde_json::json!(ip))])
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn threshold_emits_on_the_countth_match_per_group_within_the_window() {
        let spec = ThresholdSpec {
            count: 3,
            within: secs(60),
            group_by: vec!["source.ip".into()],
        };
        let mut gate = Gate::new(Some(spec), None);
        let t0 = Instant::now();
        assert_eq!(gate.admit(&fields("a"), t0), Admit::Hold);
        assert_eq!(gate.admit(&fields("b"), t0), Admit::Hold);
        assert_eq!(gate.admit(&fields("a"), t0 + secs(10)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("a"), t0 + secs(20)),
            Admit::Emit { count: Some(3) }
        );
        // The window starts over after an event.
        assert_eq!(gate.admit(&fields("a"), t0 + secs(21)), Admit::Hold);
        // Matches older than the window no longer count.
        assert_eq!(gate.admit(&fields("b"), t0 + secs(61)), Admit::Hold);
        assert_eq!(gate.admit(&fields("b"), t0 + secs(62)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("b"), t0 + secs(63)),
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
        let t0 = Instant::now();
        assert_eq!(gate.admit(&fields("a"), t0), Admit::Emit { count: Some(1) });
        assert_eq!(gate.admit(&fields("a"), t0 + secs(1)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("b"), t0 + secs(1)),
            Admit::Emit { count: Some(1) }
        );
        assert_eq!(gate.admit(&fields("a"), t0 + secs(2)), Admit::Hold);
        assert_eq!(
            gate.admit(&fields("a"), t0 + secs(3601)),
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
        let t0 = Instant::now();
        let decisions: Vec<Admit> = (0..6)
            .map(|i| gate.admit(&fields("x"), t0 + secs(i)))
            .collect();
        use Admit::*;
        assert_eq!(
            decisions,
            vec![Hold, Emit { count: Some(2) }, Hold, Hold, Hold, Hold]
        );
        assert_eq!(gate.admit(&fields("x"), t0 + secs(700)), Hold);
        assert_eq!(
            gate.admit(&fields("x"), t0 + secs(701)),
            Emit { count: Some(6) }
        );
    }

    #[test]
    fn without_options_every_match_is_an_event() {
        let mut gate = Gate::new(None, None);
        assert_eq!(
            gate.admit(&fields("a"), Instant::now()),
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
        let t0 = Instant::now();
        for i in 0..SWEEP_EVERY {
            gate.admit(&fields(&i.to_string()), t0);
        }
        let later = t0 + secs(5);
        for _ in 0..SWEEP_EVERY {
            gate.admit(&fields("new"), later);
        }
        assert!(gate.suppress.as_ref().unwrap().1.len() < 10);
    }
}
