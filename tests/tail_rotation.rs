//! Log rotation under a steady write load loses and repeats nothing: every
//! sequence number written reaches the receiver exactly once, whether the log
//! is rotated by rename + create (logrotate `create`, several times in quick
//! succession), by `copytruncate`, or deleted and recreated.
//!
//! The input matches `auth.log` only: a renamed file must be read to its end
//! through the handle the agent holds, not found again by a glob.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn start(setup: &Setup, receiver: &Receiver, agent_keys: &str) -> Agent {
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let agent_keys = if agent_keys.contains("poll_interval") {
        agent_keys.to_string()
    } else {
        format!("poll_interval = \"200ms\"\n{agent_keys}")
    };
    let agent_keys = format!("{agent_keys}\nmetrics_listen = \"127.0.0.1:0\"");
    let keys = ConfigKeys {
        agent: &agent_keys,
        input: "",
        webhook: "batch_timeout = \"50ms\"",
    };
    let config = setup.agent_config(&receiver.url, keys);
    let agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    agent
}

/// Appends `failed_line(seq)` for `seq` in `from..=to`, reopening the file by
/// path every few lines like a daemon that reopens after a HUP, so lines go
/// to the old file until the reopen. `written` counts progress for the test.
fn write_load(
    setup: &Setup,
    from: usize,
    to: usize,
    written: Arc<AtomicUsize>,
) -> thread::JoinHandle<()> {
    let path = setup.path("auth.log");
    thread::spawn(move || {
        let mut seq = from;
        while seq <= to {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            for _ in 0..7 {
                if seq > to {
                    break;
                }
                writeln!(file, "{}", failed_line(seq)).unwrap();
                written.store(seq, Ordering::SeqCst);
                seq += 1;
            }
            thread::sleep(Duration::from_micros(300));
        }
    })
}

/// Every number in `1..=total` exactly once. A duplicate may trail the last
/// line, so the check waits for a sentinel line written after everything
/// arrived and then for the queue to be empty (whatever was queued before
/// the sentinel was sent before it), instead of for a fixed while.
fn assert_exactly_once(setup: &Setup, agent: &Agent, receiver: &Receiver, total: usize) {
    // On a timeout the comparison below says which numbers are missing.
    let deadline = std::time::Instant::now() + DEADLINE;
    while receiver.events().len() < total && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let sentinel = total + 1;
    setup.append("auth.log", &[failed_line(sentinel)]);
    wait_until(DEADLINE, "the sentinel line", || {
        sequences(&receiver.events()).contains(&(sentinel as i64))
    });
    let port = agent.metrics_port(DEADLINE);
    wait_until(DEADLINE, "an empty queue", || {
        http_get(port, "/metrics").is_some_and(|(_, metrics)| {
            sample(&metrics, "tailhook_events_queued_total{webhook=\"soc\"}")
                == sample(&metrics, "tailhook_events_sent_total{webhook=\"soc\"}")
        })
    });
    let mut seen = sequences(&receiver.events());
    seen.sort();
    let duplicates: Vec<i64> = seen
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let missing: Vec<i64> = (1..=sentinel as i64)
        .filter(|s| seen.binary_search(s).is_err())
        .collect();
    assert!(
        duplicates.is_empty() && missing.is_empty(),
        "duplicates {duplicates:?}, missing {missing:?}"
    );
}

fn wait_written(written: &AtomicUsize, at_least: usize) {
    wait_until(DEADLINE, &format!("{at_least} lines written"), || {
        written.load(Ordering::SeqCst) >= at_least
    });
}

#[test]
fn rename_and_create_three_times_in_quick_succession() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let agent = start(&setup, &receiver, "");
    let total = 4_000;
    let written = Arc::new(AtomicUsize::new(0));
    let writer = write_load(&setup, 1, total, written.clone());
    for round in 1..=3 {
        wait_written(&written, round * total / 4);
        // logrotate's shift: .1 → .2, then the live file → .1, then create.
        let _ = std::fs::rename(setup.path("auth.log.1"), setup.path("auth.log.2"));
        std::fs::rename(setup.path("auth.log"), setup.path("auth.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(setup.path("auth.log"))
            .unwrap();
    }
    writer.join().unwrap();
    assert_exactly_once(&setup, &agent, &receiver, total);
}

#[test]
/// A file deleted before anyone opened it is gone for every reader, so each
/// recreated file is left in place until the agent has opened it; the writer
/// keeps writing throughout.
fn delete_and_recreate_under_load() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let agent = start(&setup, &receiver, "");
    let total = 3_000;
    let written = Arc::new(AtomicUsize::new(0));
    let writer = write_load(&setup, 1, total, written.clone());
    for round in 1..=2 {
        wait_written(&written, round * total / 3);
        std::fs::remove_file(setup.path("auth.log")).unwrap();
        wait_until(DEADLINE, "the recreated file to be opened", || {
            agent.logs().matches("tailing file").count() > round
        });
    }
    writer.join().unwrap();
    assert_exactly_once(&setup, &agent, &receiver, total);
}

/// logrotate's copytruncate loses whatever is written between its copy and
/// its truncate, whoever tails the file; the writer pauses over that step.
/// Writing resumes at once, so with polling only the agent usually sees the
/// file already longer than where it stopped reading: only its first bytes
/// tell that it was truncated.
#[test]
fn copytruncate_with_the_file_refilled_before_the_agent_looks() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let agent = start(&setup, &receiver, "inotify = false");
    let rounds = 4;
    let per_round = 500;
    for round in 0..rounds {
        let (from, to) = (round * per_round + 1, (round + 1) * per_round);
        // Rounds 3 and 4 have the same size to the byte: the refilled file
        // may look exactly like the one the agent last saw, but for its
        // first bytes.
        let lines: Vec<String> = (from..=to).map(failed_line).collect();
        setup.append("auth.log", &lines);
        wait_until(DEADLINE, "the agent to catch up", || {
            receiver.events().len() >= to
        });
        std::fs::copy(setup.path("auth.log"), setup.path("auth.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(setup.path("auth.log"))
            .unwrap();
    }
    let last = rounds * per_round;
    setup.append(
        "auth.log",
        &((last + 1)..=(last + 2 * per_round))
            .map(failed_line)
            .collect::<Vec<_>>(),
    );
    assert_exactly_once(&setup, &agent, &receiver, last + 2 * per_round);
}

/// Two rotations between two looks: the middle file lived under `auth.log`
/// only while the agent was not looking, and now sits at `auth.log.1`, which
/// the input does not match. It is found next to the rotated file and read.
#[test]
fn a_file_rotated_away_before_the_agent_saw_it_is_still_read() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let agent = start(&setup, &receiver, "inotify = false\npoll_interval = \"3s\"");
    setup.append("auth.log", &(1..=10).map(failed_line).collect::<Vec<_>>());
    wait_until(DEADLINE, "the first lines", || {
        receiver.events().len() >= 10
    });

    let rotate = || {
        let _ = std::fs::rename(setup.path("auth.log.1"), setup.path("auth.log.2"));
        std::fs::rename(setup.path("auth.log"), setup.path("auth.log.1")).unwrap();
    };
    setup.append("auth.log", &(11..=20).map(failed_line).collect::<Vec<_>>());
    rotate();
    setup.append("auth.log", &(21..=30).map(failed_line).collect::<Vec<_>>());
    rotate();
    setup.append("auth.log", &(31..=40).map(failed_line).collect::<Vec<_>>());
    assert_exactly_once(&setup, &agent, &receiver, 40);
}

/// After copytruncate the same line may come again at the same offset (a
/// repeated failure right after rotation): it is a new line, with a new id,
/// and the queue's dedupe must not drop it.
#[test]
fn the_same_line_at_the_same_offset_after_copytruncate_is_a_new_event() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let agent = start(&setup, &receiver, "");
    setup.append("auth.log", &[failed_line(1)]);
    receiver.wait_for_events(1, DEADLINE);
    std::fs::copy(setup.path("auth.log"), setup.path("auth.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(setup.path("auth.log"))
        .unwrap();
    agent.wait_for_log("file was truncated", DEADLINE);
    setup.append("auth.log", &[failed_line(1)]);
    let events = receiver.wait_for_events(2, DEADLINE);
    assert_eq!(events[0]["log"]["offset"], events[1]["log"]["offset"]);
    assert_eq!(events[0]["message"], events[1]["message"]);
    assert_ne!(events[0]["id"], events[1]["id"]);
}
