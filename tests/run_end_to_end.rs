//! `tailhook run` end to end: the real binary tails a real file and POSTs to a
//! real loopback receiver that checks what SecureX checks.

mod support;

use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(setup: &Setup, receiver_url: &str, input: &str, webhook: &str) -> std::path::PathBuf {
    let agent = "poll_interval = \"200ms\"";
    setup.agent_config(
        receiver_url,
        ConfigKeys {
            agent,
            input,
            webhook,
        },
    )
}

#[test]
fn matching_lines_arrive_with_their_fields_and_nothing_else_does() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    // Present before start, read because of start_at = "beginning".
    setup.append("auth.log", &[failed_line(1), noise_line(2), failed_line(3)]);
    let config = config(
        &setup,
        &receiver.url,
        "start_at = \"beginning\"",
        "batch_timeout = \"100ms\"",
    );
    let agent = Agent::start(&config);

    receiver.wait_for_events(2, DEADLINE);
    setup.append(
        "auth.log",
        &[
            noise_line(4),
            failed_line(5),
            "garbage \u{1} line".into(),
            failed_line(6),
        ],
    );
    let events = receiver.wait_for_events(4, DEADLINE);

    let sequences = sequences(&events);
    assert_eq!(sequences, vec![1, 3, 5, 6]);
    let e = &events[2];
    assert_eq!(e["rule"], "test.auth_failed");
    assert_eq!(e["severity"], "high");
    assert_eq!(e["message"], failed_line(5));
    assert_eq!(e["fields"]["user.name"], "user5");
    assert_eq!(e["fields"]["source.ip"], "192.0.2.6");
    assert_eq!(e["fields"]["source.port"], 1005);
    assert_eq!(
        e["log"]["file"],
        setup.path("auth.log").to_string_lossy().as_ref()
    );
    assert_eq!(e["id"].as_str().unwrap().len(), 32);

    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r.status == 202),
        "every request accepted: {:?}",
        requests.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["agent"], "tailhook");
    assert!(body["host"].as_str().is_some_and(|h| !h.is_empty()));

    // Nothing arrives for the noise lines: once a later line's event is in,
    // every earlier line has been through the rules.
    setup.append("auth.log", &[noise_line(7), failed_line(8)]);
    let events = receiver.wait_for_events(5, DEADLINE);
    assert_eq!(support::sequences(&events), vec![1, 3, 5, 6, 8]);
    let logs = agent.logs();
    assert!(
        !logs.contains(API_KEY) && !logs.contains("k3y"),
        "api_key leaked into logs:\n{logs}"
    );
    assert!(
        logs.contains("?<redacted>"),
        "logs show the redacted target:\n{logs}"
    );
}

#[test]
fn files_present_at_first_start_are_read_from_their_end() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    setup.append("auth.log", &[failed_line(1), failed_line(2)]);
    let config = config(&setup, &receiver.url, "", "batch_timeout = \"100ms\"");
    let agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);

    setup.append("auth.log", &[failed_line(3)]);
    let events = receiver.wait_for_events(1, DEADLINE);
    assert_eq!(events[0]["fields"]["event.sequence"], 3);
    // A file created after start is new: read from its beginning.
    std::fs::remove_file(setup.path("auth.log")).unwrap();
    setup.append("auth.log", &[failed_line(4), failed_line(5)]);
    let events = receiver.wait_for_events(3, DEADLINE);
    let sequences = sequences(&events);
    assert_eq!(sequences, vec![3, 4, 5]);
}

#[test]
fn sigterm_flushes_the_pending_batch_and_exits_cleanly() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(
        &setup,
        &receiver.url,
        "start_at = \"beginning\"",
        "batch_timeout = \"1h\"",
    );
    setup.append("auth.log", &(1..=50).map(failed_line).collect::<Vec<_>>());
    let mut agent = Agent::start(&config);
    // The tailer reads a file in the same cycle that logs it, before it looks
    // at a stop request, so these 50 lines are queued before SIGTERM is seen.
    agent.wait_for_log("tailing file", DEADLINE);
    // Events are batched and held by the 1 h batch_timeout until shutdown:
    // once all 50 are queued (the deliverer is woken as they are), none went.
    wait_until(DEADLINE, "50 queued events", || {
        status_json(&config)["webhooks"][0]["queued_events"] == 50
    });
    assert!(
        receiver.requests().is_empty(),
        "batch_timeout holds the batch"
    );

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    let events = receiver.events();
    assert_eq!(events.len(), 50);
    assert_eq!(
        receiver.requests().len(),
        1,
        "one batch for 50 small events"
    );
}

#[test]
fn a_rejecting_webhook_dead_letters_the_batch_without_leaking_the_key() {
    // The receiver expects form bodies; JSON gets 415, which no retry can fix.
    let receiver = Receiver::start(ReceiverOptions {
        content_type: "application/x-www-form-urlencoded",
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let config = config(
        &setup,
        &receiver.url,
        "start_at = \"beginning\"",
        "batch_timeout = \"100ms\"",
    );
    setup.append("auth.log", &[failed_line(1), failed_line(2)]);
    let agent = Agent::start(&config);

    let dead_letters = setup.path("state/dead-letter/soc.jsonl");
    wait_until(DEADLINE, "the dead-letter file", || {
        std::fs::read_to_string(&dead_letters).is_ok_and(|t| t.lines().count() >= 1)
    });
    let text = std::fs::read_to_string(&dead_letters).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(record["status"], 415);
    assert_eq!(record["webhook"], "soc");
    let events = record["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["fields"]["event.sequence"], 2);
    assert!(receiver
        .requests()
        .iter()
        .all(|r| r.content_type == "application/json"));
    agent.wait_for_log("dead-letter", DEADLINE);
    for written in [text, agent.logs()] {
        assert!(!written.contains("k3y"), "api_key leaked:\n{written}");
    }
}

#[test]
fn rate_limit_windows_are_respected_and_batches_fill_while_waiting() {
    let receiver = Receiver::start(ReceiverOptions {
        rate_limits: vec![(2, Duration::from_secs(1))],
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let config = config(
        &setup,
        &receiver.url,
        "start_at = \"beginning\"",
        "batch_timeout = \"10ms\"\nrate_limits = [\"2/1s\"]\nmax_body_bytes = 4000",
    );
    let _agent = Agent::start(&config);
    // Appended in several writes so the agent sees them spread over time.
    for chunk in (1..=200).collect::<Vec<_>>().chunks(20) {
        setup.append(
            "auth.log",
            &chunk.iter().map(|&s| failed_line(s)).collect::<Vec<_>>(),
        );
    }
    let events = receiver.wait_for_events(200, Duration::from_secs(60));
    let sequences = sequences(&events);
    assert_eq!(
        sequences,
        (1..=200).collect::<Vec<_>>(),
        "all events, once each, in order"
    );
    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r.status == 202),
        "no 429: {:?}",
        requests.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(requests.iter().all(|r| r.body.len() <= 4000));
}

#[test]
fn threshold_and_suppress_turn_bursts_into_single_events() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::write(
        setup.path("rules/test.toml"),
        TEST_RULES.replace(
            "types = {",
            "threshold = { count = 3, within = \"1h\", group_by = [\"source.ip\"] }\n\
             suppress = { for = \"1h\", key = [\"source.ip\"] }\ntypes = {",
        ),
    )
    .unwrap();
    let config = config(
        &setup,
        &receiver.url,
        "start_at = \"beginning\"",
        "batch_timeout = \"50ms\"",
    );
    // failed_line(n) comes from 192.0.2.(n % 250 + 1): 1 and 251 share an address.
    let lines: Vec<String> = [1, 251, 2, 501, 252, 751, 1001, 1251]
        .into_iter()
        .map(failed_line)
        .collect();
    setup.append("auth.log", &lines);
    let _agent = Agent::start(&config);
    receiver.wait_for_events(1, DEADLINE);
    // A sentinel burst from another address (3, 253, 503: 192.0.2.4) makes
    // one event; once it is in, every earlier line has been through the rules.
    setup.append("auth.log", &[3, 253, 503].map(failed_line));
    wait_until(DEADLINE, "the sentinel event", || {
        sequences(&receiver.events()).contains(&503)
    });
    let mut events = receiver.events();
    assert_eq!(events.pop().unwrap()["count"], 3, "the sentinel");
    // 192.0.2.2: three matches (1, 251, 501) → one event; the next three
    // (751, 1001, 1251) reach the threshold again but are suppressed.
    // 192.0.2.3: two matches (2, 252) → below the threshold.
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["fields"]["event.sequence"], 501);
    assert_eq!(events[0]["count"], 3);
}
