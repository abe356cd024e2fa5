//! Fleets of real agents (each its own state_dir, log and `agent.host`)
//! sharing one webhook through a real redis-server, against one receiver
//! that counts every request, 429s included. Windows are scaled down
//! (`5/2s`) so each scenario takes seconds. Every line carries a sequence
//! number: nothing may be lost, and duplicates come only from a failover
//! (at most one batch each).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::redis_server::RedisServer;
use support::*;

/// The shared webhook's windows, at the agents and at the receiver.
const WINDOW: (usize, Duration) = (5, Duration::from_secs(2));

/// Small bodies, so a backlog takes many requests.
const MAX_BODY: usize = 4000;

struct Member {
    setup: Setup,
    config: PathBuf,
    agent: Option<Agent>,
    /// The next sequence number this agent's log gets.
    next: usize,
    base: usize,
}

impl Member {
    fn start(&mut self) {
        let agent = Agent::start(&self.config);
        agent.wait_for_log("tailing file", Duration::from_secs(20));
        self.agent = Some(agent);
    }

    /// Appends `n` lines; their sequence numbers.
    fn append(&mut self, n: usize) -> Vec<i64> {
        let seqs: Vec<usize> = (self.next..self.next + n).map(|i| self.base + i).collect();
        self.next += n;
        let lines: Vec<String> = seqs.iter().map(|&s| failed_line(s)).collect();
        self.setup.append("auth.log", &lines);
        seqs.iter().map(|&s| s as i64).collect()
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    fn host(&self) -> String {
        format!("agent{}", self.base / 100_000)
    }
}

struct Fleet {
    redis: RedisServer,
    receiver: Receiver,
    members: Vec<Member>,
    /// Every sequence number written.
    written: Vec<i64>,
}

impl Fleet {
    /// `n` agents (not started) sharing webhook `soc` through `redis`.
    fn new(redis: RedisServer, n: usize, webhook_keys: &str) -> Fleet {
        let receiver = Receiver::start(ReceiverOptions {
            rate_limits: vec![WINDOW],
            ..ReceiverOptions::default()
        });
        let members = (1..=n)
            .map(|k| {
                let setup = Setup::new();
                let webhook = format!(
                    "fleet = true\nrate_limits = [\"{}/{}s\"]\nmax_body_bytes = {MAX_BODY}\n\
                     batch_timeout = \"300ms\"\nrequest_timeout = \"1s\"\nmax_retry_delay = \"1s\"\n{webhook_keys}\n\
                     [fleet]\nredis_url = \"{}\"\nnamespace = \"test\"\nlease_ttl = \"2s\"\n",
                    WINDOW.0,
                    WINDOW.1.as_secs(),
                    redis.url()
                );
                let agent = format!("host = \"agent{k}\"");
                let config = setup.agent_config(
                    &receiver.url,
                    ConfigKeys {
                        agent: &agent,
                        webhook: &webhook,
                        ..ConfigKeys::default()
                    },
                );
                setup.append("auth.log", &[]);
                Member {
                    setup,
                    config,
                    agent: None,
                    next: 0,
                    base: k * 100_000,
                }
            })
            .collect();
        Fleet {
            redis,
            receiver,
            members,
            written: Vec::new(),
        }
    }

    fn start_all(&mut self) {
        for member in &mut self.members {
            member.start();
        }
    }

    /// `n` lines on every running agent's log; their sequence numbers.
    fn append_everywhere(&mut self, n: usize) -> Vec<i64> {
        let mut appended = Vec::new();
        for member in &mut self.members {
            if member.agent.is_some() {
                appended.extend(member.append(n));
            }
        }
        self.written.extend(&appended);
        appended
    }

    /// Has the first agent (not started yet) serve `/metrics` on a port of
    /// its choosing; its config.
    fn serve_metrics_on_the_first(&self) -> PathBuf {
        let config = self.members[0].config.clone();
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace(
                "host = \"agent1\"",
                "host = \"agent1\"\nmetrics_listen = \"127.0.0.1:0\"",
            ),
        )
        .unwrap();
        config
    }

    /// Waits until the receiver has some event: the sender is busy.
    fn wait_for_a_first_delivery(&self) {
        wait_until(Duration::from_secs(20), "a first delivery", || {
            !self.receiver.events().is_empty()
        });
    }

    /// The index of the member holding the lease, once one other than
    /// `not` does.
    fn sender(&self, timeout: Duration, not: Option<usize>) -> usize {
        let mut found = None;
        wait_until(timeout, "a fleet sender", || {
            let mut redis = self.redis.connection();
            let lease: Option<String> = redis::cmd("GET")
                .arg("{test:soc}:lease")
                .query(&mut redis)
                .unwrap_or(None);
            found = lease.and_then(|value| {
                let host = value.split_once(':')?.1.to_string();
                self.members.iter().position(|m| m.host() == host)
            });
            found.is_some() && found != not
        });
        found.unwrap()
    }

    /// Waits until every written sequence arrived; the number of duplicates.
    fn wait_for_everything(&self, timeout: Duration) -> usize {
        let expected: BTreeSet<i64> = self.written.iter().copied().collect();
        let mut last = BTreeSet::new();
        let deadline = Instant::now() + timeout;
        loop {
            let got: BTreeSet<i64> = line_sequences(&self.receiver.events())
                .into_iter()
                .collect();
            if expected.is_subset(&got) {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<&i64> = expected.difference(&got).take(20).collect();
                panic!(
                    "{} of {} events missing after {timeout:?} (e.g. {missing:?}); logs:\n{}",
                    expected.difference(&got).count(),
                    expected.len(),
                    self.logs()
                );
            }
            last = got;
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = last;
        let all = line_sequences(&self.receiver.events());
        let got: BTreeSet<i64> = all.iter().copied().collect();
        assert!(
            got.is_subset(&expected),
            "events that were never written arrived"
        );
        all.len() - got.len()
    }

    /// No request was over the limit.
    fn assert_no_429(&self) {
        let statuses: HashMap<u16, usize> =
            self.receiver
                .requests()
                .iter()
                .fold(HashMap::new(), |mut counts, r| {
                    *counts.entry(r.status).or_default() += 1;
                    counts
                });
        if statuses.keys().eq([&202]) {
            return;
        }
        // What tells a refusal's cause: each request's time and the hosts
        // of its events, beside every agent's log.
        let requests = self.receiver.requests();
        let start = requests.first().map(|r| r.at);
        let timeline: Vec<String> = requests
            .iter()
            .map(|r| {
                // A body cut by a killed sender is not JSON.
                let events: Vec<serde_json::Value> = serde_json::from_slice(&r.body)
                    .ok()
                    .and_then(|b: serde_json::Value| b["events"].as_array().cloned())
                    .unwrap_or_default();
                let hosts: BTreeSet<&str> =
                    events.iter().filter_map(|e| e["host"].as_str()).collect();
                format!(
                    "{:>8.3} s  {}  {} events of {hosts:?}",
                    start.map_or(0.0, |s| (r.at - s).as_secs_f64()),
                    r.status,
                    events.len()
                )
            })
            .collect();
        panic!(
            "every request accepted: {statuses:?}\nrequests:\n{}\nlogs:\n{}",
            timeline.join("\n"),
            self.logs()
        );
    }

    /// Every running agent's log, each under its host's name.
    fn logs(&self) -> String {
        let logs: Vec<String> = self
            .members
            .iter()
            .filter_map(|m| {
                m.agent
                    .as_ref()
                    .map(|a| format!("{}:\n{}", m.host(), a.logs()))
            })
            .collect();
        logs.join("\n----\n")
    }

    /// The most events one accepted body carried.
    fn largest_batch(&self) -> usize {
        self.receiver
            .requests()
            .iter()
            .filter(|r| r.status == 202)
            .map(|r| body_events(&r.body).len())
            .max()
            .unwrap_or(0)
    }
}

/// The sequence numbers of the events of log lines (not of manual sends).
fn line_sequences(events: &[serde_json::Value]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| e["fields"]["event.sequence"].as_i64())
        .collect()
}

fn body_events(body: &[u8]) -> Vec<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["events"].as_array().cloned().unwrap_or_default()
}

/// The fewest requests that carry `events` in bodies of at most `MAX_BODY`
/// bytes: their encoded sizes plus separators over the room a body has.
fn ideal_requests(bodies: &[Vec<u8>]) -> usize {
    let mut event_bytes = 0;
    let mut overhead = usize::MAX;
    for body in bodies {
        let events = body_events(body);
        let sizes: usize = events.iter().map(|e| e.to_string().len() + 1).sum();
        event_bytes += sizes;
        overhead = overhead.min(body.len().saturating_sub(sizes));
    }
    event_bytes.div_ceil(MAX_BODY - overhead)
}

#[test]
fn a_fleet_sends_one_budget_and_survives_a_kill_of_its_sender() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 4, "");
    fleet.start_all();
    // A backlog: far more than one body per agent.
    fleet.append_everywhere(40);
    let first = fleet.sender(Duration::from_secs(20), None);
    // Wait until the sender is busy, then kill it mid-stream.
    fleet.wait_for_a_first_delivery();
    fleet.members[first].agent().signal("KILL");
    fleet.members[first].agent = None;
    fleet.append_everywhere(20);
    // Another agent takes over once the lease expired.
    fleet.sender(Duration::from_secs(20), Some(first));
    // The killed agent comes back: what it had not forwarded is in its queue.
    fleet.members[first].start();
    fleet.append_everywhere(10);
    let duplicates = fleet.wait_for_everything(Duration::from_secs(90));
    fleet.assert_no_429();
    assert!(
        duplicates <= fleet.largest_batch(),
        "{duplicates} duplicates: more than one batch"
    );
    let bodies: Vec<Vec<u8>> = fleet
        .receiver
        .requests()
        .into_iter()
        .map(|r| r.body)
        .collect();
    let mixed = bodies.iter().any(|body| {
        let hosts: BTreeSet<String> = body_events(body)
            .iter()
            .map(|e| e["host"].as_str().unwrap().to_string())
            .collect();
        hosts.len() > 1
    });
    assert!(mixed, "bodies carry events of several hosts");
    let ideal = ideal_requests(&bodies);
    eprintln!(
        "{} events, {duplicates} duplicates, {} requests for an ideal of {ideal}",
        fleet.written.len(),
        bodies.len()
    );
    // The failover cuts one body short, and the last body goes unfilled.
    assert!(
        bodies.len() as f64 <= ideal as f64 * 1.05 + 2.0,
        "{} requests for an ideal of {ideal}",
        bodies.len()
    );
}

#[test]
fn redis_killed_longer_than_the_lease_and_restarted_on_its_aof_loses_nothing() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 4, "");
    fleet.start_all();
    fleet.append_everywhere(30);
    fleet.wait_for_a_first_delivery();
    fleet.redis.kill();
    let sent_before = fleet.receiver.requests().len();
    // Longer than the lease (2 s): the agents keep tailing into their queues.
    fleet.append_everywhere(10);
    wait_until(Duration::from_secs(10), "the lease's time to pass", || {
        fleet.members.iter().all(|m| {
            m.agent()
                .logs()
                .contains("cannot forward events to the fleet's Redis")
        })
    });
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = fleet.receiver.requests().len() - sent_before;
    assert!(
        during <= 1,
        "{during} requests without Redis: nothing is charged, so nothing is sent (one may have been in flight)"
    );
    fleet.redis.restart();
    fleet.append_everywhere(10);
    let duplicates = fleet.wait_for_everything(Duration::from_secs(90));
    fleet.assert_no_429();
    assert!(
        duplicates <= fleet.largest_batch(),
        "{duplicates} duplicates: more than one batch"
    );
}

#[test]
fn agents_start_without_redis_and_deliver_once_it_is_there() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    let mut fleet = Fleet::new(redis, 4, "");
    fleet.start_all();
    fleet.append_everywhere(15);
    wait_until(
        Duration::from_secs(20),
        "every agent to queue its events",
        || {
            fleet.members.iter().all(|m| {
                m.agent()
                    .logs()
                    .contains("cannot forward events to the fleet's Redis")
            })
        },
    );
    assert!(
        fleet.receiver.requests().is_empty(),
        "nothing is sent without Redis"
    );
    fleet.redis.restart();
    let duplicates = fleet.wait_for_everything(Duration::from_secs(60));
    fleet.assert_no_429();
    assert_eq!(duplicates, 0, "no failover, no duplicate");
}

#[test]
fn a_sender_paused_past_its_lease_is_fenced_when_it_resumes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 4, "");
    fleet.start_all();
    fleet.append_everywhere(30);
    let paused = fleet.sender(Duration::from_secs(20), None);
    fleet.wait_for_a_first_delivery();
    fleet.members[paused].agent().signal("STOP");
    fleet.sender(Duration::from_secs(20), Some(paused));
    fleet.append_everywhere(10);
    fleet.members[paused].agent().signal("CONT");
    wait_until(
        Duration::from_secs(20),
        "the paused sender to stop sending",
        || {
            fleet.members[paused]
                .agent()
                .logs()
                .contains("this agent is no longer the fleet's sender")
        },
    );
    fleet.append_everywhere(10);
    let duplicates = fleet.wait_for_everything(Duration::from_secs(90));
    fleet.assert_no_429();
    assert!(
        duplicates <= fleet.largest_batch(),
        "{duplicates} duplicates: more than one batch"
    );
}

#[test]
fn a_manual_send_on_an_agent_that_is_not_the_sender_spends_the_fleets_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 4, "");
    fleet.start_all();
    fleet.append_everywhere(40);
    let sender = fleet.sender(Duration::from_secs(20), None);
    fleet.wait_for_a_first_delivery();
    let other = (sender + 1) % fleet.members.len();
    let sent = tailhook(
        &fleet.members[other].config,
        &[
            "send",
            "--webhook",
            "soc",
            "--data",
            r#"{"note": "manual"}"#,
            "--timeout",
            "30s",
        ],
    );
    assert!(sent.status.success(), "{}", text(&sent));
    let duplicates = fleet.wait_for_everything(Duration::from_secs(90));
    fleet.assert_no_429();
    assert_eq!(duplicates, 0);
    let manual = fleet
        .receiver
        .events()
        .iter()
        .filter(|e| e["fields"]["note"] == "manual")
        .count();
    assert_eq!(manual, 1, "the manual event arrived once");
}

#[test]
fn check_stays_offline_unless_asked_to_reach_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let fleet = Fleet::new(redis, 1, "");
    let config = &fleet.members[0].config;
    let online = tailhook(config, &["check", "--online"]);
    assert!(online.status.success(), "{}", text(&online));
    assert!(
        text(&online).contains("fleet: Redis 7."),
        "{}",
        text(&online)
    );
    // A Redis that does not answer, with a password in its URL.
    let text_of = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        text_of.replace(&fleet.redis.url(), "redis://:hunter22@127.0.0.1:1/0"),
    )
    .unwrap();
    let offline = tailhook(config, &["check"]);
    assert!(offline.status.success(), "{}", text(&offline));
    let online = tailhook(config, &["check", "--online"]);
    assert!(!online.status.success());
    let said = text(&online);
    assert!(
        said.contains("fleet.redis_url") && said.contains("redis://127.0.0.1:1/0"),
        "{said}"
    );
    assert!(!said.contains("hunter22"), "the password leaked: {said}");
}

#[test]
fn an_agent_with_other_limits_for_the_shared_webhook_is_refused() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 2, "");
    let odd = &fleet.members[1].config;
    let text_of = std::fs::read_to_string(odd).unwrap();
    std::fs::write(
        odd,
        text_of.replace("rate_limits = [\"5/2s\"]", "rate_limits = [\"6/2s\"]"),
    )
    .unwrap();
    fleet.members[0].start();
    fleet.sender(Duration::from_secs(20), None);
    fleet.members[1].start();
    fleet.members[1]
        .agent()
        .wait_for_log("this agent does not join", Duration::from_secs(20));
    // Its events wait in its own queue; the fleet's go on.
    let seqs = fleet.members[0].append(5);
    fleet.written.extend(seqs);
    fleet.members[1].append(5);
    fleet.wait_for_everything(Duration::from_secs(30));
    let mut redis = fleet.redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut redis).unwrap();
        if kind == "string" {
            let value: String = redis::cmd("GET").arg(&key).query(&mut redis).unwrap();
            assert!(
                !value.contains("api_key") && !value.contains("127.0.0.1"),
                "{key} = {value}"
            );
        }
    }
}

#[test]
fn status_and_metrics_show_the_sender_the_shared_queue_the_fleets_budget_and_the_agents() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 2, "");
    let config = fleet.serve_metrics_on_the_first();
    fleet.start_all();
    fleet.append_everywhere(10);
    fleet.wait_for_everything(Duration::from_secs(30));
    let sender = fleet.members[fleet.sender(Duration::from_secs(10), None)].host();
    let mut shown;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        shown = status_json(&config)["webhooks"][0]["fleet"].clone();
        if shown["agents_seen"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "status shows {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(shown["sender"], sender.as_str(), "{shown}");
    assert_eq!(shown["namespace"], "test");
    assert_eq!(shown["budget"][0]["window"], "5/2s", "{shown}");
    assert!(shown["shared_queued_events"].is_u64(), "{shown}");
    let port = fleet.members[0]
        .agent()
        .metrics_port(Duration::from_secs(10));
    let metrics = http_get(port, "/metrics").expect("metrics answer").1;
    let series = |name: &str| format!("{name}{{webhook=\"soc\"}}");
    assert_eq!(sample(&metrics, &series("tailhook_fleet_agents_seen")), 2.0);
    assert_eq!(
        sample(&metrics, &series("tailhook_fleet_sender")),
        f64::from(u8::from(sender == "agent1"))
    );
    sample(&metrics, &series("tailhook_fleet_queue_events"));
    sample(
        &metrics,
        "tailhook_fleet_rate_limit_remaining{webhook=\"soc\",window=\"5/2s\"}",
    );
    // A stopped agent's status asks the fleet's Redis itself.
    fleet.members[0].agent = None;
    let stopped = status_json(&config);
    assert_eq!(stopped["agent"], "stopped");
    let shown = &stopped["webhooks"][0]["fleet"];
    assert!(shown["problem"].is_null(), "{shown}");
    assert!(
        shown["agents_seen"]
            .as_array()
            .is_some_and(|a| a.iter().any(|h| h == "agent2")),
        "{shown}"
    );
    let human = text(&tailhook(&config, &["status"]));
    assert!(
        human.contains("fleet budget:  5/2s:") && human.contains("agents seen:"),
        "{human}"
    );
}

#[test]
fn a_manual_send_with_no_agent_running_is_charged_to_the_fleets_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 2, "");
    fleet.members[0].start();
    fleet.sender(Duration::from_secs(20), None);
    // Agent 2 is not running: its `send` goes directly, through Redis.
    let config = fleet.members[1].config.clone();
    for n in 0..3 {
        let sent = tailhook(
            &config,
            &[
                "send",
                "--webhook",
                "soc",
                "--data",
                &format!(r#"{{"n": {n}}}"#),
            ],
        );
        assert!(sent.status.success(), "{}", text(&sent));
        assert!(
            text(&sent).contains("the fleet's budget in Redis"),
            "{}",
            text(&sent)
        );
    }
    let mut redis = fleet.redis.connection();
    let charged: u64 = redis::cmd("ZCARD")
        .arg("{test:soc}:stamps")
        .query(&mut redis)
        .unwrap();
    assert!(charged >= 3, "{charged} attempts in the fleet's ledger");
    fleet.assert_no_429();
}

#[test]
fn the_redis_password_never_reaches_logs_status_or_metrics() {
    const PASSWORD: &str = "s3cretRedisPass";
    let Some(redis) = RedisServer::start_with_password(PASSWORD) else {
        return;
    };
    let mut fleet = Fleet::new(redis, 2, "");
    let config = fleet.serve_metrics_on_the_first();
    fleet.start_all();
    fleet.append_everywhere(5);
    fleet.wait_for_everything(Duration::from_secs(30));
    fleet.assert_no_429();
    let port = fleet.members[0]
        .agent()
        .metrics_port(Duration::from_secs(10));
    let metrics = http_get(port, "/metrics").expect("metrics answer").1;
    let status = text(&tailhook(&config, &["status"]));
    let json = status_json(&config).to_string();
    assert!(status.contains("shared through unix://"), "{status}");
    // Redis gone: the errors name it, redacted.
    fleet.redis.kill();
    fleet.members[0].append(1);
    fleet.members[0].agent().wait_for_log(
        "cannot forward events to the fleet's Redis",
        Duration::from_secs(20),
    );
    let online = text(&tailhook(&config, &["check", "--online"]));
    for (what, said) in [
        ("logs", fleet.members[0].agent().logs()),
        ("logs", fleet.members[1].agent().logs()),
        ("metrics", metrics),
        ("status", status),
        ("status --json", json),
        ("check --online", online),
    ] {
        assert!(
            !said.contains(PASSWORD),
            "the password is in the {what}:\n{said}"
        );
    }
}

#[test]
fn a_redis_back_empty_is_detected_and_no_window_is_overrun() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(redis, 4, "");
    fleet.start_all();
    fleet.append_everywhere(10);
    fleet.wait_for_everything(Duration::from_secs(30));
    // Redis loses everything (no AOF): what was in its stream is gone, and
    // so is the ledger of the attempts just made.
    fleet.redis.kill();
    fleet.redis.restart_empty();
    let after = fleet.append_everywhere(10);
    wait_until(
        Duration::from_secs(30),
        "every event written after the loss",
        || {
            let got: BTreeSet<i64> = line_sequences(&fleet.receiver.events())
                .into_iter()
                .collect();
            after.iter().all(|s| got.contains(s))
        },
    );
    fleet.assert_no_429();
    assert!(
        fleet
            .members
            .iter()
            .any(|m| m.agent().logs().contains("the fleet's Redis lost its keys")),
        "the loss was noticed"
    );
}

#[test]
fn without_redis_events_wait_in_the_lane_until_it_is_full_then_in_the_log() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    let mut fleet = Fleet::new(redis, 1, "max_queue_bytes = 20000");
    fleet.start_all();
    let config = fleet.members[0].config.clone();
    fleet.append_everywhere(5);
    wait_until(Duration::from_secs(20), "the first events queued", || {
        status_json(&config)["webhooks"][0]["queued_events"].as_u64() >= Some(5)
    });
    // More than the lane's room: the lane holds what it may, tailing
    // pauses, and the rest waits in the log file, unread.
    fleet.append_everywhere(195);
    fleet.members[0]
        .agent()
        .wait_for_log("tailing is paused", Duration::from_secs(20));
    let shown = status_json(&config);
    let queued = shown["webhooks"][0]["queued_events"].as_u64().unwrap_or(0);
    let lag = shown["inputs"][0]["files"][0]["lag"].as_u64().unwrap_or(0);
    assert!(queued > 0 && lag > 0, "status shows {shown}");
    assert!(
        fleet.receiver.requests().is_empty(),
        "nothing is sent without Redis"
    );
    fleet.redis.restart();
    let duplicates = fleet.wait_for_everything(Duration::from_secs(60));
    fleet.assert_no_429();
    assert_eq!(duplicates, 0);
}
