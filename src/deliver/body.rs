//! Request bodies: the envelope of DESIGN §5 in the webhook's content type.
//!
//! A body is `prefix, event, separator, event, …, suffix`, and each event's
//! bytes are computed once, so the batcher knows a body's size exactly
//! before building it: the limit holds for the bytes on the wire.
//!
//! - `application/json` (and `; charset=utf-8`): the JSON envelope
//!   `{"agent":"tailhook","host":…,"events":[…]}`.
//! - `application/x-www-form-urlencoded`: `payload=` and the JSON envelope,
//!   percent-encoded (Slack's and many receivers' form convention).
//! - `application/xml`: `<tailhook agent="tailhook" host="…"><event …>…`.
//! - A `template`: each event rendered as one line of text, the lines joined
//!   into `{"text": "…"}` (Slack, Mattermost, Teams), JSON or form-encoded.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::config::ContentType;
use crate::event::Event;
use crate::queue::Queued;

pub struct BodyFormat {
    wire: Wire,
    shape: Shape,
    host: String,
}

enum Wire {
    Json,
    Form,
    Xml,
}

enum Shape {
    Envelope,
    Text(Template),
}

impl BodyFormat {
    /// `template` was validated when the config loaded.
    pub fn new(content_type: ContentType, template: Option<&str>, host: &str) -> BodyFormat {
        let wire = match content_type {
            ContentType::Json | ContentType::JsonUtf8 => Wire::Json,
            ContentType::FormUrlencoded => Wire::Form,
            ContentType::Xml => Wire::Xml,
        };
        let shape = match template {
            Some(text) => {
                Shape::Text(Template::parse(text).expect("templates are validated at load"))
            }
            None => Shape::Envelope,
        };
        BodyFormat {
            wire,
            shape,
            host: host.to_string(),
        }
    }

    /// The envelope's `host`: the agent's.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The JSON text pieces of the body, before the wire encoding.
    fn json_prefix(&self) -> String {
        match &self.shape {
            Shape::Envelope => {
                let host = serde_json::to_string(&self.host).expect("strings serialize");
                format!(r#"{{"agent":"tailhook","host":{host},"events":["#)
            }
            Shape::Text(_) => r#"{"text":""#.to_string(),
        }
    }

    fn json_separator(&self) -> &'static str {
        match self.shape {
            Shape::Envelope => ",",
            Shape::Text(_) => "\\n",
        }
    }

    fn json_suffix(&self) -> &'static str {
        match self.shape {
            Shape::Envelope => "]}",
            Shape::Text(_) => "\"}",
        }
    }

    fn json_event(&self, event: &Event) -> String {
        match &self.shape {
            Shape::Envelope => serde_json::to_string(event).expect("events serialize"),
            Shape::Text(template) => {
                let quoted = serde_json::to_string(&template.render(event, &self.host))
                    .expect("strings serialize");
                quoted[1..quoted.len() - 1].to_string()
            }
        }
    }

    fn prefix(&self) -> Vec<u8> {
        match self.wire {
            Wire::Json => self.json_prefix().into_bytes(),
            Wire::Form => format!("payload={}", percent_encode(&self.json_prefix())).into_bytes(),
            Wire::Xml => format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><tailhook agent="tailhook" host="{}">"#,
                xml_escape(&self.host)
            )
            .into_bytes(),
        }
    }

    fn separator(&self) -> Vec<u8> {
        match self.wire {
            Wire::Json => self.json_separator().as_bytes().to_vec(),
            Wire::Form => percent_encode(self.json_separator()).into_bytes(),
            Wire::Xml => Vec::new(),
        }
    }

    fn suffix(&self) -> Vec<u8> {
        match self.wire {
            Wire::Json => self.json_suffix().as_bytes().to_vec(),
            Wire::Form => percent_encode(self.json_suffix()).into_bytes(),
            Wire::Xml => b"</tailhook>".to_vec(),
        }
    }

    /// A queued event's bytes in the body: in a JSON envelope its `json`
    /// as stored, shared (that is what encoding the event gives), else
    /// encoded.
    pub fn encode_queued(&self, queued: &Queued) -> Bytes {
        match (&self.wire, &self.shape) {
            (Wire::Json, Shape::Envelope) => queued.json.shared(),
            _ => self.encode_event(&queued.event()).into(),
        }
    }

    /// One event's bytes, as they appear in the body.
    pub fn encode_event(&self, event: &Event) -> Vec<u8> {
        match self.wire {
            Wire::Json => self.json_event(event).into_bytes(),
            Wire::Form => percent_encode(&self.json_event(event)).into_bytes(),
            Wire::Xml => xml_event(event).into_bytes(),
        }
    }

    /// Bytes of a body holding no events.
    pub fn overhead(&self) -> usize {
        self.prefix().len() + self.suffix().len()
    }

    pub fn separator_len(&self) -> usize {
        self.separator().len()
    }

    /// The body for encoded events; exactly `overhead() + sum(len) +
    /// (n - 1) * separator_len()` bytes.
    pub fn encode<'e, I>(&self, events: I) -> Vec<u8>
    where
        I: IntoIterator<Item = &'e [u8]>,
        I::IntoIter: Clone,
    {
        self.encode_into(events, Vec::new())
    }

    /// [`BodyFormat::encode`] into `body`'s buffer (what it held is
    /// dropped), grown at most once, to the body's size: a body grown by
    /// doubling was copied about once more, into up to twice the memory.
    pub fn encode_into<'e, I>(&self, events: I, mut body: Vec<u8>) -> Vec<u8>
    where
        I: IntoIterator<Item = &'e [u8]>,
        I::IntoIter: Clone,
    {
        let events = events.into_iter();
        let (prefix, separator, suffix) = (self.prefix(), self.separator(), self.suffix());
        let (count, bytes) = events.clone().fold((0usize, 0), |(count, bytes), event| {
            (count + 1, bytes + event.len())
        });
        let size = prefix.len() + bytes + count.saturating_sub(1) * separator.len() + suffix.len();
        body.clear();
        body.reserve_exact(size);
        body.extend_from_slice(&prefix);
        for (i, event) in events.enumerate() {
            if i > 0 {
                body.extend_from_slice(&separator);
            }
            body.extend_from_slice(event);
        }
        body.extend_from_slice(&suffix);
        body
    }
}

/// `application/x-www-form-urlencoded` value encoding.
fn percent_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to write most control characters, escaped or not.
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// ` name="value"`, or nothing for an empty value (an event queued by a
/// version that did not set it).
fn optional_attribute(name: &str, value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(r#" {name}="{}""#, xml_escape(value))
    }
}

fn xml_event(event: &Event) -> String {
    let mut xml = format!(
        r#"<event id="{}" rule="{}" severity="{}" time="{}"{}{}{}{}><log file="{}" offset="{}"{}/><message>{}</message><fields>"#,
        xml_escape(&event.id),
        xml_escape(&event.rule),
        event.severity.as_str(),
        xml_escape(&event.time),
        optional_attribute("ingested", &event.ingested),
        optional_attribute("host", &event.host),
        event
            .count
            .map(|c| format!(r#" count="{c}""#))
            .unwrap_or_default(),
        if event.truncated {
            r#" truncated="true""#
        } else {
            ""
        },
        xml_escape(&event.log.file),
        event.log.offset,
        event
            .log
            .cursor
            .as_deref()
            .map(|c| format!(r#" cursor="{}""#, xml_escape(c)))
            .unwrap_or_default(),
        xml_escape(&event.message),
    );
    for (name, value) in &event.fields {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(
            xml,
            r#"<field name="{}">{}</field>"#,
            xml_escape(name),
            xml_escape(&text)
        );
    }
    xml.push_str("</fields></event>");
    xml
}

/// A line of text with `{placeholder}`s for event values: `{rule}`,
/// `{severity}`, `{message}`, `{host}`, `{time}`, `{ingested}`, `{id}`,
/// `{log.file}`, `{count}` and `{fields.NAME}` (empty when the event has no such field).
#[derive(Debug)]
pub struct Template(Vec<Piece>);

#[derive(Debug)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

#[derive(Debug)]
enum Placeholder {
    Rule,
    Severity,
    Message,
    Host,
    Time,
    Ingested,
    Id,
    LogFile,
    Count,
    Field(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            pieces.push(Piece::Text(rest[..open].to_string()));
            let close = rest[open..].find('}').ok_or_else(|| {
                format!(
                    "`{{` at byte {} is not closed",
                    text.len() - rest.len() + open
                )
            })?;
            let name = &rest[open + 1..open + close];
            let placeholder = match name {
                "rule" => Placeholder::Rule,
                "severity" => Placeholder::Severity,
                "message" => Placeholder::Message,
                "host" => Placeholder::Host,
                "time" => Placeholder::Time,
                "ingested" => Placeholder::Ingested,
                "id" => Placeholder::Id,
                "log.file" => Placeholder::LogFile,
                "count" => Placeholder::Count,
                field if field.starts_with("fields.") && field.len() > 7 => Placeholder::Field(field[7..].to_string()),
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}`; use rule, severity, message, host, time, ingested, id, log.file, count or fields.NAME"
                    ))
                }
            };
            pieces.push(Piece::Value(placeholder));
            rest = &rest[open + close + 1..];
        }
        pieces.push(Piece::Text(rest.to_string()));
        Ok(Template(pieces))
    }

    pub fn render(&self, event: &Event, host: &str) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(value) => match value {
                    Placeholder::Rule => out.push_str(&event.rule),
                    Placeholder::Severity => out.push_str(event.severity.as_str()),
                    Placeholder::Message => out.push_str(&event.message),
                    // The event's own host: a fleet's body carries events of
                    // many; an event queued before events carried one has
                    // the sender's.
                    Placeholder::Host if event.host.is_empty() => out.push_str(host),
                    Placeholder::Host => out.push_str(&event.host),
                    Placeholder::Time => out.push_str(&event.time),
                    Placeholder::Ingested => out.push_str(&event.ingested),
                    Placeholder::Id => out.push_str(&event.id),
                    Placeholder::LogFile => out.push_str(&event.log.file),
                    Placeholder::Count => out.push_str(&event.count.unwrap_or(1).to_string()),
                    Placeholder::Field(name) => match event.fields.get(name.as_str()) {
                        Some(serde_json::Value::String(s)) => out.push_str(s),
                        Some(other) => out.push_str(&other.to_string()),
                        None => {}
                    },
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Fields, LogOrigin};
    use crate::rules::Severity;

    fn event(message: &str) -> Event {
        Event {
            id: "0123".into(),
            rule: "sshd.auth_failed".into(),
            severity: Severity::High,
            time: "2026-11-22T10:00:01Z".into(),
            ingested: "2026-11-22T10:00:01.020Z".into(),
            host: "web1".into(),
            log: LogOrigin {
                file: "/var/log/auth.log".into(),
                offset: 7,
                cursor: None,
            },
            message: message.into(),
            fields: Fields::from([
                ("source.ip".into(), serde_json::json!("203.0.113.7")),
                ("source.port".into(), serde_json::json!(22)),
            ]),
            count: None,
            truncated: false,
        }
    }

    fn body(format: &BodyFormat, events: &[Event]) -> Vec<u8> {
        let encoded: Vec<Vec<u8>> = events.iter().map(|e| format.encode_event(e)).collect();
        let body = format.encode(encoded.iter().map(Vec::as_slice));
        let predicted = format.overhead()
            + encoded.iter().map(Vec::len).sum::<usize>()
            + encoded.len().saturating_sub(1) * format.separator_len();
        assert_eq!(
            body.len(),
            predicted,
            "size is known before the body is built"
        );
        body
    }

    #[test]
    fn json_envelope_has_the_documented_shape() {
        let format = BodyFormat::new(ContentType::Json, None, "web\"1");
        let value: serde_json::Value =
            serde_json::from_slice(&body(&format, &[event("a \"b\""), event("c")])).unwrap();
        assert_eq!(value["agent"], "tailhook");
        assert_eq!(value["host"], "web\"1");
        assert_eq!(value["events"][0]["message"], "a \"b\"");
        assert_eq!(value["events"][1]["fields"]["source.port"], 22);
        let first = &value["events"][0];
        assert_eq!(first["time"], "2026-11-22T10:00:01Z");
        assert_eq!(first["ingested"], "2026-11-22T10:00:01.020Z");
        assert_eq!(first["host"], "web1");
    }

    #[test]
    fn form_body_is_the_envelope_as_a_payload_field() {
        let format = BodyFormat::new(ContentType::FormUrlencoded, None, "web1");
        let bytes = body(&format, &[event("x & y = z"), event("100%")]);
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(&bytes).into_owned().collect();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, "payload");
        let value: serde_json::Value = serde_json::from_str(&pairs[0].1).unwrap();
        assert_eq!(value["events"][0]["message"], "x & y = z");
        assert_eq!(value["events"][1]["message"], "100%");
    }

    #[test]
    fn xml_body_escapes_text_and_drops_characters_xml_cannot_hold() {
        let format = BodyFormat::new(ContentType::Xml, None, "a<b");
        let text =
            String::from_utf8(body(&format, &[event("<script>&\"'\u{1}"), event("ok")])).unwrap();
        assert!(
            text.starts_with(
                r#"<?xml version="1.0" encoding="UTF-8"?><tailhook agent="tailhook" host="a&lt;b">"#
            ),
            "{text}"
        );
        assert!(
            text.contains("<message>&lt;script&gt;&amp;&quot;&apos;\u{fffd}</message>"),
            "{text}"
        );
        assert!(
            text.contains(r#"<field name="source.port">22</field>"#),
            "{text}"
        );
        assert_eq!(text.matches("<event ").count(), 2);
        assert!(
            text.contains(
                r#"time="2026-11-22T10:00:01Z" ingested="2026-11-22T10:00:01.020Z" host="web1">"#
            ),
            "{text}"
        );
        assert!(text.ends_with("</tailhook>"));
        assert!(
            text.contains(r#"<log file="/var/log/auth.log" offset="7"/>"#),
            "{text}"
        );

        let mut journal = event("x");
        journal.log.cursor = Some("s=1;i=2".into());
        let text = String::from_utf8(body(&format, &[journal])).unwrap();
        assert!(text.contains(r#"offset="7" cursor="s=1;i=2"/>"#), "{text}");
    }

    #[test]
    fn template_renders_one_line_per_event_into_text() {
        let template =
            "[{severity}] {rule} from {fields.source.ip} on {host}: {message}{fields.nope}";
        let format = BodyFormat::new(ContentType::Json, Some(template), "web1");
        let value: serde_json::Value =
            serde_json::from_slice(&body(&format, &[event("one"), event("two \"2\"")])).unwrap();
        assert_eq!(
            value["text"],
            "[high] sshd.auth_failed from 203.0.113.7 on web1: one\n[high] sshd.auth_failed from 203.0.113.7 on web1: two \"2\""
        );
    }

    #[test]
    fn template_host_is_the_events_and_times_are_its_own() {
        let format = BodyFormat::new(
            ContentType::Json,
            Some("{host} {time} {ingested}"),
            "sender",
        );
        let mut old = event("queued before events carried a host");
        old.host.clear();
        old.ingested.clear();
        let value: serde_json::Value =
            serde_json::from_slice(&body(&format, &[event("x"), old])).unwrap();
        assert_eq!(
            value["text"],
            "web1 2026-11-22T10:00:01Z 2026-11-22T10:00:01.020Z\nsender 2026-11-22T10:00:01Z "
        );
    }

    #[test]
    fn template_errors_name_the_problem() {
        assert!(Template::parse("{rule").unwrap_err().contains("not closed"));
        assert!(Template::parse("{user}")
            .unwrap_err()
            .contains("unknown placeholder `{user}`"));
        assert!(Template::parse("plain text").is_ok());
    }

    proptest::proptest! {
        /// What the queue stores, sent as it is, is byte for byte what
        /// encoding the event read back from it gives, in every format.
        #[test]
        fn stored_json_is_sent_exactly_as_encoding_the_event_would(
            message in "\\PC{0,40}",
            text in "\\PC{0,20}",
            number in proptest::num::i64::ANY,
            count in proptest::option::of(proptest::num::u64::ANY),
            truncated in proptest::bool::ANY,
        ) {
            let mut stored = event(&message);
            stored.fields.insert("user.name".into(), serde_json::json!(text));
            stored.fields.insert("process.pid".into(), serde_json::json!(number));
            stored.count = count;
            stored.truncated = truncated;
            let queued = crate::queue::Queued::new(0, &stored);
            let read_back = queued.event();
            for (content_type, template) in [
                (ContentType::Json, None),
                (ContentType::JsonUtf8, None),
                (ContentType::FormUrlencoded, None),
                (ContentType::Xml, None),
                (ContentType::Json, Some("{rule} {message}")),
                (ContentType::FormUrlencoded, Some("{fields.user.name}")),
            ] {
                let format = BodyFormat::new(content_type, template, "web1");
                proptest::prop_assert_eq!(
                    &format.encode_queued(&queued)[..],
                    &format.encode_event(&read_back)[..]
                );
            }
        }
    }

    /// Whether `text` is a well-formed XML document of elements, attributes
    /// and text (all a body holds): only XML 1.0 characters, every `<` a
    /// tag, every `&` one of the five entities, tags balanced, one root.
    fn well_formed_xml(text: &str) -> Result<(), String> {
        let xml_char = |c: char| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
        };
        if let Some(c) = text.chars().find(|c| !xml_char(*c)) {
            return Err(format!("character {c:?} is not XML"));
        }
        let entities_ok = |part: &str| {
            part.split('&').skip(1).all(|after| {
                ["amp;", "lt;", "gt;", "quot;", "apos;"]
                    .iter()
                    .any(|e| after.starts_with(e))
            })
        };
        let rest = text
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .ok_or("no XML declaration")?;
        let mut open: Vec<&str> = Vec::new();
        let mut roots = 0;
        for (i, piece) in rest.split('<').enumerate() {
            if i == 0 {
                if !piece.is_empty() {
                    return Err("text before the root".into());
                }
                continue;
            }
            let (tag, after) = piece.split_once('>').ok_or("a tag is not closed")?;
            if !entities_ok(after) || (open.is_empty() && !after.is_empty()) {
                return Err(format!("bad text {after:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                if open.pop() != Some(name) {
                    return Err(format!("</{name}> closes nothing open"));
                }
                continue;
            }
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(tag) => (tag, true),
                None => (tag, false),
            };
            let (name, mut attributes) = tag.split_once(' ').unwrap_or((tag, ""));
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("bad element name {name:?}"));
            }
            while !attributes.is_empty() {
                let (key, value) = attributes.split_once("=\"").ok_or("bad attribute")?;
                let (value, more) = value.split_once('"').ok_or("attribute not closed")?;
                if key.is_empty() || key.contains(char::is_whitespace) || !entities_ok(value) {
                    return Err(format!("bad attribute {key:?}={value:?}"));
                }
                attributes = more.strip_prefix(' ').unwrap_or(more);
                if !more.is_empty() && !more.starts_with(' ') {
                    return Err("attributes not separated".into());
                }
            }
            if open.is_empty() {
                roots += 1;
            }
            if !empty {
                open.push(name);
            }
        }
        if !open.is_empty() || roots != 1 {
            return Err(format!("unbalanced: open {open:?}, {roots} roots"));
        }
        Ok(())
    }

    #[test]
    fn the_xml_check_refuses_what_is_not_xml() {
        let doc = |inner: &str| format!(r#"<?xml version="1.0" encoding="UTF-8"?>{inner}"#);
        assert!(well_formed_xml(&doc(r#"<a b="1 &amp; 2"><c/>x &lt; y</a>"#)).is_ok());
        for bad in [
            "<a>&</a>",
            "<a>x</b>",
            "<a>",
            "<a></a><a></a>",
            "<a b=\"<\"></a>",
            "<a>\u{1}</a>",
            "<a>x > <</a>",
            "text<a></a>",
        ] {
            assert!(well_formed_xml(&doc(bad)).is_err(), "{bad}");
        }
    }

    fn arbitrary_event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        let severity = proptest::sample::select(vec![
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]);
        let value = prop_oneof![
            any::<String>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        (
            (any::<String>(), any::<String>(), severity, any::<String>()),
            (
                any::<String>(),
                any::<u64>(),
                proptest::option::of(any::<String>()),
            ),
            prop_oneof![any::<String>(), "\\PC{0,3000}"],
            proptest::collection::btree_map(any::<String>().prop_map(Into::into), value, 0..4),
            (proptest::option::of(any::<u64>()), any::<bool>()),
        )
            .prop_map(
                |(
                    (id, rule, severity, time),
                    (file, offset, cursor),
                    message,
                    fields,
                    (count, truncated),
                )| {
                    Event {
                        id,
                        // Arbitrary text, escaped like any other member.
                        host: rule.clone(),
                        ingested: time.clone(),
                        rule,
                        severity,
                        time,
                        log: LogOrigin {
                            file,
                            offset,
                            cursor,
                        },
                        message,
                        fields,
                        count,
                        truncated,
                    }
                },
            )
    }

    fn arbitrary_format(
    ) -> impl proptest::strategy::Strategy<Value = (ContentType, Option<&'static str>)> {
        use proptest::sample::select;
        select(vec![
            (ContentType::Json, None),
            (ContentType::JsonUtf8, None),
            (ContentType::FormUrlencoded, None),
            (ContentType::Xml, None),
            (
                ContentType::Json,
                Some("[{severity}] {rule} {fields.source.ip}: {message}"),
            ),
            (
                ContentType::FormUrlencoded,
                Some("{host} {message} {count} {log.file}"),
            ),
        ])
    }

    /// The JSON a JSON or form body carries.
    fn body_json(content_type: ContentType, body: &[u8]) -> Result<serde_json::Value, String> {
        let json = match content_type {
            ContentType::FormUrlencoded => {
                let pairs: Vec<_> = url::form_urlencoded::parse(body).collect();
                match pairs.as_slice() {
                    [(key, value)] if key == "payload" => value.to_string(),
                    _ => return Err(format!("not one payload field: {pairs:?}")),
                }
            }
            _ => String::from_utf8(body.to_vec()).map_err(|e| e.to_string())?,
        };
        serde_json::from_str(&json).map_err(|e| format!("{e}: {json}"))
    }

    proptest::proptest! {
        /// Arbitrary events in every body format: each body is valid JSON,
        /// form or XML holding its batch, and never over `max_body_bytes`;
        /// an event too large is cut (its message a prefix, `truncated`
        /// set), or refused only when even an empty message cannot fit. A
        /// body written into an earlier body's buffer is the same body.
        #[test]
        fn bodies_are_valid_and_within_the_limit(
            events in proptest::collection::vec(arbitrary_event(), 1..8),
            (content_type, template) in arbitrary_format(),
            host in proptest::prelude::any::<String>(),
            max_body_bytes in 256usize..6000,
        ) {
            use crate::deliver::batch::{Admitted, Pending};
            let format = BodyFormat::new(content_type, template, &host);
            let mut pending = Pending::new(&format, max_body_bytes);
            let mut refused = 0;
            for (seq, event) in events.iter().enumerate() {
                let queued = Queued::new(seq as u64, event);
                if let Admitted::TooLarge(whole) = pending.push(queued, &format) {
                    let mut empty = whole.queued.event();
                    empty.message.clear();
                    empty.truncated = true;
                    let smallest = format.overhead() + format.encode_event(&empty).len();
                    proptest::prop_assert!(smallest > max_body_bytes, "refused though {smallest} fits");
                    refused += 1;
                }
            }
            let mut sent = 0;
            let mut spare = b"what an earlier body left".to_vec();
            while !pending.is_empty() {
                let batch = pending.take_batch();
                let body = format.encode(batch.iter().map(|e| &e.bytes[..]));
                let reused = format.encode_into(batch.iter().map(|e| &e.bytes[..]), std::mem::take(&mut spare));
                proptest::prop_assert_eq!(&reused, &body);
                spare = reused;
                proptest::prop_assert!(body.len() <= max_body_bytes, "{} > {max_body_bytes}", body.len());
                let shown: Vec<Event> = batch.iter().map(|e| e.queued.event()).collect();
                for (encoded, shown) in batch.iter().zip(&shown) {
                    let original = &events[encoded.queued.seq as usize];
                    proptest::prop_assert!(original.message.starts_with(&shown.message));
                    if shown.message != original.message {
                        proptest::prop_assert!(shown.truncated);
                    }
                }
                match (content_type, template) {
                    (ContentType::Xml, _) => {
                        let text = std::str::from_utf8(&body).map_err(|e| e.to_string());
                        proptest::prop_assert!(text.is_ok(), "{:?}", text);
                        let checked = well_formed_xml(text.unwrap());
                        proptest::prop_assert!(checked.is_ok(), "{:?}", checked);
                    }
                    (_, None) => {
                        let json = body_json(content_type, &body);
                        proptest::prop_assert!(json.is_ok(), "{:?}", json);
                        let json = json.unwrap();
                        let messages: Vec<&str> = json["events"]
                            .as_array()
                            .map(|events| events.iter().filter_map(|e| e["message"].as_str()).collect())
                            .unwrap_or_default();
                        let expected: Vec<&str> = shown.iter().map(|e| e.message.as_str()).collect();
                        proptest::prop_assert_eq!(messages, expected);
                        proptest::prop_assert_eq!(json["host"].as_str(), Some(host.as_str()));
                    }
                    (_, Some(_)) => {
                        let json = body_json(content_type, &body);
                        proptest::prop_assert!(json.is_ok(), "{:?}", json);
                        proptest::prop_assert!(json.unwrap()["text"].is_string());
                    }
                }
                sent += batch.len();
            }
            proptest::prop_assert_eq!(sent + refused, events.len());
        }

        /// Any template text parses or is refused; a parsed one renders.
        #[test]
        fn arbitrary_templates_parse_or_fail_cleanly(text in "\\PC{0,40}", message in proptest::prelude::any::<String>()) {
            if let Ok(template) = Template::parse(&text) {
                let _ = template.render(&event(&message), "web1");
            }
        }
    }
}
