//! Manual triggers (`tailhook send`): one event made from the user's JSON,
//! sent the way the delivery task sends a batch — same body format, headers,
//! rate limits (charged to the same persisted budget) and retries — but
//! within a bounded time, because a person is waiting for the answer.
//!
//! The data is a JSON object whose members become the event's `fields`
//! (e.g. `{"source.ip": "203.0.113.7"}`); the event's rule is `manual`, its
//! severity `info` and its message the data as compact JSON, so a workflow
//! can be tried with what a real match would carry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{human, Progress, Settled, Webhook};
use crate::event::{Event, Fields, LogOrigin};
use crate::rules::Severity;

/// The rule id of manual events.
const MANUAL_RULE: &str = "manual";

/// What a delivered manual trigger got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    pub status: u16,
    /// Requests made, retries included.
    pub attempts: u32,
}

/// The event fields in `--data`: a JSON object, else an error saying what
/// is wrong with the text.
pub fn manual_fields(text: &str) -> Result<Fields, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    match value {
        serde_json::Value::Object(members) => {
            Ok(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
        }
        other => Err(format!(
            "must be a JSON object of event fields (e.g. {{\"source.ip\": \"203.0.113.7\"}}), not {}",
            match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )),
    }
}

impl Webhook {
    /// Sends one manual event; gives up rather than take longer than
    /// `timeout` (waiting for budget included). `notes` hears what it waits for.
    pub async fn send_manual(
        &self,
        fields: Fields,
        timeout: Duration,
        notes: &mut (dyn FnMut(String) + Send),
    ) -> Result<Sent, String> {
        let message = serde_json::to_string(&fields).expect("fields serialize");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let file = "tailhook send";
        // The id hashes the send's time where a line's would hash its offset.
        let identity = LogOrigin {
            file: file.into(),
            offset: nanos,
            cursor: None,
        };
        let now = jiff::Timestamp::now();
        let event = Event {
            id: Event::id_for(&identity, None, MANUAL_RULE, &message),
            rule: MANUAL_RULE.into(),
            severity: Severity::Info,
            time: crate::event::rfc3339(now),
            ingested: crate::event::rfc3339_millis(now),
            host: self.format.host().to_string(),
            log: LogOrigin {
                file: file.into(),
                offset: 0,
                cursor: None,
            },
            message,
            fields,
            count: None,
            truncated: false,
        };
        let body = bytes::Bytes::from(
            self.format
                .encode([self.format.encode_event(&event).as_slice()]),
        );
        if body.len() > self.config.max_body_bytes {
            return Err(format!(
                "the body would be {} bytes, above max_body_bytes = {}; nothing sent",
                body.len(),
                self.config.max_body_bytes
            ));
        }
        let windows = self.windows();
        let mut attempts = 0;
        let mut tell = |progress: Progress| match progress {
            Progress::WaitingForBudget(wait) => {
                notes(format!(
                    "waiting {} for rate-limit budget ({windows})",
                    human(wait)
                ));
            }
            Progress::Retrying { reason, delay, .. } => {
                attempts += 1;
                notes(format!(
                    "attempt {attempts} failed: {reason}; retrying in {}",
                    human(delay)
                ));
            }
        };
        let deadline = Instant::now() + timeout;
        match self
            .send_with_retries(&body, Some(deadline), None, &mut tell)
            .await
        {
            Settled::Delivered { status } => Ok(Sent {
                status,
                attempts: attempts + 1,
            }),
            Settled::Rejected { status, reason } => Err(format!(
                "the webhook rejected the event with HTTP {status} ({reason}); not retried"
            )),
            Settled::GaveUp(why) => Err(format!("not sent within {}: {why}", human(timeout))),
            Settled::Fenced => unreachable!("a manual send holds no lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_must_be_a_json_object() {
        let fields = manual_fields(r#"{"source.ip": "203.0.113.7", "n": 1}"#).unwrap();
        assert_eq!(fields["n"], 1);
        let err = manual_fields(r#"{"source.ip": }"#).unwrap_err();
        assert!(
            err.contains("not valid JSON") && err.contains("column"),
            "{err}"
        );
        let err = manual_fields("[1]").unwrap_err();
        assert!(err.contains("not an array"), "{err}");
    }
}
