//! Reading rule files: TOML `[[rule]]` tables into compiled [`Rule`]s, with
//! every error located at `file:line` and naming the rule.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::gate::{SuppressSpec, ThresholdSpec};
use super::overrides::{self, Override, OverrideReport, OverrideSpec};
use super::{Example, FieldType, Rule, RuleRegex, Severity};

/// A rule-file problem: where it is and what is wrong.
#[derive(Debug)]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based line in `file`, when known.
    pub line: Option<usize>,
    pub rule: Option<String>,
    pub problem: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, ": rule `{rule}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for RuleError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<OverrideSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    severity: Severity,
    regex: Spanned<String>,
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    #[serde(default)]
    types: BTreeMap<String, FieldType>,
    threshold: Option<ThresholdSpec>,
    suppress: Option<SuppressSpec>,
    #[serde(default)]
    example: Vec<ExampleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleSpec {
    line: String,
    #[serde(default)]
    fields: BTreeMap<String, toml::Value>,
    /// `match = false` marks a line the rule must not turn into an event.
    #[serde(default = "yes", rename = "match")]
    matches: bool,
}

fn yes() -> bool {
    true
}

/// `{syslog}` at the start of a regex stands for a syslog line's header up to
/// the program name: an optional `<PRI>` and version; the time as classic
/// syslog (`Nov 22 10:00:01`), RFC 3339 or ISO 8601 with a space for the `T`
/// (fraction after `.` or `,`, zone optional), TAI64N (daemontools' `@4000…`),
/// or RFC 5424's nil `-`; then the host (`host.hostname`, a name, FQDN or
/// IPv4 address), which some senders omit and some precede by two spaces.
/// RFC 5424 lines reach the rules already rewritten to this layout (see
/// `rfc5424`). Kept to one pass of few states: every rule's match runs it.
pub const SYSLOG_PLACEHOLDER: &str = "{syslog}";

fn expand_placeholders(regex: &str) -> std::borrow::Cow<'_, str> {
    match regex.strip_prefix(SYSLOG_PLACEHOLDER) {
        Some(rest) => format!("{}{rest}", super::syslog_header::SYSLOG_HEADER).into(),
        None => regex.into(),
    }
}

/// Expands `paths` (files, or folders whose `*.toml` are rule files) in a
/// stable order: folders sorted by file name, like `rules.d` conventions.
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleError> {
    let mut files = Vec::new();
    for path in paths {
        let unreadable = |e: std::io::Error| RuleError {
            file: path.clone(),
            line: None,
            rule: None,
            problem: format!("cannot read rules: {e}"),
        };
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(unreadable)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "toml") && p.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            std::fs::metadata(path).map_err(unreadable)?;
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Every rule of the loaded files, with the files' overrides applied.
#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub overrides: OverrideReport,
}

/// Parses and compiles every rule in `files` (ids must be unique across
/// them), then applies every file's `[[override]]` tables in order.
pub fn load_rules(files: &[PathBuf]) -> Result<RuleSet, RuleError> {
    let mut rules = Vec::new();
    let mut all_overrides = Vec::new();
    let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| RuleError {
            file: file.clone(),
            line: None,
            rule: None,
            problem: format!("cannot read rules: {e}"),
        })?;
        let parsed = parse_file(file, &text)?;
        all_overrides.extend(parsed.overrides);
        for (line, rule) in parsed.rules {
            if let Some((other_file, other_line)) = seen.get(&rule.id) {
                return Err(RuleError {
                    file: file.clone(),
                    line: Some(line),
                    rule: Some(rule.id.clone()),
                    problem: format!("id already used at {}:{other_line}", other_file.display()),
                });
            }
            seen.insert(rule.id.clone(), (file.clone(), line));
            rules.push(rule);
        }
    }
    let overrides = overrides::apply(&mut rules, &all_overrides);
    Ok(RuleSet { rules, overrides })
}

/// One file's rules (each with the line it starts on) and overrides.
struct ParsedFile {
    rules: Vec<(usize, Rule)>,
    overrides: Vec<Override>,
}

/// Parses one file's rules, each with the line it starts on. Its overrides
/// are checked but not applied: they may concern other files' rules.
pub fn parse_rules(file: &Path, text: &str) -> Result<Vec<(usize, Rule)>, RuleError> {
    parse_file(file, text).map(|parsed| parsed.rules)
}

fn parse_file(file: &Path, text: &str) -> Result<ParsedFile, RuleError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let parsed: RuleFile = toml::from_str(text).map_err(|e| RuleError {
        file: file.to_path_buf(),
        line: e.span().map(|s| line_of(s.start)),
        rule: None,
        problem: e.message().to_string(),
    })?;
    let overrides = parsed
        .overrides
        .into_iter()
        .map(|spanned| {
            let line = line_of(spanned.span().start);
            Override::new(file, line, spanned.into_inner())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rules = parsed
        .rule
        .into_iter()
        .map(|spanned| {
            let line = line_of(spanned.span().start);
            let spec = spanned.into_inner();
            let fail = |at: usize, problem: String| RuleError {
                file: file.to_path_buf(),
                line: Some(at),
                rule: Some(spec.id.clone()),
                problem,
            };
            let origin = format!("{}:{line}", file.display());
            compile(&spec, origin, |span, problem| {
                fail(span.map_or(line, line_of), problem)
            })
            .map(|rule| (line, rule))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParsedFile { rules, overrides })
}

/// Builds a [`Rule`]; `fail` turns a problem (at a span, if known) into an error.
fn compile(
    spec: &RuleSpec,
    origin: String,
    fail: impl Fn(Option<usize>, String) -> RuleError,
) -> Result<Rule, RuleError> {
    let valid_id = !spec.id.is_empty()
        && spec
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid_id {
        return Err(fail(
            None,
            "id must be non-empty and use only letters, digits, `.`, `_` and `-`".into(),
        ));
    }
    let regex_at = Some(spec.regex.span().start);
    let regex = RuleRegex::new(&expand_placeholders(spec.regex.get_ref()), &spec.types)
        .map_err(|e| fail(regex_at, format!("regex does not compile:\n{e}")))?;
    let captures: Vec<String> = regex.field_names().map(str::to_string).collect();
    if captures.is_empty() {
        return Err(fail(
            regex_at,
            "regex has no named capture; name the fields, e.g. (?P<source.ip>\\S+)".into(),
        ));
    }
    for name in spec.types.keys() {
        if !captures.contains(name) {
            return Err(fail(
                None,
                format!(
                    "types names `{name}`, which the regex does not capture (captures: {})",
                    captures.join(", ")
                ),
            ));
        }
    }
    let field_lists = [
        (
            "threshold.group_by",
            spec.threshold.as_ref().map(|t| &t.group_by),
        ),
        ("suppress.key", spec.suppress.as_ref().map(|s| &s.key)),
    ];
    for (key, names) in field_lists {
        for name in names.into_iter().flatten() {
            if !captures.contains(name) {
                return Err(fail(
                    None,
                    format!(
                        "{key} names `{name}`, which the regex does not capture (captures: {})",
                        captures.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(threshold) = &spec.threshold {
        if threshold.count < 2 || threshold.within.is_zero() {
            return Err(fail(
                None,
                "threshold needs count >= 2 and a non-zero within".into(),
            ));
        }
    }
    if spec.suppress.as_ref().is_some_and(|s| s.period.is_zero()) {
        return Err(fail(None, "suppress.for must be above zero".into()));
    }
    let ignore = spec
        .ignore
        .iter()
        .enumerate()
        .map(|(i, pattern)| {
            regex::Regex::new(pattern.get_ref()).map_err(|e| {
                fail(
                    Some(pattern.span().start),
                    format!("ignore[{i}] does not compile:\n{e}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let examples = spec
        .example
        .iter()
        .map(|ex| Example {
            line: ex.line.clone(),
            matches: ex.matches,
            fields: ex
                .fields
                .iter()
                .map(|(k, v)| (k.as_str().into(), toml_to_json(v)))
                .collect(),
        })
        .collect();
    Ok(Rule {
        id: spec.id.clone(),
        origin,
        description: spec.description.clone(),
        severity: spec.severity,
        regex,
        ignore,
        types: spec.types.clone(),
        ignore_ips: Vec::new(),
        threshold: spec.threshold.clone(),
        suppress: spec.suppress.clone(),
        examples,
    })
}

fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(usize, Rule)>, RuleError> {
        parse_rules(Path::new("rules/test.toml"), text)
    }

    #[test]
    fn bad_regex_names_file_line_rule_and_position() {
        let err = parse(
            "# comment\n\n[[rule]]\nid = \"sshd.broken\"\nregex = 'Failed (?P<user.name>\\S+ from'\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("rules/test.toml:5: rule `sshd.broken`: regex does not compile"),
            "{text}"
        );
        assert!(text.contains("unclosed group"), "{text}");
        assert!(text.contains('^'), "position marker expected: {text}");
    }

    #[test]
    fn unknown_key_and_bad_severity_are_located() {
        let err = parse("[[rule]]\nid = \"a\"\nregex = '(?P<x>.)'\nthreshhold = 5\n").unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
        assert_eq!(err.line, Some(4));
        let err =
            parse("[[rule]]\nid = \"a\"\nregex = '(?P<x>.)'\nseverity = \"urgent\"\n").unwrap_err();
        assert!(err.to_string().contains("urgent"), "{err}");
    }

    #[test]
    fn types_must_name_a_capture_and_ids_must_be_unique() {
        let err = parse("[[rule]]\nid = \"a\"\nregex = '(?P<x>.)'\ntypes = { y = \"int\" }\n")
            .unwrap_err();
        assert!(err.to_string().contains("`y`"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("a.toml");
        let two = dir.path().join("b.toml");
        std::fs::write(&one, "[[rule]]\nid = \"dup\"\nregex = '(?P<x>a)'\n").unwrap();
        std::fs::write(&two, "\n[[rule]]\nid = \"dup\"\nregex = '(?P<x>b)'\n").unwrap();
        let files = rule_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, vec![one, two]);
        let err = load_rules(&files).unwrap_err();
        assert!(
            err.to_string()
                .contains("b.toml:2: rule `dup`: id already used at"),
            "{err}"
        );
    }

    #[test]
    fn threshold_and_suppress_parse_and_name_captured_fields() {
        let base = "[[rule]]\nid = \"a\"\nregex = '(?P<source.ip>\\S+)'\n";
        let (_, rule) = parse(&format!(
            "{base}threshold = {{ count = 5, within = \"10m\", group_by = [\"source.ip\"] }}\nsuppress = {{ for = \"1h\" }}\n"
        ))
        .unwrap()
        .remove(0);
        assert_eq!(
            rule.threshold.unwrap().within,
            std::time::Duration::from_secs(600)
        );
        assert_eq!(
            rule.suppress.unwrap().period,
            std::time::Duration::from_secs(3600)
        );

        let err = parse(&format!(
            "{base}suppress = {{ for = \"1h\", key = [\"user.name\"] }}\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("suppress.key names `user.name`"),
            "{err}"
        );
        let err = parse(&format!(
            "{base}threshold = {{ count = 1, within = \"1m\" }}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("count >= 2"), "{err}");
        let err = parse(&format!(
            "{base}threshold = {{ count = 3, within = \"soon\" }}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn syslog_placeholder_accepts_classic_rfc3339_and_rfc5424_headers() {
        let (_, rule) =
            parse("[[rule]]\nid = \"a\"\nregex = '{syslog}sshd\\[(?P<process.pid>\\d+)\\]: x$'\n")
                .unwrap()
                .remove(0);
        for line in [
            "Nov 22 10:00:01 web1 sshd[1]: x",
            "Nov  2 10:00:01 web1 sshd[1]: x",
            "Nov 2 10:00:01 web1 sshd[1]: x",
            "2026-11-22T10:00:01.123456+01:00 web1 sshd[1]: x",
            "<38>1 2026-11-22T10:00:01Z web1 sshd[1]: x",
            "Nov 22 10:00:01 sshd[1]: x",
            "@400000004c91b044077a9e94 sshd[1]: x",
        ] {
            assert!(rule.apply(line).is_some(), "{line}");
        }
        assert_eq!(
            rule.apply("Nov 22 10:00:01 web1 sshd[1]: x").unwrap()["host.hostname"],
            "web1"
        );
        assert!(rule
            .apply("garbage Nov 22 10:00:01 web1 sshd[1]: x")
            .is_none());
    }

    fn header_rule() -> Rule {
        parse("[[rule]]\nid = \"a\"\nregex = '{syslog}sshd\\[(?P<process.pid>\\d+)\\]: x (?P<source.ip>\\S+)$'\n")
            .unwrap()
            .remove(0)
            .1
    }

    /// The host each header form yields, or `None` for a line without one.
    fn host_of(rule: &Rule, line: &str) -> Option<Option<String>> {
        let fields = rule.apply(line)?;
        assert_eq!(fields["process.pid"], "1", "{line}");
        assert_eq!(fields["source.ip"], "192.0.2.1", "{line}");
        Some(
            fields
                .get("host.hostname")
                .and_then(|h| h.as_str())
                .map(str::to_string),
        )
    }

    #[test]
    fn syslog_placeholder_reads_iso_times_with_a_space() {
        let rule = header_rule();
        for line in [
            "2026-11-22 10:00:01 web1 sshd[1]: x 192.0.2.1",
            "2026-11-22 10:00:01.003 web1 sshd[1]: x 192.0.2.1",
            "2026-11-22 10:00:01,003 web1 sshd[1]: x 192.0.2.1",
            "2026-11-22 10:00:01+0100 web1 sshd[1]: x 192.0.2.1",
            "2026-11-22 10:00:01.123456-05:00 web1 sshd[1]: x 192.0.2.1",
            "2026-11-22 10:00:01Z web1 sshd[1]: x 192.0.2.1",
            "2026-11-22 10:00:01  web1 sshd[1]: x 192.0.2.1",
            "2026-11-22T10:00:01+02  web1 sshd[1]: x 192.0.2.1",
        ] {
            assert_eq!(host_of(&rule, line), Some(Some("web1".into())), "{line}");
        }
        assert_eq!(
            host_of(&rule, "2026-11-22 10:00 web1 sshd[1]: x 192.0.2.1"),
            None
        );
    }

    #[test]
    fn syslog_placeholder_reads_rfc5424_with_and_without_structured_data() {
        let rule = header_rule();
        for (line, host) in [
            ("<34>1 2026-11-22T10:00:01.003Z web1 sshd 1 - - x 192.0.2.1", Some("web1")),
            ("<34>1 2026-11-22T10:00:01.003Z fw1.example.net sshd 1 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] x 192.0.2.1", Some("fw1.example.net")),
            ("<34>1 2026-11-22T10:00:01+01:00 web1 sshd 1 - [a@1 b=\"]\"][c@2] x 192.0.2.1", Some("web1")),
            ("<34>1 2026-11-22T10:00:01Z - sshd 1 - - x 192.0.2.1", None),
            ("<34>1 - web1 sshd 1 - - x 192.0.2.1", Some("web1")),
            ("<34>1 2026-11-22T10:00:01Z web1 sshd 1 - - \u{feff}x 192.0.2.1", Some("web1")),
        ] {
            assert_eq!(host_of(&rule, line), Some(host.map(str::to_string)), "{line}");
        }
        // The process id is the field RFC 5424 gives it, never message text.
        assert!(rule
            .apply("<34>1 2026-11-22T10:00:01Z web1 sshd - - - x 192.0.2.1")
            .is_none());
    }

    #[test]
    fn syslog_placeholder_reads_missing_dotted_and_numeric_hosts() {
        let rule = header_rule();
        for (line, host) in [
            ("Nov 22 10:00:01 sshd[1]: x 192.0.2.1", None),
            ("2026-11-22T10:00:01Z sshd[1]: x 192.0.2.1", None),
            ("2026-11-22 10:00:01 sshd[1]: x 192.0.2.1", None),
            (
                "Nov 22 10:00:01 web1.dc2.example.com sshd[1]: x 192.0.2.1",
                Some("web1.dc2.example.com"),
            ),
            (
                "<38>Nov 22 10:00:01 192.0.2.254 sshd[1]: x 192.0.2.1",
                Some("192.0.2.254"),
            ),
            (
                "2026-11-22T10:00:01.5Z web-1_a sshd[1]: x 192.0.2.1",
                Some("web-1_a"),
            ),
        ] {
            assert_eq!(
                host_of(&rule, line),
                Some(host.map(str::to_string)),
                "{line}"
            );
        }
        for line in [
            "- web1 sshd[1]: x 192.0.2.1",
            "x Nov 22 10:00:01 web1 sshd[1]: x 192.0.2.1",
            "Nov 22 10:00:01 web1 other sshd[1]: x 192.0.2.1",
        ] {
            assert_eq!(host_of(&rule, line), None, "{line}");
        }
    }

    #[test]
    fn overrides_apply_after_every_file_in_order_and_later_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        // `a-local.toml` sorts before the rules it overrides.
        std::fs::write(
            dir.path().join("a-local.toml"),
            "[[override]]\nrules = [\"x.*\"]\nenabled = false\nseverity = \"low\"\n\n\
             [[override]]\nrules = [\"x.two\"]\nenabled = true\nseverity = \"critical\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "[[rule]]\nid = \"x.one\"\nregex = '(?P<a>1)'\n\
             [[rule]]\nid = \"x.two\"\nregex = '(?P<a>2)'\n\
             [[rule]]\nid = \"y.three\"\nregex = '(?P<a>3)'\n",
        )
        .unwrap();
        let files = rule_files(&[dir.path().to_path_buf()]).unwrap();
        let set = load_rules(&files).unwrap();
        let kept: Vec<(&str, Severity)> = set
            .rules
            .iter()
            .map(|r| (r.id.as_str(), r.severity))
            .collect();
        assert_eq!(
            kept,
            [("x.two", Severity::Critical), ("y.three", Severity::Medium)]
        );
        assert_eq!(set.overrides.applied.len(), 2, "{:?}", set.overrides);
        assert!(set.overrides.warnings.is_empty(), "{:?}", set.overrides);
    }

    #[test]
    fn an_override_must_change_something_and_name_rules() {
        let err = parse("[[override]]\nrules = [\"x.*\"]\n").unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(err.to_string().contains("changes nothing"), "{err}");
        let err = parse("\n[[override]]\nrules = []\nenabled = false\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().contains("names no rule-id glob"), "{err}");
        let err = parse("[[override]]\nrules = [\"x\"]\nseverity = \"urgent\"\n").unwrap_err();
        assert!(err.to_string().contains("urgent"), "{err}");
    }

    #[test]
    fn missing_rule_path_is_reported() {
        let err = rule_files(&[PathBuf::from("/nonexistent/rules.d")]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rules.d"), "{err}");
    }

    /// A TOML string holding `text`.
    fn quoted(text: &str) -> String {
        toml::Value::String(text.to_string()).to_string()
    }

    /// Regex-like text: mostly the characters regex syntax is made of.
    fn regex_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z0-9 .*+?|^$(){}\\[\\]\\\\<>P:,=!-]{0,40}",
            "\\(\\?P<[a-z.]{1,12}>[^()]{0,12}\\)[a-z0-9 .*+?{},\\\\-]{0,20}",
            any::<String>(),
        ]
    }

    proptest::proptest! {
        /// Any text as a rule file: rules or an error naming the file.
        #[test]
        fn arbitrary_rule_files_load_or_fail_cleanly(text in "\\PC{0,200}") {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(e.to_string().starts_with("rules/test.toml"), "{}", e);
            }
        }

        /// A well-formed rule with an arbitrary regex, ignore pattern and
        /// example: it compiles and its examples run, or the error names
        /// the file, the line and the rule.
        #[test]
        fn arbitrary_regexes_compile_or_fail_cleanly(
            regex in regex_text(),
            ignore in regex_text(),
            line in proptest::prelude::any::<String>(),
        ) {
            let text = format!(
                "[[rule]]\nid = \"p.rule\"\nregex = {}\nignore = [{}]\n[[rule.example]]\nline = {}\n",
                quoted(&regex),
                quoted(&ignore),
                quoted(&line)
            );
            match parse(&text) {
                Ok(rules) => {
                    for (_, rule) in rules {
                        let _ = rule.check_examples();
                    }
                }
                Err(e) => {
                    let shown = e.to_string();
                    proptest::prop_assert!(shown.starts_with("rules/test.toml:"), "{}", shown);
                    proptest::prop_assert!(shown.contains("rule `p.rule`"), "{}", shown);
                }
            }
        }
    }
}
