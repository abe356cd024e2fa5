//! Test support: a loopback webhook receiver that behaves like SecureX, and a
//! handle on the real `tailhook` binary. Everything waits on conditions with a
//! deadline; nothing sleeps a fixed time.

#![allow(dead_code)] // each test file uses its own subset

pub mod redis_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const API_KEY: &str = "k3y+With/Slash==";

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A test's prerequisite (shared samples, a journald, a tool) is missing.
/// Under `CI=true` that fails the test with `why`, since a skipped test
/// there would pass silently; elsewhere the test is skipped, saying so.
/// Call it, then return from the test.
pub fn missing_prerequisite(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI=true: {why}");
    }
    eprintln!("skipped: {why} (under CI=true this fails)");
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Seen {
    requests: Vec<Request>,
    /// Events of accepted (202) requests, in arrival order.
    events: Vec<serde_json::Value>,
}

pub struct ReceiverOptions {
    pub content_type: &'static str,
    /// Windows of (requests, period): beyond any of them, answer
    /// `over_rate_status`.
    pub rate_limits: Vec<(usize, Duration)>,
    /// 429, or 415 as some SecureX documentation says it answers.
    pub over_rate_status: u16,
    pub max_body_bytes: usize,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            content_type: "application/json",
            rate_limits: Vec::new(),
            over_rate_status: 429,
            max_body_bytes: 1_000_000,
        }
    }
}

/// A webhook endpoint on 127.0.0.1 that checks what SecureX checks: POST,
/// `api_key`, `Content-Type` equal to its configured type, `Accept:
/// application/json`, body size and request rate. Accepted bodies get 202
/// with an empty body.
pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    /// When non-zero, every request is answered with this status.
    failing: Arc<std::sync::atomic::AtomicU16>,
    /// A `Retry-After` value sent with every forced failure.
    retry_after: Arc<Mutex<Option<String>>>,
    /// How long each answer takes (a slow, loaded receiver).
    answer_delay: Arc<Mutex<Duration>>,
    server: Arc<tiny_http::Server>,
}

impl Receiver {
    pub fn start(options: ReceiverOptions) -> Receiver {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind loopback"));
        let port = server.server_addr().to_ip().expect("ip listener").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let failing = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let retry_after = Arc::new(Mutex::new(None::<String>));
        let answer_delay = Arc::new(Mutex::new(Duration::ZERO));
        let (thread_server, thread_seen, thread_failing, thread_retry_after, thread_delay) = (
            server.clone(),
            seen.clone(),
            failing.clone(),
            retry_after.clone(),
            answer_delay.clone(),
        );
        thread::spawn(move || {
            let mut accepted_at: Vec<Instant> = Vec::new();
            for mut request in thread_server.incoming_requests() {
                let header = |name: &str| {
                    request
                        .headers()
                        .iter()
                        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                        .map(|h| h.value.as_str().to_string())
                        .unwrap_or_default()
                };
                let content_type = header("Content-Type");
                let accept = header("Accept");
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let key_ok = url::Url::parse(&format!("http://receiver{}", request.url()))
                    .is_ok_and(|u| u.query_pairs().any(|(k, v)| k == "api_key" && v == API_KEY));
                let now = Instant::now();
                let longest = options.rate_limits.iter().map(|w| w.1).max();
                accepted_at.retain(|t| longest.is_some_and(|p| now.duration_since(*t) < p));
                let over_rate = options.rate_limits.iter().any(|&(count, period)| {
                    accepted_at
                        .iter()
                        .filter(|t| now.duration_since(**t) < period)
                        .count()
                        >= count
                });
                // A sender killed mid-request leaves a cut body: a real server
                // answers 400, and so do we, instead of recording it.
                let events = parse_events(options.content_type, &body);
                let forced = thread_failing.load(std::sync::atomic::Ordering::SeqCst);
                let status = if forced != 0 {
                    forced
                } else if *request.method() != tiny_http::Method::Post {
                    405
                } else if !key_ok {
                    401
                } else if content_type != options.content_type {
                    415
                } else if accept != "application/json" {
                    406
                } else if body.len() > options.max_body_bytes {
                    413
                } else if over_rate {
                    options.over_rate_status
                } else if events.is_none() {
                    400
                } else {
                    202
                };
                {
                    let mut seen = thread_seen.lock().unwrap();
                    if let (202, Some(events)) = (status, events) {
                        accepted_at.push(now);
                        seen.events.extend(events);
                    }
                    seen.requests.push(Request {
                        status,
                        content_type,
                        body,
                        at: now,
                    });
                }
                let mut response = tiny_http::Response::empty(status);
                if forced != 0 {
                    if let Some(value) = thread_retry_after.lock().unwrap().as_deref() {
                        response.add_header(
                            tiny_http::Header::from_bytes("Retry-After", value).unwrap(),
                        );
                    }
                }
                let delay = *thread_delay.lock().unwrap();
                if delay.is_zero() {
                    let _ = request.respond(response);
                } else {
                    // Like a real server, a slow answer holds up only its own request.
                    thread::spawn(move || {
                        thread::sleep(delay);
                        let _ = request.respond(response);
                    });
                }
            }
        });
        Receiver {
            url: format!(
                "http://127.0.0.1:{port}/webhooks/01TEST?api_key={}",
                url::form_urlencoded::byte_serialize(API_KEY.as_bytes()).collect::<String>()
            ),
            seen,
            failing,
            retry_after,
            answer_delay,
            server,
        }
    }

    /// Takes `delay` to answer each request, each on its own (events are
    /// recorded on arrival, whether the sender waits for the answer or not).
    pub fn set_answer_delay(&self, delay: Duration) {
        *self.answer_delay.lock().unwrap() = delay;
    }

    /// Answers every request with `status` and `Retry-After: value` until
    /// set back with [`Receiver::set_failing`]`(0)`.
    pub fn set_failing_with_retry_after(&self, status: u16, value: &str) {
        *self.retry_after.lock().unwrap() = Some(value.to_string());
        self.set_failing(status);
    }

    /// Answers every request with `status` (e.g. 503) until set back to 0.
    pub fn set_failing(&self, status: u16) {
        self.failing
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().events.clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().requests.clone()
    }

    pub fn wait_for_events(&self, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        wait_until(timeout, &format!("{count} events at the receiver"), || {
            self.events().len() >= count
        });
        self.events()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The events of a well-formed body: the JSON envelope's, the one in a form
/// body's `payload`, none for XML or `{"text": …}` bodies (tests read those
/// from `requests()`). `None` for a malformed body.
fn parse_events(content_type: &str, body: &[u8]) -> Option<Vec<serde_json::Value>> {
    let json = match content_type {
        "application/xml" => return body.starts_with(b"<?xml").then(Vec::new),
        "application/x-www-form-urlencoded" => url::form_urlencoded::parse(body)
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| value.into_owned())?,
        _ => String::from_utf8(body.to_vec()).ok()?,
    };
    let value: serde_json::Value = serde_json::from_str(&json).ok()?;
    Some(value["events"].as_array().cloned().unwrap_or_default())
}

/// The real binary, running with a config in a temp folder; its stderr (logs)
/// is collected so tests can wait on log lines and grep for secrets.
pub struct Agent {
    child: Child,
    logs: Collected,
    stdout: Collected,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tailhook")
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        Self::start_wrapped(config, &[])
    }

    /// Runs the agent under `wrapper` (e.g. `setpriv …` to drop privileges).
    pub fn start_wrapped(config: &Path, wrapper: &[&str]) -> Agent {
        Self::start_with(config, wrapper, &[], &[] as &[(&str, &str)])
    }

    /// Runs the agent with `args` after `run -c CONFIG` and `env` added to
    /// its environment (e.g. `NOTIFY_SOCKET`, or a `PATH` that leads to a
    /// fake `journalctl`).
    pub fn start_with_env<V: AsRef<std::ffi::OsStr>>(
        config: &Path,
        args: &[&str],
        env: &[(&str, V)],
    ) -> Agent {
        Self::start_with(config, &[], args, env)
    }

    /// Runs the agent under `wrapper`, with `args` after `run -c CONFIG`
    /// and `env` added to its environment.
    pub fn start_with<V: AsRef<std::ffi::OsStr>>(
        config: &Path,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, V)],
    ) -> Agent {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        let mut child = command
            .args(["run", "-c"])
            .arg(config)
            .args(args)
            .env("TAILHOOK_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v.as_ref())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tailhook");
        let logs = collect(child.stderr.take().expect("piped stderr"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        Agent {
            child,
            logs,
            stdout,
        }
    }

    pub fn logs(&self) -> String {
        self.logs.text.lock().unwrap().clone()
    }

    /// How many of the agent's open descriptors lead to `path`.
    pub fn descriptors_on(&self, path: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|target| target == path))
            .count()
    }

    pub fn stdout(&self) -> String {
        self.stdout.text.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        wait_until(timeout, &format!("log line containing {needle:?}"), || {
            self.logs().contains(needle)
        });
    }

    /// CPU seconds (user + system) the agent has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("agent is running");
        // Fields after the command name, which is in parentheses: utime, stime are 14th and 15th.
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0 // USER_HZ is 100 on Linux
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        wait_until(timeout, "the agent to exit", || {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    code = status.code();
                    true
                }
                _ => false,
            }
        });
        // Its last lines may still be in the pipes: a test that reads the
        // logs of an agent that exited must find all of them. Not waited on
        // past a few seconds: a process it left (a fake journalctl killed
        // with it) may hold the pipes open.
        let read_to_end = Instant::now() + Duration::from_secs(5);
        while !(self.logs.reader.is_finished() && self.stdout.reader.is_finished())
            && Instant::now() < read_to_end
        {
            thread::sleep(Duration::from_millis(20));
        }
        code
    }
}

impl Agent {
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Runs `tailhook ARGS -c CONFIG`; every command bounds its own time.
pub fn tailhook(config: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run tailhook")
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `tailhook status --json`, parsed.
pub fn status_json(config: &Path) -> serde_json::Value {
    let output = tailhook(config, &["status", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stream's text as far as it was read, and the thread reading it to
/// its end.
struct Collected {
    text: Arc<Mutex<String>>,
    reader: thread::JoinHandle<()>,
}

fn collect(stream: impl Read + Send + 'static) -> Collected {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    Collected { text, reader }
}

/// Keys added to the sections of [`Setup::agent_config`], as TOML lines.
#[derive(Default, Clone, Copy)]
pub struct ConfigKeys<'a> {
    pub agent: &'a str,
    pub input: &'a str,
    pub webhook: &'a str,
}

/// A temp folder with a log file, a rules folder and a config.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/test.toml"), TEST_RULES).unwrap();
        Setup { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with the test rules, one input `auth` (reading `auth.log`
    /// unless `keys.input` sets `paths`) and one webhook `soc` posting to
    /// `url`; `keys` adds TOML lines to each section.
    pub fn agent_config(&self, url: &str, keys: ConfigKeys) -> PathBuf {
        let paths = if keys.input.contains("paths") {
            ""
        } else {
            "paths = [\"auth.log\"]"
        };
        self.write_config(&format!(
            "[agent]\nstate_dir = \"state\"\n{}\n[rules]\npaths = [\"rules\"]\n\
             [[input]]\nname = \"auth\"\n{paths}\n{}\n[webhook.soc]\nurl = \"{url}\"\n{}\n",
            keys.agent, keys.input, keys.webhook
        ))
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.path("tailhook.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes `agent_config`, creates an empty `auth.log` and starts an
    /// agent on it, returning once the file is tailed: lines appended from
    /// then on are read (the input starts at the end).
    pub fn start_tailing(
        &self,
        url: &str,
        keys: ConfigKeys,
        deadline: Duration,
    ) -> (PathBuf, Agent) {
        let config = self.agent_config(url, keys);
        self.append("auth.log", &[]);
        let agent = Agent::start(&config);
        agent.wait_for_log("tailing file", deadline);
        (config, agent)
    }

    pub fn append(&self, file: &str, lines: &[String]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(file))
            .unwrap();
        for line in lines {
            writeln!(f, "{line}").unwrap();
        }
    }
}

/// Rules the end-to-end tests rely on, independent of the shipped packs.
pub const TEST_RULES: &str = r#"
[[rule]]
id = "test.auth_failed"
severity = "high"
regex = '^seq=(?P<event.sequence>\d+) Failed password for (?P<user.name>\S+) from (?P<source.ip>[0-9a-f.:]+) port (?P<source.port>\d+)$'
types = { "event.sequence" = "int", "source.port" = "int", "source.ip" = "ip" }

[[rule.example]]
line = "seq=1 Failed password for root from 192.0.2.1 port 22"
fields = { "event.sequence" = 1, "user.name" = "root", "source.ip" = "192.0.2.1", "source.port" = 22 }
"#;

pub fn failed_line(seq: usize) -> String {
    format!(
        "seq={seq} Failed password for user{seq} from 192.0.2.{} port {}",
        seq % 250 + 1,
        1000 + seq
    )
}

/// The `event.sequence` field of each event, in order.
pub fn sequences(events: &[serde_json::Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| {
            e["fields"]["event.sequence"]
                .as_i64()
                .expect("test events carry a sequence")
        })
        .collect()
}

pub fn noise_line(seq: usize) -> String {
    format!("seq={seq} Accepted password for user{seq} from 192.0.2.1 port 22")
}

/// (status code, body) of `GET path`; `None` while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing in\n{metrics}"))
        .parse()
        .unwrap()
}

impl Agent {
    /// The port of `/metrics` and `/health`, from the log line that
    /// announces it (configure `metrics_listen = "127.0.0.1:0"`).
    pub fn metrics_port(&self, timeout: Duration) -> u16 {
        let marker = "serving /metrics and /health listen=127.0.0.1:";
        self.wait_for_log(marker, timeout);
        let logs = self.logs();
        let after_marker = &logs[logs.find(marker).unwrap() + marker.len()..];
        after_marker
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}
