//! Rules: the stage that decides which lines become events.
//!
//! A rule is a regex whose named captures (`(?P<source.ip>…)`) are the event's
//! fields, plus `ignore` regexes, field `types` and inline examples (DESIGN §4).
//! [`load`] reads rule files; a [`Matcher`] is the subset of rules one input
//! selected, behind a literal prefilter so the common case — a line that
//! matches nothing — costs one scan, and only the rules whose fixed text
//! occurs run their capturing regex. [`forgery_warning`] (the `lint`
//! module) flags a rule a client could steer into reporting a forged
//! address, for `check` and `test-rules`.
//!
//! This module knows nothing of files being tailed or webhooks: it turns text
//! into `(rule, fields)` and fields into [`Event`]s, stamped with the time
//! the line states ([`linetime`]).

mod gate;
mod linetime;
mod lint;
mod load;
mod overrides;
mod prefilter;
mod rfc5424;
mod syslog_header;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::{
    fields_map, Event, EventView, FieldValue, Fields, LogOrigin, MatchedFields, SourceFile,
    ViewFields,
};

pub use gate::{Admit, Gate, SuppressSpec, ThresholdSpec};
pub use linetime::{zone_named, LineClock, LineTimes, RememberingClock};
pub use lint::{client_controlled, forgery_warning};
pub use load::{load_rules, parse_rules, rule_files, RuleError, RuleSet};
pub use overrides::OverrideReport;
pub use prefilter::Found;
pub use rfc5424::classic_form;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What a captured string is converted to in the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Int,
    Float,
    Bool,
    /// A string, but only an address that parses as IPv4/IPv6 matches (so a
    /// forged `user.name` cannot smuggle text into `source.ip`), in canonical
    /// form (IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed lowercase).
    Ip,
}

impl FieldType {
    fn convert(self, text: &str) -> Option<FieldValue<'_>> {
        match self {
            FieldType::String => Some(FieldValue::Text(Cow::Borrowed(text))),
            FieldType::Int => text.parse::<i64>().ok().map(FieldValue::Int),
            FieldType::Float => text.parse::<f64>().ok().map(FieldValue::Float),
            FieldType::Bool => text.parse::<bool>().ok().map(FieldValue::Bool),
            // Canonical form: `::ffff:192.0.2.1` is the IPv4 address it
            // carries, so blocklists and SOC tools see one address. Dotted
            // IPv4 parses only in its canonical form (no leading zeros), so
            // such text is kept as written, without formatting it again.
            FieldType::Ip => match text.parse::<IpAddr>().ok()? {
                IpAddr::V4(_) => Some(FieldValue::Text(Cow::Borrowed(text))),
                ip => Some(FieldValue::Text(Cow::Owned(ip.to_canonical().to_string()))),
            },
        }
    }
}

/// One rule's decision about one line.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Match(Fields),
    NoMatch,
    /// The regex matched, and so did an `ignore` pattern.
    Ignored,
    /// The regex matched, but this field did not convert to its type.
    WrongType(String),
}

#[derive(Debug, Clone)]
pub struct Example {
    pub line: String,
    pub matches: bool,
    pub fields: Fields,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    /// `file:line` where the rule is defined, for messages.
    pub origin: String,
    pub description: String,
    pub severity: Severity,
    pub regex: RuleRegex,
    pub ignore: Vec<regex::Regex>,
    pub types: BTreeMap<String, FieldType>,
    /// From `[[override]]` tables: a match whose `source.ip` is inside one
    /// of these networks is ignored.
    pub ignore_ips: Vec<ipnet::IpNet>,
    pub threshold: Option<ThresholdSpec>,
    pub suppress: Option<SuppressSpec>,
    pub examples: Vec<Example>,
}

/// A rule's regex, compiled for what the agent does with it: the captures
/// of lines the prefilter already found the rule's literals in. Without a
/// lazy DFA: most such lines match, and the backtracker (or the one-pass
/// DFA) finds their captures in one pass where the DFA would first find the
/// match again (and keep a cache per regex).
///
/// A pattern that starts with the `{syslog}` header is compiled as its rest
/// (the body), run from where [`syslog_header::header_end`] says the header
/// ends: a fifth less work per match, and a body without ambiguity gets the
/// one-pass DFA, which takes half the backtracker's time (a large one only
/// once its rule is hot, see [`HOT_MATCHES`]). Where the split
/// could change a match (a body that may start with a space or match
/// nothing, or one alternative of several), the whole pattern runs instead.
#[derive(Debug, Clone)]
pub struct RuleRegex {
    pattern: String,
    /// The whole pattern, or the body after the header.
    regex: regex_automata::meta::Regex,
    after_header: bool,
    /// The same, with a larger one-pass DFA, once the rule proved hot.
    /// Shared by clones: a rule's DFA is built once.
    hot: Arc<Hot>,
    /// Each named group: its index in `regex` (`None`: the header's host),
    /// its field name and declared type, in the order of the names, which
    /// is an event's. Shared with the fields of every event: a clone is no
    /// copy.
    fields: Vec<(Option<usize>, Arc<str>, Option<FieldType>)>,
}

/// The most a one-pass DFA built with its rule may take (else the
/// backtracker runs the rule): the 13 shipped rules whose DFAs are larger
/// (up to 217 KB) would add 1.0 MB, which the agent would hold for its
/// life, and most of them match rarely (accounts, su, pam).
const ONE_PASS_LIMIT: usize = 20 * 1024;

/// The most a one-pass DFA built for a hot rule may take.
const HOT_ONE_PASS_LIMIT: usize = 512 * 1024;

/// The matches after which a rule is hot. The larger DFA takes about a
/// millisecond to build (217 KB for an accepted SSH login), and saves
/// 0.3 µs a match: these matches pay for it three times over.
const HOT_MATCHES: u32 = 10_000;

/// A rule's count of matches, and its regex with a one-pass DFA of up to
/// [`HOT_ONE_PASS_LIMIT`] from its [`HOT_MATCHES`]th (`None` when that is
/// no larger, so has none either).
#[derive(Debug, Default)]
struct Hot {
    matches: std::sync::atomic::AtomicU32,
    regex: std::sync::OnceLock<Option<regex_automata::meta::Regex>>,
}

fn rule_regex_builder(one_pass_limit: usize) -> regex_automata::meta::Builder {
    let mut builder = regex_automata::meta::Builder::new();
    builder.configure(
        regex_automata::meta::Config::new()
            .hybrid(false)
            .dfa(false)
            .onepass_size_limit(Some(one_pass_limit)),
    );
    builder
}

impl RuleRegex {
    /// Compiles `pattern`; `types` are the rule's declared field types.
    /// The error reads like the regex crate's, caret under the position.
    pub fn new(pattern: &str, types: &BTreeMap<String, FieldType>) -> Result<RuleRegex, String> {
        let builder = || rule_regex_builder(ONE_PASS_LIMIT);
        // A body naming the header's field is an error of the whole.
        let body = pattern
            .strip_prefix(syslog_header::SYSLOG_HEADER)
            .and_then(syslog_header::body_hir)
            .and_then(|hir| builder().build_from_hir(&hir).ok())
            .filter(|body| {
                let names = body
                    .group_info()
                    .pattern_names(regex_automata::PatternID::ZERO);
                !names
                    .flatten()
                    .any(|name| name == syslog_header::HOST_FIELD)
            });
        let after_header = body.is_some();
        let regex = match body {
            Some(body) => body,
            None => builder()
                .build(pattern)
                .map_err(|e| match e.syntax_error() {
                    Some(syntax) => syntax.to_string(),
                    None => e.to_string(),
                })?,
        };
        let host = after_header.then(|| (None, Arc::from(syslog_header::HOST_FIELD)));
        let mut fields: Vec<(Option<usize>, Arc<str>, Option<FieldType>)> = regex
            .group_info()
            .pattern_names(regex_automata::PatternID::ZERO)
            .enumerate()
            .filter_map(|(group, name)| name.map(|name| (Some(group), Arc::from(name))))
            .chain(host)
            .map(|(group, name)| {
                let kind = types.get(&*name).copied();
                (group, name, kind)
            })
            .collect();
        fields.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(RuleRegex {
            pattern: pattern.to_string(),
            regex,
            after_header,
            hot: Arc::default(),
            fields,
        })
    }

    /// The regex to run: the hot one once built.
    fn current(&self) -> &regex_automata::meta::Regex {
        self.hot
            .regex
            .get()
            .and_then(Option::as_ref)
            .unwrap_or(&self.regex)
    }

    /// Counts a match; the [`HOT_MATCHES`]th builds the hot regex.
    fn matched(&self) {
        use std::sync::atomic::Ordering;
        if self.hot.regex.get().is_none()
            && self.hot.matches.fetch_add(1, Ordering::Relaxed) + 1 == HOT_MATCHES
        {
            self.hot.regex.get_or_init(|| {
                let source = match self.after_header {
                    true => &self.pattern[syslog_header::SYSLOG_HEADER.len()..],
                    false => &self.pattern,
                };
                let hot = rule_regex_builder(HOT_ONE_PASS_LIMIT).build(source).ok()?;
                (hot.memory_usage() > self.regex.memory_usage()).then_some(hot)
            });
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn is_match(&self, line: &str) -> bool {
        self.each_field(line, |_, _, _| Ok::<(), ()>(())).is_some()
    }

    /// The field names, in their order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(_, name, _)| &**name)
    }

    /// Matches `line`; on a match, each named group that took part, with
    /// its text, goes to `field` (which may stop the walk with `Err`). The
    /// groups' spans are kept on the stack: a match allocates nothing here.
    fn each_field<'a, E>(
        &'a self,
        line: &'a str,
        mut field: impl FnMut(&'a Arc<str>, Option<FieldType>, &'a str) -> Result<(), E>,
    ) -> Option<Result<(), E>> {
        use regex_automata::{Anchored, Input};
        type Slot = Option<regex_automata::util::primitives::NonMaxUsize>;
        const ON_STACK: usize = 64;
        let regex = self.current();
        let needed = regex.group_info().slot_len();
        let (mut stack, mut heap): ([Slot; ON_STACK], Vec<Slot>) = ([None; ON_STACK], Vec::new());
        let slots = if needed <= ON_STACK {
            &mut stack[..needed]
        } else {
            heap.resize(needed, None);
            &mut heap[..]
        };
        let host = if self.after_header {
            let header = syslog_header::header_end(line)?;
            let mut starts = header.body_starts();
            starts
                .find(|&(start, _)| {
                    let body = Input::new(line).range(start..).anchored(Anchored::Yes);
                    regex.search_slots(&body, slots).is_some()
                })?
                .1
        } else {
            regex.search_slots(&Input::new(line), slots)?;
            None
        };
        self.matched();
        for (group, name, kind) in &self.fields {
            let span = match group {
                Some(group) => slots[group * 2]
                    .zip(slots[group * 2 + 1])
                    .map(|(start, end)| (start.get(), end.get())),
                None => host,
            };
            if let Some((start, end)) = span {
                if let Err(stop) = field(name, *kind, &line[start..end]) {
                    return Some(Err(stop));
                }
            }
        }
        Some(Ok(()))
    }
}

impl Rule {
    /// The fields this rule extracts from `line`, or `None` when it does not
    /// match, an `ignore` pattern matches, or a typed field does not convert.
    pub fn apply(&self, line: &str) -> Option<Fields> {
        match self.evaluate(line) {
            Verdict::Match(fields) => Some(fields),
            _ => None,
        }
    }

    /// What this rule makes of `line`, with the reason when it is no match.
    pub fn evaluate(&self, line: &str) -> Verdict {
        self.evaluate_classic(&rfc5424::classic_form(line))
    }

    /// [`Rule::evaluate`] of a line already in the classic syslog layout.
    fn evaluate_classic(&self, line: &str) -> Verdict {
        match self.extract(line) {
            Verdict::Match(fields) if self.own_address(&fields) => Verdict::Ignored,
            verdict => verdict,
        }
    }

    /// Whether the event's `source.ip` is one an override says to ignore.
    fn own_address(&self, fields: &Fields) -> bool {
        self.ignores_address(fields.get("source.ip").and_then(|ip| ip.as_str()))
    }

    fn ignores_address(&self, source_ip: Option<&str>) -> bool {
        source_ip.is_some_and(|ip| overrides::ignored_address(&self.ignore_ips, ip))
    }

    /// The rule as written (regex, `ignore` and `types`, without what
    /// overrides added) on a line in the classic syslog layout.
    fn extract(&self, line: &str) -> Verdict {
        match self.typed_fields(line) {
            None => Verdict::NoMatch,
            Some(_) if self.ignores(line) => Verdict::Ignored,
            Some(Err(field)) => Verdict::WrongType(field),
            Some(Ok(fields)) => Verdict::Match(fields),
        }
    }

    /// The fields of an event of `line` (classic layout), where
    /// [`Rule::evaluate_classic`] would say `Match`. The `ignore` patterns
    /// go first: a search for their literals, where the captures they spare
    /// may backtrack over the whole line.
    fn event_fields<'a>(&'a self, line: &'a str) -> Option<MatchedFields<'a>> {
        if self.ignores(line) {
            return None;
        }
        let fields = self.converted_fields(line)?.ok()?;
        let source_ip = fields.iter().find_map(|(name, value)| match value {
            FieldValue::Text(ip) if &***name == "source.ip" => Some(ip.as_ref()),
            _ => None,
        });
        (!self.ignores_address(source_ip)).then_some(fields)
    }

    fn ignores(&self, line: &str) -> bool {
        self.ignore.iter().any(|re| re.is_match(line))
    }

    /// The regex's fields of `line`, converted to their types: `None` when
    /// it does not match, `Err` naming a field that does not convert.
    fn typed_fields(&self, line: &str) -> Option<Result<Fields, String>> {
        let converted = self.converted_fields(line)?;
        Some(converted.map(|fields| fields_map(&fields)))
    }

    /// [`Rule::typed_fields`], borrowed from `line` where they can be.
    fn converted_fields<'a>(&'a self, line: &'a str) -> Option<Result<MatchedFields<'a>, String>> {
        let mut fields = Vec::with_capacity(self.regex.fields.len());
        let converted = self.regex.each_field(line, |name, kind, text| {
            match kind.unwrap_or(FieldType::String).convert(text) {
                Some(value) => {
                    fields.push((name, value));
                    Ok(())
                }
                None => Err(name.to_string()),
            }
        })?;
        Some(converted.map(|()| fields))
    }

    /// The state this rule's `threshold` and `suppress` need.
    pub fn gate(&self) -> Gate {
        Gate::new(self.threshold.clone(), self.suppress.clone())
    }

    /// The state for this rule after a reload: `earlier` (the rule's gate
    /// before it) goes on when `threshold` and `suppress` are unchanged, so
    /// a reload neither re-sends a suppressed event nor forgets the matches
    /// counted towards a threshold.
    pub fn gate_after_reload(&self, earlier: Option<Gate>) -> Gate {
        match earlier {
            Some(gate) if gate.counts_by(self.threshold.as_ref(), self.suppress.as_ref()) => gate,
            _ => self.gate(),
        }
    }

    /// Runs every example; returns one message per failing example.
    /// Examples prove the rule as its author wrote it: an override's
    /// `ignore_ips` is the operator's and may well hold an example's address.
    pub fn check_examples(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for (i, example) in self.examples.iter().enumerate() {
            let got = match self.extract(&rfc5424::classic_form(&example.line)) {
                Verdict::Match(fields) => Some(fields),
                _ => None,
            };
            let problem = match (example.matches, got) {
                (true, None) => Some("does not match".to_string()),
                (true, Some(fields)) if fields != example.fields => Some(format!(
                    "fields differ:\n      expected {}\n      got      {}",
                    serde_json::to_string(&example.fields).unwrap_or_default(),
                    serde_json::to_string(&fields).unwrap_or_default()
                )),
                (false, Some(fields)) => Some(format!(
                    "matches, but is marked `match = false` (fields {})",
                    serde_json::to_string(&fields).unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(problem) = problem {
                failures.push(format!(
                    "example {} {problem}\n      line: {}",
                    i + 1,
                    example.line
                ));
            }
        }
        failures
    }
}

/// Compiles globs that config validation has already checked.
pub fn compile_globs(patterns: &[String]) -> Vec<glob::Pattern> {
    patterns
        .iter()
        .filter_map(|p| glob::Pattern::new(p).ok())
        .collect()
}

/// Rule-id globs as `input.rules`, `route.rules` and `override.rules` take
/// them: an id is selected when a glob matches it and no `!glob` does
/// (`["sshd.*", "!sshd.publickey_failed"]`); with only `!globs`, every id
/// that none of them matches. A rule id never holds `!`, so a leading one
/// cannot be meant literally.
#[derive(Debug, Clone)]
pub struct RuleSelector {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

impl RuleSelector {
    /// Compiles `patterns`; an invalid glob is an error naming it.
    pub fn parse(patterns: &[String]) -> Result<RuleSelector, String> {
        let mut selector = RuleSelector {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        for pattern in patterns {
            let (list, glob) = match pattern.strip_prefix('!') {
                Some(negated) => (&mut selector.exclude, negated),
                None => (&mut selector.include, pattern.as_str()),
            };
            list.push(
                glob::Pattern::new(glob)
                    .map_err(|e| format!("`{pattern}` is not a valid glob: {e}"))?,
            );
        }
        Ok(selector)
    }

    /// The selector of patterns that config validation has already parsed.
    pub fn validated(patterns: &[String]) -> RuleSelector {
        Self::parse(patterns).unwrap_or_else(|e| panic!("unvalidated rule globs: {e}"))
    }

    pub fn selects(&self, id: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|g| g.matches(id));
        included && !self.exclude.iter().any(|g| g.matches(id))
    }

    /// The patterns (with their `!`) that match none of `ids`: a typo, or a
    /// rule that is no longer shipped.
    pub fn unmatched(&self, ids: &[&str]) -> Vec<String> {
        let negated = self.exclude.iter().map(|g| format!("!{}", g.as_str()));
        let plain = self.include.iter().map(|g| g.as_str().to_string());
        self.include
            .iter()
            .chain(&self.exclude)
            .zip(plain.chain(negated))
            .filter(|(glob, _)| !ids.iter().any(|id| glob.matches(id)))
            .map(|(_, pattern)| pattern)
            .collect()
    }
}

/// The rules an input's `rules` (checked when the config loaded) select,
/// or an error saying that they select none.
pub fn select(rules: &[Arc<Rule>], patterns: &[String]) -> Result<Vec<Arc<Rule>>, String> {
    let selector = RuleSelector::validated(patterns);
    let selected: Vec<Arc<Rule>> = rules
        .iter()
        .filter(|r| selector.selects(&r.id))
        .cloned()
        .collect();
    if selected.is_empty() {
        return Err(format!(
            "rules = {patterns:?} selects none of the {} loaded rules",
            rules.len()
        ));
    }
    Ok(selected)
}

/// The rules one input applies, behind a literal prefilter.
pub struct Matcher {
    rules: Vec<Arc<Rule>>,
    prefilter: prefilter::Prefilter,
}

impl Matcher {
    pub fn new(rules: Vec<Arc<Rule>>) -> Matcher {
        let prefilter = prefilter::Prefilter::new(rules.iter().map(|r| r.regex.as_str()));
        // Each matcher gets regexes of its own (a clone shares the compiled
        // regex, with a new cache pool): a pool is fast only for the thread
        // that used it first, which for loaded rules is the one that checked
        // their examples, not the one that matches lines.
        let rules = rules
            .iter()
            .map(|rule| Arc::new(Rule::clone(rule)))
            .collect();
        Matcher { rules, prefilter }
    }

    /// Every rule that matches `line`, with its fields. A line matching two rules
    /// yields two events: rules are independent detections, like fail2ban jails.
    pub fn matches<'a>(
        &'a self,
        line: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<Rule>, Fields)> + 'a {
        let line = rfc5424::classic_form(line);
        let candidates = self.prefilter.candidates(&line);
        candidates.into_iter().filter_map(move |i| {
            let rule = &self.rules[i];
            let fields = rule.event_fields(&line)?;
            Some((rule, fields_map(&fields)))
        })
    }

    /// The rules, as [`Matcher::matches_among`] numbers them.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// Finds the rules that may match `line` (indices for
    /// [`Matcher::matches_among`]): a search for their literals, no regex.
    pub fn candidates(&self, line: &str, found: &mut Found) {
        self.prefilter.find(&rfc5424::classic_form(line), found)
    }

    /// [`Matcher::matches`] among the `candidates` of a line already in
    /// [`classic_form`], each with its rule's number and its fields as
    /// converted, borrowed from `line`.
    pub fn matches_among<'a>(
        &'a self,
        line: &'a str,
        candidates: impl IntoIterator<Item = usize> + 'a,
    ) -> impl Iterator<Item = (usize, &'a Arc<Rule>, MatchedFields<'a>)> + 'a {
        candidates.into_iter().filter_map(move |i| {
            let rule = &self.rules[i];
            rule.event_fields(line).map(|fields| (i, rule, fields))
        })
    }

    /// The verdict of every rule whose regex matches `line` (the others'
    /// is `NoMatch`).
    pub fn verdicts<'a>(
        &'a self,
        line: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<Rule>, Verdict)> + 'a {
        let line = rfc5424::classic_form(line);
        self.prefilter.candidates(&line).into_iter().map(move |i| {
            let rule = &self.rules[i];
            (rule, rule.evaluate_classic(&line))
        })
    }
}

/// A matched line as its events carry it: where it came from, when it
/// happened and was read (formatted once for all the rules it matched), and
/// the agent that read it.
pub struct SeenLine<'a> {
    pub text: &'a str,
    pub log: LogOrigin,
    /// The file's identity, for event ids (none for a journal entry).
    pub source: Option<SourceFile>,
    /// The line was cut to `max_line_bytes`.
    pub truncated: bool,
    pub times: LineTimes,
    pub host: &'a str,
    time: Arc<str>,
    ingested: Arc<str>,
}

/// The texts of the times lines were last seen with: the lines of a chunk
/// share their read time, and lines in a burst their stated second, so an
/// event's `time` and `ingested` are mostly formatted once for many.
#[derive(Debug, Default)]
pub struct TimeTexts {
    read: Option<(Timestamp, Arc<str>)>,
    stated: Option<(Timestamp, Arc<str>)>,
}

impl TimeTexts {
    /// `time` and `ingested` for a line seen at `times`.
    fn texts(&mut self, times: LineTimes) -> (Arc<str>, Arc<str>) {
        let ingested = Self::text(&mut self.read, times.read, crate::event::rfc3339_millis);
        // A line without a time happened when it was read: the same text as
        // `ingested`, not a false nanosecond precision.
        let time = match times.stated {
            Some(stated) => Self::text(&mut self.stated, stated, crate::event::rfc3339),
            None => ingested.clone(),
        };
        (time, ingested)
    }

    fn text(
        last: &mut Option<(Timestamp, Arc<str>)>,
        at: Timestamp,
        format: fn(Timestamp) -> String,
    ) -> Arc<str> {
        match last {
            Some((known, text)) if *known == at => text.clone(),
            _ => last.insert((at, format(at).into())).1.clone(),
        }
    }
}

impl<'a> SeenLine<'a> {
    pub fn new(
        text: &'a str,
        log: LogOrigin,
        source: Option<SourceFile>,
        truncated: bool,
        times: LineTimes,
        host: &'a str,
        texts: &mut TimeTexts,
    ) -> SeenLine<'a> {
        let (time, ingested) = texts.texts(times);
        SeenLine {
            text,
            log,
            source,
            truncated,
            times,
            host,
            time,
            ingested,
        }
    }
}

/// Builds the event for a line a rule matched; `count` is how many matching
/// lines it stands for, when the rule has a threshold or suppress.
pub fn event_for<'a>(
    rule: &'a Rule,
    line: &'a SeenLine,
    fields: ViewFields<'a>,
    count: Option<u64>,
) -> EventView<'a> {
    EventView {
        id: Cow::Owned(Event::id_for(&line.log, line.source, &rule.id, line.text)),
        rule: &rule.id,
        severity: rule.severity,
        time: &line.time,
        ingested: &line.ingested,
        host: line.host,
        log: &line.log,
        message: line.text,
        fields,
        count,
        truncated: line.truncated,
    }
}

/// The id of the built-in rule whose events report a line cut at its
/// input's `max_line_bytes` (input key `report_long_lines`). A cut line can
/// defeat a `$`-anchored rule; this event makes the evasion visible.
pub const LINE_TOO_LONG: &str = "tailhook.line_too_long";

/// Bytes of a cut line kept as its `tailhook.line_too_long` event's message.
const LINE_TOO_LONG_MESSAGE_BYTES: usize = 256;

/// The built-in rule behind `tailhook.line_too_long` events. Its regex
/// matches nothing: the tailer, not a match, raises these events.
pub fn line_too_long_rule() -> Rule {
    Rule {
        id: LINE_TOO_LONG.to_string(),
        origin: "built-in".to_string(),
        description: "A line longer than max_line_bytes was cut".to_string(),
        severity: Severity::Low,
        regex: RuleRegex::new(r"[^\s\S]", &BTreeMap::new()).expect("a constant pattern"),
        ignore: Vec::new(),
        types: BTreeMap::new(),
        ignore_ips: Vec::new(),
        threshold: None,
        suppress: None,
        examples: Vec::new(),
    }
}

/// The `tailhook.line_too_long` event of a line cut from `length` bytes to
/// `max_line_bytes`: its file, both lengths, and its first bytes as message.
pub fn line_too_long_event(
    rule: &Rule,
    line: &SeenLine,
    length: u64,
    max_line_bytes: usize,
) -> Event {
    let mut end = line.text.len().min(LINE_TOO_LONG_MESSAGE_BYTES);
    while !line.text.is_char_boundary(end) {
        end -= 1;
    }
    let fields = Fields::from([
        (
            "log.file".into(),
            serde_json::Value::from(line.log.file.clone()),
        ),
        ("line.bytes".into(), serde_json::Value::from(length)),
        (
            "line.max_bytes".into(),
            serde_json::Value::from(max_line_bytes as u64),
        ),
    ]);
    let head = SeenLine {
        text: &line.text[..end],
        log: line.log.clone(),
        source: line.source,
        truncated: true,
        times: line.times,
        host: line.host,
        time: line.time.clone(),
        ingested: line.ingested.clone(),
    };
    event_for(rule, &head, ViewFields::Map(Cow::Owned(fields)), None).to_event()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SSHD: &str = r#"
[[rule]]
id = "sshd.auth_failed"
severity = "medium"
regex = 'sshd\[\d+\]: Failed (?P<event.action>\S+) for (?:invalid user )?(?P<user.name>\S+) from (?P<source.ip>[0-9a-fA-F:.]+) port (?P<source.port>\d+)'
types = { "source.port" = "int", "source.ip" = "ip" }
ignore = ['from 127\.0\.0\.1 ']

[[rule.example]]
line = "Nov 22 10:00:01 web1 sshd[811]: Failed password for root from 203.0.113.7 port 52144 ssh2"
fields = { "event.action" = "password", "user.name" = "root", "source.ip" = "203.0.113.7", "source.port" = 52144 }

[[rule.example]]
line = "Nov 22 10:00:01 web1 sshd[811]: Failed password for root from 127.0.0.1 port 52144 ssh2"
match = false

[[rule]]
id = "sshd.invalid_user"
regex = 'sshd\[\d+\]: Invalid user (?P<user.name>.*?) from (?P<source.ip>[0-9a-fA-F:.]+)(?: port \d+)?$'
"#;

    fn rules() -> Vec<Arc<Rule>> {
        parse_rules(Path::new("t.toml"), SSHD)
            .unwrap()
            .into_iter()
            .map(|(_, r)| Arc::new(r))
            .collect()
    }

    #[test]
    fn matcher_runs_only_rules_that_hit_and_types_fields() {
        let matcher = Matcher::new(rules());
        let line = "Nov 22 10:00:01 web1 sshd[811]: Failed password for invalid user admin from 2001:db8::1 port 22 ssh2";
        let hits: Vec<_> = matcher.matches(line).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].0.id, "sshd.auth_failed");
        assert_eq!(hits[0].1["user.name"], "admin");
        assert_eq!(hits[0].1["source.ip"], "2001:db8::1");
        assert_eq!(hits[0].1["source.port"], 22);
        assert_eq!(matcher.matches("kernel: eth0 link up").count(), 0);
    }

    proptest::proptest! {
        /// The agent's path (ignore patterns first) makes an event of a
        /// line exactly when the verdict `test-rules` shows is a match,
        /// with the same fields: shipped examples with any text spliced in.
        #[test]
        fn matches_agree_with_the_verdicts(
            example in proptest::prelude::any::<proptest::sample::Index>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            spliced in "(127\\.0\\.0\\.1 |\\[UFW AUDIT\\] |[ -~]{0,12})",
        ) {
            let matcher = &*SHIPPED;
            let line = edited_example(example, at, 0, &spliced);
            let verdicts: Vec<(String, Fields)> = matcher
                .verdicts(&line)
                .filter_map(|(rule, verdict)| match verdict {
                    Verdict::Match(fields) => Some((rule.id.clone(), fields)),
                    _ => None,
                })
                .collect();
            let matches: Vec<(String, Fields)> = matcher
                .matches(&line)
                .map(|(rule, fields)| (rule.id.clone(), fields))
                .collect();
            proptest::prop_assert_eq!(matches, verdicts);
        }
    }

    /// A shipped example line with `cut` bytes from `at` replaced by
    /// `spliced`.
    fn edited_example(
        example: proptest::sample::Index,
        at: proptest::sample::Index,
        cut: usize,
        spliced: &str,
    ) -> String {
        let lines: Vec<&str> = SHIPPED
            .rules
            .iter()
            .flat_map(|r| r.examples.iter().map(|e| e.line.as_str()))
            .collect();
        let line = lines[example.index(lines.len())];
        let mut at = at.index(line.len() + 1);
        while !line.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + cut).min(line.len());
        while !line.is_char_boundary(end) {
            end += 1;
        }
        format!("{}{spliced}{}", &line[..at], &line[end..])
    }

    /// Each named group's text as the whole pattern's captures give it.
    fn whole_pattern_fields(regex: &RuleRegex, line: &str) -> Option<BTreeMap<String, String>> {
        let whole = regex::Regex::new(regex.as_str()).unwrap();
        let captures = whole.captures(line)?;
        Some(
            whole
                .capture_names()
                .flatten()
                .filter_map(|name| {
                    Some((name.to_string(), captures.name(name)?.as_str().to_string()))
                })
                .collect(),
        )
    }

    fn split_fields(regex: &RuleRegex, line: &str) -> Option<BTreeMap<String, String>> {
        let mut fields = BTreeMap::new();
        regex
            .each_field(line, |name, _, text| {
                fields.insert(name.to_string(), text.to_string());
                Ok::<(), ()>(())
            })?
            .unwrap();
        Some(fields)
    }

    #[test]
    fn the_shipped_syslog_rules_run_after_the_header() {
        let syslog: Vec<&Arc<Rule>> = SHIPPED
            .rules
            .iter()
            .filter(|r| r.regex.as_str().starts_with(syslog_header::SYSLOG_HEADER))
            .collect();
        let whole: Vec<&str> = syslog
            .iter()
            .filter(|r| !r.regex.after_header)
            .map(|r| r.id.as_str())
            .collect();
        assert!(syslog.len() >= 50, "{}", syslog.len());
        assert_eq!(whole, Vec::<&str>::new());
    }

    /// An accepted SSH login's one-pass DFA (217 KB) is built only once
    /// the rule is hot; it finds the same fields. A rule whose pattern has
    /// no one-pass DFA keeps its regex.
    #[test]
    fn a_hot_rule_gets_its_larger_one_pass_dfa() {
        let rule = |id: &str| {
            SHIPPED
                .rules
                .iter()
                .find(|r| r.id == id)
                .unwrap()
                .regex
                .clone()
        };
        let line = "Nov 22 10:00:17 web1 sshd[827]: Accepted publickey for deploy from 192.0.2.11 port 50200 ssh2: ED25519 SHA256:Zk1b";
        let failed = "Nov 22 10:00:17 web1 sshd[827]: Failed password for root from 192.0.2.11 port 50200 ssh2";
        for (regex, line, gets_one) in [
            (RuleRegex::clone(&rule("sshd.login_accepted")), line, true),
            (RuleRegex::clone(&rule("sshd.auth_failed")), failed, false),
        ] {
            // A clone of a regex shares its state: one fresh for the test.
            let regex = RuleRegex {
                hot: Arc::default(),
                ..regex
            };
            let cold = split_fields(&regex, line).unwrap();
            let started = std::time::Instant::now();
            for _ in 2..HOT_MATCHES {
                assert!(regex.is_match(line));
            }
            assert!(regex.hot.regex.get().is_none());
            assert_eq!(split_fields(&regex, line).unwrap(), cold, "the hot match");
            eprintln!(
                "{HOT_MATCHES} matches and the build: {:?}",
                started.elapsed()
            );
            let hot = regex.hot.regex.get().expect("built on the hot match");
            assert_eq!(hot.is_some(), gets_one, "{line}");
            if let Some(hot) = hot {
                assert!(hot.memory_usage() > ONE_PASS_LIMIT);
            }
            assert_eq!(split_fields(&regex, line).unwrap(), cold);
            assert_eq!(whole_pattern_fields(&regex, line).unwrap(), cold);
        }
    }

    #[test]
    fn a_body_that_could_take_the_header_spaces_runs_whole() {
        let header = syslog_header::SYSLOG_HEADER;
        for (body, splits) in [
            (r"sshd\[(?P<pid>[0-9]+)\]: x", true),
            (r"(?P<a>\S+) x", true),
            (r"\bx", true),
            (r"(?:x|y)z", true),
            (r" x", false),
            (r"\s*x", false),
            (r"(?P<a>.*)x", false),
            (r"x|y", false),
            (r"", false),
            (r"(?:x)?", false),
        ] {
            let regex = RuleRegex::new(&format!("{header}{body}"), &BTreeMap::new()).unwrap();
            assert_eq!(regex.after_header, splits, "{body}");
        }
    }

    proptest::proptest! {
        /// A rule run after the header finds the fields its whole pattern
        /// does: bodies of every shape, after header-like text.
        #[test]
        fn a_body_after_the_header_matches_as_the_whole_pattern(
            body in proptest::sample::select(vec![
                r"sshd\[(?P<pid>[0-9]+)\]: (?P<rest>.*)$",
                r"(?P<a>\S+) (?P<b>\S+)",
                r"(?P<a>[^ ]+)x",
                r"\b(?P<a>x+)",
                r"(?:(?P<a>x)|(?P<b>web1))",
                r"(?P<a>web1 )?x",
                r"[[:word:]]+: ",
                r"(?:\S+ ){0,3}(?P<a>x)",
            ]),
            start in proptest::sample::select(vec![
                "", "Nov 22 10:00:01 ", "Nov 22 10:00:01  ", "<13>1 - ", "2026-11-22T10:00:01Z ",
                "Nov 22 10:00:01 web1 ", "Nov 22 10:00:01 web1  ", "<13>Nov 2 10:00:01 web1 ",
            ]),
            rest in "(web1|x|sshd\\[1\\]: |[ :\\[\\]]|é){0,6}",
        ) {
            let regex = RuleRegex::new(&format!("{}{body}", syslog_header::SYSLOG_HEADER), &BTreeMap::new()).unwrap();
            proptest::prop_assert!(regex.after_header);
            let line = format!("{start}{rest}");
            proptest::prop_assert_eq!(split_fields(&regex, &line), whole_pattern_fields(&regex, &line), "{:?}", line);
        }

        /// Every shipped rule, on every shipped example with text spliced
        /// in or cut out, finds what its whole pattern finds.
        #[test]
        fn shipped_rules_after_the_header_match_as_their_whole_patterns(
            example in proptest::prelude::any::<proptest::sample::Index>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            cut in 0usize..8,
            spliced in "( |  |web1 |x|:|\\[|[ -~]{0,8})",
        ) {
            let matcher = &*SHIPPED;
            let line = edited_example(example, at, cut, &spliced);
            for rule in matcher.rules.iter().filter(|r| r.regex.after_header) {
                proptest::prop_assert_eq!(
                    split_fields(&rule.regex, &line),
                    whole_pattern_fields(&rule.regex, &line),
                    "{} on {:?}", rule.id, line
                );
            }
        }
    }

    /// The shipped rules, compiled once for every case.
    static SHIPPED: std::sync::LazyLock<Matcher> = std::sync::LazyLock::new(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let files = rule_files(&[root]).unwrap();
        Matcher::new(
            load_rules(&files)
                .unwrap()
                .rules
                .into_iter()
                .map(Arc::new)
                .collect(),
        )
    });

    /// `\d` and `\w` are Unicode classes: each `\w` adds about 18 KB to
    /// its rule's automaton, held for as long as the agent runs. The
    /// shipped rules write `[0-9]` and `[[:word:]]` instead (2.4 MB → 0.7).
    #[test]
    fn the_shipped_rules_automata_stay_small() {
        let bytes: usize = SHIPPED
            .rules
            .iter()
            .map(|rule| rule.regex.regex.memory_usage())
            .sum();
        assert!(
            bytes < 1_000_000,
            "the shipped rules' automata take {bytes} bytes: a Unicode class (\\d, \\w) where [0-9] or [[:word:]] would do?"
        );
    }

    #[test]
    fn a_matcher_of_some_rules_runs_only_those() {
        let all = Matcher::new(rules());
        let line = "sshd[5]: Invalid user admin from 203.0.113.9";
        assert_eq!(all.matches(line).count(), 1);
        let without = Matcher::new(
            rules()
                .into_iter()
                .filter(|rule| rule.id != "sshd.invalid_user")
                .collect(),
        );
        assert_eq!(without.matches(line).count(), 0);
        let failed = "sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2";
        assert_eq!(without.matches(failed).count(), 1);
    }

    #[test]
    fn ignore_and_failed_type_conversion_reject_the_line() {
        let rules = rules();
        assert!(rules[0]
            .apply("sshd[1]: Failed password for root from 127.0.0.1 port 22 ssh2")
            .is_none());
        // "1.2.3" passes the character class but is no IP address.
        assert!(rules[0]
            .apply("sshd[1]: Failed password for root from 1.2.3 port 22 ssh2")
            .is_none());
    }

    #[test]
    fn ip_fields_are_canonical() {
        assert_eq!(
            FieldType::Ip.convert("::ffff:192.0.2.1").unwrap().to_json(),
            "192.0.2.1"
        );
        assert_eq!(
            FieldType::Ip.convert("2001:DB8:0:0::1").unwrap().to_json(),
            "2001:db8::1"
        );
        assert_eq!(FieldType::Ip.convert("192.0.2.300"), None);
    }

    proptest::proptest! {
        /// Whatever text an `ip` field captures, it converts to the
        /// address's canonical form or not at all.
        #[test]
        fn ip_fields_are_the_canonical_form_of_what_parses(
            text in proptest::prop_oneof![
                "[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}",
                "[0-9a-fA-F:.]{2,40}",
                proptest::prelude::Strategy::prop_map(
                    proptest::prelude::any::<std::net::Ipv4Addr>(),
                    |ip| ip.to_string(),
                ),
            ],
        ) {
            let expected = text
                .parse::<IpAddr>()
                .ok()
                .map(|ip| serde_json::Value::from(ip.to_canonical().to_string()));
            proptest::prop_assert_eq!(FieldType::Ip.convert(&text).map(|v| v.to_json()), expected);
        }
    }

    #[test]
    fn examples_pass_and_failures_are_explained() {
        let mut rule = (*rules()[0]).clone();
        assert!(rule.check_examples().is_empty());
        rule.examples[0]
            .fields
            .insert("user.name".into(), "admin".into());
        rule.examples.push(Example {
            line: "nothing".into(),
            matches: true,
            fields: Fields::new(),
        });
        let failures = rule.check_examples();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("fields differ"), "{}", failures[0]);
        assert!(
            failures[1].contains("example 3 does not match"),
            "{}",
            failures[1]
        );
    }

    #[test]
    fn event_carries_origin_and_escapes_raw_line() {
        let rule = &rules()[1];
        let line = r#"sshd[5]: Invalid user "x\" from 10.0.0.1 from 203.0.113.9"#;
        let fields = rule.apply(line).unwrap();
        let log = LogOrigin {
            file: "/var/log/auth.log".into(),
            offset: 42,
            cursor: None,
        };
        let read = "2026-11-22T10:00:05.1234Z".parse().unwrap();
        let times = LineClock::new(jiff::tz::TimeZone::UTC).times(line, read);
        let seen = SeenLine::new(
            line,
            log,
            None,
            false,
            times,
            "web1",
            &mut TimeTexts::default(),
        );
        let event = event_for(rule, &seen, ViewFields::Map(Cow::Owned(fields)), None);
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["message"], line);
        // The line states no time: it happened when it was read.
        assert_eq!(json["time"], "2026-11-22T10:00:05.123Z");
        assert_eq!(json["ingested"], "2026-11-22T10:00:05.123Z");
        assert_eq!(json["host"], "web1");
        assert_eq!(json["log"]["offset"], 42);
        assert_eq!(json["fields"]["source.ip"], "203.0.113.9");
    }

    fn selector(patterns: &[&str]) -> RuleSelector {
        RuleSelector::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn an_inputs_selection_keeps_its_rules_or_says_it_selects_none() {
        let rules = rules();
        let ids = |selected: Vec<Arc<Rule>>| -> Vec<String> {
            selected.iter().map(|r| r.id.clone()).collect()
        };
        assert_eq!(
            ids(select(&rules, &["*.invalid_user".into()]).unwrap()),
            ["sshd.invalid_user"]
        );
        assert_eq!(select(&rules, &["*".into()]).unwrap().len(), 2);
        let error = select(&rules, &["sudo.*".into()]).unwrap_err();
        assert_eq!(
            error,
            "rules = [\"sudo.*\"] selects none of the 2 loaded rules"
        );
    }

    #[test]
    fn id_globs_select_rules() {
        let globs = selector(&["sshd.*", "sudo.auth_failed"]);
        assert!(globs.selects("sshd.auth_failed"));
        assert!(globs.selects("sudo.auth_failed"));
        assert!(!globs.selects("sudo.command"));
    }

    proptest::proptest! {
        /// Any patterns parse or are refused without a panic; an id a
        /// `!glob` matches is never selected, whatever else is listed.
        #[test]
        fn a_negated_id_is_never_selected(
            patterns in proptest::collection::vec("!?[a-z.*?\\[\\]!_-]{0,8}", 0..5),
            id in "[a-z._-]{1,8}",
        ) {
            if let Ok(selector) = RuleSelector::parse(&patterns) {
                let ids = [id.as_str()];
                selector.unmatched(&ids);
                let mut negated = patterns.clone();
                negated.push(format!("!{}", glob::Pattern::escape(&id)));
                let selector = RuleSelector::parse(&negated).unwrap();
                proptest::prop_assert!(!selector.selects(&id));
            }
        }
    }

    #[test]
    fn a_negated_glob_takes_rules_out() {
        let globs = selector(&["sshd.*", "!sshd.publickey_failed"]);
        assert!(globs.selects("sshd.auth_failed"));
        assert!(!globs.selects("sshd.publickey_failed"));
        assert!(!globs.selects("sudo.command"));
        let all_but = selector(&["!sudo.*"]);
        assert!(all_but.selects("sshd.auth_failed"));
        assert!(!all_but.selects("sudo.command"));
        assert_eq!(
            selector(&["sshd.*", "!sshd.typo", "nginx.*"]).unmatched(&["sshd.auth_failed"]),
            ["nginx.*", "!sshd.typo"]
        );
        assert!(RuleSelector::parse(&["![".to_string()])
            .unwrap_err()
            .contains("`![`"));
    }
}
