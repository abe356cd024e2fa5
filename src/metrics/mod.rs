//! Metrics: what the agent counts, in one place, and its Prometheus text.
//!
//! Counters are plain atomics in structs made once at start-up, one per
//! input, rule and webhook, so counting on the hot path is an atomic add and
//! no label is ever built there. Gauges (queue depth, oldest queued event,
//! budget left) are read from the queue and the rate limiters when scraped.
//! Labels are input names, rule ids and webhook names, never a URL: the URL
//! carries the webhook's secret.
//!
//! The text format (exposition format 0.0.4) is a few lines of `name{labels}
//! value`; writing it here spares a registry crate whose types would wrap
//! these same counters. The HTTP side is in `server.rs`.

mod process;
pub mod server;

pub use process::ProcessFigures;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::tail::Reach;

/// Counters of one input.
#[derive(Debug, Default)]
pub struct InputCounters {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    /// Lines longer than `max_line_bytes`, cut to it.
    pub lines_truncated: AtomicU64,
}

/// Counters of one webhook.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    pub events_queued: AtomicU64,
    pub events_sent: AtomicU64,
    pub events_dead_lettered: AtomicU64,
    pub dead_letter_batches: AtomicU64,
    pub retries: AtomicU64,
    /// Attempts that timed out: the receiver may or may not have the batch.
    pub unknown_outcomes: AtomicU64,
    pub rate_limit_waits: AtomicU64,
    pub rate_limit_wait_micros: AtomicU64,
    /// Answers by HTTP status code, or `error` when none came.
    responses: Mutex<BTreeMap<String, u64>>,
    /// Unix time in milliseconds of the last accepted request; 0: none yet.
    last_success_unix_ms: AtomicU64,
}

impl WebhookCounters {
    /// The webhook accepted a request just now.
    pub fn count_success(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success_unix_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
    }

    /// When the webhook last accepted a request, if it did since the start.
    pub fn last_success(&self) -> Option<std::time::SystemTime> {
        match get(&self.last_success_unix_ms) {
            0 => None,
            ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
        }
    }

    pub fn count_response(&self, status: Option<u16>) {
        let code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        *self
            .responses
            .lock()
            .expect("response counters")
            .entry(code)
            .or_default() += 1;
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The state of one webhook at scrape time.
pub struct WebhookGauges {
    pub queued_events: u64,
    pub queued_bytes: u64,
    pub oldest_age_seconds: Option<f64>,
    /// Events dropped to make room (`when_full = "drop_oldest"`), ever: kept
    /// in the queue file, so the counter survives restarts.
    pub dropped_events: u64,
    /// (window as configured, e.g. `5/1m`; requests left in it).
    pub budget_left: Vec<(String, u64)>,
    /// A webhook shared by a fleet, as last observed in its Redis.
    pub fleet: Option<FleetGauges>,
}

/// A shared webhook's figures in the fleet's Redis.
pub struct FleetGauges {
    /// This agent holds the sender's lease.
    pub sender: bool,
    pub queued_events: u64,
    pub agents_seen: u64,
    /// (window; requests the whole fleet has left in it).
    pub budget_left: Vec<(String, u64)>,
}

/// Everything read at scrape time rather than counted.
pub struct Scrape {
    /// One per webhook, in config order.
    pub webhooks: Vec<WebhookGauges>,
    /// Per input, in config order: bytes in its files not read (committed) yet.
    pub input_lag_bytes: Vec<u64>,
    pub process: ProcessFigures,
}

/// One sample: its labels and value.
type Sample<'a> = (Vec<(&'a str, &'a str)>, f64);

/// Writes a family: its `# HELP` and `# TYPE` lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<Sample>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
                .collect();
            let _ = write!(out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(out, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every counter of the agent, by input, rule and webhook in config order.
pub struct Metrics {
    pub inputs: Vec<(String, InputCounters)>,
    /// Matches per rule id, before thresholds and suppression. Shared: the
    /// rules stage holds each rule's counter, not a lookup by id per match.
    pub rules: BTreeMap<String, std::sync::Arc<AtomicU64>>,
    pub webhooks: Vec<(String, std::sync::Arc<WebhookCounters>)>,
}

impl Metrics {
    pub fn new<'a>(
        inputs: impl IntoIterator<Item = &'a str>,
        rules: impl IntoIterator<Item = &'a str>,
        webhooks: impl IntoIterator<Item = &'a str>,
    ) -> Metrics {
        Metrics {
            inputs: inputs
                .into_iter()
                .map(|name| (name.to_string(), InputCounters::default()))
                .collect(),
            rules: rules
                .into_iter()
                .map(|id| (id.to_string(), Default::default()))
                .collect(),
            webhooks: webhooks
                .into_iter()
                .map(|name| (name.to_string(), Default::default()))
                .collect(),
        }
    }

    /// Counters for a reloaded config, going on from this one's counts
    /// (by input, rule and webhook name), so a reload resets no counter
    /// Prometheus' `rate()` would read as a restart. Called once the old
    /// pipeline stopped counting.
    pub fn continuing<'a>(
        &self,
        inputs: impl IntoIterator<Item = &'a str>,
        rules: impl IntoIterator<Item = &'a str>,
        webhooks: impl IntoIterator<Item = &'a str>,
    ) -> Metrics {
        let next = Metrics::new(inputs, rules, webhooks);
        let carry = |to: &AtomicU64, from: &AtomicU64| to.store(get(from), Ordering::Relaxed);
        for (name, counters) in &next.inputs {
            if let Some((_, old)) = self.inputs.iter().find(|(n, _)| n == name) {
                carry(&counters.lines, &old.lines);
                carry(&counters.bytes, &old.bytes);
                carry(&counters.lines_truncated, &old.lines_truncated);
            }
        }
        for (id, count) in &next.rules {
            if let Some(old) = self.rules.get(id) {
                carry(count, old);
            }
        }
        for (name, counters) in &next.webhooks {
            if let Some((_, old)) = self.webhooks.iter().find(|(n, _)| n == name) {
                for (to, from) in [
                    (&counters.events_queued, &old.events_queued),
                    (&counters.events_sent, &old.events_sent),
                    (&counters.events_dead_lettered, &old.events_dead_lettered),
                    (&counters.dead_letter_batches, &old.dead_letter_batches),
                    (&counters.retries, &old.retries),
                    (&counters.unknown_outcomes, &old.unknown_outcomes),
                    (&counters.rate_limit_waits, &old.rate_limit_waits),
                    (
                        &counters.rate_limit_wait_micros,
                        &old.rate_limit_wait_micros,
                    ),
                ] {
                    carry(to, from);
                }
                carry(&counters.last_success_unix_ms, &old.last_success_unix_ms);
                *counters.responses.lock().expect("response counters") =
                    old.responses.lock().expect("response counters").clone();
            }
        }
        next
    }

    /// The Prometheus text of every counter and of what was read at `scrape`.
    pub fn render(&self, scrape: &Scrape) -> String {
        let gauges = &scrape.webhooks;
        let by_input = |field: fn(&InputCounters) -> &AtomicU64| -> Vec<Sample> {
            self.inputs
                .iter()
                .map(|(input, c)| (vec![("input", input.as_str())], get(field(c)) as f64))
                .collect()
        };
        let by_webhook = |value: &dyn Fn(&WebhookCounters) -> f64| -> Vec<Sample> {
            self.webhooks
                .iter()
                .map(|(webhook, c)| (vec![("webhook", webhook.as_str())], value(c)))
                .collect()
        };
        let count =
            |field: fn(&WebhookCounters) -> &AtomicU64| by_webhook(&|c| get(field(c)) as f64);
        let names = self.webhooks.iter().map(|(name, _)| name.as_str());
        let now: Vec<(&str, &WebhookGauges)> = names.zip(gauges).collect();
        let gauge = |value: fn(&WebhookGauges) -> f64| -> Vec<Sample> {
            now.iter()
                .map(|(webhook, g)| (vec![("webhook", *webhook)], value(g)))
                .collect()
        };

        let matches = self
            .rules
            .iter()
            .map(|(rule, c)| (vec![("rule", rule.as_str())], get(c) as f64))
            .collect();
        let waited = by_webhook(&|c| get(&c.rate_limit_wait_micros) as f64 / 1e6);
        let responses: Vec<(String, String, u64)> = self
            .webhooks
            .iter()
            .flat_map(|(webhook, c)| {
                let responses = c.responses.lock().expect("response counters").clone();
                responses
                    .into_iter()
                    .map(move |(code, n)| (webhook.clone(), code, n))
            })
            .collect();
        let requests = responses
            .iter()
            .map(|(webhook, code, n)| {
                (
                    vec![("webhook", webhook.as_str()), ("code", code.as_str())],
                    *n as f64,
                )
            })
            .collect();
        let budget = now
            .iter()
            .flat_map(|(webhook, g)| {
                g.budget_left.iter().map(|(window, left)| {
                    (
                        vec![("webhook", *webhook), ("window", window.as_str())],
                        *left as f64,
                    )
                })
            })
            .collect();
        let fleet_gauge = |value: fn(&FleetGauges) -> f64| -> Vec<Sample> {
            now.iter()
                .filter_map(|(webhook, g)| {
                    Some((vec![("webhook", *webhook)], value(g.fleet.as_ref()?)))
                })
                .collect()
        };
        let fleet_budget = now
            .iter()
            .flat_map(|(webhook, g)| {
                g.fleet.iter().flat_map(|f| {
                    f.budget_left.iter().map(|(window, left)| {
                        (
                            vec![("webhook", *webhook), ("window", window.as_str())],
                            *left as f64,
                        )
                    })
                })
            })
            .collect();
        let lag = self
            .inputs
            .iter()
            .zip(&scrape.input_lag_bytes)
            .map(|((input, _), lag)| (vec![("input", input.as_str())], *lag as f64))
            .collect();
        let last_success = by_webhook(&|c| {
            c.last_success().map_or(0.0, |t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64()
            })
        });
        let process = |figure: Option<f64>| -> Vec<Sample> {
            figure
                .map(|value| (Vec::new(), value))
                .into_iter()
                .collect()
        };
        let figures = &scrape.process;
        let families: Vec<(&str, &str, &str, Vec<Sample>)> = vec![
            (
                "tailhook_build_info",
                "gauge",
                "Always 1; the version of the running agent is its label.",
                vec![(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
            ),
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time the agent has used.",
                process(figures.cpu_seconds),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size.",
                process(figures.resident_bytes),
            ),
            (
                "process_open_fds",
                "gauge",
                "Open file descriptors.",
                process(figures.open_fds),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch.",
                process(figures.start_time_seconds),
            ),
            (
                "tailhook_lines_read_total",
                "counter",
                "Lines read from the input's files.",
                by_input(|c| &c.lines),
            ),
            (
                "tailhook_bytes_read_total",
                "counter",
                "Bytes of the lines read from the input's files.",
                by_input(|c| &c.bytes),
            ),
            (
                "tailhook_lines_truncated_total",
                "counter",
                "Lines longer than the input's max_line_bytes, cut to it (rules see the cut line).",
                by_input(|c| &c.lines_truncated),
            ),
            (
                "tailhook_input_lag_bytes",
                "gauge",
                "Bytes in the input's files that are not read (committed) yet.",
                lag,
            ),
            (
                "tailhook_rule_matches_total",
                "counter",
                "Lines the rule matched, before thresholds and suppression.",
                matches,
            ),
            (
                "tailhook_events_queued_total",
                "counter",
                "Events queued on disk for the webhook.",
                count(|c| &c.events_queued),
            ),
            (
                "tailhook_events_sent_total",
                "counter",
                "Events the webhook accepted.",
                count(|c| &c.events_sent),
            ),
            (
                "tailhook_events_dead_lettered_total",
                "counter",
                "Events written to the webhook's dead-letter file.",
                count(|c| &c.events_dead_lettered),
            ),
            (
                "tailhook_events_dropped_total",
                "counter",
                "Oldest events dropped from the webhook's full queue (when_full = \"drop_oldest\").",
                gauge(|g| g.dropped_events as f64),
            ),
            (
                "tailhook_dead_letter_batches_total",
                "counter",
                "Batches the webhook rejected, written to its dead-letter file.",
                count(|c| &c.dead_letter_batches),
            ),
            (
                "tailhook_last_success_timestamp_seconds",
                "gauge",
                "When the webhook last accepted a request (0: not since the start).",
                last_success,
            ),
            (
                "tailhook_retries_total",
                "counter",
                "Failed attempts that were retried.",
                count(|c| &c.retries),
            ),
            (
                "tailhook_unknown_outcomes_total",
                "counter",
                "Attempts that timed out: the webhook may already have their batch.",
                count(|c| &c.unknown_outcomes),
            ),
            (
                "tailhook_rate_limit_waits_total",
                "counter",
                "Attempts that had to wait for rate-limit budget.",
                count(|c| &c.rate_limit_waits),
            ),
            (
                "tailhook_rate_limit_wait_seconds_total",
                "counter",
                "Time spent waiting for rate-limit budget.",
                waited,
            ),
            (
                "tailhook_requests_total",
                "counter",
                "Requests to the webhook by HTTP status (`error`: no answer).",
                requests,
            ),
            (
                "tailhook_queue_events",
                "gauge",
                "Events waiting for the webhook.",
                gauge(|g| g.queued_events as f64),
            ),
            (
                "tailhook_queue_bytes",
                "gauge",
                "Bytes waiting for the webhook.",
                gauge(|g| g.queued_bytes as f64),
            ),
            (
                "tailhook_queue_oldest_age_seconds",
                "gauge",
                "Age of the oldest queued event (0 when none is queued).",
                gauge(|g| g.oldest_age_seconds.unwrap_or(0.0)),
            ),
            (
                "tailhook_rate_limit_remaining",
                "gauge",
                "Requests the rate window still allows now.",
                budget,
            ),
            (
                "tailhook_fleet_sender",
                "gauge",
                "1 while this agent is the fleet's sender of the shared webhook.",
                fleet_gauge(|f| f64::from(u8::from(f.sender))),
            ),
            (
                "tailhook_fleet_queue_events",
                "gauge",
                "Events in the shared webhook's stream in Redis (every agent's).",
                fleet_gauge(|f| f.queued_events as f64),
            ),
            (
                "tailhook_fleet_agents_seen",
                "gauge",
                "Agents of the fleet seen within the last minute.",
                fleet_gauge(|f| f.agents_seen as f64),
            ),
            (
                "tailhook_fleet_rate_limit_remaining",
                "gauge",
                "Requests the shared webhook's window still allows the whole fleet.",
                fleet_budget,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, samples) in families {
            family(&mut out, name, kind, help, samples);
        }
        out
    }
}

/// The Prometheus text of what each input's paths reach now (file inputs
/// only) and of the reloads' outcomes.
pub fn render_reach_and_reloads(
    reach: &[(&str, Reach)],
    reloads_ok: u64,
    reloads_failed: u64,
) -> String {
    let per_input = |value: fn(&Reach) -> usize| -> Vec<Sample> {
        reach
            .iter()
            .map(|(input, r)| (vec![("input", *input)], value(r) as f64))
            .collect()
    };
    let mut out = String::new();
    family(
        &mut out,
        "tailhook_input_files",
        "gauge",
        "Files the input's paths match that the agent can read.",
        per_input(|r| r.readable_files as usize),
    );
    family(
        &mut out,
        "tailhook_input_unreadable_paths",
        "gauge",
        "Files (or folders on their way) the input's paths lead to that the agent may not read.",
        per_input(|r| r.unreadable.len()),
    );
    family(
        &mut out,
        "tailhook_input_unmatched_paths",
        "gauge",
        "Configured paths of the input that match no file.",
        per_input(|r| r.unmatched.len()),
    );
    family(
        &mut out,
        "tailhook_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP) by result.",
        vec![
            (vec![("result", "ok")], reloads_ok as f64),
            (vec![("result", "error")], reloads_failed as f64),
        ],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuing_counters_keep_the_counts_of_names_that_stay() {
        let before = Metrics::new(["auth", "gone"], ["a.rule"], ["soc"]);
        add(&before.inputs[0].1.lines, 7);
        add(&before.rules["a.rule"], 2);
        add(&before.webhooks[0].1.events_sent, 5);
        before.webhooks[0].1.count_response(Some(202));
        let after = before.continuing(["auth", "new"], ["a.rule", "b.rule"], ["chat", "soc"]);
        assert_eq!(get(&after.inputs[0].1.lines), 7);
        assert_eq!(get(&after.inputs[1].1.lines), 0);
        assert_eq!(get(&after.rules["a.rule"]), 2);
        assert_eq!(get(&after.rules["b.rule"]), 0);
        assert_eq!(get(&after.webhooks[1].1.events_sent), 5);
        assert_eq!(get(&after.webhooks[0].1.events_sent), 0);
        let responses = after.webhooks[1].1.responses.lock().unwrap().clone();
        assert_eq!(responses.get("202"), Some(&1));
    }

    #[test]
    fn text_format_has_headers_labels_and_escaping() {
        let metrics = Metrics::new(["auth"], ["sshd.auth_failed"], ["so\"c"]);
        add(&metrics.inputs[0].1.lines, 3);
        add(&metrics.rules["sshd.auth_failed"], 2);
        metrics.webhooks[0].1.count_response(Some(202));
        metrics.webhooks[0].1.count_response(None);
        metrics.webhooks[0].1.count_success();
        let text = metrics.render(&Scrape {
            webhooks: vec![WebhookGauges {
                queued_events: 4,
                queued_bytes: 400,
                oldest_age_seconds: Some(1.5),
                dropped_events: 7,
                budget_left: vec![("5/1m".into(), 3)],
                fleet: Some(FleetGauges {
                    sender: true,
                    queued_events: 12,
                    agents_seen: 4,
                    budget_left: vec![("5/1m".into(), 1)],
                }),
            }],
            input_lag_bytes: vec![120],
            process: ProcessFigures {
                cpu_seconds: Some(0.25),
                ..ProcessFigures::default()
            },
        });
        for line in [
            "# TYPE tailhook_lines_read_total counter",
            "tailhook_lines_read_total{input=\"auth\"} 3",
            "tailhook_rule_matches_total{rule=\"sshd.auth_failed\"} 2",
            "tailhook_requests_total{webhook=\"so\\\"c\",code=\"202\"} 1",
            "tailhook_requests_total{webhook=\"so\\\"c\",code=\"error\"} 1",
            "tailhook_queue_events{webhook=\"so\\\"c\"} 4",
            "# TYPE tailhook_events_dropped_total counter",
            "tailhook_events_dropped_total{webhook=\"so\\\"c\"} 7",
            "tailhook_queue_oldest_age_seconds{webhook=\"so\\\"c\"} 1.5",
            "tailhook_rate_limit_remaining{webhook=\"so\\\"c\",window=\"5/1m\"} 3",
            "tailhook_input_lag_bytes{input=\"auth\"} 120",
            "tailhook_fleet_sender{webhook=\"so\\\"c\"} 1",
            "tailhook_fleet_queue_events{webhook=\"so\\\"c\"} 12",
            "tailhook_fleet_agents_seen{webhook=\"so\\\"c\"} 4",
            "tailhook_fleet_rate_limit_remaining{webhook=\"so\\\"c\",window=\"5/1m\"} 1",
            "process_cpu_seconds_total 0.25",
            &format!(
                "tailhook_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // A figure /proc did not give is left out rather than shown as 0.
        assert!(
            !text.lines().any(|l| l.starts_with("process_open_fds ")),
            "{text}"
        );
        let success = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("tailhook_last_success_timestamp_seconds{webhook=\"so\\\"c\"} ")
            })
            .expect("last success sample");
        assert!(success.parse::<f64>().unwrap() > 1.7e9, "{success}");
    }
}
