//! No shipped rule can be steered into reporting a forged address.
//!
//! Every rule file in `rules/` is loaded with the crate's own loader, so a
//! rule added later is covered without touching this file. For each example
//! the rule turns into an event with `source.ip`, the test takes each value a
//! client could have chosen (see [`client_controlled`]), inserts right after
//! it the text a daemon writes around an address ([`SHAPES`]) with a forged
//! address in it ([`FORGED`]), and runs the rule on the forged line. The rule
//! may then miss the line or report the real address; it must never report
//! an address that was not in the original line, in any address field.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use tailhook::rules::{load_rules, rule_files, FieldType, Rule};

/// What the supported daemons write around a client's address, with `{A}`
/// the forged address and `{B}` a second forged one. The first ten are the
/// forms named in issue 12; the rest are the other places our rule packs
/// read an address from.
const SHAPES: &[&str] = &[
    // sshd, with and without the auth info sshd appends after "ssh2: ".
    " from {A} port 1 ssh2",
    " from {A} port 1 ssh2: x",
    // ...and ending in ": ", where old sshd's own " from ADDRESS" follows.
    " from {A} port 1 ssh2:",
    // pam_unix, rhost last or followed by user=.
    " rhost={A}",
    " rhost={A} user=x",
    // postfix `name[ADDR]`, proftpd `(name[ADDR])`.
    "[{A}]",
    " unknown[{A}]:",
    // dovecot login processes.
    ", rip={A}, lip={B}",
    // TCP wrappers `name (ADDR)`.
    " ({A})",
    // nginx error log.
    " client: {A}",
    // netfilter.
    " SRC={A} DST={B}",
    // sshd's preauth lines: `user NAME ADDR port N [preauth]`.
    " {A} port 1",
    " {A} port 1 [preauth]",
    // dovecot auth workers `backend(user,ADDR)`, vsftpd `Client "ADDR"`,
    // apache `[client ADDR:PORT]`.
    ",{A}",
    ",{A})",
    " Client \"{A}\"",
    " [client {A}:1]",
];

/// Forged address pairs (`{A}`, `{B}`): IPv4, IPv6, and IPv4-mapped IPv6
/// (which rules report as the IPv4 address it carries).
const FORGED: &[(&str, &str)] = &[
    ("6.6.6.6", "7.7.7.7"),
    ("2001:db8:6::6", "2001:db8:7::7"),
    ("::ffff:6.6.6.6", "::ffff:7.7.7.7"),
];

/// Whether a client may have chosen the text of field `name`: every captured
/// string is, except what syslog or the daemon writes itself — the syslog
/// header's host, and addresses, ports and process ids (typed or not).
fn client_controlled(rule: &Rule, name: &str) -> bool {
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

/// The fields whose value is an address: the ones this test guards.
fn address_fields(rule: &Rule) -> Vec<&str> {
    rule.types
        .iter()
        .filter(|(_, kind)| **kind == FieldType::Ip)
        .map(|(name, _)| name.as_str())
        .collect()
}

fn shipped_rules() -> Vec<Rule> {
    let folder = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let files = rule_files(&[folder]).expect("list rules/");
    assert!(!files.is_empty(), "no rule files in rules/");
    load_rules(&files).unwrap_or_else(|e| panic!("{e}"))
}

/// Each client-controlled capture of `line`: its name and where its value
/// ends (where a client's appended text would go).
fn client_value_ends(rule: &Rule, line: &str) -> Vec<(String, usize)> {
    // The regex crate reads the same syntax as the rule's engine and reports
    // the same leftmost-first captures, with their spans.
    let regex = regex::Regex::new(rule.regex.as_str()).expect("rule regex compiles");
    let captures = regex.captures(line).expect("example matches");
    regex
        .capture_names()
        .enumerate()
        .filter_map(|(group, name)| Some((name?, captures.get(group)?)))
        .filter(|(name, _)| client_controlled(rule, name))
        .map(|(name, value)| (name.to_string(), value.end()))
        .collect()
}

struct Tally {
    rules: usize,
    examples: usize,
    lines: usize,
    forged: Vec<String>,
}

#[test]
fn no_shipped_rule_reports_a_forged_address() {
    let mut tally = Tally {
        rules: 0,
        examples: 0,
        lines: 0,
        forged: Vec::new(),
    };
    for rule in shipped_rules() {
        let guarded = address_fields(&rule);
        let mut tried_rule = false;
        for example in rule.examples.iter().filter(|e| e.matches) {
            let Some(real) = rule.apply(&example.line) else {
                continue;
            };
            if !real.contains_key("source.ip") {
                continue;
            }
            tried_rule = true;
            tally.examples += 1;
            for (field, end) in client_value_ends(&rule, &example.line) {
                for shape in SHAPES {
                    for (a, b) in FORGED {
                        let inserted = shape.replace("{A}", a).replace("{B}", b);
                        let line = format!(
                            "{}{inserted}{}",
                            &example.line[..end],
                            &example.line[end..]
                        );
                        tally.lines += 1;
                        let Some(got) = rule.apply(&line) else {
                            continue;
                        };
                        let moved: BTreeMap<&str, &serde_json::Value> = guarded
                            .iter()
                            .filter_map(|name| Some((*name, got.get(*name)?)))
                            .filter(|(name, value)| real.get(*name) != Some(value))
                            .collect();
                        let forged_address = moved.values().any(|value| {
                            value
                                .as_str()
                                .and_then(|v| v.parse::<IpAddr>().ok())
                                .is_some()
                        });
                        if forged_address {
                            tally.forged.push(format!(
                                "rule `{}` ({}): text appended to `{field}` moves {}\n  example: {}\n  forged:  {line}",
                                rule.id,
                                rule.origin,
                                serde_json::to_string(&moved).unwrap_or_default(),
                                example.line,
                            ));
                        }
                    }
                }
            }
        }
        tally.rules += usize::from(tried_rule);
    }
    eprintln!(
        "forgery: {} rules, {} examples, {} shapes x {} address forms, {} forged lines tried, {} forged",
        tally.rules,
        tally.examples,
        SHAPES.len(),
        FORGED.len(),
        tally.lines,
        tally.forged.len()
    );
    assert!(tally.rules > 0, "no rule example yields source.ip");
    assert!(
        tally.forged.is_empty(),
        "{} forged line(s) reported a forged address:\n{}",
        tally.forged.len(),
        tally.forged.join("\n")
    );
}

/// `tailhook check`'s forgery warning stays quiet on every shipped rule.
#[test]
fn no_shipped_rule_is_warned_about_by_check() {
    let warnings: Vec<String> = shipped_rules()
        .iter()
        .filter_map(tailhook::rules::forgery_warning)
        .collect();
    assert!(warnings.is_empty(), "{}", warnings.join("\n"));
}
