//! The shipped rule packs against fail2ban's real-world sample logs
//! (`../shared/fail2ban-logs`, GPL data written outside this team, never
//! copied here). Each sample line is annotated by a `# failJSON:` comment
//! before it: whether it is a failure and which host made it.
//!
//! Reported per family: recall (annotated failures we match with the same
//! address in a field), false positives (annotated non-failures we match),
//! and forged addresses (failures we match with another address in our
//! address fields). Fails on any forged address, and when a family recalls
//! fewer than 90 % of its single-line failures (those whose line names the
//! host; the others need fail2ban's multi-line correlation). False positives
//! are reported, not failed: fail2ban annotates the same line differently in
//! its normal and aggressive modes. Skips, saying so, when the folder is
//! absent, except under `CI=true`, where that fails.
//!
//! fail2ban's own injection tests (annotated "Injecting …") put a second
//! address into a client-chosen field and annotate the one fail2ban's
//! convention picks. Some are ambiguous (issue 12: "ruser= rhost=A user=x
//! rhost=B", or "… port 1 ssh2: from B port 2 ssh2", where either address
//! could be the daemon's), and our rules miss those by design. A missed
//! injection line therefore does not count against recall; a matched one
//! must still carry the annotated address, or it counts as forged.

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use support::{binary, missing_prerequisite};

const FAMILIES: &[&str] = &[
    "sshd",
    "nginx-http-auth",
    "apache-auth",
    "postfix",
    "dovecot",
    "pam-generic",
    "vsftpd",
];

#[derive(Default, Debug)]
struct Score {
    failures: usize,
    recalled: usize,
    /// Failures whose line itself names the annotated host; the others need
    /// fail2ban's multi-line correlation (the host is on another line).
    single_line: usize,
    single_line_recalled: usize,
    /// fail2ban injection tests we do not match (see the module doc): not
    /// in `failures`.
    injections_missed: Vec<usize>,
    /// Failures matched, but with another address than the annotated one.
    forged: Vec<usize>,
    non_failures: usize,
    false_positives: Vec<usize>,
    missed: Vec<usize>,
}

struct Annotation {
    failure: bool,
    host: String,
    /// The annotated line names the host itself.
    single_line: bool,
    /// One of fail2ban's injection tests: a forged address in client text.
    injection: bool,
}

/// Line number (1-based) → what fail2ban's annotation says of it.
fn annotations(text: &str) -> HashMap<usize, Annotation> {
    let lines: Vec<&str> = text.lines().collect();
    let mut expected = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(json) = line.strip_prefix("# failJSON:") else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json.trim()) else {
            continue;
        };
        let failure = value["match"].as_bool().unwrap_or(false);
        let host = value["host"].as_str().unwrap_or_default().to_string();
        let single_line = !host.is_empty()
            && lines
                .get(i + 1)
                .is_some_and(|next| next.contains(host.as_str()));
        let injection = value["desc"]
            .as_str()
            .is_some_and(|desc| desc.to_ascii_lowercase().contains("injecting"));
        expected.insert(
            i + 2,
            Annotation {
                failure,
                host,
                single_line,
                injection,
            },
        );
    }
    expected
}

/// Line number → the address-typed values of every event for that line.
fn our_matches(sample: &Path) -> HashMap<usize, Vec<String>> {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let out = Command::new(binary())
        .args(["test-rules", "--json", "--rules", rules])
        .arg(sample)
        .output()
        .expect("run test-rules");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found: HashMap<usize, Vec<String>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let number = record["line"].as_u64().unwrap() as usize;
        let addresses = record["fields"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_str())
            .filter(|v| v.parse::<IpAddr>().is_ok())
            .map(str::to_string);
        found.entry(number).or_default().extend(addresses);
    }
    found
}

fn score(sample: &Path) -> Score {
    let text = String::from_utf8_lossy(&std::fs::read(sample).unwrap()).into_owned();
    let ours = our_matches(sample);
    let mut score = Score::default();
    for (
        &line,
        Annotation {
            failure,
            host,
            single_line,
            injection,
        },
    ) in &annotations(&text)
    {
        let matched = ours.get(&line);
        if *failure && *injection && matched.is_none() {
            score.injections_missed.push(line);
            continue;
        }
        let host_is_ip = host.parse::<IpAddr>().is_ok();
        if *failure && *single_line {
            score.single_line += 1;
        }
        match (failure, matched) {
            (true, Some(addresses)) => {
                score.failures += 1;
                if !host_is_ip || addresses.iter().any(|a| a == host) {
                    score.recalled += 1;
                    score.single_line_recalled += usize::from(*single_line);
                } else if !addresses.is_empty() {
                    score.forged.push(line);
                } else {
                    score.missed.push(line);
                }
            }
            (true, None) => {
                score.failures += 1;
                score.missed.push(line);
            }
            (false, matched) => {
                score.non_failures += 1;
                if matched.is_some() {
                    score.false_positives.push(line);
                }
            }
        }
    }
    score
}

#[test]
fn shipped_rules_against_fail2ban_samples() {
    let folder = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fail2ban-logs"
    ));
    if !folder.is_dir() {
        return missing_prerequisite(&format!("{} is absent", folder.display()));
    }
    let mut forged = Vec::new();
    let mut low_recall = Vec::new();
    eprintln!(
        "{:<16} {:>8} {:>8} {:>7} {:>12} {:>10} {:>6}",
        "family", "failures", "recalled", "recall", "single-line", "false pos.", "forged"
    );
    let percent = |part: usize, all: usize| {
        if all == 0 {
            100.0
        } else {
            100.0 * part as f64 / all as f64
        }
    };
    for family in FAMILIES {
        let sample = folder.join(family);
        if !sample.is_file() {
            missing_prerequisite(&format!("{} is absent", sample.display()));
            continue;
        }
        let mut s = score(&sample);
        eprintln!(
            "{family:<16} {:>8} {:>8} {:>6.1}% {:>11.1}% {:>4} of {:<3} {:>6}",
            s.failures,
            s.recalled,
            percent(s.recalled, s.failures),
            percent(s.single_line_recalled, s.single_line),
            s.false_positives.len(),
            s.non_failures,
            s.forged.len()
        );
        if !s.injections_missed.is_empty() {
            s.injections_missed.sort_unstable();
            eprintln!(
                "  injection lines missed by design (not in failures): {:?}",
                s.injections_missed
            );
        }
        if std::env::var_os("TAILHOOK_SAMPLES_VERBOSE").is_some() {
            eprintln!(
                "  missed lines {:?}\n  false positives {:?}",
                s.missed, s.false_positives
            );
        }
        forged.extend(s.forged.iter().map(|line| format!("{family}:{line}")));
        if percent(s.single_line_recalled, s.single_line) < 90.0 {
            low_recall.push(family);
        }
    }
    assert!(
        low_recall.is_empty(),
        "single-line recall below 90 % for {low_recall:?}"
    );
    assert!(
        forged.is_empty(),
        "matched with an address other than the annotated one: {forged:?}"
    );
}
