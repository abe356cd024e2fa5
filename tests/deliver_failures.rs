//! Receivers that are slow, or say "too many" with another code, end to end:
//! a receiver slower than `request_timeout` gets each batch a bounded number
//! of times; a 415 after the Content-Type was accepted is over-limit and
//! retried; a 415 before any success is a configuration error.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(40);

/// How many times the receiver got each sequence.
fn copies(events: &[serde_json::Value]) -> BTreeMap<i64, usize> {
    let mut copies = BTreeMap::new();
    for seq in sequences(events) {
        *copies.entry(seq).or_default() += 1;
    }
    copies
}

#[test]
fn a_receiver_slower_than_the_timeout_gets_each_batch_a_bounded_number_of_times() {
    // Every attempt is accepted and recorded on arrival, but answered 3 s
    // later. Timeouts double from 1 s: 1 s and 2 s expire, 4 s sees the
    // answer. So each batch arrives at most 1 + ceil(log2(3 s / 1 s)) = 3 times.
    let answer_takes = Duration::from_secs(3);
    let bound = 3;
    let receiver = Receiver::start(ReceiverOptions::default());
    receiver.set_answer_delay(answer_takes);
    let setup = Setup::new();
    let (_, agent) = setup.start_tailing(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"",
            input: "",
            webhook:
                "batch_timeout = \"100ms\"\nrequest_timeout = \"1s\"\nmax_retry_delay = \"1s\"",
        },
        DEADLINE,
    );
    let port = agent.metrics_port(DEADLINE);

    let batches = 2;
    for batch in 0..batches {
        let first = batch * 10 + 1;
        setup.append(
            "auth.log",
            &(first..first + 10).map(failed_line).collect::<Vec<_>>(),
        );
        wait_until(DEADLINE, "the batch delivered", || {
            agent.logs().matches("batch delivered").count() > batch
        });
    }

    let copies = copies(&receiver.events());
    eprintln!(
        "{} requests for {batches} batches; copies per event: {copies:?}",
        receiver.requests().len()
    );
    assert_eq!(
        copies.keys().copied().collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert!(
        copies.values().all(|&n| (1..=bound).contains(&n)),
        "more than {bound} copies: {copies:?}"
    );
    let delivered = agent.logs().matches("batch delivered").count();
    let requests = receiver.requests().len();
    let (_, metrics) = http_get(port, "/metrics").expect("metrics served");
    let unknown = sample(&metrics, "tailhook_unknown_outcomes_total{webhook=\"soc\"}");
    assert_eq!(
        unknown as usize,
        requests - delivered,
        "every attempt but the answered ones timed out and was counted"
    );
    assert!(unknown >= 1.0, "the receiver was slower than the timeout");
    let logs = agent.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("may already have this batch"))
        .collect();
    assert_eq!(warnings.len(), unknown as usize, "{logs}");
    assert!(
        warnings
            .iter()
            .all(|w| !w.contains("127.0.0.1") && !w.contains("01TEST") && !w.contains("k3y")),
        "no URL or secret in the warning: {warnings:?}"
    );
}

#[test]
fn a_415_after_a_success_is_over_limit_and_retried_until_delivered() {
    // A SecureX-like receiver that says 415 when over its rate, which the
    // agent (told no limit) exceeds at once.
    let receiver = Receiver::start(ReceiverOptions {
        rate_limits: vec![(1, Duration::from_secs(3))],
        over_rate_status: 415,
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let (config, agent) = setup.start_tailing(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "",
            webhook: "batch_timeout = \"50ms\"\nmax_retry_delay = \"1s\"",
        },
        DEADLINE,
    );
    setup.append("auth.log", &[failed_line(1)]);
    receiver.wait_for_events(1, DEADLINE);
    for seq in 2..=4 {
        setup.append("auth.log", &[failed_line(seq)]);
        receiver.wait_for_events(seq, DEADLINE);
    }
    let statuses: Vec<u16> = receiver.requests().iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&415),
        "the receiver was exceeded: {statuses:?}"
    );
    assert_eq!(
        sequences(&receiver.events()),
        vec![1, 2, 3, 4],
        "each once, in order"
    );
    assert!(!setup.path("state/dead-letter/soc.jsonl").exists());
    assert!(
        agent.logs().contains("taken as over the limit"),
        "{}",
        agent.logs()
    );

    // After a restart, a 415 before this run's first success is still
    // over-limit: that the Content-Type was accepted is kept on disk.
    let mut agent = agent;
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    let before = receiver.requests().len();
    let agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    receiver.set_failing(415);
    setup.append("auth.log", &[failed_line(5)]);
    wait_until(DEADLINE, "a 415 after the restart", || {
        receiver.requests()[before..]
            .iter()
            .any(|r| r.status == 415)
    });
    receiver.set_failing(0);
    receiver.wait_for_events(5, DEADLINE);
    assert_eq!(sequences(&receiver.events()), vec![1, 2, 3, 4, 5]);
    assert!(!setup.path("state/dead-letter/soc.jsonl").exists());
    assert!(agent.logs().contains("taken as over the limit"));
}

#[test]
fn a_415_before_any_success_is_dead_lettered_naming_content_type() {
    let receiver = Receiver::start(ReceiverOptions {
        content_type: "application/xml",
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "start_at = \"beginning\"",
            webhook: "batch_timeout = \"50ms\"",
        },
    );
    setup.append("auth.log", &[failed_line(1), failed_line(2)]);
    let agent = Agent::start(&config);
    agent.wait_for_log("written to the dead-letter file", DEADLINE);
    let statuses: Vec<u16> = receiver.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![415], "not retried");
    let dead = std::fs::read_to_string(setup.path("state/dead-letter/soc.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(record["status"], 415);
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("webhook.soc.content_type") && reason.contains("`application/json`"),
        "{reason}"
    );
    assert_eq!(sequences(record["events"].as_array().unwrap()), vec![1, 2]);
}
