//! No shipped rule can be steered into reporting a forged address.
//!
//! Every rule file in `rules/` is loaded with the crate's own loader, so a
//! rule added later is covered without touching this file. For each example
//! the rule turns into an event with `source.ip`, the test takes each value a
//! client could have chosen (`tailhook::rules::client_controlled`: every
//! string field but the syslog host, addresses, ports and process ids, the
//! same fields `tailhook check`'s warning considers), inserts right after
//! it the text a daemon writes around an address ([`SHAPES`]) and the
//! example's own line replayed (see [`forged_texts`]), with a forged address
//! ([`FORGED`]), and runs the rule on the forged line; a property test adds
//! generated texts. The rule may then miss the line or report the real
//! address: every address field must keep the value the example gives it.
//! A failure names the rule, its file, the field, the example and the
//! forged line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;

use tailhook::event::Fields;
use tailhook::rules::{classic_form, client_controlled, load_rules, rule_files, FieldType, Rule};

/// What the supported daemons write around a client's address, with `{A}`
/// the forged address and `{B}` a second forged one: the forms issue 12
/// names, and the other places our rule packs read an address from. Add a
/// daemon's form here when a rule for a new daemon reads it.
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

/// Client-controlled fields whose text the daemon validates or picks from
/// a fixed set (a module or command name, a reverse-DNS host name the
/// resolver and daemon check): [`SHAPES`] are appended to them, but not the
/// replay of the daemon's own line, which such a field cannot hold.
const VALIDATED_BY_DAEMON: &[&str] = &[
    "apache.module",
    "auth.backend",
    "event.action",
    "http.request.method",
    "observer.ingress.interface.name",
    "process.name",
    "rule.name",
    "service.name",
    "source.domain",
];

/// The address fields (typed `ip`) that `got` gives another value than the
/// example's `real` fields: empty unless the line was forged.
fn moved_addresses<'a>(
    rule: &'a Rule,
    real: &Fields,
    got: &'a Fields,
) -> BTreeMap<&'a str, &'a serde_json::Value> {
    rule.types
        .iter()
        .filter(|(_, kind)| **kind == FieldType::Ip)
        .filter_map(|(name, _)| Some((name.as_str(), got.get(name.as_str())?)))
        .filter(|(name, value)| real.get(*name) != Some(*value))
        .collect()
}

fn shipped_rules() -> Vec<Rule> {
    let folder = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let files = rule_files(&[folder]).expect("list rules/");
    assert!(!files.is_empty(), "no rule files in rules/");
    load_rules(&files).unwrap_or_else(|e| panic!("{e}")).rules
}

/// Where one example's captures are: each client-controlled value's name
/// and end (where a client's appended text would go), the real address, and
/// where the daemon's text before the address starts (the end of the last
/// capture before it).
struct Spans {
    client_value_ends: Vec<(String, usize)>,
    address: Range<usize>,
    separator_start: usize,
}

fn spans(rule: &Rule, line: &str) -> Spans {
    // The regex crate reads the same syntax as the rule's engine and reports
    // the same leftmost-first captures, with their spans.
    let regex = regex::Regex::new(rule.regex.as_str()).expect("rule regex compiles");
    let captures = regex.captures(line).expect("example matches");
    let named: Vec<(&str, regex::Match)> = regex
        .capture_names()
        .enumerate()
        .filter_map(|(group, name)| Some((name?, captures.get(group)?)))
        .collect();
    let address = named
        .iter()
        .find(|(name, _)| *name == "source.ip")
        .map(|(_, m)| m.range())
        .expect("example yields source.ip");
    let separator_start = named
        .iter()
        .map(|(_, m)| m.end())
        .filter(|end| *end <= address.start)
        .max()
        .unwrap_or(0);
    Spans {
        client_value_ends: named
            .iter()
            .filter(|(name, _)| client_controlled(rule, name))
            .map(|(name, m)| (name.to_string(), m.end()))
            .collect(),
        address,
        separator_start,
    }
}

/// The texts a client appends after a value ending at `end`: every
/// [`SHAPES`] entry, and the example's own line replayed with the forged
/// address in place of the real one — the daemon's text from the value (or,
/// for a value after the address, from the capture before the address) up
/// to the address, then the forged address, without and with the rest of
/// the line (not after a field in [`VALIDATED_BY_DAEMON`]). The replay
/// forges each daemon's own wording, so a rule needs no shape of its own.
fn forged_texts(
    line: &str,
    spans: &Spans,
    (field, end): (&str, usize),
    a: &str,
    b: &str,
) -> Vec<String> {
    let mut texts: Vec<String> = SHAPES
        .iter()
        .map(|shape| shape.replace("{A}", a).replace("{B}", b))
        .collect();
    if VALIDATED_BY_DAEMON.contains(&field) {
        return texts;
    }
    let from = if end <= spans.address.start {
        end
    } else {
        spans.separator_start
    };
    let replay = format!("{}{a}", &line[from..spans.address.start]);
    texts.push(format!("{replay}{}", &line[spans.address.end..]));
    texts.push(replay);
    texts
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
        let mut tried_rule = false;
        for example in rule.examples.iter().filter(|e| e.matches) {
            // Positions are in the line as the rules read it (an RFC 5424
            // line rewritten to the classic layout).
            let example_line = classic_form(&example.line);
            let Some(real) = rule.apply(&example_line) else {
                continue;
            };
            if !real.contains_key("source.ip") {
                continue;
            }
            tried_rule = true;
            tally.examples += 1;
            let spans = spans(&rule, &example_line);
            for (field, end) in &spans.client_value_ends {
                for (a, b) in FORGED {
                    for inserted in forged_texts(&example_line, &spans, (field, *end), a, b) {
                        let line = format!(
                            "{}{inserted}{}",
                            &example_line[..*end],
                            &example_line[*end..]
                        );
                        tally.lines += 1;
                        let Some(got) = rule.apply(&line) else {
                            continue;
                        };
                        let moved = moved_addresses(&rule, &real, &got);
                        if !moved.is_empty() {
                            tally.forged.push(format!(
                                "rule `{}` ({}): text appended to `{field}` moves {}\n  example: {}\n  forged:  {line}",
                                rule.id,
                                rule.origin,
                                serde_json::to_string(&moved).unwrap_or_default(),
                                example_line,
                            ));
                        }
                    }
                }
            }
        }
        tally.rules += usize::from(tried_rule);
    }
    eprintln!(
        "forgery: {} rules, {} examples, {} shapes + 2 replays x {} address forms, {} forged lines tried, {} forged",
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

/// Text a client might append, built from the words daemons write around
/// addresses and arbitrary printable characters.
fn client_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just(" from ".to_string()),
        Just(" port 1".to_string()),
        Just(" ssh2".to_string()),
        Just(": ".to_string()),
        Just(" rhost=".to_string()),
        Just(" user=x".to_string()),
        Just(", rip=".to_string()),
        Just(", lip=7.7.7.7".to_string()),
        Just(" client: ".to_string()),
        Just(" SRC=".to_string()),
        Just(" DST=7.7.7.7".to_string()),
        Just(" RSA SHA256:x".to_string()),
        Just(" [preauth]".to_string()),
        Just("6.6.6.6".to_string()),
        Just("2001:db8:6::6".to_string()),
        Just("::ffff:6.6.6.6".to_string()),
        "[\\[\\]()<>\"', =:]".prop_map(String::from),
        "[ -~]{0,6}",
    ];
    proptest::collection::vec(word, 0..10).prop_map(|words| words.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Arbitrary text after any client-controlled value of any example never
    /// gives an address field a value it did not have.
    #[test]
    fn arbitrary_client_text_never_moves_an_address(
        pick in any::<proptest::sample::Index>(),
        field_pick in any::<proptest::sample::Index>(),
        text in client_text(),
    ) {
        let cases = forgeable_examples();
        let case = &cases[pick.index(cases.len())];
        let (field, end) = &case.client_value_ends[field_pick.index(case.client_value_ends.len())];
        let line = &case.line;
        let forged = format!("{}{text}{}", &line[..*end], &line[*end..]);
        if let Some(got) = case.rule.apply(&forged) {
            let moved = moved_addresses(&case.rule, &case.real, &got);
            prop_assert!(
                moved.is_empty(),
                "rule `{}` ({}): text appended to `{field}` moves {:?}\n  example: {line}\n  forged:  {forged}",
                case.rule.id,
                case.rule.origin,
                moved
            );
        }
    }
}

/// A shipped example that yields `source.ip` and has a client-controlled
/// value: its rule, line, real fields and where its client values end.
struct ForgeableExample {
    rule: Rule,
    line: String,
    real: Fields,
    client_value_ends: Vec<(String, usize)>,
}

fn forgeable_examples() -> &'static [ForgeableExample] {
    static CASES: OnceLock<Vec<ForgeableExample>> = OnceLock::new();
    CASES.get_or_init(|| {
        let mut cases = Vec::new();
        for rule in shipped_rules() {
            for example in rule.examples.iter().filter(|e| e.matches) {
                let example_line = classic_form(&example.line).into_owned();
                let Some(real) = rule.apply(&example_line) else {
                    continue;
                };
                if !real.contains_key("source.ip") {
                    continue;
                }
                let client_value_ends = spans(&rule, &example_line).client_value_ends;
                if !client_value_ends.is_empty() {
                    cases.push(ForgeableExample {
                        rule: rule.clone(),
                        line: example_line,
                        real,
                        client_value_ends,
                    });
                }
            }
        }
        assert!(!cases.is_empty(), "no shipped example to forge");
        cases
    })
}
