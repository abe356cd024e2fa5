//! What the tail stage does with the files it finds: globs and excludes,
//! files appearing while running, lines that are too long, not UTF-8 or never
//! finished, and state that is damaged or stale when the agent starts.

mod support;

use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(setup: &Setup, url: &str, input: &str) -> std::path::PathBuf {
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"",
        input,
        webhook: "batch_timeout = \"20ms\"",
    };
    setup.agent_config(url, keys)
}

#[test]
fn new_matching_files_are_picked_up_and_excluded_ones_are_not() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::create_dir(setup.path("logs")).unwrap();
    let input = "paths = [\"logs/*.log\", \"logs/*.log.*\"]\nexclude = [\"logs/*.gz\"]";
    let agent = Agent::start(&config(&setup, &receiver.url, input));
    agent.wait_for_log("tailhook running", DEADLINE);

    setup.append("logs/a.log", &[failed_line(1)]);
    receiver.wait_for_events(1, DEADLINE);
    setup.append("logs/a.log.1.gz", &[failed_line(2)]);
    setup.append("logs/notes.txt", &[failed_line(3)]);
    setup.append("logs/b.log", &[failed_line(4)]);
    setup.append("logs/b.log.1", &[failed_line(5)]);
    receiver.wait_for_events(3, DEADLINE);
    let mut seen = sequences(&receiver.events());
    seen.sort();
    assert_eq!(seen, vec![1, 4, 5]);
    assert!(
        !agent.logs().contains("a.log.1.gz"),
        "an excluded file was opened"
    );
}

#[test]
fn long_binary_and_unfinished_lines_are_delivered_not_dropped() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let input = "paths = [\"auth.log\"]\nstart_at = \"beginning\"\nmax_line_bytes = 80\npartial_line_timeout = \"300ms\"";
    let long = format!("{} {}", failed_line(1), "x".repeat(10_000));
    let mut bytes = format!("{long}\n").into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\x00\x01 binary garbage\n");
    bytes.extend_from_slice(format!("{}\n", failed_line(2)).as_bytes());
    // Not valid UTF-8 inside a matching line: replaced, still matched.
    bytes.extend_from_slice(b"seq=3 Failed password for us\xe9r3 from 192.0.2.4 port 1003\n");
    // The last line has no newline yet.
    bytes.extend_from_slice(failed_line(4).as_bytes());
    std::fs::write(setup.path("auth.log"), bytes).unwrap();
    let agent = Agent::start(&config(&setup, &receiver.url, input));

    // The cut line no longer matches its anchored rule: it is reported.
    let events = receiver.wait_for_events(4, DEADLINE);
    assert_eq!(events[0]["rule"], "tailhook.line_too_long");
    let matched = &events[1..];
    assert_eq!(sequences(&matched[..3]), vec![2, 3, 4]);
    assert_eq!(matched[1]["fields"]["user.name"], "us\u{fffd}r3");
    assert_eq!(
        matched[2]["message"],
        failed_line(4),
        "flushed after partial_line_timeout"
    );
    agent.wait_for_log("a line longer than max_line_bytes was cut", DEADLINE);
    // The rest of the unfinished line arrives later: a line of its own.
    setup.append("auth.log", &[String::new(), failed_line(5)]);
    let events = receiver.wait_for_events(5, DEADLINE);
    assert_eq!(sequences(&events[1..]), vec![2, 3, 4, 5]);
}

#[test]
fn damaged_checkpoints_and_files_replaced_while_stopped_are_recovered_from() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(&setup, &receiver.url, "paths = [\"auth.log\"]");
    setup.append("auth.log", &[failed_line(1)]);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailing file", DEADLINE);
    setup.append("auth.log", &[failed_line(2)]);
    receiver.wait_for_events(1, DEADLINE);
    agent.signal("TERM");
    agent.wait_exit(DEADLINE);

    // Replaced while stopped (the inode may well be reused): a new file.
    std::fs::remove_file(setup.path("auth.log")).unwrap();
    setup.append("auth.log", &[failed_line(3), failed_line(4)]);
    let mut agent = Agent::start(&config);
    receiver.wait_for_events(3, DEADLINE);
    agent.signal("TERM");
    agent.wait_exit(DEADLINE);

    // A torn checkpoint file is set aside with a warning, never a crash loop.
    std::fs::write(
        setup.path("state/checkpoints.json"),
        "{\"version\":\"1\",\"files\":[{\"inp",
    )
    .unwrap();
    setup.append("auth.log", &[failed_line(5)]);
    let agent = Agent::start(&config);
    agent.wait_for_log("checkpoint file is corrupt", DEADLINE);
    agent.wait_for_log("tailing file", DEADLINE);
    setup.append("auth.log", &[failed_line(6)]);
    let events = receiver.wait_for_events(4, DEADLINE);
    // Line 5 was written while the state was lost: like a first start, the
    // agent begins at the end (start_at = "end"), so 5 is not sent.
    assert_eq!(sequences(&events), vec![2, 3, 4, 6]);
    assert!(setup.path("state/checkpoints.json.corrupt").exists());
}

#[test]
fn with_inotify_off_polling_alone_delivers_every_line() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = config(
        &setup,
        &receiver.url,
        "paths = [\"auth.log\"]\nstart_at = \"beginning\"",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("[agent]", "[agent]\ninotify = false")).unwrap();
    let agent = Agent::start(&config);
    agent.wait_for_log("polling only", DEADLINE);
    for seq in 1..=50 {
        setup.append("auth.log", &[failed_line(seq)]);
    }
    let events = receiver.wait_for_events(50, DEADLINE);
    assert_eq!(sequences(&events), (1..=50).collect::<Vec<_>>());
}

/// A log written through a hard link in a folder the agent does not watch:
/// inotify reports a write only to the folder it was made through, so no
/// notification comes, and the periodic look at every file (every
/// `rescan_interval` with inotify on, 300 ms here) still finds the lines.
#[test]
fn lines_no_notification_announces_are_found_by_the_periodic_look() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::create_dir(setup.path("elsewhere")).unwrap();
    std::fs::create_dir(setup.path("logs")).unwrap();
    setup.append("elsewhere/auth.log", &[failed_line(1)]);
    std::fs::hard_link(
        setup.path("elsewhere/auth.log"),
        setup.path("logs/auth.log"),
    )
    .unwrap();
    let config = config(
        &setup,
        &receiver.url,
        "paths = [\"logs/*.log\"]\nstart_at = \"beginning\"\nrescan_interval = \"300ms\"",
    );
    let agent = Agent::start(&config);
    agent.wait_for_log("tailhook running", DEADLINE);
    receiver.wait_for_events(1, DEADLINE);
    for seq in 2..=5 {
        setup.append("elsewhere/auth.log", &[failed_line(seq)]);
    }
    let events = receiver.wait_for_events(5, DEADLINE);
    assert_eq!(sequences(&events), (1..=5).collect::<Vec<_>>());
}

/// A log reached through a symlink into another folder: its target's folder
/// is watched too, so its lines come at once, not at the next periodic look
/// (10 s).
#[test]
fn a_symlinked_log_is_followed_through_its_target_folder() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::create_dir(setup.path("elsewhere")).unwrap();
    std::fs::create_dir(setup.path("logs")).unwrap();
    setup.append("elsewhere/auth.log", &[failed_line(1)]);
    std::os::unix::fs::symlink(
        setup.path("elsewhere/auth.log"),
        setup.path("logs/auth.log"),
    )
    .unwrap();
    let config = config(
        &setup,
        &receiver.url,
        "paths = [\"logs/*.log\"]\nstart_at = \"beginning\"",
    );
    let agent = Agent::start(&config);
    agent.wait_for_log("tailhook running", DEADLINE);
    receiver.wait_for_events(1, DEADLINE);
    let appended = std::time::Instant::now();
    setup.append("elsewhere/auth.log", &[failed_line(2)]);
    let events = receiver.wait_for_events(2, DEADLINE);
    assert_eq!(sequences(&events), vec![1, 2]);
    assert!(
        appended.elapsed() < Duration::from_secs(8),
        "waited for the periodic look: {:?}",
        appended.elapsed()
    );
}

/// Root reads every file whatever its mode, so the agent runs as `nobody`.
#[test]
fn an_unreadable_file_is_warned_about_once_and_read_once_it_can_be() {
    use std::os::unix::fs::PermissionsExt;
    let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    if !is_root || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to run the agent as another user");
        return;
    }
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(setup.dir.path(), 0o777);
    setup.append("secret.log", &[failed_line(1)]);
    mode(&setup.path("secret.log"), 0o000);
    setup.append("open.log", &[]);
    let config = config(&setup, &receiver.url, "paths = [\"*.log\"]");
    let wrapper = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
    ];
    let agent = Agent::start_wrapped(&config, &wrapper);

    agent.wait_for_log("cannot open file; will retry", DEADLINE);
    setup.append("open.log", &[failed_line(2)]);
    receiver.wait_for_events(1, DEADLINE);
    setup.append("open.log", &[failed_line(3)]);
    receiver.wait_for_events(2, DEADLINE);
    assert_eq!(
        agent.logs().matches("cannot open file").count(),
        1,
        "one warning, not one per poll"
    );

    mode(&setup.path("secret.log"), 0o644);
    let events = receiver.wait_for_events(3, DEADLINE);
    assert_eq!(
        sequences(&events),
        vec![2, 3, 1],
        "never read before, so read whole once readable"
    );
}

/// A guard, not a benchmark (`benches/idle.sh` measures): watching idle files
/// must not spin. The scan itself opens the watched folder, and once woke the
/// tailer again at once, which burned a whole core.
#[test]
fn watching_idle_files_does_not_spin() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    for i in 0..50 {
        setup.append(&format!("idle{i}.log"), &[noise_line(i)]);
    }
    let agent = Agent::start(&config(&setup, &receiver.url, "paths = [\"*.log\"]"));
    agent.wait_for_log("tailhook running", DEADLINE);
    wait_until(DEADLINE, "50 files tailed", || {
        agent.logs().matches("tailing file").count() == 50
    });
    let (cpu, wall) = (agent.cpu_seconds(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let used = agent.cpu_seconds() - cpu;
    let elapsed = wall.elapsed().as_secs_f64();
    assert!(
        used < 0.25 * elapsed,
        "idle agent used {used:.2} CPU s in {elapsed:.1} s"
    );
}

/// How often the tail thread of `agent` has gone to sleep (each wake-up
/// ends in one): its voluntary context switches.
fn tail_thread_sleeps(agent: &Agent) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", agent.pid())).unwrap();
    let task = tasks
        .flatten()
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim() == "tailhook-tail")
        })
        .expect("a thread named tailhook-tail");
    let status = std::fs::read_to_string(task.path().join("status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("voluntary_ctxt_switches in the thread's status")
}

/// Idle files with inotify on: the tail thread sleeps until its next look
/// at every file (`rescan_interval`), not every `poll_interval` (100 ms
/// here, which would be 10 wake-ups a second), and a line appended to an
/// idle file still comes at once, long before that look.
#[test]
fn an_idle_tailer_sleeps_until_a_notification_or_its_next_look() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    for i in 0..20 {
        setup.append(&format!("idle{i}.log"), &[noise_line(i)]);
    }
    let agent = Agent::start(&config(
        &setup,
        &receiver.url,
        "paths = [\"*.log\"]\nrescan_interval = \"60s\"",
    ));
    agent.wait_for_log("tailhook running", DEADLINE);
    // Some whole second with at most one wake-up (start-up work settles
    // first).
    let mut window = (std::time::Instant::now(), tail_thread_sleeps(&agent));
    wait_until(DEADLINE, "a second with at most one tail wake-up", || {
        let now = (std::time::Instant::now(), tail_thread_sleeps(&agent));
        if now.0 - window.0 < Duration::from_secs(1) {
            return false;
        }
        let wakeups = now.1 - window.1;
        window = now;
        wakeups <= 1
    });
    let appended = std::time::Instant::now();
    setup.append("idle7.log", &[failed_line(1)]);
    let events = receiver.wait_for_events(1, DEADLINE);
    assert_eq!(sequences(&events), [1]);
    assert!(
        appended.elapsed() < Duration::from_secs(10),
        "the line took {:?}: it waited for the next look, not the notification",
        appended.elapsed()
    );
}

/// 3,000 files under a limit of 256 descriptors: the tailer keeps its
/// files to a share of the limit (closing those read to their end), so
/// every file is read and the queue, checkpoints and HTTP client always
/// find a descriptor.
#[test]
fn thousands_of_files_under_a_low_descriptor_limit_are_all_read() {
    const FILES: usize = 3_000;
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        missing_prerequisite(
            "prlimit (util-linux) is needed to run the agent under a low descriptor limit",
        );
        return;
    }
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::create_dir(setup.path("logs")).unwrap();
    for seq in 1..=FILES {
        setup.append(&format!("logs/f{seq:04}.log"), &[failed_line(seq)]);
    }
    let input = "paths = [\"logs/*.log\"]\nstart_at = \"beginning\"";
    let config = config(&setup, &receiver.url, input);
    let agent = Agent::start_wrapped(&config, &["prlimit", "--nofile=256:256"]);
    let patience = Duration::from_secs(240);
    wait_until(patience, "an event from every file", || {
        receiver.events().len() >= FILES
    });
    let mut seen = sequences(&receiver.events());
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (1..=FILES as i64).collect::<Vec<_>>());
    // Most files were closed to make room: each is opened again, by its
    // identity, when it grows.
    for seq in 1..=FILES {
        setup.append(&format!("logs/f{seq:04}.log"), &[failed_line(FILES + seq)]);
    }
    wait_until(patience, "the second line of every file", || {
        receiver.events().len() >= 2 * FILES
    });
    let mut seen = sequences(&receiver.events());
    seen.sort();
    assert_eq!(seen, (1..=2 * FILES as i64).collect::<Vec<_>>());
    // Every file's offset is committed on disk.
    wait_until(patience, "a checkpoint past the line of every file", || {
        let Ok(text) = std::fs::read_to_string(setup.path("state/checkpoints.json")) else {
            return false;
        };
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        stored["files"].as_array().is_some_and(|files| {
            files.len() == FILES
                && files.iter().all(|f| {
                    let size = std::fs::metadata(f["path"].as_str().unwrap_or_default())
                        .map(|m| m.len())
                        .ok();
                    f["offset"].as_u64() == size
                })
        })
    });
    let logs = agent.logs();
    assert!(
        !logs.contains("Too many open files") && !logs.contains("os error 24"),
        "{}",
        logs.lines()
            .filter(|l| l.contains("open files"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A file idle at its end is closed after `close_inactive` and opened again
/// when it grows, also when it was renamed beside its old name while closed;
/// one moved out of its folder while closed cannot be found, which is logged.
#[test]
fn idle_files_are_closed_and_reopened_when_they_grow_or_rotate() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let log = setup.path("auth.log");
    std::fs::write(&log, "").unwrap();
    let input = "paths = [\"auth.log\"]\nclose_inactive = \"300ms\"\nrescan_interval = \"200ms\"";
    let agent = Agent::start(&config(&setup, &receiver.url, input));
    agent.wait_for_log("tailing file", DEADLINE);
    setup.append("auth.log", &[failed_line(1)]);
    receiver.wait_for_events(1, DEADLINE);
    wait_until(DEADLINE, "the idle file closed", || {
        agent.descriptors_on(&log) == 0
    });

    setup.append("auth.log", &[failed_line(2)]);
    receiver.wait_for_events(2, DEADLINE);
    wait_until(DEADLINE, "the idle file closed again", || {
        agent.descriptors_on(&log) == 0
    });

    // Written and rotated away while closed (the agent paused, so it
    // cannot look in between): still found by its inode and read to its end.
    agent.signal("STOP");
    setup.append("auth.log", &[failed_line(3)]);
    std::fs::rename(&log, setup.path("auth.log.1")).unwrap();
    setup.append("auth.log", &[failed_line(4)]);
    agent.signal("CONT");
    let events = receiver.wait_for_events(4, DEADLINE);
    let mut seen = sequences(&events);
    seen.sort();
    assert_eq!(seen, vec![1, 2, 3, 4]);

    // Moved out of its folder while closed: out of reach, and said so.
    wait_until(DEADLINE, "the new file closed", || {
        agent.descriptors_on(&log) == 0
    });
    std::fs::create_dir(setup.path("archive")).unwrap();
    agent.signal("STOP");
    setup.append("auth.log", &[failed_line(5)]);
    std::fs::rename(&log, setup.path("archive/auth.log")).unwrap();
    setup.append("auth.log", &[failed_line(6)]);
    agent.signal("CONT");
    agent.wait_for_log("left its folder or was deleted", DEADLINE);
    let events = receiver.wait_for_events(5, DEADLINE);
    assert_eq!(sequences(&events[4..]), vec![6]);
}

/// `ignore_older` leaves old files unopened; one written again is read
/// from where it was when ignored, not from its old content.
#[test]
fn files_older_than_ignore_older_are_not_opened_until_written() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::create_dir(setup.path("logs")).unwrap();
    setup.append("logs/old.log", &[failed_line(1)]);
    let old = std::fs::File::options()
        .append(true)
        .open(setup.path("logs/old.log"))
        .unwrap();
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    old.set_modified(two_days_ago).unwrap();
    setup.append("logs/new.log", &[failed_line(2)]);
    let input = "paths = [\"logs/*.log\"]\nstart_at = \"beginning\"\nignore_older = \"1d\"";
    let agent = Agent::start(&config(&setup, &receiver.url, input));
    receiver.wait_for_events(1, DEADLINE);
    assert!(!agent.logs().contains("old.log"), "{}", agent.logs());

    setup.append("logs/old.log", &[failed_line(3)]);
    agent.wait_for_log("old.log", DEADLINE);
    let events = receiver.wait_for_events(2, DEADLINE);
    assert_eq!(sequences(&events), vec![2, 3], "line 1 is older than 1d");
}

/// Folder loops through symlinks under `**` (`sub/up -> ..`, `sub/cyc ->
/// ../sub`) used to make start-up endless, ignoring SIGTERM: now each loop
/// is reported once (and by `check`), and the real files are tailed.
#[test]
fn folder_loops_under_any_depth_globs_are_reported_and_skipped() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    std::fs::create_dir_all(setup.path("logs/sub")).unwrap();
    std::os::unix::fs::symlink("..", setup.path("logs/sub/up")).unwrap();
    std::os::unix::fs::symlink("../sub", setup.path("logs/sub/cyc")).unwrap();
    std::fs::write(setup.path("logs/sub/a.log"), "").unwrap();
    let input = "paths = [\"logs/**/*.log\"]\nrescan_interval = \"100ms\"";
    let config = config(&setup, &receiver.url, input);

    let check = std::process::Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: input `auth`: paths: `") && stderr.contains("folder loop"),
        "{stderr}"
    );

    let mut agent = Agent::start(&config);
    agent.wait_for_log("tailhook running", DEADLINE);
    setup.append("logs/sub/a.log", &[failed_line(1)]);
    setup.append("logs/b.log", &[failed_line(2)]);
    let events = receiver.wait_for_events(2, DEADLINE);
    let mut seen = sequences(&events);
    seen.sort();
    assert_eq!(seen, vec![1, 2]);
    // New files are found by matching the globs again: each one proves
    // another expansion, and each loop is still reported once.
    for seq in 3..=5 {
        setup.append(&format!("logs/sub/new{seq}.log"), &[failed_line(seq)]);
        receiver.wait_for_events(seq, DEADLINE);
    }
    let logs = agent.logs();
    assert_eq!(logs.matches("sub/up leads back to").count(), 1, "{logs}");
    assert_eq!(logs.matches("sub/cyc leads back to").count(), 1, "{logs}");
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A failure hidden behind a 70 kB user name defeats the `$`-anchored rule
/// once the line is cut; the cut is logged (file and offset), counted, and
/// raised as a `tailhook.line_too_long` event, also for a last line that
/// never got its newline.
#[test]
fn cut_lines_are_logged_counted_and_reported_as_events() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let hidden = format!(
        "seq=1 Failed password for {} from 192.0.2.1 port 22",
        "a".repeat(70_000)
    );
    let unfinished = format!("seq=3 {}", "b".repeat(200));
    std::fs::write(
        setup.path("auth.log"),
        format!("{hidden}\n{}\n{unfinished}", failed_line(2)),
    )
    .unwrap();
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"",
        input: "paths = [\"auth.log\"]\nstart_at = \"beginning\"\nmax_line_bytes = 80\npartial_line_timeout = \"300ms\"",
        webhook: "batch_timeout = \"20ms\"",
    };
    let agent = Agent::start(&setup.agent_config(&receiver.url, keys));
    let events = receiver.wait_for_events(3, DEADLINE);
    let summary: Vec<(&str, u64, Option<u64>)> = events
        .iter()
        .map(|e| {
            (
                e["rule"].as_str().unwrap(),
                e["log"]["offset"].as_u64().unwrap(),
                e["fields"]["line.bytes"].as_u64(),
            )
        })
        .collect();
    let second = hidden.len() as u64 + 1;
    let third = second + failed_line(2).len() as u64 + 1;
    assert_eq!(
        summary,
        vec![
            ("tailhook.line_too_long", 0, Some(hidden.len() as u64)),
            ("test.auth_failed", second, None),
            (
                "tailhook.line_too_long",
                third,
                Some(unfinished.len() as u64)
            ),
        ]
    );
    let report = &events[0];
    assert_eq!(report["severity"], "low");
    assert_eq!(report["fields"]["line.max_bytes"], 80);
    assert!(report["fields"]["log.file"]
        .as_str()
        .unwrap()
        .ends_with("auth.log"));
    assert_eq!(report["message"].as_str().unwrap(), &hidden[..80]);

    agent.wait_for_log("a line longer than max_line_bytes was cut", DEADLINE);
    let logs = agent.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("longer than max_line_bytes was cut"))
        .unwrap_or_else(|| panic!("no warning about the cut: {logs}"));
    assert!(
        warning.contains("auth.log") && warning.contains("offset=0"),
        "{warning}"
    );
    let port = agent.metrics_port(DEADLINE);
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        sample(&metrics, "tailhook_lines_truncated_total{input=\"auth\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            "tailhook_rule_matches_total{rule=\"tailhook.line_too_long\"}"
        ),
        2.0
    );
}

#[test]
fn report_long_lines_false_keeps_the_count_but_sends_no_event() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let long = format!("seq=1 {}", "c".repeat(500));
    std::fs::write(
        setup.path("auth.log"),
        format!("{long}\n{}\n", failed_line(2)),
    )
    .unwrap();
    let input = "paths = [\"auth.log\"]\nstart_at = \"beginning\"\nmax_line_bytes = 80\nreport_long_lines = false";
    let agent = Agent::start(&config(&setup, &receiver.url, input));
    // Both lines are queued in one chunk: a report would come first.
    let events = receiver.wait_for_events(1, DEADLINE);
    assert_eq!(events[0]["rule"], "test.auth_failed", "{events:?}");
    assert_eq!(receiver.events().len(), 1);
    agent.wait_for_log("a line longer than max_line_bytes was cut", DEADLINE);
}
