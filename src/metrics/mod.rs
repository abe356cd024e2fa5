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

pub mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
    pub retries: AtomicU64,
    pub rate_limit_waits: AtomicU64,
    pub rate_limit_wait_micros: AtomicU64,
    /// Answers by HTTP status code, or `error` when none came.
    responses: Mutex<BTreeMap<String, u64>>,
}

impl WebhookCounters {
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
    /// (window as configured, e.g. `5/1m`; requests left in it).
    pub budget_left: Vec<(String, u64)>,
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
    /// Matches per rule id, before thresholds and suppression.
    pub rules: BTreeMap<String, AtomicU64>,
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
                .map(|id| (id.to_string(), AtomicU64::new(0)))
                .collect(),
            webhooks: webhooks
                .into_iter()
                .map(|name| (name.to_string(), Default::default()))
                .collect(),
        }
    }

    /// The Prometheus text of every counter and of `gauges` (one per
    /// webhook, in config order).
    pub fn render(&self, gauges: &[WebhookGauges]) -> String {
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
        let families: Vec<(&str, &str, &str, Vec<Sample>)> = vec![
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
                "tailhook_retries_total",
                "counter",
                "Failed attempts that were retried.",
                count(|c| &c.retries),
            ),
            (
                "tailhook_rate_limit_waits_total",
                "counter",
                "Attempts that waited for rate-limit budget.",
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
        ];
        let mut out = String::new();
        for (name, kind, help, samples) in families {
            family(&mut out, name, kind, help, samples);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_headers_labels_and_escaping() {
        let metrics = Metrics::new(["auth"], ["sshd.auth_failed"], ["so\"c"]);
        add(&metrics.inputs[0].1.lines, 3);
        add(&metrics.rules["sshd.auth_failed"], 2);
        metrics.webhooks[0].1.count_response(Some(202));
        metrics.webhooks[0].1.count_response(None);
        let text = metrics.render(&[WebhookGauges {
            queued_events: 4,
            queued_bytes: 400,
            oldest_age_seconds: Some(1.5),
            budget_left: vec![("5/1m".into(), 3)],
        }]);
        for line in [
            "# TYPE tailhook_lines_read_total counter",
            "tailhook_lines_read_total{input=\"auth\"} 3",
            "tailhook_rule_matches_total{rule=\"sshd.auth_failed\"} 2",
            "tailhook_requests_total{webhook=\"so\\\"c\",code=\"202\"} 1",
            "tailhook_requests_total{webhook=\"so\\\"c\",code=\"error\"} 1",
            "tailhook_queue_events{webhook=\"so\\\"c\"} 4",
            "tailhook_queue_oldest_age_seconds{webhook=\"so\\\"c\"} 1.5",
            "tailhook_rate_limit_remaining{webhook=\"so\\\"c\",window=\"5/1m\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
