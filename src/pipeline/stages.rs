//! The rules and the queue writer, in three threads in step: the tail
//! thread searches each line for the literals the rules' regexes need and
//! passes on only the lines that have some (most have none), with the
//! rules they may match; the rule-events thread runs those rules' regexes,
//! thresholds and routes and writes each event's JSON; the queue writer's
//! thread writes the events to disk. So the tailer reads and searches a
//! chunk while the events of the one before are built and those of the one
//! before that are written. A chunk's commit token goes the same way, with
//! its events, and is let go (its offset may commit) only once they are on
//! disk; a chunk with no event lets its token go at once. A read the
//! tailer hands on in chunks is one transaction: its chunks' tokens wait
//! for its last.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use jiff::Timestamp;

use super::Gates;
use crate::event::{fields_map, EventJson, JsonBlocks, SourceFile, ViewFields};
use crate::metrics::{self, Metrics};
use crate::queue::{Queue, ReadAt, Router, ToQueue};
use crate::rules::{
    classic_form, event_for, line_too_long_event, Admit, Found, LineClock, Matcher,
    RememberingClock, Rule, SeenLine, TimeTexts, LINE_TOO_LONG,
};
use crate::tail::{CommitToken, JournalMeta, Line, LineBatch, LineChunk, LineSink, SinkClosed};
use crate::tap::Tap;

/// The rules' literal search, on the tail thread: a line without any of the
/// literals a rule needs is dropped where it was read, which spares a
/// hand-off per line; the others (and cut lines to report) go on to the
/// rule-events thread.
pub(super) struct RuleStage {
    /// Per input: the rules it selects that some route takes.
    matchers: Vec<Arc<Matcher>>,
    /// Per input: its `max_line_bytes` when it reports cut lines.
    long_lines: Vec<Option<usize>>,
    metrics: Arc<Metrics>,
    events: StageThread<Candidates>,
    /// The literal search's buffers, kept from line to line.
    found: Found,
    /// Of a read handed in chunks ([`LineSink::accept_part`]): the part
    /// being filled (perhaps still empty, once earlier parts went on), and
    /// the tokens of its chunks so far that must wait for its last part.
    held: Option<Candidates>,
    held_commits: Vec<CommitToken>,
}

/// What the rules stage is built of.
pub(super) struct RuleSetup {
    /// Per input: its name, which with the file (or journal) keys where the
    /// queue holds its lines queued up to.
    pub input_names: Vec<String>,
    pub matchers: Vec<Arc<Matcher>>,
    /// The built-in rule of the events that report cut lines.
    pub line_too_long: Rule,
    pub long_lines: Vec<Option<usize>>,
    /// Per rule id: threshold and suppress state, handed on to the next
    /// generation by a reload.
    pub gates: Gates,
    /// Per input: how its line times are read.
    pub clocks: Arc<Vec<LineClock>>,
    /// Every event's `host`.
    pub host: String,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub queue: Arc<Queue>,
    pub tap: Arc<Tap>,
}

impl RuleStage {
    /// Starts the rule-events and queue writer threads.
    pub(super) fn spawn(setup: RuleSetup) -> RuleStage {
        let RuleSetup {
            input_names,
            matchers,
            line_too_long,
            long_lines,
            gates,
            clocks,
            host,
            router,
            metrics,
            queue,
            tap,
        } = setup;
        let writer_metrics = metrics.clone();
        let writer = StageThread::spawn("queue-writer", CHUNKS_AHEAD, move |chunks| {
            write_to_queue(&queue, &writer_metrics, &tap, chunks)
        });
        let outlets = matchers
            .iter()
            .map(|matcher| {
                matcher
                    .rules()
                    .iter()
                    .map(|rule| Outlet::of(rule, &router, &metrics))
                    .collect()
            })
            .collect();
        let builder = EventBuilder {
            input_names,
            last_file_source: None,
            matchers: matchers.clone(),
            outlets,
            line_too_long,
            long_lines: long_lines.clone(),
            gates,
            clocks: clocks.iter().cloned().map(RememberingClock::new).collect(),
            time_texts: TimeTexts::default(),
            host,
            router,
            metrics: metrics.clone(),
            writer,
            pending: Matched::default(),
            json: JsonBlocks::default(),
        };
        RuleStage {
            matchers,
            long_lines,
            metrics,
            found: Found::default(),
            held: None,
            held_commits: Vec::new(),
            events: StageThread::spawn("rule-events", CANDIDATES_AHEAD, move |chunks| {
                builder.run(chunks)
            }),
        }
    }
}

impl LineSink for RuleStage {
    fn accept(&mut self, lines: LineChunk<'_>, commit: CommitToken) -> Result<(), SinkClosed> {
        self.take(lines, commit, true)
    }

    fn accept_part(&mut self, lines: LineChunk<'_>, commit: CommitToken) -> Result<(), SinkClosed> {
        self.take(lines, commit, false)
    }
}

impl RuleStage {
    /// Hands on the candidate lines of `lines` in parts. The part being
    /// filled at the end waits for the read's next chunk unless this is its
    /// `last`, and then goes with the tokens of all the read's chunks that
    /// had candidates: a read's events make one transaction, whatever the
    /// size of its chunks.
    fn take(
        &mut self,
        lines: LineChunk<'_>,
        commit: CommitToken,
        last: bool,
    ) -> Result<(), SinkClosed> {
        let input = &self.metrics.inputs[lines.input].1;
        metrics::add(&input.lines, lines.lines.len() as u64);
        // Each line's text and its newline.
        metrics::add(
            &input.bytes,
            (lines.lines.text_len() + lines.lines.len()) as u64,
        );
        let matcher = &self.matchers[lines.input];
        let report_cuts = self.long_lines[lines.input].is_some();
        // Started at the read's first candidate line: most chunks of a
        // live file have none. The chunks of one read are of one file.
        let mut part: Option<Candidates> = self.held.take();
        // Whether parts went on from this chunk: the read's tokens then
        // need a last part to go with, even an empty one.
        let mut handed_on = false;
        // The read's lines were read at one time, taken at its first
        // candidate line.
        let mut read = part.as_ref().map(|part| part.read);
        for (i, line) in lines.lines.iter().enumerate() {
            if line.cut_from.is_some() {
                metrics::add(&input.lines_truncated, 1);
            }
            matcher.candidates(line.text, &mut self.found);
            if self.found.rules().is_empty() && !(report_cuts && line.cut_from.is_some()) {
                continue;
            }
            let filling = part.get_or_insert_with(|| {
                Candidates::of(&lines, *read.get_or_insert_with(Timestamp::now))
            });
            filling.lines.push_line(line);
            filling.rules.extend(self.found.rules());
            filling.rule_ends.push(filling.rules.len());
            filling.journal.extend(lines.journal.get(i).cloned());
            if filling.lines.text_len() >= PART_BYTES {
                let full = part.take().expect("the part being filled");
                handed_on = true;
                if self.events.send(full).is_err() {
                    commit.abandon();
                    self.abandon_held();
                    return Err(SinkClosed);
                }
            }
        }
        let mut part = match part {
            Some(part) => part,
            None if handed_on => Candidates::of(&lines, read.expect("read at its first part")),
            // No candidate line in the read so far: the chunk's offset may
            // commit as soon as those of the chunks before it do.
            None => return Ok(()),
        };
        if !last {
            self.held = Some(part);
            self.held_commits.push(commit);
            return Ok(());
        }
        part.commits = std::mem::take(&mut self.held_commits);
        part.commits.push(commit);
        self.events.send(part).map_err(|unsent| {
            unsent.commits.iter().for_each(CommitToken::abandon);
            SinkClosed
        })
    }

    /// Lets none of the held chunks' lines commit: their events will not
    /// be queued.
    fn abandon_held(&mut self) {
        self.held = None;
        for commit in self.held_commits.drain(..) {
            commit.abandon();
        }
    }
}

impl Drop for RuleStage {
    /// A read cut short between its chunks (the tailer stopped) leaves a
    /// held part: its lines are read again at the next start.
    fn drop(&mut self) {
        self.abandon_held();
    }
}

/// Lines of a chunk that may make events, with the rules each may match.
/// A chunk with many is handed on in parts of about [`PART_BYTES`]; the
/// chunk's commit token goes with its last part.
struct Candidates {
    input: usize,
    path: String,
    source: Option<SourceFile>,
    lines: LineBatch,
    /// The rules each line may match, line after line, as its input's
    /// matcher numbers them; line `i`'s end at `rule_ends[i]`.
    rules: Vec<usize>,
    rule_ends: Vec<usize>,
    /// Per line, for journal entries: the entry's cursor, time and fields.
    journal: Vec<JournalMeta>,
    /// When the chunk was read: its events' `ingested`, and the time a line
    /// that states none happened at.
    read: Timestamp,
    /// The tokens of the read's chunks, with its last part only.
    commits: Vec<CommitToken>,
}

impl Candidates {
    /// None yet of the lines of `chunk`, which was read at `read`.
    fn of(chunk: &LineChunk, read: Timestamp) -> Candidates {
        Candidates {
            input: chunk.input,
            path: chunk.path.to_string(),
            source: chunk.source,
            lines: LineBatch::with_capacity(PART_BYTES + PART_SLACK),
            rules: Vec::new(),
            rule_ends: Vec::new(),
            journal: Vec::new(),
            read,
            commits: Vec::new(),
        }
    }

    /// Each line's rules, in line order.
    fn rules_of_lines(&self) -> impl Iterator<Item = &[usize]> + '_ {
        let mut start = 0;
        self.rule_ends.iter().map(move |&end| {
            let rules = &self.rules[start..end];
            start = end;
            rules
        })
    }
}

/// Bytes of candidate lines in a part handed to the rule-events thread: a
/// megabyte chunk of lines that are all events is handed on in sixteen.
const PART_BYTES: usize = 64 * 1024;

/// Room for the line that takes a part past [`PART_BYTES`]: a part's text
/// is allocated once, not grown by doubling to twice its size (which also
/// took it above the size glibc maps on its own, a fresh mapping per part).
const PART_SLACK: usize = 8 * 1024;

/// Parts waiting for the rule-events thread, beside the one it works on.
const CANDIDATES_AHEAD: usize = 4;

/// The rules' regexes, gates and routes, on the rule-events thread: what
/// the rules stage found becomes events, written once as JSON, handed to
/// the queue writer in parts.
struct EventBuilder {
    input_names: Vec<String>,
    /// The input, file and queue source of the last file line placed.
    last_file_source: Option<(usize, SourceFile, Arc<str>)>,
    matchers: Vec<Arc<Matcher>>,
    /// Per input, per rule of its matcher.
    outlets: Vec<Vec<Outlet>>,
    line_too_long: Rule,
    long_lines: Vec<Option<usize>>,
    gates: Gates,
    /// Per input.
    clocks: Vec<RememberingClock>,
    time_texts: TimeTexts,
    host: String,
    router: Router,
    metrics: Arc<Metrics>,
    writer: StageThread<Matched>,
    /// Events of a chunk's parts so far, not yet handed to the writer.
    pending: Matched,
    /// Where each event's JSON is written.
    json: JsonBlocks,
}

impl EventBuilder {
    /// Builds the events of each chunk, in order. Once the writer is gone
    /// every chunk still coming is abandoned, so that none of their lines
    /// commits.
    fn run(mut self, chunks: Receiver<Candidates>) {
        while let Ok(chunk) = chunks.recv() {
            if self.build(chunk).is_err() {
                for chunk in chunks.iter() {
                    chunk.commits.iter().for_each(CommitToken::abandon);
                }
                return;
            }
        }
    }

    fn build(&mut self, chunk: Candidates) -> Result<(), SinkClosed> {
        let gates = self.gates.clone();
        let mut gates = gates.lock().expect("rule gates");
        let lines = LineChunk {
            input: chunk.input,
            path: &chunk.path,
            source: chunk.source,
            lines: &chunk.lines,
            journal: &chunk.journal,
        };
        for (line, rules) in lines.iter().zip(chunk.rules_of_lines()) {
            // Most lines match nothing: only a matched (or cut) one is dated,
            // and placed.
            let mut seen: Option<SeenLine> = None;
            let mut see_line = || {
                see(
                    &mut self.clocks[line.input],
                    &self.host,
                    &line,
                    chunk.read,
                    &mut self.time_texts,
                )
            };
            let mut read_at: Option<Option<ReadAt>> = None;
            if let Some(length) = line.cut_from {
                if let Some(max_line_bytes) = self.long_lines[line.input] {
                    let seen = seen.get_or_insert_with(&mut see_line);
                    let event = EventJson::of(&line_too_long_event(
                        &self.line_too_long,
                        seen,
                        length,
                        max_line_bytes,
                    ));
                    if let Some(matches) = self.metrics.rules.get(LINE_TOO_LONG) {
                        metrics::add(matches, 1);
                    }
                    let read_at = read_at.get_or_insert_with(|| {
                        place(&self.input_names, &mut self.last_file_source, &line)
                    });
                    self.pending
                        .add(self.router.destinations(LINE_TOO_LONG), &event, read_at);
                }
            }
            let classic = classic_form(line.text);
            for (number, rule, fields) in
                self.matchers[line.input].matches_among(&classic, rules.iter().copied())
            {
                let outlet = &self.outlets[line.input][number];
                if let Some(matches) = &outlet.matches {
                    metrics::add(matches, 1);
                }
                let seen = seen.get_or_insert_with(&mut see_line);
                let count = if outlet.gated {
                    let gate = gates.get_mut(&rule.id).expect("a gate per loaded rule");
                    let Admit::Emit { count } =
                        gate.admit(&fields_map(&fields), seen.times.gate_time())
                    else {
                        continue;
                    };
                    count
                } else {
                    None
                };
                let mut event = event_for(rule, seen, ViewFields::Matched(fields), count);
                if let Some(journal) = line.journal {
                    journal.annotate(&mut event);
                }
                let event = event.encode(&mut self.json);
                let read_at = read_at.get_or_insert_with(|| {
                    place(&self.input_names, &mut self.last_file_source, &line)
                });
                self.pending.add(&outlet.lanes, &event, read_at);
            }
            if self.pending.bytes >= CHUNK_BYTES {
                if let Err(unsent) = self.writer.send(std::mem::take(&mut self.pending)) {
                    abandon(&unsent);
                    // The read's tokens go with its last part, which will
                    // not be sent: none of its lines may commit.
                    chunk.commits.iter().for_each(CommitToken::abandon);
                    return Err(SinkClosed);
                }
            }
        }
        // The events of a read's first parts wait for those of its last:
        // one transaction for a read, as when it was handed on whole.
        if chunk.commits.is_empty() {
            return Ok(());
        }
        self.pending.tokens.extend(chunk.commits);
        self.writer
            .send(std::mem::take(&mut self.pending))
            .map_err(|unsent| {
                abandon(&unsent);
                SinkClosed
            })
    }
}

/// What becomes of a rule's events, found once per rule rather than by its
/// id for each event: a tree of strings and two hash maps were, with the
/// numbers written by `write!`, 3 % of the instructions an event costs.
struct Outlet {
    /// The queue lanes (webhooks) its events go to.
    lanes: Vec<usize>,
    /// Its count of matches.
    matches: Option<Arc<AtomicU64>>,
    /// Whether it has a threshold or suppress: only then has its gate any
    /// say.
    gated: bool,
}

impl Outlet {
    fn of(rule: &Rule, router: &Router, metrics: &Metrics) -> Outlet {
        Outlet {
            lanes: router.destinations(&rule.id).to_vec(),
            matches: metrics.rules.get(&rule.id).cloned(),
            gated: rule.threshold.is_some() || rule.suppress.is_some(),
        }
    }
}

/// A chunk's events and the commit tokens of its lines (none in the first
/// parts of a chunk cut at [`CHUNK_BYTES`]: the tokens go with its last).
#[derive(Default)]
struct Matched {
    events: Vec<ToQueue>,
    /// What `events` hold in memory, about.
    bytes: usize,
    tokens: Vec<CommitToken>,
}

impl Matched {
    /// `event`, read at `read_at`, for each of `lanes`.
    fn add(&mut self, lanes: &[usize], event: &EventJson, read_at: &Option<ReadAt>) {
        /// What an event holds in memory beside its JSON, with its place.
        const PER_EVENT: usize = 64;
        for &lane in lanes {
            self.bytes += event.as_bytes().len() + PER_EVENT;
            self.events.push(ToQueue {
                lane,
                event: event.clone(),
                read_at: read_at.clone(),
            });
        }
    }
}

/// Chunks matched and waiting for the writer, beside the one it writes: two
/// measured faster than one (more chunks share a transaction when the disk
/// is slow), and each holds its events in memory (a full queue lane holds
/// the writer, then this, then the tailer).
const CHUNKS_AHEAD: usize = 2;

/// A chunk's events are handed to the writer in parts of about this many
/// bytes, so that what waits for it (and what it groups) stays within a few
/// times this however many events a megabyte of lines yields. Half a MiB
/// peaked 2–4 MiB lower than 1 MiB at the same CPU per event, for 5 % more
/// bytes written; a quarter (about 400 events), with the rule-events thread
/// holding a part while the writer holds two more, another 4–5 MiB lower
/// with every event routed, at the same CPU; an eighth cost the writer
/// 15 % more CPU for 1.5 MiB.
const CHUNK_BYTES: usize = 1 << 18;

/// A thread that takes items in order, and the way they reach it.
struct StageThread<T> {
    /// `None` once dropped, so the thread sees the end and can be joined.
    items: Option<SyncSender<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> StageThread<T> {
    /// `ahead`: how many items may wait beside the one being worked on.
    fn spawn(
        name: &str,
        ahead: usize,
        work: impl FnOnce(Receiver<T>) + Send + 'static,
    ) -> StageThread<T> {
        let (items, received) = std::sync::mpsc::sync_channel(ahead);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(received))
            .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"));
        StageThread {
            items: Some(items),
            thread: Some(thread),
        }
    }

    /// Hands `item` over, waiting while the thread is behind; an item the
    /// thread can no longer take comes back.
    fn send(&self, item: T) -> Result<(), T> {
        match &self.items {
            Some(items) => items.send(item).map_err(|unsent| unsent.0),
            None => Err(item),
        }
    }
}

impl<T> Drop for StageThread<T> {
    fn drop(&mut self) {
        self.items = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `line` as its events carry it, dated by its input's clock; `read`: when
/// its chunk was read.
fn see<'a>(
    clock: &mut RememberingClock,
    host: &'a str,
    line: &Line<'a>,
    read: Timestamp,
    texts: &mut TimeTexts,
) -> SeenLine<'a> {
    SeenLine::new(
        line.text,
        line.origin(),
        line.source,
        line.cut_from.is_some(),
        clock.times(line.text, read),
        host,
        texts,
    )
}

/// Where the queue knows `line` by: the input's name with the file's
/// identity, or with the journal's sequence-number id. A file's source is
/// kept in `last_file_source` for the next line, most likely of the same file.
fn place(
    input_names: &[String],
    last_file_source: &mut Option<(usize, SourceFile, Arc<str>)>,
    line: &Line,
) -> Option<ReadAt> {
    let input = &input_names[line.input];
    match (line.source, line.journal) {
        (Some(file), _) => {
            let source = match last_file_source {
                Some((index, known, source)) if *index == line.input && *known == file => {
                    source.clone()
                }
                _ => {
                    let source = ReadAt::file_source(input, file);
                    *last_file_source = Some((line.input, file, source.clone()));
                    source
                }
            };
            Some(ReadAt::in_file(source, line.offset))
        }
        (None, Some(journal)) => ReadAt::journal(input, &journal.cursor, line.offset),
        (None, None) => None,
    }
}

fn abandon(chunk: &Matched) {
    for token in &chunk.tokens {
        token.abandon();
    }
}

/// At most about this many bytes of events in one transaction when chunks
/// wait together: redb's cost per event falls little beyond a thousand
/// events, and until it commits the writer holds the group's events, their
/// JSON and the transaction's dirty pages (massif: a group of twice this was
/// about 7 MiB of the peak heap).
const GROUP_BYTES: usize = CHUNK_BYTES;

/// The queue writer's loop: what waits is written in one transaction (one
/// fsync for several chunks when the disk is the slower part), then the
/// chunks' tokens are let go. Once the queue is closed every chunk still
/// coming is abandoned, never let go, so no offset commits past events that
/// were not queued.
fn write_to_queue(
    queue: &Queue,
    metrics: &Metrics,
    tap: &Tap,
    chunks: std::sync::mpsc::Receiver<Matched>,
) {
    while let Ok(mut group) = chunks.recv() {
        while group.bytes < GROUP_BYTES {
            let Ok(more) = chunks.try_recv() else { break };
            group.events.extend(more.events);
            group.bytes += more.bytes;
            group.tokens.extend(more.tokens);
        }
        // Nothing may be lost: a queue that cannot be written (disk full)
        // holds the writer here, and the tailer behind it, with an error
        // each time, until it can, or until the agent stops: then the lines
        // are left uncommitted, to be read again at the next start.
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        let queued = loop {
            match queue.append(&group.events) {
                Ok(queued) => break queued,
                Err(e) if e.is_closed() => {
                    abandon(&group);
                    for chunk in chunks.iter() {
                        abandon(&chunk);
                    }
                    return;
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot queue events; tailing waits and retries");
                    queue.wait_for_disk(delay);
                }
            }
        };
        // A lane that skipped some as queued before (lines read again after
        // a restart) is left out: which ones is not known, and an event
        // shown waiting must be one its delivery will settle. Their
        // outcomes still reach the tap when their batches settle.
        let mut offered = vec![0; queued.len()];
        for event in &group.events {
            offered[event.lane] += 1;
        }
        tap.queued(
            group
                .events
                .iter()
                .filter(|event| queued[event.lane] == offered[event.lane])
                .map(|event| (event.lane, &event.event)),
        );
        for (lane, count) in queued.into_iter().enumerate() {
            metrics::add(&metrics.webhooks[lane].1.events_queued, count);
        }
    }
}
