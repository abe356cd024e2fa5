//! Which rules could match a line, found with one literal scan.
//!
//! Most log lines match no rule. Every rule's regex needs some fixed text to
//! match ("Failed ", "SASL ", "password mismatch"); those literals are pulled
//! out of the parsed regex. Each rule's most selective set is its trigger;
//! all triggers are searched for at once with one Aho-Corasick DFA. A rule
//! whose trigger occurs then checks up to three more of its required sets
//! (cheap substring searches) before its full regex runs. A rule with no
//! usable trigger is a candidate for every line.
//!
//! The literals are a necessary condition by construction, so the prefilter
//! never changes what matches, only how fast a non-match is rejected.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::Anchored;
use regex_syntax::hir::{Class, Hir, HirKind};
use rustc_hash::{FxHashMap, FxHashSet};

/// Literals shorter than this find too many lines to be worth a scan.
const MIN_LITERAL: usize = 3;

/// Trigger literals are cut to this many bytes (see [`trigger_part`]), so
/// the parts of a line their scan walks overlap little (see
/// `LiteralScan::found_in`): each part reaches 7 bytes into the next, where
/// 16-byte triggers reached 15, and a 100-byte line is walked in 121 steps
/// instead of 145. Shorter, they find more lines than that saves; longer,
/// they walk more steps: with every event routed on the 1 % file, the tail
/// thread took 0.37 s at 8 bytes, 0.39 at 7 and at 12 (ten alternated
/// runs), 0.40 at 16 (twelve), and 6 bytes cost 9 % more of the agent's
/// CPU.
const MAX_TRIGGER: usize = 8;

/// At most this many further literal sets are checked before a rule's regex:
/// each costs a scan of the line, which lines the rule matches pay too.
const MAX_CONFIRMS: usize = 3;

pub struct Prefilter {
    /// Every rule's trigger literals, each cut to its [`trigger_part`];
    /// a literal's owner is its rule.
    triggers: Option<LiteralScan>,
    /// Rules without a usable trigger literal: candidates for every line.
    always: Vec<usize>,
    /// For each rule: further literal sets its matches contain, checked only
    /// once its trigger occurs (a line with " HTTP/" but no `" 4` cannot be
    /// a 4xx response).
    confirms: Vec<Vec<Confirm>>,
    /// The confirm sets of several literals, all in one automaton: every
    /// access log line triggers each web rule (" HTTP/"), and one scan of
    /// the line answers for all their sets (attack paths, scanner names)
    /// where a scan per set cost a third of the tail thread. A literal's
    /// owner is its set. Caseless when any literal is: a case-sensitive
    /// literal then also counts in other cases, which only lets a few more
    /// lines through to the regex, never fewer.
    shared: Option<LiteralScan>,
}

/// Literals in one Aho-Corasick DFA, walked by a loop of our own: the
/// crate's overlapping search keeps its position in memory (about 1.5 times
/// the instructions per byte), and the literals are too many and too alike
/// for a SIMD prefilter to skip ahead. The crate's DFA is copied into a
/// table of fewer columns: every byte of no literal in one class, and both
/// cases of a caseless letter in one, where the crate keeps each case and
/// each run of unused bytes between used ones apart. The shipped rules'
/// tables take 64 columns instead of 128 (0.95 MB instead of 1.9), and the
/// walk is a little faster for it.
struct LiteralScan {
    /// The class of each byte: the bytes of no literal share one.
    classes: [u8; 256],
    /// Columns per state, as a power of two.
    stride2: u32,
    /// The next state by state plus class: a state is the index of its
    /// row. The start is 0, and states from `first_match` on end a literal.
    next: Vec<u32>,
    first_match: u32,
    /// Where each match state's owners start in `owners`, in order, and
    /// where the last one's end.
    owner_starts: Vec<u32>,
    /// The owners of the literals each match state ends.
    owners: Vec<usize>,
    /// The longest literal's length.
    longest: usize,
}

impl LiteralScan {
    fn new(literals: &[Vec<u8>], caseless: bool, owner: &[usize]) -> LiteralScan {
        let dfa = aho_corasick::dfa::DFA::builder()
            .prefilter(false)
            .ascii_case_insensitive(caseless)
            .build(literals)
            .expect("literal sets this small always build");
        // A byte stands for itself, or for both its cases when caseless.
        let folded = |byte: u8| match caseless {
            true => byte.to_ascii_lowercase(),
            false => byte,
        };
        let mut in_literal = [false; 256];
        for &byte in literals.iter().flatten() {
            in_literal[usize::from(folded(byte))] = true;
        }
        // Class 0 is the bytes of no literal; each other byte (both cases
        // of a caseless letter) has its own.
        let mut classes = [0u8; 256];
        let mut representatives: Vec<u8> = (0..=255u8)
            .find(|&byte| !in_literal[usize::from(folded(byte))])
            .into_iter()
            .collect();
        for byte in (0..=255u8).filter(|&byte| in_literal[usize::from(byte)]) {
            classes[usize::from(byte)] = representatives.len() as u8;
            representatives.push(byte);
        }
        for byte in 0..=255u8 {
            classes[usize::from(byte)] = classes[usize::from(folded(byte))];
        }
        // Every state, found from the start; match states numbered last.
        let start = dfa
            .start_state(Anchored::No)
            .expect("an unanchored DFA has an unanchored start");
        let mut found = vec![start];
        let mut seen: FxHashSet<StateID> = FxHashSet::from_iter([start]);
        let mut at = 0;
        while at < found.len() {
            for &byte in &representatives {
                let next = dfa.next_state(Anchored::No, found[at], byte);
                if seen.insert(next) {
                    found.push(next);
                }
            }
            at += 1;
        }
        let (mut order, matches): (Vec<StateID>, Vec<StateID>) =
            found.iter().partition(|&&state| !dfa.is_match(state));
        let first_match = order.len();
        order.extend(matches);
        let stride2 = representatives.len().next_power_of_two().trailing_zeros();
        let number: FxHashMap<StateID, u32> = order
            .iter()
            .enumerate()
            .map(|(i, &state)| (state, (i as u32) << stride2))
            .collect();
        let mut next = Vec::with_capacity(order.len() << stride2);
        let (mut owner_starts, mut owners) = (vec![0], Vec::new());
        for &state in &order {
            next.extend(
                representatives
                    .iter()
                    .map(|&byte| number[&dfa.next_state(Anchored::No, state, byte)]),
            );
            next.resize(next.len().next_multiple_of(1 << stride2), 0);
            if dfa.is_match(state) {
                owners.extend(
                    (0..dfa.match_len(state))
                        .map(|i| owner[dfa.match_pattern(state, i).as_usize()]),
                );
                owner_starts.push(owners.len() as u32);
            }
        }
        LiteralScan {
            classes,
            stride2,
            next,
            first_match: (first_match as u32) << stride2,
            owner_starts,
            owners,
            longest: literals.iter().map(Vec::len).max().unwrap_or(0),
        }
    }
}

impl Prefilter {
    /// `patterns[i]` is rule `i`'s regex (already known to compile).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Prefilter {
        let (mut literals, mut owner, mut always, mut confirms) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut shared = SharedBuilder::default();
        for (rule, pattern) in patterns.into_iter().enumerate() {
            let plan = regex_syntax::Parser::new()
                .parse(pattern)
                .map(|hir| RulePlan::for_regex(&hir))
                .unwrap_or_default();
            let mut rule_confirms = Vec::new();
            match plan.trigger {
                Some(set) => {
                    // A trigger cut short can occur where the whole
                    // literal does not ("session opened for user root" is
                    // cut to "ser root", which a closed session's line
                    // holds too): the whole one is checked first, a
                    // cheap search that spares the regex.
                    if set.iter().any(|literal| literal.bytes.len() > MAX_TRIGGER) {
                        rule_confirms.push(shared.confirm(&set));
                    }
                    owner.extend(std::iter::repeat_n(rule, set.len()));
                    literals.extend(
                        set.into_iter()
                            .map(|literal| trigger_part(&literal.bytes).to_vec()),
                    );
                }
                None => always.push(rule),
            }
            rule_confirms.extend(plan.confirms.iter().map(|set| shared.confirm(set)));
            // A single literal's search can reject the line before the
            // shared scan is needed.
            rule_confirms.sort_by_key(|confirm| matches!(confirm, Confirm::Shared(_)));
            confirms.push(rule_confirms);
        }
        let triggers = (!literals.is_empty()).then(|| LiteralScan::new(&literals, false, &owner));
        Prefilter {
            triggers,
            always,
            confirms,
            shared: shared.build(),
        }
    }

    /// Rules that may match `line`, in rule order, each once.
    pub fn candidates(&self, line: &str) -> Vec<usize> {
        let mut found = Found::default();
        self.find(line, &mut found);
        found.rules
    }

    /// [`Prefilter::candidates`] into `found`, whose buffers a search of
    /// the next line uses again: it allocates nothing once they have grown.
    pub fn find(&self, line: &str, found: &mut Found) {
        let Found { rules, sets } = found;
        rules.clear();
        rules.extend_from_slice(&self.always);
        if let Some(triggers) = &self.triggers {
            triggers.found_in(line, rules);
        }
        rules.sort_unstable();
        rules.dedup();
        // The sets found in the line, scanned for at most once.
        let mut sets_scanned = false;
        rules.retain(|&rule| {
            self.confirms[rule].iter().all(|confirm| match confirm {
                Confirm::One(finder) => finder.find(line.as_bytes()).is_some(),
                Confirm::Shared(set) => {
                    if !std::mem::replace(&mut sets_scanned, true) {
                        sets.clear();
                        self.shared
                            .as_ref()
                            .expect("a shared set has its automaton")
                            .found_in(line, sets);
                    }
                    sets.contains(set)
                }
            })
        });
    }
}

/// What a search found in a line, in buffers kept from line to line.
#[derive(Debug, Default)]
pub struct Found {
    /// The rules the line may match, in rule order.
    rules: Vec<usize>,
    /// The shared confirm sets found in the line.
    sets: Vec<usize>,
}

impl Found {
    pub fn rules(&self) -> &[usize] {
        &self.rules
    }
}

impl LiteralScan {
    /// Adds the owner of every literal in `line` to `found` (a literal in
    /// the middle of a long line may be added twice).
    fn found_in(&self, line: &str, found: &mut Vec<usize>) {
        // Each step waits on the one before (the next state is a load at an
        // address the current state gives), so one walk leaves the core
        // mostly idle: parts of the line walked in step take little more
        // time than one. Each part reaches `longest - 1` bytes into the
        // next, so a literal that starts in it is found whole; a line too
        // short for four such parts is walked in two, or whole.
        let line = line.as_bytes();
        let reach = self.longest.max(1);
        if line.len() >= 4 * reach {
            self.walk_parts::<4>(line, found)
        } else if line.len() >= 2 * reach {
            self.walk_parts::<2>(line, found)
        } else {
            self.walk(0, line, found)
        }
    }

    /// Walks `line` in `N` overlapping parts in step; each part is at
    /// least `longest` bytes long. The parts are of one length (the last
    /// up to `N - 1` bytes shorter), so they end together: with the last
    /// part shorter by the overlap, the others each had `longest - 1`
    /// bytes to walk alone, a step waiting on the one before.
    fn walk_parts<const N: usize>(&self, line: &[u8], found: &mut Vec<usize>) {
        let overlap = self.longest.saturating_sub(1);
        let len = (line.len() + (N - 1) * overlap).div_ceil(N);
        let parts: [&[u8]; N] = std::array::from_fn(|i| {
            let start = i * (len - overlap);
            &line[start..(start + len).min(line.len())]
        });
        let together = parts.iter().map(|part| part.len()).min().unwrap_or(0);
        let mut states = [0u32; N];
        // Each part cut to `together` bytes: the compiler then drops the
        // bounds check of each byte (5 % of the scan).
        let heads: [&[u8]; N] = std::array::from_fn(|i| &parts[i][..together]);
        for at in 0..together {
            for (state, head) in states.iter_mut().zip(&heads) {
                *state = self.step(*state, head[at]);
                if *state >= self.first_match {
                    self.record(*state, found);
                }
            }
        }
        for (state, part) in states.into_iter().zip(parts) {
            self.walk(state, &part[together..], found);
        }
    }

    fn step(&self, state: u32, byte: u8) -> u32 {
        self.next[state as usize + usize::from(self.classes[usize::from(byte)])]
    }

    /// Walks `bytes` from `state`, recording the matches met.
    fn walk(&self, mut state: u32, bytes: &[u8], found: &mut Vec<usize>) {
        for &byte in bytes {
            state = self.step(state, byte);
            // Match states are rare, so a step is a lookup and a compare.
            if state >= self.first_match {
                self.record(state, found);
            }
        }
    }

    /// Out of line, so the loop above keeps its few values in registers.
    #[inline(never)]
    fn record(&self, state: u32, found: &mut Vec<usize>) {
        let match_state = ((state - self.first_match) >> self.stride2) as usize;
        let (start, end) = (
            self.owner_starts[match_state],
            self.owner_starts[match_state + 1],
        );
        found.extend_from_slice(&self.owners[start as usize..end as usize]);
    }
}

/// A search for "some literal of a set occurs".
enum Confirm {
    /// One case-sensitive literal, the common case: a plain substring
    /// search, several times cheaper per line than an automaton.
    One(Box<memchr::memmem::Finder<'static>>),
    /// Any other set: its index among the sets of `Prefilter::shared`.
    Shared(usize),
}

/// Gathers the sets of the `Prefilter::shared` automaton.
#[derive(Default)]
struct SharedBuilder {
    literals: Vec<Literal>,
    set_of: Vec<usize>,
    sets: usize,
}

impl SharedBuilder {
    fn confirm(&mut self, set: &LiteralSet) -> Confirm {
        match set.as_slice() {
            [only] if !only.caseless => Confirm::One(Box::new(
                memchr::memmem::Finder::new(&only.bytes).into_owned(),
            )),
            _ => {
                self.literals.extend(set.iter().cloned());
                self.set_of
                    .extend(std::iter::repeat_n(self.sets, set.len()));
                self.sets += 1;
                Confirm::Shared(self.sets - 1)
            }
        }
    }

    fn build(self) -> Option<LiteralScan> {
        (self.sets > 0).then(|| {
            let caseless = self.literals.iter().any(|literal| literal.caseless);
            let literals: Vec<Vec<u8>> = self.literals.into_iter().map(|l| l.bytes).collect();
            LiteralScan::new(&literals, caseless, &self.set_of)
        })
    }
}

/// Fixed text every match of some part of a regex contains.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Literal {
    /// Lowercase when `caseless`.
    bytes: Vec<u8>,
    /// From `(?i)` text: any ASCII case matches.
    caseless: bool,
}

/// Literals at least one of which every match contains.
type LiteralSet = Vec<Literal>;

/// How the prefilter treats one rule.
#[derive(Default)]
struct RulePlan {
    /// The case-sensitive set that rejects the most lines: the rule is a
    /// candidate only where one of these occurs.
    trigger: Option<LiteralSet>,
    /// Other required sets, longest first.
    confirms: Vec<LiteralSet>,
}

impl RulePlan {
    fn for_regex(hir: &Hir) -> RulePlan {
        let mut sets: Vec<LiteralSet> = required_sets(hir)
            .into_iter()
            .filter(|set| {
                !set.is_empty() && set.iter().all(|literal| literal.bytes.len() >= MIN_LITERAL)
            })
            .collect();
        sets.sort_by_key(|set| std::cmp::Reverse(score(set)));
        sets.dedup();
        let trigger = sets
            .iter()
            .position(|set| set.iter().all(|literal| !literal.caseless))
            .map(|at| sets.remove(at));
        sets.retain(|set| !trigger.as_ref().is_some_and(|t| implied_by(set, t)));
        sets.truncate(MAX_CONFIRMS);
        RulePlan {
            trigger,
            confirms: sets,
        }
    }
}

/// The part of a required literal its trigger is cut to (any part of it is
/// required too): of its parts of [`MAX_TRIGGER`] bytes, the one with the
/// most capitals, the last of equals. Capitals start a message's words
/// ("Failed p" leaves out the "Accepted publickey for" of every key login,
/// which "key for " finds), and are rarer than the rest.
fn trigger_part(literal: &[u8]) -> &[u8] {
    let capitals = |part: &&[u8]| part.iter().filter(|b| b.is_ascii_uppercase()).count();
    literal
        .windows(literal.len().clamp(1, MAX_TRIGGER))
        .max_by_key(capitals)
        .unwrap_or(literal)
}

/// Whether `set` occurs wherever `trigger` does: the trigger is one literal
/// that contains one of the set's (case-sensitive) literals.
fn implied_by(set: &LiteralSet, trigger: &LiteralSet) -> bool {
    let [only] = trigger.as_slice() else {
        return false;
    };
    set.iter().any(|literal| {
        !literal.caseless
            && only
                .bytes
                .windows(literal.bytes.len())
                .any(|window| window == literal.bytes)
    })
}

/// How well a set filters, higher is better: its shortest literal is longer
/// (rarer), case-sensitive beats caseless, then fewer literals.
fn score(set: &LiteralSet) -> (usize, bool, std::cmp::Reverse<usize>) {
    let shortest = set.iter().map(|l| l.bytes.len()).min().unwrap_or(0);
    let exact = set.iter().all(|l| !l.caseless);
    (shortest, exact, std::cmp::Reverse(set.len()))
}

/// Every literal set that all matches of `hir` contain: each set on its own
/// is a necessary condition.
fn required_sets(hir: &Hir) -> Vec<LiteralSet> {
    match hir.kind() {
        HirKind::Capture(capture) => required_sets(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => required_sets(&repetition.sub),
        HirKind::Alternation(branches) => {
            let mut union = Vec::new();
            for branch in branches {
                let best = required_sets(branch).into_iter().max_by_key(score);
                match best {
                    Some(set) => union.extend(set),
                    None => return Vec::new(),
                }
            }
            vec![union]
        }
        HirKind::Concat(_) | HirKind::Literal(_) | HirKind::Class(_) => {
            // Captures do not change the text matched, so fixed text runs
            // across group boundaries: `" (?P<code>4\d\d)` holds `" 4`.
            let mut sets = Vec::new();
            let mut run: Option<Literal> = None;
            for part in sequence(hir) {
                if let Some(piece) = fixed_text(part) {
                    run = Some(match run {
                        Some(text) => text.joined(piece),
                        None => piece,
                    });
                    continue;
                }
                sets.extend(run.take().map(|text| vec![text]));
                if !matches!(part.kind(), HirKind::Class(_)) {
                    sets.extend(required_sets(part));
                }
            }
            sets.extend(run.map(|text| vec![text]));
            sets
        }
        _ => Vec::new(),
    }
}

/// `hir` as a flat sequence of parts, with captures and nested
/// concatenations opened.
fn sequence(hir: &Hir) -> Vec<&Hir> {
    match hir.kind() {
        HirKind::Concat(parts) => parts.iter().flat_map(sequence).collect(),
        HirKind::Capture(capture) => sequence(&capture.sub),
        _ => vec![hir],
    }
}

/// The text `hir` matches when it is fixed: a literal, or a letter in either
/// ASCII case (how `(?i)` letters parse). A class that also holds non-ASCII
/// forms (`(?i)k` matches the Kelvin sign) is not fixed text.
fn fixed_text(hir: &Hir) -> Option<Literal> {
    match hir.kind() {
        HirKind::Literal(literal) => Some(Literal {
            bytes: literal.0.to_vec(),
            caseless: false,
        }),
        HirKind::Class(class) => {
            let pair: Vec<(u32, u32)> = match class {
                Class::Unicode(c) => c
                    .ranges()
                    .iter()
                    .map(|r| (u32::from(r.start()), u32::from(r.end())))
                    .collect(),
                Class::Bytes(c) => c
                    .ranges()
                    .iter()
                    .map(|r| (u32::from(r.start()), u32::from(r.end())))
                    .collect(),
            };
            match pair.as_slice() {
                &[(upper, upper_end), (lower, lower_end)]
                    if upper == upper_end
                        && lower == lower_end
                        && u8::try_from(upper).is_ok_and(|b| b.is_ascii_uppercase())
                        && lower == upper + 32 =>
                {
                    Some(Literal {
                        bytes: vec![lower as u8],
                        caseless: true,
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

impl Literal {
    fn joined(self, next: Literal) -> Literal {
        let caseless = self.caseless || next.caseless;
        let mut bytes = self.bytes;
        bytes.extend_from_slice(&next.bytes);
        if caseless {
            bytes.make_ascii_lowercase();
        }
        Literal { bytes, caseless }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule's trigger and confirms, caseless literals written `(?i)text`.
    fn plan(pattern: &str) -> (Option<Vec<String>>, Vec<Vec<String>>) {
        let hir = regex_syntax::Parser::new().parse(pattern).unwrap();
        let text = |set: LiteralSet| -> Vec<String> {
            set.into_iter()
                .map(|l| {
                    let bytes = String::from_utf8(l.bytes).unwrap();
                    if l.caseless {
                        format!("(?i){bytes}")
                    } else {
                        bytes
                    }
                })
                .collect()
        };
        let plan = RulePlan::for_regex(&hir);
        (
            plan.trigger.map(text),
            plan.confirms.into_iter().map(text).collect(),
        )
    }

    #[test]
    fn the_longest_required_literal_triggers_and_the_next_confirm() {
        let (trigger, confirms) =
            plan(r"^\w+ sshd\[\d+\]: Failed (?P<a>password|publickey) for (?P<u>.*) from \S+$");
        assert_eq!(trigger, Some(vec!["]: Failed ".to_string()]));
        assert_eq!(
            confirms,
            vec![
                vec!["password".to_string(), "publickey".to_string()],
                vec![" sshd[".to_string()],
                vec![" from ".to_string()]
            ]
        );
        // Either branch's literal will do; optional parts offer none.
        assert_eq!(
            plan(r"^(?:x )?(?:Invalid|Illegal) user \S+$").0,
            Some(vec!["Invalid".to_string(), "Illegal".to_string()])
        );
        assert_eq!(
            plan(r"(?:abc|defg)\d").0,
            Some(vec!["abc".to_string(), "defg".to_string()])
        );
        assert_eq!(plan(r"(?:abc)?\d+"), (None, vec![]));
    }

    #[test]
    fn fixed_text_runs_across_groups_and_caseless_letters_confirm() {
        // The 4xx rule: " HTTP/" is on every access line, `" 4` only on 4xx.
        let (trigger, confirms) =
            plan(r#"^(?P<ip>\S+) "(?P<m>[A-Z]+) (?P<u>\S+) HTTP/[\d.]+" (?P<c>4\d\d) "#);
        assert_eq!(trigger, Some(vec![" HTTP/".to_string()]));
        assert_eq!(confirms, vec![vec!["\" 4".to_string()]]);

        let (trigger, confirms) = plan(r"GET (?P<u>\S*(?i:/\.env|/wp-login\.php)\S*) HTTP/");
        assert_eq!(trigger, Some(vec![" HTTP/".to_string()]));
        assert_eq!(
            confirms,
            vec![
                vec!["(?i)/.env".to_string(), "(?i)/wp-login.php".to_string()],
                vec!["GET ".to_string()]
            ]
        );
        // `(?i)k` also matches the Kelvin sign: not fixed text, so the run
        // stops there and "/.env" is all this branch offers.
        assert_eq!(
            plan(r"(?i:/\.env|/kubectl)x").1,
            vec![vec!["(?i)/.env".to_string(), "(?i)ubectl".to_string()]]
        );
        assert_eq!(plan(r"(?i)failed").0, None, "caseless text never triggers");
    }

    #[test]
    fn a_trigger_across_the_middle_of_a_long_line_is_found() {
        let prefilter = Prefilter::new(["needle in the middle (?P<x>\\d+)"]);
        for pad in 0..80 {
            let line = format!(
                "{}needle in the middle 7{}",
                "x".repeat(pad),
                "y".repeat(80 - pad)
            );
            assert_eq!(prefilter.candidates(&line), vec![0], "padding {pad}");
        }
    }

    proptest::proptest! {
        /// Wherever literals fall in a line of any length (across the parts
        /// it is walked in, at its ends), the scan finds exactly the ones a
        /// plain search finds.
        #[test]
        fn the_scan_finds_what_a_plain_search_finds(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "Failed ", "password", "sshd[", " from ", "Accepted publickey for ", "x", "yy", " ",
                "FAILED ", "PassWord", "\u{0}", "é",
            ]), 0..60),
            caseless: bool,
        ) {
            let literals: Vec<Vec<u8>> = ["sshd[", "Failed password", " from ", "Accepted publickey for ", "yyy"]
                .iter()
                .map(|literal| literal.as_bytes().to_vec())
                .collect();
            let owners: Vec<usize> = (0..literals.len()).collect();
            let scan = LiteralScan::new(&literals, caseless, &owners);
            let line = pieces.concat();
            let mut found = Vec::new();
            scan.found_in(&line, &mut found);
            found.sort_unstable();
            found.dedup();
            let fold = |bytes: &[u8]| match caseless {
                true => bytes.to_ascii_lowercase(),
                false => bytes.to_vec(),
            };
            let expected: Vec<usize> = literals
                .iter()
                .enumerate()
                .filter(|(_, literal)| {
                    fold(line.as_bytes()).windows(literal.len()).any(|w| w == fold(literal))
                })
                .map(|(i, _)| i)
                .collect();
            proptest::prop_assert_eq!(found, expected, "{:?}", line);
        }
    }

    /// The prefilter is a necessary condition: every shipped rule is a
    /// candidate for every example line its regex matches, and so is every
    /// other rule that matches it.
    #[test]
    fn no_shipped_rule_is_filtered_out_of_a_line_it_matches() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let files = crate::rules::rule_files(&[root.join("rules")]).unwrap();
        let rules = crate::rules::load_rules(&files).unwrap().rules;
        let prefilter = Prefilter::new(rules.iter().map(|r| r.regex.as_str()));
        let mut checked = 0;
        for example in rules.iter().flat_map(|r| &r.examples) {
            let line = example.line.as_str();
            let candidates = prefilter.candidates(line);
            for (i, rule) in rules.iter().enumerate() {
                if rule.regex.is_match(line) {
                    checked += 1;
                    assert!(
                        candidates.contains(&i),
                        "{} filtered out of {line:?}",
                        rule.id
                    );
                }
            }
        }
        assert!(checked > 150, "only {checked} matching pairs");
    }

    #[test]
    fn sets_of_several_literals_are_confirmed_in_one_scan() {
        let prefilter = Prefilter::new([
            r"GET (?P<u>\S*(?i:/\.env|/wp-login\.php)\S*) HTTP/",
            r"GET (?P<u>\S*(?:sqlmap|nikto)\S*) HTTP/",
        ]);
        assert!(prefilter.shared.is_some());
        assert_eq!(prefilter.candidates("GET /WP-LOGIN.php HTTP/1.1"), vec![0]);
        assert_eq!(prefilter.candidates("GET /x?nikto HTTP/1.1"), vec![1]);
        assert_eq!(
            prefilter.candidates("GET /.env?sqlmap HTTP/1.1"),
            vec![0, 1]
        );
        assert!(prefilter.candidates("GET /index.html HTTP/1.1").is_empty());
    }

    #[test]
    fn a_cut_trigger_is_confirmed_whole() {
        let prefilter = Prefilter::new([r"\(sshd:session\): session opened for user root"]);
        // Its trigger is "ser root".
        let closed = "pam_unix(sshd:session): session closed for user root";
        assert!(prefilter.candidates(closed).is_empty());
        let opened = "pam_unix(sshd:session): session opened for user root";
        assert_eq!(prefilter.candidates(opened), vec![0]);
    }

    #[test]
    fn a_long_trigger_is_cut_to_its_part_with_the_most_capitals() {
        assert_eq!(trigger_part(b"]: Failed publickey for "), b"Failed p");
        assert_eq!(trigger_part(b"IN REFUSED FROM x"), b"SED FROM");
        assert_eq!(trigger_part(b"session opened for user root"), b"ser root");
        assert_eq!(trigger_part(b"short"), b"short");
    }

    #[test]
    fn candidates_are_the_triggered_and_confirmed_rules_plus_the_rest() {
        let prefilter = Prefilter::new([
            "Failed (?P<x>\\S+)",
            "Invalid user (?P<x>\\S+)",
            "(?P<x>\\d+)",
            "Failed (?P<x>\\S+) from (?P<y>\\S+)",
        ]);
        assert_eq!(
            prefilter.candidates("sshd: Failed password; Invalid user x"),
            vec![0, 1, 2]
        );
        assert_eq!(
            prefilter.candidates("Invalid user x: Failed password from y"),
            vec![0, 1, 2, 3],
            "overlapping and later triggers are all found"
        );
        assert_eq!(
            prefilter.candidates("kernel: link up"),
            vec![2],
            "a rule without a literal is always a candidate"
        );
    }
}
