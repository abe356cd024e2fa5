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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use tailhook::rules::{load_rules, rule_files, Matcher};
use tailhook::tail::LineReader;

/// Deterministic generator (an LCG: the corpus must be the same every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ip(rng: &mut Lcg) -> String {
    format!(
        "{}.{}.{}.{}",
        1 + rng.below(223),
        rng.below(256),
        rng.below(256),
        1 + rng.below(254)
    )
}

fn stamp(i: u64) -> String {
    let secs = i / 7;
    format!(
        "Nov {:2} {:02}:{:02}:{:02}",
        1 + (secs / 86400) % 28,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A line no shipped rule should match (what most of a real auth.log is).
fn noise(rng: &mut Lcg, i: u64) -> String {
    let t = stamp(i);
    let pid = 1000 + rng.below(60000);
    match rng.below(9) {
        0 => format!("{t} web1 CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"),
        1 => format!("{t} web1 CRON[{pid}]: pam_unix(cron:session): session closed for user root"),
        2 => format!("{t} web1 systemd-logind[512]: New session {pid} of user deploy."),
        3 => format!("{t} web1 sshd[{pid}]: pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)"),
        4 => format!("{t} web1 sshd[{pid}]: Received signal 15; terminating."),
        5 => format!("{t} mail postfix/smtpd[{pid}]: connect from unknown[{}]", ip(rng)),
        6 => format!("{t} mail postfix/smtpd[{pid}]: disconnect from mail.example.org[{}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", ip(rng)),
        7 => format!("{t} mail dovecot: imap-login: Login: user=<u{pid}@example.com>, method=PLAIN, rip={}, lip=192.0.2.1, mpid={pid}, TLS", ip(rng)),
        _ => format!(
            "{} - - [22/Nov/2026:10:00:01 +0000] \"GET /static/app.{pid}.js HTTP/1.1\" 200 {} \"https://example.com/\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
            ip(rng),
            rng.below(90000)
        ),
    }
}

/// A line some shipped rule matches.
fn hit(rng: &mut Lcg, i: u64) -> String {
    let t = stamp(i);
    let pid = 1000 + rng.below(60000);
    let port = 1024 + rng.below(60000);
    match rng.below(6) {
        0 => format!("{t} web1 sshd[{pid}]: Failed password for root from {} port {port} ssh2", ip(rng)),
        1 => format!("{t} web1 sshd[{pid}]: Invalid user admin{pid} from {} port {port}", ip(rng)),
        2 => format!("{t} web1 sshd[{pid}]: Connection closed by authenticating user root {} port {port} [preauth]", ip(rng)),
        3 => format!("{t} mail postfix/smtpd[{pid}]: warning: unknown[{}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", ip(rng)),
        4 => format!("{t} mail dovecot: imap-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<a{pid}>, method=PLAIN, rip={}, lip=192.0.2.1, TLS", ip(rng)),
        _ => format!("2026/11/22 10:00:01 [error] 2865#0: *{pid} user \"u{pid}\": password mismatch, client: {}, server: www.example.com, request: \"GET /admin HTTP/1.1\", host: \"www.example.com\"", ip(rng)),
    }
}

fn corpus(dir: &Path, megabytes: u64, percent: u64) -> PathBuf {
    let path = dir.join(format!("mixed-{megabytes}MB-{percent}pct.log"));
    if path.exists() {
        return path;
    }
    let mut rng = Lcg(percent);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (mut written, mut i) = (0, 0);
    while written < megabytes * 1_000_000 {
        let line = if rng.below(100) < percent {
            hit(&mut rng, i)
        } else {
            noise(&mut rng, i)
        };
        writeln!(out, "{line}").unwrap();
        written += line.len() as u64 + 1;
        i += 1;
    }
    path
}

/// Lines the engine turned into at least one event, and seconds taken.
fn run_engine(matcher: &Matcher, path: &Path) -> (u64, u64, f64) {
    let bytes = std::fs::read(path).unwrap();
    let started = Instant::now();
    let mut reader = LineReader::new(0, 64 * 1024);
    let mut lines = Vec::new();
    let (mut total, mut matched) = (0u64, 0u64);
    for chunk in bytes.chunks(64 * 1024) {
        reader.feed(chunk, &mut lines);
        for line in lines.drain(..) {
            total += 1;
            matched += u64::from(matcher.matches(&line.text).next().is_some());
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
/// and grep's syntax for them differ from Rust's dotted names).
fn plain_patterns(matcher_patterns: &[String]) -> Vec<String> {
    let named = regex::Regex::new(r"\(\?P<[^>]+>").unwrap();
    matcher_patterns
        .iter()
        .map(|p| named.replace_all(p, "(").into_owned())
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
        .into_iter()
        .map(Arc::new)
        .collect();
    let patterns = plain_patterns(
        &rules
            .iter()
            .map(|r| r.regex.as_str().to_string())
            .collect::<Vec<_>>(),
    );
    let matcher = Matcher::new(rules);
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
                "             rg -f      {:>8.0} lines/s {:>6.1} MB/s  ({count} lines matched, {rg_secs:.2} s); tailhook/rg = {:.2}",
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
}
