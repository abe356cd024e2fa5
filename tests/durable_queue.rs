//! The durable queue: events wait on disk for a webhook that is down, survive
//! SIGKILL and restarts, do not hold up other webhooks, and rate-limit usage
//! survives restarts too.

mod support;

use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn two_webhooks(setup: &Setup, down: &str, up: &str) -> std::path::PathBuf {
    setup.write_config(&format!(
        r#"
[agent]
state_dir = "state"
poll_interval = "100ms"
[rules]
paths = ["rules"]
[[input]]
name = "auth"
paths = ["auth.log"]
start_at = "beginning"
[webhook.down]
url = "{down}"
batch_timeout = "50ms"
max_retry_delay = "300ms"
[webhook.up]
url = "{up}"
batch_timeout = "50ms"
"#
    ))
}

#[test]
fn a_dead_webhook_delays_no_other_and_gets_its_backlog_when_it_returns() {
    let down = Receiver::start(ReceiverOptions::default());
    let up = Receiver::start(ReceiverOptions::default());
    down.set_failing(503);
    let setup = Setup::new();
    let _agent = Agent::start(&two_webhooks(&setup, &down.url, &up.url));
    for round in 0..5 {
        setup.append(
            "auth.log",
            &(round * 20 + 1..=round * 20 + 20)
                .map(failed_line)
                .collect::<Vec<_>>(),
        );
        up.wait_for_events(round * 20 + 20, DEADLINE);
    }
    assert!(down.events().is_empty());
    assert!(down.requests().iter().all(|r| r.status == 503) && !down.requests().is_empty());

    down.set_failing(0);
    let events = down.wait_for_events(100, DEADLINE);
    assert_eq!(
        sequences(&events),
        (1..=100).collect::<Vec<_>>(),
        "the backlog, once, in order"
    );
}

#[test]
fn queued_events_survive_sigkill_and_are_sent_once_after_restart() {
    let down = Receiver::start(ReceiverOptions::default());
    let up = Receiver::start(ReceiverOptions::default());
    down.set_failing(503);
    let setup = Setup::new();
    let config = two_webhooks(&setup, &down.url, &up.url);
    let mut agent = Agent::start(&config);
    setup.append("auth.log", &(1..=50).map(failed_line).collect::<Vec<_>>());
    up.wait_for_events(50, DEADLINE);
    agent.wait_for_log("delivery failed; will retry", DEADLINE);
    agent.signal("KILL");
    agent.wait_exit(DEADLINE);

    // Back up; the lines were committed (their events are queued), so only
    // the queue can deliver them now.
    down.set_failing(0);
    setup.append("auth.log", &(51..=60).map(failed_line).collect::<Vec<_>>());
    let agent = Agent::start(&config);
    // A sentinel after the backlog: once it is in, anything sent twice
    // would be in too (each webhook's events go in order).
    setup.append("auth.log", &[failed_line(61)]);
    wait_until(DEADLINE, "the sentinel", || {
        sequences(&down.events()).contains(&61)
    });
    let events = down.events();
    assert_eq!(
        sequences(&events),
        (1..=61).collect::<Vec<_>>(),
        "{events:?}"
    );
    // The webhook that was up may get its last batch before the kill again
    // (taken, but not yet marked as sent): the same events, with their ids.
    wait_until(DEADLINE, "the sentinel at the other webhook", || {
        sequences(&up.events()).contains(&61)
    });
    let up_events = up.events();
    let mut ids: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
    for event in &up_events {
        let seq = event["fields"]["event.sequence"].as_i64().unwrap();
        ids.entry(seq)
            .or_default()
            .push(event["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        (1..=61).collect::<Vec<_>>()
    );
    for (seq, sent) in &ids {
        assert!(
            sent.iter().all(|id| *id == sent[0]),
            "line {seq} sent again with another id"
        );
        // Lines written after the restart were never in flight at the kill.
        assert!(
            *seq <= 50 || sent.len() == 1,
            "line {seq} sent {} times",
            sent.len()
        );
    }

    // Nothing the agent wrote holds the api_key: logs, queue, checkpoints.
    let mut written = agent.logs();
    for entry in walk(&setup.path("state")) {
        written.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
    }
    assert!(
        !written.contains(API_KEY) && !written.contains("k3y"),
        "api_key leaked"
    );
}

#[test]
fn a_restart_gets_no_fresh_rate_budget() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"",
        input: "",
        // Greedy, so the first two go at once (paced: 30 min apart).
        webhook: "rate_limits = [\"2/1h\"]\nbatch_timeout = \"20ms\"\npacing = false",
    };
    let config = setup.agent_config(&receiver.url, keys);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    for seq in 1..=2 {
        setup.append("auth.log", &[failed_line(seq)]);
        receiver.wait_for_events(seq, DEADLINE);
    }
    agent.signal("TERM");
    agent.wait_exit(DEADLINE);

    let agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    setup.append("auth.log", &[failed_line(3)]);
    // The hour's budget (2) was spent before the restart: once the running
    // agent has the event queued and its limiter counts both attempts, the
    // batch waits for the window (its send time is the window's next free
    // moment), so nothing may have gone.
    wait_until(DEADLINE, "the event queued behind a full window", || {
        let soc = &status_json(&config)["webhooks"][0];
        soc["queued_events"] == 1 && soc["budget"][0]["used"] == 2
    });
    assert_eq!(
        receiver.requests().len(),
        2,
        "a restart must not reset the budget"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.is_file() {
            // Not the control socket: it holds nothing and cannot be read.
            files.push(path);
        }
    }
    files
}

#[test]
fn a_full_queue_pauses_tailing_with_a_warning_and_loses_nothing() {
    let down = Receiver::start(ReceiverOptions::default());
    down.set_failing(503);
    let setup = Setup::new();
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"",
        input: "start_at = \"beginning\"",
        webhook: "max_queue_bytes = 5000\nbatch_timeout = \"20ms\"\nmax_retry_delay = \"200ms\"",
    };
    let config = setup.agent_config(&down.url, keys);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    // Written in chunks, each queued before the next is written (or the
    // queue is full), so the 5,000-byte queue fills after a few: a lane that
    // holds nothing takes a whole chunk however large.
    let mut written = 0;
    for chunk in (1..=300).collect::<Vec<_>>().chunks(10) {
        setup.append(
            "auth.log",
            &chunk.iter().map(|&s| failed_line(s)).collect::<Vec<_>>(),
        );
        written += chunk.len();
        wait_until(DEADLINE, "the chunk queued, or a full queue", || {
            agent.logs().contains("queue is full")
                || status_json(&config)["webhooks"][0]["queued_events"] == written
        });
    }
    agent.wait_for_log("queue is full", DEADLINE);

    down.set_failing(0);
    let events = down.wait_for_events(300, DEADLINE);
    assert_eq!(
        sequences(&events),
        (1..=300).collect::<Vec<_>>(),
        "the log files kept what the queue could not"
    );
}

#[test]
fn the_queue_file_shrinks_once_a_large_backlog_has_drained() {
    const BACKLOG: usize = 20_000;
    let down = Receiver::start(ReceiverOptions::default());
    down.set_failing(503);
    let setup = Setup::new();
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"",
        input: "start_at = \"beginning\"",
        webhook: "batch_timeout = \"20ms\"\nmax_retry_delay = \"200ms\"",
    };
    let config = setup.agent_config(&down.url, keys);
    setup.append(
        "auth.log",
        &(1..=BACKLOG).map(failed_line).collect::<Vec<_>>(),
    );
    let agent = Agent::start(&config);
    let queued = || status_json(&config)["webhooks"][0]["queued_events"].as_u64();
    wait_until(Duration::from_secs(120), "the backlog queued", || {
        queued() == Some(BACKLOG as u64)
    });
    let queue_file = setup.path("state/queue.redb");
    let backlog_size = std::fs::metadata(&queue_file).unwrap().len();
    assert!(
        backlog_size > 8 * 1024 * 1024,
        "a backlog that large should take more than 8 MiB, took {backlog_size}"
    );

    down.set_failing(0);
    let events = down.wait_for_events(BACKLOG, Duration::from_secs(120));
    assert_eq!(sequences(&events), (1..=BACKLOG as i64).collect::<Vec<_>>());
    agent.wait_for_log("queue compacted after its backlog drained", DEADLINE);
    let drained_size = std::fs::metadata(&queue_file).unwrap().len();
    eprintln!("queue.redb: {backlog_size} bytes holding the backlog, {drained_size} once drained");
    assert!(
        drained_size * 2 < backlog_size,
        "queue.redb kept {drained_size} of {backlog_size} bytes once empty"
    );
}
