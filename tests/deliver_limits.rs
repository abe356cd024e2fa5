//! Delivery within a webhook's limits, end to end against the loopback
//! receiver: bursts under a rate limit, and a receiver whose body limit is
//! below what the agent was told.

mod support;

use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn config(setup: &Setup, url: &str, webhook: &str) -> std::path::PathBuf {
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"",
        input: "start_at = \"beginning\"",
        webhook,
    };
    setup.agent_config(url, keys)
}

#[test]
fn a_burst_of_10000_lines_under_5_per_2s_gets_no_429_and_near_minimal_requests() {
    let receiver = Receiver::start(ReceiverOptions {
        rate_limits: vec![(5, Duration::from_secs(2))],
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let config = config(
        &setup,
        &receiver.url,
        "rate_limits = [\"5/2s\"]\nmax_body_bytes = 200000\nbatch_timeout = \"50ms\"",
    );
    let _agent = Agent::start(&config);
    let total = 10_000;
    for chunk in (1..=total).collect::<Vec<_>>().chunks(1000) {
        setup.append(
            "auth.log",
            &chunk.iter().map(|&s| failed_line(s)).collect::<Vec<_>>(),
        );
    }
    let events = receiver.wait_for_events(total, DEADLINE);
    assert_eq!(
        sequences(&events),
        (1..=total as i64).collect::<Vec<_>>(),
        "all events, once, in order"
    );

    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|&s| s == 202), "no 429: {statuses:?}");
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    let ideal = bytes.div_ceil(200_000);
    eprintln!(
        "{total} events, {bytes} bytes: {} requests, ideal {ideal}",
        requests.len()
    );
    assert!(requests.iter().all(|r| r.body.len() <= 200_000));
    // Full bodies go as soon as the windows allow and the rest is paced, so
    // bodies fill while the budget is spent: at most 5 % beyond the ideal.
    assert!(
        requests.len() * 100 <= ideal * 105 + 99,
        "{} requests for an ideal of {ideal}",
        requests.len()
    );
}

#[test]
fn a_413_splits_the_batch_until_it_fits_and_nothing_is_dead_lettered() {
    let receiver = Receiver::start(ReceiverOptions {
        max_body_bytes: 1_500,
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    // The agent believes 1 MB fits; the receiver takes 1,500 bytes.
    let config = config(&setup, &receiver.url, "batch_timeout = \"200ms\"");
    setup.append("auth.log", &(1..=40).map(failed_line).collect::<Vec<_>>());
    let agent = Agent::start(&config);

    let events = receiver.wait_for_events(40, DEADLINE);
    assert_eq!(
        sequences(&events),
        (1..=40).collect::<Vec<_>>(),
        "every event, in order"
    );
    let statuses: Vec<u16> = receiver.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&413), "{statuses:?}");
    assert!(!setup.path("state/dead-letter/soc.jsonl").exists());
    agent.wait_for_log("sending it in two halves", DEADLINE);
}

#[test]
fn form_xml_and_template_bodies_carry_every_event_within_the_limit() {
    // Form: the envelope as `payload`, percent-encoded; the receiver decodes it.
    let receiver = Receiver::start(ReceiverOptions {
        content_type: "application/x-www-form-urlencoded",
        max_body_bytes: 3_000,
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let webhook = "content_type = \"application/x-www-form-urlencoded\"\nmax_body_bytes = 3000\nbatch_timeout = \"50ms\"";
    let _agent = Agent::start(&config(&setup, &receiver.url, webhook));
    setup.append("auth.log", &(1..=30).map(failed_line).collect::<Vec<_>>());
    let events = receiver.wait_for_events(30, DEADLINE);
    assert_eq!(sequences(&events), (1..=30).collect::<Vec<_>>());
    assert!(receiver
        .requests()
        .iter()
        .all(|r| r.status == 202 && r.body.len() <= 3_000));

    // XML: one <event> per match, text escaped.
    let receiver = Receiver::start(ReceiverOptions {
        content_type: "application/xml",
        ..ReceiverOptions::default()
    });
    let setup = Setup::new();
    let webhook = "content_type = \"application/xml\"\nbatch_timeout = \"50ms\"";
    let _agent = Agent::start(&config(&setup, &receiver.url, webhook));
    setup.append(
        "auth.log",
        &[
            failed_line(1),
            "seq=2 Failed password for <b>&amp from 192.0.2.9 port 1002".into(),
        ],
    );
    wait_until(DEADLINE, "an XML body with both events", || {
        receiver
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).matches("<event ").count())
            .sum::<usize>()
            >= 2
    });
    let xml: String = receiver
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        xml.contains(r#"<field name="user.name">&lt;b&gt;&amp;amp</field>"#),
        "{xml}"
    );

    // Slack-style template: {"text": one line per event}, path kept secret.
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let webhook = "preset = \"slack\"\ntemplate = \"{rule} {fields.source.ip} seq={fields.event.sequence}\"\nbatch_timeout = \"50ms\"";
    let agent = Agent::start(&config(&setup, &receiver.url, webhook));
    setup.append("auth.log", &[failed_line(1), failed_line(2)]);
    wait_until(DEADLINE, "a text body", || {
        receiver.requests().iter().any(|r| r.status == 202)
    });
    let body: serde_json::Value = serde_json::from_slice(&receiver.requests()[0].body).unwrap();
    assert_eq!(
        body["text"],
        "test.auth_failed 192.0.2.2 seq=1\ntest.auth_failed 192.0.2.3 seq=2"
    );
    assert!(
        agent.logs().contains("http://127.0.0.1:") && agent.logs().contains("/<redacted>"),
        "{}",
        agent.logs()
    );
    assert!(
        !agent.logs().contains("01TEST"),
        "the path is the secret with the slack preset"
    );
}
