//! Journald inputs, end to end: the real binary runs `journalctl` as a real
//! process. Where no journal is readable (containers, CI), a fake
//! `journalctl` put first on the agent's PATH replays a file of recorded
//! `journalctl --output=json` entries and honours `--after-cursor`,
//! `--lines` and `--follow` (with `tail -f`), so spawning, following,
//! restarting from the committed cursor and `kill -9` are exercised for real.
//! The fake leaves filtering to the agent's arguments, which it records.
//! Two tests use the real journalctl: one on the machine's journal, one on a
//! systemd-journald of its own in a private mount namespace (needs root with
//! `unshare`, `nsenter` and the journald binary), which checks the filters'
//! meaning and a `kill -9`. Without their prerequisites they skip, saying
//! so, or fail under `CI=true`.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// Recorded entries: sshd and sudo events, systemd noise, an entry without
/// MESSAGE, non-UTF-8 and control-character messages (byte arrays), a
/// multi-line message that tries to pose as an sshd line, and a kernel
/// firewall entry (a rule with a threshold: one entry makes no event).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/journal-auth.json"
);
const SHIPPED_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

/// Replays `$FAKE_JOURNAL` like journalctl (refusing a cursor that does
/// not start with `s=`, as journalctl refuses a malformed one); appends its
/// arguments to
/// `$FAKE_JOURNAL.args` and its pid to `$FAKE_JOURNAL.pids`, and writes
/// `$FAKE_JOURNAL_STDERR` (if set) to stderr.
const FAKE_JOURNALCTL: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_JOURNAL.args"
[ -n "$FAKE_JOURNAL_STDERR" ] && printf '%s\n' "$FAKE_JOURNAL_STDERR" >&2
follow=0; after=""; lines=""
for arg in "$@"; do
  case "$arg" in
    --follow) follow=1 ;;
    --after-cursor=*) after="${arg#--after-cursor=}" ;;
    --lines=*) lines="${arg#--lines=}" ;;
  esac
done
case "$after" in
  ""|s=*) ;;
  *) echo "Failed to seek to cursor: Invalid argument" >&2; exit 1 ;;
esac
start=1
if [ -n "$after" ]; then
  start=$(awk -v c="\"__CURSOR\":\"$after\"" 'index($0, c) { n = NR + 1 } END { print n ? n : 1 }' "$FAKE_JOURNAL")
elif [ -n "$lines" ] && [ "$lines" != all ]; then
  total=$(wc -l < "$FAKE_JOURNAL")
  start=$((total - lines + 1))
  [ "$start" -lt 1 ] && start=1
fi
if [ "$follow" = 1 ]; then
  printf '%s\n' "$$" >> "$FAKE_JOURNAL.pids"
  exec tail -n "+$start" -f "$FAKE_JOURNAL"
fi
exec tail -n "+$start" "$FAKE_JOURNAL"
"#;

/// A temp folder with a fake journalctl, its journal file and a config.
struct FakeJournal {
    setup: Setup,
}

impl FakeJournal {
    fn new() -> FakeJournal {
        use std::os::unix::fs::PermissionsExt;
        let setup = Setup::new();
        std::fs::create_dir(setup.path("bin")).unwrap();
        let program = setup.path("bin/journalctl");
        std::fs::write(&program, FAKE_JOURNALCTL).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(setup.path("journal.json"), "").unwrap();
        FakeJournal { setup }
    }

    fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut path = OsString::from(self.setup.path("bin"));
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        vec![
            ("PATH", path),
            ("FAKE_JOURNAL", self.setup.path("journal.json").into()),
        ]
    }

    fn start_agent(&self, config: &Path, extra: &[(&'static str, OsString)]) -> Agent {
        let mut env = self.env();
        env.extend(extra.iter().cloned());
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        Agent::start_with_env(config, &[], &env)
    }

    /// Appends entries in one write each, as journald makes them visible.
    fn append(&self, entries: &[String]) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.setup.path("journal.json"))
            .unwrap();
        for entry in entries {
            file.write_all(format!("{entry}\n").as_bytes()).unwrap();
        }
    }

    /// The arguments of every journalctl run so far, one string per run.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.setup.path("journal.json.args"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn follower_pids(&self) -> Vec<String> {
        std::fs::read_to_string(self.setup.path("journal.json.pids"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A journald input `journal` over the shipped rules, posting to `url`.
    fn config(&self, url: &str, input: &str) -> PathBuf {
        self.setup.write_config(&format!(
            "[agent]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\
             [rules]\npaths = [\"{SHIPPED_RULES}\"]\n\
             [[input]]\nname = \"journal\"\ntype = \"journald\"\nunits = [\"ssh.service\"]\n\
             identifiers = [\"sudo\"]\n{input}\n\
             [webhook.soc]\nurl = \"{url}\"\nbatch_timeout = \"20ms\"\n"
        ))
    }
}

/// An sshd entry as journalctl writes it; `seq` makes its cursor, time and
/// user name.
fn sshd_entry(seq: usize) -> String {
    let realtime = 1_795_341_601_000_000u64 + seq as u64 * 1000;
    serde_json::json!({
        "__CURSOR": format!("s=feedc0de;i={seq:x};b=b007;m={seq:x};t={realtime:x};x={:x}", seq * 7919),
        "__REALTIME_TIMESTAMP": realtime.to_string(),
        "__MONOTONIC_TIMESTAMP": (seq * 1000).to_string(),
        "__SEQNUM": seq.to_string(),
        "_BOOT_ID": "b007",
        "_HOSTNAME": "web1",
        "_TRANSPORT": "syslog",
        "_SYSTEMD_UNIT": "ssh.service",
        "_PID": (2000 + seq % 1000).to_string(),
        "_COMM": "sshd",
        "SYSLOG_IDENTIFIER": "sshd",
        "PRIORITY": "6",
        "MESSAGE": format!("Failed password for user{seq} from 192.0.2.{} port {} ssh2", seq % 250 + 1, 10_000 + seq),
    })
    .to_string()
}

/// `seq` of each event from [`sshd_entry`], from its user name.
fn seqs(events: &[serde_json::Value]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| e["fields"]["user.name"].as_str()?.strip_prefix("user"))
        .map(|s| s.parse().unwrap())
        .collect()
}

fn recorded() -> Vec<String> {
    std::fs::read_to_string(FIXTURE)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The command exited with `code` and its stderr says `needle`.
fn assert_fails_saying(out: &std::process::Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

fn cursor_of(entry: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(entry).unwrap();
    value["__CURSOR"].as_str().unwrap().to_string()
}

#[test]
fn entries_reach_the_webhook_as_syslog_lines_with_journal_time_and_fields() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let journal = FakeJournal::new();
    journal.append(&recorded());
    let config = journal.config(&receiver.url, "start_at = \"beginning\"");
    let mut agent = journal.start_agent(&config, &[]);

    let events = receiver.wait_for_events(6, DEADLINE);
    let rules: Vec<&str> = events.iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        [
            "sshd.auth_failed",
            "sshd.invalid_user",
            "sudo.command",
            "sudo.pam_auth_failed",
            "sshd.invalid_user",
            "sshd.auth_failed"
        ],
        "{events:#?}"
    );
    let first = &events[0];
    assert_eq!(first["time"], "2026-11-22T10:00:01.000000Z");
    assert_eq!(
        first["message"],
        "2026-11-22T10:00:01.000000Z web1 sshd[811]: Failed password for root from 203.0.113.7 port 52144 ssh2"
    );
    assert_eq!(first["log"]["file"], "journald");
    assert_eq!(first["log"]["cursor"], cursor_of(&recorded()[0]).as_str());
    assert_eq!(first["fields"]["systemd.unit"], "ssh.service");
    assert_eq!(first["fields"]["host.hostname"], "web1");
    assert_eq!(first["fields"]["process.pid"], 811);
    assert_eq!(first["fields"]["source.ip"], "203.0.113.7");
    assert_eq!(events[2]["fields"]["systemd.unit"], "session-3.scope");
    // The Latin-1 user name arrives decoded lossily, and says so.
    assert_eq!(events[4]["fields"]["user.name"], "\u{fffd}t\u{fffd}");
    assert_eq!(events[4]["fields"]["journald.message_lossy"], true);

    let runs = journal.runs();
    assert_eq!(
        runs,
        ["--follow --output=json --all --no-pager --lines=all _SYSTEMD_UNIT=ssh.service + SYSLOG_IDENTIFIER=sudo"]
    );
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    // The multi-line message posing as sshd made no event.
    assert_eq!(receiver.events().len(), 6);

    // status shows how far the journal is committed: through the last entry.
    let status = |json: bool| {
        let out = Command::new(binary())
            .args(["status", "-c"])
            .arg(&config)
            .args(json.then_some("--json"))
            .envs(journal.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(report["inputs"][0]["journald"], true);
    assert_eq!(
        report["inputs"][0]["journal_cursor"],
        cursor_of(recorded().last().unwrap()).as_str()
    );
    let table = status(false);
    assert!(
        table.contains("journald, through the entry of 2026-11-22T10:00:09.000000Z"),
        "{table}"
    );

    // Written while stopped: read after the committed cursor, nothing again.
    journal.append(&[sshd_entry(1), sshd_entry(2)]);
    let _agent = journal.start_agent(&config, &[]);
    let events = receiver.wait_for_events(8, DEADLINE);
    assert_eq!(seqs(&events[6..]), [1, 2]);
    let last_recorded = cursor_of(recorded().last().unwrap());
    assert!(
        journal.runs()[1].contains(&format!("--after-cursor={last_recorded}")),
        "{:?}",
        journal.runs()
    );
}

#[test]
fn the_first_start_begins_at_the_journal_end_and_remembers_it_at_once() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let journal = FakeJournal::new();
    journal.append(&recorded());
    let config = journal.config(&receiver.url, "");
    let mut agent = journal.start_agent(&config, &[]);
    agent.wait_for_log("following the journal", DEADLINE);
    let last_recorded = cursor_of(recorded().last().unwrap());
    // The fake journalctl writes its arguments down as it starts, which may
    // be after the agent logged that it follows it.
    wait_until(DEADLINE, "journalctl's second run", || {
        journal.runs().len() >= 2
    });
    let runs = journal.runs();
    assert!(runs[0].starts_with("--lines=1 --output=json"), "{runs:?}");
    assert!(
        runs[1].contains(&format!("--after-cursor={last_recorded}")),
        "{runs:?}"
    );
    // Killed before any new entry: the restart must not be another "first
    // start" that skips what is written meanwhile.
    let checkpoints =
        std::fs::read_to_string(journal.setup.path("state/checkpoints.json")).unwrap();
    assert!(checkpoints.contains(&last_recorded), "{checkpoints}");
    agent.signal("KILL");
    agent.wait_exit(DEADLINE);
    journal.append(&[sshd_entry(1)]);
    let agent = journal.start_agent(&config, &[]);
    journal.append(&[sshd_entry(2)]);
    let events = receiver.wait_for_events(2, DEADLINE);
    assert_eq!(seqs(&events), [1, 2], "history stays unsent");
    drop(agent);
}

#[test]
fn sigkill_during_a_load_loses_no_entry_and_repeats_none_with_another_id() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let journal = FakeJournal::new();
    let config = journal.config(&receiver.url, "start_at = \"beginning\"");
    let total = 2_000;
    let mut agent = journal.start_agent(&config, &[]);
    agent.wait_for_log("following the journal", DEADLINE);
    let writer = {
        let path = journal.setup.path("journal.json");
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            for seq in 1..=total {
                file.write_all(format!("{}\n", sshd_entry(seq)).as_bytes())
                    .unwrap();
                if seq % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let distinct = |receiver: &Receiver| {
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        for seq in seqs(&receiver.events()) {
            *counts.entry(seq).or_default() += 1;
        }
        counts
    };
    let checkpoints = journal.setup.path("state/checkpoints.json");
    for round in 1..=3 {
        let target = round * total / 5;
        wait_until(DEADLINE, &format!("{target} distinct events"), || {
            distinct(&receiver).len() >= target
        });
        if round == 1 {
            // At least one restart must resume after a committed cursor: a
            // fast agent can deliver a fifth of the load before its first
            // checkpoint write.
            wait_until(DEADLINE, "a cursor in the checkpoints", || {
                std::fs::read_to_string(&checkpoints).is_ok_and(|c| c.contains("s=feedc0de;"))
            });
        }
        agent.signal("KILL");
        agent.wait_exit(DEADLINE);
        agent = journal.start_agent(&config, &[]);
    }
    writer.join().unwrap();
    wait_until(DEADLINE, "every entry delivered", || {
        distinct(&receiver).len() >= total
    });
    let counts = distinct(&receiver);
    let missing: Vec<usize> = (1..=total).filter(|s| !counts.contains_key(s)).collect();
    assert!(missing.is_empty(), "lost entries: {missing:?}");
    let repeated: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "{total} entries, 3 SIGKILLs: {repeated} events re-sent (batches in flight at the kills)"
    );
    let mut ids: BTreeMap<usize, String> = BTreeMap::new();
    for event in receiver.events() {
        let seq = seqs(std::slice::from_ref(&event))[0];
        let id = event["id"].as_str().unwrap().to_string();
        assert_eq!(
            ids.entry(seq).or_insert_with(|| id.clone()),
            &id,
            "entry {seq} re-sent with another id"
        );
    }
    // Restarts resumed after a committed cursor (or from the beginning
    // when killed before the first commit), never from the end.
    let runs = journal.runs();
    assert!(
        runs.iter()
            .all(|r| r.contains("--after-cursor=s=feedc0de;") || r.contains("--lines=all")),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r.contains("--after-cursor=")),
        "{runs:?}"
    );
    drop(agent);
}

#[test]
fn a_journalctl_that_exits_is_restarted_after_the_last_entry_read() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let journal = FakeJournal::new();
    let config = journal.config(&receiver.url, "start_at = \"beginning\"");
    let hint = "Hint: You are currently not seeing messages from other users and the system.\n      Users in groups 'adm', 'systemd-journal' can see all messages.";
    let agent = journal.start_agent(&config, &[("FAKE_JOURNAL_STDERR", hint.into())]);
    journal.append(&[sshd_entry(1)]);
    receiver.wait_for_events(1, DEADLINE);
    agent.wait_for_log(
        "cannot read the system journal, only this user's: add the agent's user to the `systemd-journal` or `adm` group",
        DEADLINE,
    );
    assert!(
        agent.logs().contains("input=journal") || agent.logs().contains("input=\"journal\""),
        "{}",
        agent.logs()
    );

    let pid = journal.follower_pids()[0].clone();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    agent.wait_for_log(
        "journalctl exited (signal: 9 (SIGKILL)); will retry",
        DEADLINE,
    );
    wait_until(DEADLINE, "journalctl restarted", || {
        journal.follower_pids().len() == 2
    });
    journal.append(&[sshd_entry(2)]);
    let events = receiver.wait_for_events(2, DEADLINE);
    assert_eq!(seqs(&events), [1, 2]);
    let runs = journal.runs();
    assert!(
        runs[1].contains(&format!("--after-cursor={}", cursor_of(&sshd_entry(1)))),
        "{runs:?}"
    );
}

#[test]
fn a_missing_journalctl_is_a_clear_error_for_check_and_run() {
    let journal = FakeJournal::new();
    let config = journal.config("-", "");
    let empty = journal.setup.path("empty");
    std::fs::create_dir(&empty).unwrap();
    for (command, code) in [("check", 1), ("run", 78)] {
        let out = Command::new(binary())
            .args([command, "-c"])
            .arg(&config)
            .env("PATH", &empty)
            .output()
            .unwrap();
        // run: 78 (EX_CONFIG), so the unit does not restart into the same error.
        assert_fails_saying(
            &out,
            code,
            "input `journal`: journalctl not found on PATH; install systemd or use a file input",
        );
    }
}

#[test]
fn test_rules_and_check_read_recorded_entries() {
    let out = Command::new(binary())
        .args([
            "test-rules",
            "--json",
            "--rules",
            SHIPPED_RULES,
            "--journal-json",
            FIXTURE,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let matches: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: Vec<(u64, &str)> = matches
        .iter()
        .map(|m| (m["line"].as_u64().unwrap(), m["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "sshd.auth_failed"),
            (2, "sshd.invalid_user"),
            (3, "sudo.command"),
            (4, "sudo.pam_auth_failed"),
            (7, "sshd.invalid_user"),
            (8, "sshd.auth_failed"),
            (10, "firewall.scan")
        ]
    );
    assert_eq!(matches[2]["event"]["time"], "2026-11-22T10:00:03.000001Z");
    assert_eq!(matches[2]["fields"]["user.name"], "deploy");
    assert_eq!(matches[2]["event"]["fields"]["log.syslog.appname"], "sudo");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("Lines: 9 read, 7 matched"), "{summary}");
    assert!(
        summary.contains("Journal entries without MESSAGE (skipped): 1"),
        "{summary}"
    );

    let journal = FakeJournal::new();
    let config = journal.config("-", "");
    let check = |file: &str| {
        Command::new(binary())
            .args(["check", "-c"])
            .arg(&config)
            .args(["--journal-json", file])
            .env("PATH", &journal.env()[0].1)
            .output()
            .unwrap()
    };
    let out = check(FIXTURE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("input `journal`: 9 entries (1 without MESSAGE skipped), 7 matched: firewall.scan 1, sshd.auth_failed 2, sshd.invalid_user 2, sudo.command 1, sudo.pam_auth_failed 1"),
        "{stdout}"
    );
    let bad = journal.setup.path("bad.json");
    std::fs::write(&bad, format!("{}\n-- No entries --\n", recorded()[0])).unwrap();
    assert_fails_saying(
        &check(bad.to_str().unwrap()),
        1,
        "bad.json:2: not a journal entry",
    );
}

/// Through the machine's own journal, where there is one this user may read
/// and write to (`systemd-cat`), else through a private journald: an entry
/// logged under an identifier of its own before the agent starts reaches the
/// webhook through the real journalctl.
#[test]
fn a_real_journal_entry_reaches_the_webhook() {
    let identifier = format!("tailhook-test-{}", std::process::id());
    let message = "seq=7 Failed password";
    let machine_journal_readable = Command::new("journalctl")
        .args(["--lines=1", "--output=json", "--quiet", "--no-pager"])
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty());
    let logged_to_machine_journal = machine_journal_readable
        && Command::new("sh")
            .args([
                "-c",
                &format!("echo '{message}' | systemd-cat -t {identifier}"),
            ])
            .output()
            .is_ok_and(|out| out.status.success());
    let private = if logged_to_machine_journal {
        None
    } else {
        let Some(journald) = PrivateJournald::start() else {
            return;
        };
        journald.log(&identifier, "info", message);
        Some(journald)
    };
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::write(
        setup.path("rules/journal.toml"),
        r#"
[[rule]]
id = "test.journal"
regex = '{syslog}tailhook-test-\d+\[\d+\]: seq=(?P<event.sequence>\d+) Failed password$'
types = { "event.sequence" = "int" }
"#,
    )
    .unwrap();
    // From the beginning: the entry was written before the agent started,
    // and only this test's identifier is read.
    let config = setup.write_config(&format!(
        "[agent]\nstate_dir = \"state\"\n[rules]\npaths = [\"rules\"]\n\
         [[input]]\nname = \"journal\"\ntype = \"journald\"\nidentifiers = [\"{identifier}\"]\n\
         start_at = \"beginning\"\nrules = [\"test.journal\"]\n\
         [webhook.soc]\nurl = \"{}\"\nbatch_timeout = \"20ms\"\n",
        receiver.url
    ));
    let _agent = match &private {
        Some(journald) => journald.agent(&config),
        None => Agent::start(&config),
    };
    let events = receiver.wait_for_events(1, DEADLINE);
    assert_eq!(events[0]["fields"]["event.sequence"], 7);
    assert!(events[0]["log"]["cursor"].is_string());
}

#[test]
fn a_cursor_journalctl_refuses_is_reported_and_reading_goes_on_from_the_end() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let journal = FakeJournal::new();
    journal.append(&recorded());
    std::fs::create_dir(journal.setup.path("state")).unwrap();
    std::fs::write(
        journal.setup.path("state/checkpoints.json"),
        r#"{"version": "1", "files": [], "journals": [{"input": "journal", "cursor": "garbage"}]}"#,
    )
    .unwrap();
    let config = journal.config(&receiver.url, "");
    let agent = journal.start_agent(&config, &[]);
    agent.wait_for_log(
        "refused the saved cursor; reading on from the journal's current end",
        DEADLINE,
    );
    wait_until(DEADLINE, "journalctl following again", || {
        journal.follower_pids().len() == 1
    });
    journal.append(&[sshd_entry(1)]);
    let events = receiver.wait_for_events(1, DEADLINE);
    assert_eq!(seqs(&events), [1], "the recorded history stays unsent");
    let runs = journal.runs();
    assert!(runs[0].contains("--after-cursor=garbage"), "{runs:?}");
    assert!(runs[1].starts_with("--lines=1 "), "{runs:?}");
}

/// A systemd-journald of the test's own, in a private mount namespace with
/// tmpfs over `/run` and `/var/log/journal`, so nothing of it is seen
/// outside. Needs root (mount), util-linux's `unshare` and `nsenter`,
/// `systemd-cat` and the journald binary; `None` where any is missing (see
/// [`missing_prerequisite`]).
struct PrivateJournald {
    unshare: std::process::Child,
}

impl PrivateJournald {
    fn start() -> Option<PrivateJournald> {
        let skip = |why: &str| {
            missing_prerequisite(&format!("no private journald: {why}"));
            None
        };
        let Some(journald) = [
            "/lib/systemd/systemd-journald",
            "/usr/lib/systemd/systemd-journald",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists()) else {
            return skip("no systemd-journald binary");
        };
        let script = format!(
            "set -e; mount -t tmpfs tailhook-test /run; \
             if [ -d /var/log/journal ]; then mount -t tmpfs tailhook-test /var/log/journal; fi; \
             mkdir -p /run/systemd/journal; exec {journald}"
        );
        let Ok(unshare) = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--fork",
                "--kill-child",
            ])
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            return skip("no unshare");
        };
        let mut journal = PrivateJournald { unshare };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !journal.run("test -S /run/systemd/journal/stdout") {
            let gone = journal.unshare.try_wait().is_ok_and(|s| s.is_some());
            if gone || std::time::Instant::now() > deadline {
                return skip("journald did not start (not root, or no mount namespaces)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !journal.run("command -v systemd-cat >/dev/null") {
            return skip("no systemd-cat");
        }
        Some(journal)
    }

    /// Runs a shell command inside the namespace.
    fn run(&self, command: &str) -> bool {
        Command::new("nsenter")
            .args([
                "-t",
                &self.unshare.id().to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                command,
            ])
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// Logs `message` with this syslog identifier and priority.
    fn log(&self, identifier: &str, priority: &str, message: &str) {
        assert!(self.run(&format!(
            "echo '{message}' | systemd-cat -t {identifier} -p {priority}"
        )));
    }

    fn agent(&self, config: &Path) -> Agent {
        let pid = self.unshare.id().to_string();
        Agent::start_wrapped(config, &["nsenter", "-t", &pid, "-m", "--"])
    }
}

impl Drop for PrivateJournald {
    fn drop(&mut self) {
        // --kill-child takes journald with it.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The real journalctl against a real journald: the filters select what
/// journalctl's match semantics say, the first start skips history, and a
/// `kill -9` resumes after the committed cursor.
#[test]
fn a_private_journald_is_read_through_the_real_journalctl() {
    let Some(journald) = PrivateJournald::start() else {
        return;
    };
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = setup.write_config(&format!(
        "[agent]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\
         [rules]\npaths = [\"{SHIPPED_RULES}\"]\n\
         [[input]]\nname = \"journal\"\ntype = \"journald\"\nidentifiers = [\"sshd\"]\n\
         matches = [\"SYSLOG_IDENTIFIER=sudo\", \"PRIORITY=5\"]\n\
         [webhook.soc]\nurl = \"{}\"\nbatch_timeout = \"20ms\"\n",
        receiver.url
    ));
    journald.log(
        "sshd",
        "info",
        "Failed password for old from 192.0.2.1 port 1 ssh2",
    );
    let mut agent = journald.agent(&config);
    agent.wait_for_log("following the journal", DEADLINE);
    journald.log(
        "sshd",
        "info",
        "Failed password for root from 203.0.113.7 port 52144 ssh2",
    );
    journald.log(
        "sudo",
        "notice",
        "  deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/id",
    );
    // Not read: sudo at another priority, another identifier.
    journald.log(
        "sudo",
        "info",
        "  eve : TTY=pts/1 ; PWD=/home/eve ; USER=root ; COMMAND=/usr/bin/id",
    );
    journald.log(
        "other",
        "info",
        "Failed password for other from 192.0.2.2 port 2 sshd",
    );
    journald.log(
        "sshd",
        "info",
        "Invalid user first from 203.0.113.50 port 33410",
    );
    let events = receiver.wait_for_events(3, DEADLINE);
    let seen = |events: &[serde_json::Value]| -> Vec<String> {
        let mut seen: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["rule"].as_str().unwrap(),
                    e["fields"]["user.name"].as_str().unwrap()
                )
            })
            .collect();
        // journald takes each systemd-cat stream as it comes: order may vary.
        seen.sort();
        seen
    };
    assert_eq!(
        seen(&events),
        [
            "sshd.auth_failed root",
            "sshd.invalid_user first",
            "sudo.command deploy"
        ]
    );
    assert!(events[0]["log"]["cursor"]
        .as_str()
        .unwrap()
        .starts_with("s="));
    assert_eq!(events[0]["fields"]["log.syslog.appname"], "sshd");

    agent.signal("KILL");
    agent.wait_exit(DEADLINE);
    journald.log(
        "sshd",
        "info",
        "Invalid user second from 203.0.113.51 port 33411",
    );
    let agent = journald.agent(&config);
    agent.wait_for_log("following the journal input=journal after=\"s=", DEADLINE);
    // Counting events is not enough: a batch in flight at the kill may come
    // again before the new entry does.
    wait_until(
        DEADLINE,
        "the entry logged while the agent was down",
        || {
            receiver
                .events()
                .iter()
                .any(|e| e["fields"]["user.name"] == "second")
        },
    );
    let events = receiver.events();
    // Only batches in flight at the kill may come twice, with the same id.
    let mut ids = std::collections::HashMap::new();
    for event in &events {
        let id = event["id"].as_str().unwrap();
        assert_eq!(
            ids.entry(seen(std::slice::from_ref(event))[0].clone())
                .or_insert(id),
            &id
        );
    }
    let mut distinct: Vec<String> = ids.into_keys().collect();
    distinct.sort();
    assert_eq!(
        distinct,
        [
            "sshd.auth_failed root",
            "sshd.invalid_user first",
            "sshd.invalid_user second",
            "sudo.command deploy"
        ]
    );
}
