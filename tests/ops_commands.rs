//! The operational surface of the real binary: `status` (through the
//! running agent's control socket, and from the state files once it is
//! stopped), `send` (charged to the same budget either way), and the
//! `/metrics` and `/health` endpoint, against the loopback receiver.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// `send` to `soc` with a 1 s `--timeout`: too short to wait for a 2/15s window.
fn send_within_a_second(config: &Path, data: &str) -> Output {
    tailhook(
        config,
        &[
            "send",
            "--webhook",
            "soc",
            "--data",
            data,
            "--timeout",
            "1s",
        ],
    )
}

/// A receiver answering every request with `failing` (0: as SecureX
/// would), and a config (the support one, with `keys`) that posts to it.
fn receiver_and_config(failing: u16, keys: ConfigKeys) -> (Receiver, Setup, PathBuf) {
    let receiver = Receiver::start(ReceiverOptions::default());
    receiver.set_failing(failing);
    let setup = Setup::new();
    let config = setup.agent_config(&receiver.url, keys);
    (receiver, setup, config)
}

#[test]
fn status_shows_queue_offsets_lag_budget_and_last_error_while_running_and_once_stopped() {
    let (receiver, setup, config) = receiver_and_config(
        429,
        ConfigKeys {
        agent: "poll_interval = \"100ms\"\nshutdown_timeout = \"1s\"",
        input: "start_at = \"beginning\"",
        webhook: "rate_limits = [\"2/1m\", \"5000/1d\"]\nbatch_timeout = \"20ms\"\nmax_retry_delay = \"200ms\"",
    },
    );

    // Before the agent ever ran: a report, and no state created by it.
    let before = status_json(&config);
    assert_eq!(before["agent"], "stopped");
    assert_eq!(before["webhooks"][0]["queued_events"], 0);
    assert!(!setup.path("state").exists(), "status created state");

    setup.append("auth.log", &(1..=3).map(failed_line).collect::<Vec<_>>());
    let log_size = std::fs::metadata(setup.path("auth.log")).unwrap().len();
    let mut agent = Agent::start(&config);
    // Two attempts spend the 2/1m window; the events stay queued.
    wait_until(DEADLINE, "two refused attempts", || {
        receiver.requests().len() >= 2
    });
    let mut running = serde_json::Value::Null;
    wait_until(
        DEADLINE,
        "status to show the queue and committed offset",
        || {
            running = status_json(&config);
            running["webhooks"][0]["queued_events"] == 3
                && running["inputs"][0]["files"][0]["offset"] == log_size
                && running["webhooks"][0]["last_error"].is_object()
        },
    );
    assert_eq!(running["agent"], "running");
    let file = &running["inputs"][0]["files"][0];
    assert_eq!(file["lag"], 0, "{running}");
    assert!(file["path"].as_str().unwrap().ends_with("auth.log"));
    let webhook = &running["webhooks"][0];
    assert_eq!(webhook["name"], "soc");
    assert_eq!(webhook["budget"][0]["window"], "2/1m");
    assert_eq!(webhook["budget"][0]["used"], 2, "{running}");
    assert_eq!(webhook["budget"][1]["window"], "5000/1d");
    assert_eq!(webhook["budget"][1]["used"], 2);
    assert!(webhook["budget"][0]["free_in_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        webhook["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("429"),
        "{running}"
    );
    assert!(webhook["oldest_age_seconds"].is_u64());
    assert_eq!(webhook["dead_lettered"]["events"], 0);
    let table = text(&tailhook(&config, &["status"]));
    assert!(table.contains("agent: running"), "{table}");
    assert!(table.contains("2/1m: 2 used"), "{table}");
    assert!(table.contains("5000/1d: 2 used"), "{table}");
    assert!(table.contains("queued:        3 events"), "{table}");

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    assert!(
        !setup.path("state/control.sock").exists(),
        "socket removed on exit"
    );
    // Lines written while stopped are lag.
    setup.append("auth.log", &[failed_line(4)]);
    let grown = std::fs::metadata(setup.path("auth.log")).unwrap().len();

    let stopped = status_json(&config);
    assert_eq!(stopped["agent"], "stopped");
    let file = &stopped["inputs"][0]["files"][0];
    assert_eq!(file["offset"], log_size);
    assert_eq!(file["size"], grown);
    assert_eq!(file["lag"], grown - log_size);
    let webhook = &stopped["webhooks"][0];
    assert_eq!(webhook["queued_events"], 3, "{stopped}");
    // Two attempts, maybe more during the shutdown grace once the window
    // had room again: at least what the running agent showed.
    assert!(webhook["budget"][0]["used"].as_u64().unwrap() >= 2);
    assert_eq!(
        webhook["budget"][1]["used"],
        receiver.requests().len() as u64,
        "every attempt is charged and remembered"
    );
    assert_eq!(webhook["last_error"], running["webhooks"][0]["last_error"]);
    let table = text(&tailhook(&config, &["status"]));
    assert!(table.contains("agent: stopped"), "{table}");

    let everything = format!("{}{running}{stopped}{table}", agent.logs());
    assert!(!everything.contains("k3y"), "api_key leaked");
}

#[test]
fn status_counts_dead_letters_in_both_modes() {
    let (_receiver, setup, config) = receiver_and_config(
        400,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"\nshutdown_timeout = \"1s\"",
            input: "start_at = \"beginning\"",
            webhook: "batch_timeout = \"20ms\"",
        },
    );
    setup.append("auth.log", &(1..=2).map(failed_line).collect::<Vec<_>>());
    let mut agent = Agent::start(&config);
    agent.wait_for_log("written to the dead-letter file", DEADLINE);
    let dead = |report: &serde_json::Value| report["webhooks"][0]["dead_lettered"].clone();
    let mut running = serde_json::Value::Null;
    wait_until(DEADLINE, "both events dead-lettered", || {
        running = status_json(&config);
        dead(&running)["events"] == 2
    });
    assert_eq!(running["agent"], "running");
    agent.signal("TERM");
    agent.wait_exit(DEADLINE);
    let stopped = status_json(&config);
    assert_eq!(dead(&stopped), dead(&running));
    assert!(stopped["webhooks"][0]["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("400"));
}

#[test]
fn send_is_charged_to_the_agents_budget_while_it_runs_and_to_the_stored_one_once_stopped() {
    let (receiver, setup, config) = receiver_and_config(
        0,
        ConfigKeys {
            agent: "shutdown_timeout = \"1s\"",
            input: "",
            webhook: "rate_limits = [\"2/15s\", \"100/1d\"]",
        },
    );
    std::fs::write(setup.path("auth.log"), "").unwrap();

    // Mistakes are refused before anything is sent.
    let output = tailhook(&config, &["send", "--webhook", "nope"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no webhook named `nope` (configured: soc)"),
        "{}",
        text(&output)
    );
    let output = tailhook(
        &config,
        &["send", "--webhook", "soc", "--data", "{\"source.ip\": }"],
    );
    assert!(!output.status.success());
    assert!(text(&output).contains("--data is not valid JSON"));
    assert!(text(&output).contains("column 15"), "{}", text(&output));
    let output = tailhook(&config, &["send", "--webhook", "soc", "--data", "[1]"]);
    assert!(text(&output).contains("must be a JSON object"));
    assert!(receiver.requests().is_empty());

    let mut agent = Agent::start(&config);
    wait_until(DEADLINE, "the control socket", || {
        setup.path("state/control.sock").exists()
    });
    let data = "{\"source.ip\": \"203.0.113.7\", \"user.name\": \"root\"}";
    for _ in 0..2 {
        let output = tailhook(&config, &["send", "--webhook", "soc", "--data", data]);
        assert!(output.status.success(), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("soc: HTTP 202 after 1 attempt(s)"),
            "{}",
            text(&output)
        );
    }
    // The third would exceed 2/15s: with a short --timeout it fails at once
    // and says when the budget frees; nothing is sent.
    let started = Instant::now();
    let output = send_within_a_second(&config, data);
    assert!(!output.status.success());
    let said = text(&output);
    assert!(said.contains("not sent within 1.0s"), "{said}");
    assert!(said.contains("2/15s"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(receiver.requests().len(), 2);
    let events = receiver.events();
    assert_eq!(events[0]["rule"], "manual");
    assert_eq!(events[0]["severity"], "info");
    assert_eq!(events[0]["fields"]["source.ip"], "203.0.113.7");
    assert!(receiver
        .requests()
        .iter()
        .all(|r| r.status == 202 && r.content_type == "application/json"));
    let report = status_json(&config);
    assert_eq!(report["webhooks"][0]["budget"][0]["used"], 2);

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));

    // Stopped: the budget spent through the agent still counts.
    let output = send_within_a_second(&config, data);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("no agent is running"));
    assert!(text(&output).contains("allow the next request in"));
    assert_eq!(receiver.requests().len(), 2);
    // Given the time, it waits for the window, says so, and goes out.
    let data_file = setup.path("data.json");
    std::fs::write(&data_file, data).unwrap();
    let output = tailhook(
        &config,
        &[
            "send",
            "--webhook",
            "soc",
            "--data-file",
            data_file.to_str().unwrap(),
            "--timeout",
            "30s",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("waiting")
            && text(&output).contains("rate-limit budget (2/15s, 100/1d)"),
        "{}",
        text(&output)
    );
    assert_eq!(receiver.events().len(), 3);
    let stopped = status_json(&config);
    // The day remembers all three sends, through the agent or not.
    assert_eq!(stopped["webhooks"][0]["budget"][1]["used"], 3, "{stopped}");
    let everything = format!("{}{}{stopped}", agent.logs(), text(&output));
    assert!(!everything.contains("k3y"), "api_key leaked");
}

#[test]
fn a_failing_send_retries_then_reports_the_final_failure() {
    let (receiver, _setup, config) = receiver_and_config(
        503,
        ConfigKeys {
            agent: "",
            input: "",
            webhook: "max_retry_delay = \"300ms\"",
        },
    );
    let output = tailhook(&config, &["send", "--webhook", "soc", "--timeout", "2s"]);
    assert!(!output.status.success());
    let said = text(&output);
    assert!(said.contains("attempt 1 failed: 503"), "{said}");
    assert!(said.contains("not sent within 2.0s"), "{said}");
    assert!(receiver.requests().len() >= 2, "retried");
    assert!(!said.contains("k3y"), "api_key leaked");

    receiver.set_failing(400);
    let output = tailhook(&config, &["send", "--webhook", "soc"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("rejected the event with HTTP 400"),
        "{}",
        text(&output)
    );
}

#[test]
fn metrics_and_health_are_served_on_loopback_without_secrets() {
    let keys = ConfigKeys {
        // Port 0: the system picks a free one, and the agent logs it.
        agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"",
        input: "",
        webhook: "rate_limits = [\"100/1m\"]\nbatch_timeout = \"20ms\"",
    };
    let (receiver, setup, config) = receiver_and_config(0, keys);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let agent = Agent::start(&config);
    let port = agent.metrics_port(DEADLINE);
    let health = http_get(port, "/health");
    assert_eq!(health.unwrap().0, 200);

    let (code, before) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        sample(&before, "tailhook_lines_read_total{input=\"auth\"}"),
        0.0
    );
    let mut lines: Vec<String> = (1..=5).map(failed_line).collect();
    lines.push(noise_line(6));
    setup.append("auth.log", &lines);
    receiver.wait_for_events(5, DEADLINE);
    let mut after = String::new();
    // The sent counter moves when the receiver answers, a moment before the
    // events leave the queue: wait for both.
    wait_until(
        DEADLINE,
        "the counters to move and the queue to empty",
        || {
            after = http_get(port, "/metrics").unwrap().1;
            sample(&after, "tailhook_events_sent_total{webhook=\"soc\"}") == 5.0
                && sample(&after, "tailhook_queue_events{webhook=\"soc\"}") == 0.0
        },
    );
    for (series, value) in [
        ("tailhook_lines_read_total{input=\"auth\"}", 6.0),
        (
            "tailhook_rule_matches_total{rule=\"test.auth_failed\"}",
            5.0,
        ),
        ("tailhook_events_queued_total{webhook=\"soc\"}", 5.0),
        ("tailhook_events_dead_lettered_total{webhook=\"soc\"}", 0.0),
        ("tailhook_queue_events{webhook=\"soc\"}", 0.0),
        ("tailhook_queue_oldest_age_seconds{webhook=\"soc\"}", 0.0),
    ] {
        assert_eq!(sample(&after, series), value, "{series}");
    }
    let log_bytes = std::fs::metadata(setup.path("auth.log")).unwrap().len();
    assert_eq!(
        sample(&after, "tailhook_bytes_read_total{input=\"auth\"}"),
        log_bytes as f64
    );
    let requests = sample(
        &after,
        "tailhook_requests_total{webhook=\"soc\",code=\"202\"}",
    );
    assert!(requests >= 1.0);
    assert_eq!(
        sample(
            &after,
            "tailhook_rate_limit_remaining{webhook=\"soc\",window=\"100/1m\"}"
        ),
        100.0 - requests
    );
    assert!(after.contains("# TYPE tailhook_requests_total counter"));
    assert!(
        !after.contains("k3y") && !after.contains("127.0.0.1:"),
        "{after}"
    );
    assert_eq!(http_get(port, "/nothing").unwrap().0, 404);
}

#[test]
fn after_sigkill_status_explains_the_queue_and_a_restart_replaces_the_stale_socket() {
    let (receiver, setup, config) = receiver_and_config(
        0,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "start_at = \"beginning\"",
            webhook: "batch_timeout = \"20ms\"",
        },
    );
    setup.append("auth.log", &[failed_line(1)]);
    let mut agent = Agent::start(&config);
    receiver.wait_for_events(1, DEADLINE);
    wait_until(DEADLINE, "the offset to be committed", || {
        status_json(&config)["inputs"][0]["files"][0]["lag"] == 0
    });
    agent.signal("KILL");
    agent.wait_exit(DEADLINE);
    assert!(setup.path("state/control.sock").exists(), "left behind");

    let report = status_json(&config);
    assert_eq!(report["agent"], "stopped");
    let problem = report["webhooks"][0]["problem"].as_str().unwrap();
    assert!(problem.contains("not closed cleanly"), "{problem}");
    assert_eq!(report["webhooks"][0]["budget"], serde_json::json!([]));
    assert_eq!(report["inputs"][0]["files"][0]["lag"], 0);

    let _agent = Agent::start(&config);
    let mut report = serde_json::Value::Null;
    wait_until(DEADLINE, "the restarted agent to answer", || {
        report = status_json(&config);
        report["agent"] == "running"
    });
    assert!(report["webhooks"][0]["problem"].is_null(), "{report}");
    assert_eq!(report["webhooks"][0]["queued_events"], 0);
}

#[test]
fn an_agent_started_while_a_direct_send_holds_the_queue_waits_for_it() {
    let keys = ConfigKeys {
        agent: "",
        input: "",
        webhook: "rate_limits = [\"1/3s\", \"100/1d\"]",
    };
    let (receiver, setup, config) = receiver_and_config(0, keys);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let first = tailhook(&config, &["send", "--webhook", "soc"]);
    assert!(first.status.success(), "{}", text(&first));

    // The second waits for the 1/3s window, holding the queue meanwhile.
    let mut second = Command::new(binary())
        .args(["send", "--webhook", "soc", "--timeout", "20s", "-c"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(second.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("waiting") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "send ended without waiting for budget"
        );
    }
    let agent = Agent::start(&config);
    agent.wait_for_log("waiting for the queue", DEADLINE);
    assert!(second.wait().unwrap().success());
    agent.wait_for_log("tailhook running", DEADLINE);
    assert_eq!(receiver.requests().len(), 2);
    let report = status_json(&config);
    assert_eq!(report["agent"], "running");
    assert_eq!(report["webhooks"][0]["budget"][1]["used"], 2);
}

/// Checks the exposition text: every sample's family has `# HELP` and
/// `# TYPE`, names and labels are well-formed, counters end in `_total`,
/// values are numbers. Returns the family names.
fn valid_families(metrics: &str) -> Vec<String> {
    let sample = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (\S+)$"#,
    )
    .unwrap();
    let mut types = std::collections::BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "counters and only counters end in _total: {line}"
            );
            types.insert(name.to_string(), kind.to_string());
        } else {
            let captures = sample
                .captures(line)
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let name = &captures[1];
            assert!(
                types.contains_key(name) && helped.contains(name),
                "{name} has HELP and TYPE"
            );
            let value: f64 = captures[3].parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(value.is_finite() && value >= 0.0, "{line}");
        }
    }
    types.into_keys().collect()
}

#[test]
fn metrics_are_valid_and_true_and_health_degrades_past_stall_timeout_then_recovers() {
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"1s\"",
        input: "",
        webhook: "rate_limits = [\"100/1m\"]\nbatch_timeout = \"20ms\"\nmax_retry_delay = \"200ms\"\nstall_timeout = \"1s\"",
    };
    let (receiver, setup, config) = receiver_and_config(0, keys);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let agent = Agent::start(&config);
    let port = agent.metrics_port(DEADLINE);
    assert_eq!(
        http_get(port, "/health").unwrap(),
        (200, "{\"status\":\"ok\"}\n".to_string())
    );
    setup.append("auth.log", &[failed_line(1), failed_line(2)]);
    receiver.wait_for_events(2, DEADLINE);
    let mut metrics = String::new();
    wait_until(DEADLINE, "2 sent and the input read to its end", || {
        metrics = http_get(port, "/metrics").unwrap().1;
        sample(&metrics, "tailhook_events_sent_total{webhook=\"soc\"}") == 2.0
            && sample(&metrics, "tailhook_input_lag_bytes{input=\"auth\"}") == 0.0
    });
    let families = valid_families(&metrics);
    for name in [
        "tailhook_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "tailhook_input_lag_bytes",
        "tailhook_last_success_timestamp_seconds",
        "tailhook_dead_letter_batches_total",
        "tailhook_events_dead_lettered_total",
        "tailhook_rate_limit_waits_total",
    ] {
        assert!(
            families.iter().any(|f| f == name),
            "{name} missing in\n{metrics}"
        );
    }
    for secret in ["k3y", "api_key", "127.0.0.1", "/webhooks/", "01TEST"] {
        assert!(!metrics.contains(secret), "{secret} in\n{metrics}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "tailhook_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    let started = sample(&metrics, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
    assert!(sample(&metrics, "process_open_fds") >= 3.0);
    assert!(sample(&metrics, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&metrics, "process_cpu_seconds_total") >= 0.0);
    let success = sample(
        &metrics,
        "tailhook_last_success_timestamp_seconds{webhook=\"soc\"}",
    );
    assert!(success <= now + 1.0 && success > started - 1.0, "{success}");
    // 100/1m is never reached: no attempt waited, however many were made.
    assert!(
        sample(
            &metrics,
            "tailhook_requests_total{webhook=\"soc\",code=\"202\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(&metrics, "tailhook_rate_limit_waits_total{webhook=\"soc\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &metrics,
            "tailhook_rate_limit_wait_seconds_total{webhook=\"soc\"}"
        ),
        0.0
    );

    // The receiver goes down: once an event waited past stall_timeout with
    // no delivery, /health says so.
    receiver.set_failing(503);
    setup.append("auth.log", &[failed_line(3)]);
    let mut health = (0, String::new());
    wait_until(DEADLINE, "/health to report the stalled webhook", || {
        health = http_get(port, "/health").unwrap();
        health.0 == 503
    });
    let verdict: serde_json::Value = serde_json::from_str(&health.1).unwrap();
    assert_eq!(verdict["status"], "unhealthy", "{verdict}");
    let problem = verdict["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("webhook `soc`: 1 events waiting")
            && problem.contains("stall_timeout 1.0s"),
        "{problem}"
    );
    assert!(!health.1.contains("k3y"), "{}", health.1);
    let failing = http_get(port, "/metrics").unwrap().1;
    assert!(sample(&failing, "tailhook_retries_total{webhook=\"soc\"}") >= 1.0);
    assert_eq!(
        sample(&failing, "tailhook_queue_events{webhook=\"soc\"}"),
        1.0
    );

    // Back up: the event is delivered and /health recovers.
    receiver.set_failing(0);
    receiver.wait_for_events(3, DEADLINE);
    wait_until(DEADLINE, "/health to recover", || {
        http_get(port, "/health").unwrap().0 == 200
    });
    assert_eq!(sequences(&receiver.events()), [1, 2, 3]);
    let after = http_get(port, "/metrics").unwrap().1;
    assert!(
        sample(
            &after,
            "tailhook_last_success_timestamp_seconds{webhook=\"soc\"}"
        ) > success
    );
    drop(agent);
}

/// A webhook that is down with `when_full = "drop_oldest"` loses its own
/// oldest events once its lane is full; tailing goes on and the other
/// webhook receives every event, in order, once. `status`, the metric and
/// the log all say how many were dropped.
#[test]
fn a_dead_webhook_that_drops_its_oldest_events_holds_up_no_other() {
    // Nothing listens on a port bound and released just before.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let webhook = format!(
        "batch_timeout = \"20ms\"\n\
         [webhook.dead]\nurl = \"http://127.0.0.1:{dead_port}/x?api_key=deadkey\"\n\
         when_full = \"drop_oldest\"\nmax_queue_bytes = 3000\n\
         batch_timeout = \"20ms\"\nmax_retry_delay = \"200ms\""
    );
    let keys = ConfigKeys {
        agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"",
        input: "",
        webhook: &webhook,
    };
    let (receiver, setup, config) = receiver_and_config(0, keys);
    std::fs::write(setup.path("auth.log"), "").unwrap();
    let agent = Agent::start(&config);
    let marker = "serving /metrics and /health listen=127.0.0.1:";
    agent.wait_for_log(marker, DEADLINE);
    // The file is read from its end as first seen: write once it was seen.
    agent.wait_for_log("tailing file", DEADLINE);
    let total = 300;
    // Chunk by chunk, each through before the next: every chunk overfills
    // the dead webhook's lane, and none waits for it.
    for chunk in (1..=total).collect::<Vec<_>>().chunks(30) {
        setup.append(
            "auth.log",
            &chunk.iter().map(|&n| failed_line(n)).collect::<Vec<_>>(),
        );
        receiver.wait_for_events(*chunk.last().unwrap(), DEADLINE);
    }
    let events = receiver.events();
    assert_eq!(
        sequences(&events),
        (1..=total as i64).collect::<Vec<_>>(),
        "the live webhook got every event, in order, once"
    );

    let report = status_json(&config);
    let dead = &report["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "dead")
        .expect("the dead webhook in status")
        .clone();
    let dropped = dead["dropped_events"].as_u64().unwrap();
    let queued = dead["queued_events"].as_u64().unwrap();
    assert!(dropped > 0, "{dead}");
    assert_eq!(
        dropped + queued,
        total as u64,
        "dropped or still queued: {dead}"
    );
    let table = text(&tailhook(&config, &["status"]));
    assert!(
        table.contains(&format!("dropped:       {dropped} oldest events")),
        "{table}"
    );

    let logs = agent.logs();
    let after_marker = &logs[logs.find(marker).unwrap() + marker.len()..];
    let port: u16 = after_marker
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        sample(&metrics, "tailhook_events_dropped_total{webhook=\"dead\"}"),
        dropped as f64
    );
    assert_eq!(
        sample(&metrics, "tailhook_events_dropped_total{webhook=\"soc\"}"),
        0.0
    );
    // Logged, but at most once a minute however many chunks dropped some.
    let logged: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("dropped the webhook's oldest events to make room"))
        .collect();
    assert_eq!(logged.len(), 1, "{logs}");
    let logged_total: u64 = logged[0]
        .split_once("dropped_total=")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .expect("the log line carries the total");
    assert!(logged_total < dropped, "later drops were not logged again");
    assert!(!logs.contains("deadkey") && !logs.contains("k3y"), "{logs}");
}
