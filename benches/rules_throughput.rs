//! Rules engine throughput on a generated, realistic mixed log corpus with the
//! full shipped rule pack, beside ripgrep (and GNU grep -P when it can take the
//! patterns) running the same regexes over the same file in the same run.
//!
//! Run: `cargo bench --bench rules_throughput [-- MEGABYTES]` (default 50).
//! The corpus is deterministic; two are made, with 1 % and 10 % of lines that
//! a rule matches. The engine is timed as the agent runs it: lines cut by the
//! tail stage's `LineReader`, then `Matcher::matches` (prefilter, captures,
//! typed fields). Baselines count matching lines (`-c`), which is less work,
//! so the ratio is conservative.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use tailhook::rules::{load_rules, rule_files, Matcher};
use tailhook::tail::{LineBatch, LineReader};

mod common;
use common::corpus;

/// Lines the engine turned into at least one event, and seconds taken.
fn run_engine(matcher: &Matcher, path: &Path) -> (u64, u64, f64) {
    let bytes = std::fs::read(path).unwrap();
    let started = Instant::now();
    let mut reader = LineReader::new(0, 64 * 1024);
    let mut lines = LineBatch::default();
    let (mut total, mut matched) = (0u64, 0u64);
    for chunk in bytes.chunks(64 * 1024) {
        lines.clear();
        reader.feed(chunk, &mut lines);
        for line in lines.iter() {
            total += 1;
            matched += u64::from(matcher.matches(line.text).next().is_some());
        }
    }
    (total, matched, started.elapsed().as_secs_f64())
}

/// Runs a baseline command; its stdout is the count of matching lines.
fn run_baseline(mut command: Command) -> Option<(u64, f64)> {
    let started = Instant::now();
    let out = command.output().ok()?;
    let seconds = started.elapsed().as_secs_f64();
    let count = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((count, seconds))
}

/// The rule regexes as plain PCRE-ish patterns: group names dropped (rg's
/// and grep's syntax for them differ from Rust's dotted names), and ASCII-only
/// caseless groups `(?i-u:…)` made plain caseless ones (PCRE has no `u` flag;
/// on ASCII text they match the same).
fn plain_patterns(matcher_patterns: &[String]) -> Vec<String> {
    let named = regex::Regex::new(r"\(\?P<[^>]+>").unwrap();
    matcher_patterns
        .iter()
        .map(|p| named.replace_all(p, "(").replace("(?i-u:", "(?i:"))
        .collect()
}

fn main() {
    let megabytes: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let files = rule_files(&[root.join("rules")]).unwrap();
    let rules: Vec<_> = load_rules(&files)
        .unwrap()
        .rules
        .into_iter()
        .map(Arc::new)
        .collect();
    let patterns = plain_patterns(
        &rules
            .iter()
            .map(|r| r.regex.as_str().to_string())
            .collect::<Vec<_>>(),
    );
    let matcher = Matcher::new(rules.clone());
    let pattern_file = dir.join("patterns.txt");
    std::fs::write(&pattern_file, patterns.join("\n") + "\n").unwrap();
    let joined = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");

    println!("{} rules, corpus {megabytes} MB each", patterns.len());
    for percent in [1, 10] {
        let path = corpus(&dir, megabytes, percent);
        let size = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
        // Warm the page cache so every contender reads from memory.
        let _ = std::fs::read(&path);
        let (lines, matched, secs) = run_engine(&matcher, &path);
        println!(
            "{percent:>2}% matching: tailhook {:>8.0} lines/s {:>6.1} MB/s  ({matched} of {lines} lines matched, {secs:.2} s)",
            lines as f64 / secs,
            size / secs
        );
        let mut rg = Command::new("rg");
        rg.args(["-c", "--no-mmap", "-j1", "-f"])
            .arg(&pattern_file)
            .arg(&path);
        match run_baseline(rg) {
            Some((count, rg_secs)) => println!(
                "             rg -f      {:>8.0} lines/s {:>6.1} MB/s  ({count} lines matched, {rg_secs:.2} s); tailhook/rg = {:.2} (target >= 0.50)",
                lines as f64 / rg_secs,
                size / rg_secs,
                rg_secs / secs
            ),
            None => println!("             rg: not installed (apt-get install ripgrep)"),
        }
        let mut grep = Command::new("grep");
        grep.args(["-c", "-P", &joined]).arg(&path);
        match run_baseline(grep) {
            Some((count, grep_secs)) => println!(
                "             grep -P    {:>8.0} lines/s {:>6.1} MB/s  ({count} lines matched, {grep_secs:.2} s); tailhook/grep = {:.2}",
                lines as f64 / grep_secs,
                size / grep_secs,
                grep_secs / secs
            ),
            None => println!("             grep -P: could not run the joined pattern"),
        }
    }

    // How cost grows with the number of rules: the shipped pack repeated
    // under other ids (each copy matches what the original matches), over
    // the 1 % corpus.
    let path = corpus(&dir, megabytes, 1);
    let size = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    for count in [10, 50, 200] {
        let many: Vec<_> = rules
            .iter()
            .cycle()
            .take(count)
            .enumerate()
            .map(|(i, rule)| {
                let mut copy = (**rule).clone();
                copy.id = format!("{}.{i}", rule.id);
                Arc::new(copy)
            })
            .collect();
        let (lines, _, secs) = run_engine(&Matcher::new(many), &path);
        println!(
            "{count:>4} rules, 1% matching: {:>8.0} lines/s {:>6.1} MB/s",
            lines as f64 / secs,
            size / secs
        );
    }
}
