//! Tailing: the stage that turns growing log files into [`Line`]s.
//!
//! One thread follows every input's files: `discover` says which paths match,
//! `file` follows each file by its handle and identity, `reader` cuts bytes into
//! lines, `watch` wakes the thread early when inotify sees a change. A periodic
//! stat of every known file is the source of truth, so a lost notification
//! delays a line by at most `poll_interval`.
//!
//! Lines leave through a [`LineSink`]. A sink that blocks (its queue is full)
//! blocks this thread, so back-pressure from a slow webhook reaches the files,
//! which are the buffer. When `accept` returns, the lines' events are handed
//! off: that is the point a checkpoint may be committed.

mod discover;
mod file;
mod reader;
mod watch;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{InputConfig, StartAt};
use discover::PathSet;
use file::{FileId, TailedFile};
use reader::RawLine;
use watch::{Waker, Wakeups};

/// Where the tailer hands its lines.
pub trait LineSink: Send + 'static {
    /// Takes a chunk of lines from one file, in file order. Blocks while the
    /// downstream is full; `Err` means it is gone and tailing should stop.
    fn accept(&mut self, lines: Vec<Line>) -> Result<(), SinkClosed>;
}

#[derive(Debug)]
pub struct SinkClosed;

/// A complete line read from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct Line {
    /// Index of the input (in config order) whose paths matched the file.
    pub input: usize,
    pub path: Arc<str>,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    pub text: String,
    /// The line was longer than `max_line_bytes` and was cut.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub poll_interval: Duration,
    /// How long a file that lost its path must sit at its end, not growing,
    /// before it is closed. A writer that still holds it open (before logrotate
    /// signals it) keeps it alive by writing.
    pub rotated_idle: Duration,
    /// Bytes read from one file before moving on to the next, for fairness.
    pub read_budget: u64,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            poll_interval: Duration::from_secs(1),
            rotated_idle: Duration::from_secs(30),
            read_budget: 1024 * 1024,
        }
    }
}

struct Input {
    name: String,
    paths: PathSet,
    start_at: StartAt,
    max_line_bytes: usize,
}

/// Handle to the tailer thread.
pub struct Tailer {
    stop: Arc<AtomicBool>,
    waker: Waker,
    thread: JoinHandle<()>,
}

impl Tailer {
    /// Starts following `inputs`; lines go to `sink` in chunks.
    pub fn spawn(inputs: &[InputConfig], options: TailOptions, sink: impl LineSink) -> Tailer {
        let inputs: Vec<Input> = inputs
            .iter()
            .map(|c| Input {
                name: c.name.clone(),
                paths: PathSet::new(&c.paths, &c.exclude),
                start_at: c.start_at,
                max_line_bytes: c.max_line_bytes,
            })
            .collect();
        let wakeups = Wakeups::new();
        let waker = wakeups.waker();
        let stop = Arc::new(AtomicBool::new(false));
        let state = TailState {
            inputs,
            options,
            files: BTreeMap::new(),
            unreadable: HashSet::new(),
            sink: Box::new(sink),
            wakeups,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("tailhook-tail".into())
            .spawn(move || state.run())
            .expect("spawning a thread at start-up");
        Tailer {
            stop,
            waker,
            thread,
        }
    }

    /// Asks the thread to stop after its current read, and waits for it.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        let _ = self.thread.join();
    }
}

struct TailState {
    inputs: Vec<Input>,
    options: TailOptions,
    /// Followed files, by input and identity: two inputs may follow one file.
    files: BTreeMap<(usize, FileId), TailedFile>,
    /// Paths that failed to open, warned about once until they open again.
    unreadable: HashSet<PathBuf>,
    sink: Box<dyn LineSink>,
    wakeups: Wakeups,
    stop: Arc<AtomicBool>,
}

impl TailState {
    fn run(mut self) {
        let mut first_scan = true;
        while !self.stop.load(Ordering::SeqCst) {
            self.discover(first_scan);
            first_scan = false;
            let Some(more) = self.read_all() else {
                tracing::debug!("line consumer closed; tailer stops");
                return;
            };
            self.let_go_of_finished_files();
            if !more {
                self.wakeups.wait(self.options.poll_interval);
            }
        }
    }

    /// Matches every input's globs, opens new files and marks files whose path
    /// now leads elsewhere (or nowhere) as no longer live.
    fn discover(&mut self, first_scan: bool) {
        for file in self.files.values_mut() {
            file.live = false;
        }
        for index in 0..self.inputs.len() {
            let roots = self.inputs[index].paths.watch_roots();
            self.wakeups.watch(&roots);
            for path in self.inputs[index].paths.files() {
                self.discover_path(index, path, first_scan);
            }
        }
    }

    fn discover_path(&mut self, index: usize, path: PathBuf, first_scan: bool) {
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        if let Some(known) = self.files.get_mut(&(index, FileId::of(&meta))) {
            known.live = true;
            known.set_path(&path);
            return;
        }
        let input = &self.inputs[index];
        // Files that appear after start-up are read whole: they are new logs.
        let from_end = first_scan && input.start_at == StartAt::End;
        match TailedFile::open(&path, from_end, input.max_line_bytes) {
            Ok(file) => {
                self.unreadable.remove(&path);
                tracing::info!(input = %input.name, file = %path.display(), position = file.position(), "tailing file");
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

    /// Reads every file once. `None` when the consumer is gone; otherwise
    /// whether some file has more to read right away.
    fn read_all(&mut self) -> Option<bool> {
        let mut more = false;
        let mut raw = Vec::new();
        for (&(input, _), file) in self.files.iter_mut() {
            raw.clear();
            let outcome = match file.read(self.options.read_budget, &mut raw) {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(file = %file.path, error = %e, "read failed; will retry");
                    continue;
                }
            };
            if outcome.truncated_lines > 0 {
                tracing::warn!(
                    file = %file.path,
                    lines = outcome.truncated_lines,
                    max_line_bytes = self.inputs[input].max_line_bytes,
                    "lines longer than max_line_bytes were cut"
                );
            }
            file.idle_since = match (outcome.bytes, file.idle_since) {
                (0, Some(since)) => Some(since),
                (0, None) => Some(Instant::now()),
                _ => None,
            };
            more |= outcome.more;
            if !raw.is_empty() {
                let lines = raw
                    .drain(..)
                    .map(
                        |RawLine {
                             offset,
                             text,
                             truncated,
                         }| Line {
                            input,
                            path: file.path.clone(),
                            offset,
                            text,
                            truncated,
                        },
                    )
                    .collect();
                self.sink.accept(lines).ok()?;
            }
        }
        Some(more)
    }

    /// Closes files that lost their path once they were read to the end and
    /// stayed there for `rotated_idle`.
    fn let_go_of_finished_files(&mut self) {
        let idle = self.options.rotated_idle;
        self.files.retain(|_, file| {
            let finished = !file.live && file.idle_since.is_some_and(|since| since.elapsed() >= idle);
            if finished {
                tracing::info!(file = %file.path, position = file.position(), "rotated file read to its end; closing it");
            }
            !finished
        });
    }
}
