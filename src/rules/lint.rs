//! Warnings about rules a client could steer into reporting a forged
//! address: `tailhook check` and `tailhook test-rules` print them; they
//! never stop the agent.
//!
//! The heuristic works on the parsed regex (regex-syntax's HIR), around the
//! `source.ip` capture. A client forges an address by writing, inside a value
//! it controls, the text the daemon writes before an address (the
//! *separator*) and an address; the daemon then writes its own separator and
//! the real address after the value. A rule is warned about when both hold:
//!
//! 1. **Open before.** A capture before the address that a client controls
//!    (see [`client_controlled`]: the fields `tests/rule_forgery.rs`
//!    forges) holds a repetition without an upper bound (`*`, `+`, `{n,}`)
//!    of one character class that matches a space (free text: `.*`, `.+?`,
//!    `[^,]*`), or every character of the separator and of an address
//!    (`0-9`, `.`, `:`): `\S+` before `[`, but not before ` from `. The
//!    separator is the literal text the regex requires right before the
//!    address, read through optional pieces (`\[?`, `(?:MAC=\S* )?`).
//! 2. **Not closed after.** The regex does not end with an end-of-text
//!    anchor (`$`), or a repetition without an upper bound after the address
//!    repeats one class that can take in what the daemon writes after a
//!    forged address: its text between the open repetition and its own
//!    address (the literals the regex requires there), the real address,
//!    and the literals the regex requires after the address before that
//!    repetition (a forged line supplies one copy, the daemon writes them
//!    again). `.*` can; `[^"]*` in `host: "[^"]*"` cannot (the daemon's
//!    `request: "` precedes it); `\S+` cannot (the daemon writes spaces).
//!
//! It is a heuristic, not a proof: a repetition of a sequence (`(?: \S+)*`)
//! is not taken as unbounded text, and uncaptured parts (a timestamp, a
//! kernel's `MAC=\S*`) are taken to be the daemon's. It catches the common
//! mistake (`for (?P<user.name>.*) from (?P<source.ip>…).*`);
//! `tests/rule_forgery.rs` tries real forged lines against every shipped rule.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

use super::{FieldType, Rule};

/// The capture a forged address would land in.
const ADDRESS_FIELD: &str = "source.ip";

/// Characters an address is written with, besides the separator's (a class
/// holding `0`, `9`, `.` and `:` is taken to hold them all).
const ADDRESS_CHARS: &str = "09.:";

/// The warning for `rule`, naming its file and id, when a client could
/// steer it into reporting a forged address.
pub fn forgery_warning(rule: &Rule) -> Option<String> {
    // The rule compiled with this syntax already; a parse error cannot occur.
    let hir = regex_syntax::parse(rule.regex.as_str()).ok()?;
    let separator = steerable(rule, &hir)?;
    Some(format!(
        "{}: rule `{}`: a client-controlled capture before `{ADDRESS_FIELD}` can hold a forged \
         {separator:?} and address, and the regex after the address can take the real one in; \
         end the regex with `$` after exactly what the daemon writes after the address, and \
         keep the captures around it from holding the separator (README: \"Writing a rule \
         that cannot be forged\")",
        rule.origin, rule.id
    ))
}

/// The separator before the address capture (a regex has at most one: a
/// capture name is unique), when the regex leaves it open before and not
/// closed after.
fn steerable(rule: &Rule, hir: &Hir) -> Option<String> {
    let (before, after) = around_address(hir)?;
    let separator = separator(&before);
    let forged = format!("{separator}{ADDRESS_CHARS}");
    let anchored = after.last().is_some_and(|h| {
        matches!(
            h.kind(),
            HirKind::Look(Look::End | Look::EndLF | Look::EndCRLF)
        )
    });
    for (i, item) in before.iter().enumerate() {
        let mut captures = Vec::new();
        client_captures(rule, item, &mut captures);
        let mut open = Vec::new();
        for capture in captures {
            unbounded_over(capture, " ", &mut open);
            unbounded_over(capture, &forged, &mut open);
        }
        for repetition in open {
            // What the daemon writes between this repetition and the address.
            let mut between = literals_after(item, repetition).unwrap_or_default();
            before[i + 1..]
                .iter()
                .filter_map(|h| literal(h))
                .for_each(|text| between.push_str(&text));
            if !anchored || swallows_real_address(&after, &between) {
                return Some(separator);
            }
        }
    }
    None
}

/// Whether a repetition without an upper bound in `after` can take in what
/// the daemon writes after a forged address: `between` (the daemon's text
/// before its own address), the real address, and the daemon's text that the
/// regex requires before that repetition (a forged line supplies the regex's
/// own copy of it, the daemon then writes it again).
fn swallows_real_address(after: &[&Hir], between: &str) -> bool {
    let mut preceding = String::new();
    for piece in after {
        let mut unbounded = Vec::new();
        unbounded_over(piece, "", &mut unbounded);
        for repetition in unbounded {
            let required_before = literals_before(piece, repetition).unwrap_or_default();
            let swallowed = format!("{between}{ADDRESS_CHARS}{preceding}{required_before}");
            if class_matches_all(repetition_sub(repetition), &swallowed) {
                return true;
            }
        }
        if let Some(text) = literal(piece) {
            preceding.push_str(&text);
        }
    }
    false
}

fn repetition_sub(hir: &Hir) -> &Hir {
    match hir.kind() {
        HirKind::Repetition(repetition) => &repetition.sub,
        _ => hir,
    }
}

/// The pieces sequenced before and after the address capture, flattening the
/// concatenations on the way to it (alternatives beside it are not in
/// sequence with it, and are left out).
fn around_address(hir: &Hir) -> Option<(Vec<&Hir>, Vec<&Hir>)> {
    match hir.kind() {
        HirKind::Capture(capture) if capture.name.as_deref() == Some(ADDRESS_FIELD) => {
            Some((Vec::new(), Vec::new()))
        }
        HirKind::Capture(capture) => around_address(&capture.sub),
        HirKind::Repetition(repetition) => around_address(&repetition.sub),
        HirKind::Alternation(branches) => branches.iter().find_map(around_address),
        HirKind::Concat(items) => items.iter().enumerate().find_map(|(i, item)| {
            let (inner_before, inner_after) = around_address(item)?;
            let mut before: Vec<&Hir> = items[..i].iter().collect();
            before.extend(inner_before);
            let mut after = inner_after;
            after.extend(items[i + 1..].iter());
            Some((before, after))
        }),
        _ => None,
    }
}

/// The literal text right before the address, read back through optional
/// pieces (`\[?`, `(?:MAC=\S* )?`).
fn separator(before: &[&Hir]) -> String {
    let mut text = String::new();
    for hir in before.iter().rev() {
        match (literal(hir), hir.kind()) {
            (Some(literal), _) => text.insert_str(0, &literal),
            (None, HirKind::Repetition(r)) if r.min == 0 && r.max == Some(1) => continue,
            _ => break,
        }
    }
    text
}

fn literal(hir: &Hir) -> Option<String> {
    match hir.kind() {
        HirKind::Literal(literal) => Some(String::from_utf8_lossy(&literal.0).into_owned()),
        _ => None,
    }
}

/// The literal text the regex requires after `target` within `hir` (the
/// literals that follow it in each concatenation holding it).
fn literals_after(hir: &Hir, target: &Hir) -> Option<String> {
    if std::ptr::eq(hir, target) {
        return Some(String::new());
    }
    match hir.kind() {
        HirKind::Capture(capture) => literals_after(&capture.sub, target),
        HirKind::Repetition(repetition) => literals_after(&repetition.sub, target),
        HirKind::Alternation(branches) => branches.iter().find_map(|b| literals_after(b, target)),
        HirKind::Concat(items) => items.iter().enumerate().find_map(|(i, item)| {
            let mut text = literals_after(item, target)?;
            items[i + 1..]
                .iter()
                .filter_map(literal)
                .for_each(|later| text.push_str(&later));
            Some(text)
        }),
        _ => None,
    }
}

/// The literal text the regex requires before `target` within `hir` (the
/// literals that precede it in each concatenation holding it).
fn literals_before(hir: &Hir, target: &Hir) -> Option<String> {
    if std::ptr::eq(hir, target) {
        return Some(String::new());
    }
    match hir.kind() {
        HirKind::Capture(capture) => literals_before(&capture.sub, target),
        HirKind::Repetition(repetition) => literals_before(&repetition.sub, target),
        HirKind::Alternation(branches) => branches.iter().find_map(|b| literals_before(b, target)),
        HirKind::Concat(items) => items.iter().enumerate().find_map(|(i, item)| {
            let inner = literals_before(item, target)?;
            let mut text: String = items[..i].iter().filter_map(literal).collect();
            text.push_str(&inner);
            Some(text)
        }),
        _ => None,
    }
}

/// The captures in `hir` whose text a client may choose.
fn client_captures<'h>(rule: &Rule, hir: &'h Hir, found: &mut Vec<&'h Hir>) {
    match hir.kind() {
        HirKind::Capture(capture) => match capture.name.as_deref() {
            Some(name) if client_controlled(rule, name) => found.push(hir),
            _ => client_captures(rule, &capture.sub, found),
        },
        HirKind::Repetition(repetition) => client_captures(rule, &repetition.sub, found),
        HirKind::Concat(items) | HirKind::Alternation(items) => {
            for item in items {
                client_captures(rule, item, found);
            }
        }
        _ => {}
    }
}

/// Whether a client may choose the text of `rule`'s field `name`: every
/// field typed as a string, except the syslog header's host and addresses,
/// ports and process ids, which syslog and the daemon write. The lint and
/// `tests/rule_forgery.rs` both forge exactly these fields.
pub fn client_controlled(rule: &Rule, name: &str) -> bool {
    let typed = rule
        .types
        .get(name)
        .is_some_and(|kind| *kind != FieldType::String);
    let written_by_daemon = name == "host.hostname"
        || [".ip", ".address", ".port", ".pid"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
    !typed && !written_by_daemon
}

/// The repetitions in `hir` without an upper bound whose repeated part is
/// one class matching every character of `text`.
fn unbounded_over<'h>(hir: &'h Hir, text: &str, found: &mut Vec<&'h Hir>) {
    match hir.kind() {
        HirKind::Repetition(repetition) => {
            if repetition.max.is_none() && class_matches_all(&repetition.sub, text) {
                found.push(hir);
            }
            unbounded_over(&repetition.sub, text, found);
        }
        HirKind::Capture(capture) => unbounded_over(&capture.sub, text, found),
        HirKind::Concat(items) | HirKind::Alternation(items) => {
            for item in items {
                unbounded_over(item, text, found);
            }
        }
        _ => {}
    }
}

fn class_matches_all(hir: &Hir, text: &str) -> bool {
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => text.chars().all(|c| {
            class
                .ranges()
                .iter()
                .any(|r| r.start() <= c && c <= r.end())
        }),
        HirKind::Class(Class::Bytes(class)) => text.bytes().all(|b| {
            class
                .ranges()
                .iter()
                .any(|r| r.start() <= b && b <= r.end())
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rule(regex: &str) -> Rule {
        let text = format!("[[rule]]\nid = \"t.rule\"\nregex = '{regex}'\n");
        super::super::parse_rules(Path::new("rules/t.toml"), &text)
            .unwrap()
            .remove(0)
            .1
    }

    fn warned(regex: &str) -> bool {
        forgery_warning(&rule(regex)).is_some()
    }

    #[test]
    fn an_open_capture_before_and_an_open_ending_after_the_address_are_warned() {
        // Issue 12's sshd and pam rules as they were.
        assert!(warned(
            r"Failed \S+ for (?P<user.name>.*?) from (?P<source.ip>[0-9a-fA-F:.]+)(?: port \d+)?(?: ssh2)?(?:: .*)?$"
        ));
        assert!(warned(
            r"ruser=(?P<r>.*?) rhost=(?P<source.ip>[0-9a-fA-F:.]+)(?:\s+user=(?P<u>.*?))?\s*$"
        ));
        // No end anchor: anything may follow the forged address.
        assert!(warned(
            r"for (?P<user.name>.+) from (?P<source.ip>[0-9a-fA-F:.]+) port \d+"
        ));
        // `\S+` holds "x[6.6.6.6]", and `.*` takes "[203.0.113.7]: …" in.
        assert!(warned(
            r"warning: (?P<d>\S+)\[(?P<source.ip>[0-9a-fA-F:.]+)\]: .*$"
        ));
        // Quotes around the capture do not help when the ending is `.*`.
        assert!(warned(
            r#"user "(?P<u>.*)", client: (?P<source.ip>[0-9a-fA-F:.]+), .*$"#
        ));
        // A class without quotes takes in the real address when no quote is
        // required before it.
        assert!(warned(
            r#"for (?P<u>.*) from (?P<source.ip>[0-9a-fA-F:.]+)(?: [^"]*)?"$"#
        ));
    }

    #[test]
    fn bounded_captures_or_a_closed_ending_are_not_warned() {
        // Address first: nothing before it can hold a forged one.
        assert!(!warned(r"^(?P<source.ip>[0-9a-fA-F:.]+) \S+ (?P<u>.*)$"));
        // The user name cannot hold " from ".
        assert!(!warned(
            r"for (?P<user.name>\S+) from (?P<source.ip>[0-9a-fA-F:.]+) port \d+(?:: .*)?$"
        ));
        // Open before, but only one-word pieces and `$` after the address.
        assert!(!warned(
            r"for (?P<user.name>.*?) from (?P<source.ip>[0-9a-fA-F:.]+)(?: port \d+)?(?: ssh2)?(?:: [A-Z]+ \S+)?$"
        ));
        // The name cannot hold the "[" before the address.
        assert!(!warned(
            r"warning: (?P<d>[^\s\[]+)\[(?P<source.ip>[0-9a-fA-F:.]+)\]: .*$"
        ));
        // Open before, but the quoted tail cannot take in the daemon's
        // request: "…" written before it.
        assert!(!warned(
            r#"user "(?P<u>.*)", client: (?P<source.ip>[0-9a-fA-F:.]+), request: "\S+", host: "[^"]*"$"#
        ));
        // An uncaptured part is the daemon's.
        assert!(!warned(
            r"OUT=\S* (?:MAC=\S* )?SRC=(?P<source.ip>[0-9a-fA-F:.]+) .*$"
        ));
        // A port or address field is written by the daemon.
        assert!(!warned(
            r"(?P<source.port>.*) from (?P<source.ip>[0-9a-fA-F:.]+).*$"
        ));
        // No address capture at all.
        assert!(!warned(r"user (?P<user.name>.*) logged in"));
    }

    #[test]
    fn the_separator_is_read_through_optional_pieces() {
        let hir =
            regex_syntax::parse(r"x (?P<u>.*)IN=\S* (?:MAC=\S* )?SRC=(?P<source.ip>.+)").unwrap();
        let (before, _) = around_address(&hir).unwrap();
        assert_eq!(separator(&before), " SRC=");
        let hir = regex_syntax::parse(r"\[client \[?(?P<source.ip>[0-9.]+)").unwrap();
        let (before, _) = around_address(&hir).unwrap();
        assert_eq!(separator(&before), "[client ");
    }

    /// A piece of regex that compiles on its own.
    fn pattern_piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(r".*".to_string()),
            Just(r".+?".to_string()),
            Just(r"\S+".to_string()),
            Just(r"[^,]*".to_string()),
            Just(r#""[^"]*""#.to_string()),
            Just(r"(?: port \d+)?".to_string()),
            Just(r"(?:: .*)?".to_string()),
            Just(r"(?:a|b c)*".to_string()),
            Just(r"\[?".to_string()),
            Just("$".to_string()),
            r"[ a-z=,:]{1,4}".prop_map(String::from),
        ]
    }

    /// A client-controlled capture, or none.
    fn client_capture() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(String::new()),
            Just("(?P<user.name>.*?)".to_string()),
            Just(r"(?P<user.name>\S+)".to_string()),
            Just(r#"(?P<user.name>[^"]*)"#.to_string()),
            Just(r"(?P<event.reason>[^,]*)".to_string()),
        ]
    }

    proptest::proptest! {
        /// Any rule is judged without a panic, and a warning names the
        /// rule; a rule that reads the address first is never warned about.
        #[test]
        fn any_rule_is_judged(
            before in proptest::collection::vec(pattern_piece(), 0..5),
            capture in client_capture(),
            between in proptest::collection::vec(pattern_piece(), 0..3),
            after in proptest::collection::vec(pattern_piece(), 0..6),
        ) {
            let before = before.concat();
            let between = between.concat();
            let after = after.concat();
            let pattern = format!("{before}{capture}{between} from (?P<source.ip>[0-9a-fA-F:.]+){after}");
            if let Some(warning) = forgery_warning(&rule(&pattern)) {
                proptest::prop_assert!(warning.contains("rule `t.rule`"), "{}", warning);
            }
            let first = format!("^(?P<source.ip>[0-9a-fA-F:.]+){after}{capture}");
            proptest::prop_assert!(forgery_warning(&rule(&first)).is_none(), "{}", first);
        }
    }

    #[test]
    fn the_warning_names_the_file_and_the_rule() {
        let warning = forgery_warning(&rule(
            r"for (?P<user.name>.*) from (?P<source.ip>[0-9a-fA-F:.]+).*$",
        ))
        .unwrap();
        assert!(
            warning.starts_with("rules/t.toml:1: rule `t.rule`: "),
            "{warning}"
        );
        assert!(warning.contains("\" from \""), "{warning}");
    }
}
