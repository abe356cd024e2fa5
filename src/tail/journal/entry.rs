//! One `journalctl --output=json` entry → the syslog-style line the rules
//! read, plus what its events carry from the journal.
//!
//! The line is what `journalctl -o short-iso-precise` prints, with the time
//! in UTC: `2026-11-22T10:00:01.123456Z web1 sshd[811]: Failed …`, so
//! rules written for auth.log (`{syslog}sshd\[…`) match journal entries
//! unchanged. Like journalctl, the identifier is `SYSLOG_IDENTIFIER` (else
//! `_COMM`) and the pid the trusted `_PID` (else `SYSLOG_PID`).
//!
//! journalctl writes a field as a JSON array of bytes when its value is not
//! valid UTF-8 or holds control characters, and as an array of values when
//! the field occurs more than once. Bytes are decoded lossily (the event says
//! so in `journald.message_lossy`); of repeated fields the first is taken.
//! Line breaks inside a message become spaces: one entry is one line, and
//! text after a break cannot pose as a line of its own.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::event::{EventView, Fields, LogOrigin};

/// What events from a journal entry carry besides the line.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalMeta {
    /// The entry's `__CURSOR`: its identity in the journal, where a restart
    /// resumes, and part of its events' ids.
    pub cursor: String,
    /// The entry's sequence number, the events' `log.offset` (0 when unknown).
    pub seqnum: u64,
    /// `__REALTIME_TIMESTAMP` as RFC 3339 (UTC, microseconds): the events' `time`.
    pub time: String,
    /// Journal fields under Elastic Common Schema names, for every event of
    /// the entry: `host.hostname`, `process.pid`, `systemd.unit`,
    /// `log.syslog.appname`, and `journald.message_lossy` when set.
    pub fields: Fields,
}

impl JournalMeta {
    /// The `log` member of this entry's events.
    pub fn origin(&self) -> LogOrigin {
        LogOrigin {
            file: super::JOURNAL_ORIGIN.to_string(),
            offset: self.seqnum,
            cursor: Some(self.cursor.clone()),
        }
    }

    /// Gives an event of this entry the journal's time and fields. A field a
    /// rule extracted keeps the rule's value.
    pub fn annotate<'a>(&'a self, event: &mut EventView<'a>) {
        event.time = &self.time;
        let fields = event.fields.to_mut();
        for (name, value) in &self.fields {
            fields.entry(name.clone()).or_insert_with(|| value.clone());
        }
    }
}

/// A journal entry as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub line: String,
    /// The line was cut to `max_line_bytes`: how many bytes it had.
    pub cut_from: Option<u64>,
    pub meta: JournalMeta,
}

/// Why a line of journalctl output is not an entry the rules can read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("has no __CURSOR field (is it `journalctl --output=json` output?)")]
    NoCursor,
    /// Entries without a message (some kernel and audit records) have nothing
    /// for a rule to match: skipped, but their cursor still counts as read.
    #[error("has no MESSAGE field")]
    NoMessage { cursor: String },
}

impl EntryError {
    /// The cursor of an entry that was read but is not for the rules.
    pub fn cursor(&self) -> Option<&str> {
        match self {
            EntryError::NoMessage { cursor } => Some(cursor),
            _ => None,
        }
    }
}

/// The last microsecond of 9999-12-31 UTC, since the Unix epoch.
const LAST_RFC3339_MICROS: u64 = 253_402_300_800_000_000 - 1;

/// Parses one line of `journalctl --output=json`; the line handed to the
/// rules is cut to `max_line_bytes`.
pub fn parse_entry(json: &[u8], max_line_bytes: usize) -> Result<JournalEntry, EntryError> {
    let object: Map<String, Value> =
        serde_json::from_slice(json).map_err(|e| EntryError::NotJson(e.to_string()))?;
    let text = |name: &str| object.get(name).and_then(field_text);
    let cursor = text("__CURSOR")
        .ok_or(EntryError::NoCursor)?
        .text
        .into_owned();
    let Some(message) = text("MESSAGE") else {
        return Err(EntryError::NoMessage { cursor });
    };
    let time = text("__REALTIME_TIMESTAMP")
        .and_then(|t| t.text.parse::<u64>().ok())
        // RFC 3339 ends with year 9999; a later time is as unusable as none.
        .filter(|micros| *micros <= LAST_RFC3339_MICROS)
        .map(|micros| SystemTime::UNIX_EPOCH + Duration::from_micros(micros))
        .unwrap_or_else(SystemTime::now);
    let time = humantime::format_rfc3339_micros(time).to_string();
    let host = text("_HOSTNAME").map(|t| t.text);
    let identifier = text("SYSLOG_IDENTIFIER")
        .or_else(|| text("_COMM"))
        .map(|t| t.text);
    let pid = text("_PID").or_else(|| text("SYSLOG_PID")).map(|t| t.text);

    let mut line = time.clone();
    for part in [&host, &identifier].into_iter().flatten() {
        line.push(' ');
        line.push_str(part);
    }
    if identifier.is_some() {
        if let Some(pid) = &pid {
            line.push_str(&format!("[{pid}]"));
        }
        line.push(':');
    }
    line.push(' ');
    line.push_str(&message.text);
    // Every part, not only MESSAGE: a host or identifier written with a
    // newline must not split the entry into two lines for the rules.
    if line.contains(['\n', '\r']) {
        line = line.replace(['\n', '\r'], " ");
    }
    let cut_from = cut_to(&mut line, max_line_bytes);

    let mut fields = Fields::new();
    if let Some(host) = host {
        fields.insert("host.hostname".into(), Value::from(host.into_owned()));
    }
    if let Some(pid) = text("_PID").and_then(|t| t.text.parse::<i64>().ok()) {
        fields.insert("process.pid".into(), Value::from(pid));
    }
    if let Some(unit) = text("_SYSTEMD_UNIT") {
        fields.insert("systemd.unit".into(), Value::from(unit.text.into_owned()));
    }
    if let Some(identifier) = identifier {
        fields.insert(
            "log.syslog.appname".into(),
            Value::from(identifier.into_owned()),
        );
    }
    if message.lossy {
        fields.insert("journald.message_lossy".into(), Value::from(true));
    }
    // journalctl writes __SEQNUM only since systemd 254; the cursor has
    // always carried it.
    let seqnum = text("__SEQNUM")
        .and_then(|t| t.text.parse().ok())
        .or_else(|| cursor_number(&cursor, "i"))
        .unwrap_or(0);
    Ok(JournalEntry {
        line,
        cut_from,
        meta: JournalMeta {
            cursor,
            seqnum,
            time,
            fields,
        },
    })
}

/// Entries recorded with `journalctl --output=json > FILE`, for `check` and
/// `test-rules`.
#[derive(Debug, Default)]
pub struct Recorded {
    /// With the 1-based line number each came from.
    pub entries: Vec<(u64, JournalEntry)>,
    /// Entries without MESSAGE, which the agent skips too.
    pub without_message: u64,
}

/// Reads a file of recorded entries; a line that is not an entry is an error
/// naming the file and line.
pub fn read_recorded(path: &std::path::Path, max_line_bytes: usize) -> anyhow::Result<Recorded> {
    use anyhow::Context;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut recorded = Recorded::default();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_entry(line, max_line_bytes) {
            Ok(entry) => recorded.entries.push((number, entry)),
            Err(EntryError::NoMessage { .. }) => recorded.without_message += 1,
            Err(e) => anyhow::bail!(
                "{}:{number}: not a journal entry: {e}; record entries with `journalctl --output=json`",
                path.display()
            ),
        }
    }
    Ok(recorded)
}

/// A number a cursor carries in hex (`i=` sequence number, `t=` realtime
/// microseconds, `m=` monotonic).
fn cursor_number(cursor: &str, key: &str) -> Option<u64> {
    cursor
        .split(';')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
}

/// The time of the entry a cursor points at (RFC 3339, UTC), from its `t=`.
pub fn cursor_time(cursor: &str) -> Option<String> {
    let micros = cursor_number(cursor, "t")?;
    let time = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
    Some(humantime::format_rfc3339_micros(time).to_string())
}

struct FieldText<'a> {
    text: Cow<'a, str>,
    /// Bytes that were not valid UTF-8 were replaced.
    lossy: bool,
}

/// A field's value as text: a string, a byte array decoded lossily, or the
/// first of repeated values. `null` (a value journalctl left out as too
/// large) and anything else is no value.
fn field_text(value: &Value) -> Option<FieldText<'_>> {
    match value {
        Value::String(text) => Some(FieldText {
            text: Cow::Borrowed(text),
            lossy: false,
        }),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes = items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()?;
            Some(match String::from_utf8(bytes) {
                Ok(text) => FieldText {
                    text: Cow::Owned(text),
                    lossy: false,
                },
                Err(e) => FieldText {
                    text: Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    lossy: true,
                },
            })
        }
        Value::Array(items) => items.first().and_then(field_text),
        _ => None,
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary; the length
/// it had when it was cut.
fn cut_to(text: &mut String, max: usize) -> Option<u64> {
    let length = text.len();
    if length <= max {
        return None;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    Some(length as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(value: Value) -> Result<JournalEntry, EntryError> {
        parse_entry(value.to_string().as_bytes(), 64 * 1024)
    }

    fn sshd(message: Value) -> Value {
        json!({
            "__CURSOR": "s=1;i=2a;b=3;m=4;t=5;x=6",
            "__REALTIME_TIMESTAMP": "1795341601123456",
            "__SEQNUM": "42",
            "_HOSTNAME": "web1",
            "_PID": "811",
            "SYSLOG_PID": "999",
            "_COMM": "sshd-session",
            "SYSLOG_IDENTIFIER": "sshd",
            "_SYSTEMD_UNIT": "ssh.service",
            "MESSAGE": message,
        })
    }

    #[test]
    fn an_entry_becomes_a_syslog_line_with_the_journal_fields() {
        let entry = entry(sshd(json!(
            "Failed password for root from 203.0.113.7 port 52144 ssh2"
        )))
        .unwrap();
        assert_eq!(
            entry.line,
            "2026-11-22T10:00:01.123456Z web1 sshd[811]: Failed password for root from 203.0.113.7 port 52144 ssh2"
        );
        assert_eq!(entry.cut_from, None);
        assert_eq!(entry.meta.cursor, "s=1;i=2a;b=3;m=4;t=5;x=6");
        assert_eq!(entry.meta.seqnum, 42);
        assert_eq!(entry.meta.time, "2026-11-22T10:00:01.123456Z");
        assert_eq!(
            serde_json::to_value(&entry.meta.fields).unwrap(),
            json!({"host.hostname": "web1", "process.pid": 811, "systemd.unit": "ssh.service", "log.syslog.appname": "sshd"})
        );
    }

    #[test]
    fn byte_array_messages_are_decoded_and_lossy_ones_flagged() {
        let tab = entry(sshd(json!(b"a\tb\nc".to_vec()))).unwrap();
        assert!(tab.line.ends_with("sshd[811]: a\tb c"), "{}", tab.line);
        assert!(!tab.meta.fields.contains_key("journald.message_lossy"));

        let latin1 = entry(sshd(json!([b'u', b's', b'e', b'r', b' ', 0xe9, b'!']))).unwrap();
        assert!(latin1.line.ends_with(": user \u{fffd}!"), "{}", latin1.line);
        assert_eq!(latin1.meta.fields["journald.message_lossy"], true);
    }

    #[test]
    fn missing_parts_fall_back_as_journalctl_does() {
        let mut value = sshd(json!("hello"));
        let object = value.as_object_mut().unwrap();
        for field in ["SYSLOG_IDENTIFIER", "_PID", "_HOSTNAME", "__SEQNUM"] {
            object.remove(field);
        }
        let entry = entry(value).unwrap();
        assert_eq!(entry.meta.seqnum, 0x2a, "from the cursor's i=");
        assert_eq!(
            cursor_time("s=1;i=2a;b=3;m=4;t=660da8a60ca40;x=6").as_deref(),
            Some("2026-11-22T10:00:01.000000Z")
        );
        assert_eq!(cursor_time("garbage"), None);
        assert_eq!(
            entry.line,
            "2026-11-22T10:00:01.123456Z sshd-session[999]: hello"
        );
        assert!(!entry.meta.fields.contains_key("process.pid"));
        // Repeated fields: the first value is taken.
        let repeated = sshd(json!(["first", "second"]));
        assert!(super::parse_entry(repeated.to_string().as_bytes(), 1000)
            .unwrap()
            .line
            .ends_with(": first"));
    }

    #[test]
    fn entries_without_cursor_or_message_and_non_json_are_told_apart() {
        let mut value = sshd(json!("x"));
        value.as_object_mut().unwrap().remove("MESSAGE");
        let err = entry(value).unwrap_err();
        assert_eq!(err.cursor(), Some("s=1;i=2a;b=3;m=4;t=5;x=6"));
        value = sshd(json!("x"));
        value.as_object_mut().unwrap().remove("__CURSOR");
        assert_eq!(entry(value).unwrap_err(), EntryError::NoCursor);
        assert!(matches!(
            parse_entry(b"-- No entries --", 100),
            Err(EntryError::NotJson(_))
        ));
    }

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        let entry = parse_entry(sshd(json!("ééééé")).to_string().as_bytes(), 47).unwrap();
        assert!(entry.cut_from.is_some());
        assert!(entry.line.len() <= 47);
        assert!(entry.line.ends_with("sshd[811]: é"), "{}", entry.line);
    }

    #[test]
    fn a_timestamp_past_year_9999_does_not_panic() {
        let mut value = sshd(json!("x"));
        value["__REALTIME_TIMESTAMP"] = json!("18446744073709551615");
        entry(value).unwrap();
    }

    /// A journal field value as journalctl may write it: text, a byte
    /// array, repeated values, null, or something no journal writes.
    fn field_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<String>().prop_map(Value::from),
            any::<u64>().prop_map(|n| Value::from(n.to_string())),
            "[0-9]{0,25}".prop_map(Value::from),
            proptest::collection::vec(0u64..300, 0..40).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Value::from)
        })
    }

    proptest::proptest! {
        /// Any bytes: an entry or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_entry(&bytes, 64);
        }

        /// Any object with the fields the parser reads, any value in each:
        /// the line is one line, within `max_line_bytes`, and carries the
        /// cursor it was given.
        #[test]
        fn arbitrary_entries_give_one_bounded_line(
            values in proptest::collection::vec(proptest::option::of(field_value()), 10),
            max_line_bytes in 1usize..200,
        ) {
            let names = [
                "__CURSOR", "MESSAGE", "__REALTIME_TIMESTAMP", "__SEQNUM", "_HOSTNAME",
                "_PID", "SYSLOG_PID", "_COMM", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT",
            ];
            let object: serde_json::Map<String, Value> = names
                .iter()
                .zip(values)
                .filter_map(|(name, value)| Some((name.to_string(), value?)))
                .collect();
            let json = Value::Object(object.clone()).to_string();
            match parse_entry(json.as_bytes(), max_line_bytes) {
                Ok(entry) => {
                    proptest::prop_assert!(entry.line.len() <= max_line_bytes);
                    proptest::prop_assert!(!entry.line.contains('\n') && !entry.line.contains('\r'));
                    proptest::prop_assert!(object.contains_key("__CURSOR") && object.contains_key("MESSAGE"));
                }
                Err(EntryError::NotJson(e)) => proptest::prop_assert!(false, "valid JSON refused: {e}"),
                Err(_) => {}
            }
        }
    }
}
