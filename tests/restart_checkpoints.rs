//! Checkpoints across restarts: a stopped agent resumes where it committed
//! (never from the end), and one killed with SIGKILL during a write load loses
//! no line; only batches in flight at the kill are sent twice.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn config(setup: &Setup, url: &str) -> std::path::PathBuf {
    config_with_input(setup, url, "")
}

/// [`config`] with `input` keys.
fn config_with_input(setup: &Setup, url: &str, input: &str) -> std::path::PathBuf {
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"",
        input,
        webhook: "batch_timeout = \"20ms\"",
    };
    setup.agent_config(url, keys)
}

/// How often each sequence number arrived.
fn counts(receiver: &Receiver) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for seq in sequences(&receiver.events()) {
        *counts.entry(seq).or_default() += 1;
    }
    counts
}

/// Waits until lines 1 to `total` have all arrived, failing on any lost;
/// how many arrived more than once.
fn every_line_arrives(receiver: &Receiver, total: usize) -> usize {
    wait_until(DEADLINE, "every line delivered", || {
        counts(receiver).len() >= total
    });
    let counts = counts(receiver);
    let missing: Vec<usize> = (1..=total)
        .filter(|s| !counts.contains_key(&(*s as i64)))
        .collect();
    assert!(missing.is_empty(), "lost lines: {missing:?}");
    counts.values().map(|c| c - 1).sum()
}

#[test]
fn a_restart_resumes_from_the_checkpoint_not_the_end() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(&setup, &receiver.url);
    setup.append("auth.log", &[failed_line(1)]);

    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    setup.append("auth.log", &[failed_line(2), failed_line(3)]);
    receiver.wait_for_events(2, DEADLINE);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    // Written while the agent is down: must arrive after the restart.
    setup.append("auth.log", &[noise_line(4), failed_line(5), failed_line(6)]);
    let _agent = Agent::start(&config);
    receiver.wait_for_events(4, DEADLINE);
    let seen: Vec<(i64, usize)> = counts(&receiver).into_iter().collect();
    // Line 1 predates the first start (start_at = "end"); nothing is repeated.
    assert_eq!(seen, vec![(2, 1), (3, 1), (5, 1), (6, 1)]);
}

#[test]
fn sigkill_during_a_write_load_loses_no_line() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(&setup, &receiver.url);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let total = 3_000;
    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);

    let writer = {
        let log = setup.path("auth.log");
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
            for seq in 1..=total {
                writeln!(file, "{}", failed_line(seq)).unwrap();
                if seq % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    // Kill at three points of the load, each time once some progress is seen.
    for round in 1..=3 {
        let target = round * total / 5;
        wait_until(DEADLINE, &format!("{target} distinct events"), || {
            counts(&receiver).len() >= target
        });
        agent.signal("KILL");
        agent.wait_exit(DEADLINE);
        agent = Agent::start(&config);
    }
    writer.join().unwrap();
    let repeated = every_line_arrives(&receiver, total);
    eprintln!(
        "{total} lines, 3 SIGKILLs: {repeated} events re-sent (batches in flight at the kills)"
    );
    // A re-sent event is the same event: same id, so a receiver can drop it.
    let mut ids: BTreeMap<i64, String> = BTreeMap::new();
    for event in receiver.events() {
        let seq = event["fields"]["event.sequence"].as_i64().unwrap();
        let id = event["id"].as_str().unwrap().to_string();
        assert_eq!(
            ids.entry(seq).or_insert_with(|| id.clone()),
            &id,
            "line {seq} re-sent with another id"
        );
    }
    drop(agent);
}

/// A backlog is read a megabyte at a time, and a megabyte of matching
/// lines goes to the rule-events thread in parts; the chunk's offset may
/// commit only with its last part's events. Killed while it works through
/// them, the agent loses no line.
#[test]
fn sigkill_while_a_backlog_is_matched_in_parts_loses_no_line() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config_with_input(&setup, &receiver.url, "start_at = \"beginning\"");
    // About 2.7 MB: three chunks, each of about sixteen parts.
    let total = 30_000;
    let backlog: String = (1..=total).map(|seq| failed_line(seq) + "\n").collect();
    std::fs::write(setup.path("auth.log"), backlog).unwrap();

    let mut agent = Agent::start(&config);
    wait_until(DEADLINE, "the first events", || {
        !receiver.requests().is_empty()
    });
    agent.signal("KILL");
    agent.wait_exit(DEADLINE);
    let at_kill = counts(&receiver).len();
    assert!(
        at_kill < total,
        "all {total} lines were sent before the kill"
    );

    let _agent = Agent::start(&config);
    let repeated = every_line_arrives(&receiver, total);
    eprintln!("{total} lines, {at_kill} delivered at the SIGKILL, {repeated} re-sent after it");
}

#[test]
fn a_file_rotated_while_stopped_is_finished_from_its_checkpoint() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    // Only auth.log matches: auth.log.1 is found again through the checkpoint.
    let config = config(&setup, &receiver.url);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    setup.append("auth.log", &[failed_line(1)]);
    receiver.wait_for_events(1, DEADLINE);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    // While stopped: more lines, then logrotate's rename + create, then more.
    setup.append("auth.log", &[failed_line(2), failed_line(3)]);
    std::fs::rename(setup.path("auth.log"), setup.path("auth.log.1")).unwrap();
    setup.append("auth.log", &[failed_line(4)]);
    let agent = Agent::start(&config);
    let events = receiver.wait_for_events(4, DEADLINE);
    let mut seen = sequences(&events);
    seen.sort();
    assert_eq!(seen, vec![1, 2, 3, 4]);
    agent.wait_for_log("finishing a rotated file from its checkpoint", DEADLINE);
}

#[test]
fn a_file_renamed_while_running_is_read_to_its_end_under_its_new_name() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(&setup, &receiver.url);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    // A daemon keeps writing to its open handle after the rename (until
    // logrotate signals it); those lines must arrive too.
    let mut old = std::fs::OpenOptions::new()
        .append(true)
        .open(setup.path("auth.log"))
        .unwrap();
    std::fs::rename(setup.path("auth.log"), setup.path("auth.log.1")).unwrap();
    agent.wait_for_log("renamed_to", DEADLINE);
    use std::io::Write;
    writeln!(old, "{}", failed_line(1)).unwrap();
    setup.append("auth.log", &[failed_line(2)]);
    let events = receiver.wait_for_events(2, DEADLINE);
    let by_seq: BTreeMap<i64, String> = events
        .iter()
        .map(|e| {
            (
                e["fields"]["event.sequence"].as_i64().unwrap(),
                e["log"]["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(by_seq[&1].ends_with("auth.log.1"), "{by_seq:?}");
    assert!(by_seq[&2].ends_with("auth.log"), "{by_seq:?}");
}

#[test]
fn unreadable_checkpoints_stop_start_up_instead_of_starting_over() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(&setup, &receiver.url);
    setup.append("auth.log", &[failed_line(1)]);
    // A fault root cannot bypass (unlike chmod 000): reading gives EISDIR.
    let checkpoints = setup.path("state/checkpoints.json");
    std::fs::create_dir_all(&checkpoints).unwrap();
    std::fs::write(checkpoints.join("keep"), "x").unwrap();

    let mut agent = Agent::start(&config);
    assert_eq!(agent.wait_exit(DEADLINE), Some(1), "{}", agent.logs());
    // The error names the file (the log reader may still be catching up).
    agent.wait_for_log("checkpoints.json: cannot read checkpoints", DEADLINE);
    assert!(
        !setup.path("state/checkpoints.json.corrupt").exists(),
        "an unreadable file is not proven corrupt and is not set aside"
    );
    assert!(checkpoints.join("keep").exists(), "nothing was overwritten");
    assert!(receiver.events().is_empty());
}

/// The queue keeps how far each file is queued per webhook name: adding a
/// webhook (which sorts before the others) neither re-sends to the old one
/// what it got, nor hides from the new one what it never got, when lines
/// are read again.
#[test]
fn adding_a_webhook_neither_resends_nor_drops_on_a_reread() {
    let old = Receiver::start(ReceiverOptions::default());
    let new = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = |webhooks: &str| {
        setup.write_config(&format!(
            "[agent]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n[rules]\npaths = [\"rules\"]\n\
             [[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nstart_at = \"beginning\"\n{webhooks}"
        ))
    };
    let soc = format!(
        "[webhook.soc]\nurl = \"{}\"\nbatch_timeout = \"20ms\"\n",
        old.url
    );
    setup.append("auth.log", &(1..=5).map(failed_line).collect::<Vec<_>>());
    let mut agent = Agent::start(&config(&soc));
    old.wait_for_events(5, DEADLINE);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    // As after a crash before the checkpoint was written: read it all again.
    std::fs::remove_file(setup.path("state/checkpoints.json")).unwrap();
    let aaa = format!(
        "[webhook.aaa]\nurl = \"{}\"\nbatch_timeout = \"20ms\"\n",
        new.url
    );
    let _agent = Agent::start(&config(&format!("{aaa}{soc}")));
    setup.append("auth.log", &[failed_line(6)]);
    // Each lane is in order: once line 6 arrives, a re-sent 1..5 would have.
    wait_until(DEADLINE, "line 6 at the old webhook", || {
        sequences(&old.events()).contains(&6)
    });
    assert_eq!(sequences(&old.events()), vec![1, 2, 3, 4, 5, 6]);
    let events = new.wait_for_events(6, DEADLINE);
    assert_eq!(sequences(&events), vec![1, 2, 3, 4, 5, 6]);
}

/// Files are known by inode, not path: lines read again after a SIGKILL
/// from a file that was rotated meanwhile keep their ids and lie below where
/// the queue has that file queued up to, so it skips them instead of
/// sending them twice.
#[test]
fn lines_read_again_after_sigkill_and_a_rotation_are_not_sent_twice() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(&setup, &receiver.url);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    setup.append("auth.log", &[failed_line(1)]);
    receiver.wait_for_events(1, DEADLINE);
    let checkpoints = setup.path("state/checkpoints.json");
    wait_until(DEADLINE, "line 1 committed", || {
        committed_offset(&checkpoints) > 0
    });
    let early = std::fs::read(&checkpoints).unwrap();
    setup.append("auth.log", &(2..=5).map(failed_line).collect::<Vec<_>>());
    receiver.wait_for_events(5, DEADLINE);
    // Out of the queue too: a batch killed between its answer and its
    // removal comes again (at least once), which is not what this tests.
    wait_until(DEADLINE, "lines 2..5 removed from the queue", || {
        status_json(&config)["webhooks"][0]["queued_events"] == 0
    });
    agent.signal("KILL");
    agent.wait_exit(DEADLINE);

    // Stopped: rotated, and the checkpoint is from before lines 2..5.
    std::fs::rename(setup.path("auth.log"), setup.path("auth.log.1")).unwrap();
    std::fs::write(setup.path("auth.log"), "").unwrap();
    std::fs::write(&checkpoints, early).unwrap();
    let size = std::fs::metadata(setup.path("auth.log.1")).unwrap().len();
    let _agent = Agent::start(&config);
    wait_until(DEADLINE, "the rotated file read again to its end", || {
        committed_offset(&checkpoints) == size
    });
    // Queued after whatever the re-read queued: once it arrives, a
    // duplicate would have.
    setup.append("auth.log", &[failed_line(6)]);
    wait_until(DEADLINE, "line 6", || {
        sequences(&receiver.events()).contains(&6)
    });
    assert_eq!(sequences(&receiver.events()), vec![1, 2, 3, 4, 5, 6]);
}

/// The largest committed offset in `checkpoints.json` (0 when unreadable).
fn committed_offset(checkpoints: &std::path::Path) -> u64 {
    std::fs::read_to_string(checkpoints)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|stored| {
            stored["files"]
                .as_array()?
                .iter()
                .filter_map(|f| f["offset"].as_u64())
                .max()
        })
        .unwrap_or(0)
}
