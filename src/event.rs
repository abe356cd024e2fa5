//! The JSON event a matched line becomes.
//!
//! These types cross every seam after the rules stage (queue, batch, send), so
//! they hold plain data only. An event's JSON form is what a webhook receives
//! inside the envelope (DESIGN §5); `deliver::body` builds the envelope.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::rules::Severity;

/// Field values keep their JSON type (`source.port` may be an integer).
pub type Fields = BTreeMap<std::sync::Arc<str>, serde_json::Value>;

/// A field's value as a rule's match converted it, its text borrowed from
/// the line where it can be: the rules stage encodes an event's fields from
/// these, without a map of owned values for each event.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl FieldValue<'_> {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Text(text) => serde_json::Value::from(text.as_ref()),
            FieldValue::Int(n) => serde_json::Value::from(*n),
            FieldValue::Float(x) => serde_json::Value::from(*x),
            FieldValue::Bool(b) => serde_json::Value::from(*b),
        }
    }
}

/// Fields a match converted, by name, in name order (as a [`Fields`] map
/// orders them).
pub type MatchedFields<'a> = Vec<(&'a Arc<str>, FieldValue<'a>)>;

/// `fields` as a map.
pub fn fields_map(fields: &[(&Arc<str>, FieldValue)]) -> Fields {
    fields
        .iter()
        .map(|(name, value)| (Arc::clone(name), value.to_json()))
        .collect()
}

/// An event's fields as it is encoded: an [`Event`]'s map, or what a match
/// converted.
#[derive(Debug)]
pub enum ViewFields<'a> {
    Map(Cow<'a, Fields>),
    Matched(MatchedFields<'a>),
}

impl ViewFields<'_> {
    pub fn to_map(&self) -> Fields {
        match self {
            ViewFields::Map(map) => map.clone().into_owned(),
            ViewFields::Matched(fields) => fields_map(fields),
        }
    }

    /// The fields as a map, to change.
    pub fn to_mut(&mut self) -> &mut Fields {
        if let ViewFields::Matched(fields) = self {
            *self = ViewFields::Map(Cow::Owned(fields_map(fields)));
        }
        match self {
            ViewFields::Map(map) => map.to_mut(),
            ViewFields::Matched(_) => unreachable!("made a map above"),
        }
    }
}

impl Serialize for ViewFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            ViewFields::Map(map) => map.serialize(serializer),
            ViewFields::Matched(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(&**name, &value.to_json())?;
                }
                map.end()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    #[serde(default)]
    pub ingested: String,
    /// The agent that read the line (`agent.host`): a fleet's body carries
    /// events of many hosts. Empty only as `ingested`.
    #[serde(default)]
    pub host: String,
    pub log: LogOrigin,
    /// The raw line (lossily decoded, possibly cut at `max_line_bytes`).
    pub message: String,
    pub fields: Fields,
    /// How many matching lines this event stands for, for rules with a
    /// `threshold` or `suppress`.
    #[serde(default)]
    pub count: Option<u64>,
    /// Present when the line or the message was cut to fit a limit.
    #[serde(default)]
    pub truncated: bool,
}

impl Event {
    pub fn view(&self) -> EventView<'_> {
        EventView {
            id: Cow::Borrowed(&self.id),
            rule: &self.rule,
            severity: self.severity,
            time: &self.time,
            ingested: &self.ingested,
            host: &self.host,
            log: &self.log,
            message: &self.message,
            fields: ViewFields::Map(Cow::Borrowed(&self.fields)),
            count: self.count,
            truncated: self.truncated,
        }
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

/// An event as it is encoded, borrowed from what makes it (the line, the
/// rule, the fields a match extracted): the rules stage writes an event's
/// JSON from it without building an [`Event`]. Its members are the JSON's,
/// in order; an [`Event`] serializes through it.
#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    pub id: Cow<'a, str>,
    pub rule: &'a str,
    pub severity: Severity,
    pub time: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub ingested: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    pub host: &'a str,
    pub log: &'a LogOrigin,
    pub message: &'a str,
    pub fields: ViewFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn is_empty(text: &&str) -> bool {
    text.is_empty()
}

impl EventView<'_> {
    pub fn to_event(&self) -> Event {
        Event {
            id: self.id.to_string(),
            rule: self.rule.to_string(),
            severity: self.severity,
            time: self.time.to_string(),
            ingested: self.ingested.to_string(),
            host: self.host.to_string(),
            log: self.log.clone(),
            message: self.message.to_string(),
            fields: self.fields.to_map(),
            count: self.count,
            truncated: self.truncated,
        }
    }

    /// This event's JSON, in a buffer of its own.
    ///
    /// Written by hand, byte for byte what serde_json writes from the
    /// derived `Serialize` (a property test holds the two equal): serde
    /// escapes a string a byte at a time, and that was the rules stage's
    /// largest cost after the regexes themselves.
    pub fn json(&self) -> EventJson {
        let mut out = Vec::new();
        self.write_json(&mut out);
        EventJson(out.into())
    }

    /// [`EventView::json`], written into `blocks`: the rules stage's way,
    /// which allocates once per block of events, not once per event.
    pub fn encode(&self, blocks: &mut JsonBlocks) -> EventJson {
        blocks.scratch.clear();
        self.write_json(&mut blocks.scratch);
        blocks.take_scratch()
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        json_text::string(out, &self.id);
        out.extend_from_slice(b",\"rule\":");
        json_text::string(out, self.rule);
        out.extend_from_slice(b",\"severity\":");
        json_text::string(out, self.severity.as_str());
        out.extend_from_slice(b",\"time\":");
        json_text::string(out, self.time);
        if !self.ingested.is_empty() {
            out.extend_from_slice(b",\"ingested\":");
            json_text::string(out, self.ingested);
        }
        if !self.host.is_empty() {
            out.extend_from_slice(b",\"host\":");
            json_text::string(out, self.host);
        }
        out.extend_from_slice(b",\"log\":{\"file\":");
        json_text::string(out, &self.log.file);
        out.extend_from_slice(b",\"offset\":");
        json_text::number(out, self.log.offset);
        if let Some(cursor) = &self.log.cursor {
            out.extend_from_slice(b",\"cursor\":");
            json_text::string(out, cursor);
        }
        out.extend_from_slice(b"},\"message\":");
        json_text::string(out, self.message);
        out.extend_from_slice(b",\"fields\":{");
        match &self.fields {
            ViewFields::Map(map) => {
                for (i, (name, value)) in map.iter().enumerate() {
                    json_text::member(out, i, name);
                    match value {
                        serde_json::Value::String(text) => json_text::string(out, text),
                        serde_json::Value::Number(n) if n.is_u64() => {
                            json_text::number(out, n.as_u64().expect("a u64"))
                        }
                        other => json_text::value(out, other),
                    }
                }
            }
            ViewFields::Matched(fields) => {
                for (i, (name, value)) in fields.iter().enumerate() {
                    json_text::member(out, i, name);
                    match value {
                        FieldValue::Text(text) => json_text::string(out, text),
                        FieldValue::Int(n) => {
                            if *n < 0 {
                                out.push(b'-');
                            }
                            json_text::number(out, n.unsigned_abs())
                        }
                        FieldValue::Bool(b) => {
                            out.extend_from_slice(if *b { b"true" } else { b"false" })
                        }
                        float => json_text::value(out, &float.to_json()),
                    }
                }
            }
        }
        out.push(b'}');
        if let Some(count) = self.count {
            out.extend_from_slice(b",\"count\":");
            json_text::number(out, count);
        }
        if self.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        out.push(b'}');
    }
}

/// JSON text as serde_json writes it, for [`EventView::encode`].
mod json_text {
    /// Bytes tested at once for one to escape: most text has none, and the
    /// test of a whole block is branch-free (the compiler vectorizes it).
    const BLOCK: usize = 32;

    fn needs_escape(byte: u8) -> bool {
        byte < 0x20 || byte == b'"' || byte == b'\\'
    }

    /// `text` as a JSON string, escaped as serde_json escapes it: `"`, `\`
    /// and control characters, the common ones by their short forms.
    pub fn string(out: &mut Vec<u8>, text: &str) {
        let bytes = text.as_bytes();
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        // `bytes[..written]` are in `out`.
        let (mut written, mut at) = (0, 0);
        while at < bytes.len() {
            let end = (at + BLOCK).min(bytes.len());
            let block = &bytes[at..end];
            if block
                .iter()
                .fold(false, |any, &byte| any | needs_escape(byte))
            {
                for (i, &byte) in block.iter().enumerate() {
                    if needs_escape(byte) {
                        out.extend_from_slice(&bytes[written..at + i]);
                        escape(out, byte);
                        written = at + i + 1;
                    }
                }
            }
            at = end;
        }
        out.extend_from_slice(&bytes[written..]);
        out.push(b'"');
    }

    fn escape(out: &mut Vec<u8>, byte: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            _ => {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ]);
                return;
            }
        };
        out.extend_from_slice(&[b'\\', short]);
    }

    /// The `i`th member's name of an object, after a comma if not the first.
    pub fn member(out: &mut Vec<u8>, i: usize, name: &str) {
        if i > 0 {
            out.push(b',');
        }
        string(out, name);
        out.push(b':');
    }

    pub fn value(out: &mut Vec<u8>, value: &serde_json::Value) {
        serde_json::to_writer(&mut *out, value).expect("a JSON value serializes");
    }

    /// `n` in decimal, without the formatting machinery `write!` goes
    /// through for each number.
    pub fn number(out: &mut Vec<u8>, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[start..]);
    }
}

/// An event as the JSON a webhook receives in an envelope: encoded once by
/// the rules stage, then queued, sent, shown by `tap` and dead-lettered as
/// these bytes, and decoded only where its members are needed.
#[derive(Clone, PartialEq)]
pub struct EventJson(Bytes);

/// How every event's JSON starts: its id is its first member.
const ID_PREFIX: &[u8] = b"{\"id\":\"";

impl EventJson {
    pub fn of(event: &Event) -> EventJson {
        event.view().json()
    }

    /// Takes `json` as an event's without looking: only for bytes this
    /// version encoded (a row of the queue whose checksum matches).
    pub fn trusted(json: &[u8]) -> EventJson {
        EventJson(Bytes::copy_from_slice(json))
    }

    /// [`EventJson::trusted`] for `json` within `row`, sharing the row's
    /// bytes: a row read from the queue is copied once, not once per event.
    pub fn trusted_in(row: &Bytes, json: &[u8]) -> EventJson {
        EventJson(row.slice_ref(json))
    }

    /// `json` if it decodes as an [`Event`], checked without building one.
    pub fn checked(json: &[u8]) -> Result<EventJson, serde_json::Error> {
        serde_json::from_slice::<check::Shape>(json)?;
        Ok(EventJson(Bytes::copy_from_slice(json)))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, shared rather than copied.
    pub fn shared(&self) -> Bytes {
        self.0.clone()
    }

    /// The event's id, read from its JSON (its first member, as encoded; an
    /// id that needs escaping, from a hand-made event, is decoded).
    pub fn id(&self) -> Cow<'_, str> {
        let plain = self.0.strip_prefix(ID_PREFIX).and_then(|rest| {
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            (rest[end] == b'"').then(|| std::str::from_utf8(&rest[..end]).ok())?
        });
        match plain {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(self.decode().id),
        }
    }

    /// The event itself.
    pub fn decode(&self) -> Event {
        serde_json::from_slice(&self.0).expect("an event's JSON decodes as an event")
    }
}

impl std::fmt::Debug for EventJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Where the rules stage encodes its events: each event's JSON is written
/// whole into `scratch`, then copied to the end of a block that the events
/// after it share. A block lives until its last event is let go.
///
/// Why blocks: with an allocation of its own per event (here, and again for
/// each event read back from the queue), freed on another thread, an
/// event's own CPU was 1.80–2.61 µs; with blocks, 1.73–2.12 (eleven
/// alternated runs).
#[derive(Default)]
pub struct JsonBlocks {
    scratch: Vec<u8>,
    /// The free end of the current block.
    block: BytesMut,
}

/// The bytes of a block: about a row of the queue's events.
const JSON_BLOCK_BYTES: usize = 64 * 1024;

impl JsonBlocks {
    fn take_scratch(&mut self) -> EventJson {
        if self.block.capacity() < self.scratch.len() {
            self.block = BytesMut::with_capacity(JSON_BLOCK_BYTES.max(self.scratch.len()));
        }
        self.block.extend_from_slice(&self.scratch);
        EventJson(self.block.split().freeze())
    }
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

/// An event's JSON, checked without building it.
mod check {
    /// What [`EventJson::checked`] checks: an [`Event`]'s JSON, field for
    /// field (the same names, types and defaults).
    #[derive(serde::Deserialize)]
    pub struct Shape {
        #[serde(rename = "id")]
        _id: Text,
        #[serde(rename = "rule")]
        _rule: Text,
        #[serde(rename = "severity")]
        _severity: crate::rules::Severity,
        #[serde(rename = "time")]
        _time: Text,
        #[serde(rename = "ingested", default)]
        _ingested: Text,
        #[serde(rename = "host", default)]
        _host: Text,
        #[serde(rename = "log")]
        _log: StoredLog,
        #[serde(rename = "message")]
        _message: Text,
        #[serde(rename = "fields")]
        _fields: AnyObject,
        #[serde(rename = "count", default)]
        _count: Option<u64>,
        #[serde(rename = "truncated", default)]
        _truncated: bool,
    }

    /// [`crate::event::LogOrigin`], checked as [`Shape`] is.
    #[derive(serde::Deserialize)]
    struct StoredLog {
        #[serde(rename = "file")]
        _file: Text,
        #[serde(rename = "offset")]
        _offset: u64,
        #[serde(rename = "cursor", default)]
        _cursor: Option<Text>,
    }

    /// A JSON string, checked and not kept.
    #[derive(Default)]
    struct Text;

    impl<'de> serde::Deserialize<'de> for Text {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = Text;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Text, E> {
                    Ok(Text)
                }
            }
            deserializer.deserialize_str(Visitor)
        }
    }

    /// A JSON object of any values (as [`crate::event::Fields`]), checked and not kept.
    struct AnyObject;

    impl<'de> serde::Deserialize<'de> for AnyObject {
        fn deserialize<D: serde::Deserializer<'de>>(
            deserializer: D,
        ) -> Result<AnyObject, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = AnyObject;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut map: M,
                ) -> Result<AnyObject, M::Error> {
                    while map.next_entry::<Text, serde::de::IgnoredAny>()?.is_some() {}
                    Ok(AnyObject)
                }
            }
            deserializer.deserialize_map(Visitor)
        }
    }
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
    use proptest::strategy::Strategy as _;

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
            fields: Fields::from([("source.port".into(), serde_json::json!(52144))]),
            count: None,
            truncated: false,
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e6f64..1e6).prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
            Just(serde_json::json!("low")),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("\\PC{0,4}", inner, 0..3)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The check of an earlier version's queue row or a fleet entry: whatever one
        /// member of a stored event is replaced by, or if it is left out,
        /// the check and decoding the event accept or refuse it alike.
        #[test]
        fn the_check_of_a_stored_row_agrees_with_decoding_it(
            member in proptest::sample::select(vec![
                "id", "rule", "severity", "time", "ingested", "host", "log", "message",
                "fields", "count", "truncated", "log.file", "log.offset", "log.cursor",
                "fields.user.name", "other",
            ]),
            replacement in proptest::option::of(any_json()),
        ) {
            let mut stored = serde_json::to_value(Event::sample("e1", "a \"quoted\" line")).unwrap();
            let (object, key) = match member.split_once('.') {
                Some((outer, inner)) => (stored[outer].as_object_mut().unwrap(), inner),
                None => (stored.as_object_mut().unwrap(), member),
            };
            match replacement {
                Some(value) => object.insert(key.to_string(), value),
                None => object.remove(key),
            };
            let json = serde_json::to_vec(&stored).unwrap();
            let decoded = serde_json::from_slice::<Event>(&json).map(|event| event.id);
            let checked = EventJson::checked(&json).map(|json| json.id().to_string());
            proptest::prop_assert_eq!(checked.ok(), decoded.ok(), "{}", stored);
        }

        /// Arbitrary bytes: the check never panics and agrees with decoding.
        #[test]
        fn the_check_of_arbitrary_bytes_agrees_with_decoding(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let decoded = serde_json::from_slice::<Event>(&bytes).map(|event| event.id);
            let checked = EventJson::checked(&bytes).map(|json| json.id().to_string());
            proptest::prop_assert_eq!(checked.ok(), decoded.ok());
        }

        /// An event's id is read from its JSON as encoding wrote it, whatever
        /// it holds.
        #[test]
        fn the_id_read_from_the_json_is_the_events(id in "\\PC{0,40}") {
            let event = Event::sample(&id, "m");
            let json = EventJson::of(&event);
            proptest::prop_assert_eq!(json.id(), id);
        }

        /// Any event, its text full of quotes, backslashes, control and
        /// other characters: the hand-written encoding is serde_json's, byte
        /// for byte, and decodes to the event.
        #[test]
        fn encoding_by_hand_writes_what_serde_writes(
            texts in proptest::collection::vec(
                proptest::prop_oneof!["[\"\\\\\\x00-\\x1f\\x7fa-z]{0,70}", proptest::prelude::any::<String>()],
                8,
            ),
            offset in proptest::prelude::any::<u64>(),
            has_cursor in proptest::prelude::any::<bool>(),
            severity in proptest::sample::select(vec![
                Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical,
            ]),
            fields in proptest::collection::btree_map(proptest::prelude::any::<String>(), any_json(), 0..4),
            count in proptest::option::of(proptest::prelude::any::<u64>()),
            truncated in proptest::prelude::any::<bool>(),
        ) {
            let event = Event {
                id: texts[0].clone(),
                rule: texts[1].clone(),
                severity,
                time: texts[2].clone(),
                ingested: texts[3].clone(),
                host: texts[4].clone(),
                log: LogOrigin {
                    file: texts[5].clone(),
                    offset,
                    cursor: has_cursor.then(|| texts[6].clone()),
                },
                message: texts[7].clone(),
                fields: fields.into_iter().map(|(name, value)| (name.into(), value)).collect(),
                count,
                truncated,
            };
            let by_hand = EventJson::of(&event);
            let by_serde = serde_json::to_vec(&event).unwrap();
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(by_hand.as_bytes()),
                String::from_utf8_lossy(&by_serde)
            );
            proptest::prop_assert_eq!(by_hand.as_bytes(), &by_serde[..]);
            let decoded = by_hand.decode();
            proptest::prop_assert_eq!(decoded.message, event.message);
            proptest::prop_assert_eq!(decoded.log, event.log);
        }

        /// The fields a match converted encode as the map made of them
        /// does, and as serde writes them.
        #[test]
        fn matched_fields_encode_as_their_map(
            fields in proptest::collection::btree_map(
                "\\PC{0,8}",
                proptest::prop_oneof![
                    proptest::prelude::any::<String>().prop_map(|t| FieldValue::Text(t.into())),
                    proptest::prelude::any::<i64>().prop_map(FieldValue::Int),
                    proptest::prelude::any::<f64>().prop_map(FieldValue::Float),
                    proptest::prelude::any::<bool>().prop_map(FieldValue::Bool),
                ],
                0..6,
            ),
        ) {
            let names: Vec<Arc<str>> = fields.keys().map(|name| Arc::from(name.as_str())).collect();
            let matched: MatchedFields = names.iter().zip(fields.into_values()).collect();
            let event = Event::sample("e1", "a line");
            let mut view = event.view();
            view.fields = ViewFields::Map(Cow::Owned(fields_map(&matched)));
            let by_map = view.json();
            view.fields = ViewFields::Matched(matched);
            let by_matched = view.json();
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(by_matched.as_bytes()),
                String::from_utf8_lossy(by_map.as_bytes())
            );
            proptest::prop_assert_eq!(by_matched.as_bytes(), &serde_json::to_vec(&view).unwrap()[..]);
        }

        #[test]
        fn ids_are_hex_as_format_writes_it(n in proptest::prelude::any::<u128>()) {
            proptest::prop_assert_eq!(lower_hex(n), format!("{n:032x}"));
        }
    }

    #[test]
    fn events_encoded_into_shared_blocks_keep_their_own_bytes() {
        let mut blocks = JsonBlocks::default();
        let mut events: Vec<Event> = (0..400)
            .map(|n| Event::sample(&format!("e{n}"), &"x".repeat(n * 7)))
            .collect();
        // One larger than a block, which gets a block of its own.
        events.insert(
            200,
            Event::sample("big", &"y".repeat(JSON_BLOCK_BYTES + 10)),
        );
        let encoded: Vec<EventJson> = events
            .iter()
            .map(|e| e.view().encode(&mut blocks))
            .collect();
        for (event, json) in events.iter().zip(&encoded) {
            assert_eq!(json, &EventJson::of(event));
            assert_eq!(json.decode(), *event);
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
