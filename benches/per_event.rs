//! What each event costs the whole agent (issue 14, section 1), measured
//! from the outside beside `grep -E` on the same file in the same run.
//!
//! Run: `cargo bench --bench per_event [-- MEGABYTES [RUNS]]` (default 200 MB,
//! 3 runs). Needs `python3` (the workload is written by
//! `/work/shared/bench/authlog.py`, or `$TAILHOOK_AUTHLOG_PY`) and GNU grep.
//!
//! The workload is auth.log-like: sshd failures at 1 % or 10 % of lines, the
//! rest noise of which a sixth are accepted publickey logins (an `info` rule).
//! Each run: `grep -cE` for the failures (the baseline), then the release
//! agent from the first byte to the last event received by a loopback
//! receiver that answers 202 at once and only counts events. Three set-ups:
//! - default routing: rules of severity `low` and above (1 % and 10 %);
//! - every event routed, `info` included (1 %).
//!
//! Reported per run: wall MB/s and its ratio to grep's, events/s, CPU (user +
//! system) µs per event, the agent's CPU seconds over grep's seconds (CPU
//! per event depends on the machine: 3 µs with every event routed was about
//! 8 times grep's time on a machine where grep read 1.6–1.8 GB/s, and the
//! same build took 2.6–3 times the µs on one where it read 0.6–0.9 GB/s),
//! bytes the agent wrote to storage per event (`/proc/PID/io`
//! `write_bytes`), peak RSS. Then min–max over the runs, and
//! each event's own CPU: the 1 % file's run with every event less its run
//! with default routing (the same lines read and matched), over the events
//! the first has more.
//! Targets: default ≥ 0.25× grep at 1 % and 10 %; every event ≥ 0.10× grep;
//! ≤ 3 µs CPU per event; RSS ≤ 30 MB.
//!
//! Where Fluent Bit is installed (`$FLUENT_BIT`, else `fluent-bit` on the
//! PATH or in `/opt/fluent-bit/bin`, where its packages put it), each run
//! also times it on the same file, right after the agent, as the issue
//! measured it: `tail` from the head, a `grep` filter for the lines the
//! agent sends (the failures; with every event routed, the accepted logins
//! too), `http` out to the same kind of receiver, as JSON lines. Its runs
//! are reported the same way, and the agent's CPU per event over its.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `authlog.py` documents as the failure lines' pattern.
const FAILURES: &str = r"sshd\[[0-9]+\]: Failed [a-z]+ for .* from [0-9.]+ port [0-9]+";

/// Clock ticks per second of `/proc/PID/stat` times on Linux.
const USER_HZ: f64 = 100.0;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

#[derive(Clone, Copy, PartialEq)]
enum Routing {
    /// `low` and above (DESIGN §3's default).
    Default,
    /// Every event, `info` included.
    Everything,
}

/// The events of the agent's body: its envelope's `events`.
fn envelope_events(body: &[u8]) -> usize {
    #[derive(serde::Deserialize)]
    struct Body {
        events: Vec<serde::de::IgnoredAny>,
    }
    let parsed: Body = serde_json::from_slice(body).expect("a JSON envelope");
    parsed.events.len()
}

/// The records of Fluent Bit's `json_lines` body: one JSON object a line.
fn json_lines(body: &[u8]) -> usize {
    body.split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .inspect(|line| {
            serde_json::from_slice::<serde::de::IgnoredAny>(line).expect("a JSON line");
        })
        .count()
}

/// A receiver on loopback that answers 202 at once and counts the events it
/// got with `count`, without building them (the bench shares the agent's
/// cores): its port, and the count. Any path is taken.
fn receiver(count: fn(&[u8]) -> usize) -> (u16, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let events = Arc::new(AtomicUsize::new(0));
    let counted = events.clone();
    std::thread::spawn(move || {
        let mut body = Vec::new();
        for mut request in server.incoming_requests() {
            body.clear();
            request.as_reader().read_to_end(&mut body).unwrap();
            counted.fetch_add(count(&body), Ordering::Relaxed);
            let _ = request.respond(tiny_http::Response::empty(202));
        }
    });
    (port, events)
}

/// The workload file, written once per size and failure rate.
fn workload(megabytes: u64, fail_percent: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("authlog-{megabytes}mb-{fail_percent}pct.log"));
    if !file.exists() {
        let script = std::env::var("TAILHOOK_AUTHLOG_PY")
            .unwrap_or_else(|_| "/work/shared/bench/authlog.py".into());
        let partial = file.with_extension("partial");
        let status = Command::new("python3")
            .arg(&script)
            .arg(&partial)
            .args(["--mb", &megabytes.to_string()])
            .args(["--fail", &format!("{}", fail_percent as f64 / 100.0)])
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
        assert!(status.success(), "{script} failed");
        std::fs::rename(&partial, &file).unwrap();
    }
    file
}

/// Ids of the shipped rules of severity `info`.
fn info_rules() -> Vec<String> {
    let mut ids = vec![];
    for entry in std::fs::read_dir(RULES).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let file: toml::Value = toml::from_str(&text).unwrap();
        for rule in file["rule"].as_array().into_iter().flatten() {
            if rule.get("severity").and_then(|s| s.as_str()) == Some("info") {
                ids.push(rule["id"].as_str().unwrap().to_string());
            }
        }
    }
    ids.sort();
    ids
}

/// Events the agent must deliver for `routing`, counted by its own
/// `test-rules` (one line may make several events).
fn expected_events(corpus: &Path, routing: Routing) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_tailhook"))
        .args(["test-rules", "--json", "--rules", RULES])
        .arg(corpus)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "test-rules failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            routing == Routing::Everything || value["event"]["severity"] != "info"
        })
        .count()
}

/// The `[[route]]` section for `routing`. Routing by listing rules works
/// whether or not the binary knows `min_severity`; where it does, "every
/// event" must ask for `info`.
fn route(dir: &Path, routing: Routing) -> String {
    match routing {
        Routing::Default => {
            let rules: Vec<String> = std::iter::once("\"*\"".to_string())
                .chain(info_rules().iter().map(|id| format!("\"!{id}\"")))
                .collect();
            format!(
                "[[route]]\nrules = [{}]\nwebhooks = [\"sink\"]\n",
                rules.join(", ")
            )
        }
        Routing::Everything => {
            let everything = "[[route]]\nrules = [\"*\"]\nwebhooks = [\"sink\"]\n";
            let with_info = format!("{everything}min_severity = \"info\"\n");
            let probe = dir.join("probe.toml");
            std::fs::write(
                &probe,
                format!(
                    "[agent]\nstate_dir = \"state\"\n[rules]\npaths = [\"{RULES}\"]\n[[input]]\nname = \"p\"\npaths = [\"x.log\"]\n[webhook.sink]\nurl = \"http://127.0.0.1:9/\"\n{with_info}"
                ),
            )
            .unwrap();
            let known = Command::new(env!("CARGO_BIN_EXE_tailhook"))
                .args(["check", "-c"])
                .arg(&probe)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if known {
                with_info
            } else {
                everything.to_string()
            }
        }
    }
}

/// Wall seconds of `grep -cE regex`, and its count.
fn grep(corpus: &Path, regex: &str) -> (f64, usize) {
    let started = Instant::now();
    let out = Command::new("grep")
        .args(["-cE", regex])
        .arg(corpus)
        .output()
        .expect("grep");
    let wall = started.elapsed().as_secs_f64();
    let count = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (wall, count)
}

/// What /proc says of a running process.
struct Usage {
    cpu_seconds: f64,
    write_bytes: u64,
    peak_rss_mib: f64,
}

fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let cpu_seconds =
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / USER_HZ;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let write_bytes = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .unwrap()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    let kib: f64 = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
    Usage {
        cpu_seconds,
        write_bytes,
        peak_rss_mib: kib / 1024.0,
    }
}

struct Run {
    ratio: f64,
    mb_per_s: f64,
    grep_mb_per_s: f64,
    events_per_s: f64,
    events: usize,
    cpu_seconds: f64,
    cpu_us_per_event: f64,
    /// The agent's CPU seconds over grep's wall seconds.
    cpu_per_grep: f64,
    written_per_event: f64,
    rss_mib: f64,
}

impl Run {
    fn new(corpus: &Path, grep_wall: f64, wall: f64, used: Usage, events: usize) -> Run {
        let size = std::fs::metadata(corpus).unwrap().len() as f64 / 1e6;
        Run {
            ratio: grep_wall / wall,
            mb_per_s: size / wall,
            grep_mb_per_s: size / grep_wall,
            events_per_s: events as f64 / wall,
            events,
            cpu_seconds: used.cpu_seconds,
            cpu_us_per_event: used.cpu_seconds * 1e6 / events as f64,
            cpu_per_grep: used.cpu_seconds / grep_wall,
            written_per_event: used.write_bytes as f64 / events as f64,
            rss_mib: used.peak_rss_mib,
        }
    }
}

/// Runs `command` (its output to files in `dir`) until `received` counts
/// `expected` events: its wall seconds from its start and what /proc says
/// of it then, or why it did not get there, with the end of what it said.
fn until_received(
    mut command: Command,
    dir: &Path,
    received: &AtomicUsize,
    expected: usize,
) -> Result<(f64, Usage), String> {
    let log = dir.join("output.log");
    let output = std::fs::File::create(&log).unwrap();
    command.stdout(output.try_clone().unwrap()).stderr(output);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let deadline = started + Duration::from_secs(900);
    let reached = loop {
        let got = received.load(Ordering::Relaxed);
        if got >= expected {
            break Ok((started.elapsed().as_secs_f64(), usage(child.id())));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!(
                "exited early ({status}) with {got} of {expected} events received"
            ));
        }
        if Instant::now() >= deadline {
            break Err(format!("only {got} of {expected} events arrived in 900 s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    child.wait().unwrap();
    let got = received.load(Ordering::Relaxed);
    let result = reached.and_then(|measured| match got == expected {
        true => Ok(measured),
        false => Err(format!("{got} events received, {expected} expected")),
    });
    result.map_err(|error| {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = said.lines().collect();
        let last = lines[lines.len().saturating_sub(5)..].join(" | ");
        format!("{error}; its last output: {last:?}")
    })
}

fn run_once(corpus: &Path, grep_wall: f64, routing: Routing, expected: usize) -> Run {
    let dir = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target")).unwrap();
    let (port, received) = receiver(envelope_events);
    let config = format!(
        "[agent]\nstate_dir = \"state\"\n[rules]\npaths = [\"{RULES}\"]\n[[input]]\nname = \"bench\"\npaths = [\"{}\"]\nstart_at = \"beginning\"\n[webhook.sink]\nurl = \"http://127.0.0.1:{port}/hook\"\nbatch_timeout = \"50ms\"\n{}",
        corpus.display(),
        route(dir.path(), routing)
    );
    std::fs::write(dir.path().join("tailhook.toml"), config).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_tailhook"));
    agent
        .args(["run", "-c"])
        .arg(dir.path().join("tailhook.toml"))
        .env("TAILHOOK_LOG", "warn");
    let (wall, used) = until_received(agent, dir.path(), &received, expected)
        .unwrap_or_else(|error| panic!("the agent: {error}"));
    Run::new(corpus, grep_wall, wall, used, expected)
}

/// The Fluent Bit to compare with, where one is installed.
fn fluent_bit() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLUENT_BIT") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("fluent-bit"));
    on_path
        .chain([PathBuf::from("/opt/fluent-bit/bin/fluent-bit")])
        .find(|candidate| candidate.is_file())
}

/// Fluent Bit's regex for the lines the agent sends with `routing`: valid
/// both for `grep -E` (which counts them) and for Onigmo (Fluent Bit's).
fn fluent_bit_regex(routing: Routing) -> String {
    match routing {
        Routing::Default => FAILURES.to_string(),
        Routing::Everything => FAILURES.replace(
            "Failed [a-z]+ for",
            "(Failed [a-z]+|Accepted publickey) for",
        ),
    }
}

/// One run of Fluent Bit on `corpus`: `tail` from the head, `grep` for
/// `regex`, `http` out as JSON lines; `expected` is what `grep -cE` counts.
fn fluent_bit_once(
    binary: &Path,
    corpus: &Path,
    grep_wall: f64,
    regex: &str,
    expected: usize,
) -> Result<Run, String> {
    let dir = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target")).unwrap();
    let (port, received) = receiver(json_lines);
    // Flushed as often as the agent's `batch_timeout`.
    let config = format!(
        "[SERVICE]\n    Flush 0.05\n    Log_Level warn\n\n\
         [INPUT]\n    Name tail\n    Path {}\n    Read_from_Head On\n\n\
         [FILTER]\n    Name grep\n    Match *\n    Regex log {regex}\n\n\
         [OUTPUT]\n    Name http\n    Match *\n    Host 127.0.0.1\n    Port {port}\n    URI /hook\n    Format json_lines\n",
        corpus.display()
    );
    let file = dir.path().join("fluent-bit.conf");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(binary);
    command.arg("-c").arg(&file);
    let (wall, used) = until_received(command, dir.path(), &received, expected)?;
    Ok(Run::new(corpus, grep_wall, wall, used, expected))
}

/// What one run printed of itself.
fn report(who: &str, run: &Run) -> String {
    format!(
        "{who}: {:.1} MB/s vs grep {:.1} MB/s = {:.3}x; {:.0} events/s; {:.2} µs CPU/event ({:.1}x grep's time); {:.0} B written/event; peak RSS {:.1} MiB",
        run.mb_per_s,
        run.grep_mb_per_s,
        run.ratio,
        run.events_per_s,
        run.cpu_us_per_event,
        run.cpu_per_grep,
        run.written_per_event,
        run.rss_mib
    )
}

/// Each figure's min–max over `runs`.
fn summary(runs: &[Run]) -> String {
    format!(
        "{} MB/s, grep {} MB/s, ratio {}x; {} events/s; {} µs CPU/event, {}x grep's time; {} B written/event; peak RSS {} MiB",
        span(runs, |r| r.mb_per_s, 1),
        span(runs, |r| r.grep_mb_per_s, 0),
        span(runs, |r| r.ratio, 3),
        span(runs, |r| r.events_per_s, 0),
        span(runs, |r| r.cpu_us_per_event, 2),
        span(runs, |r| r.cpu_per_grep, 1),
        span(runs, |r| r.written_per_event, 0),
        span(runs, |r| r.rss_mib, 1),
    )
}

fn span(runs: &[Run], value: impl Fn(&Run) -> f64, digits: usize) -> String {
    span_of(runs.iter().map(value), digits)
}

/// `min–max` of `values`.
fn span_of(values: impl Iterator<Item = f64>, digits: usize) -> String {
    let values: Vec<f64> = values.collect();
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.digits$}–{max:.digits$}")
}

fn main() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let megabytes = numbers.next().unwrap_or(200);
    let runs = numbers.next().unwrap_or(3) as usize;
    let setups = [
        (1, Routing::Default, "default routing, 1 % failures", 0.25),
        (10, Routing::Default, "default routing, 10 % failures", 0.25),
        (
            1,
            Routing::Everything,
            "every event routed, 1 % failures",
            0.10,
        ),
    ];
    let fluent_bit = fluent_bit();
    match &fluent_bit {
        Some(binary) => println!("Fluent Bit: {} runs after the agent", binary.display()),
        None => println!(
            "Fluent Bit: not found ($FLUENT_BIT, fluent-bit on the PATH, /opt/fluent-bit/bin/fluent-bit), so the agent runs alone"
        ),
    }
    let mut all_runs = Vec::new();
    for (fail_percent, routing, name, target) in setups {
        let corpus = workload(megabytes, fail_percent);
        let expected = expected_events(&corpus, routing);
        // Also brings the file into the page cache before the first run.
        let (_, failures) = grep(&corpus, FAILURES);
        let contender = fluent_bit.as_ref().map(|binary| {
            let regex = fluent_bit_regex(routing);
            let (_, lines) = grep(&corpus, &regex);
            (binary, regex, lines)
        });
        let (mut results, mut theirs) = (Vec::new(), Vec::new());
        for i in 1..=runs {
            let (grep_wall, _) = grep(&corpus, FAILURES);
            let run = run_once(&corpus, grep_wall, routing, expected);
            println!("  {name}, run {i}, {}", report("tailhook", &run));
            if let Some((binary, regex, lines)) = &contender {
                match fluent_bit_once(binary, &corpus, grep_wall, regex, *lines) {
                    Ok(their) => {
                        println!(
                            "  {name}, run {i}, {}; tailhook's CPU/event over Fluent Bit's: {:.2}x",
                            report("Fluent Bit", &their),
                            run.cpu_us_per_event / their.cpu_us_per_event
                        );
                        theirs.push(their);
                    }
                    Err(error) => println!("  {name}, run {i}, Fluent Bit failed: {error}"),
                }
            }
            results.push(run);
        }
        println!(
            "{name}: {megabytes} MB, {expected} events ({failures} failure lines), {runs} runs: {} (targets: ratio >= {target}x, <= 3 µs CPU/event, peak RSS <= 30 MB)",
            summary(&results)
        );
        if !theirs.is_empty() {
            println!(
                "{name}, Fluent Bit: {} events, {} of {runs} runs: {}",
                theirs[0].events,
                theirs.len(),
                summary(&theirs)
            );
        }
        all_runs.push(results);
    }
    // The 1 % file read with and without the `info` events: the same lines
    // read and matched, so the difference is what the extra events cost,
    // from their rule's captures to their delivery.
    let (default_1, everything_1) = (&all_runs[0], &all_runs[2]);
    let own: Vec<f64> = default_1
        .iter()
        .zip(everything_1)
        .enumerate()
        .map(|(i, (fewer, more))| {
            let own =
                (more.cpu_seconds - fewer.cpu_seconds) * 1e6 / (more.events - fewer.events) as f64;
            println!("  each event's own CPU, run {}: {own:.2} µs", i + 1);
            own
        })
        .collect();
    println!(
        "each event's own CPU (every event's run less the default 1 % run's, over the {} extra events): {} µs",
        everything_1[0].events - default_1[0].events,
        span_of(own.into_iter(), 2)
    );
}
