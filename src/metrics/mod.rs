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

/// A family being written: one `# HELP`/`# TYPE` header, then samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
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
        let mut out = String::new();
        type InputField = fn(&InputCounters) -> &AtomicU64;
        let input_counters: [(&str, &str, InputField); 2] = [
            (
                "tailhook_lines_read_total",
                "Lines read from the input's files.",
                |c| &c.lines,
            ),
            (
                "tailhook_bytes_read_total",
                "Bytes of the lines read from the input's files.",
                |c| &c.bytes,
            ),
        ];
        for (name, help, field) in input_counters {
            let mut family = Family::new(&mut out, name, "counter", help);
            for (input, counters) in &self.inputs {
                family.sample(name, &[("input", input)], get(field(counters)));
            }
        }
        let name = "tailhook_rule_matches_total";
        let mut family = Family::new(
            &mut out,
            name,
            "counter",
            "Lines the rule matched, before thresholds and suppression.",
        );
        for (rule, counter) in &self.rules {
            family.sample(name, &[("rule", rule)], get(counter));
        }

        type WebhookField = fn(&WebhookCounters) -> &AtomicU64;
        let webhook_counters: [(&str, &str, WebhookField); 5] = [
            (
                "tailhook_events_queued_total",
                "Events queued on disk for the webhook.",
                |c| &c.events_queued,
            ),
            (
                "tailhook_events_sent_total",
                "Events the webhook accepted.",
                |c| &c.events_sent,
            ),
            (
                "tailhook_events_dead_lettered_total",
                "Events written to the webhook's dead-letter file.",
                |c| &c.events_dead_lettered,
            ),
            (
                "tailhook_retries_total",
                "Failed attempts that were retried.",
                |c| &c.retries,
            ),
            (
                "tailhook_rate_limit_waits_total",
                "Attempts that waited for rate-limit budget.",
                |c| &c.rate_limit_waits,
            ),
        ];
        for (name, help, field) in webhook_counters {
            let mut family = Family::new(&mut out, name, "counter", help);
            for (webhook, counters) in &self.webhooks {
                family.sample(name, &[("webhook", webhook)], get(field(counters)));
            }
        }
        let name = "tailhook_rate_limit_wait_seconds_total";
        let mut family = Family::new(
            &mut out,
            name,
            "counter",
            "Time spent waiting for rate-limit budget.",
        );
        for (webhook, counters) in &self.webhooks {
            let seconds = get(&counters.rate_limit_wait_micros) as f64 / 1e6;
            family.sample(name, &[("webhook", webhook)], seconds);
        }
        let name = "tailhook_requests_total";
        let mut family = Family::new(
            &mut out,
            name,
            "counter",
            "Requests to the webhook by HTTP status (`error`: no answer).",
        );
        for (webhook, counters) in &self.webhooks {
            let responses = counters.responses.lock().expect("response counters");
            for (code, count) in responses.iter() {
                family.sample(name, &[("webhook", webhook), ("code", code)], count);
            }
        }

        let names = self.webhooks.iter().map(|(name, _)| name.as_str());
        let rows: Vec<(&str, &WebhookGauges)> = names.zip(gauges).collect();
        let name = "tailhook_queue_events";
        let mut family = Family::new(&mut out, name, "gauge", "Events waiting for the webhook.");
        for (webhook, g) in &rows {
            family.sample(name, &[("webhook", webhook)], g.queued_events);
        }
        let name = "tailhook_queue_bytes";
        let mut family = Family::new(&mut out, name, "gauge", "Bytes waiting for the webhook.");
        for (webhook, g) in &rows {
            family.sample(name, &[("webhook", webhook)], g.queued_bytes);
        }
        let name = "tailhook_queue_oldest_age_seconds";
        let mut family = Family::new(
            &mut out,
            name,
            "gauge",
            "Age of the oldest queued event (0 when none is queued).",
        );
        for (webhook, g) in &rows {
            family.sample(
                name,
                &[("webhook", webhook)],
                g.oldest_age_seconds.unwrap_or(0.0),
            );
        }
        let name = "tailhook_rate_limit_remaining";
        let mut family = Family::new(
            &mut out,
            name,
            "gauge",
            "Requests the rate window still allows now.",
        );
        for (webhook, g) in &rows {
            for (window, left) in &g.budget_left {
                family.sample(name, &[("webhook", webhook), ("window", window)], left);
            }
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
