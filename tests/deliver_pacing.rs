//! Pacing, end to end: under a steady trickle a webhook's budget is spread
//! over its windows instead of spent at once, so no window runs dry and
//! every event still arrives within seconds. Windows are scaled down
//! (`20/30s` stands for `5000/1d`, `5/2s` for `5/1m`).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// The trickle: 4 matching lines a second for 30 s.
const LINES: usize = 120;
const EVERY: Duration = Duration::from_millis(250);

/// `p` (0–100) of sorted `values`, nearest rank.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

/// Per accepted event's sequence: when the request that carried it arrived.
fn arrivals(requests: &[Request]) -> HashMap<i64, Instant> {
    let mut at = HashMap::new();
    for request in requests.iter().filter(|r| r.status == 202) {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let events = body["events"].as_array().unwrap().clone();
        for seq in sequences(&events) {
            assert!(at.insert(seq, request.at).is_none(), "seq {seq} twice");
        }
    }
    at
}

#[test]
fn a_trickle_is_paced_within_every_window_and_arrives_within_seconds() {
    let windows = [(5, Duration::from_secs(2)), (20, Duration::from_secs(30))];
    let receiver = Receiver::start(ReceiverOptions {
        rate_limits: windows.to_vec(),
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let (config, _agent) = setup.start_tailing(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "",
            webhook: "rate_limits = [\"5/2s\", \"20/30s\"]\nbatch_timeout = \"1s\"",
        },
        DEADLINE,
    );

    let start = Instant::now();
    let mut written = Vec::with_capacity(LINES);
    let mut status_midway = None;
    for seq in 1..=LINES {
        // The trickle's own clock: line `seq` is due at (seq - 1) × 250 ms.
        let due = start + EVERY * (seq as u32 - 1);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        setup.append("auth.log", &[failed_line(seq)]);
        written.push(Instant::now());
        if seq == LINES / 2 {
            status_midway = Some((status_json(&config), tailhook(&config, &["status"])));
        }
    }
    let events = receiver.wait_for_events(LINES, DEADLINE);
    assert_eq!(sequences(&events), (1..=LINES as i64).collect::<Vec<_>>());

    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|&s| s == 202), "no 429: {statuses:?}");
    let arrived = arrivals(&requests);
    let mut latencies: Vec<Duration> = (1..=LINES)
        .map(|seq| arrived[&(seq as i64)] - written[seq - 1])
        .collect();
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
    eprintln!(
        "{LINES} lines over {:?}: {} requests, latency p50 {p50:?}, p99 {p99:?}, max {:?}",
        written[LINES - 1] - written[0],
        requests.len(),
        latencies[LINES - 1]
    );
    assert!(p99 <= Duration::from_secs(6), "p99 {p99:?}");

    // The paced budget of the long window (20 × 0.95 = 19 a window) was
    // never exceeded, so it never ran dry while the trickle lasted.
    let times: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    for (i, first) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|t| t.duration_since(*first) < windows[1].1)
            .count();
        assert!(within <= 19, "{within} requests within 30 s of request {i}");
    }

    let (json, human) = status_midway.expect("status was asked midway");
    let budget = &json["webhooks"][0]["budget"];
    assert_eq!(budget[1]["window"], "20/30s");
    let left = budget[1]["left"].as_u64().unwrap();
    assert!((1..20).contains(&left), "budget left midway: {budget}");
    let pace = budget[1]["pace_seconds"].as_f64().unwrap();
    assert!((pace - 30.0 / 19.0).abs() < 1e-3, "{budget}");
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    // Asked a moment after the JSON: the counts may have moved on, the pace not.
    let long_window = human
        .split("20/30s: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{human}"));
    assert!(
        long_window.contains(" used, ") && long_window.contains(" left, pace 1.6s"),
        "{human}"
    );
}

#[test]
fn pacing_false_restores_greedy_sending() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let (config, _agent) = setup.start_tailing(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "",
            webhook: "rate_limits = [\"10/60s\"]\nbatch_timeout = \"100ms\"\npacing = false",
        },
        DEADLINE,
    );
    // Paced, the second body would wait 60 s / 9.5 = 6.3 s; greedy, it goes
    // after its batch_timeout.
    let start = Instant::now();
    for seq in 1..=3 {
        setup.append("auth.log", &[failed_line(seq)]);
        receiver.wait_for_events(seq, DEADLINE);
    }
    assert_eq!(receiver.requests().len(), 3);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let budget = &status_json(&config)["webhooks"][0]["budget"][0];
    assert!(budget["pace_seconds"].is_null(), "{budget}");
}
