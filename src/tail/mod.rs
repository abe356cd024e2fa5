//! Tailing: the stage that turns growing log files, and the systemd journal,
//! into [`Line`]s.
//!
//! One thread follows every input's files: `discover` says which paths match,
//! `file` follows each file by its handle and identity, `reader` cuts bytes into
//! lines, `checkpoint` remembers on disk how far each file is committed, `watch`
//! wakes the thread early when inotify sees a change. A periodic stat of every
//! known file is the source of truth, so a lost notification delays a line by
//! at most `rescan_interval` (`poll_interval` without inotify); between
//! looks an idle thread sleeps until a notification comes. The same thread polls the journald inputs
//! (`journal`), whose entries arrive from `journalctl` and commit a cursor
//! the way files commit an offset.
//!
//! Lines leave through a [`LineSink`] in chunks ([`LineChunk`]: one file's
//! lines back to back in one buffer the tailer fills again, so a line costs
//! no allocation of its own). A sink that blocks (its queue is full)
//! blocks this thread, so back-pressure from a slow webhook reaches the files,
//! which are the buffer. Every chunk comes with a [`CommitToken`]; whoever
//! holds the chunk's events holds a copy, and the chunk's end offset is
//! committed once every copy is dropped. The pipeline's sink drops them once
//! the chunk's events are in the durable queue; a sink that kept events in
//! memory could hold them until delivery instead.

mod checkpoint;
mod discover;
mod file;
mod journal;
mod reach;
mod reader;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{InputConfig, InputKind, StartAt};
use crate::event::{LogOrigin, SourceFile};
pub use checkpoint::{committed_progress, FileProgress, JournalCheckpoint, Progress};
use checkpoint::{Checkpoint, CheckpointStore};
pub use discover::PathSet;
use file::{FileId, StartFrom, TailedFile};
pub use reach::{permission_fix, survey, Reach, Severity, Unreadable};
pub use reader::{LineBatch, RawLine};
use watch::{Waker, Wakeups};

use journal::JournalSource;
pub use journal::{
    cursor_time, journalctl_missing, journalctl_on_path, read_recorded, JournalEntry, JournalMeta,
    Recorded, JOURNAL_ORIGIN,
};
pub use reader::LineReader;

/// The share of the process's descriptor limit that tailed files may hold;
/// the rest stays for the HTTP clients, the queue, checkpoints, journalctl
/// pipes and the control and metrics sockets.
const TAILED_FILES_SHARE: u64 = 2;

/// Where the tailer hands its lines.
pub trait LineSink: Send + 'static {
    /// Takes a chunk of lines from one file, in file order, and the chunk's
    /// commit token: the lines are borrowed for the call, the token is kept
    /// for as long as their events are not durable. Blocks while the
    /// downstream is full; `Err` means it is gone and tailing should stop.
    fn accept(&mut self, lines: LineChunk<'_>, commit: CommitToken) -> Result<(), SinkClosed>;

    /// As [`LineSink::accept`], for a part of a read whose lines go on in
    /// the next call, of the same file (a read's last part, however short,
    /// comes through `accept`): a sink may hold the part's events back, so
    /// that a read makes one transaction however many parts its lines are
    /// handed in.
    fn accept_part(&mut self, lines: LineChunk<'_>, commit: CommitToken) -> Result<(), SinkClosed> {
        self.accept(lines, commit)
    }
}

#[derive(Debug)]
pub struct SinkClosed;

/// Held by everything that carries a line or its events; see the module doc.
/// The flag says the chunk was abandoned.
#[derive(Debug, Clone, Default)]
pub struct CommitToken(Arc<AtomicBool>);

impl CommitToken {
    /// Whether only the tailer's own copy is left.
    fn is_last(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// The chunk's events could not be queued (the agent is stopping): its
    /// position, and any later one of its source, must never be committed,
    /// so the lines are read again at the next start.
    pub fn abandon(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_abandoned(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Chunks handed downstream, oldest first, each with the position (a file
/// offset, a journal cursor) that becomes committed once every holder of the
/// chunk's token has let it go. Positions commit in order: a later chunk
/// released first waits for the earlier ones.
#[derive(Debug)]
struct Commits<P> {
    in_flight: VecDeque<(CommitToken, P)>,
    committed: P,
}

impl<P: Clone> Commits<P> {
    fn new(committed: P) -> Self {
        Commits {
            in_flight: VecDeque::new(),
            committed,
        }
    }

    /// Registers a chunk that ends at `end`; the token goes with its lines.
    fn chunk(&mut self, end: P) -> CommitToken {
        let token = CommitToken::default();
        self.in_flight.push_back((token.clone(), end));
        token
    }

    /// The position up to which every chunk's events have left the pipeline.
    fn committed(&mut self) -> &P {
        while let Some((token, end)) = self.in_flight.front() {
            if token.is_abandoned() {
                // Nothing read after an abandoned chunk may commit either.
                self.in_flight.clear();
                break;
            }
            if !token.is_last() {
                break;
            }
            self.committed = end.clone();
            self.in_flight.pop_front();
        }
        &self.committed
    }

    fn has_in_flight(&mut self) -> bool {
        self.committed();
        !self.in_flight.is_empty()
    }

    /// Forgets what is in flight and commits `position` (the content the
    /// chunks came from no longer exists).
    fn reset(&mut self, position: P) {
        self.in_flight.clear();
        self.committed = position;
    }
}

/// Lines of one file (or of the journal) read in one go, in order.
#[derive(Debug, Clone, Copy)]
pub struct LineChunk<'a> {
    /// Index of the input (in config order) the lines came from.
    pub input: usize,
    /// The file's path; [`JOURNAL_ORIGIN`] for journal entries.
    pub path: &'a str,
    /// For a file: the file and its generation, which event ids hash
    /// instead of the path (a rename keeps ids stable).
    pub source: Option<SourceFile>,
    pub lines: &'a LineBatch,
    /// For journal entries: each line's cursor, time and fields, in line
    /// order; empty for a file.
    pub journal: &'a [JournalMeta],
}

impl<'a> LineChunk<'a> {
    /// A chunk of a file's lines.
    pub fn of_file(
        input: usize,
        path: &'a str,
        source: SourceFile,
        lines: &'a LineBatch,
    ) -> LineChunk<'a> {
        LineChunk {
            input,
            path,
            source: Some(source),
            lines,
            journal: &[],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Line<'a>> + 'a {
        let chunk = *self;
        chunk.lines.iter().enumerate().map(move |(i, raw)| Line {
            input: chunk.input,
            path: chunk.path,
            offset: raw.offset,
            text: raw.text,
            cut_from: raw.cut_from,
            source: chunk.source,
            journal: chunk.journal.get(i),
        })
    }
}

/// A complete line read from a file or the journal, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Index of the input (in config order) the line came from.
    pub input: usize,
    /// The file's path; [`JOURNAL_ORIGIN`] for journal entries.
    pub path: &'a str,
    /// Byte offset of the line's first byte; a journal entry's sequence number.
    pub offset: u64,
    pub text: &'a str,
    /// The line was longer than `max_line_bytes` and was cut: how many
    /// bytes it had.
    pub cut_from: Option<u64>,
    /// For a file line: the file and its generation, which the event id
    /// hashes instead of the path (a rename keeps ids stable).
    pub source: Option<SourceFile>,
    /// For a journal entry: its cursor, time and fields.
    pub journal: Option<&'a JournalMeta>,
}

impl Line<'_> {
    /// The `log` member of this line's events.
    pub fn origin(&self) -> LogOrigin {
        LogOrigin {
            file: self.path.to_string(),
            offset: self.offset,
            cursor: self.journal.map(|j| j.cursor.clone()),
        }
    }
}

/// Bytes of a file's read handed to the sink at a time (the read's lines
/// in parts, [`LineSink::accept_part`]): the batch of lines is held at
/// this size rather than `read_budget`'s, whose megabyte of lines and half
/// a megabyte of their spans stayed allocated from the first busy read on
/// (0.8–1 MiB less peak RSS under a backlog, the same CPU).
const PART_READ: u64 = 256 * 1024;

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub poll_interval: Duration,
    /// How long a file that lost its path must sit at its end, not growing,
    /// before it is closed. A writer that still holds it open (before logrotate
    /// signals it) keeps it alive by writing.
    pub rotated_idle: Duration,
    /// Bytes read from one file before moving on to the next, for fairness.
    pub read_budget: u64,
    /// Checkpoints are written at most this often (each write is an fsync).
    pub checkpoint_interval: Duration,
    /// inotify as a wake-up hint; without it, files are polled only.
    pub use_inotify: bool,
    /// Inputs a reload added: the files they find now are treated as at a
    /// first start (`start_at` applies), not as logs created meanwhile.
    pub added_inputs: Vec<String>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            poll_interval: Duration::from_secs(1),
            rotated_idle: Duration::from_secs(30),
            read_budget: 1024 * 1024,
            checkpoint_interval: Duration::from_millis(250),
            use_inotify: true,
            added_inputs: Vec::new(),
        }
    }
}

struct Input {
    name: String,
    paths: PathSet,
    start_at: StartAt,
    max_line_bytes: usize,
    partial_line_timeout: Duration,
    close_inactive: Duration,
    ignore_older: Option<Duration>,
}

/// Handle to the tailer thread.
pub struct Tailer {
    stop: StopRequest,
    waker: Waker,
    thread: JoinHandle<()>,
    heartbeat: tokio::sync::watch::Receiver<Option<Instant>>,
}

impl Tailer {
    /// Starts following `inputs`, resuming from the checkpoints in
    /// `state_dir`; lines go to `sink` in chunks. Fails when the checkpoints
    /// exist but cannot be read.
    pub fn spawn(
        inputs: &[InputConfig],
        state_dir: &std::path::Path,
        options: TailOptions,
        sink: impl LineSink,
    ) -> Result<Tailer, String> {
        let configs = inputs;
        // A journald input has no paths: it discovers no file.
        let inputs: Vec<Input> = configs
            .iter()
            .map(|c| Input {
                name: c.name.clone(),
                paths: PathSet::new(&c.paths, &c.exclude),
                start_at: c.start_at,
                max_line_bytes: c.max_line_bytes,
                partial_line_timeout: c.partial_line_timeout,
                close_inactive: c.close_inactive,
                ignore_older: c.ignore_older,
            })
            .collect();
        let rescan_interval = configs
            .iter()
            .filter(|c| c.kind == InputKind::File)
            .map(|c| c.rescan_interval)
            .min()
            .unwrap_or(Duration::from_secs(10));
        let max_open = descriptor_budget();
        let wakeups = Wakeups::new(options.use_inotify);
        let waker = wakeups.waker();
        let stop = Arc::new(Mutex::new(None));
        let (heartbeat, heartbeat_seen) = tokio::sync::watch::channel(None);
        let checkpoints = CheckpointStore::open(state_dir)?;
        let journals = configs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind == InputKind::Journald)
            .map(|(index, c)| {
                JournalSource::new(index, c, checkpoints.journal(&c.name), waker.clone())
            })
            .collect();
        let state = TailState {
            inputs,
            options,
            files: BTreeMap::new(),
            journals,
            unreadable: HashSet::new(),
            rescan_interval,
            max_open,
            open_now: 0,
            waiting_for_descriptor: false,
            opened_in_look: false,
            closable: None,
            ignored: HashMap::new(),
            cuts: CutReport::default(),
            sink: Some(Box::new(sink)),
            lines: LineBatch::default(),
            checkpoints,
            last_checkpoint: Instant::now(),
            checkpoints_settled: false,
            wakeups,
            stop: stop.clone(),
            heartbeat,
        };
        let thread = std::thread::Builder::new()
            .name("tailhook-tail".into())
            .spawn(move || state.run())
            .expect("spawning a thread at start-up");
        Ok(Tailer {
            stop,
            waker,
            thread,
            heartbeat: heartbeat_seen,
        })
    }

    /// When the thread's next pass is due at the latest: `None` until the
    /// first scan has opened the files and recorded where reading starts.
    /// An idle thread sleeps until its next look at every file, or until a
    /// notification; a pass takes less than `poll_interval` while the thread
    /// is well, unless it waits for room in the queue.
    pub fn heartbeat(&self) -> tokio::sync::watch::Receiver<Option<Instant>> {
        self.heartbeat.clone()
    }

    /// Asks the thread to stop after its current read, closes the sink, and
    /// waits up to `grace` for the events in flight to be delivered so their
    /// offsets are committed. What is not committed is read again next start.
    pub fn stop(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        *self.stop.lock().expect("stop flag") = Some(deadline);
        self.waker.wake();
        let _ = self.thread.join();
    }
}

struct TailState {
    inputs: Vec<Input>,
    options: TailOptions,
    /// Followed files, by input and identity: two inputs may follow one file.
    files: BTreeMap<(usize, FileId), TailedFile>,
    journals: Vec<JournalSource>,
    /// Paths that failed to open, warned about once until they open again.
    unreadable: HashSet<PathBuf>,
    /// With notifications on, how often every glob and file is looked at
    /// when none came (one may be missed: overflow, network file systems).
    rescan_interval: Duration,
    /// How many tailed files may be open at once.
    max_open: usize,
    /// How many are open, counted at the start of each look.
    open_now: usize,
    /// Some file waited for a descriptor during the last look.
    waiting_for_descriptor: bool,
    /// The last look opened a file (new or closed before).
    opened_in_look: bool,
    /// Files that may be closed to make room in this look, the longest idle
    /// last; listed when first needed.
    closable: Option<Vec<(Instant, (usize, FileId))>>,
    /// Logs lines cut at `max_line_bytes`, a few at most.
    cuts: CutReport,
    /// Files left unopened by `ignore_older`, with their size then: if one
    /// is written again, reading starts there, not at its old content.
    ignored: HashMap<(usize, FileId), u64>,
    /// Dropped at shutdown, which closes the queues behind it.
    sink: Option<Box<dyn LineSink>>,
    /// The lines of the file being read, handed to the sink and cleared for
    /// the next: its buffers are reused, not allocated per read.
    lines: LineBatch,
    checkpoints: CheckpointStore,
    last_checkpoint: Instant,
    /// Nothing the checkpoints hold can have moved since the last save: it
    /// had nothing in flight, and no file has been read or discovered since.
    /// Saves are then skipped without building the list to compare.
    checkpoints_settled: bool,
    wakeups: Wakeups,
    stop: StopRequest,
    heartbeat: tokio::sync::watch::Sender<Option<Instant>>,
}

/// Warns about lines cut at `max_line_bytes`: one line each time, at most
/// every `CUT_WARNING_EVERY`, with how many more were cut since. A writer of
/// huge lines cannot flood the log; none is cut unseen (metrics count each).
#[derive(Default)]
struct CutReport {
    last_warning: Option<Instant>,
    unreported: u64,
}

const CUT_WARNING_EVERY: Duration = Duration::from_secs(10);

impl CutReport {
    fn report(&mut self, file: &str, offset: u64, length: u64, max_line_bytes: usize) {
        if self
            .last_warning
            .is_some_and(|last| last.elapsed() < CUT_WARNING_EVERY)
        {
            self.unreported += 1;
            return;
        }
        tracing::warn!(
            file,
            offset,
            line_bytes = length,
            max_line_bytes,
            more_cut_since_last_warning = std::mem::take(&mut self.unreported),
            "a line longer than max_line_bytes was cut; rules see only its first max_line_bytes"
        );
        self.last_warning = Some(Instant::now());
    }
}

/// Set to the deadline for committing in-flight events when stopping.
type StopRequest = Arc<Mutex<Option<Instant>>>;

impl TailState {
    fn run(mut self) {
        for journal in &mut self.journals {
            journal.find_start();
        }
        let mut first_scan = true;
        let mut looked = Instant::now();
        let mut woken = true;
        let deadline = loop {
            if let Some(deadline) = *self.stop.lock().expect("stop flag") {
                break deadline;
            }
            // Matching the globs and looking at every file costs a stat
            // each: with notifications on, only when one came (any change
            // in a watched folder wakes us) or every `rescan_interval` in
            // case one was missed. Passes in between only look at files
            // holding a line whose writer stopped mid-line.
            let look_at_all =
                woken || !self.wakeups.notifies() || looked.elapsed() >= self.rescan_interval;
            if look_at_all {
                self.discover(first_scan);
                looked = Instant::now();
                self.checkpoints_settled = false;
            }
            if first_scan {
                // Record at once where the first start began: a crash before
                // the next write must not make the restart a "first start"
                // that skips, with start_at = "end", what was written since.
                self.save_checkpoints(true);
                // Ready before the first read: reading may wait for room in
                // a queue left full by the last run.
                self.heartbeat
                    .send_replace(Some(Instant::now() + self.options.poll_interval));
            }
            first_scan = false;
            let Some(more) = self.read_all(look_at_all) else {
                tracing::debug!("line consumer closed; tailer stops");
                break Instant::now();
            };
            self.let_go_of_finished_files();
            self.close_idle_files();
            self.save_checkpoints(false);
            // Files waiting for a descriptor get one as soon as others are
            // read to their end: look again at once while that goes on.
            let busy = more || (self.waiting_for_descriptor && self.opened_in_look);
            let wait = if busy {
                Duration::ZERO
            } else {
                self.idle_wait(looked)
            };
            // A pass takes less than a poll interval: one that hangs (a stat
            // on a dead network file system) shows by then.
            let poll = self.options.poll_interval;
            self.heartbeat
                .send_replace(Some(Instant::now() + wait + poll));
            woken = busy || self.wakeups.wait(wait);
            if wait > poll {
                // Woken early from a long sleep: the pass starting now is
                // due sooner than the sleep's end.
                self.heartbeat.send_replace(Some(Instant::now() + poll));
            }
        };
        self.sink = None;
        for journal in &mut self.journals {
            journal.stop();
        }
        while (self.files.values_mut().any(TailedFile::has_in_flight)
            || self.journals.iter_mut().any(JournalSource::has_in_flight))
            && Instant::now() < deadline
        {
            self.save_checkpoints(false);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.save_checkpoints(true);
    }

    /// How long the thread may sleep when no notification comes. Idle, with
    /// notifications on, until the next look at every file or the next file
    /// to close for `close_inactive`; every `poll_interval` while anything
    /// moves on a clock of its own: a held partial line, a rotated file
    /// being finished, offsets to commit, journals, files waiting for a
    /// descriptor, or no notifications at all.
    fn idle_wait(&self, looked: Instant) -> Duration {
        let poll = self.options.poll_interval;
        let now = Instant::now();
        let next_look = (looked + self.rescan_interval).saturating_duration_since(now);
        if !self.wakeups.notifies()
            || !self.journals.is_empty()
            || self.waiting_for_descriptor
            || !self.checkpoints_settled
        {
            return poll.min(next_look);
        }
        let mut wait = next_look;
        for (&(input, _), file) in &self.files {
            if !file.is_open() {
                continue;
            }
            if !file.live || file.holds_partial_line() {
                return poll.min(next_look);
            }
            let idle_for = file
                .idle_since
                .map_or(Duration::ZERO, |since| now.duration_since(since));
            let close_in = self.inputs[input].close_inactive.saturating_sub(idle_for);
            wait = wait.min(close_in.max(poll));
        }
        wait
    }

    /// Writes every file's committed offset, at most every
    /// `checkpoint_interval` unless `now`.
    fn save_checkpoints(&mut self, now: bool) {
        if !now
            && (self.checkpoints_settled
                || self.last_checkpoint.elapsed() < self.options.checkpoint_interval)
        {
            return;
        }
        self.last_checkpoint = Instant::now();
        let current = self
            .files
            .iter_mut()
            .map(|(&(input, id), file)| Checkpoint {
                input: self.inputs[input].name.clone(),
                dev: id.dev,
                ino: id.ino,
                generation: file.generation,
                fingerprint: file.fingerprint,
                path: file.path.to_string(),
                offset: file.committed(),
            })
            .collect();
        let journals = self
            .journals
            .iter_mut()
            .filter_map(JournalSource::checkpoint)
            .collect();
        match self.checkpoints.save(current, journals) {
            Ok(()) => {
                self.checkpoints_settled = self.journals.is_empty()
                    && !self.files.values_mut().any(TailedFile::has_in_flight);
            }
            Err(e) => tracing::warn!(error = %e, "cannot write checkpoints; will retry"),
        }
    }

    /// Matches every input's globs, opens new files and marks files whose path
    /// now leads elsewhere (or nowhere) as no longer live.
    fn discover(&mut self, first_scan: bool) {
        self.open_now = self.files.values().filter(|f| f.is_open()).count();
        self.waiting_for_descriptor = false;
        self.opened_in_look = false;
        self.closable = None;
        let mut was_live = HashSet::new();
        for (key, file) in self.files.iter_mut() {
            if file.live {
                was_live.insert(*key);
            }
            file.live = false;
        }
        // Files skipped by ignore_older are forgotten once gone: their
        // inodes may be reused.
        let mut matched = HashSet::new();
        let skipping = !self.ignored.is_empty();
        for index in 0..self.inputs.len() {
            let roots = self.inputs[index].paths.watch_roots();
            self.wakeups.watch(&roots);
            for (path, meta) in self.inputs[index].paths.files() {
                if skipping {
                    matched.insert((index, FileId::of(&meta)));
                }
                self.discover_path(index, path, &meta, first_scan);
            }
        }
        if skipping {
            self.ignored.retain(|key, _| matched.contains(key));
        }
        for key in was_live {
            let Some(file) = self.files.get_mut(&key).filter(|f| !f.live) else {
                continue;
            };
            let old_path = PathBuf::from(&*file.path);
            let since = file.followed_since;
            let found = file.follow_rename();
            if !file.is_open() {
                if found {
                    file.wants_open = true;
                } else {
                    // Closed at its end, then rotated out of its folder or
                    // deleted before this look: nothing can reach it now.
                    tracing::warn!(file = %file.path, position = file.position(), "a file closed by close_inactive left its folder or was deleted before it was opened again; whatever was written to it after it was closed is lost");
                    self.files.remove(&key);
                }
            }
            self.adopt_missed_rotations(key.0, &old_path, since);
        }
        self.open_wanted();
        if first_scan {
            self.resume_rotated_files();
        }
    }

    /// Whether a descriptor is free for one more tailed file, closing the
    /// longest-idle open file (read to its end, holding no partial line)
    /// when the budget is used up.
    fn make_room(&mut self) -> bool {
        if self.open_now < self.max_open {
            self.opened_in_look = true;
            return true;
        }
        // Files opened in this look are not read yet, so not closable: the
        // list made at the first need holds for the whole look.
        let files = &self.files;
        let closable = self.closable.get_or_insert_with(|| {
            let now = Instant::now();
            let mut closable: Vec<_> = files
                .iter()
                .filter(|(_, f)| f.is_open() && f.live && f.at_end && !f.holds_partial_line())
                .map(|(key, f)| (f.idle_since.unwrap_or(now), *key))
                .collect();
            closable.sort_unstable_by(|a, b| b.cmp(a));
            closable
        });
        // A file may have lost its path since the list was made (rotated
        // away: it is read to its end before it is let go, never closed).
        while let Some((_, key)) = closable.pop() {
            if let Some(file) = self.files.get_mut(&key).filter(|f| f.is_open() && f.live) {
                file.close();
                self.open_now -= 1;
                self.opened_in_look = true;
                return true;
            }
        }
        if !std::mem::replace(&mut self.waiting_for_descriptor, true) {
            tracing::debug!(
                max_open = self.max_open,
                "every descriptor for tailed files is in use; files wait for one"
            );
        }
        false
    }

    /// Opens again the closed files found grown or renamed, as descriptors
    /// allow.
    fn open_wanted(&mut self) {
        let wanted: Vec<(usize, FileId)> = self
            .files
            .iter()
            .filter(|(_, f)| f.wants_open)
            .map(|(key, _)| *key)
            .collect();
        for key in wanted {
            if !self.make_room() {
                return;
            }
            let Some(file) = self.files.get_mut(&key) else {
                continue;
            };
            match file.reopen() {
                Ok(true) => self.open_now += 1,
                // The path was replaced since it was looked at: the next
                // look finds where the file went.
                Ok(false) => file.wants_open = false,
                Err(e) => {
                    tracing::warn!(file = %file.path, error = %e, "cannot open a closed file again; will retry")
                }
            }
        }
    }

    /// Closes files that sat at their end without growing for the input's
    /// `close_inactive`; they are opened again when they grow.
    fn close_idle_files(&mut self) {
        // One clock read for the pass: thousands of idle files are checked
        // every poll.
        let now = Instant::now();
        for (&(input, _), file) in self.files.iter_mut() {
            let inactive = self.inputs[input].close_inactive;
            if file.is_open()
                && file.live
                && !file.holds_partial_line()
                && file
                    .idle_since
                    .is_some_and(|since| now.duration_since(since) >= inactive)
            {
                tracing::debug!(file = %file.path, position = file.position(), "closing a file idle at its end");
                file.close();
            }
        }
    }

    /// Rotations faster than one scan can carry a file from the watched path
    /// to a rotated name before the agent ever saw it (`x.log` → `x.log.1`
    /// twice between two looks). Next to a file that was just rotated away
    /// from `old_path`, an unknown file named after it (`x.log.*`, not
    /// compressed, not excluded) and written since that file was first
    /// followed is such a file: it is read whole.
    fn adopt_missed_rotations(
        &mut self,
        index: usize,
        old_path: &std::path::Path,
        since: std::time::SystemTime,
    ) {
        let (Some(folder), Some(name)) = (old_path.parent(), old_path.file_name()) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(folder) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        const COMPRESSED: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip"];
        for path in entries.flatten().map(|e| e.path()) {
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !file_name.starts_with(&prefix)
                || COMPRESSED.iter().any(|ext| file_name.ends_with(ext))
                || self.inputs[index].paths.excluded(&path)
            {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let written_since = meta.modified().is_ok_and(|m| m >= since);
            if !meta.is_file()
                || !written_since
                || self.files.contains_key(&(index, FileId::of(&meta)))
            {
                continue;
            }
            match TailedFile::open(&path, self.inputs[index].max_line_bytes) {
                Ok(mut file) => {
                    tracing::info!(file = %path.display(), "found a rotated file never seen under the watched name; reading it whole");
                    file.live = false;
                    self.files.entry((index, file.id)).or_insert(file);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot open a rotated file; its lines are not read")
                }
            }
        }
    }

    /// A file rotated away while the agent was stopped may still hold lines
    /// past its checkpoint. If the same file (inode and first bytes) is still
    /// where it was last seen, or renamed beside it, finish it.
    fn resume_rotated_files(&mut self) {
        for checkpoint in self.checkpoints.unclaimed() {
            let Some(index) = self.inputs.iter().position(|i| i.name == checkpoint.input) else {
                continue;
            };
            let id = FileId {
                dev: checkpoint.dev,
                ino: checkpoint.ino,
            };
            let Some(path) = file::find_beside(std::path::Path::new(&checkpoint.path), id) else {
                continue;
            };
            let Ok(mut file) = TailedFile::open(&path, self.inputs[index].max_line_bytes) else {
                continue;
            };
            file.generation = checkpoint.generation;
            let same = file.id == id && file.starts_like(&checkpoint.fingerprint).unwrap_or(false);
            if !same
                || file
                    .start_from(StartFrom::Offset(checkpoint.offset))
                    .is_err()
            {
                continue;
            }
            self.checkpoints.claim(&checkpoint.input, id);
            tracing::info!(file = %file.path, position = file.position(), "finishing a rotated file from its checkpoint");
            file.live = false;
            self.files.insert((index, id), file);
        }
    }

    fn discover_path(
        &mut self,
        index: usize,
        path: PathBuf,
        meta: &std::fs::Metadata,
        first_scan: bool,
    ) {
        let id = FileId::of(meta);
        if let Some(known) = self.files.get_mut(&(index, id)) {
            known.live = true;
            known.set_path(&path);
            known.note_look(meta);
            if !known.is_open() && known.changed_since_read(meta) {
                known.wants_open = true;
            }
            return;
        }
        let input = &self.inputs[index];
        let too_old = input.ignore_older.is_some_and(|age| {
            meta.modified()
                .is_ok_and(|m| m.elapsed().is_ok_and(|elapsed| elapsed > age))
        });
        if too_old && !self.checkpoints.holds(&input.name, id) {
            self.ignored.entry((index, id)).or_insert(meta.len());
            return;
        }
        if !self.make_room() {
            return;
        }
        let ignored_at = self.ignored.remove(&(index, id));
        let input = &self.inputs[index];
        let opened = TailedFile::open(&path, input.max_line_bytes).and_then(|mut file| {
            let start = match ignored_at {
                Some(size) if file.id == id => StartFrom::Offset(size),
                _ => self.start_position(index, &mut file, first_scan)?,
            };
            file.start_from(start)?;
            Ok(file)
        });
        let input = &self.inputs[index];
        match opened {
            Ok(file) => {
                self.unreadable.remove(&path);
                // A log reached through a symlink is written in its target's
                // folder, which the globs' folders do not cover.
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                    if let Some(folder) = std::fs::canonicalize(&path)
                        .ok()
                        .and_then(|target| target.parent().map(Path::to_path_buf))
                    {
                        self.wakeups.watch(&[(folder, false)]);
                    }
                }
                tracing::info!(input = %input.name, file = %path.display(), position = file.position(), "tailing file");
                self.open_now += 1;
                // The handle's identity wins over the earlier stat: the path may
                // have been replaced in between.
                self.files.entry((index, file.id)).or_insert(file).live = true;
            }
            Err(e) => {
                if self.unreadable.insert(path.clone()) {
                    tracing::warn!(input = %input.name, file = %path.display(), error = %e, "cannot open file; will retry");
                }
            }
        }
    }

    /// Where a newly seen file starts: its checkpoint if it is the same file
    /// (inode and first bytes); else its end only on the very first start for
    /// `start_at = "end"`; else its beginning, because it is a new log.
    /// The file's generation continues its checkpoint's: a file whose
    /// content changed under its inode (truncated, or the inode reused while
    /// stopped) is one generation on, as it would have been had the agent
    /// watched it happen, so ids stay the same across a restart.
    fn start_position(
        &mut self,
        index: usize,
        file: &mut TailedFile,
        first_scan: bool,
    ) -> std::io::Result<StartFrom> {
        let input = &self.inputs[index];
        Ok(match self.checkpoints.claim(&input.name, file.id) {
            Some(checkpoint) if file.starts_like(&checkpoint.fingerprint)? => {
                file.generation = checkpoint.generation;
                StartFrom::Offset(checkpoint.offset)
            }
            Some(checkpoint) => {
                tracing::info!(file = %file.path, "file reuses a checkpointed inode with other content; reading it as a new file");
                file.generation = checkpoint.generation + 1;
                StartFrom::Beginning
            }
            None if first_scan
                && (!self.checkpoints.existed
                    || self.options.added_inputs.contains(&input.name))
                && input.start_at == StartAt::End =>
            {
                StartFrom::End
            }
            None => StartFrom::Beginning,
        })
    }

    /// Reads every file once (with `all` false, only those holding a line
    /// without its newline, whose idle time decides when it is flushed). `None` when the consumer is gone; otherwise whether some
    /// file has more to read right away.
    fn read_all(&mut self, all: bool) -> Option<bool> {
        let mut more = false;
        let mut lines = std::mem::take(&mut self.lines);
        for (&(input, _), file) in self.files.iter_mut() {
            if !file.is_open() || (!all && !file.holds_partial_line()) {
                continue;
            }
            self.checkpoints_settled = false;
            // A read of `read_budget` is handed on in parts of `PART_READ`
            // bytes: the batch of lines is held at a part's size, not a
            // read's, while the sink may still make one transaction of them.
            let mut read = 0;
            let mut parted = false;
            loop {
                lines.clear();
                let budget = PART_READ.min(self.options.read_budget - read);
                let outcome = match file.read(budget, &mut lines) {
                    Ok(outcome) => Some(outcome),
                    Err(e) => {
                        tracing::warn!(file = %file.path, error = %e, "read failed; will retry");
                        None
                    }
                };
                if let Some(outcome) = &outcome {
                    read += outcome.bytes;
                    if let Some(e) = &outcome.error {
                        tracing::warn!(file = %file.path, position = file.position(), lines_kept = lines.len(), error = %e, "read failed part-way; the lines before it go on, the rest is read on retry");
                    }
                    // A failed read says nothing about whether the writer stopped.
                    file.idle_since = match (outcome.bytes, file.idle_since) {
                        _ if outcome.error.is_some() => None,
                        (0, Some(since)) => Some(since),
                        (0, None) => Some(Instant::now()),
                        _ => None,
                    };
                    let flush_after = self.inputs[input].partial_line_timeout;
                    if file
                        .idle_since
                        .is_some_and(|since| since.elapsed() >= flush_after)
                    {
                        // The writer stopped mid-line: the line is complete as far as
                        // anyone will ever know; hold it no longer.
                        file.flush_partial_line(&mut lines);
                    }
                }
                for line in lines.iter() {
                    if let Some(length) = line.cut_from {
                        self.cuts.report(
                            &file.path,
                            line.offset,
                            length,
                            self.inputs[input].max_line_bytes,
                        );
                    }
                }
                let filled = outcome.as_ref().is_some_and(|outcome| outcome.more);
                let goes_on = filled && read < self.options.read_budget;
                // A read handed on in parts ends with a part, even empty.
                if !lines.is_empty() || parted {
                    let commit = file.chunk_token();
                    let chunk = LineChunk::of_file(input, &file.path, file.source(), &lines);
                    let sink = self.sink.as_mut()?;
                    if goes_on {
                        sink.accept_part(chunk, commit).ok()?;
                        parted = true;
                    } else {
                        sink.accept(chunk, commit).ok()?;
                    }
                }
                if !goes_on {
                    more |= filled;
                    break;
                }
            }
        }
        self.lines = lines;
        // When stopping, journalctl may have been signalled with the agent
        // (systemd stops the whole cgroup): that is no failure to report and
        // restart. What is left unread is read after the restart.
        if self.stop.lock().expect("stop flag").is_none() {
            for journal in &mut self.journals {
                more |= journal.poll(self.sink.as_mut()?.as_mut())?;
            }
        }
        Some(more)
    }

    /// Closes files that lost their path once they were read to the end and
    /// stayed there for `rotated_idle`.
    fn let_go_of_finished_files(&mut self) {
        let idle = self.options.rotated_idle;
        let before = self.files.len();
        self.files.retain(|_, file| {
            // A closed file found renamed may hold lines written since it
            // was closed: it is finished only once opened and read.
            let finished = !file.live
                && !file.wants_open
                && file.idle_since.is_some_and(|since| since.elapsed() >= idle)
                && !file.has_in_flight();
            if finished {
                tracing::info!(file = %file.path, position = file.position(), "rotated file read to its end; closing it");
            }
            !finished
        });
        if self.files.len() != before {
            self.checkpoints_settled = false;
        }
    }
}

/// How many tailed files may be open at once: a share of the descriptor
/// limit, after raising the soft limit to the hard one (under systemd the
/// unit's `LimitNOFILE=` sets both; its system-call filter may refuse the
/// raise, which is fine).
fn descriptor_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !known {
        return 512;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let budget = (limit.rlim_cur / TAILED_FILES_SHARE).clamp(8, 1 << 20) as usize;
    tracing::debug!(
        descriptor_limit = limit.rlim_cur,
        tailed_files_open_at_most = budget,
        "descriptor budget"
    );
    budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_commit_in_order_once_every_holder_let_go() {
        let mut commits: Commits<Option<String>> = Commits::new(None);
        let first = commits.chunk(Some("s=1".into()));
        let second = commits.chunk(Some("s=2".into()));
        drop(second);
        assert_eq!(*commits.committed(), None, "the earlier chunk still holds");
        drop(first);
        assert_eq!(commits.committed().as_deref(), Some("s=2"));
        assert!(!commits.has_in_flight());

        let held = commits.chunk(Some("s=3".into()));
        commits.reset(Some("s=9".into()));
        drop(held);
        assert_eq!(commits.committed().as_deref(), Some("s=9"));
    }

    #[test]
    fn an_abandoned_chunk_and_those_after_it_never_commit() {
        let mut commits: Commits<u64> = Commits::new(10);
        let abandoned = commits.chunk(20);
        let later = commits.chunk(30);
        abandoned.abandon();
        drop(later);
        drop(abandoned);
        assert_eq!(*commits.committed(), 10, "read again at the next start");
        assert!(!commits.has_in_flight(), "nothing left to wait for");
    }
}
