//! RFC 5424 syslog lines in the layout every rule is written for.
//!
//! `<34>1 2026-11-22T10:00:01.003Z web1 sshd 811 - [origin ip="192.0.2.1"] Failed …`
//! gives the program and its process id fields of their own, where BSD
//! syslog (RFC 3164), rsyslog's file formats and every shipped rule write
//! `sshd[811]: Failed …`. Rewriting such a line once, before the prefilter,
//! lets every rule (and the prefilter's literals) read both layouts, and
//! costs the other lines one byte comparison. `-` (nil) values are left out;
//! structured data is dropped, since no rule reads it and the event keeps
//! the raw line as its message.

use std::borrow::Cow;

/// `line` as `<PRI>VERSION TIMESTAMP HOST APP[PROCID]: MSG` when it is an
/// RFC 5424 line; any other line unchanged.
pub fn classic_form(line: &str) -> Cow<'_, str> {
    if !line.starts_with('<') {
        return Cow::Borrowed(line);
    }
    match parse(line) {
        Some(parts) => Cow::Owned(parts.classic()),
        None => Cow::Borrowed(line),
    }
}

struct Parts<'a> {
    /// `<PRI>VERSION`, as written.
    prefix: &'a str,
    timestamp: Option<&'a str>,
    host: Option<&'a str>,
    app: Option<&'a str>,
    procid: Option<&'a str>,
    message: &'a str,
}

impl Parts<'_> {
    fn classic(&self) -> String {
        let mut out = String::with_capacity(self.prefix.len() + self.message.len() + 64);
        out.push_str(self.prefix);
        out.push(' ');
        // A nil time stays `-`: the `{syslog}` header accepts it only here.
        out.push_str(self.timestamp.unwrap_or("-"));
        out.push(' ');
        if let Some(host) = self.host {
            out.push_str(host);
            out.push(' ');
        }
        if let Some(app) = self.app {
            out.push_str(app);
            if let Some(procid) = self.procid {
                out.push('[');
                out.push_str(procid);
                out.push(']');
            }
            out.push_str(": ");
        }
        out.push_str(self.message);
        out
    }
}

fn parse(line: &str) -> Option<Parts<'_>> {
    let close = line.find('>')?;
    let pri = &line[1..close];
    if pri.is_empty() || pri.len() > 3 || !pri.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (version, rest) = line[close + 1..].split_once(' ')?;
    let version_ok = matches!(version.len(), 1 | 2)
        && !version.starts_with('0')
        && version.bytes().all(|b| b.is_ascii_digit());
    if !version_ok {
        return None;
    }
    let prefix = &line[..close + 1 + version.len()];
    let (timestamp, rest) = rest.split_once(' ')?;
    let (host, rest) = rest.split_once(' ')?;
    let (app, rest) = rest.split_once(' ')?;
    let (procid, rest) = rest.split_once(' ')?;
    let (msgid, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    // A classic line behind `<PRI>VERSION` ("web1 sshd[811]: Failed …") would
    // split into these fields too; its program field gives it away.
    let classic_program = app.ends_with(':') || app.contains('[');
    let lengths_ok = (1..=255).contains(&host.len())
        && (1..=48).contains(&app.len())
        && (1..=128).contains(&procid.len())
        && (1..=32).contains(&msgid.len());
    if classic_program || !lengths_ok || !looks_like_time(timestamp) {
        return None;
    }
    let message = skip_structured_data(rest)?;
    let message = message.strip_prefix(' ').unwrap_or(message);
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    Some(Parts {
        prefix,
        timestamp: value(timestamp),
        host: value(host),
        app: value(app),
        procid: value(procid),
        message,
    })
}

/// A field's value; `-` is RFC 5424's nil.
fn value(field: &str) -> Option<&str> {
    (field != "-").then_some(field)
}

/// RFC 3339 as RFC 5424 restricts it (`2026-11-22T10:00:01.003Z`), or nil.
fn looks_like_time(field: &str) -> bool {
    let bytes = field.as_bytes();
    field == "-"
        || (bytes.len() >= 20
            && bytes[..4].iter().all(u8::is_ascii_digit)
            && bytes[4] == b'-'
            && bytes[10] == b'T')
}

/// What follows the structured data (`-`, or `[id param="value"]…` where a
/// value may hold an escaped `\]` or `\"`); `None` when it is malformed.
fn skip_structured_data(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix('-') {
        return (rest.is_empty() || rest.starts_with(' ')).then_some(rest);
    }
    let bytes = text.as_bytes();
    let mut at = 0;
    while bytes.get(at) == Some(&b'[') {
        let mut quoted = false;
        at += 1;
        loop {
            match *bytes.get(at)? {
                b'\\' if quoted => at += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            at += 1;
        }
        at += 1;
    }
    (at > 0 && (at == bytes.len() || bytes[at] == b' ')).then(|| &text[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc5424_lines_take_the_classic_layout() {
        for (line, classic) in [
            (
                "<34>1 2026-11-22T10:00:01.003Z web1.example.com sshd 811 - - Failed password for root from 203.0.113.7 port 52144 ssh2",
                "<34>1 2026-11-22T10:00:01.003Z web1.example.com sshd[811]: Failed password for root from 203.0.113.7 port 52144 ssh2",
            ),
            (
                r#"<86>1 2026-11-22T10:00:01+01:00 web1 sshd 811 ID47 [exampleSDID@32473 iut="3" note="a \"q\" and \] here"][origin ip="192.0.2.9"] Invalid user x from 192.0.2.8"#,
                "<86>1 2026-11-22T10:00:01+01:00 web1 sshd[811]: Invalid user x from 192.0.2.8",
            ),
            (
                "<4>1 2026-11-22T10:00:01Z - kernel - - - [UFW BLOCK] IN=eth0",
                "<4>1 2026-11-22T10:00:01Z kernel: [UFW BLOCK] IN=eth0",
            ),
            (
                "<38>1 - fw1 su - - - \u{feff}FAILED SU (to root) alice on pts/0",
                "<38>1 - fw1 su: FAILED SU (to root) alice on pts/0",
            ),
            (
                "<38>1 2026-11-22T10:00:01Z fw1 - - - -",
                "<38>1 2026-11-22T10:00:01Z fw1 ",
            ),
        ] {
            assert_eq!(classic_form(line), classic, "{line}");
        }
    }

    #[test]
    fn other_lines_are_left_alone() {
        for line in [
            "Nov 22 10:00:01 web1 sshd[1]: x - y",
            "<38>1 2026-11-22T10:00:01Z web1 sshd[1]: Failed password for a b - c",
            "<38>Nov 22 10:00:01 web1 su: x y z - w",
            "<38>1 2026-11-22T10:00:01Z web1 app 1 2 [unclosed x",
            "<38>1 2026-11-22T10:00:01Z web1 app 1 2 [a]junk",
            "<1234>1 2026-11-22T10:00:01Z web1 app 1 2 - m",
            "<",
        ] {
            assert!(
                matches!(classic_form(line), Cow::Borrowed(l) if l == line),
                "{line}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_line_is_left_or_shortened_without_panic(
            head in "<[0-9]{1,4}>[0-9]{0,3}",
            fields in proptest::collection::vec("[ -~]{0,12}", 0..7),
            message in "\\PC{0,40}",
        ) {
            let line = format!("{head} {} {message}", fields.join(" "));
            let out = classic_form(&line);
            prop_assert!(out.len() <= line.len());
            prop_assert!(out.starts_with(&head));
        }

        #[test]
        fn every_rfc5424_line_keeps_program_pid_and_message(
            pri in 0u8..192,
            host in "[a-z][a-z0-9.-]{0,20}",
            app in "[a-z][a-z0-9_-]{0,20}",
            pid in 1u32..4_000_000,
            msgid in "-|[A-Z0-9]{1,8}",
            data in "-|\\[id@1 k=\"[ -!#-\\[^-~]{0,10}(\\\\\\]|\\\\\")?\"\\]",
            message in "[ -~]{0,60}",
        ) {
            let line = format!("<{pri}>1 2026-11-22T10:00:01.003Z {host} {app} {pid} {msgid} {data} {message}");
            prop_assert_eq!(
                classic_form(&line),
                format!("<{pri}>1 2026-11-22T10:00:01.003Z {host} {app}[{pid}]: {message}")
            );
        }
    }
}
