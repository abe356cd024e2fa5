//! Reload (SIGHUP, `systemctl reload`) with the real binary: under a steady
//! stream of numbered lines, reloads that add a rule and a webhook lose and
//! duplicate nothing; a broken config keeps the old one delivering and says
//! why in the log, `status` and `/metrics`; overrides and `ignore_ips` added
//! by a reload apply to the lines read after it.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// A rule for the `Accepted password` noise lines, added by a reload.
const ACCEPTED_RULE: &str = r#"
[[rule]]
id = "test.accepted"
severity = "low"
regex = '^seq=(?P<event.sequence>\d+) Accepted password for (?P<user.name>\S+) from (?P<source.ip>[0-9a-f.:]+) port (?P<source.port>\d+)$'
types = { "event.sequence" = "int", "source.port" = "int" }

[[rule.example]]
line = "seq=1 Accepted password for root from 192.0.2.1 port 22"
fields = { "event.sequence" = 1, "user.name" = "root", "source.ip" = "192.0.2.1", "source.port" = 22 }
"#;

fn config_text(soc: &str, extra: &str) -> String {
    format!(
        "[agent]\nstate_dir = \"state\"\npoll_interval = \"50ms\"\nmetrics_listen = \"127.0.0.1:0\"\n\
         [rules]\npaths = [\"rules\"]\n\
         [[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nstart_at = \"beginning\"\n\
         [webhook.soc]\nurl = \"{soc}\"\nbatch_timeout = \"50ms\"\n{extra}"
    )
}

fn reloads_logged(agent: &Agent) -> usize {
    agent.logs().matches("reloaded: ").count()
}

/// Reloads while the writer writes, and waits until a failure written
/// after the reload reached soc: the stream runs across every swap.
fn reload_under_load(agent: &Agent, writer: &Writer, soc: &Receiver) {
    reload(agent);
    let written = writer.written() as i64;
    wait_until(DEADLINE, "a line written after the reload at soc", || {
        numbers(soc).last().is_some_and(|&last| last > written)
    });
}

/// Sends SIGHUP and waits until the agent logged one more finished reload.
fn reload(agent: &Agent) {
    let before = reloads_logged(agent);
    agent.signal("HUP");
    wait_until(DEADLINE, "the reload to finish", || {
        reloads_logged(agent) > before
    });
}

/// Appends numbered lines to `auth.log` until stopped: every 5th is a
/// noise line (`Accepted`), the others failures. Returns the last number.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(setup: &Setup) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let path = setup.path("auth.log");
        let thread = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    let line = if seq % 5 == 0 {
                        noise_line(seq)
                    } else {
                        failed_line(seq)
                    };
                    writeln!(file, "{line}").unwrap();
                    written.store(seq, Ordering::SeqCst);
                    // Paces the load (about 500 lines/s); nothing waits on it.
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Writer {
            stop,
            written,
            thread,
        }
    }

    fn written(&self) -> usize {
        self.written.load(Ordering::SeqCst)
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.written.load(Ordering::SeqCst)
    }
}

fn numbers(receiver: &Receiver) -> Vec<i64> {
    let mut seen = sequences(&receiver.events());
    seen.sort_unstable();
    seen
}

#[test]
fn reloads_under_load_add_a_rule_and_a_webhook_and_lose_or_duplicate_nothing() {
    let soc = Receiver::start(ReceiverOptions::default());
    let chat = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = setup.write_config(&config_text(&soc.url, ""));
    let mut agent = Agent::start(&config);
    let writer = Writer::start(&setup);
    wait_until(DEADLINE, "events before any reload", || {
        !soc.events().is_empty()
    });

    reload_under_load(&agent, &writer, &soc);
    // A rule and a webhook for it, routed apart from the failures.
    std::fs::write(setup.path("rules/accepted.toml"), ACCEPTED_RULE).unwrap();
    setup.write_config(&config_text(
        &soc.url,
        &format!(
            "[webhook.chat]\nurl = \"{}\"\nbatch_timeout = \"50ms\"\n\
             [[route]]\nrules = [\"test.auth_failed\"]\nwebhooks = [\"soc\"]\n\
             [[route]]\nrules = [\"test.accepted\"]\nwebhooks = [\"chat\"]\n",
            chat.url
        ),
    ));
    reload(&agent);
    let written_after_second_reload = writer.written();
    wait_until(DEADLINE, "events of the added rule", || {
        !chat.events().is_empty()
    });
    for _ in 0..3 {
        reload_under_load(&agent, &writer, &soc);
    }
    let last = writer.finish();

    let failures: Vec<i64> = (1..=last as i64).filter(|n| n % 5 != 0).collect();
    wait_until(DEADLINE, "every failure at soc", || {
        numbers(&soc).len() >= failures.len()
    });
    let at_soc = numbers(&soc);
    assert_eq!(at_soc, failures, "soc got each failure exactly once");

    // The rule came with the second reload: every noise line read after it
    // matches, none twice, and nothing written after it is missed.
    let last_noise = last as i64 - last as i64 % 5;
    wait_until(DEADLINE, "the last noise line at chat", || {
        numbers(&chat).last() == Some(&last_noise)
    });
    let at_chat = numbers(&chat);
    let first = at_chat[0];
    assert!(
        first <= written_after_second_reload as i64 + 5,
        "lines written after the reload are matched by the new rule: first {first}, written {written_after_second_reload}"
    );
    let expected: Vec<i64> = (first..=last_noise).step_by(5).collect();
    assert_eq!(at_chat, expected, "chat got each noise line once");

    let status = status_json(&config);
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
    let port = agent.metrics_port(DEADLINE);
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        sample(&metrics, "tailhook_reloads_total{result=\"ok\"}"),
        5.0
    );
    assert_eq!(
        sample(&metrics, "tailhook_reloads_total{result=\"error\"}"),
        0.0
    );
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    assert!(!agent.logs().contains(API_KEY), "no secret in the logs");
}

#[test]
fn a_broken_reload_keeps_the_old_config_delivering_and_status_shows_why() {
    let soc = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let good = config_text(&soc.url, "");
    let config = setup.write_config(&good);
    let agent = Agent::start(&config);
    setup.append("auth.log", &[failed_line(1)]);
    soc.wait_for_events(1, DEADLINE);

    // A misspelt key on line 3 of the config.
    setup.write_config(&good.replace("poll_interval", "poll_intervall"));
    agent.signal("HUP");
    agent.wait_for_log("reload failed", DEADLINE);
    let logs = agent.logs();
    assert!(
        logs.contains("tailhook.toml:3") && logs.contains("poll_intervall"),
        "the log names the file, line and key:\n{logs}"
    );

    setup.append("auth.log", &[failed_line(2), failed_line(3)]);
    wait_until(DEADLINE, "lines after the failed reload", || {
        numbers(&soc) == [1, 2, 3]
    });
    let status = status_json(&config);
    let last = &status["last_reload"];
    assert_eq!(last["result"], "error", "{status}");
    let error = last["error"].as_str().unwrap();
    assert!(
        error.contains("tailhook.toml:3") && error.contains("poll_intervall"),
        "{error}"
    );
    let table = text(&tailhook(&config, &["status"]));
    assert!(
        table.contains("last reload:") && table.contains("poll_intervall"),
        "{table}"
    );
    let port = agent.metrics_port(DEADLINE);
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        sample(&metrics, "tailhook_reloads_total{result=\"error\"}"),
        1.0
    );

    // Fixed, the next reload takes.
    setup.write_config(&good);
    reload(&agent);
    assert_eq!(status_json(&config)["last_reload"]["result"], "ok");

    // A valid config that moves the state needs a restart: refused.
    setup.write_config(&good.replace("state_dir = \"state\"", "state_dir = \"moved\""));
    agent.signal("HUP");
    wait_until(DEADLINE, "the second failed reload", || {
        agent.logs().matches("reload failed").count() == 2
    });
    assert!(
        agent
            .logs()
            .contains("agent.state_dir changed: a reload cannot apply it; restart the agent"),
        "{}",
        agent.logs()
    );
    setup.append("auth.log", &[failed_line(4)]);
    wait_until(DEADLINE, "line 4 on the old config", || {
        numbers(&soc) == [1, 2, 3, 4]
    });
}

#[test]
fn overrides_and_ignore_ips_added_by_a_reload_apply_to_later_lines() {
    let soc = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = setup.write_config(&config_text(&soc.url, ""));
    let agent = Agent::start(&config);
    // Line n comes from 192.0.2.(n % 250 + 1): line 6 and 256 from 192.0.2.7.
    setup.append("auth.log", &(1..=10).map(failed_line).collect::<Vec<_>>());
    wait_until(DEADLINE, "the lines before the reload", || {
        numbers(&soc).len() == 10
    });

    std::fs::write(
        setup.path("rules/local.toml"),
        "[[override]]\nrules = [\"test.*\"]\nseverity = \"critical\"\nignore_ips = [\"192.0.2.7\"]\n",
    )
    .unwrap();
    reload(&agent);
    assert!(
        agent.logs().contains("test.auth_failed"),
        "the log says what the override changed"
    );
    setup.append(
        "auth.log",
        &(256..=260).map(failed_line).collect::<Vec<_>>(),
    );
    wait_until(DEADLINE, "the lines after the reload", || {
        numbers(&soc).len() == 14
    });
    let events = soc.events();
    assert_eq!(
        numbers(&soc),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 257, 258, 259, 260],
        "line 256, from an ignored address, made no event"
    );
    for event in &events {
        let seq = event["fields"]["event.sequence"].as_i64().unwrap();
        let expected = if seq > 10 { "critical" } else { "high" };
        assert_eq!(event["severity"], expected, "{event}");
    }
}

#[test]
fn a_webhook_whose_url_changes_keeps_its_queued_events_and_rate_limit_usage() {
    let before = Receiver::start(ReceiverOptions::default());
    let after = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    // Greedy: each line goes as soon as the window allows.
    let limits = "rate_limits = [\"2/10s\"]\npacing = false\n";
    let config = setup.write_config(&config_text(&before.url, limits));
    let agent = Agent::start(&config);
    setup.append("auth.log", &[failed_line(1)]);
    before.wait_for_events(1, DEADLINE);
    setup.append("auth.log", &[failed_line(2)]);
    before.wait_for_events(2, DEADLINE);
    let window_full = std::time::Instant::now();
    // The window is spent: line 3 waits in soc's lane.
    setup.append("auth.log", &[failed_line(3)]);
    wait_until(DEADLINE, "line 3 queued", || {
        status_json(&config)["webhooks"][0]["queued_events"] == 1
    });

    setup.write_config(&config_text(
        &after.url,
        "rate_limits = [\"2/10s\", \"1000/1d\"]\npacing = false\n",
    ));
    reload(&agent);
    let status = status_json(&config);
    let soc = &status["webhooks"][0];
    assert_eq!(soc["queued_events"], 1, "{status}");
    assert_eq!(soc["budget"][0]["used"], 2, "the usage survived: {status}");
    assert_eq!(soc["budget"][1]["used"], 2, "{status}");

    after.wait_for_events(1, DEADLINE);
    assert!(
        window_full.elapsed() >= Duration::from_secs(5),
        "line 3 waited for the window the reload kept ({:?})",
        window_full.elapsed()
    );
    assert_eq!(numbers(&after), [3]);
    assert_eq!(numbers(&before), [1, 2]);
}

#[test]
fn a_removed_webhook_keeps_its_queued_events_and_the_reload_says_so() {
    let soc = Receiver::start(ReceiverOptions::default());
    let chat = Receiver::start(ReceiverOptions::default());
    // chat answers 503: its events stay queued.
    chat.set_failing(503);
    let setup = Setup::new();
    let chat_section = format!(
        "[webhook.chat]\nurl = \"{}\"\nbatch_timeout = \"50ms\"\n",
        chat.url
    );
    let config = setup.write_config(&config_text(&soc.url, &chat_section));
    let agent = Agent::start(&config);
    setup.append("auth.log", &[failed_line(1), failed_line(2)]);
    soc.wait_for_events(2, DEADLINE);
    wait_until(DEADLINE, "chat to have failed once", || {
        !chat.requests().is_empty()
    });

    setup.write_config(&config_text(&soc.url, ""));
    reload(&agent);
    let status = status_json(&config);
    let notes = status["last_reload"]["notes"].to_string();
    assert!(
        notes.contains("webhook `chat` was removed with 2 event(s) queued"),
        "{status}"
    );
    assert!(agent.logs().contains("webhook `chat` was removed"));
    setup.append("auth.log", &[failed_line(3)]);
    soc.wait_for_events(3, DEADLINE);

    // Configured again, it sends what waited.
    chat.set_failing(0);
    setup.write_config(&config_text(&soc.url, &chat_section));
    reload(&agent);
    wait_until(DEADLINE, "chat's queued events", || {
        numbers(&chat) == [1, 2]
    });
}

#[test]
fn a_new_input_starts_per_start_at_and_a_removed_one_resumes_where_it_was() {
    let soc = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let config = setup.write_config(&config_text(&soc.url, ""));
    let agent = Agent::start(&config);
    setup.append("auth.log", &(1..=3).map(failed_line).collect::<Vec<_>>());
    wait_until(DEADLINE, "lines 1 to 3", || numbers(&soc) == [1, 2, 3]);

    // `auth` goes, `web` comes, reading from the end of what web.log holds.
    setup.append("web.log", &[failed_line(100)]);
    let web = "[[input]]\nname = \"web\"\npaths = [\"web.log\"]\nstart_at = \"end\"\n";
    let without_auth = config_text(&soc.url, "").replace(
        "[[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nstart_at = \"beginning\"\n",
        web,
    );
    setup.write_config(&without_auth);
    reload(&agent);
    let status = status_json(&config);
    assert!(
        status["last_reload"]["notes"]
            .to_string()
            .contains("input `auth` was removed"),
        "{status}"
    );
    setup.append("auth.log", &[failed_line(4), failed_line(5)]);
    setup.append("web.log", &[failed_line(101)]);
    wait_until(DEADLINE, "line 101 of web.log", || {
        numbers(&soc) == [1, 2, 3, 101]
    });

    // Back, `auth` resumes at its checkpoint: 4 and 5, nothing again.
    setup.write_config(&format!("{}{web}", config_text(&soc.url, "")));
    reload(&agent);
    wait_until(DEADLINE, "lines 4 and 5", || numbers(&soc).len() == 6);
    assert_eq!(numbers(&soc), [1, 2, 3, 4, 5, 101]);
}

#[test]
fn suppression_goes_on_across_a_reload_that_keeps_the_rule() {
    let soc = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    let suppressed = TEST_RULES.replace(
        "types = {",
        "suppress = { for = \"1h\", key = [\"user.name\"] }\ntypes = {",
    );
    std::fs::write(setup.path("rules/test.toml"), &suppressed).unwrap();
    let config = setup.write_config(&config_text(&soc.url, ""));
    let agent = Agent::start(&config);
    let from = |seq: usize, user: &str| {
        format!("seq={seq} Failed password for {user} from 192.0.2.1 port 22")
    };
    setup.append("auth.log", &[from(1, "root"), from(2, "root")]);
    soc.wait_for_events(1, DEADLINE);

    // The reload adds a rule; test.auth_failed keeps its suppress.
    std::fs::write(setup.path("rules/accepted.toml"), ACCEPTED_RULE).unwrap();
    reload(&agent);
    // Lines are decided in order: once admin's event is in, line 3 was too.
    setup.append("auth.log", &[from(3, "root"), from(4, "admin")]);
    wait_until(DEADLINE, "admin's event", || numbers(&soc).contains(&4));
    assert_eq!(
        numbers(&soc),
        [1, 4],
        "root stays suppressed across the reload"
    );
}
