//! Which rules could match a line, found with one literal scan.
//!
//! Most log lines match no rule. Every rule's regex needs some fixed text to
//! match ("Failed ", "SASL ", "password mismatch"); those literals are pulled
//! out of the parsed regex and searched for all at once with Aho-Corasick.
//! Only rules whose literal occurs in a line run their full regex on it. A
//! rule with no literal every match must contain is always run.
//!
//! The literals are a necessary condition by construction, so the prefilter
//! never changes what matches, only how fast a non-match is rejected.

use aho_corasick::AhoCorasick;
use regex_syntax::hir::{Hir, HirKind};

/// Literals shorter than this find too many lines to be worth a scan.
const MIN_LITERAL: usize = 3;

pub struct Prefilter {
    searcher: Option<AhoCorasick>,
    /// For each literal of `searcher`: the rule it belongs to.
    owner: Vec<usize>,
    /// Rules without a usable literal: candidates for every line.
    always: Vec<usize>,
}

impl Prefilter {
    /// `patterns[i]` is rule `i`'s regex (already known to compile).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Prefilter {
        let (mut literals, mut owner, mut always) = (Vec::new(), Vec::new(), Vec::new());
        for (rule, pattern) in patterns.into_iter().enumerate() {
            let required = regex_syntax::Parser::new()
                .parse(pattern)
                .ok()
                .and_then(|hir| required_literals(&hir))
                .filter(|set| set.iter().all(|l| l.len() >= MIN_LITERAL));
            match required {
                Some(set) => {
                    owner.extend(std::iter::repeat_n(rule, set.len()));
                    literals.extend(set);
                }
                None => always.push(rule),
            }
        }
        let searcher = if literals.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&literals).expect("literal sets this small always build"))
        };
        Prefilter {
            searcher,
            owner,
            always,
        }
    }

    /// Rules that may match `line`, in rule order, each once. Allocates
    /// nothing for a line no literal occurs in (when every rule has one).
    pub fn candidates(&self, line: &str) -> Vec<usize> {
        let mut found = self.always.clone();
        if let Some(searcher) = &self.searcher {
            found.extend(
                searcher
                    .find_overlapping_iter(line)
                    .map(|m| self.owner[m.pattern().as_usize()]),
            );
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// A set of literals at least one of which every match of `hir` contains,
/// chosen to reject as many lines as possible (longest shortest literal).
fn required_literals(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Literal(literal) => Some(vec![literal.0.to_vec()]),
        HirKind::Capture(capture) => required_literals(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => {
            required_literals(&repetition.sub)
        }
        HirKind::Alternation(branches) => {
            let mut union = Vec::new();
            for branch in branches {
                union.extend(required_literals(branch)?);
            }
            Some(union)
        }
        HirKind::Concat(parts) => {
            let mut best: Option<Vec<Vec<u8>>> = None;
            let mut run: Vec<u8> = Vec::new();
            let consider = |candidate: Vec<Vec<u8>>, best: &mut Option<Vec<Vec<u8>>>| {
                if best.as_ref().is_none_or(|b| better(&candidate, b)) {
                    *best = Some(candidate);
                }
            };
            for part in parts {
                if let HirKind::Literal(literal) = part.kind() {
                    run.extend_from_slice(&literal.0);
                    continue;
                }
                if !run.is_empty() {
                    consider(vec![std::mem::take(&mut run)], &mut best);
                }
                if let Some(set) = required_literals(part) {
                    consider(set, &mut best);
                }
            }
            if !run.is_empty() {
                consider(vec![run], &mut best);
            }
            best
        }
        _ => None,
    }
}

/// Whether literal set `a` filters better than `b`: its shortest literal is
/// longer (rarer), and on a tie it has fewer literals.
fn better(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    let shortest = |set: &[Vec<u8>]| set.iter().map(Vec::len).min().unwrap_or(0);
    (shortest(a), std::cmp::Reverse(a.len())) > (shortest(b), std::cmp::Reverse(b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literals(pattern: &str) -> Option<Vec<String>> {
        let hir = regex_syntax::Parser::new().parse(pattern).unwrap();
        required_literals(&hir).map(|set| {
            set.into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect()
        })
    }

    #[test]
    fn picks_the_longest_mandatory_literal() {
        assert_eq!(
            literals(r"^\w+ sshd\[\d+\]: Failed (?P<a>password|publickey) for (?P<u>.*) from \S+$"),
            Some(vec!["]: Failed ".to_string()])
        );
        // Either branch's literal will do, and both are longer than " user ";
        // optional parts offer none.
        assert_eq!(
            literals(r"^(?:x )?(?:Invalid|Illegal) user \S+$"),
            Some(vec!["Invalid".to_string(), "Illegal".to_string()])
        );
        assert_eq!(
            literals(r"(?:abc|defg)\d"),
            Some(vec!["abc".to_string(), "defg".to_string()])
        );
        assert_eq!(literals(r"(?:abc)?\d+"), None);
        assert_eq!(
            literals(r"(?i)failed"),
            None,
            "case-insensitive text is no literal"
        );
    }

    #[test]
    fn candidates_are_the_rules_whose_literal_occurs_plus_the_rest() {
        let prefilter = Prefilter::new([
            "Failed (?P<x>\\S+)",
            "Invalid user (?P<x>\\S+)",
            "(?P<x>\\d+)",
        ]);
        assert_eq!(
            prefilter.candidates("sshd: Failed password; Invalid user x"),
            vec![0, 1, 2]
        );
        assert_eq!(
            prefilter.candidates("kernel: link up"),
            vec![2],
            "a rule without a literal is always a candidate"
        );
    }
}
