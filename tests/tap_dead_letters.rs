//! `tailhook tap` and `tailhook dead-letter list|replay` with the real
//! binary against the loopback receiver: outcomes as the agent saw them,
//! a live `--follow`, and a rejected batch delivered exactly once by a
//! replay, with the agent running and with it stopped.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// `tap --json` ARGS, parsed: one object per event.
fn tap_json(config: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["tap", "--json"];
    all.extend_from_slice(args);
    let output = tailhook(config, &all);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("tap --json prints JSON lines"))
        .collect()
}

/// (sequence, outcome) of tapped events.
fn outcomes(tapped: &[serde_json::Value]) -> Vec<(i64, String)> {
    tapped
        .iter()
        .map(|t| {
            (
                t["event"]["fields"]["event.sequence"].as_i64().unwrap(),
                t["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn tap_shows_sent_and_waiting_events_and_follows_a_new_one_live() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    // One request a minute: the first batch goes, later ones wait.
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"\nshutdown_timeout = \"1s\"",
            input: "",
            webhook: "rate_limits = [\"1/1m\"]\nbatch_timeout = \"20ms\"",
        },
    );
    std::fs::write(setup.path("auth.log"), "").unwrap();

    let refused = tailhook(&config, &["tap"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("no agent is running"),
        "{}",
        text(&refused)
    );

    let agent = Agent::start(&config);
    agent.wait_for_log("tailhook running", DEADLINE);
    setup.append("auth.log", &[failed_line(1)]);
    receiver.wait_for_events(1, DEADLINE);
    setup.append("auth.log", &[failed_line(2), failed_line(3)]);
    let mut tapped = Vec::new();
    wait_until(DEADLINE, "1 sent and 2 waiting in the tap", || {
        tapped = outcomes(&tap_json(&config, &["-n", "10"]));
        tapped.len() == 3
    });
    assert_eq!(
        tapped,
        [
            (1, "sent".to_string()),
            (2, "waiting".to_string()),
            (3, "waiting".to_string())
        ]
    );
    assert_eq!(
        outcomes(&tap_json(&config, &["-n", "1", "--webhook", "soc"])),
        [(3, "waiting".to_string())]
    );
    let people = tailhook(&config, &["tap", "-n", "3"]);
    let people = text(&people);
    assert!(
        people.contains(" soc sent ") && people.contains("test.auth_failed high seq=1 "),
        "{people}"
    );
    let unknown = tailhook(&config, &["tap", "--webhook", "nope"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("soc"), "{}", text(&unknown));

    // --follow: the last event first, then a new one as it is queued.
    let mut follow = Command::new(binary())
        .args(["tap", "--follow", "--json", "-n", "1", "-c"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tap --follow");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> serde_json::Value {
        let line = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("tap --follow printed no {what} in {DEADLINE:?}"));
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(
        outcomes(&[next("last event")]),
        [(3, "waiting".to_string())]
    );
    setup.append("auth.log", &[failed_line(4)]);
    let live = next("live event");
    assert_eq!(
        outcomes(std::slice::from_ref(&live)),
        [(4, "waiting".to_string())]
    );
    assert_eq!(live["webhook"], "soc");
    assert!(
        follow.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    drop(agent);
}

/// A config posting to `receiver` that dead-letters at once on a 4xx.
fn rejecting_setup(receiver: &Receiver) -> (Setup, std::path::PathBuf) {
    let setup = Setup::new();
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"\nshutdown_timeout = \"2s\"",
            input: "",
            webhook: "rate_limits = [\"100/1m\"]\nbatch_timeout = \"200ms\"",
        },
    );
    std::fs::write(setup.path("auth.log"), "").unwrap();
    (setup, config)
}

/// `dead-letter list --json` of `soc`, parsed.
fn dead_letters(config: &Path) -> Vec<serde_json::Value> {
    let output = tailhook(
        config,
        &["dead-letter", "list", "--webhook", "soc", "--json"],
    );
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Appends lines 1..=3, which the 400-answering receiver rejects, and waits
/// until all three are in the dead-letter file (one batch, unless a loaded
/// machine read them in two).
fn dead_letter_three(setup: &Setup, config: &Path) {
    setup.append(
        "auth.log",
        &[failed_line(1), failed_line(2), failed_line(3)],
    );
    let mut letters = Vec::new();
    let events = |letters: &[serde_json::Value]| -> u64 {
        letters.iter().map(|l| l["events"].as_u64().unwrap()).sum()
    };
    wait_until(DEADLINE, "3 dead-lettered events", || {
        letters = dead_letters(config);
        events(&letters) == 3
    });
    for letter in &letters {
        assert_eq!(letter["status"], 400, "{letter}");
        assert_eq!(letter["rules"], serde_json::json!(["test.auth_failed"]));
        assert!(letter["time"].as_str().unwrap().ends_with('Z'), "{letter}");
    }
    let listed = text(&tailhook(
        config,
        &["dead-letter", "list", "--webhook", "soc"],
    ));
    assert!(
        listed.contains("status 400  ")
            && listed.contains("events  rules test.auth_failed\n    400 Bad Request")
            && listed.contains(&format!("{} batches, 3 events", letters.len())),
        "{listed}"
    );
    assert!(
        !listed.contains("k3y") && !listed.contains("api_key"),
        "{listed}"
    );
}

/// Appends line 4 and waits for it: any duplicate sent before it is seen.
fn assert_delivered_once(setup: &Setup, receiver: &Receiver) {
    setup.append("auth.log", &[failed_line(4)]);
    receiver.wait_for_events(4, DEADLINE);
    assert_eq!(sequences(&receiver.events()), [1, 2, 3, 4]);
}

#[test]
fn a_rejected_batch_is_listed_then_replayed_through_the_running_agent_exactly_once() {
    let receiver = Receiver::start(ReceiverOptions::default());
    receiver.set_failing(400);
    let (setup, config) = rejecting_setup(&receiver);
    let agent = Agent::start(&config);
    agent.wait_for_log("tailhook running", DEADLINE);
    dead_letter_three(&setup, &config);
    let tapped = outcomes(&tap_json(&config, &[]));
    assert_eq!(
        tapped,
        (1..=3)
            .map(|seq| (seq, "dead-lettered".to_string()))
            .collect::<Vec<_>>()
    );

    receiver.set_failing(0);
    let replay = tailhook(&config, &["dead-letter", "replay", "--webhook", "soc"]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("3 events queued again; the running agent sends them"),
        "{}",
        text(&replay)
    );
    receiver.wait_for_events(3, DEADLINE);
    let again = tailhook(&config, &["dead-letter", "replay", "--webhook", "soc"]);
    assert!(
        text(&again).contains("0 batches, 0 events"),
        "{}",
        text(&again)
    );
    assert_delivered_once(&setup, &receiver);
    assert!(dead_letters(&config).is_empty());
    let kept: Vec<_> = std::fs::read_dir(setup.path("state/dead-letter/replayed"))
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 1, "the replayed file is kept aside");
    drop(agent);
}

#[test]
fn a_replay_while_the_agent_is_stopped_is_sent_by_its_next_run_exactly_once() {
    let receiver = Receiver::start(ReceiverOptions::default());
    receiver.set_failing(400);
    let (setup, config) = rejecting_setup(&receiver);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailhook running", DEADLINE);
    dead_letter_three(&setup, &config);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    let replay = tailhook(&config, &["dead-letter", "replay", "--webhook", "soc"]);
    assert!(
        text(&replay)
            .contains("3 events queued again; no agent is running: the next run sends them"),
        "{}",
        text(&replay)
    );
    let again = tailhook(&config, &["dead-letter", "replay", "--webhook", "soc"]);
    assert!(
        text(&again).contains("0 batches, 0 events"),
        "{}",
        text(&again)
    );
    assert_eq!(
        status_json(&config)["webhooks"][0]["queued_events"],
        3,
        "queued for the next run"
    );
    receiver.set_failing(0);
    let agent = Agent::start(&config);
    receiver.wait_for_events(3, DEADLINE);
    assert_delivered_once(&setup, &receiver);
    drop(agent);
}
