//! The whole agent, measured from the outside: the release binary tails a
//! file and posts to a loopback receiver in this process.
//!
//! Run: `cargo bench --bench end_to_end [-- MEGABYTES]` (default 100).
//! 1. Throughput: a file already written (1 % and 10 % of lines matching) →
//!    every event accepted by a receiver without limits: wall time, MB/s,
//!    CPU seconds and peak RSS of the agent.
//! 2. Latency: single lines appended 20 ms apart → POST received, p50/p99.
//! 3. Batching: a burst under `5/2s`: requests used vs the ideal
//!    ceil(bytes / max_body_bytes), and 429s seen.
//! 4. Steady load: another process appends at a fixed rate for 10 s; the
//!    agent's CPU share, and how long after the last append the last event
//!    arrives.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

struct Seen {
    events: usize,
    bytes: usize,
    requests: usize,
    rejected: usize,
    /// Arrival time of each event by its `event.sequence` field, if any.
    arrivals: Vec<(u64, Instant)>,
}

/// A receiver that accepts everything (or answers 429 over `rate`).
fn receiver(rate: Option<(usize, Duration)>) -> (String, Arc<Mutex<Seen>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", server.server_addr().to_ip().unwrap());
    let seen = Arc::new(Mutex::new(Seen {
        events: 0,
        bytes: 0,
        requests: 0,
        rejected: 0,
        arrivals: vec![],
    }));
    let shared = seen.clone();
    std::thread::spawn(move || {
        let mut accepted: Vec<Instant> = Vec::new();
        for mut request in server.incoming_requests() {
            let now = Instant::now();
            let mut body = Vec::new();
            let _ = request.as_reader().read_to_end(&mut body);
            let over = rate.is_some_and(|(count, period)| {
                accepted.retain(|t| now.duration_since(*t) < period);
                accepted.len() >= count
            });
            let status = if over { 429 } else { 202 };
            {
                let mut seen = shared.lock().unwrap();
                seen.requests += 1;
                if over {
                    seen.rejected += 1;
                } else {
                    accepted.push(now);
                    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let events = value["events"].as_array().cloned().unwrap_or_default();
                    seen.events += events.len();
                    seen.bytes += body.len();
                    for e in events {
                        if let Some(seq) = e["fields"]["event.sequence"].as_u64() {
                            seen.arrivals.push((seq, now));
                        }
                    }
                }
            }
            let _ = request.respond(tiny_http::Response::empty(status));
        }
    });
    (url, seen)
}

fn start_agent(dir: &Path, url: &str, input: &str, webhook: &str) -> Child {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let config = format!(
        "[agent]\nstate_dir = \"state\"\n[rules]\npaths = [\"{rules}\", \"seq.toml\"]\n[[input]]\nname = \"bench\"\n{input}\n[webhook.sink]\nurl = \"{url}\"\n{webhook}\n"
    );
    std::fs::write(dir.join("tailhook.toml"), config).unwrap();
    std::fs::write(dir.join("seq.toml"), SEQ_RULE).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tailhook"))
        .args(["run", "-c"])
        .arg(dir.join("tailhook.toml"))
        .env("TAILHOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A rule for the latency lines, which carry their sequence number.
const SEQ_RULE: &str = r#"
[[rule]]
id = "bench.seq"
regex = '^bench seq=(?P<event.sequence>\d+)$'
types = { "event.sequence" = "int" }
[[rule.example]]
line = "bench seq=1"
fields = { "event.sequence" = 1 }
"#;

/// (CPU seconds, peak RSS in MiB) of a running process.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let cpu = (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    let kib: f64 = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
    (cpu, kib / 1024.0)
}

fn wait_for(seen: &Mutex<Seen>, events: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while seen.lock().unwrap().events < events {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn throughput(megabytes: u64, percent: u64) {
    let dir = tempfile::tempdir().unwrap();
    let corpus_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-corpus");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    let corpus = common::corpus(&corpus_dir, megabytes, percent);
    // Matching lines, counted by the agent's own test-rules (one line may make
    // several events; the shipped pack is what the agent runs), less `info`
    // events: with no [[route]] only `low` and above are sent.
    let out = Command::new(env!("CARGO_BIN_EXE_tailhook"))
        .args([
            "test-rules",
            "--json",
            "--rules",
            concat!(env!("CARGO_MANIFEST_DIR"), "/rules"),
        ])
        .arg(&corpus)
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| {
            let matched: serde_json::Value = serde_json::from_str(line).unwrap();
            matched["event"]["severity"] != "info"
        })
        .count();
    let (url, seen) = receiver(None);
    let input = format!(
        "paths = [\"{}\"]\nstart_at = \"beginning\"",
        corpus.display()
    );
    let started = Instant::now();
    let mut agent = start_agent(dir.path(), &url, &input, "batch_timeout = \"50ms\"");
    let done = wait_for(&seen, expected, Duration::from_secs(600));
    let wall = started.elapsed().as_secs_f64();
    let (cpu, rss) = usage(agent.id());
    let _ = agent.kill();
    let _ = agent.wait();
    let size = std::fs::metadata(&corpus).unwrap().len() as f64 / 1e6;
    let seen = seen.lock().unwrap();
    println!(
        "throughput, {percent}% matching: {size:.0} MB, {expected} events{}: {wall:.2} s wall, {:.1} MB/s, {cpu:.2} CPU s ({:.1} MB per CPU s), peak RSS {rss:.1} MiB, {} requests (target at 1 %: >= 300 MB/s on one core)",
        if done { "" } else { " (NOT all arrived)" },
        size / wall,
        size / cpu,
        seen.requests
    );
}

fn latency(appends: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("live.log");
    std::fs::write(&log, "").unwrap();
    let (url, seen) = receiver(None);
    let mut agent = start_agent(
        dir.path(),
        &url,
        "paths = [\"live.log\"]",
        "batch_timeout = \"1ms\"",
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut appended = Vec::new();
    for seq in 1..=appends {
        appended.push(Instant::now());
        writeln!(file, "bench seq={seq}").unwrap();
        wait_for(&seen, seq as usize, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let seen = seen.lock().unwrap();
    let mut latencies: Vec<Duration> = seen
        .arrivals
        .iter()
        .map(|(seq, at)| *at - appended[*seq as usize - 1])
        .collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "latency: {} appends → POST received (batch_timeout 1ms): p50 {:?}, p99 {:?}, max {:?} (target: p99 <= 100 ms)",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.last().unwrap()
    );
}

fn batching() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("burst.log");
    let lines: String = (1..=10_000).map(|s| format!("bench seq={s}\n")).collect();
    std::fs::write(&log, lines).unwrap();
    let (url, seen) = receiver(Some((5, Duration::from_secs(2))));
    let webhook = "rate_limits = [\"5/2s\"]\nmax_body_bytes = 100000\nbatch_timeout = \"50ms\"";
    let mut agent = start_agent(
        dir.path(),
        &url,
        "paths = [\"burst.log\"]\nstart_at = \"beginning\"",
        webhook,
    );
    let done = wait_for(&seen, 10_000, Duration::from_secs(120));
    let _ = agent.kill();
    let _ = agent.wait();
    let seen = seen.lock().unwrap();
    println!(
        "batching: 10000 events{} under 5/2s, {} bytes: {} requests accepted, ideal {}, {} x 429 (target: <= 1.05 x ideal, 0 x 429)",
        if done { "" } else { " (NOT all arrived)" },
        seen.bytes,
        seen.requests - seen.rejected,
        seen.bytes.div_ceil(100_000),
        seen.rejected
    );
}

fn steady(lines_per_second: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steady.log");
    std::fs::write(&log, "").unwrap();
    let (url, seen) = receiver(None);
    let mut agent = start_agent(
        dir.path(),
        &url,
        "paths = [\"steady.log\"]",
        "batch_timeout = \"100ms\"",
    );
    std::thread::sleep(Duration::from_millis(500));
    let (cpu_before, _) = usage(agent.id());
    let mut rng = common::Lcg(7);
    let mut file =
        std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    let started = Instant::now();
    let mut written = 0u64;
    let mut matching = 0usize;
    // 10 s, in 10 ms slices of lines, 10 % of them matching.
    for slice in 0..1000u64 {
        let due = started + Duration::from_millis(slice * 10);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for _ in 0..lines_per_second / 100 {
            let line = if rng.below(10) == 0 {
                matching += 1;
                format!("bench seq={}", written + 1)
            } else {
                common::noise(&mut rng, written)
            };
            writeln!(file, "{line}").unwrap();
            written += 1;
        }
        file.flush().unwrap();
    }
    let writing = started.elapsed();
    let all = wait_for(&seen, matching, Duration::from_secs(60));
    let lag = started.elapsed() - writing;
    let (cpu_after, rss) = usage(agent.id());
    let _ = agent.kill();
    let _ = agent.wait();
    println!(
        "steady: {written} lines ({matching} matching) over {:.1} s at {lines_per_second}/s: agent {:.1} % of a core, peak RSS {rss:.1} MiB, last event {}{:?} after the last append",
        writing.as_secs_f64(),
        100.0 * (cpu_after - cpu_before) / writing.as_secs_f64(),
        if all { "" } else { "NOT arrived; waited " },
        lag
    );
}

fn main() {
    let megabytes: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    for percent in [1, 10] {
        throughput(megabytes, percent);
    }
    latency(200);
    batching();
    steady(20_000);
}
