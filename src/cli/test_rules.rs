//! `tailhook test-rules`: runs rules over lines and shows what they make of
//! them, like `fail2ban-regex`: every match with its fields and the event
//! JSON, then a summary (lines read, matched per rule, ignored, missed with a
//! sample, time and lines/s). With `--json`, one object per match on stdout
//! and the summary on stderr. `--journal-json` reads entries recorded with
//! `journalctl --output=json` and runs the rules over the line a journald
//! input makes of each, with the journal's time and fields in the events.
//!
//! Each match shows its event's time: the one the line states, read in the
//! `--input`'s `timezone` (else the host's zone), or the read time when the
//! line states none. `threshold` and `suppress` apply only with
//! `--thresholds`, by those times, so a day's log replayed shows the events
//! it would have sent; without it every match is shown.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::event::{LogOrigin, ViewFields};
use crate::rules::{
    self, event_for, Admit, Gate, LineClock, Matcher, Rule, SeenLine, TimeTexts, Verdict,
};
use crate::tail::{read_recorded, JournalMeta, LineBatch, LineReader};

/// Lines longer than this are cut, as the agent's default `max_line_bytes`.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How many missed lines the summary shows.
const MISSED_SAMPLE: usize = 10;

pub struct Options {
    pub rule_paths: Vec<PathBuf>,
    /// An input (as `CONFIG: input `NAME``, for errors) and its rule-id
    /// globs: only the rules it selects run.
    pub selection: Option<(String, Vec<String>)>,
    /// How line times are read (the input's zone).
    pub clock: LineClock,
    /// The events' `host`.
    pub host: String,
    /// Apply `threshold` and `suppress`.
    pub thresholds: bool,
    pub json: bool,
    /// Files to read; `-` is stdin. Empty means stdin, unless there are
    /// journal files.
    pub inputs: Vec<String>,
    /// Files of entries recorded with `journalctl --output=json`.
    pub journal_json: Vec<PathBuf>,
}

/// One line to examine and where it came from.
struct Examined<'a> {
    name: &'a str,
    number: u64,
    text: &'a str,
    truncated: bool,
    log: LogOrigin,
    journal: Option<&'a JournalMeta>,
}

#[derive(Default)]
struct Summary {
    lines: u64,
    matched_lines: u64,
    ignored_lines: u64,
    wrong_type_lines: u64,
    per_rule: BTreeMap<String, u64>,
    missed: Vec<String>,
    missed_count: u64,
    /// With `--thresholds`: matches that made an event, and those held.
    events: u64,
    held: u64,
    /// Journal entries without MESSAGE, skipped as the agent skips them.
    entries_without_message: u64,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let files = rules::rule_files(&options.rule_paths)?;
    let rule_set = rules::load_rules(&files)?;
    for applied in &rule_set.overrides.applied {
        eprintln!("{applied}");
    }
    for warning in &rule_set.overrides.warnings {
        eprintln!("warning: {warning}");
    }
    let loaded: Vec<Arc<Rule>> = rule_set.rules.into_iter().map(Arc::new).collect();
    anyhow::ensure!(
        !loaded.is_empty(),
        "no rule found in {}",
        display_paths(&options.rule_paths)
    );
    for rule in &loaded {
        for failure in rule.check_examples() {
            eprintln!("warning: {}: rule `{}`: {failure}", rule.origin, rule.id);
        }
        if let Some(warning) = rules::forgery_warning(rule) {
            eprintln!("warning: {warning}");
        }
    }
    let loaded = match &options.selection {
        None => loaded,
        Some((input, patterns)) => rules::select(&loaded, patterns)
            .map_err(|problem| anyhow::anyhow!("{input}: {problem}"))?,
    };
    let mut stage = Stage {
        matcher: Matcher::new(loaded.clone()),
        clock: &options.clock,
        host: &options.host,
        time_texts: TimeTexts::default(),
        gates: options
            .thresholds
            .then(|| loaded.iter().map(|r| (r.id.clone(), r.gate())).collect()),
        json: options.json,
    };
    let mut summary = Summary {
        per_rule: loaded.iter().map(|r| (r.id.clone(), 0)).collect(),
        ..Summary::default()
    };
    let inputs = if options.inputs.is_empty() && options.journal_json.is_empty() {
        vec!["-".to_string()]
    } else {
        options.inputs.clone()
    };
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for input in &inputs {
        let (name, mut reader): (&str, Box<dyn Read>) = if input == "-" {
            ("<stdin>", Box::new(std::io::stdin().lock()))
        } else {
            let file =
                std::fs::File::open(input).with_context(|| format!("cannot read {input}"))?;
            (input.as_str(), Box::new(file))
        };
        let mut lines = LineReader::new(0, MAX_LINE_BYTES);
        let mut number = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut raw = LineBatch::default();
        loop {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("reading {name}"))?;
            raw.clear();
            if n == 0 {
                lines.flush_partial(&mut raw);
            } else {
                lines.feed(&buf[..n], &mut raw);
            }
            for line in raw.iter() {
                number += 1;
                let examined = Examined {
                    name,
                    number,
                    text: line.text,
                    truncated: line.cut_from.is_some(),
                    log: LogOrigin {
                        file: name.to_string(),
                        offset: line.offset,
                        cursor: None,
                    },
                    journal: None,
                };
                stage.examine(examined, &mut out, &mut summary)?;
            }
            if n == 0 {
                break;
            }
        }
    }
    for path in &options.journal_json {
        let recorded = read_recorded(path, MAX_LINE_BYTES)?;
        summary.entries_without_message += recorded.without_message;
        let name = path.display().to_string();
        for (number, entry) in &recorded.entries {
            let examined = Examined {
                name: &name,
                number: *number,
                text: &entry.line,
                truncated: entry.cut_from.is_some(),
                log: entry.meta.origin(),
                journal: Some(&entry.meta),
            };
            stage.examine(examined, &mut out, &mut summary)?;
        }
    }
    out.flush()?;
    print_summary(
        &summary,
        options.thresholds,
        started.elapsed().as_secs_f64(),
        options.json,
    )
}

/// What examining a line needs besides the line.
struct Stage<'a> {
    matcher: Matcher,
    clock: &'a LineClock,
    host: &'a str,
    time_texts: TimeTexts,
    /// Per rule id, with `--thresholds`.
    gates: Option<HashMap<String, Gate>>,
    json: bool,
}

impl Stage<'_> {
    fn examine(
        &mut self,
        line: Examined,
        out: &mut impl Write,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        let Examined { name, number, .. } = line;
        let json = self.json;
        summary.lines += 1;
        let (mut matched, mut ignored, mut wrong_type) = (false, false, false);
        let mut seen: Option<SeenLine> = None;
        for (rule, verdict) in self.matcher.verdicts(line.text) {
            let fields = match verdict {
                Verdict::Match(fields) => fields,
                Verdict::Ignored => {
                    ignored = true;
                    continue;
                }
                Verdict::WrongType(field) => {
                    wrong_type = true;
                    if !json {
                        writeln!(
                            out,
                            "{name}:{number}  {}  not matched: field `{field}` is not of its type",
                            rule.id
                        )?;
                    }
                    continue;
                }
                Verdict::NoMatch => continue,
            };
            matched = true;
            *summary.per_rule.entry(rule.id.clone()).or_default() += 1;
            let seen = seen.get_or_insert_with(|| {
                let times = self.clock.times(line.text, jiff::Timestamp::now());
                SeenLine::new(
                    line.text,
                    line.log.clone(),
                    None,
                    line.truncated,
                    times,
                    self.host,
                    &mut self.time_texts,
                )
            });
            let count = match &mut self.gates {
                None => None,
                Some(gates) => {
                    let gate = gates.get_mut(&rule.id).expect("a gate per loaded rule");
                    match gate.admit(&fields, seen.times.gate_time()) {
                        Admit::Emit { count } => {
                            summary.events += 1;
                            count
                        }
                        Admit::Hold => {
                            summary.held += 1;
                            if !json {
                                writeln!(
                                    out,
                                    "{name}:{number}  {}  held by threshold/suppress  {}",
                                    rule.id,
                                    serde_json::to_string(&fields)?
                                )?;
                            }
                            continue;
                        }
                    }
                }
            };
            let mut event = event_for(rule, seen, ViewFields::Map(Cow::Owned(fields)), count);
            if let Some(journal) = line.journal {
                journal.annotate(&mut event);
            }
            if json {
                let record = serde_json::json!({"line": number, "rule": rule.id, "fields": event.fields, "event": event});
                writeln!(out, "{record}")?;
            } else {
                let source = if line.journal.is_some() {
                    "the journal entry's"
                } else if seen.times.stated.is_some() {
                    "the line's"
                } else {
                    "read time: the line states none"
                };
                writeln!(
                    out,
                    "{name}:{number}  {}  {}",
                    rule.id,
                    serde_json::to_string(&event.fields)?
                )?;
                writeln!(out, "  time {} ({source})", event.time)?;
                writeln!(out, "  {}", serde_json::to_string(&event)?)?;
            }
        }
        if matched {
            summary.matched_lines += 1;
        } else if ignored {
            summary.ignored_lines += 1;
        } else if wrong_type {
            summary.wrong_type_lines += 1;
        } else {
            summary.missed_count += 1;
            if summary.missed.len() < MISSED_SAMPLE {
                summary
                    .missed
                    .push(format!("{name}:{number}  {}", line.text));
            }
        }
        Ok(())
    }
}

fn print_summary(
    summary: &Summary,
    thresholds: bool,
    seconds: f64,
    json: bool,
) -> anyhow::Result<()> {
    let mut text = String::new();
    if !json {
        text.push('\n');
    }
    text.push_str("Matches per rule:\n");
    let width = summary.per_rule.keys().map(String::len).max().unwrap_or(0);
    for (rule, count) in &summary.per_rule {
        text.push_str(&format!("  {rule:<width$}  {count}\n"));
    }
    text.push_str(&format!(
        "Lines: {} read, {} matched, {} ignored, {} type mismatch, {} missed\n",
        summary.lines,
        summary.matched_lines,
        summary.ignored_lines,
        summary.wrong_type_lines,
        summary.missed_count
    ));
    if thresholds {
        text.push_str(&format!(
            "Events by line time: {} sent, {} matches held by threshold or suppress\n",
            summary.events, summary.held
        ));
    }
    if summary.entries_without_message > 0 {
        text.push_str(&format!(
            "Journal entries without MESSAGE (skipped): {}\n",
            summary.entries_without_message
        ));
    }
    if !summary.missed.is_empty() {
        text.push_str(&format!("Missed (first {}):\n", summary.missed.len()));
        for line in &summary.missed {
            text.push_str(&format!("  {line}\n"));
        }
    }
    let rate = if seconds > 0.0 {
        summary.lines as f64 / seconds
    } else {
        0.0
    };
    text.push_str(&format!("Time: {seconds:.3} s, {rate:.0} lines/s\n"));
    if json {
        eprint!("{text}");
        Ok(())
    } else {
        super::print_out(&text)
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
