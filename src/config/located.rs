//! Turns a figment error into one message an operator can act on:
//! `FILE:LINE:COL: key: what is wrong`, with "did you mean" for a misspelt
//! key. figment knows the key's path but not where it is in the file; the
//! toml parser knows the position, so the file is parsed once more for it.
//! [`key_position`] does the same for the errors validation finds, which
//! know only the key.

use std::path::Path;

use figment::error::{Actual, Kind};
use figment::Source;

use super::{Config, ConfigError};

/// A key no further from a known one than this many edits is a misspelling
/// of it (`stat_dir` → `state_dir`, `rate_limit` → `rate_limits`).
const MAX_TYPO_EDITS: usize = 2;

pub(super) fn locate(path: &Path, error: figment::Error) -> ConfigError {
    // figment chains every error it found; the first is what to fix first,
    // and the others often follow from it.
    let error = error.into_iter().next().expect("a figment error holds one");
    let key = (!error.path.is_empty()).then(|| key_path(&error.path));
    let from_file = error
        .metadata
        .as_ref()
        .is_some_and(|m| matches!(m.source, Some(Source::File(_))));
    let at = if from_file {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| position_in(&text))
            .map_or_else(
                || path.display().to_string(),
                |(line, column)| format!("{}:{line}:{column}", path.display()),
            )
    } else {
        // The only other provider is the environment: name the variable.
        let variable: Vec<String> = error.path.iter().map(|k| k.to_uppercase()).collect();
        format!("{}: $TAILHOOK_{}", path.display(), variable.join("__"))
    };
    ConfigError::Parse {
        at,
        key,
        problem: problem(&error.kind),
    }
}

/// `input[0].name`, as validation errors name keys (figment says `input.0.name`).
fn key_path(parts: &[String]) -> String {
    let mut key = String::new();
    for part in parts {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// 1-based line and column of the first problem the toml parser finds.
fn position_in(text: &str) -> Option<(usize, usize)> {
    let error = toml::from_str::<Config>(text).err()?;
    Some(line_and_column(text, error.span()?.start))
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Where the value of `key` (`input[0].rules`, `webhook.soc.url_env`, as
/// validation names keys) is written in `text`: 1-based line and column.
/// `None` for a key the file does not hold (a default, an environment
/// override, a command-line option).
pub(super) fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = document.as_item();
    for part in key.split('.') {
        let (name, indexes) = part.split_once('[').unwrap_or((part, ""));
        item = item.get(name)?;
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            item = item.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(line_and_column(text, item.span()?.start))
}

fn problem(kind: &Kind) -> String {
    match kind {
        Kind::UnknownField(field, expected) => match closest(field, expected) {
            Some(known) => format!("unknown key `{field}`; did you mean `{known}`?"),
            None => format!(
                "unknown key `{field}` (known here: {})",
                expected
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        // toml's syntax errors carry a source snippet over several lines;
        // the position is already in front, so one line says it.
        Kind::Message(message) => message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "))
            .filter(|l| !l.starts_with("TOML parse error"))
            .collect::<Vec<_>>()
            .join("; "),
        // A string of the wrong type can be a webhook URL with its key
        // (`url` under `[webhook]` instead of `[webhook.NAME]`): say what it
        // is, never what it holds.
        Kind::InvalidType(Actual::Str(_), expected) => {
            format!("invalid type: found a string, expected {expected}")
        }
        Kind::InvalidValue(Actual::Str(_), expected) => {
            format!("invalid value: found a string, expected {expected}")
        }
        other => other.to_string(),
    }
}

fn closest<'a>(field: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(field, k), *k))
        .filter(|(edits, _)| *edits <= MAX_TYPO_EDITS)
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_key_is_matched_to_the_nearest_known_one() {
        let agent = &["state_dir", "host", "poll_interval"];
        assert_eq!(closest("stat_dir", agent), Some("state_dir"));
        assert_eq!(closest("hots", agent), Some("host"));
        assert_eq!(closest("colour", agent), None);
    }

    proptest::proptest! {
        /// Any text as a config: a position inside the text, or none; never
        /// a panic (multi-byte characters and all).
        #[test]
        fn any_text_gets_a_position_inside_it(text in "(\\[agent\\]\n|[a-z_]{1,9} = |\"[^\"]{0,5}\"|[0-9]{1,3}|\n|.){0,24}") {
            if let Some((line, column)) = position_in(&text) {
                let lines: Vec<&str> = text.split('\n').collect();
                proptest::prop_assert!(line >= 1 && line <= lines.len(), "{line} of {}", lines.len());
                proptest::prop_assert!(column >= 1 && column <= lines[line - 1].chars().count() + 1);
            }
        }

        /// Any key in any text: a position inside the text, or none.
        #[test]
        fn any_key_in_any_text_is_found_or_not_without_panic(
            text in "(\\[\\[?[a-z]{1,3}\\]\\]?\n|[a-z]{1,3} = (1|\"é\"|\\[1\\])\n|.){0,12}",
            key in "[a-z]{1,3}(\\[[0-9]\\])?(\\.[a-z]{1,3}(\\[[0-9]{1,20}\\])?){0,2}",
        ) {
            if let Some((line, _)) = key_position(&text, &key) {
                proptest::prop_assert!(line <= text.split('\n').count());
            }
        }

        /// A toml message of any shape becomes one line.
        #[test]
        fn any_message_becomes_one_line(message in "(.|\n){0,80}") {
            let text = problem(&Kind::Message(message));
            proptest::prop_assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn validation_keys_are_found_where_their_values_are_written() {
        let text = "[agent]\nstate_dir = \"x\"\n\n[[input]]\nname = \"a\"\n\n[[input]]\nname = \"b\"\n  rules = [\"[\"]\n\n[webhook.soc]\nurl_env = \"X\"\n";
        assert_eq!(key_position(text, "input[1].rules"), Some((9, 11)));
        assert_eq!(key_position(text, "input[0].name"), Some((5, 8)));
        assert_eq!(key_position(text, "webhook.soc.url_env"), Some((12, 11)));
        assert_eq!(key_position(text, "agent.host"), None);
        assert_eq!(key_position(text, "input[2].name"), None);
        assert_eq!(key_position(text, "--webhook"), None);
    }

    #[test]
    fn array_indexes_read_as_in_validation_errors() {
        let parts = ["input", "0", "nmae"].map(String::from);
        assert_eq!(key_path(&parts), "input[0].nmae");
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        assert_eq!(position_in("[agent]\n  stat_dir = 1\n"), Some((2, 3)));
        assert_eq!(position_in("[agent\n"), Some((1, 7)));
        assert_eq!(position_in("[agent]\n"), None);
    }
}
