//! The agent under faults of its state and its surroundings, with the real
//! binary: a full disk under `state_dir`, shutdown with a webhook down and
//! its lane full, a dead-letter file that cannot be written, `Retry-After`
//! far in the future, rate-limit usage across a restart, file modes under
//! any umask, and SIGHUP. Lines carry sequence numbers, so every test proves
//! that nothing was lost or sent twice.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// A config for one input (`auth.log`, read from its beginning) and one
/// webhook `soc` posting to `url`, fast enough for tests; `agent` and
/// `webhook` add TOML lines to those sections.
fn config(setup: &Setup, url: &str, agent: &str, webhook: &str) -> PathBuf {
    setup.write_config(&format!(
        r#"
[agent]
state_dir = "state"
poll_interval = "100ms"
{agent}
[rules]
paths = ["rules"]
[[input]]
name = "auth"
paths = ["auth.log"]
start_at = "beginning"
[webhook.soc]
url = "{url}"
batch_timeout = "50ms"
max_retry_delay = "300ms"
{webhook}
"#
    ))
}

fn lines(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(failed_line).collect()
}

/// Asserts that `events` are exactly the sequences `1..=last`, each once.
fn assert_each_once(events: &[serde_json::Value], last: i64) {
    let mut seen = sequences(events);
    seen.sort_unstable();
    assert_eq!(seen, (1..=last).collect::<Vec<_>>(), "every event, once");
}

#[test]
fn sighup_neither_ends_nor_disturbs_the_agent() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let mut agent = Agent::start(&config(&setup, &receiver.url, "", ""));
    agent.wait_for_log("tailhook running", DEADLINE);
    setup.append("auth.log", &lines(1..=10));
    receiver.wait_for_events(10, DEADLINE);

    agent.signal("HUP");
    // A reload of the unchanged config: the stream goes on, in order.
    agent.wait_for_log("reloaded: ", DEADLINE);
    assert!(agent.is_running(), "SIGHUP ended the agent");
    setup.append("auth.log", &lines(11..=20));
    let events = receiver.wait_for_events(20, DEADLINE);
    assert_eq!(sequences(&events), (1..=20).collect::<Vec<_>>());

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0), "{}", agent.logs());
    assert!(
        !setup.path("state/control.sock").exists(),
        "the socket went with the agent"
    );
}

#[test]
fn a_retry_after_beyond_max_retry_after_waits_only_the_cap() {
    let receiver = Receiver::start(ReceiverOptions::default());
    receiver.set_failing_with_retry_after(429, "86400");
    let setup = Setup::new();
    let agent = Agent::start(&config(
        &setup,
        &receiver.url,
        "",
        "max_retry_after = \"1s\"",
    ));
    setup.append("auth.log", &lines(1..=5));
    agent.wait_for_log("Retry-After is above max_retry_after", DEADLINE);
    assert!(
        agent.logs().contains("retry_after_s=86400"),
        "{}",
        agent.logs()
    );
    // A day's wait would leave the receiver alone; the cap brings the next attempt.
    wait_until(DEADLINE, "an attempt after the capped wait", || {
        receiver.requests().len() >= 2
    });
    receiver.set_failing(0);
    let events = receiver.wait_for_events(5, DEADLINE);
    assert_eq!(sequences(&events), (1..=5).collect::<Vec<_>>());
}

#[test]
fn an_absurd_retry_after_does_not_break_a_manual_send() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(&setup, &receiver.url, "", "");
    for absurd in [
        "18446744073709551615",
        "99999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        receiver.set_failing_with_retry_after(429, absurd);
        let output = tailhook(
            &config,
            &[
                "send",
                "--webhook",
                "soc",
                "--data",
                "{}",
                "--timeout",
                "2s",
            ],
        );
        let said = text(&output);
        assert!(!output.status.success(), "{said}");
        assert!(!said.contains("panicked"), "{absurd}: {said}");
        assert!(said.contains("not sent within 2.0s"), "{absurd}: {said}");
    }
}

/// Every folder 0700 and every file (socket included) 0600 under `dir`.
fn assert_private(dir: &Path) {
    let mut seen = 0;
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", folder.display());
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                folders.push(entry.path());
                continue;
            }
            assert!(kind.is_file() || kind.is_socket(), "{kind:?}");
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: {mode:o}", entry.path().display());
            seen += 1;
        }
    }
    assert!(seen >= 3, "queue, checkpoints and dead letters at least");
}

#[test]
fn state_files_are_private_whatever_the_umask() {
    for umask in ["022", "000"] {
        let receiver = Receiver::start(ReceiverOptions::default());
        // Rejected: every batch goes to the dead-letter file.
        receiver.set_failing(400);
        let setup = Setup::new();
        let written = std::fs::read_to_string(config(&setup, &receiver.url, "", "")).unwrap();
        // Two levels the agent creates.
        let config_path = setup
            .write_config(&written.replace("state_dir = \"state\"", "state_dir = \"var/state\""));
        let script = format!("umask {umask} && exec \"$0\" \"$@\"");
        let mut agent = Agent::start_wrapped(&config_path, &["sh", "-c", &script]);
        agent.wait_for_log("tailhook running", DEADLINE);
        setup.append("auth.log", &lines(1..=3));
        agent.wait_for_log("written to the dead-letter file", DEADLINE);
        let state = setup.path("var/state");
        wait_until(DEADLINE, "the checkpoints written", || {
            state.join("checkpoints.json").exists()
        });
        assert!(state.join("control.sock").exists());
        assert_private(&setup.path("var"));
        agent.signal("TERM");
        assert_eq!(agent.wait_exit(DEADLINE), Some(0), "{}", agent.logs());
        assert_private(&setup.path("var"));
    }
}

/// A listener that takes connections and never answers: a receiver that hangs.
fn black_hole() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        listener,
        format!("http://127.0.0.1:{port}/webhooks/01TEST?api_key=x"),
    )
}

#[test]
fn shutdown_with_a_hung_webhook_and_a_full_lane_keeps_its_promise() {
    let (_hole, hung) = black_hole();
    let setup = Setup::new();
    let keys = "max_queue_bytes = 3000\nrequest_timeout = \"10m\"";
    let grace = Duration::from_secs(2);
    let agent_keys = "shutdown_timeout = \"2s\"";
    let config_path = config(&setup, &hung, agent_keys, keys);
    let mut agent = Agent::start(&config_path);
    agent.wait_for_log("tailhook running", DEADLINE);
    // An empty lane takes a chunk of any size: a later one finds it full.
    // The tailer may read these lines in one chunk or several, so wait for
    // the first to be queued, not for all of them.
    setup.append("auth.log", &lines(1..=100));
    wait_until(DEADLINE, "the first chunk queued", || {
        status_json(&config_path)["webhooks"][0]["queued_events"]
            .as_u64()
            .is_some_and(|queued| queued > 0)
    });
    setup.append("auth.log", &lines(101..=200));
    agent.wait_for_log("queue is full", DEADLINE);

    let asked = Instant::now();
    agent.signal("TERM");
    let code = agent.wait_exit(DEADLINE);
    let took = asked.elapsed();
    eprintln!("stopped {took:?} after SIGTERM, shutdown_timeout {grace:?}");
    assert_eq!(code, Some(0), "{}", agent.logs());
    assert!(
        took < grace + Duration::from_secs(2),
        "stopping took {took:?}, shutdown_timeout is {grace:?}\n{}",
        agent.logs()
    );

    // Back, at a receiver that answers: every event, once.
    let receiver = Receiver::start(ReceiverOptions::default());
    let _agent = Agent::start(&config(&setup, &receiver.url, agent_keys, keys));
    let events = receiver.wait_for_events(200, DEADLINE);
    assert_each_once(&events, 200);
}

#[test]
fn a_dead_letter_file_that_cannot_be_written_keeps_the_events_queued() {
    let receiver = Receiver::start(ReceiverOptions::default());
    receiver.set_failing(400);
    let setup = Setup::new();
    // A file where the dead-letter folder should be: not even root writes there.
    std::fs::create_dir(setup.path("state")).unwrap();
    std::fs::write(setup.path("state/dead-letter"), "in the way\n").unwrap();
    let config = config(&setup, &receiver.url, "", "");
    let agent = Agent::start(&config);
    setup.append("auth.log", &lines(1..=5));
    agent.wait_for_log("dead-letter file cannot be written", DEADLINE);
    // Tried again, and still queued meanwhile.
    wait_until(DEADLINE, "a second try", || {
        agent
            .logs()
            .matches("dead-letter file cannot be written")
            .count()
            >= 2
    });
    let status = status_json(&config);
    assert_eq!(status["webhooks"][0]["queued_events"], 5, "{status}");

    std::fs::remove_file(setup.path("state/dead-letter")).unwrap();
    let dead_letters = setup.path("state/dead-letter/soc.jsonl");
    wait_until(DEADLINE, "the dead-letter file", || dead_letters.exists());
    agent.wait_for_log("written to the dead-letter file", DEADLINE);
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&dead_letters)
        .unwrap()
        .lines()
        .flat_map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["events"].as_array().unwrap().clone()
        })
        .collect();
    assert_each_once(&events, 5);
    wait_until(DEADLINE, "the queue to empty", || {
        status_json(&config)["webhooks"][0]["queued_events"] == 0
    });
}

#[test]
fn rate_limit_usage_before_a_restart_is_honoured_after_it() {
    let receiver = Receiver::start(ReceiverOptions::default());
    // A slow receiver: it may count an attempt at any time until its answer,
    // so the window runs from the answer, in this run and the next.
    let answer_takes = Duration::from_millis(1500);
    receiver.set_answer_delay(answer_takes);
    let setup = Setup::new();
    let window = Duration::from_secs(3);
    // Greedy: paced, the day's second attempt would wait for the end of
    // the UTC day (what is left of it over the one attempt left).
    let config = config(
        &setup,
        &receiver.url,
        "",
        "rate_limits = [\"1/3s\", \"2/1d\"]\npacing = false",
    );
    let mut agent = Agent::start(&config);
    setup.append("auth.log", &lines(1..=1));
    receiver.wait_for_events(1, DEADLINE);
    let first_arrived = Instant::now();
    agent.wait_for_log("batch delivered", DEADLINE);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    receiver.set_answer_delay(Duration::ZERO);
    let mut agent = Agent::start(&config);
    setup.append("auth.log", &lines(2..=2));
    receiver.wait_for_events(2, DEADLINE);
    let waited = first_arrived.elapsed();
    assert!(
        waited >= answer_takes + window,
        "the 1/3s window did not run from the answer across the restart: the second request came {waited:?} after the first"
    );
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    // The day's budget (2) is spent: a third event waits for the next UTC
    // day, across restarts, and status says so.
    let _agent = Agent::start(&config);
    setup.append("auth.log", &lines(3..=3));
    wait_until(DEADLINE, "the third event queued", || {
        status_json(&config)["webhooks"][0]["queued_events"] == 1
    });
    let status = status_json(&config);
    let day = &status["webhooks"][0]["budget"][1];
    assert_eq!(day["window"], "2/1d", "{status}");
    assert_eq!(day["used"], 2, "{status}");
    assert!(day["free_in_seconds"].as_f64().unwrap() > 0.0, "{status}");
    assert_eq!(receiver.events().len(), 2);
}

/// A private mount namespace holding a small tmpfs at `state`, kept alive
/// by a sleeping process: agents join it with `nsenter`, the test reaches
/// into it through `/proc/PID/root`. Gone with the process.
struct SmallDisk {
    holder: Child,
    state: PathBuf,
}

impl SmallDisk {
    /// `None` when this machine cannot mount one (not root, no `unshare`).
    fn mount(state: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(state).unwrap();
        let script = format!("mount -t tmpfs -o size={size},mode=0700 tailhook-test \"$0\" && echo mounted && exec sleep 600");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .ok()?;
        if line.trim() != "mounted" {
            let _ = holder.kill();
            let _ = holder.wait();
            return None;
        }
        Some(SmallDisk {
            holder,
            state: state.to_path_buf(),
        })
    }

    /// Runs an agent inside the namespace, seeing the small disk.
    fn agent(&self, config: &Path) -> Agent {
        let namespace = format!("--mount=/proc/{}/ns/mnt", self.holder.id());
        Agent::start_wrapped(config, &["nsenter", &namespace, "--"])
    }

    /// Events queued for the first webhook, as `tailhook status` inside the
    /// namespace sees them (the control socket is on the small disk).
    fn queued_events(&self, config: &Path) -> serde_json::Value {
        let output = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg(binary())
            .args(["status", "--json", "-c"])
            .arg(config)
            .output()
            .expect("run tailhook status");
        assert!(output.status.success(), "{}", text(&output));
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        status["webhooks"][0]["queued_events"].clone()
    }

    /// `path` (under `state`) as the test reaches it inside the namespace.
    fn inside(&self, name: &str) -> PathBuf {
        let state = self.state.strip_prefix("/").unwrap();
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(state)
            .join(name)
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.inside("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match filler.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.inside("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Appends lines from `next` on, 100 at a time, until the agent logs that
/// it cannot queue them; returns the last sequence written.
fn append_until_queueing_fails(setup: &Setup, agent: &Agent, mut next: usize) -> usize {
    let failures = || agent.logs().matches("cannot queue events").count();
    let before = failures();
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "queueing never failed on the full disk\n{}",
            agent.logs()
        );
        setup.append("auth.log", &lines(next..=next + 99));
        next += 100;
        let quiet = Instant::now() + Duration::from_millis(500);
        while Instant::now() < quiet {
            if failures() > before {
                return next - 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_full_disk_under_state_dir_loses_nothing_and_recovers_without_a_restart() {
    let setup = Setup::new();
    let Some(disk) = SmallDisk::mount(&setup.path("state"), "4m") else {
        return missing_prerequisite(
            "needs root and unshare(1) to mount a small tmpfs in a private mount namespace",
        );
    };
    let receiver = Receiver::start(ReceiverOptions::default());
    let config = config(&setup, &receiver.url, "shutdown_timeout = \"2s\"", "");
    let mut agent = disk.agent(&config);
    agent.wait_for_log("tailhook running", DEADLINE);
    setup.append("auth.log", &lines(1..=20));
    receiver.wait_for_events(20, DEADLINE);

    // Full, with the webhook refusing, so the queue must grow.
    receiver.set_failing(503);
    disk.fill();
    let last = append_until_queueing_fails(&setup, &agent, 21);
    assert!(
        agent.logs().contains("No space left on device"),
        "{}",
        agent.logs()
    );
    assert!(agent.is_running());
    disk.free();
    receiver.set_failing(0);
    let events = receiver.wait_for_events(last, DEADLINE);
    assert_each_once(&events, last as i64);
    agent.wait_for_log("queue reopened after an I/O error", DEADLINE);
    // Delivered is not yet removed: a batch removed after the next fill
    // would be sent again after the restart (in flight, as after a crash).
    wait_until(DEADLINE, "the queue to empty", || {
        disk.queued_events(&config) == 0
    });

    // Full again: SIGTERM still stops it, in time.
    receiver.set_failing(503);
    disk.fill();
    let last = append_until_queueing_fails(&setup, &agent, last + 1);
    let asked = Instant::now();
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0), "{}", agent.logs());
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    // Space back, agent back: what was not queued is read again; every event once.
    disk.free();
    receiver.set_failing(0);
    let _agent = disk.agent(&config);
    let events = receiver.wait_for_events(last, DEADLINE);
    assert_each_once(&events, last as i64);
}
