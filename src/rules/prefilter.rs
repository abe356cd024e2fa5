//! Which rules could match a line, found with one literal scan.
//!
//! Most log lines match no rule. Every rule's regex needs some fixed text to
//! match ("]: Failed ", "SASL ", "password mismatch"), often in several
//! places; those literals are pulled out of the parsed regex and searched for
//! all at once with Aho-Corasick. A rule runs its full regex on a line only
//! when each of its required literal sets has a hit there (a set is a
//! disjunction: `Invalid|Illegal`). A rule with no usable literal is always
//! run.
//!
//! The literals are a necessary condition by construction, so the prefilter
//! never changes what matches, only how fast a non-match is rejected.

use aho_corasick::AhoCorasick;
use regex_syntax::hir::{Hir, HirKind};

/// Literals shorter than this find too many lines to be worth a scan.
const MIN_LITERAL: usize = 3;
/// Sets kept per rule, the most selective first (a bit each in a `u8`).
const MAX_SETS: usize = 4;

type LiteralSet = Vec<Vec<u8>>;

pub struct Prefilter {
    searcher: Option<AhoCorasick>,
    /// For each literal of `searcher`: the rule and the bit of its set.
    owner: Vec<(usize, u8)>,
    /// Per rule: the bits of all its sets (0 for a rule that is always run).
    needed: Vec<u8>,
    /// Rules without a usable literal: candidates for every line.
    always: Vec<usize>,
}

impl Prefilter {
    /// `patterns[i]` is rule `i`'s regex (already known to compile).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Prefilter {
        let (mut literals, mut owner, mut needed, mut always) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (rule, pattern) in patterns.into_iter().enumerate() {
            let mut sets: Vec<LiteralSet> = regex_syntax::Parser::new()
                .parse(pattern)
                .map(|hir| required_sets(&hir))
                .unwrap_or_default()
                .into_iter()
                .filter(|set| !set.is_empty() && set.iter().all(|l| l.len() >= MIN_LITERAL))
                .collect();
            sets.sort_by_key(|set| std::cmp::Reverse(shortest(set)));
            sets.dedup();
            sets.truncate(MAX_SETS);
            if sets.is_empty() {
                always.push(rule);
            }
            needed.push(((1u16 << sets.len()) - 1) as u8);
            for (bit, set) in sets.into_iter().enumerate() {
                owner.extend(std::iter::repeat_n((rule, 1u8 << bit), set.len()));
                literals.extend(set);
            }
        }
        let searcher = (!literals.is_empty())
            .then(|| AhoCorasick::new(&literals).expect("literal sets this small always build"));
        Prefilter {
            searcher,
            owner,
            needed,
            always,
        }
    }

    /// Rules that may match `line`, in rule order, each once. Allocates
    /// nothing for a line no literal occurs in (when every rule has one).
    pub fn candidates(&self, line: &str) -> Vec<usize> {
        let mut hits: Vec<(usize, u8)> = Vec::new();
        if let Some(searcher) = &self.searcher {
            hits.extend(
                searcher
                    .find_overlapping_iter(line)
                    .map(|m| self.owner[m.pattern().as_usize()]),
            );
        }
        hits.sort_unstable();
        let mut found = self.always.clone();
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let rule = group[0].0;
            let bits = group.iter().fold(0, |bits, (_, bit)| bits | bit);
            if bits == self.needed[rule] {
                found.push(rule);
            }
        }
        found.sort_unstable();
        found
    }
}

fn shortest(set: &LiteralSet) -> usize {
    set.iter().map(Vec::len).min().unwrap_or(0)
}

/// The text every match of `hir` is, when it is fixed.
fn exact(hir: &Hir) -> Option<Vec<u8>> {
    match hir.kind() {
        HirKind::Literal(literal) => Some(literal.0.to_vec()),
        HirKind::Empty | HirKind::Look(_) => Some(Vec::new()),
        HirKind::Capture(capture) => exact(&capture.sub),
        HirKind::Concat(parts) => parts.iter().try_fold(Vec::new(), |mut text, part| {
            text.extend(exact(part)?);
            Some(text)
        }),
        _ => None,
    }
}

/// Text every match of `hir` starts with (`from_end`: ends with).
fn affix(hir: &Hir, from_end: bool) -> Vec<u8> {
    match hir.kind() {
        HirKind::Literal(literal) => literal.0.to_vec(),
        HirKind::Capture(capture) => affix(&capture.sub, from_end),
        HirKind::Repetition(repetition) if repetition.min >= 1 => affix(&repetition.sub, from_end),
        HirKind::Concat(parts) => {
            let mut text = Vec::new();
            let ordered: Box<dyn Iterator<Item = &Hir>> = if from_end {
                Box::new(parts.iter().rev())
            } else {
                Box::new(parts.iter())
            };
            for part in ordered {
                let (piece, whole) = match exact(part) {
                    Some(piece) => (piece, true),
                    None => (affix(part, from_end), false),
                };
                if from_end {
                    text.splice(0..0, piece);
                } else {
                    text.extend(piece);
                }
                if !whole {
                    break;
                }
            }
            text
        }
        _ => Vec::new(),
    }
}

/// Literal sets every match of `hir` needs a member of, one per place in the
/// regex that offers fixed text; runs of fixed text across groups join up.
fn required_sets(hir: &Hir) -> Vec<LiteralSet> {
    match hir.kind() {
        HirKind::Literal(literal) => vec![vec![literal.0.to_vec()]],
        HirKind::Capture(capture) => required_sets(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => required_sets(&repetition.sub),
        HirKind::Alternation(branches) => {
            // Every branch must offer a set; a match contains one of them.
            let mut union = Vec::new();
            for branch in branches {
                let best = required_sets(branch).into_iter().max_by_key(shortest);
                match best {
                    Some(set) => union.extend(set),
                    None => return Vec::new(),
                }
            }
            vec![union]
        }
        HirKind::Concat(parts) => {
            let mut sets = Vec::new();
            let mut run: Vec<u8> = Vec::new();
            for part in parts {
                if let Some(text) = exact(part) {
                    run.extend(text);
                    continue;
                }
                run.extend(affix(part, false));
                if !run.is_empty() {
                    sets.push(vec![std::mem::take(&mut run)]);
                }
                sets.extend(required_sets(part));
                run = affix(part, true);
            }
            if !run.is_empty() {
                sets.push(vec![run]);
            }
            sets
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(pattern: &str) -> Vec<Vec<String>> {
        let hir = regex_syntax::Parser::new().parse(pattern).unwrap();
        // As `Prefilter::new` keeps them: sets of literals long enough to scan for.
        required_sets(&hir)
            .into_iter()
            .filter(|set| set.iter().all(|l| l.len() >= MIN_LITERAL))
            .map(|set| {
                set.into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn fixed_text_joins_across_groups_and_every_place_counts() {
        assert_eq!(
            sets(r#"^\S+ HTTP/[\d.]+" (?P<status>4\d\d) (?P<size>\d+)$"#),
            vec![vec![" HTTP/".to_string()], vec!["\" 4".to_string()]]
        );
        assert_eq!(
            sets(r#"" (?P<status>400) "#),
            vec![vec!["\" 400 ".to_string()]]
        );
        assert_eq!(
            sets(r"^(?:x )?(?:Invalid|Illegal) user \S+$"),
            vec![
                vec!["Invalid".to_string(), "Illegal".to_string()],
                vec![" user ".to_string()]
            ]
        );
        assert!(sets(r"(?:abc)?\d+").is_empty());
        assert!(
            sets(r"(?i)failed").is_empty(),
            "case-insensitive text is no literal"
        );
    }

    #[test]
    fn a_rule_is_a_candidate_only_when_all_its_sets_hit() {
        let prefilter = Prefilter::new([
            r#"HTTP/1.1" (?P<s>4\d\d)"#,
            "Invalid user (?P<x>\\S+)",
            "(?P<x>\\d+)",
        ]);
        assert_eq!(
            prefilter.candidates(r#"GET / HTTP/1.1" 404 Invalid user x"#),
            vec![0, 1, 2]
        );
        assert_eq!(
            prefilter.candidates(r#"GET / HTTP/1.1" 200"#),
            vec![2],
            "one set of rule 0 missing"
        );
        assert_eq!(
            prefilter.candidates("kernel: link up"),
            vec![2],
            "a rule without a literal is always a candidate"
        );
    }
}
