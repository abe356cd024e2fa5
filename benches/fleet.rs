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

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RULES: &str = r#"
[[rule]]
id = "test.auth_failed"
severity = "high"
regex = '^seq=(?P<event.sequence>\d+) Failed password for (?P<user.name>\S+) from (?P<source.ip>[0-9a-f.:]+) port (?P<source.port>\d+)$'
types = { "event.sequence" = "int", "source.port" = "int", "source.ip" = "ip" }

[[rule.example]]
line = "seq=1 Failed password for root from 192.0.2.1 port 22"
fields = { "event.sequence" = 1, "user.name" = "root", "source.ip" = "192.0.2.1", "source.port" = 22 }
"#;

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

struct Redis {
    dir: tempfile::TempDir,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("r.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let redis = Redis { dir, child };
        wait(Duration::from_secs(10), || {
            redis.command(&["PING"]).starts_with("+PONG")
        });
        redis
    }

    fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("r.sock").display())
    }

    fn command(&self, words: &[&str]) -> String {
        let Ok(mut stream) = UnixStream::connect(self.dir.path().join("r.sock")) else {
            return String::new();
        };
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        stream.write_all(request.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.ends_with(b"\r\n") && !reply.starts_with(b"$") && !reply.starts_with(b"*") {
                break;
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    fn integer(&self, words: &[&str]) -> u64 {
        let reply = self.command(words);
        reply.trim().trim_start_matches(':').parse().unwrap_or(0)
    }

    fn used_memory(&self) -> u64 {
        self.command(&["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
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
            std::fs::write(dir.join("rules/test.toml"), RULES).unwrap();
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
        let redis = Redis::start();
        let receiver = Receiver::start(None);
        let (_root, dirs) = fleet_dirs(n, per_agent);
        let started = Instant::now();
        let agents: Vec<Agent> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| start(d, i + 1, &receiver.url, &redis.url(), ""))
            .collect();
        let total = n * per_agent;
        wait(Duration::from_secs(300), || receiver.events() >= total);
        let elapsed = started.elapsed();
        drop(agents);
        println!(
            "N={n}: {total} events in {:.2} s through Redis: {:.0} events/s ({} requests)",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            receiver.seen.lock().unwrap().requests
        );

        // 2. Memory per queued event: nothing is accepted, the stream fills.
        let redis = Redis::start();
        let receiver = Receiver::start(None);
        receiver.failing.store(503, Ordering::SeqCst);
        let before = redis.used_memory();
        let (_root, dirs) = fleet_dirs(n, per_agent);
        let agents: Vec<Agent> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| start(d, i + 1, &receiver.url, &redis.url(), ""))
            .collect();
        wait(Duration::from_secs(300), || {
            redis.integer(&["XLEN", "{bench:soc}:stream"]) as usize >= total
        });
        let per_event = (redis.used_memory() - before) as f64 / total as f64;
        drop(agents);
        println!("N={n}: Redis memory per queued event: {per_event:.0} bytes (used_memory, {total} queued)");

        // 3. Requests vs ideal under a backlog, and 4. failover.
        let redis = Redis::start();
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
        wait(Duration::from_secs(30), || receiver.events() > 0);
        let holder = redis.command(&["GET", "{bench:soc}:lease"]);
        let host = holder
            .lines()
            .nth(1)
            .and_then(|v| v.split_once(':'))
            .map(|(_, h)| h.to_string())
            .unwrap();
        let k: usize = host.trim_start_matches("agent").parse().unwrap();
        let accepted_before = receiver.seen.lock().unwrap().accepted.len();
        let killed = Instant::now();
        agents[k - 1] = None;
        wait(Duration::from_secs(60), || {
            receiver.seen.lock().unwrap().accepted.len() > accepted_before
        });
        let first_after = receiver.seen.lock().unwrap().accepted[accepted_before].0;
        let failover = first_after.saturating_duration_since(killed);
        // The killed agent comes back for the events it had not forwarded.
        agents[k - 1] = Some(start(&dirs[k - 1], k, &receiver.url, &redis.url(), webhook));
        wait(Duration::from_secs(600), || receiver.events() >= total);
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
