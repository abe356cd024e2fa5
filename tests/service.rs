//! Running as a service: the real binary talks the sd_notify protocol to a
//! socket the test binds (as systemd would), writes JSON or journald log
//! lines on request, and renders its man pages and shell completions.

mod support;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// Datagrams the agent sent to the notify socket, one message each.
struct NotifySocket(UnixDatagram);

impl NotifySocket {
    /// The next message, waiting at most until `deadline`.
    fn next(&self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for a notification");
        self.0.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self
            .0
            .recv(&mut buf)
            .expect("a notification before the deadline");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads whatever has arrived, without waiting.
    fn drain(&self) {
        self.0.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while self.0.recv(&mut buf).is_ok() {}
        self.0.set_nonblocking(false).unwrap();
    }

    /// Messages up to and including the first that has `field`, which is returned last.
    fn until(&self, field: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let message = self.next(deadline);
            let done = message.lines().any(|l| l == field);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

fn quiet_config(setup: &Setup) -> std::path::PathBuf {
    setup.append("auth.log", &[noise_line(1)]);
    setup.agent_config(
        "-",
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            ..ConfigKeys::default()
        },
    )
}

#[test]
fn systemd_hears_ready_then_watchdog_pings_then_stopping() {
    let setup = Setup::new();
    let socket_path = setup.path("notify.sock");
    let socket = NotifySocket(UnixDatagram::bind(&socket_path).unwrap());
    let config = quiet_config(&setup);
    let mut agent = Agent::start_with_env(
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    let before_ready = socket.until("READY=1", DEADLINE);
    assert_eq!(
        before_ready.len(),
        1,
        "READY=1 comes first: {before_ready:?}"
    );
    assert!(
        before_ready[0].contains("STATUS=1 input(s), 1 webhook(s)"),
        "{before_ready:?}"
    );
    // READY is sent once the tailer's first scan is done, so the file is followed.
    agent.wait_for_log("tailing file", DEADLINE);

    // Pings every WATCHDOG_USEC / 2 while the tail thread keeps making passes.
    for _ in 0..3 {
        assert_eq!(socket.next(Instant::now() + DEADLINE), "WATCHDOG=1");
    }

    agent.signal("TERM");
    let stopping = socket.until("STOPPING=1", DEADLINE);
    assert!(
        stopping[..stopping.len() - 1]
            .iter()
            .all(|m| m == "WATCHDOG=1"),
        "{stopping:?}"
    );
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
}

#[test]
fn a_tailer_paused_by_a_full_queue_still_feeds_the_watchdog() {
    let down = Receiver::start(ReceiverOptions::default());
    down.set_failing(503);
    let setup = Setup::new();
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let config = setup.agent_config(
        &down.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "start_at = \"beginning\"",
            webhook:
                "max_queue_bytes = 3000\nbatch_timeout = \"20ms\"\nmax_retry_delay = \"200ms\"",
        },
    );
    let socket_path = setup.path("notify.sock");
    let socket = NotifySocket(UnixDatagram::bind(&socket_path).unwrap());
    let mut agent = Agent::start_with_env(
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    socket.until("READY=1", DEADLINE);
    // Chunk after chunk until the tailer waits for room: the webhook is down.
    let mut seq = 0;
    wait_until(DEADLINE, "the queue to fill", || {
        let chunk: Vec<String> = (seq..seq + 10).map(failed_line).collect();
        seq += 10;
        setup.append("auth.log", &chunk);
        agent.logs().contains("queue is full")
    });
    // Twice the time after which a tailer that made no pass counts as stuck
    // (WATCHDOG_USEC + poll_interval): the pings go on, it is only paused.
    for _ in 0..6 {
        assert_eq!(socket.next(Instant::now() + DEADLINE), "WATCHDOG=1");
    }
    assert!(!agent.logs().contains("no longer fed"), "{}", agent.logs());
    down.set_failing(0);
    agent.signal("TERM");
    socket.until("STOPPING=1", DEADLINE);
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
}

/// Sets the soft limit on processes (threads) of the agent's user for the
/// agent alone, below its hard limit (`None`: back to the hard limit).
fn limit_threads(agent: &Agent, soft: Option<u32>) {
    let pid = agent.pid().to_string();
    let soft = match soft {
        Some(soft) => soft.to_string(),
        None => prlimit(&[
            "--pid",
            &pid,
            "--nproc",
            "--raw",
            "--noheadings",
            "--output=HARD",
        ]),
    };
    prlimit(&["--pid", &pid, &format!("--nproc={soft}:")]);
}

/// Runs `prlimit ARGS` as `nobody`, the agent's user: another user's
/// process's limits take CAP_SYS_RESOURCE, which a container's root may lack.
fn prlimit(args: &[&str]) -> String {
    let out = Command::new("setpriv")
        .args(NOBODY)
        .arg("prlimit")
        .args(args)
        .output()
        .expect("run prlimit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `setpriv` arguments that run a command as `nobody`.
const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// The agent's tokio threads: its two workers, and the blocking pool's,
/// which end after 10 s idle (all are named `tokio-rt-worker`).
fn tokio_threads(agent: &Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("tokio-"))
                .count()
        })
        .unwrap_or(0)
}

/// A delivery task ends only by a panic. A real one: the agent's user is
/// at its process limit (a unit's `TasksMax=`, a host out of pids) when the
/// task needs a thread to read the queue and tokio's blocking pool has none
/// left, so `spawn_blocking` panics ("OS can't spawn worker thread"). The
/// limit only binds a user that is not root, so the agent runs as `nobody`.
#[test]
fn a_delivery_task_that_died_makes_health_503_and_stops_the_watchdog_until_a_restart() {
    let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let tools = ["/usr/bin/setpriv", "/usr/bin/prlimit"];
    if !is_root || !tools.iter().all(|t| std::path::Path::new(t).exists()) {
        return missing_prerequisite(
            "root with setpriv and prlimit (util-linux): a thread limit binds only a user that is not root",
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let open = |path: &std::path::Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap()
    };
    open(setup.dir.path());
    setup.append("auth.log", &[]);
    open(&setup.path("auth.log"));
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"",
            webhook: "batch_timeout = \"50ms\"",
            ..ConfigKeys::default()
        },
    );
    let socket_path = setup.path("notify.sock");
    let socket = NotifySocket(UnixDatagram::bind(&socket_path).unwrap());
    open(&socket_path);
    let nobody = [&["setpriv"][..], &NOBODY].concat();
    let mut agent = Agent::start_with(
        &config,
        &nobody,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    socket.until("READY=1", DEADLINE);
    let port = agent.metrics_port(DEADLINE);
    setup.append("auth.log", &[failed_line(1)]);
    assert_eq!(sequences(&receiver.wait_for_events(1, DEADLINE)), [1]);
    assert_eq!(http_get(port, "/health").unwrap().0, 200);

    // No new thread from now on; wait until the blocking pool is empty.
    // The test reads the pings as they come: on a full socket the agent's
    // next one would wait, and arrive after the death.
    limit_threads(&agent, Some(1));
    wait_until(DEADLINE, "the blocking threads to end", || {
        socket.drain();
        tokio_threads(&agent) == 2
    });
    setup.append("auth.log", &[failed_line(2)]);
    wait_until(DEADLINE, "the delivery task to end", || {
        socket.drain();
        agent
            .logs()
            .contains("a delivery task ended while the agent runs")
    });
    assert!(
        agent.logs().contains("OS can't spawn worker thread"),
        "{}",
        agent.logs()
    );

    // The limit is lifted, but the task stays dead: its events wait.
    limit_threads(&agent, None);
    let (code, body) = http_get(port, "/health").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("webhook `soc`: its delivery task panicked; events wait until a restart"),
        "{body}"
    );
    // Pings come every 200 ms while all is well; none after the death was
    // recorded (which the 503 above shows happened), for five periods.
    socket.drain();
    socket
        .0
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 64];
    let late = socket.0.recv(&mut buf);
    assert!(
        late.is_err(),
        "the watchdog was fed after the delivery task died: {:?}",
        late.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    assert_eq!(receiver.events().len(), 1, "event 2 waits in the queue");

    // What systemd does once WatchdogSec passes: stop and start again.
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0), "{}", agent.logs());
    let restarted = Agent::start_wrapped(&config, &nobody);
    let events = receiver.wait_for_events(2, DEADLINE);
    assert_eq!(sequences(&events), [1, 2], "{}", restarted.logs());
    assert_eq!(
        http_get(restarted.metrics_port(DEADLINE), "/health")
            .unwrap()
            .0,
        200
    );
}

/// One thread of the agent held still, as a thread hung in a system call
/// (a read on a dead NFS mount) is: ptrace stops that thread alone. Let go
/// on drop, so a failing test leaves no stopped agent behind.
struct HeldThread(libc::pid_t);

impl HeldThread {
    /// The agent's thread named `name`, stopped; `None` when this machine
    /// does not let the test trace it.
    fn hold(agent: &Agent, name: &str) -> Option<HeldThread> {
        let tid: libc::pid_t = std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?;
                let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
                (comm.trim() == name).then(|| task.file_name().to_str()?.parse().ok())?
            })
            .next()
            .unwrap_or_else(|| panic!("no thread {name} in the agent"));
        // SAFETY: plain system calls on a thread id; no memory is shared.
        unsafe {
            if libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) != 0 {
                return None;
            }
            let held = HeldThread(tid);
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
            Some(held)
        }
    }
}

impl Drop for HeldThread {
    fn drop(&mut self) {
        // SAFETY: as above; the thread is in its ptrace stop.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

/// The tail thread hangs: the watchdog pings stop at once (systemd would
/// restart the agent after `WatchdogSec=`) and `/health` says so once the
/// thread has made no pass for 30 s past `poll_interval`; when it moves
/// again both recover, and the line written meanwhile is delivered.
#[test]
fn a_hung_tail_thread_stops_the_watchdog_and_health_then_both_recover() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    setup.append("auth.log", &[]);
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"",
            webhook: "batch_timeout = \"50ms\"",
            ..ConfigKeys::default()
        },
    );
    let socket_path = setup.path("notify.sock");
    let socket = NotifySocket(UnixDatagram::bind(&socket_path).unwrap());
    let mut agent = Agent::start_with_env(
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    socket.until("READY=1", DEADLINE);
    let port = agent.metrics_port(DEADLINE);
    setup.append("auth.log", &[failed_line(1)]);
    assert_eq!(sequences(&receiver.wait_for_events(1, DEADLINE)), [1]);

    let Some(held) = HeldThread::hold(&agent, "tailhook-tail") else {
        return missing_prerequisite(
            "ptrace(PTRACE_SEIZE) refused: the tail thread cannot be held",
        );
    };
    setup.append("auth.log", &[failed_line(2)]);
    // The test reads the pings as they come (a full socket would hold the
    // agent's next one back until it is read).
    wait_until(DEADLINE, "the watchdog to be let go", || {
        socket.drain();
        agent
            .logs()
            .contains("the systemd watchdog is no longer fed")
    });
    socket.drain();
    socket
        .0
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        socket.0.recv(&mut buf).is_err(),
        "a ping while the tail thread hangs"
    );
    let stall_deadline = Duration::from_secs(60);
    wait_until(stall_deadline, "/health to say tailing stalled", || {
        socket.drain();
        http_get(port, "/health").is_some_and(|(code, body)| {
            code == 503 && body.contains("tailing stalled: no pass over the inputs for")
        })
    });
    assert_eq!(
        receiver.events().len(),
        1,
        "line 2 is not read while the thread hangs"
    );

    drop(held);
    assert_eq!(
        sequences(&receiver.wait_for_events(2, DEADLINE)),
        [1, 2],
        "nothing lost"
    );
    wait_until(DEADLINE, "/health to recover", || {
        http_get(port, "/health").is_some_and(|(code, _)| code == 200)
    });
    socket.drain();
    assert_eq!(socket.next(Instant::now() + DEADLINE), "WATCHDOG=1");
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
}

/// Now on CLOCK_MONOTONIC in microseconds, the clock sd_notify's
/// `MONOTONIC_USEC=` is on.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// The `KEY=` field of a notification, if it has one.
fn field<'m>(message: &'m str, key: &str) -> Option<&'m str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn a_reload_says_reloading_with_its_monotonic_time_then_ready_applied_or_refused() {
    let setup = Setup::new();
    let socket_path = setup.path("notify.sock");
    let socket = NotifySocket(UnixDatagram::bind(&socket_path).unwrap());
    let config = quiet_config(&setup);
    let good = std::fs::read_to_string(&config).unwrap();
    let mut agent = Agent::start_with_env(
        &config,
        &[],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    socket.until("READY=1", DEADLINE);

    // Without WATCHDOG_USEC the only messages are the reload's own.
    let reload = |expect_status: &str| {
        let before = monotonic_usec();
        agent.signal("HUP");
        let reloading = socket.next(Instant::now() + DEADLINE);
        let after = monotonic_usec();
        assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
        let at: u64 = field(&reloading, "MONOTONIC_USEC")
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading}"))
            .parse()
            .unwrap();
        assert!(
            (before..=after).contains(&at),
            "{before} <= {at} <= {after}"
        );
        let done = socket.next(Instant::now() + DEADLINE);
        assert!(done.lines().any(|l| l == "READY=1"), "{done}");
        let status = field(&done, "STATUS").unwrap_or_default();
        assert!(status.starts_with(expect_status), "{done}");
    };
    reload("1 input(s), 1 webhook(s)");
    std::fs::write(&config, format!("{good}\n[agent.oops]\n")).unwrap();
    reload("reload refused (see the log or `tailhook status`); still running: 1 input(s)");
    std::fs::write(&config, good).unwrap();
    reload("1 input(s), 1 webhook(s)");

    agent.signal("TERM");
    assert_eq!(socket.until("STOPPING=1", DEADLINE).len(), 1);
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
}

#[test]
fn abstract_notify_socket_gets_ready_and_no_pings_without_a_watchdog() {
    let setup = Setup::new();
    let name = format!("tailhook-test-{}-{:?}", std::process::id(), Instant::now());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = NotifySocket(UnixDatagram::bind_addr(&address).unwrap());
    let config = quiet_config(&setup);
    let mut agent = Agent::start_with_env(&config, &[], &[("NOTIFY_SOCKET", &format!("@{name}"))]);

    assert_eq!(socket.until("READY=1", DEADLINE).len(), 1);
    agent.signal("TERM");
    // Without WATCHDOG_USEC nothing is sent between READY and STOPPING.
    let after_ready = socket.until("STOPPING=1", DEADLINE);
    assert_eq!(after_ready.len(), 1, "{after_ready:?}");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
}

#[test]
fn json_log_format_writes_one_object_per_line_without_secrets() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    setup.append("auth.log", &[failed_line(1)]);
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "start_at = \"beginning\"",
            webhook: "batch_timeout = \"100ms\"",
        },
    );
    let mut agent =
        Agent::start_with_env(&config, &["--log-format", "json"], &[] as &[(&str, &str)]);
    receiver.wait_for_events(1, DEADLINE);
    agent.wait_for_log("batch delivered", DEADLINE);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    let logs = agent.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    // serde_json keeps the last of two equal keys; jq and Python lose one too.
    for line in logs.lines() {
        serde_json::from_str::<UniqueKeys>(line)
            .unwrap_or_else(|e| panic!("a key appears twice ({e}): {line}"));
    }
    let ready = lines
        .iter()
        .find(|l| l["message"] == "webhook ready")
        .expect("a webhook ready line");
    assert_eq!(
        ready["target"], "tailhook::pipeline",
        "tracing's target: {ready}"
    );
    assert!(ready["url"].is_string(), "{ready}");
    let delivered = lines
        .iter()
        .find(|l| l["message"] == "batch delivered")
        .expect("a delivery log line");
    assert_eq!(delivered["level"], "INFO");
    assert_eq!(delivered["webhook"], "soc");
    assert_eq!(delivered["events"], 1);
    assert!(delivered["timestamp"].is_string(), "{delivered}");
    assert!(
        lines.iter().any(|l| l["message"] == "tailhook running"),
        "{logs}"
    );
    assert!(!logs.contains(API_KEY), "{logs}");
    assert!(!logs.contains("api_key"), "{logs}");
}

/// A JSON value that refuses an object holding one key twice, at any depth.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}

#[test]
fn journald_log_format_prefixes_priorities_and_leaves_time_to_the_journal() {
    let setup = Setup::new();
    let config = quiet_config(&setup);
    let mut agent = Agent::start_with_env(&config, &[], &[("TAILHOOK_LOG_FORMAT", "journald")]);
    agent.wait_for_log("tailhook running", DEADLINE);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    let logs = agent.logs();
    let running = logs
        .lines()
        .find(|l| l.contains("tailhook running"))
        .unwrap();
    assert!(
        running.starts_with("<6> INFO tailhook::pipeline: tailhook running"),
        "{running}"
    );
    assert!(!logs.contains('\u{1b}'), "no colours: {logs}");
}

fn run_tailhook(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "check",
    "test-rules",
    "send",
    "status",
    "tap",
    "dead-letter",
];

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    run_tailhook(&["generate", "man", dir.path().to_str().unwrap()]);
    let main_page = std::fs::read_to_string(dir.path().join("tailhook.1")).unwrap();
    assert!(main_page.contains(".TH tailhook 1"), "{main_page}");
    for command in SUBCOMMANDS {
        let roff_name = command.replace('-', "\\-");
        assert!(
            main_page.contains(&format!("tailhook\\-{roff_name}(1)")),
            "tailhook(1) lists {command}: {main_page}"
        );
        let page = std::fs::read_to_string(dir.path().join(format!("tailhook-{command}.1")))
            .unwrap_or_else(|e| panic!("tailhook-{command}.1: {e}"));
        assert!(page.contains("\\-\\-config"), "{command} page: {page}");
    }
    assert!(
        !dir.path().join("tailhook-generate.1").exists(),
        "generate is hidden"
    );
}

/// The keys a section accepts, from the error about an unknown key in it
/// (the parsers' own lists, so a key added to the code is a key checked here).
fn known_keys(stderr: &str) -> Vec<String> {
    let list = stderr
        .split_once("known here: ")
        .or_else(|| stderr.split_once("expected one of "))
        .or_else(|| stderr.split_once("expected "))
        .unwrap_or_else(|| panic!("no list of known keys in: {stderr}"))
        .1;
    let list = list.lines().next().unwrap();
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Whether a section-5 page documents `key`: as a bold term or a section.
fn documents(page: &str, key: &str) -> bool {
    page.lines().any(|line| {
        let bold = line
            .strip_prefix(".BR ")
            .or_else(|| line.strip_prefix(".B "))
            .is_some_and(|rest| {
                rest.split(|c: char| c.is_whitespace() || c == ',' || c == '"')
                    .any(|word| word == key)
            });
        let section = line.strip_prefix(".SH [").is_some_and(|header| {
            header
                .trim_matches(|c| c == '[' || c == ']')
                .split('.')
                .any(|part| part == key)
        });
        bold || section
    })
}

fn stderr_of(args: &[&str], file: &std::path::Path) -> String {
    let out = Command::new(binary())
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn file_format_pages_document_every_key_the_parsers_accept() {
    let dir = tempfile::tempdir().unwrap();
    run_tailhook(&["generate", "man", dir.path().to_str().unwrap()]);
    let config_page = std::fs::read_to_string(dir.path().join("tailhook.toml.5")).unwrap();
    let rules_page = std::fs::read_to_string(dir.path().join("tailhook-rules.5")).unwrap();
    assert!(
        config_page.starts_with(".TH TAILHOOK.TOML 5"),
        "{config_page}"
    );
    assert!(
        rules_page.starts_with(".TH TAILHOOK-RULES 5"),
        "{rules_page}"
    );
    for word in ["SIGTERM", "SIGINT", "SIGHUP", "78"] {
        assert!(config_page.contains(word), "tailhook.toml(5) names {word}");
    }

    let setup = Setup::new();
    let unknown = "zz_not_a_key = 1\n";
    for section in [
        "",
        "[agent]\n",
        "[rules]\n",
        "[[input]]\nname = \"a\"\npaths = [\"x\"]\n",
        "[webhook.x]\nurl = \"-\"\n",
        "[[route]]\nrules = [\"*\"]\nwebhooks = [\"x\"]\n",
        "[fleet]\nredis_url = \"redis://h\"\n",
    ] {
        let config = setup.write_config(&format!("{section}{unknown}"));
        let keys = known_keys(&stderr_of(&["check", "-c"], &config));
        assert!(!keys.is_empty());
        for key in keys {
            assert!(
                documents(&config_page, &key),
                "tailhook.toml(5) does not document `{key}` of {section:?}"
            );
        }
    }
    let rule = "[[rule]]\nid = \"a\"\nregex = '(?P<x>.)'\n";
    for section in [
        String::new(),
        rule.to_string(),
        format!("{rule}[[rule.example]]\nline = \"x\"\n"),
        "[[override]]\nrules = [\"a\"]\n".to_string(),
    ] {
        let file = setup.path("rules/keys.toml");
        std::fs::write(&file, format!("{section}{unknown}")).unwrap();
        let keys = known_keys(&stderr_of(&["test-rules", "--rules"], &file));
        for key in keys {
            assert!(
                documents(&rules_page, &key),
                "tailhook-rules(5) does not document `{key}` of {section:?}"
            );
        }
    }
}

/// Runs groff with every warning on; outside CI a machine without groff skips.
fn groff_warnings(page: &std::path::Path) -> Option<String> {
    match Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "groff failed on {}", page.display());
            Some(String::from_utf8_lossy(&out.stderr).into_owned())
        }
        Err(e) => {
            missing_prerequisite(&format!(
                "groff not runnable ({e}); section-5 pages not rendered"
            ));
            None
        }
    }
}

#[test]
fn file_format_pages_render_without_warnings_and_their_examples_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    run_tailhook(&["generate", "man", dir.path().to_str().unwrap()]);
    for page in ["tailhook.toml.5", "tailhook-rules.5"] {
        if let Some(warnings) = groff_warnings(&dir.path().join(page)) {
            assert_eq!(warnings, "", "{page}");
        }
    }
    let example = |page: &str| -> String {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        let start = text.find(".EX\n").expect("an example") + 4;
        let end = start + text[start..].find(".EE\n").unwrap();
        text[start..end].replace("\\(aq", "'").replace("\\\\", "\\")
    };
    let setup = Setup::new();
    let rules = setup.path("man-rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/rules/sshd.toml"),
        rules.join("sshd.toml"),
    )
    .unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/rules/sudo.toml"),
        rules.join("sudo.toml"),
    )
    .unwrap();
    std::fs::write(rules.join("local.toml"), example("tailhook-rules.5")).unwrap();
    let config = setup.write_config(&example("tailhook.toml.5"));
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .env(
            "SOC_WEBHOOK_URL",
            "https://example.test/webhooks/1?api_key=k",
        )
        .env(
            "TAILHOOK_RULES__PATHS",
            format!("[{:?}]", rules.display().to_string()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The example's logs (/var/log/auth.log, /var/log/secure) need not
    // exist on this machine; any other warning is the page's fault.
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("warning") && !l.contains("matches no file")),
        "{stderr}"
    );
    assert!(
        stdout.contains("override sshd.publickey_failed: disabled"),
        "{stdout}"
    );
}

#[test]
fn bash_completes_webhook_names_from_the_config_on_the_line() {
    let setup = Setup::new();
    let config = setup.write_config(
        "[webhook.soc]\nurl = \"-\"\n[webhook.slack-ops]\nurl = \"-\"\n[webhook.other]\nurl = \"-\"\n",
    );
    let script = setup.path("tailhook.bash");
    std::fs::write(&script, run_tailhook(&["generate", "completions", "bash"])).unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(
                "source \"$1\"; shift; COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); \
                 _tailhook_webhooks; printf '%s\\n' \"${COMPREPLY[@]}\"",
            )
            .arg("bash")
            .arg(&script)
            .args(words)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names
    };
    let config = config.to_str().unwrap();
    assert_eq!(
        complete(&[binary(), "send", "-c", config, "--webhook", "s"]),
        ["slack-ops", "soc"]
    );
    assert_eq!(
        complete(&[binary(), "send", "--config", config, "--webhook", ""]),
        ["other", "slack-ops", "soc"]
    );
    // A config that does not load completes nothing, and says nothing.
    assert_eq!(
        complete(&[binary(), "send", "-c", "/nonexistent.toml", "--webhook", ""]),
        Vec::<String>::new()
    );
}

/// A config with three webhooks, two of them starting with `s`.
fn three_webhooks(setup: &Setup) -> String {
    setup
        .write_config(
            "[webhook.soc]\nurl = \"-\"\n[webhook.slack-ops]\nurl = \"-\"\n[webhook.other]\nurl = \"-\"\n",
        )
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs `shell` with `args`; `None` (after saying so) when it is not installed.
fn shell_output(shell: &str, args: &[&str]) -> Option<Vec<String>> {
    let out = match Command::new(shell).args(args).output() {
        Ok(out) => out,
        Err(e) => {
            missing_prerequisite(&format!(
                "{shell} not runnable ({e}); its completion not run"
            ));
            return None;
        }
    };
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    Some(lines)
}

#[test]
fn fish_completes_webhook_names_from_the_config_on_the_line() {
    let setup = Setup::new();
    let config = three_webhooks(&setup);
    let script = setup.path("tailhook.fish");
    std::fs::write(&script, run_tailhook(&["generate", "completions", "fish"])).unwrap();
    // fish's own completion engine, as at a prompt: `complete -C LINE`
    // prints each candidate, a tab, and its description.
    let complete = |line: String| {
        let names = shell_output(
            "fish",
            &[
                "--no-config",
                "-c",
                &format!("source {}; complete -C '{line}'", script.display()),
            ],
        )?;
        Some(
            names
                .iter()
                .map(|n| n.split('\t').next().unwrap().to_string())
                .collect::<Vec<_>>(),
        )
    };
    let Some(send) = complete(format!("{} send -c {config} --webhook s", binary())) else {
        return;
    };
    assert_eq!(send, ["slack-ops", "soc"]);
    assert_eq!(
        complete(format!(
            "{} dead-letter replay --config {config} --webhook ",
            binary()
        ))
        .unwrap(),
        ["other", "slack-ops", "soc"]
    );
    assert_eq!(
        complete(format!("{} tap -c {config} --webhook o", binary())).unwrap(),
        ["other"]
    );
    // A config that does not load completes nothing, and says nothing.
    assert_eq!(
        complete(format!("{} send -c /nonexistent.toml --webhook ", binary())).unwrap(),
        Vec::<String>::new()
    );
    // Only the commands that take --webhook offer it.
    assert_eq!(
        complete(format!("{} check --web", binary())).unwrap(),
        Vec::<String>::new()
    );
}

/// Types LINE and a tab into an interactive zsh (in a pseudo-terminal)
/// whose completion system loads `_tailhook` from DIR, and prints what the
/// completion offered through `compadd -a` (how `_tailhook_webhooks` offers
/// the names), once the tab's completion has finished.
const ZSH_TYPE_AND_TAB: &str = r#"
zmodload zsh/zpty || exit 1
dir=$1 line=$2 log=$1/offered
: >$log
zpty z zsh -f -i
zpty -w z "fpath=($dir \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z "compadd() { [[ \$1 == -a ]] && print -rl -- \${(P)2} >>$log; builtin compadd \"\$@\" }"
zpty -w z "tab_then_mark() { zle expand-or-complete; print -r -- --done-- >>$log }; zle -N tab_then_mark; bindkey '^I' tab_then_mark"
zpty -w -n z "$line"$'\t'
for i in {1..400}; do grep -qx -- --done-- $log && break; sleep 0.05; done
zpty -d z
grep -qx -- --done-- $log || { print -u2 "the completion did not finish"; exit 1 }
grep -vx -- --done-- $log
"#;

#[test]
fn zsh_completes_webhook_names_from_the_config_on_the_line() {
    let setup = Setup::new();
    let config = three_webhooks(&setup);
    let functions = setup.path("zsh-functions");
    std::fs::create_dir(&functions).unwrap();
    std::fs::write(
        functions.join("_tailhook"),
        run_tailhook(&["generate", "completions", "zsh"]),
    )
    .unwrap();
    // zsh's own completion system, as at a prompt.
    let offered = |line: String| {
        shell_output(
            "zsh",
            &[
                "-f",
                "-c",
                ZSH_TYPE_AND_TAB,
                "zsh",
                functions.to_str().unwrap(),
                &line,
            ],
        )
    };
    let Some(send) = offered(format!("{} send -c {config} --webhook ", binary())) else {
        return;
    };
    assert_eq!(send, ["other", "slack-ops", "soc"]);
    // A nested subcommand, the config given to the command above it.
    assert_eq!(
        offered(format!(
            "{} --log-format json dead-letter --config {config} replay --webhook s",
            binary()
        ))
        .unwrap(),
        ["other", "slack-ops", "soc"]
    );
    assert_eq!(
        offered(format!("{} send -c /nonexistent.toml --webhook ", binary())).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn shell_completions_cover_every_subcommand() {
    let bash = run_tailhook(&["generate", "completions", "bash"]);
    assert!(bash.contains("complete -F _tailhook"), "{bash}");
    for command in SUBCOMMANDS {
        assert!(bash.contains(command), "bash completes {command}");
    }
    assert!(bash.contains("--log-format"), "{bash}");
    for shell in ["zsh", "fish"] {
        let script = run_tailhook(&["generate", "completions", shell]);
        for command in SUBCOMMANDS {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
}

#[test]
fn status_send_and_check_exit_1_on_a_config_error_naming_file_line_and_key_once() {
    let setup = Setup::new();
    let config = setup.write_config(
        "[agent]\nstate_dir = \"state\"\nstat_dir = \"/tmp\"\n[webhook.soc]\nurl = \"-\"\n",
    );
    let located = format!(
        "{}:3:1: agent.stat_dir: unknown key `stat_dir`; did you mean `state_dir`?",
        config.display()
    );
    for command in [
        &["status"][..],
        &["status", "--json"],
        &["send", "--webhook", "soc"],
        &["check"],
    ] {
        let out = tailhook(&config, command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", text(&out));
        assert_eq!(stderr.matches(&located).count(), 1, "{command:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{command:?}: {}", text(&out));
    }
}

#[test]
fn a_config_error_stops_run_with_exit_78_so_systemd_does_not_restart_it() {
    let setup = Setup::new();
    let config = setup.write_config("[agent]\nstat_dir = \"/tmp\"\n");
    let mut agent = Agent::start(&config);
    assert_eq!(agent.wait_exit(DEADLINE), Some(78), "{}", agent.logs());
    let located = format!(
        "{}:2:1: agent.stat_dir: unknown key `stat_dir`; did you mean `state_dir`?",
        config.display()
    );
    assert_eq!(
        agent.logs().matches(&located).count(),
        1,
        "{}",
        agent.logs()
    );
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/tailhook.service"
    ))
    .unwrap();
    assert!(
        unit.lines().any(|l| l == "RestartPreventExitStatus=78"),
        "{unit}"
    );
}

#[test]
fn a_state_dir_that_cannot_be_created_stops_the_start_naming_file_and_key() {
    let setup = Setup::new();
    setup.append("auth.log", &[noise_line(1)]);
    let config = setup.agent_config("-", ConfigKeys::default());
    let state_dir = setup.path("auth.log/state");
    let socket_path = setup.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut agent = Agent::start_with_env(
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("TAILHOOK_AGENT__STATE_DIR", state_dir.to_str().unwrap()),
        ],
    );
    assert_eq!(agent.wait_exit(DEADLINE), Some(1));
    let logs = agent.logs();
    assert!(
        logs.contains(&format!(
            "{}: agent.state_dir: cannot create",
            config.display()
        )),
        "{logs}"
    );
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    assert!(
        socket.recv(&mut buf).is_err(),
        "no READY=1 for a failed start"
    );
}

/// `tailhook check` on a config every user can read that holds a webhook's
/// key logs one warning; its stderr is a file whose device and inode the
/// test knows, as systemd's journal stream would be.
fn warning_with_journal_stream(
    journal_stream: impl FnOnce(&std::fs::Metadata) -> String,
) -> String {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let config = setup.agent_config(
        "https://example.test/webhooks/1?api_key=hunter2",
        ConfigKeys::default(),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr_path = setup.path("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let stream = journal_stream(&stderr.metadata().unwrap());
    let status = Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .env("JOURNAL_STREAM", stream)
        .env_remove("TAILHOOK_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(stderr_path).unwrap()
}

#[test]
fn journald_format_is_the_default_only_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let journal = warning_with_journal_stream(|m| format!("{}:{}", m.dev(), m.ino()));
    assert!(journal.starts_with("<4> WARN "), "{journal}");

    let elsewhere = warning_with_journal_stream(|m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(elsewhere.contains(" WARN "), "{elsewhere}");
    assert!(
        !elsewhere.starts_with('<'),
        "human, with a time: {elsewhere}"
    );
}
