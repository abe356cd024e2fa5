//! An event's `time` is when its line says it happened, and thresholds count
//! by it: the real binary reads real files, in every header form, and a
//! real loopback receiver sees what it sends. A last `end of test` line
//! (a rule without threshold) proves everything before it was read and
//! sent: events of one file leave in the order of their lines.

mod support;

use std::process::Command;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use support::*;

const DEADLINE: Duration = Duration::from_secs(20);
// No DST: a run during a fall-back night must not see two instants for one line.
const ZONE: &str = "Asia/Kolkata";

const RULES: &str = r#"
[[rule]]
id = "burst.auth_failed"
severity = "high"
regex = 'seq=(?P<event.sequence>\d+) Failed password for (?P<user.name>\S+) from (?P<source.ip>[0-9a-f.:]+) port (?P<source.port>\d+)$'
types = { "event.sequence" = "int", "source.port" = "int", "source.ip" = "ip" }
threshold = { count = 3, within = "1m", group_by = ["source.ip"] }

[[rule.example]]
line = "Nov 22 10:00:01 web1 sshd[811]: seq=1 Failed password for root from 192.0.2.1 port 22"
fields = { "event.sequence" = 1, "user.name" = "root", "source.ip" = "192.0.2.1", "source.port" = 22 }

[[rule]]
id = "mark.end"
severity = "high"
regex = 'seq=(?P<event.sequence>\d+) end of test$'
types = { "event.sequence" = "int" }
"#;

/// A whole second, `days` before now.
fn days_ago(days: i64) -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second() - days * 86_400).unwrap()
}

/// The header forms the agent reads, by turns, for the line at `at`.
fn header(form: usize, at: Timestamp) -> String {
    let local = at.to_zoned_datetime(TimeZone::get(ZONE).unwrap());
    match form % 5 {
        0 => format!("{} web1 sshd[811]:", local.strftime("%b %e %H:%M:%S")),
        1 => format!("{}  web1 sshd[811]:", local.strftime("%Y-%m-%d %H:%M:%S")),
        2 => format!(
            "<38>1 {} web1 sshd 811 - -",
            at.strftime("%Y-%m-%dT%H:%M:%S.%3fZ")
        ),
        3 => format!("{} web1 sshd[811]:", local.strftime("%Y-%m-%dT%H:%M:%S%:z")),
        _ => format!(
            "192.0.2.200 - - [{}]",
            local.strftime("%d/%b/%Y:%H:%M:%S %z")
        ),
    }
}

fn failed_at(seq: usize, at: Timestamp) -> String {
    format!(
        "{} seq={seq} Failed password for root from 203.0.113.7 port {}",
        header(seq, at),
        1000 + seq
    )
}

fn end_at(seq: usize, at: Timestamp) -> String {
    format!("{} seq={seq} end of test", header(3, at))
}

fn utc(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn start(setup: &Setup, receiver: &Receiver) -> Agent {
    std::fs::write(setup.path("rules/test.toml"), RULES).unwrap();
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"200ms\"\nhost = \"edge-7\"",
            input: &format!("start_at = \"beginning\"\ntimezone = \"{ZONE}\""),
            webhook: "batch_timeout = \"50ms\"",
        },
    );
    Agent::start(&config)
}

#[test]
fn a_backfill_spread_over_hours_fires_no_burst_rule() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    // Twelve failures from one address, two hours apart, read in one go:
    // counted by read time they would fire four times.
    let first = days_ago(3);
    let mut lines: Vec<String> = (1..=12)
        .map(|seq| failed_at(seq, first + SignedDuration::from_hours(2 * seq as i64)))
        .collect();
    let end = first + SignedDuration::from_hours(30);
    lines.push(end_at(13, end));
    setup.append("auth.log", &lines);
    let read_from = Timestamp::now();
    let _agent = start(&setup, &receiver);

    let events = receiver.wait_for_events(1, DEADLINE);
    assert_eq!(events.len(), 1, "only the end mark: {events:?}");
    let mark = &events[0];
    assert_eq!(mark["rule"], "mark.end");
    assert_eq!(mark["time"], utc(end));
    assert_eq!(mark["host"], "edge-7");
    let ingested: Timestamp = mark["ingested"].as_str().unwrap().parse().unwrap();
    assert!(
        ingested >= read_from - SignedDuration::from_secs(1) && ingested <= Timestamp::now(),
        "ingested is when the agent read the line: {ingested}"
    );
    assert!(mark["ingested"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_real_burst_in_a_backfill_fires_once_at_its_third_line() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    // Five failures five seconds apart (a burst, yesterday), then more from
    // the same address spread over hours: one event, for lines 1 to 3; lines
    // 4 and 5 start a window that never reaches three.
    let first = days_ago(1);
    let at = |seq: usize| first + SignedDuration::from_secs(5 * seq as i64);
    let mut lines: Vec<String> = (1..=5).map(|seq| failed_at(seq, at(seq))).collect();
    lines.extend((6..=9).map(|seq| failed_at(seq, first + SignedDuration::from_hours(seq as i64))));
    lines.push(end_at(10, first + SignedDuration::from_hours(10)));
    setup.append("auth.log", &lines);
    let _agent = start(&setup, &receiver);

    let events = receiver.wait_for_events(2, DEADLINE);
    assert_eq!(events.len(), 2, "{events:?}");
    let burst = &events[0];
    assert_eq!(burst["rule"], "burst.auth_failed");
    assert_eq!(burst["fields"]["event.sequence"], 3);
    assert_eq!(burst["count"], 3);
    // Line 3 states its time in RFC 3339 with a +01:00 or +02:00 offset.
    assert_eq!(
        burst["time"],
        at(3).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    assert_eq!(burst["host"], "edge-7");
    assert_eq!(events[1]["rule"], "mark.end");
}

/// A config for `test-rules --input`: input `auth` selects the burst rule
/// only and reads times in New York; input `other` selects everything.
fn test_rules_config(setup: &Setup) -> std::path::PathBuf {
    std::fs::write(setup.path("rules/test.toml"), RULES).unwrap();
    setup.write_config(
        "[agent]\nstate_dir = \"state\"\nhost = \"edge-7\"\n[rules]\npaths = [\"rules\"]\n\
         [[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nrules = [\"burst.*\"]\n\
         timezone = \"America/New_York\"\n\
         [[input]]\nname = \"other\"\npaths = [\"other.log\"]\n\
         [webhook.soc]\nurl = \"http://127.0.0.1:9/hook\"\n",
    )
}

fn test_rules(setup: &Setup, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("test-rules")
        .arg("-c")
        .arg(setup.path("tailhook.toml"))
        .args(args)
        .arg(setup.path("auth.log"))
        .output()
        .unwrap()
}

fn records(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn test_rules_shows_each_matchs_time_in_the_inputs_zone() {
    let setup = Setup::new();
    test_rules_config(&setup);
    let line = |header: &str, seq: usize| {
        format!("{header} seq={seq} Failed password for root from 203.0.113.7 port 22")
    };
    setup.append(
        "auth.log",
        &[
            line("2026-11-22 10:00:01  web1 sshd[1]:", 1),
            line("<34>1 2026-11-22T10:00:02.003Z web1 sshd 1 - -", 2),
            line("192.0.2.1 - - [22/Nov/2026:10:00:03 +0100]", 3),
            line("no time here:", 4),
            "2026-11-22T10:00:05Z seq=5 end of test".into(),
        ],
    );
    let started = Timestamp::now();
    let matches = records(&test_rules(&setup, &["--json", "--input", "auth"]));
    // `mark.end` is not among the rules input `auth` selects.
    assert_eq!(matches.len(), 4, "{matches:?}");
    let times: Vec<&str> = matches
        .iter()
        .map(|m| m["event"]["time"].as_str().unwrap())
        .collect();
    assert_eq!(
        times[..3],
        [
            "2026-11-22T15:00:01Z",
            "2026-11-22T10:00:02.003Z",
            "2026-11-22T09:00:03Z"
        ]
    );
    // The fourth states no time: it happened when it was read.
    let read: Timestamp = times[3].parse().unwrap();
    assert!(read >= started - SignedDuration::from_secs(1) && read <= Timestamp::now());
    assert_eq!(matches[3]["event"]["ingested"], times[3]);
    assert!(matches.iter().all(|m| m["event"]["host"] == "edge-7"));

    let human = test_rules(&setup, &["--input", "auth"]);
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(
        stdout.contains("  time 2026-11-22T15:00:01Z (the line's)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(read time: the line states none)"),
        "{stdout}"
    );

    // Without --input every rule runs, in the host's zone.
    let all = records(&test_rules(&setup, &["--json"]));
    assert_eq!(all.len(), 5);
    assert_eq!(all[4]["rule"], "mark.end");
    assert_eq!(all[4]["event"]["time"], "2026-11-22T10:00:05Z");
}

#[test]
fn test_rules_applies_thresholds_by_line_time() {
    let setup = Setup::new();
    test_rules_config(&setup);
    let line = |minute: u32, second: u32, seq: usize| {
        format!(
            "2026-11-22T10:{minute:02}:{second:02}Z web1 sshd[1]: seq={seq} Failed password for root from 203.0.113.7 port 22"
        )
    };
    // A day replayed: three within a minute fire, then two more (held),
    // then one every ten minutes, never three within a minute.
    let mut lines = vec![line(0, 0, 1), line(0, 10, 2), line(0, 20, 3)];
    lines.extend([line(0, 30, 4), line(0, 40, 5)]);
    lines.extend((6..=10).map(|seq| line(10 * (seq as u32 - 5), 0, seq)));
    setup.append("auth.log", &lines);

    let out = test_rules(&setup, &["--json", "--thresholds", "--input", "auth"]);
    let fired = records(&out);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["line"], 3);
    assert_eq!(fired[0]["event"]["count"], 3);
    assert_eq!(fired[0]["event"]["time"], "2026-11-22T10:00:20Z");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("Events by line time: 1 sent, 9 matches held by threshold or suppress"),
        "{summary}"
    );

    // Without --thresholds every match shows.
    assert_eq!(
        records(&test_rules(&setup, &["--json", "--input", "auth"])).len(),
        10
    );
    let human = test_rules(&setup, &["--thresholds", "--input", "auth"]);
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(
        stdout.contains("auth.log:4  burst.auth_failed  held by threshold/suppress"),
        "{stdout}"
    );
}

#[test]
fn test_rules_names_an_unknown_input() {
    let setup = Setup::new();
    test_rules_config(&setup);
    setup.append("auth.log", &["x".to_string()]);
    let out = test_rules(&setup, &["--input", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no input named `nope`"), "{stderr}");
    assert!(stderr.contains("auth, other"), "{stderr}");
    assert!(stderr.contains("tailhook.toml"), "{stderr}");
}

#[test]
fn check_names_an_unknown_timezone() {
    let setup = Setup::new();
    let config = setup.agent_config(
        "http://127.0.0.1:9/hook",
        ConfigKeys {
            input: "timezone = \"Europe/Atlantis\"",
            ..ConfigKeys::default()
        },
    );
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tailhook.toml"), "{stderr}");
    assert!(stderr.contains("input[0].timezone"), "{stderr}");
    assert!(
        stderr.contains("`Europe/Atlantis` is no time zone"),
        "{stderr}"
    );
}
