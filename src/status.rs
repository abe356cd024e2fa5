//! `tailhook status`: how far each input is read, and how each webhook is
//! doing (queue, rate-limit budget, last error, dead letters).
//!
//! The same report is built by the running agent (asked over the control
//! socket, because redb lets no other process open the queue meanwhile) and
//! by the `status` command itself from the state files when no agent runs.
//! Both read the queue through a [`LaneState`] and everything else from
//! files, so the two can only differ in how fresh they are.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{InputConfig, InputKind, RateLimit};
use crate::deadletter::dead_letter_file;
use crate::deliver::{attempt_memory, budget_from_history, human, WindowUsage};
use crate::queue::{LaneState, LastError};
use crate::tail::{committed_progress, cursor_time, survey, Reach};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// `running` when the agent answered; `stopped` when read from the files.
    pub agent: String,
    pub state_dir: String,
    pub inputs: Vec<InputStatus>,
    pub webhooks: Vec<WebhookStatus>,
    /// The running agent's last reload (SIGHUP), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<LastReload>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastReload {
    /// RFC 3339, UTC.
    pub time: String,
    /// `ok`, or `error` when the agent kept running on the config it had.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the reload left behind, e.g. events of a removed webhook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputStatus {
    pub name: String,
    pub files: Vec<FileStatus>,
    /// A journald input: it has a committed cursor instead of files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub journald: bool,
    /// The cursor of the last journal entry whose events are queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_cursor: Option<String>,
    /// What a file input's paths reach, as the process that made the
    /// report sees them (the agent's user, when the agent answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    pub path: String,
    /// Bytes committed (their events are queued).
    pub offset: u64,
    /// `None` when the path is gone or holds another file now.
    pub size: Option<u64>,
    /// Bytes not yet committed: size − offset.
    pub lag: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookStatus {
    pub name: String,
    pub queued_events: u64,
    pub queued_bytes: u64,
    pub oldest_age_seconds: Option<u64>,
    pub budget: Vec<WindowStatus>,
    pub last_error: Option<LastError>,
    pub dead_lettered: DeadLettered,
    /// Events dropped to make room (`when_full = "drop_oldest"`), ever.
    #[serde(default)]
    pub dropped_events: u64,
    /// Why the queue figures, budget and last error are missing, when they
    /// are (the queue file cannot be read).
    pub problem: Option<String>,
    /// A webhook shared by a fleet: its queue and budget in Redis (the
    /// figures above are this agent's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// A shared webhook as the fleet's Redis says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The Redis URL, redacted.
    pub redis: String,
    pub namespace: String,
    /// The agent (`agent.host`) that holds the sender's lease.
    pub sender: Option<String>,
    /// Events in the shared stream, waiting or being sent.
    pub shared_queued_events: u64,
    /// Every agent's attempts, in each window.
    pub budget: Vec<WindowStatus>,
    /// Agents that said they are alive within the last minute.
    pub agents_seen: Vec<String>,
    /// Why the figures are missing (Redis unreachable, this agent refused).
    pub problem: Option<String>,
}

impl FleetStatus {
    pub fn new(
        fleet: &crate::config::FleetConfig,
        observed: Option<Result<crate::fleet::Observed, String>>,
    ) -> FleetStatus {
        let mut status = FleetStatus {
            redis: fleet.redis.to_string(),
            namespace: fleet.namespace.clone(),
            sender: None,
            shared_queued_events: 0,
            budget: Vec::new(),
            agents_seen: Vec::new(),
            problem: None,
        };
        match observed {
            Some(Ok(observed)) => {
                status.sender = observed.overview.holder;
                status.shared_queued_events = observed.overview.queued;
                status.agents_seen = observed.overview.agents;
                status.budget = observed.budget.into_iter().map(window_status).collect();
            }
            Some(Err(problem)) => status.problem = Some(problem),
            None => status.problem = Some("not observed yet".into()),
        }
        status
    }
}

fn window_status(usage: WindowUsage) -> WindowStatus {
    WindowStatus {
        window: usage.limit.to_string(),
        limit: usage.limit.count,
        used: usage.used,
        left: usage.limit.count.saturating_sub(usage.used),
        free_in_seconds: usage.free_in.as_secs_f64(),
        pace_seconds: usage.pace.map(|pace| pace.as_secs_f64()),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowStatus {
    /// As configured, e.g. `5/1m`.
    pub window: String,
    pub limit: u32,
    pub used: u32,
    /// Attempts the window still allows.
    pub left: u32,
    /// Seconds until the window has room again; 0 while it has.
    pub free_in_seconds: f64,
    /// With pacing: the seconds this window wants between attempts now
    /// (what is left of it over what is left of its paced budget).
    pub pace_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeadLettered {
    pub batches: u64,
    pub events: u64,
}

/// A webhook as status needs it: its name and rate windows.
pub struct WebhookLimits {
    pub name: String,
    pub rate_limits: Vec<RateLimit>,
    /// The pacing reserve; `None` when the webhook is not paced.
    pub pacing: Option<f64>,
}

/// Builds the report. `lane_state(lane, name, window)` reads the queue for
/// the webhook at `lane` (config order), with attempts made within `window`.
pub fn gather(
    agent: &str,
    state_dir: &Path,
    inputs: &[InputConfig],
    webhooks: &[WebhookLimits],
    mut lane_state: impl FnMut(usize, &str, Duration) -> Result<LaneState, String>,
) -> Result<StatusReport, String> {
    let progress = committed_progress(state_dir)?;
    let inputs = inputs
        .iter()
        .map(|input| InputStatus {
            name: input.name.clone(),
            journald: input.kind == InputKind::Journald,
            journal_cursor: progress
                .journals
                .iter()
                .find(|j| j.input == input.name)
                .and_then(|j| j.cursor.clone()),
            reach: survey(input),
            files: progress
                .files
                .iter()
                .filter(|p| p.input == input.name)
                .map(|p| FileStatus {
                    path: p.path.clone(),
                    offset: p.offset,
                    size: p.size,
                    lag: p.lag(),
                })
                .collect(),
        })
        .collect();
    let webhooks = webhooks
        .iter()
        .enumerate()
        .map(|(lane, webhook)| {
            let window = attempt_memory(&webhook.rate_limits);
            let (state, problem) = match lane_state(lane, &webhook.name, window) {
                Ok(state) => (state, None),
                Err(problem) => (LaneState::default(), Some(problem)),
            };
            // Without the queue file the attempts are unknown too: no budget
            // is shown rather than a wrongly unspent one.
            let history = if problem.is_some() {
                Vec::new()
            } else {
                budget_from_history(&webhook.rate_limits, &state.attempt_ages, webhook.pacing)
            };
            let budget = history.into_iter().map(window_status).collect();
            WebhookStatus {
                name: webhook.name.clone(),
                queued_events: state.events,
                queued_bytes: state.bytes,
                oldest_age_seconds: state.oldest.map(|t| age(t).as_secs()),
                budget,
                last_error: state.last_error,
                dead_lettered: count_dead_letters(&dead_letter_file(state_dir, &webhook.name)),
                dropped_events: state.dropped,
                problem,
                fleet: None,
            }
        })
        .collect();
    Ok(StatusReport {
        agent: agent.to_string(),
        state_dir: state_dir.display().to_string(),
        inputs,
        webhooks,
        last_reload: None,
    })
}

pub fn age(time: SystemTime) -> Duration {
    SystemTime::now().duration_since(time).unwrap_or_default()
}

/// Batches (lines) and their events in a dead-letter file; none if absent.
fn count_dead_letters(file: &Path) -> DeadLettered {
    let Ok(file) = std::fs::File::open(file) else {
        return DeadLettered::default();
    };
    let mut count = DeadLettered::default();
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if line.trim().is_empty() {
            continue;
        }
        count.batches += 1;
        count.events += serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|record| record["events"].as_array().map(|e| e.len() as u64))
            .unwrap_or(0);
    }
    count
}

impl StatusReport {
    /// The report for people: a table of files, then a block per webhook.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("agent: {} (state in {})\n\n", self.agent, self.state_dir);
        let mut rows = vec![[
            "INPUT".to_string(),
            "FILE".into(),
            "OFFSET".into(),
            "SIZE".into(),
            "LAG".into(),
        ]];
        for input in &self.inputs {
            if input.journald {
                let position = match input.journal_cursor.as_deref() {
                    Some(cursor) => format!(
                        "journald, through the entry of {}",
                        cursor_time(cursor).unwrap_or_else(|| cursor.to_string())
                    ),
                    None => "journald (no entry committed yet)".into(),
                };
                rows.push([
                    input.name.clone(),
                    position,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
                continue;
            }
            if input.files.is_empty() {
                rows.push([
                    input.name.clone(),
                    "(no file committed yet)".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for file in &input.files {
                let or_gone = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                rows.push([
                    input.name.clone(),
                    if file.size.is_some() {
                        file.path.clone()
                    } else {
                        format!("{} (rotated or gone)", file.path)
                    },
                    file.offset.to_string(),
                    or_gone(file.size),
                    or_gone(file.lag),
                ]);
            }
        }
        let widths: Vec<usize> = (0..5)
            .map(|col| rows.iter().map(|r| r[col].len()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(col, (cell, width))| {
                    if col >= 2 {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        for input in &self.inputs {
            let Some(reach) = &input.reach else { continue };
            for (severity, finding) in reach.findings() {
                let _ = writeln!(
                    out,
                    "{}: input `{}`: {finding}",
                    severity.label(),
                    input.name
                );
            }
        }
        for webhook in &self.webhooks {
            webhook.render(&mut out);
        }
        if let Some(reload) = &self.last_reload {
            let _ = writeln!(out, "\nlast reload:     {} {}", reload.time, reload.result);
            if let Some(error) = &reload.error {
                let _ = writeln!(out, "  error:         {error}");
            }
            for note in &reload.notes {
                let _ = writeln!(out, "  note:          {note}");
            }
        }
        out
    }
}

impl WebhookStatus {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "\nwebhook {}", self.name);
        if let Some(problem) = &self.problem {
            let _ = writeln!(out, "  queue, budget and last error unknown: {problem}");
        } else {
            let oldest = self
                .oldest_age_seconds
                .map(|s| format!(", oldest {} old", human(Duration::from_secs(s))))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  queued:        {} events ({} bytes){oldest}",
                self.queued_events, self.queued_bytes
            );
            let _ = writeln!(out, "  budget:        {}", render_budget(&self.budget));
            let last_error = self
                .last_error
                .as_ref()
                .map_or("none".to_string(), |e| format!("{} {}", e.time, e.message));
            let _ = writeln!(out, "  last error:    {last_error}");
            if self.dropped_events > 0 {
                let _ = writeln!(
                    out,
                    "  dropped:       {} oldest events, to make room (when_full = drop_oldest)",
                    self.dropped_events
                );
            }
        }
        let _ = writeln!(
            out,
            "  dead-lettered: {} events in {} batches",
            self.dead_lettered.events, self.dead_lettered.batches
        );
        if let Some(fleet) = &self.fleet {
            fleet.render(out);
        }
    }
}

impl FleetStatus {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "  fleet:         shared through {} (namespace {})",
            self.redis, self.namespace
        );
        if let Some(problem) = &self.problem {
            let _ = writeln!(out, "  fleet unknown: {problem}");
            return;
        }
        let sender = self
            .sender
            .as_deref()
            .unwrap_or("none (no agent holds the lease)");
        let _ = writeln!(out, "  sender:        {sender}");
        let _ = writeln!(out, "  shared queue:  {} events", self.shared_queued_events);
        let _ = writeln!(out, "  fleet budget:  {}", render_budget(&self.budget));
        let _ = writeln!(out, "  agents seen:   {}", self.agents_seen.join(", "));
    }
}

/// Each window's use, e.g. `5/1m: 2 used, 3 left, pace 12.0s`.
fn render_budget(windows: &[WindowStatus]) -> String {
    use std::fmt::Write as _;
    if windows.is_empty() {
        return "no rate limit".to_string();
    }
    windows
        .iter()
        .map(|w| {
            let mut text = format!("{}: {} used, {} left", w.window, w.used, w.left);
            if let Some(pace) = w.pace_seconds {
                let _ = write!(text, ", pace {}", human(Duration::from_secs_f64(pace)));
            }
            if w.free_in_seconds > 0.0 {
                let wait = Duration::from_secs_f64(w.free_in_seconds);
                let _ = write!(text, " (full for {})", human(wait));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}
