//! The JSON event a matched line becomes, and the envelope batches travel in.
//!
//! These types cross every seam after the rules stage (queue, batch, send), so
//! they hold plain data only. Their serialized form is the product's payload
//! (DESIGN §5):
//!
//! ```json
//! {"agent": "tailhook", "host": "web1", "events": [ {"id": "…", "rule": "…", …} ]}
//! ```

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use crate::rules::Severity;

/// Field values keep their JSON type (`source.port` may be an integer).
pub type Fields = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Stable for the same line of the same file read by the same rule, so a
    /// receiver can drop a re-sent duplicate.
    pub id: String,
    pub rule: String,
    pub severity: Severity,
    /// When the agent read the line (RFC 3339, UTC).
    pub time: String,
    pub log: LogOrigin,
    /// The raw line (lossily decoded, possibly cut at `max_line_bytes`).
    pub message: String,
    pub fields: Fields,
    /// How many matching lines this event stands for, for rules with a
    /// `threshold` or `suppress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Present when the line or the message was cut to fit a limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogOrigin {
    pub file: String,
    /// Byte offset of the line's first byte in the file.
    pub offset: u64,
}

impl Event {
    pub fn id_for(file: &str, offset: u64, rule: &str, line: &str) -> String {
        let mut hasher = Xxh3::new();
        for part in [
            file.as_bytes(),
            &offset.to_le_bytes(),
            rule.as_bytes(),
            line.as_bytes(),
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        format!("{:032x}", hasher.digest128())
    }
}

pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The batch envelope. Its encoded size is computed without building it, so the
/// batcher can decide what fits before serializing anything twice.
pub struct Envelope<'a> {
    pub host: &'a str,
}

impl Envelope<'_> {
    fn prefix(&self) -> String {
        let host = serde_json::to_string(self.host).expect("a string always serializes");
        format!(r#"{{"agent":"tailhook","host":{host},"events":["#)
    }

    const SUFFIX: &'static [u8] = b"]}";

    /// Bytes of an envelope holding no events.
    pub fn overhead(&self) -> usize {
        self.prefix().len() + Self::SUFFIX.len()
    }

    /// The body for already-encoded events; its length is exactly
    /// `overhead() + sum(len) + (n - 1)` separators.
    pub fn encode<'e>(&self, events: impl IntoIterator<Item = &'e [u8]>) -> Vec<u8> {
        let mut body = self.prefix().into_bytes();
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(event);
        }
        body.extend_from_slice(Self::SUFFIX);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: Event::id_for("/var/log/auth.log", 1234, "sshd.auth_failed", "line"),
            rule: "sshd.auth_failed".into(),
            severity: Severity::Medium,
            time: "2026-11-22T10:00:01Z".into(),
            log: LogOrigin {
                file: "/var/log/auth.log".into(),
                offset: 1234,
            },
            message: "a \"quoted\" line\twith tab".into(),
            fields: Fields::from([("source.port".to_string(), serde_json::json!(52144))]),
            count: None,
            truncated: false,
        }
    }

    #[test]
    fn id_is_stable_and_distinguishes_origin() {
        let a = Event::id_for("/f", 1, "r", "x");
        assert_eq!(a, Event::id_for("/f", 1, "r", "x"));
        assert_ne!(a, Event::id_for("/f", 2, "r", "x"));
        assert_ne!(a, Event::id_for("/g", 1, "r", "x"));
        assert_ne!(a, Event::id_for("/f", 1, "r2", "x"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn envelope_matches_the_documented_shape_and_predicted_size() {
        let encoded: Vec<Vec<u8>> = (0..3)
            .map(|_| serde_json::to_vec(&event()).unwrap())
            .collect();
        let envelope = Envelope { host: "web\"1" };
        let body = envelope.encode(encoded.iter().map(Vec::as_slice));
        let predicted = envelope.overhead() + encoded.iter().map(Vec::len).sum::<usize>() + 2;
        assert_eq!(body.len(), predicted);

        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["agent"], "tailhook");
        assert_eq!(value["host"], "web\"1");
        let first = &value["events"][0];
        assert_eq!(first["severity"], "medium");
        assert_eq!(first["log"]["offset"], 1234);
        assert_eq!(first["fields"]["source.port"], 52144);
        assert_eq!(first["message"], "a \"quoted\" line\twith tab");
        assert!(first.get("truncated").is_none());
    }
}
