//! Latency of the tail stage: a line appended to a watched file → the line
//! handed to the rules stage (the tailer's `LineSink`), over single appends
//! spaced apart so each is its own wake-up. Prints p50/p90/p99/max.
//!
//! Run: `cargo bench --bench tail_latency` (optionally `-- 500` appends).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tailhook::config::{InputConfig, InputKind, StartAt};
use tailhook::tail::{CommitToken, LineChunk, LineSink, SinkClosed, TailOptions, Tailer};

struct Recorder {
    appended: Arc<Mutex<HashMap<u64, Instant>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl LineSink for Recorder {
    fn accept(&mut self, lines: LineChunk<'_>, _commit: CommitToken) -> Result<(), SinkClosed> {
        let now = Instant::now();
        for line in lines.iter() {
            let seq: u64 = line
                .text
                .trim_start_matches("seq=")
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if let Some(at) = self.appended.lock().unwrap().remove(&seq) {
                self.latencies.lock().unwrap().push(now - at);
            }
        }
        Ok(())
    }
}

fn main() {
    let appends: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").unwrap();
    let input = InputConfig {
        name: "bench".into(),
        kind: InputKind::File,
        paths: vec![log.to_string_lossy().into_owned()],
        units: vec![],
        identifiers: vec![],
        matches: vec![],
        exclude: vec![],
        start_at: StartAt::Beginning,
        rules: vec!["*".into()],
        max_line_bytes: 65536,
        partial_line_timeout: Duration::from_secs(5),
        timezone: None,
        rescan_interval: Duration::from_secs(10),
        close_inactive: Duration::from_secs(300),
        ignore_older: None,
        report_long_lines: true,
    };
    let appended = Arc::new(Mutex::new(HashMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        appended: appended.clone(),
        latencies: latencies.clone(),
    };
    let tailer = Tailer::spawn(&[input], dir.path(), TailOptions::default(), recorder)
        .expect("a fresh state folder");
    std::thread::sleep(Duration::from_millis(300));

    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for seq in 0..appends as u64 {
        appended.lock().unwrap().insert(seq, Instant::now());
        writeln!(
            file,
            "seq={seq} Failed password for root from 192.0.2.1 port 22 ssh2"
        )
        .unwrap();
        // Wait until it arrived (bounded), then a pause so the next append is
        // a fresh wake-up rather than part of a burst.
        let deadline = Instant::now() + Duration::from_secs(5);
        while latencies.lock().unwrap().len() <= seq as usize && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tailer.stop(Duration::ZERO);

    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let missing = appends - all.len();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "tail latency over {} appends (inotify wake-up, poll_interval 1s): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  (not arrived within 5 s: {missing})",
        all.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all[all.len() - 1]
    );
}
