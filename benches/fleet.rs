//! Fleet mode measured from the outside: N real agents (release binary),
//! each with its own state_dir, log and `agent.host`, share one webhook
//! through a real redis-server (unix socket, `appendfsync always`) and post
//! to one loopback receiver in this process.
//!
//! Run: `cargo bench --bench fleet [-- EVENTS_PER_AGENT]` (default 2000).
//! For N = 2, 4, 8:
//! 1. Throughput: every agent's log already holds its events; no rate
//!    limit: events/s from the agents' start to the last event received.
//! 2. Redis memory per queued event: the receiver answers 503, so events
//!    pile up in the stream; (used_memory − before) / stream length.
//! 3. Requests vs ideal under a backlog at `5/2s` (bodies of at most 8 kB):
//!    requests made, 429s, against ceil(event bytes / room in a body).
//! 4. Failover: kill -9 of the sender with a backlog; time from the kill
//!    to the next accepted request (lease_ttl = 2s, request_timeout = 2s).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::redis_server::RedisServer;
use support::{wait_until, TEST_RULES};

#[derive(Default)]
struct Seen {
    requests: usize,
    rejected: usize,
    accepted: Vec<(Instant, usize, usize)>,
}

struct Receiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
    /// Non-zero: every request gets this status.
    failing: Arc<AtomicU16>,
}

impl Receiver {
    fn start(rate: Option<(usize, Duration)>) -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", server.server_addr().to_ip().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let failing = Arc::new(AtomicU16::new(0));
        let (shared, forced) = (seen.clone(), failing.clone());
        std::thread::spawn(move || {
            let mut accepted_at: Vec<Instant> = Vec::new();
            for mut request in server.incoming_requests() {
                let now = Instant::now();
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let over = rate.is_some_and(|(count, period)| {
                    accepted_at.retain(|t| now.duration_since(*t) < period);
                    accepted_at.len() >= count
                });
                let status = match forced.load(Ordering::SeqCst) {
                    0 if over => 429,
                    0 => 202,
                    forced => forced,
                };
                {
                    let mut seen = shared.lock().unwrap();
                    seen.requests += 1;
                    if status == 429 {
                        seen.rejected += 1;
                    }
                    if status == 202 {
                        accepted_at.push(now);
                        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let events = value["events"].as_array().map_or(0, Vec::len);
                        let event_bytes = value["events"]
                            .as_array()
                            .map_or(0, |e| e.iter().map(|e| e.to_string().len() + 1).sum());
                        seen.accepted.push((now, events, event_bytes));
                    }
                }
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        Receiver { url, seen, failing }
    }

    fn events(&self) -> usize {
        self.seen.lock().unwrap().accepted.iter().map(|a| a.1).sum()
    }
}

/// Asks the bench's Redis one thing.
fn query<T: redis::FromRedisValue>(redis: &RedisServer, command: &mut redis::Cmd) -> T {
    command.query(&mut redis.connection()).unwrap()
}

fn used_memory(redis: &RedisServer) -> u64 {
    query::<String>(redis, redis::cmd("INFO").arg("memory"))
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` agents' folders, each with `events` lines in its log.
fn fleet_dirs(n: usize, events: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let root = tempfile::tempdir().unwrap();
    let dirs = (1..=n)
        .map(|k| {
            let dir = root.path().join(format!("agent{k}"));
            std::fs::create_dir_all(dir.join("rules")).unwrap();
            std::fs::write(dir.join("rules/test.toml"), TEST_RULES).unwrap();
            let mut log =
                std::io::BufWriter::new(std::fs::File::create(dir.join("auth.log")).unwrap());
            for i in 0..events {
                let seq = k * 1_000_000 + i;
                writeln!(
                    log,
                    "seq={seq} Failed password for user{seq} from 192.0.2.{} port {}",
                    i % 250 + 1,
                    1000 + i % 60000
                )
                .unwrap();
            }
            dir
        })
        .collect();
    (root, dirs)
}

fn start(dir: &Path, k: usize, url: &str, redis: &str, webhook: &str) -> Agent {
    let config = dir.join("tailhook.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"state\"\nhost = \"agent{k}\"\n[rules]\npaths = [\"rules\"]\n\
             [[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nstart_at = \"beginning\"\n\
             [webhook.soc]\nurl = \"{url}\"\nfleet = true\nbatch_timeout = \"200ms\"\nrequest_timeout = \"2s\"\n{webhook}\n\
             [fleet]\nredis_url = \"{redis}\"\nnamespace = \"bench\"\nlease_ttl = \"2s\"\n"
        ),
    )
    .unwrap();
    Agent(
        Command::new(env!("CARGO_BIN_EXE_tailhook"))
            .args(["run", "-c"])
            .arg(&config)
            .env("TAILHOOK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn main() {
    let per_agent: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    println!("fleet: {per_agent} events per agent");
    for n in [2usize, 4, 8] {
        // 1. Throughput through Redis, no rate limit.
        let redis = RedisServer::start().expect("redis-server (apt-get install redis-server)");
        let receiver = Receiver::start(None);
        let (_root, dirs) = fleet_dirs(n, per_agent);
        let started = Instant::now();
        let agents: Vec<Agent> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| start(d, i + 1, &receiver.url, &redis.url(), ""))
            .collect();
        let total = n * per_agent;
        wait_until(Duration::from_secs(300), "every event", || {
            receiver.events() >= total
        });
        let elapsed = started.elapsed();
        drop(agents);
        println!(
            "N={n}: {total} events in {:.2} s through Redis: {:.0} events/s ({} requests)",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            receiver.seen.lock().unwrap().requests
        );

        // 2. Memory per queued event: nothing is accepted, the stream fills.
        let redis = RedisServer::start().expect("redis-server (apt-get install redis-server)");
        let receiver = Receiver::start(None);
        receiver.failing.store(503, Ordering::SeqCst);
        let before = used_memory(&redis);
        let (_root, dirs) = fleet_dirs(n, per_agent);
        let agents: Vec<Agent> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| start(d, i + 1, &receiver.url, &redis.url(), ""))
            .collect();
        wait_until(
            Duration::from_secs(300),
            "every event in the stream",
            || query::<usize>(&redis, redis::cmd("XLEN").arg("{bench:soc}:stream")) >= total,
        );
        let per_event = (used_memory(&redis) - before) as f64 / total as f64;
        drop(agents);
        println!("N={n}: Redis memory per queued event: {per_event:.0} bytes (used_memory, {total} queued)");

        // 3. Requests vs ideal under a backlog, and 4. failover.
        let redis = RedisServer::start().expect("redis-server (apt-get install redis-server)");
        let receiver = Receiver::start(Some((5, Duration::from_secs(2))));
        let backlog = 300.min(per_agent);
        let (_root, dirs) = fleet_dirs(n, backlog);
        let webhook = "rate_limits = [\"5/2s\"]\nmax_body_bytes = 8000";
        let mut agents: Vec<Option<Agent>> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| Some(start(d, i + 1, &receiver.url, &redis.url(), webhook)))
            .collect();
        let total = n * backlog;
        wait_until(Duration::from_secs(30), "a first event", || {
            receiver.events() > 0
        });
        let holder: String = query(&redis, redis::cmd("GET").arg("{bench:soc}:lease"));
        let host = holder.split_once(':').map(|(_, h)| h.to_string()).unwrap();
        let k: usize = host.trim_start_matches("agent").parse().unwrap();
        let accepted_before = receiver.seen.lock().unwrap().accepted.len();
        let killed = Instant::now();
        agents[k - 1] = None;
        wait_until(Duration::from_secs(60), "a request after the kill", || {
            receiver.seen.lock().unwrap().accepted.len() > accepted_before
        });
        let first_after = receiver.seen.lock().unwrap().accepted[accepted_before].0;
        let failover = first_after.saturating_duration_since(killed);
        // The killed agent comes back for the events it had not forwarded.
        agents[k - 1] = Some(start(&dirs[k - 1], k, &receiver.url, &redis.url(), webhook));
        wait_until(
            Duration::from_secs(600),
            "every event of the backlog",
            || receiver.events() >= total,
        );
        let seen = receiver.seen.lock().unwrap();
        let event_bytes: usize = seen.accepted.iter().map(|a| a.2).sum();
        let overhead = 60;
        let ideal = event_bytes.div_ceil(8000 - overhead);
        let received: usize = seen.accepted.iter().map(|a| a.1).sum();
        println!(
            "N={n}: backlog of {total} events ({} bytes of JSON each) at 5/2s: {} requests for an ideal of {ideal} ({:.3}x), {} x 429, {} duplicates; failover after kill -9 of the sender: {:.2} s",
            event_bytes / received.max(1),
            seen.requests,
            seen.requests as f64 / ideal as f64,
            seen.rejected,
            seen.accepted.iter().map(|a| a.1).sum::<usize>() - total,
            failover.as_secs_f64()
        );
    }
}
