//! The JSON event a matched line becomes.
//!
//! These types cross every seam after the rules stage (queue, batch, send), so
//! they hold plain data only. An event's JSON form is what a webhook receives
//! inside the envelope (DESIGN §5); `deliver::body` builds the envelope.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::rules::Severity;

/// Field values keep their JSON type (`source.port` may be an integer).
pub type Fields = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable for the same line of the same file read by the same rule, so a
    /// receiver can drop a re-sent duplicate.
    pub id: String,
    pub rule: String,
    pub severity: Severity,
    /// When the line says it happened (RFC 3339, UTC; a journal entry's own
    /// time), or when it was read if it states no time `rules::linetime` reads.
    pub time: String,
    /// When the agent read the line (RFC 3339, UTC, milliseconds). Empty only
    /// in events queued by a version without it, and then left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ingested: String,
    /// The agent that read the line (`agent.host`): a fleet's body carries
    /// events of many hosts. Empty only as `ingested`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub log: LogOrigin,
    /// The raw line (lossily decoded, possibly cut at `max_line_bytes`).
    pub message: String,
    pub fields: Fields,
    /// How many matching lines this event stands for, for rules with a
    /// `threshold` or `suppress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Present when the line or the message was cut to fit a limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogOrigin {
    /// The file's path; `journald` for a journal entry.
    pub file: String,
    /// Byte offset of the line's first byte in the file; a journal entry's
    /// sequence number.
    pub offset: u64,
    /// A journal entry's cursor: its identity in the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Which file a line was read from, and which content of it: a file
/// truncated in place (copytruncate) starts a new generation, so an
/// identical line at the same offset is a new line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFile {
    pub dev: u64,
    pub ino: u64,
    pub generation: u64,
}

impl Event {
    /// Hashes where the line came from, the rule and the line. A file line
    /// is identified by its file (`source`: inode and generation, which a
    /// rename does not change) and offset; a journal entry by its cursor;
    /// anything else by `log.file` and offset.
    pub fn id_for(log: &LogOrigin, source: Option<SourceFile>, rule: &str, line: &str) -> String {
        let mut hasher = Xxh3::new();
        let cursor = log.cursor.as_deref().map(str::as_bytes);
        let mut identity = [0u8; 24];
        let file: &[u8] = match source {
            Some(file) => {
                for (bytes, n) in
                    identity
                        .chunks_exact_mut(8)
                        .zip([file.dev, file.ino, file.generation])
                {
                    bytes.copy_from_slice(&n.to_le_bytes());
                }
                &identity
            }
            None => log.file.as_bytes(),
        };
        for part in [
            file,
            &log.offset.to_le_bytes(),
            rule.as_bytes(),
            line.as_bytes(),
        ]
        .into_iter()
        .chain(cursor)
        {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        lower_hex(hasher.digest128())
    }
}

/// `n` as 32 lowercase hex digits, as `format!("{n:032x}")` writes it.
fn lower_hex(n: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let hex: Vec<u8> = (0..32)
        .rev()
        .map(|nibble| DIGITS[(n >> (nibble * 4)) as usize & 0xf])
        .collect();
    String::from_utf8(hex).expect("hex digits are ASCII")
}

#[cfg(test)]
impl Event {
    /// A plain event for tests of the stages after the rules.
    pub fn sample(id: &str, message: &str) -> Event {
        Event {
            id: id.into(),
            rule: "r".into(),
            severity: Severity::Low,
            time: "2026-11-22T10:00:01Z".into(),
            ingested: "2026-11-22T10:00:01.020Z".into(),
            host: "web1".into(),
            log: LogOrigin {
                file: "/f".into(),
                offset: 0,
                cursor: None,
            },
            message: message.into(),
            fields: Fields::new(),
            count: None,
            truncated: false,
        }
    }
}

pub fn rfc3339_now() -> String {
    rfc3339_seconds(SystemTime::now())
}

/// `at` in RFC 3339, UTC, whole seconds.
pub fn rfc3339_seconds(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An event's `time`: RFC 3339 in UTC, with the fraction of a second the
/// line stated, if any.
pub fn rfc3339(at: jiff::Timestamp) -> String {
    at.to_string()
}

/// An event's `ingested`: RFC 3339 in UTC with milliseconds.
pub fn rfc3339_millis(at: jiff::Timestamp) -> String {
    format!("{at:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(file: &str, offset: u64) -> LogOrigin {
        LogOrigin {
            file: file.into(),
            offset,
            cursor: None,
        }
    }

    fn event() -> Event {
        let log = origin("/var/log/auth.log", 1234);
        Event {
            id: Event::id_for(&log, None, "sshd.auth_failed", "line"),
            rule: "sshd.auth_failed".into(),
            severity: Severity::Medium,
            time: "2026-11-22T10:00:01Z".into(),
            ingested: "2026-11-22T10:00:01.020Z".into(),
            host: "web1".into(),
            log,
            message: "a \"quoted\" line\twith tab".into(),
            fields: Fields::from([("source.port".to_string(), serde_json::json!(52144))]),
            count: None,
            truncated: false,
        }
    }

    proptest::proptest! {
        #[test]
        fn ids_are_hex_as_format_writes_it(n in proptest::prelude::any::<u128>()) {
            proptest::prop_assert_eq!(lower_hex(n), format!("{n:032x}"));
        }
    }

    #[test]
    fn times_are_utc_with_the_stated_fraction_and_ingested_in_millis() {
        let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(
            rfc3339(at("2026-11-22T11:00:01+01:00")),
            "2026-11-22T10:00:01Z"
        );
        assert_eq!(
            rfc3339(at("2026-11-22T10:00:01.003Z")),
            "2026-11-22T10:00:01.003Z"
        );
        assert_eq!(
            rfc3339_millis(at("2026-11-22T10:00:01Z")),
            "2026-11-22T10:00:01.000Z"
        );
        assert_eq!(
            rfc3339_millis(at("2026-11-22T10:00:01.0209Z")),
            "2026-11-22T10:00:01.020Z"
        );
    }

    #[test]
    fn events_queued_before_ingested_and_host_still_read() {
        let old = r#"{"id":"1","rule":"r","severity":"low","time":"2026-11-22T10:00:01Z","log":{"file":"/f","offset":0},"message":"m","fields":{}}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        assert_eq!((event.ingested.as_str(), event.host.as_str()), ("", ""));
        let json = serde_json::to_value(&event).unwrap();
        assert!(json.get("ingested").is_none() && json.get("host").is_none());
    }

    #[test]
    fn id_is_stable_and_distinguishes_origin() {
        let a = Event::id_for(&origin("/f", 1), None, "r", "x");
        assert_eq!(a, Event::id_for(&origin("/f", 1), None, "r", "x"));
        assert_ne!(a, Event::id_for(&origin("/f", 2), None, "r", "x"));
        assert_ne!(a, Event::id_for(&origin("/g", 1), None, "r", "x"));
        assert_ne!(a, Event::id_for(&origin("/f", 1), None, "r2", "x"));
        assert_eq!(a.len(), 32);
        // A journal entry is told apart by its cursor.
        let entry = |cursor: &str| LogOrigin {
            cursor: Some(cursor.into()),
            ..origin("journald", 7)
        };
        let b = Event::id_for(&entry("s=1;i=7"), None, "r", "x");
        assert_eq!(b, Event::id_for(&entry("s=1;i=7"), None, "r", "x"));
        assert_ne!(b, Event::id_for(&entry("s=2;i=7"), None, "r", "x"));
        assert_ne!(b, Event::id_for(&origin("journald", 7), None, "r", "x"));
        // A file line: by inode and generation, whatever its path now.
        let file = |generation| {
            Some(SourceFile {
                dev: 1,
                ino: 2,
                generation,
            })
        };
        let c = Event::id_for(&origin("/f", 1), file(0), "r", "x");
        assert_eq!(c, Event::id_for(&origin("/f.1", 1), file(0), "r", "x"));
        assert_ne!(c, Event::id_for(&origin("/f", 1), file(1), "r", "x"));
        assert_ne!(c, Event::id_for(&origin("/f", 1), None, "r", "x"));
    }

    #[test]
    fn optional_members_are_left_out_until_set() {
        let mut event = event();
        let plain = serde_json::to_value(&event).unwrap();
        assert!(plain.get("count").is_none() && plain.get("truncated").is_none());
        assert_eq!(plain["log"]["offset"], 1234);
        assert_eq!(plain["message"], "a \"quoted\" line\twith tab");
        assert_eq!(plain["ingested"], "2026-11-22T10:00:01.020Z");
        assert_eq!(plain["host"], "web1");
        event.count = Some(5);
        event.truncated = true;
        let flagged = serde_json::to_value(&event).unwrap();
        assert_eq!(flagged["count"], 5);
        assert_eq!(flagged["truncated"], true);
    }
}
