use std::sync::Arc;
use tailhook::rules::{load_rules, rule_files, Matcher};
use tailhook::tail::LineReader;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let files = rule_files(&[std::path::PathBuf::from(
        std::env::var("RULES").unwrap_or("rules".into()),
    )])
    .unwrap();
    let rules: Vec<_> = load_rules(&files)
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let matcher = Matcher::new(rules);
    let bytes = std::fs::read(path).unwrap();
    let cpu = || {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1e9
    };
    let c0 = cpu();
    let started = std::time::Instant::now();
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
    let _wall = started.elapsed().as_secs_f64();
    let s = cpu() - c0;
    println!(
        "{total} lines {matched} matched {s:.3}s {:.1} MB/s",
        bytes.len() as f64 / 1e6 / s
    );
}
