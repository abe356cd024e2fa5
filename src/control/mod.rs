//! The control socket: how `tailhook status`, `send`, `tap` and
//! `dead-letter replay` reach a running agent.
//!
//! While the agent runs, redb keeps `queue.redb` to itself and the rate-limit
//! budget lives in the agent's limiters, so the commands ask the agent
//! instead of opening the state. The agent listens on the Unix socket
//! `<state_dir>/control.sock` (mode 0600: only its user and root may ask;
//! removed on a graceful exit, a stale one replaced at start). A connection
//! carries one request as a JSON line; the agent answers with JSON lines:
//! any number of notes (what a send is waiting for), then one final reply.
//! When nothing answers on the socket, the commands open the state files
//! themselves.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::config::InputConfig;
use crate::deadletter::{self, Replayed};
use crate::deliver::{Sent, Webhook};
use crate::event::Fields;
use crate::health::{Health, Verdict};
use crate::metrics::{FleetGauges, Metrics, ProcessFigures, Scrape, WebhookGauges};
use crate::queue::Queue;
use crate::status::{self, LastReload, StatusReport, WebhookLimits};
use crate::tap::{self, Tap, Tapped};

/// The socket's file name in the state dir.
const SOCKET_FILE: &str = "control.sock";

/// A request larger than this is not one of ours.
const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Send {
        webhook: String,
        fields: Fields,
        timeout_ms: u64,
    },
    /// The last `count` events (of `webhook`, or all); with `follow`, every
    /// change after them too, as `tapped` lines until the client hangs up.
    Tap {
        webhook: Option<String>,
        count: usize,
        follow: bool,
    },
    /// Queue the webhook's dead letters again.
    Replay {
        webhook: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Progress; more lines follow.
    Note {
        text: String,
    },
    Status {
        report: Box<StatusReport>,
    },
    Sent {
        sent: Sent,
    },
    /// Without `follow`: the events asked for, oldest first.
    Tap {
        events: Vec<Tapped>,
    },
    /// With `follow`: one event or change; more lines follow.
    Tapped {
        event: Box<Tapped>,
    },
    Replayed {
        replayed: Replayed,
    },
    Error {
        message: String,
    },
}

/// The running agent as the control socket and the metrics endpoint see it.
pub struct Running {
    pub state_dir: PathBuf,
    pub inputs: Vec<InputConfig>,
    /// In config order, which is their lane in `queue`.
    pub webhooks: Vec<Arc<Webhook>>,
    pub queue: Arc<Queue>,
    pub metrics: Arc<Metrics>,
    pub tap: Arc<Tap>,
    pub health: Health,
    /// Kept across reloads.
    pub reloads: Arc<Reloads>,
}

/// The pipeline the agent runs now: `None` while a reload swaps it (the
/// queue file is reopened with the new webhooks' lanes, and redb lets
/// only one handle hold it).
pub type Current = watch::Receiver<Option<Arc<Running>>>;

/// Said to a client that asks while a reload swaps the pipeline.
pub const RELOADING: &str = "the agent is reloading its configuration; ask again in a moment";

/// What became of the reloads (SIGHUP) since the agent started.
pub struct Reloads {
    /// When the agent started, which no reload changes.
    pub agent_started: std::time::SystemTime,
    pub ok: AtomicU64,
    pub error: AtomicU64,
    last: Mutex<Option<LastReload>>,
}

impl Reloads {
    /// None yet; the agent starts now.
    pub fn at_start() -> Reloads {
        Reloads {
            agent_started: std::time::SystemTime::now(),
            ok: AtomicU64::new(0),
            error: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    pub fn record(&self, outcome: Result<Vec<String>, String>) {
        let (counter, result, error, notes) = match outcome {
            Ok(notes) => (&self.ok, "ok", None, notes),
            Err(error) => (&self.error, "error", Some(error), Vec::new()),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().expect("last reload") = Some(LastReload {
            time: crate::event::rfc3339_now(),
            result: result.into(),
            error,
            notes,
        });
    }

    pub fn last(&self) -> Option<LastReload> {
        self.last.lock().expect("last reload").clone()
    }
}

impl Running {
    pub fn status(&self) -> Result<StatusReport, String> {
        let limits: Vec<WebhookLimits> = self
            .webhooks
            .iter()
            .map(|w| WebhookLimits {
                name: w.config.name.clone(),
                rate_limits: w.config.rate_limits.clone(),
                pacing: w.config.pacing,
            })
            .collect();
        let mut report = status::gather(
            "running",
            &self.state_dir,
            &self.inputs,
            &limits,
            |lane, _, window| {
                self.queue
                    .lane_state(lane, window)
                    .map_err(|e| e.to_string())
            },
        )?;
        report.last_reload = self.reloads.last();
        for (status, webhook) in report.webhooks.iter_mut().zip(&self.webhooks) {
            if let Some(shared) = webhook.shared() {
                status.fleet = Some(status::FleetStatus::new(
                    &shared.fleet().config,
                    shared.observed(),
                ));
            }
        }
        Ok(report)
    }

    /// The `/metrics` text: counters, what is read now (queue, files,
    /// /proc), what each input's paths reach and the reloads' outcomes.
    pub fn metrics_text(&self) -> String {
        let reach: Vec<(&str, crate::tail::Reach)> = self
            .inputs
            .iter()
            .filter_map(|input| Some((input.name.as_str(), crate::tail::survey(input)?)))
            .collect();
        self.metrics.render(&self.scrape())
            + &crate::metrics::render_reach_and_reloads(
                &reach,
                self.reloads.ok.load(Ordering::Relaxed),
                self.reloads.error.load(Ordering::Relaxed),
            )
    }

    pub fn health(&self) -> Verdict {
        self.health.verdict(&self.webhooks, &self.metrics)
    }

    /// What `/metrics` reads rather than counts; reads the checkpoint files
    /// and /proc, so it belongs off the runtime's workers.
    pub fn scrape(&self) -> Scrape {
        let lag = crate::tail::committed_progress(&self.state_dir).ok();
        let input_lag_bytes = self
            .inputs
            .iter()
            .map(|input| {
                lag.iter()
                    .flat_map(|progress| &progress.files)
                    .filter(|file| file.input == input.name)
                    .filter_map(|file| file.lag())
                    .sum()
            })
            .collect();
        Scrape {
            webhooks: self.gauges(),
            input_lag_bytes,
            process: ProcessFigures::read(),
        }
    }

    /// Queue depth, oldest event and budget left of each webhook, now.
    fn gauges(&self) -> Vec<WebhookGauges> {
        self.webhooks
            .iter()
            .enumerate()
            .map(|(lane, webhook)| {
                let (queued_events, queued_bytes) = self.queue.depth(lane);
                let oldest = self.queue.oldest(lane).ok().flatten();
                WebhookGauges {
                    queued_events,
                    queued_bytes,
                    oldest_age_seconds: oldest.map(|t| status::age(t).as_secs_f64()),
                    dropped_events: self.queue.dropped(lane),
                    budget_left: budget_left(&webhook.budget()),
                    fleet: webhook.shared().and_then(|shared| {
                        let observed = shared.observed()?.ok()?;
                        Some(FleetGauges {
                            sender: observed.overview.holder.as_deref()
                                == Some(shared.fleet().host.as_str()),
                            queued_events: observed.overview.queued,
                            agents_seen: observed.overview.agents.len() as u64,
                            budget_left: budget_left(&observed.budget),
                        })
                    }),
                }
            })
            .collect()
    }

    fn webhook(&self, name: &str) -> Result<&Arc<Webhook>, String> {
        self.lane(name).map(|lane| &self.webhooks[lane])
    }

    fn lane(&self, name: &str) -> Result<usize, String> {
        self.webhooks
            .iter()
            .position(|w| w.config.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .webhooks
                    .iter()
                    .map(|w| w.config.name.as_str())
                    .collect();
                format!(
                    "no webhook named `{name}` (configured: {})",
                    names.join(", ")
                )
            })
    }
}

/// The bound socket; removes its file when dropped (on a graceful exit).
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `<state_dir>/control.sock`, replacing a stale socket that
    /// nothing answers on (left by an agent that was killed).
    pub fn bind(state_dir: &Path) -> anyhow::Result<ControlSocket> {
        let path = socket_path(state_dir);
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                anyhow::bail!(
                    "{}: another agent answers on this control socket; is one already running with this state_dir?",
                    path.display()
                );
            }
            std::fs::remove_file(&path).map_err(|e| {
                anyhow::anyhow!("{}: cannot remove the stale socket: {e}", path.display())
            })?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot listen: {e}", path.display()))?;
        // Status shows the last errors and send triggers the webhook: only
        // the agent's user (and root) may ask.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            anyhow::anyhow!("{}: cannot restrict to mode 0600: {e}", path.display())
        })?;
        Ok(ControlSocket { listener, path })
    }

    /// Answers requests until the task is dropped.
    pub async fn serve(self, current: Current) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, current.clone()));
                }
                Err(e) => {
                    tracing::warn!(socket = %self.path.display(), error = %e, "control socket: cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn answer(stream: UnixStream, current: Current) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Reply::Error {
            message: format!("no request within {REQUEST_TIMEOUT:?}"),
        },
        Ok(Err(e)) => Reply::Error {
            message: format!("cannot read the request: {e}"),
        },
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::Error {
                message: format!("not a request: {e}"),
            },
            Ok(request) => {
                let running = current.borrow().clone();
                match running {
                    Some(running) => answer_request(request, running, &mut write).await,
                    None => Reply::Error {
                        message: RELOADING.into(),
                    },
                }
            }
        },
    };
    let _ = write_reply(&mut write, &reply).await;
}

/// Answers with the pipeline running now. A reload waits for `running` to
/// be let go of, so nothing here holds it longer than the request needs:
/// a tap follower keeps only the tap's feed.
async fn answer_request(
    request: Request,
    running: Arc<Running>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Reply {
    match request {
        // It reads files (a dead-letter file may be large): off the
        // runtime's few threads, which the deliveries need.
        Request::Status => match tokio::task::spawn_blocking(move || running.status()).await {
            Ok(Ok(report)) => Reply::Status {
                report: Box::new(report),
            },
            Ok(Err(message)) => Reply::Error { message },
            Err(e) => Reply::Error {
                message: format!("status failed: {e}"),
            },
        },
        Request::Send {
            webhook,
            fields,
            timeout_ms,
        } => manual_send(&running, &webhook, fields, timeout_ms, write).await,
        Request::Tap {
            webhook,
            count,
            follow,
        } => tap(running, webhook.as_deref(), count, follow, write).await,
        Request::Replay { webhook } => match running.lane(&webhook) {
            Err(message) => Reply::Error { message },
            Ok(lane) => {
                tracing::info!(%webhook, "dead-letter replay asked for on the control socket");
                let replay =
                    move || deadletter::replay(&running.state_dir, &webhook, &running.queue, lane);
                match tokio::task::spawn_blocking(replay).await {
                    Ok(Ok(replayed)) => Reply::Replayed { replayed },
                    Ok(Err(message)) => Reply::Error { message },
                    Err(e) => Reply::Error {
                        message: format!("replay failed: {e}"),
                    },
                }
            }
        },
    }
}

/// Sends through the agent's own webhook (so its limiter is charged),
/// passing notes on to the client while it waits.
async fn manual_send(
    running: &Running,
    name: &str,
    fields: Fields,
    timeout_ms: u64,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Reply {
    let webhook = match running.webhook(name) {
        Ok(webhook) => webhook,
        Err(message) => return Reply::Error { message },
    };
    tracing::info!(webhook = %name, "manual send asked for on the control socket");
    let (notes, mut noted) = tokio::sync::mpsc::unbounded_channel();
    let mut tell = |text: String| {
        let _ = notes.send(text);
    };
    let send = webhook.send_manual(fields, Duration::from_millis(timeout_ms), &mut tell);
    tokio::pin!(send);
    let result = loop {
        tokio::select! {
            result = &mut send => break result,
            Some(text) = noted.recv() => {
                let _ = write_reply(write, &Reply::Note { text }).await;
            }
        }
    };
    while let Ok(text) = noted.try_recv() {
        let _ = write_reply(write, &Reply::Note { text }).await;
    }
    match result {
        Ok(sent) => Reply::Sent { sent },
        Err(message) => Reply::Error { message },
    }
}

/// The last events of the tap; with `follow`, then every change as it
/// happens, until the client hangs up or the agent stops.
async fn tap(
    running: Arc<Running>,
    webhook: Option<&str>,
    count: usize,
    follow: bool,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Reply {
    if let Some(Err(message)) = webhook.map(|name| running.lane(name)) {
        return Reply::Error { message };
    }
    let (events, mut changes) = running
        .tap
        .last_and_follow(webhook, count.min(tap::CAPACITY));
    if !follow {
        return Reply::Tap { events };
    }
    // The feed ends when the pipeline does (a stop, or a reload's swap).
    drop(running);
    for event in events {
        let reply = Reply::Tapped {
            event: Box::new(event),
        };
        if write_reply(write, &reply).await.is_err() {
            return Reply::Error {
                message: "the client left".into(),
            };
        }
    }
    loop {
        let reply = match changes.recv().await {
            Ok(event) if webhook.is_some_and(|name| event.webhook != name) => continue,
            Ok(event) => Reply::Tapped { event },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => Reply::Note {
                text: format!("{missed} changes came too fast to show"),
            },
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return Reply::Error {
                    message: "the agent is stopping or reloading its configuration".into(),
                }
            }
        };
        if write_reply(write, &reply).await.is_err() {
            return Reply::Error {
                message: "the client left".into(),
            };
        }
    }
}

async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("replies serialize");
    line.push(b'\n');
    write.write_all(&line).await
}

/// Asks the agent running on `state_dir`. `Ok(None)` when none answers (no
/// socket, or a stale one); notes are handed to `on_note` as they come, and
/// the final reply is returned. `wait` bounds the wait for each line.
pub fn ask(
    state_dir: &Path,
    request: &Request,
    wait: Duration,
    mut on_note: impl FnMut(&str),
) -> Result<Option<Reply>, String> {
    converse(state_dir, request, Some(wait), |reply| match reply {
        Reply::Note { text } => {
            on_note(text);
            true
        }
        _ => false,
    })
}

/// Like [`ask`], for a conversation that streams: every line `on_line`
/// takes (returns `true` for) is one of many; the first it does not take is
/// the final reply. Without `wait`, waits for each line as long as the
/// agent runs.
pub fn converse(
    state_dir: &Path,
    request: &Request,
    wait: Option<Duration>,
    mut on_line: impl FnMut(&Reply) -> bool,
) -> Result<Option<Reply>, String> {
    let path = socket_path(state_dir);
    let stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(format!(
                "{}: cannot reach the agent: {e} (run as the agent's user or root)",
                path.display()
            ))
        }
    };
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    stream.set_read_timeout(wait).map_err(fail)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    (&stream).write_all(&line).map_err(fail)?;
    for line in BufReader::new(&stream).lines() {
        let line =
            line.map_err(|e| format!("{}: the agent did not answer in time: {e}", path.display()))?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(reply) if on_line(&reply) => {}
            Ok(reply) => return Ok(Some(reply)),
            Err(e) => return Err(format!("{}: unexpected answer: {e}", path.display())),
        }
    }
    Err(format!(
        "{}: the agent closed the connection without an answer (did it stop?)",
        path.display()
    ))
}

/// (window as configured; requests left in it) of each window.
fn budget_left(usage: &[crate::deliver::WindowUsage]) -> Vec<(String, u64)> {
    usage
        .iter()
        .map(|w| {
            let left = w.limit.count.saturating_sub(w.used);
            (w.limit.to_string(), u64::from(left))
        })
        .collect()
}
