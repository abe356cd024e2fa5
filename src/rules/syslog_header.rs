//! The `{syslog}` header, as a regex for the rules and read by hand for
//! their matches.
//!
//! Most shipped rules start with the header. Found by a rule's capturing
//! regex it was a fifth of each match's cost, and its optional host kept
//! every such regex off the one-pass DFA. So a rule is also compiled as the
//! header read by [`header_end`] plus its own part (the body) run from where
//! the header ends (see `RuleRegex`). The property test below holds
//! [`header_end`] to [`SYSLOG_HEADER`] on arbitrary and header-like lines.

/// What `{syslog}` expands to (documented at `SYSLOG_PLACEHOLDER`).
pub const SYSLOG_HEADER: &str = r"^(?:<[0-9]{1,3}>[0-9]{1,2} - |(?:<[0-9]{1,3}>[0-9]{0,2} ?)?(?:@[0-9a-f]{24}|[A-Z][a-z]{2} +[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2}|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?) +)(?:(?P<host.hostname>[^\s\[\]:]+) )?";

/// The name of the header's one field.
pub const HOST_FIELD: &str = "host.hostname";

/// Where a line's header ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderEnd {
    /// Where the header ends when the token after the time is not taken as
    /// the host.
    pub before_host: usize,
    /// The host's span, when a token followed by a space comes next: the
    /// body then starts after that space, and at `before_host` only if it
    /// does not match there (as the regex backtracks into its optional
    /// host).
    pub host: Option<(usize, usize)>,
}

impl HeaderEnd {
    /// Where a body may start, in the order the regex tries them, each with
    /// the host it leaves.
    pub fn body_starts(self) -> impl Iterator<Item = (usize, Option<(usize, usize)>)> {
        let with_host = self.host.map(|(start, end)| (end + 1, Some((start, end))));
        with_host.into_iter().chain([(self.before_host, None)])
    }
}

/// [`SYSLOG_HEADER`]'s match of `line`, or `None` where it has none. The
/// regex's parts before the host can match only one way (a time's fields
/// are fixed, and each optional part that is there is taken), so the end
/// is unique; only its trailing spaces could give way to a body that starts
/// with one, which `RuleRegex` does not split.
pub fn header_end(line: &str) -> Option<HeaderEnd> {
    let bytes = line.as_bytes();
    let before_host = before_host(bytes)?;
    let rest = &line[before_host..];
    let token = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '[' | ']' | ':'))
        .unwrap_or(rest.len());
    let host = (token > 0 && rest.as_bytes().get(token) == Some(&b' '))
        .then_some((before_host, before_host + token));
    Some(HeaderEnd { before_host, host })
}

/// A pattern's `body` after the header, parsed, when it matches from where
/// [`header_end`] says the header ends exactly where the whole pattern
/// matches: when the body is no alternative of several (the header would
/// be in the first only), and it can neither match nothing nor start with a
/// space (the regex could then give the header's spaces up to it). `None`
/// also for a body that does not parse: the whole pattern's error says
/// where.
pub fn body_hir(body: &str) -> Option<regex_syntax::hir::Hir> {
    use regex_syntax::ast::{parse::Parser, Ast};
    let ast = Parser::new().parse(body).ok()?;
    if matches!(ast, Ast::Alternation(_)) {
        return None;
    }
    let hir = regex_syntax::hir::translate::Translator::new()
        .translate(body, &ast)
        .ok()?;
    let may_match_nothing = hir.properties().minimum_len() == Some(0);
    (!may_match_nothing && !may_start_with_space(&hir)).then_some(hir)
}

/// Whether a text `hir` matches may start with a space.
fn may_start_with_space(hir: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(literal) => literal.0.first() == Some(&b' '),
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .any(|range| (range.start()..=range.end()).contains(&' ')),
        HirKind::Class(Class::Bytes(class)) => class
            .ranges()
            .iter()
            .any(|range| (range.start()..=range.end()).contains(&b' ')),
        HirKind::Repetition(repetition) => may_start_with_space(&repetition.sub),
        HirKind::Capture(capture) => may_start_with_space(&capture.sub),
        HirKind::Alternation(alternatives) => alternatives.iter().any(may_start_with_space),
        // The first part that cannot match nothing ends what may come first.
        HirKind::Concat(parts) => {
            for part in parts {
                if may_start_with_space(part) {
                    return true;
                }
                if part.properties().minimum_len() != Some(0) {
                    return false;
                }
            }
            false
        }
    }
}

/// The end of the header without its host: `<PRI>VERSION - `, or an
/// optional `<PRI>` and version before a time, then spaces.
fn before_host(bytes: &[u8]) -> Option<usize> {
    let Some(after_pri) = pri(bytes) else {
        return time_and_spaces(bytes, 0);
    };
    let version = digits(bytes, after_pri, 2);
    if version > 0 && bytes[after_pri + version..].starts_with(b" - ") {
        return Some(after_pri + version + 3);
    }
    // `[0-9]{0,2} ?` gives way digit by digit to the time after it.
    (0..=version).rev().find_map(|taken| {
        let at = after_pri + taken;
        let spaced = (bytes.get(at) == Some(&b' '))
            .then(|| time_and_spaces(bytes, at + 1))
            .flatten();
        spaced.or_else(|| time_and_spaces(bytes, at))
    })
}

/// After `<` and one to three digits and `>`.
fn pri(bytes: &[u8]) -> Option<usize> {
    if bytes.first() != Some(&b'<') {
        return None;
    }
    let count = digits(bytes, 1, 3);
    (count > 0 && bytes.get(1 + count) == Some(&b'>')).then_some(count + 2)
}

/// A time at `at`, then one space or more: where they end.
fn time_and_spaces(bytes: &[u8], at: usize) -> Option<usize> {
    let end = time(bytes, at)?;
    let spaces = bytes[end..].iter().take_while(|&&b| b == b' ').count();
    (spaces > 0).then_some(end + spaces)
}

/// TAI64N, classic syslog or ISO 8601 at `at`: where it ends.
fn time(bytes: &[u8], at: usize) -> Option<usize> {
    let at_ = |i: usize| bytes.get(i).copied();
    match at_(at)? {
        b'@' => {
            let hex = bytes.get(at + 1..at + 25)?;
            hex.iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                .then_some(at + 25)
        }
        b'A'..=b'Z' => {
            let month = bytes.get(at + 1..at + 3)?;
            if !month.iter().all(u8::is_ascii_lowercase) {
                return None;
            }
            let spaces = bytes[at + 3..].iter().take_while(|&&b| b == b' ').count();
            let day = at + 3 + spaces;
            let day_digits = digits(bytes, day, 2);
            if spaces == 0 || day_digits == 0 || at_(day + day_digits) != Some(b' ') {
                return None;
            }
            clock(bytes, day + day_digits + 1)
        }
        b'0'..=b'9' => {
            let date = shaped(bytes, at, b"dddd-dd-dd")?;
            if !matches!(at_(date)?, b'T' | b' ') {
                return None;
            }
            let mut end = clock(bytes, date + 1)?;
            if matches!(at_(end), Some(b'.' | b',')) {
                let fraction = digits(bytes, end + 1, usize::MAX);
                if fraction > 0 {
                    end += 1 + fraction;
                }
            }
            match at_(end) {
                Some(b'Z') => end += 1,
                Some(b'+' | b'-') if digits(bytes, end + 1, 2) == 2 => {
                    end += 3;
                    if at_(end) == Some(b':') && digits(bytes, end + 1, 2) == 2 {
                        end += 3;
                    } else if digits(bytes, end, 2) == 2 {
                        end += 2;
                    }
                }
                _ => {}
            }
            Some(end)
        }
        _ => None,
    }
}

/// `HH:MM:SS` at `at`: where it ends.
fn clock(bytes: &[u8], at: usize) -> Option<usize> {
    shaped(bytes, at, b"dd:dd:dd")
}

/// Text of `shape` at `at` (`d` a digit, any other byte itself): where it
/// ends.
fn shaped(bytes: &[u8], at: usize, shape: &[u8]) -> Option<usize> {
    let end = at + shape.len();
    bytes
        .get(at..end)?
        .iter()
        .zip(shape)
        .all(|(&b, &s)| match s {
            b'd' => b.is_ascii_digit(),
            _ => b == s,
        })
        .then_some(end)
}

/// How many ASCII digits, up to `most`, start at `at`.
fn digits(bytes: &[u8], at: usize, most: usize) -> usize {
    bytes
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take(most)
        .take_while(|b| b.is_ascii_digit())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_regex(line: &str) -> Option<HeaderEnd> {
        thread_local! {
            static HEADER: regex::Regex = regex::Regex::new(SYSLOG_HEADER).unwrap();
            static BEFORE_HOST: regex::Regex = regex::Regex::new(
                SYSLOG_HEADER.strip_suffix(r"(?:(?P<host.hostname>[^\s\[\]:]+) )?").unwrap(),
            )
            .unwrap();
        }
        let before_host = BEFORE_HOST.with(|re| re.find(line))?.end();
        let host = HEADER
            .with(|re| re.captures(line))
            .and_then(|c| c.name(HOST_FIELD))
            .map(|m| (m.start(), m.end()));
        Some(HeaderEnd { before_host, host })
    }

    #[test]
    fn reads_each_form_as_the_regex_does() {
        for line in [
            "Nov 22 10:00:01 web1 sshd[1]: x",
            "Nov  2 10:00:01 web1 sshd[1]: x",
            "Nov 2 10:00:01 sshd[1]: x",
            "2026-11-22T10:00:01.123456+01:00 web1 sshd[1]: x",
            "2026-11-22 10:00:01,5Z  web1 x",
            "2026-11-22T10:00:01+0100 web1 x",
            "2026-11-22T10:00:01+01 web1 x",
            "2026-11-22T10:00:01+01:0 web1 x",
            "2026-11-22T10:00:01. web1 x",
            "<38>1 2026-11-22T10:00:01Z web1 sshd[1]: x",
            "<34>1 - web1 sshd 1 - - x",
            "<38>Nov 22 10:00:01 192.0.2.254 sshd[1]: x",
            "<38>12026-11-22T10:00:01Z host x",
            "<38>1 Nov 22 10:00:01 host x",
            "<1>-",
            "@400000004c91b044077a9e94 sshd[1]: x",
            "Nov 22 10:00:01 web1\u{a0}x y",
            "Nov 22 10:00:01 héte x",
            "Nov 22 10:00:01 web1",
            "Nov 22 10:00:01 web1\tx",
            "garbage Nov 22 10:00:01 web1 sshd[1]: x",
            "",
        ] {
            assert_eq!(header_end(line), by_regex(line), "{line:?}");
        }
        assert_eq!(
            header_end("Nov 22 10:00:01 web1 sshd[1]: x"),
            Some(HeaderEnd {
                before_host: 16,
                host: Some((16, 20))
            })
        );
    }

    /// Lines built from the header's pieces after the start of one, so
    /// that most come close to a header and many are one.
    fn header_like() -> impl Strategy<Value = String> {
        let start = prop::sample::select(vec![
            "",
            "<13>",
            "<13>1 ",
            "<1>12",
            "<999>",
            "Nov 22 10:00:01",
            "Nov  2 10:00:0",
            "2026-11-22T10:00:01",
            "2026-11-22 10:00:01",
            "@4000000000000000000000ab",
            "Nov 22 10:00:01 ",
            "<13>1 - ",
            "<13>Nov 2 10:00:01 ",
            "<13>1 2026-11-22 10:00:01 ",
            "2026-11-22T10:00:01.5+01:00 ",
            "2026-11-22T10:00:01Z ",
            "@4000000000000000000000ab ",
        ]);
        let piece = prop::sample::select(vec![
            "<",
            ">",
            "13",
            "1",
            "0",
            " ",
            "  ",
            "-",
            " - ",
            "@",
            "4000000000000000000000ab",
            "Nov",
            "N",
            "nov",
            "22",
            "2",
            "10:00:01",
            "10:0",
            "2026-11-22",
            "T",
            "Z",
            "+",
            "+01",
            ":00",
            "00",
            ".",
            ",",
            "5",
            "web1",
            "host.example",
            "[",
            "]",
            ":",
            "\t",
            "\u{a0}",
            "é",
            "sshd",
            "x",
        ]);
        (start, prop::collection::vec(piece, 0..10))
            .prop_map(|(start, pieces)| format!("{start}{}", pieces.concat()))
    }

    proptest! {
        // Cheap cases, and a host in only one in seven.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn agrees_with_the_regex_on_header_like_lines(line in header_like()) {
            prop_assert_eq!(header_end(&line), by_regex(&line), "{:?}", line);
        }

        #[test]
        fn agrees_with_the_regex_on_any_line(line in "\\PC{0,40}") {
            prop_assert_eq!(header_end(&line), by_regex(&line), "{:?}", line);
        }
    }
}
