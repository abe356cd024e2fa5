//! Journald inputs: entries of the systemd journal as [`Line`]s.
//!
//! Where sshd, sudo and PAM log only to the journal (Debian 12+, Fedora,
//! Arch, minimal images), a `type = "journald"` input runs `journalctl
//! --follow --output=json` with its filters and hands each entry to the rules
//! as a syslog-style line (see `entry`). The tailer thread polls each source
//! as it reads files; a reader thread per source turns journalctl's stdout
//! into a bounded channel and wakes the tailer, so a full queue stops the
//! reading, then journalctl, and the journal is the buffer.
//!
//! A source commits like a file: every chunk of entries carries a
//! [`CommitToken`](super::CommitToken), and the cursor of a chunk's last
//! entry is committed (in `checkpoints.json`) once the chunk's events are
//! queued. After a restart, even `kill -9`, journalctl continues
//! `--after-cursor` the committed one; entries read again get the same event
//! ids (they include the cursor), and the queue drops them. On the very
//! first start with `start_at = "end"`, the cursor of the journal's last
//! matching entry is taken as committed, so history is not sent. When
//! journalctl exits, it is started again after a capped exponential backoff,
//! from the last entry read.

mod entry;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;

use entry::parse_entry;
pub use entry::{cursor_time, read_recorded, JournalEntry, JournalMeta, Recorded};

use super::checkpoint::JournalCheckpoint;
use super::watch::Waker;
use super::{Commits, LineBatch, LineChunk, LineSink};
use crate::config::{InputConfig, StartAt};

/// The program journald inputs run, looked up on `PATH`.
pub const JOURNALCTL: &str = "journalctl";

/// `log.file` of events from the journal.
pub const JOURNAL_ORIGIN: &str = "journald";

/// Entries handed to the rules per poll, for fairness with other inputs.
const ENTRIES_PER_POLL: usize = 2000;

/// Lines of journalctl output buffered between its pipe and the tailer.
const CHANNEL_LINES: usize = 1024;

/// Where `journalctl` is on `PATH`, if anywhere.
pub fn journalctl_on_path() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join(JOURNALCTL))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// The error for an input whose journalctl cannot be found.
pub fn journalctl_missing(input: &str) -> String {
    format!("input `{input}`: {JOURNALCTL} not found on PATH; install systemd or use a file input")
}

/// One journald input and the journalctl process that feeds it.
pub struct JournalSource {
    /// Index of the input in config order.
    pub input: usize,
    name: String,
    /// journalctl's filter arguments, from `units`, `identifiers`, `matches`.
    filters: Vec<OsString>,
    max_line_bytes: usize,
    /// First start with `start_at = "end"`: the journal's current last
    /// entry must be found before following.
    find_tail: bool,
    running: Option<Running>,
    restart_at: Instant,
    backoff: backon::ExponentialBackoff,
    /// The cursor of the last entry read (`None`: the journal's beginning):
    /// where a restarted journalctl continues.
    read: Option<String>,
    commits: Commits<Option<String>>,
    waker: Waker,
}

struct Running {
    child: Child,
    lines: Receiver<Vec<u8>>,
    /// Logs journalctl's stderr; says at its end whether journalctl refused
    /// the cursor it was given.
    stderr: std::thread::JoinHandle<bool>,
    /// Whether it produced output since it started, which resets the backoff.
    produced: bool,
}

impl JournalSource {
    /// A source for the journald input `config` (at `input` in config
    /// order), resuming from `checkpoint`; it starts journalctl on its first
    /// poll.
    pub fn new(
        input: usize,
        config: &InputConfig,
        checkpoint: Option<&JournalCheckpoint>,
        waker: Waker,
    ) -> JournalSource {
        let read = checkpoint.and_then(|c| c.cursor.clone());
        JournalSource {
            input,
            name: config.name.clone(),
            filters: filter_args(config),
            max_line_bytes: config.max_line_bytes,
            find_tail: checkpoint.is_none() && config.start_at == StartAt::End,
            running: None,
            restart_at: Instant::now(),
            backoff: restart_backoff(),
            commits: Commits::new(read.clone()),
            read,
            waker,
        }
    }

    /// What to write to `checkpoints.json`; nothing until the start position
    /// is known, so that a restart before it still starts at the tail.
    pub fn checkpoint(&mut self) -> Option<JournalCheckpoint> {
        if self.find_tail {
            return None;
        }
        Some(JournalCheckpoint {
            input: self.name.clone(),
            cursor: self.commits.committed().clone(),
        })
    }

    pub fn has_in_flight(&mut self) -> bool {
        self.commits.has_in_flight()
    }

    /// Hands what journalctl wrote since the last poll to `sink`, starting or
    /// restarting journalctl when due. `None` when the sink is gone;
    /// otherwise whether more is waiting.
    pub fn poll(&mut self, sink: &mut dyn LineSink) -> Option<bool> {
        if self.running.is_none() {
            if Instant::now() < self.restart_at {
                return Some(false);
            }
            self.start();
        }
        let Some(running) = self.running.as_mut() else {
            return Some(false);
        };
        let mut entries: Vec<JournalEntry> = Vec::new();
        let mut exited = false;
        let mut read = self.read.clone();
        while entries.len() < ENTRIES_PER_POLL {
            let json = match running.lines.try_recv() {
                Ok(json) => json,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    exited = true;
                    break;
                }
            };
            running.produced = true;
            match parse_entry(&json, self.max_line_bytes) {
                Ok(entry) => {
                    read = Some(entry.meta.cursor.clone());
                    entries.push(entry);
                }
                Err(e) => match e.cursor() {
                    Some(cursor) => {
                        tracing::debug!(input = %self.name, cursor, "journal entry without MESSAGE; skipped");
                        read = Some(cursor.to_string());
                    }
                    None => {
                        tracing::warn!(input = %self.name, error = %e, output = %String::from_utf8_lossy(&json), "journalctl wrote a line that is not an entry; skipped");
                    }
                },
            }
        }
        let more = entries.len() >= ENTRIES_PER_POLL;
        if read != self.read {
            // Skipped entries move the cursor too: a chunk may carry no line.
            self.read = read;
            let commit = self.commits.chunk(self.read.clone());
            let truncated = entries.iter().filter(|e| e.cut_from.is_some()).count();
            if truncated > 0 {
                tracing::warn!(input = %self.name, entries = truncated, max_line_bytes = self.max_line_bytes, "journal entries longer than max_line_bytes were cut");
            }
            let mut lines = LineBatch::default();
            let mut metas = Vec::with_capacity(entries.len());
            for entry in entries {
                lines.push(entry.meta.seqnum, entry.line.as_bytes(), entry.cut_from);
                metas.push(entry.meta);
            }
            let chunk = LineChunk {
                input: self.input,
                path: JOURNAL_ORIGIN,
                source: None,
                lines: &lines,
                journal: &metas,
            };
            sink.accept(chunk, commit).ok()?;
        }
        if exited {
            self.reap();
        }
        Some(more)
    }

    /// Stops journalctl (at shutdown).
    pub fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }

    /// On a first start with `start_at = "end"`, takes the journal's last
    /// entry as read and committed. The tailer calls this before it first
    /// writes its checkpoints, so a crash right after start cannot make the
    /// next start skip what was written in between. False when journalctl
    /// failed (a retry is scheduled).
    pub fn find_start(&mut self) -> bool {
        if !self.find_tail {
            return true;
        }
        match self.last_entry_cursor() {
            Ok(cursor) => {
                tracing::info!(input = %self.name, cursor = cursor.as_deref().unwrap_or("none"), "first start: reading the journal from its current end");
                self.find_tail = false;
                self.read = cursor;
                self.commits.reset(self.read.clone());
                true
            }
            Err(e) => {
                self.schedule_restart(&e);
                false
            }
        }
    }

    fn start(&mut self) {
        if !self.find_start() {
            return;
        }
        let mut command = Command::new(JOURNALCTL);
        command.args(["--follow", "--output=json", "--all", "--no-pager"]);
        match &self.read {
            Some(cursor) => command.arg(format!("--after-cursor={cursor}")),
            None => command.arg("--lines=all"),
        };
        // Its own process group: Ctrl-C in a terminal stops the agent, which
        // then stops journalctl, instead of journalctl dying first and being
        // reported as a failure.
        command
            .args(&self.filters)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let problem = self.spawn_error(&e);
                self.schedule_restart(&problem);
                return;
            }
        };
        tracing::info!(input = %self.name, after = self.read.as_deref().unwrap_or("the beginning"), "following the journal");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = std::sync::mpsc::sync_channel(CHANNEL_LINES);
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tailhook-journal-{}", self.name))
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let mut line = Vec::new();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if line.is_empty() {
                        continue;
                    }
                    if sender.send(line).is_err() {
                        break;
                    }
                    waker.wake();
                }
                drop(sender);
                waker.wake();
            });
        let name = self.name.clone();
        let logged = std::thread::Builder::new()
            .name(format!("tailhook-journal-{}-stderr", self.name))
            .spawn(move || {
                let mut cursor_refused = false;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    cursor_refused |= line.contains("Failed to seek to cursor");
                    report_stderr(&name, &line);
                }
                cursor_refused
            });
        let stderr = match spawned.and(logged) {
            Ok(stderr) => stderr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                self.schedule_restart(&format!("cannot start a reader thread: {e}"));
                return;
            }
        };
        self.running = Some(Running {
            child,
            lines,
            stderr,
            produced: false,
        });
    }

    /// The cursor of the journal's last entry that the filters select, or
    /// `None` when there is none yet.
    fn last_entry_cursor(&self) -> Result<Option<String>, String> {
        let output = Command::new(JOURNALCTL)
            .args(["--lines=1", "--output=json", "--no-pager", "--quiet"])
            .args(&self.filters)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(&e))?;
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            report_stderr(&self.name, line);
        }
        if !output.status.success() {
            return Err(format!(
                "{JOURNALCTL} failed to find the journal's end ({})",
                output.status
            ));
        }
        Ok(output.stdout.split(|&b| b == b'\n').rev().find_map(|line| {
            match parse_entry(line, self.max_line_bytes) {
                Ok(entry) => Some(entry.meta.cursor),
                Err(e) => e.cursor().map(str::to_string),
            }
        }))
    }

    fn spawn_error(&self, error: &std::io::Error) -> String {
        if error.kind() == std::io::ErrorKind::NotFound {
            journalctl_missing(&self.name)
        } else {
            format!("input `{}`: cannot run {JOURNALCTL}: {error}", self.name)
        }
    }

    /// Collects an exited journalctl and plans its restart.
    fn reap(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let status = running.child.wait();
        let cursor_refused = running.stderr.join().unwrap_or(false);
        if running.produced {
            self.backoff = restart_backoff();
        }
        let status = match status {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        if cursor_refused && !running.produced {
            // A checkpoint edited by hand or from another machine: like a
            // corrupt checkpoint file, start over as on a first start rather
            // than retry the same cursor forever.
            tracing::error!(
                input = %self.name,
                cursor = self.read.as_deref().unwrap_or_default(),
                "{JOURNALCTL} refused the saved cursor; reading on from the journal's current end"
            );
            self.find_tail = true;
        }
        self.schedule_restart(&format!("{JOURNALCTL} exited ({status})"));
    }

    fn schedule_restart(&mut self, problem: &str) {
        let delay = self.backoff.next().unwrap_or(MAX_RESTART_DELAY);
        self.restart_at = Instant::now() + delay;
        tracing::warn!(input = %self.name, retry_in_ms = delay.as_millis() as u64, "{problem}; will retry");
    }
}

const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

fn restart_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(MAX_RESTART_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// journalctl match arguments for an input's `units`, `identifiers` and
/// `matches`: one group each, joined by `+` (or). Within a group, terms on
/// one field are alternatives and terms on different fields must all hold,
/// so an entry is read when it comes from one of the units, or has one of
/// the identifiers, or matches a `matches` group. (journalctl's own `--unit`
/// and `--identifier` would require both, which reads neither sshd's unit
/// nor sudo's sessions when both are listed.)
pub fn filter_args(config: &InputConfig) -> Vec<OsString> {
    let groups: [Vec<String>; 3] = [
        config
            .units
            .iter()
            .map(|u| format!("_SYSTEMD_UNIT={u}"))
            .collect(),
        config
            .identifiers
            .iter()
            .map(|i| format!("SYSLOG_IDENTIFIER={i}"))
            .collect(),
        config.matches.clone(),
    ];
    let groups: Vec<Vec<String>> = groups.into_iter().filter(|g| !g.is_empty()).collect();
    groups
        .join(&["+".to_string()][..])
        .into_iter()
        .map(OsString::from)
        .collect()
}

/// Logs a line journalctl wrote to stderr, explaining the common ones.
fn report_stderr(input: &str, line: &str) {
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    if line.contains("not seeing messages from other users and the system") {
        tracing::warn!(
            input,
            "{JOURNALCTL} cannot read the system journal, only this user's: add the agent's user to the `systemd-journal` or `adm` group (journalctl: {line})"
        );
    } else if line.contains("No journal files were found") {
        tracing::warn!(
            input,
            "{JOURNALCTL} found no journal files: is systemd-journald running, and may this user read /var/log/journal?"
        );
    } else {
        tracing::warn!(input, "{JOURNALCTL}: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_journalctl_arguments() {
        let config: InputConfig = toml::from_str(
            r#"
            name = "j"
            type = "journald"
            units = ["ssh.service"]
            identifiers = ["sudo", "su"]
            matches = ["_TRANSPORT=syslog", "+", "PRIORITY=3"]
            "#,
        )
        .unwrap();
        let args: Vec<String> = filter_args(&config)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "_SYSTEMD_UNIT=ssh.service",
                "+",
                "SYSLOG_IDENTIFIER=sudo",
                "SYSLOG_IDENTIFIER=su",
                "+",
                "_TRANSPORT=syslog",
                "+",
                "PRIORITY=3"
            ]
        );
        let only_identifiers = InputConfig {
            units: vec![],
            matches: vec![],
            ..config
        };
        let args: Vec<String> = filter_args(&only_identifiers)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(args, ["SYSLOG_IDENTIFIER=sudo", "SYSLOG_IDENTIFIER=su"]);
    }
}
