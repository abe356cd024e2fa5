//! The durable queue: events wait on disk (redb, `<state_dir>/queue.redb`)
//! until their webhook took them.
//!
//! Each webhook has its own table of rows, each holding the events of one
//! append under its first event's sequence number (see `rows`), so one
//! that is down only fills its own, up to `max_queue_bytes`; then `append`
//! waits and back-pressure reaches the tailer (the log files are the
//! buffer), or, for a lane with `when_full = "drop_oldest"`, drops that
//! lane's oldest events. Events are appended in one transaction per chunk
//! of lines, before the lines' offsets may be committed, so a crash at any
//! moment loses nothing. Each source of lines (a file of an input, a
//! journal) keeps, in the same transaction, the offset its lines are queued
//! up to; lines read again after a crash (between the queue write and the
//! checkpoint write) fall below it and are skipped: after a restart only
//! batches that were in flight are sent twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use bytes::Bytes;
use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::fresh::Fresh;
use super::rows;
use crate::config::WhenFull;
use crate::event::{Event, EventJson, SourceFile};

/// The table of rows named `name`.
fn rows_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// Per webhook and source of lines ([`ReadAt`]): the offset its lines are queued up
/// to (the last queued line's offset + 1), and when that was written (Unix
/// seconds, to forget the sources written longest ago).
const QUEUED_UP_TO: TableDefinition<&str, (u64, u64)> = TableDefinition::new("queued_up_to");
/// The per-event id index of earlier versions, deleted at open.
const OLD_RECENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("recent_ids");
const OLD_RECENT_ORDER: TableDefinition<u64, &str> = TableDefinition::new("recent_order");
/// Per webhook name: its last delivery error, as JSON ([`LastError`]).
const LAST_ERRORS: TableDefinition<&str, &[u8]> = TableDefinition::new("last_errors");
/// Per webhook name: events dropped to make room (`when_full = "drop_oldest"`), ever.
const DROPPED: TableDefinition<&str, u64> = TableDefinition::new("dropped");
/// Drops are logged at most this often per webhook, with the count since.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Per webhook name: the Content-Type it has accepted a body with, so that
/// a later 415 reads as "over the limit", after a restart too.
const ACCEPTED_CONTENT_TYPES: TableDefinition<&str, &str> =
    TableDefinition::new("accepted_content_types");
/// How many sources' "queued up to" offsets are kept: far more than the
/// files whose checkpoint can lag their queue write at a crash.
const REMEMBERED_SOURCES: u64 = 10_000;
/// For how long after the queue opens the last run's "queued up to" offsets
/// skip lines. The lines a crash left uncommitted are read again at once;
/// later, a line below an old offset is another file's (a deleted file's
/// inode reused), and must be queued.
const RE_READ_WINDOW: Duration = Duration::from_secs(60);

/// The queue is written once and read once per event; a large page cache
/// would only cost memory on a small server. Under a backlog 4 MiB held
/// 2–3 MiB more at the peak than this, for the same CPU; less than this
/// saved little more.
const CACHE_BYTES: usize = 1024 * 1024;

/// redb keeps the pages a backlog needed (99 MB after 161,000 events): once
/// every lane is empty and the file is larger than this, and than twice what
/// the last compaction left, it is compacted.
const COMPACT_ABOVE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("queue {path}: {message}")]
pub struct QueueError {
    path: String,
    message: String,
    /// Another process has the file open for writing.
    in_use: bool,
    /// The agent is stopping: the queue takes no more events.
    closed: bool,
}

impl QueueError {
    /// Another process (an agent, or `tailhook send` while none runs) has
    /// the queue open: it may be free again in a moment.
    pub fn is_in_use(&self) -> bool {
        self.in_use
    }

    /// The queue was closed for appends (the agent is stopping).
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// Where the line an event came from was read: its source (the input, and
/// the file's identity, which a rename keeps and a truncation changes; or
/// the journal's sequence-number id) and its place there (the byte offset;
/// the journal's sequence number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAt {
    source: Arc<str>,
    offset: u64,
}

impl ReadAt {
    /// How the queue knows the file `file` read by the input `input`: a
    /// line's place is this and its offset ([`ReadAt::in_file`]).
    pub fn file_source(input: &str, file: SourceFile) -> Arc<str> {
        format!(
            "{input}\nfile {}:{}:{}",
            file.dev, file.ino, file.generation
        )
        .into()
    }

    /// A line at byte `offset` of the file known as `source`.
    pub fn in_file(source: Arc<str>, offset: u64) -> ReadAt {
        ReadAt { source, offset }
    }

    /// A journal entry read by the input `input`: entries of one
    /// sequence-number id (the cursor's `s=`) come in `seqnum` order. `None`
    /// when the entry has neither (a `seqnum` of 0 is unknown): it is
    /// queued each time it is read.
    pub fn journal(input: &str, cursor: &str, seqnum: u64) -> Option<ReadAt> {
        let seqnum_id = cursor
            .split(';')
            .find_map(|part| part.strip_prefix("s="))
            .filter(|id| !id.is_empty())?;
        (seqnum > 0).then(|| ReadAt {
            source: format!("{input}\njournal {seqnum_id}").into(),
            offset: seqnum,
        })
    }
}

/// An event for the webhook of `lane`, and where its line was read (`None`
/// for an event not read from an input: it is never skipped).
#[derive(Debug, Clone)]
pub struct ToQueue {
    pub lane: usize,
    pub event: EventJson,
    pub read_at: Option<ReadAt>,
}

/// Events not read from an input, for the webhooks of their lanes.
fn not_read(events: &[(usize, EventJson)]) -> Vec<ToQueue> {
    events
        .iter()
        .map(|(lane, event)| ToQueue {
            lane: *lane,
            event: event.clone(),
            read_at: None,
        })
        .collect()
}

/// The last run's "queued up to" offsets, each consulted until its source
/// is read past it (the lines a crash left uncommitted are read again), and
/// none after [`RE_READ_WINDOW`].
struct Watermarks {
    last_run: HashMap<String, u64>,
    consult_until: Instant,
    /// Rows of [`QUEUED_UP_TO`].
    rows: u64,
}

impl Watermarks {
    /// Whether the line at `at` was queued for the webhook `lane` in the
    /// last run.
    fn queued_before(&self, lane: &str, at: &ReadAt) -> bool {
        !self.last_run.is_empty()
            && self
                .last_run
                .get(&watermark_key(lane, &at.source))
                .is_some_and(|&up_to| at.offset < up_to)
    }

    /// Forgets the last run's offsets once [`RE_READ_WINDOW`] is over.
    fn expire(&mut self) {
        if !self.last_run.is_empty() && Instant::now() >= self.consult_until {
            self.last_run = HashMap::new();
        }
    }
}

/// Per webhook, by its name: adding a webhook must neither shift which
/// lines count as queued for the others nor hide from it what it never got.
fn watermark_key(lane: &str, source: &str) -> String {
    format!("{lane}\n{source}")
}

/// An event taken from a webhook's queue at `seq`: its JSON as stored
/// (which a JSON envelope sends as it is).
#[derive(Debug, Clone)]
pub struct Queued {
    pub seq: u64,
    pub json: EventJson,
}

impl Queued {
    /// `event` as the queue would hand it out at `seq`.
    pub fn new(seq: u64, event: &Event) -> Queued {
        Queued {
            seq,
            json: EventJson::of(event),
        }
    }

    pub fn id(&self) -> std::borrow::Cow<'_, str> {
        self.json.id()
    }

    pub fn event(&self) -> Event {
        self.json.decode()
    }
}

/// The latest failed attempt of a webhook, kept so `status` can show it
/// whether or not the agent runs. `message` never holds the URL's secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    /// RFC 3339, UTC.
    pub time: String,
    pub message: String,
}

/// What the queue holds and remembers for one webhook.
#[derive(Debug, Default)]
pub struct LaneState {
    pub events: u64,
    pub bytes: u64,
    /// When the oldest queued event's line was read.
    pub oldest: Option<SystemTime>,
    /// Ages of the attempts recorded within the asked window.
    pub attempt_ages: Vec<Duration>,
    pub last_error: Option<LastError>,
    /// Events dropped to make room, ever.
    pub dropped: u64,
}

/// What the queue needs to know of one webhook.
#[derive(Debug, Clone)]
pub struct LaneLimits {
    pub name: String,
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

#[cfg(test)]
impl LaneLimits {
    /// A lane whose fullness pauses the tailer (the default).
    pub fn pausing(name: &str, max_bytes: u64) -> LaneLimits {
        LaneLimits {
            name: name.into(),
            max_bytes,
            when_full: WhenFull::Pause,
        }
    }
}

struct Lane {
    name: String,
    table: String,
    attempts: String,
    /// Rows that could not be read back as events, kept for a human.
    set_aside: String,
    max_bytes: u64,
    when_full: WhenFull,
    /// Wakes the webhook's delivery task when events arrive.
    arrived: Arc<Notify>,
}

/// Where appended events come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Appending {
    /// Read from the inputs: an event whose line was queued in the last run
    /// (read again after a crash) is skipped.
    Read,
    /// Replayed from a dead-letter file: queued again on purpose.
    Replayed,
}

/// Sizes of what each lane holds, guarded together so `append` can wait for room.
struct Usage {
    bytes: Vec<u64>,
    events: Vec<u64>,
    next_seq: Vec<u64>,
    /// How many times the sizes were recounted from the store.
    recounts: u64,
}

/// Events one lane dropped to make room: ever (as stored), and since the
/// last log line, which comes at most every [`DROP_LOG_INTERVAL`].
#[derive(Default)]
struct Drops {
    total: u64,
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// The open database and how many times it was opened, so that several
/// callers failing on one broken handle reopen it once.
struct Handle {
    generation: u64,
    /// `None` once closed after an I/O error and not yet reopened.
    db: Option<Database>,
}

pub struct Queue {
    handle: RwLock<Handle>,
    file: PathBuf,
    path: String,
    lanes: Vec<Lane>,
    /// Never held across a disk write (only across the reads of a recount
    /// after a reopen): `depth` (for status and metrics) takes it on the
    /// async workers.
    usage: Mutex<Usage>,
    drops: Mutex<Vec<Drops>>,
    /// Held by an `append` from its first look at the sizes to its commit,
    /// so appends take sequence numbers one after the other.
    appending: Mutex<Watermarks>,
    /// The database was reopened: `usage` is recounted from the store
    /// before it is used again.
    usage_stale: AtomicBool,
    room: Condvar,
    /// An `append` is waiting for room: the tailer is paused on purpose.
    waiting_for_room: AtomicBool,
    /// A failed write waits to be tried again: the tailer is paused on purpose.
    waiting_for_disk: AtomicBool,
    /// Closed for appends: the agent is stopping.
    closed: AtomicBool,
    /// The file's size after the last compaction (0 before any).
    compacted_size: AtomicU64,
    /// What the latest appends committed, for the senders to take without
    /// reading it back.
    fresh: Fresh,
}

/// Creates `file` private before redb opens it (redb would create it with
/// the umask); an existing one (from an older version) is made private too.
fn create_private(file: &Path) -> std::io::Result<()> {
    crate::private::restrict(
        &crate::private::open_options()
            .create(true)
            .append(true)
            .open(file)?,
    )
}

fn open_database(file: &Path) -> Result<Database, DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(file)
}

/// Whether redb refuses further use of the handle after `error`: it asks to
/// be closed and reopened after any I/O error (a full disk, say).
fn needs_reopen(error: &redb::Error) -> bool {
    matches!(error, redb::Error::PreviousIo | redb::Error::Io(_))
}

/// Counts what each lane holds, and where sequences resume.
fn count_usage(txn: &redb::WriteTransaction, lanes: &[Lane]) -> Result<Usage, redb::Error> {
    let mut usage = Usage {
        bytes: vec![],
        events: vec![],
        next_seq: vec![],
        recounts: 0,
    };
    for lane in lanes {
        let held = held(&txn.open_table(rows_table(&lane.table))?)?;
        usage.bytes.push(held.bytes);
        usage.events.push(held.events);
        usage.next_seq.push(held.last_seq + 1);
        txn.open_table(TableDefinition::<u64, ()>::new(&lane.attempts))?;
        txn.open_table(rows_table(&lane.set_aside))?;
    }
    txn.open_table(QUEUED_UP_TO)?;
    txn.open_table(LAST_ERRORS)?;
    txn.open_table(DROPPED)?;
    txn.open_table(ACCEPTED_CONTENT_TYPES)?;
    Ok(usage)
}

/// What a table of rows holds: its events, their bytes and the last one's
/// sequence number (0 when empty).
fn held(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<rows::RowUsage, redb::Error> {
    let mut held = rows::RowUsage {
        events: 0,
        bytes: 0,
        last_seq: 0,
    };
    for entry in table.iter()? {
        let (key, row) = entry?;
        let usage = rows::usage(key.value(), row.value());
        held.events += usage.events;
        held.bytes += usage.bytes;
        held.last_seq = usage.last_seq;
    }
    Ok(held)
}

/// The rows of `table` from the one that holds `seq` on (the last whose
/// key is at or below it: see `rows`).
fn rows_from<'t>(
    table: &'t impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<redb::Range<'t, u64, &'static [u8]>, redb::StorageError> {
    table.range(row_holding(table, seq)?..)
}

/// The key of the row that holds `seq` if one does: the last at or below it.
fn row_holding(
    table: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<u64, redb::StorageError> {
    Ok(match table.range(..=seq)?.next_back() {
        Some(holder) => holder?.0.value(),
        None => seq,
    })
}

/// Drops the oldest events of `table` (a `drop_oldest` lane holding
/// `holding` bytes) until it holds at most `max_bytes`, never the event at
/// `newest`: one event larger than the limit still queues. A row that
/// cannot be read goes whole. Returns the events and bytes dropped.
fn drop_oldest(
    table: &mut redb::Table<u64, &'static [u8]>,
    mut holding: u64,
    max_bytes: u64,
    newest: u64,
) -> Result<(u64, u64), redb::Error> {
    let (mut events, mut bytes) = (0, 0);
    while holding > max_bytes {
        let Some((key, row)) = table
            .first()?
            .map(|(key, row)| (key.value(), row.value().to_vec()))
        else {
            break;
        };
        match rows::events(key, &row) {
            Ok(stored) => {
                let mut gone = 0;
                for event in &stored {
                    if holding <= max_bytes || event.seq >= newest {
                        break;
                    }
                    holding = holding.saturating_sub(event.size);
                    (events, bytes) = (events + 1, bytes + event.size);
                    gone += 1;
                }
                if gone == stored.len() {
                    table.remove(key)?;
                    continue;
                }
                if gone > 0 {
                    if let Some(rest) = rows::rest_of(key, &stored[gone..]) {
                        table.insert(key, rest.as_slice())?;
                    }
                }
                break;
            }
            Err(_) if key < newest => {
                let usage = rows::usage(key, &row);
                holding = holding.saturating_sub(usage.bytes);
                (events, bytes) = (events + usage.events, bytes + usage.bytes);
                table.remove(key)?;
            }
            Err(_) => break,
        }
    }
    Ok((events, bytes))
}

/// Keeps the [`REMEMBERED_SOURCES`] sources written last (and those
/// written in the same second as the oldest of them); how many rows remain.
fn forget_oldest_sources(table: &mut redb::Table<&str, (u64, u64)>) -> Result<u64, redb::Error> {
    let mut written = table
        .iter()?
        .map(|row| row.map(|(_, value)| value.value().1))
        .collect::<Result<Vec<u64>, _>>()?;
    if written.len() as u64 > REMEMBERED_SOURCES {
        written.sort_unstable();
        let oldest_kept = written[written.len() - REMEMBERED_SOURCES as usize];
        table.retain(|_, (_, at)| at >= oldest_kept)?;
    }
    Ok(table.len()?)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reopening a database after an I/O error: a few quick tries (the error may
/// have passed, e.g. space was freed), then the caller's own retry takes over.
fn reopen_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(400))
        .with_max_times(3)
        .build()
}

impl Queue {
    /// Opens (or creates) the queue for `webhooks` in `state_dir`.
    pub fn open(state_dir: &Path, webhooks: &[LaneLimits]) -> Result<Arc<Queue>, QueueError> {
        let file = state_dir.join("queue.redb");
        let path = file.display().to_string();
        let fail = |message: String| QueueError {
            path: path.clone(),
            message,
            in_use: false,
            closed: false,
        };
        create_private(&file).map_err(|e| fail(format!("cannot create: {e}")))?;
        let db = open_database(&file).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => QueueError {
                in_use: true,
                ..fail("in use by another process (an agent, or `tailhook send`)".into())
            },
            other => fail(format!("cannot open: {other}")),
        })?;
        let lanes: Vec<Lane> = webhooks
            .iter()
            .map(|limits| Lane {
                name: limits.name.clone(),
                table: format!("events:{}", limits.name),
                attempts: format!("attempts:{}", limits.name),
                set_aside: format!("unreadable:{}", limits.name),
                max_bytes: limits.max_bytes,
                when_full: limits.when_full,
                arrived: Arc::new(Notify::new()),
            })
            .collect();
        let (usage, drops, watermarks) = (|| {
            let txn = db.begin_write()?;
            txn.delete_table(OLD_RECENT_IDS)?;
            txn.delete_table(OLD_RECENT_ORDER)?;
            let usage = count_usage(&txn, &lanes)?;
            let mut watermarks = Watermarks {
                last_run: HashMap::new(),
                consult_until: Instant::now() + RE_READ_WINDOW,
                rows: 0,
            };
            {
                let mut table = txn.open_table(QUEUED_UP_TO)?;
                watermarks.rows = forget_oldest_sources(&mut table)?;
                for row in table.iter()? {
                    let (source, value) = row?;
                    watermarks
                        .last_run
                        .insert(source.value().to_string(), value.value().0);
                }
            }
            let dropped = txn.open_table(DROPPED)?;
            let mut drops = Vec::new();
            for lane in &lanes {
                drops.push(Drops {
                    total: dropped.get(lane.name.as_str())?.map_or(0, |n| n.value()),
                    ..Drops::default()
                });
            }
            drop(dropped);
            txn.commit()?;
            Ok::<_, redb::Error>((usage, drops, watermarks))
        })()
        .map_err(|e| fail(e.to_string()))?;
        for (lane, events) in lanes.iter().zip(&usage.events) {
            if *events > 0 {
                tracing::info!(queue = %lane.table, events, "events kept from the last run");
            }
        }
        let fresh = Fresh::new(lanes.len());
        Ok(Arc::new(Queue {
            handle: RwLock::new(Handle {
                generation: 0,
                db: Some(db),
            }),
            file,
            path,
            lanes,
            usage: Mutex::new(usage),
            drops: Mutex::new(drops),
            appending: Mutex::new(watermarks),
            usage_stale: AtomicBool::new(false),
            room: Condvar::new(),
            waiting_for_room: AtomicBool::new(false),
            waiting_for_disk: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            compacted_size: AtomicU64::new(0),
            fresh,
        }))
    }

    fn fail(&self, error: impl std::fmt::Display) -> QueueError {
        QueueError {
            path: self.path.clone(),
            message: error.to_string(),
            in_use: false,
            closed: false,
        }
    }

    /// Runs `op` on the database. After an I/O error redb refuses every
    /// further use of the handle, so it is reopened here (without retrying
    /// `op`: its caller retries, and nothing it did was committed).
    fn with_db<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, QueueError> {
        let (generation, result) = {
            let handle = self.handle.read().expect("queue database");
            let result = match &handle.db {
                Some(db) => op(db),
                None => Err(redb::Error::PreviousIo),
            };
            (handle.generation, result)
        };
        result.map_err(|error| {
            if needs_reopen(&error) {
                self.reopen(generation);
            }
            self.fail(error)
        })
    }

    /// Closes the handle that failed (if no one did since `failed`) and opens
    /// the file again: that is how redb recovers from an I/O error, once the
    /// cause (a full disk) has passed.
    fn reopen(&self, failed: u64) {
        let mut handle = self.handle.write().expect("queue database");
        if handle.generation != failed {
            return;
        }
        // The lock on the file goes with the old handle.
        handle.db = None;
        handle.generation += 1;
        let mut delays = reopen_backoff();
        loop {
            match open_database(&self.file) {
                Ok(db) => {
                    tracing::info!(queue = %self.path, "queue reopened after an I/O error");
                    handle.db = Some(db);
                    // What the failed transactions seemed to add or remove
                    // is not to be trusted: the store says what is there.
                    self.usage_stale.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => match delays.next() {
                    Some(delay) => std::thread::sleep(delay),
                    None => {
                        tracing::error!(queue = %self.path, error = %e, "cannot reopen the queue after an I/O error; will try again");
                        return;
                    }
                },
            }
        }
    }

    /// The lane sizes, recounted from the store first if it was reopened.
    fn usage(&self) -> std::sync::MutexGuard<'_, Usage> {
        let mut usage = self.usage.lock().expect("queue usage");
        if self.usage_stale.swap(false, Ordering::SeqCst) {
            let counted = self.with_db(|db| {
                let txn = db.begin_write()?;
                let usage = count_usage(&txn, &self.lanes)?;
                // The tables exist since `open`: nothing to write, no fsync.
                txn.abort()?;
                Ok(usage)
            });
            match counted {
                Ok(mut counted) => {
                    // Sequences never go back: delivery tasks read after the
                    // last one they took, and the store may have emptied.
                    for (counted, known) in counted.next_seq.iter_mut().zip(&usage.next_seq) {
                        *counted = (*counted).max(*known);
                    }
                    counted.recounts = usage.recounts + 1;
                    *usage = counted;
                    self.room.notify_all();
                }
                Err(e) => {
                    self.usage_stale.store(true, Ordering::SeqCst);
                    tracing::warn!(error = %e, "cannot recount the queue; sizes may be off until it can");
                }
            }
        }
        usage
    }

    pub fn arrivals(&self, lane: usize) -> Arc<Notify> {
        self.lanes[lane].arrived.clone()
    }

    /// Events and bytes waiting for `lane`'s webhook. Asked from the async
    /// workers (status, metrics), so it never touches the disk: after a
    /// reopen the sizes are recounted by the next queue write.
    pub fn depth(&self, lane: usize) -> (u64, u64) {
        let usage = self.usage.lock().expect("queue usage");
        (usage.events[lane], usage.bytes[lane])
    }

    /// Events dropped from `lane` to make room, ever.
    pub fn dropped(&self, lane: usize) -> u64 {
        self.drops.lock().expect("queue drops")[lane].total
    }

    /// Whether an `append` is waiting for a full lane to make room (and so
    /// the tailer that called it is paused, not stuck).
    pub fn waiting_for_room(&self) -> bool {
        self.waiting_for_room.load(Ordering::Relaxed)
    }

    /// Refuses further appends, and ends those waiting for room: the agent
    /// is stopping, and events not queued are read again from the log files
    /// at the next start (their offsets are not committed). Delivery goes on.
    pub fn close_for_appends(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Under the lock, so a waiting append cannot miss the wake-up.
        let _usage = self.usage.lock().expect("queue usage");
        self.room.notify_all();
    }

    /// Whether the tailer that appends is paused on purpose: waiting for
    /// room in a full lane, or for the disk to take a write again.
    pub fn tailer_paused(&self) -> bool {
        self.waiting_for_room() || self.waiting_for_disk.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` before a failed append is tried again (less if
    /// the queue is closed for appends meanwhile).
    pub fn wait_for_disk(&self, timeout: Duration) {
        self.waiting_for_disk.store(true, Ordering::Relaxed);
        let usage = self.usage.lock().expect("queue usage");
        let _ = self
            .room
            .wait_timeout_while(usage, timeout, |_| !self.closed.load(Ordering::SeqCst))
            .expect("queue usage");
    }

    fn closed_error(&self) -> QueueError {
        QueueError {
            closed: true,
            ..self.fail("closed: the agent is stopping")
        }
    }

    /// Appends `events` in one durable transaction, with how far each
    /// source of their lines is queued, skipping those whose line was queued
    /// in the last run (read again after a crash); returns how many each
    /// lane took. Waits while a lane they go to is full: that pauses the
    /// tailer, which calls this; a `drop_oldest` lane drops its oldest
    /// events instead, in the same transaction. Fails at once when the queue
    /// was closed for appends.
    pub fn append(&self, events: &[ToQueue]) -> Result<Vec<u64>, QueueError> {
        self.append_as(events, Appending::Read)
    }

    /// Queues dead-lettered `events` again (`tailhook dead-letter replay`),
    /// none skipped; a lane without room for them fails rather than waits,
    /// since with the agent stopped nothing would make room.
    pub fn requeue(&self, events: &[(usize, EventJson)]) -> Result<Vec<u64>, QueueError> {
        self.append_as(&not_read(events), Appending::Replayed)
    }

    fn append_as(&self, events: &[ToQueue], appending: Appending) -> Result<Vec<u64>, QueueError> {
        let mut taken = vec![0; self.lanes.len()];
        if self.closed.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        if events.is_empty() {
            return Ok(taken);
        }
        let mut watermarks = self.appending.lock().expect("queue appends");
        watermarks.expire();
        // What the last run did not queue already (lines read again).
        let new: Vec<&ToQueue> = events
            .iter()
            .filter(|item| {
                appending != Appending::Read
                    || !item
                        .read_at
                        .as_ref()
                        .is_some_and(|at| watermarks.queued_before(&self.lanes[item.lane].name, at))
            })
            .collect();
        if new.is_empty() {
            return Ok(taken);
        }
        let mut usage = self.usage();
        let mut warned = vec![false; self.lanes.len()];
        loop {
            if self.closed.load(Ordering::SeqCst) {
                self.waiting_for_room.store(false, Ordering::Relaxed);
                return Err(self.closed_error());
            }
            let mut adding = vec![0u64; self.lanes.len()];
            for item in &new {
                adding[item.lane] += rows::event_size(item.event.as_bytes().len());
            }
            // A lane that holds nothing always takes the chunk, however large.
            let full = (0..self.lanes.len()).find(|&l| {
                self.lanes[l].when_full == WhenFull::Pause
                    && adding[l] > 0
                    && usage.bytes[l] > 0
                    && usage.bytes[l] + adding[l] > self.lanes[l].max_bytes
            });
            let Some(lane) = full else { break };
            if appending == Appending::Replayed {
                return Err(self.fail(format_args!(
                    "{}: {} bytes queued, max_queue_bytes = {}: no room for {} more; replay once it drained",
                    self.lanes[lane].table, usage.bytes[lane], self.lanes[lane].max_bytes, adding[lane]
                )));
            }
            self.waiting_for_room.store(true, Ordering::Relaxed);
            if !std::mem::replace(&mut warned[lane], true) {
                tracing::warn!(
                    queue = %self.lanes[lane].table,
                    bytes = usage.bytes[lane],
                    max_queue_bytes = self.lanes[lane].max_bytes,
                    "queue is full: tailing is paused until the webhook takes events (the log files keep them)"
                );
            }
            usage = self
                .room
                .wait_timeout(usage, Duration::from_secs(1))
                .expect("queue usage")
                .0;
        }
        self.waiting_for_room.store(false, Ordering::Relaxed);
        let (next_seq, recounts) = (usage.next_seq.clone(), usage.recounts);
        // Sizes before this chunk; a removal meanwhile only makes a
        // `drop_oldest` lane drop a little more than it had to.
        let held = usage.bytes.clone();
        drop(usage);
        let added = self.with_db(|db| {
            let mut next_seq = next_seq;
            let txn = db.begin_write()?;
            let mut added = Vec::new();
            // Per lane: (events, bytes) dropped to make room.
            let mut dropped: HashMap<usize, (u64, u64)> = HashMap::new();
            // Per lane and source: the offset its lines are now queued up to.
            let mut reached: HashMap<(usize, &str), u64> = HashMap::new();
            let (mut sources, mut new_sources) = (watermarks.rows, 0);
            {
                // Per lane: its events' sequence numbers and JSON, in order.
                let mut by_lane: Vec<Vec<(u64, &[u8])>> = vec![Vec::new(); self.lanes.len()];
                for item in &new {
                    let lane = item.lane;
                    if let Some(at) = &item.read_at {
                        let up_to = reached.entry((lane, &*at.source)).or_default();
                        *up_to = (*up_to).max(at.offset + 1);
                    }
                    let json = item.event.as_bytes();
                    by_lane[lane].push((next_seq[lane], json));
                    added.push((lane, next_seq[lane], rows::event_size(json.len())));
                    next_seq[lane] += 1;
                }
                let mut row = Vec::new();
                for (lane, events) in by_lane.iter().enumerate() {
                    if events.is_empty() {
                        continue;
                    }
                    let mut table = txn.open_table(rows_table(&self.lanes[lane].table))?;
                    for block in rows::blocks(events) {
                        rows::write_block(block[0].0, block, &mut row);
                        table.insert(block[0].0, row.as_slice())?;
                    }
                    if self.lanes[lane].when_full != WhenFull::DropOldest {
                        continue;
                    }
                    let new_bytes: u64 = events
                        .iter()
                        .map(|(_, json)| rows::event_size(json.len()))
                        .sum();
                    let newest = next_seq[lane] - 1;
                    let (events, bytes) = drop_oldest(
                        &mut table,
                        held[lane] + new_bytes,
                        self.lanes[lane].max_bytes,
                        newest,
                    )?;
                    if events > 0 {
                        let mut totals = txn.open_table(DROPPED)?;
                        let name = self.lanes[lane].name.as_str();
                        let total = totals.get(name)?.map_or(0, |n| n.value()) + events;
                        totals.insert(name, total)?;
                        dropped.insert(lane, (events, bytes));
                    }
                }
                let mut queued_up_to = txn.open_table(QUEUED_UP_TO)?;
                let now = unix_seconds();
                for (&(lane, source), &up_to) in &reached {
                    let key = watermark_key(&self.lanes[lane].name, source);
                    if queued_up_to.insert(key.as_str(), (up_to, now))?.is_none() {
                        new_sources += 1;
                    }
                }
                sources += new_sources;
                if sources > 2 * REMEMBERED_SOURCES {
                    sources = forget_oldest_sources(&mut queued_up_to)?;
                }
            }
            txn.commit()?;
            Ok((added, next_seq, dropped, reached, sources))
        });
        let (added, next_seq, dropped, reached, sources) = added?;
        // Read past where the last run had queued them: the lines read again
        // are behind, and what follows in these sources is new.
        if !watermarks.last_run.is_empty() {
            for &(lane, source) in reached.keys() {
                let key = watermark_key(&self.lanes[lane].name, source);
                watermarks.last_run.remove(&key);
            }
        }
        watermarks.rows = sources;
        self.waiting_for_disk.store(false, Ordering::Relaxed);
        let mut usage = self.usage();
        // A recount since the commit already counted what it added.
        let counted = usage.recounts != recounts;
        for (lane, seq) in usage.next_seq.iter_mut().enumerate() {
            *seq = (*seq).max(next_seq[lane]);
        }
        for &(lane, _, bytes) in &added {
            if !counted {
                usage.bytes[lane] += bytes;
                usage.events[lane] += 1;
            }
            taken[lane] += 1;
        }
        for (&lane, &(events, bytes)) in &dropped {
            if !counted {
                usage.bytes[lane] = usage.bytes[lane].saturating_sub(bytes);
                usage.events[lane] = usage.events[lane].saturating_sub(events);
            }
        }
        drop(usage);
        for (lane, _) in taken.iter().enumerate().filter(|(_, &n)| n > 0) {
            // Kept before the sender hears of them. A lane that dropped
            // events to make room (perhaps some of these) reads the store.
            if dropped.contains_key(&lane) {
                self.fresh.forget(lane);
            } else {
                self.fresh.committed(
                    lane,
                    new.iter()
                        .zip(&added)
                        .filter(|(_, &(of, _, _))| of == lane)
                        .map(|(item, &(_, seq, _))| Queued {
                            seq,
                            json: item.event.clone(),
                        }),
                );
            }
            self.lanes[lane].arrived.notify_one();
        }
        self.log_drops(&dropped);
        Ok(taken)
    }

    /// Counts what `append` dropped (lane → events, bytes) and logs it, at
    /// most every [`DROP_LOG_INTERVAL`] per lane with the count since.
    fn log_drops(&self, dropped: &HashMap<usize, (u64, u64)>) {
        let mut drops = self.drops.lock().expect("queue drops");
        for (&lane, &(events, _)) in dropped {
            let drops = &mut drops[lane];
            drops.total += events;
            drops.unlogged += events;
            if drops
                .logged_at
                .is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL)
            {
                tracing::warn!(
                    queue = %self.lanes[lane].table,
                    dropped = drops.unlogged,
                    dropped_total = drops.total,
                    max_queue_bytes = self.lanes[lane].max_bytes,
                    "queue is full: dropped the webhook's oldest events to make room (when_full = \"drop_oldest\")"
                );
                drops.unlogged = 0;
                drops.logged_at = Some(Instant::now());
            }
        }
    }

    /// About `limit` events of `lane` with a sequence above `after`, oldest
    /// first: the rest of the row that reaches `limit` comes too, since the
    /// next read would read that row whole again. A row that cannot be read
    /// back as an event is set aside (and logged), so it neither blocks the
    /// lane nor keeps using its room.
    pub fn read(&self, lane: usize, after: u64, limit: usize) -> Result<Vec<Queued>, QueueError> {
        if let Some(fresh) = self.fresh.take(lane, after, limit) {
            return Ok(fresh);
        }
        let (out, unreadable) = self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(rows_table(&self.lanes[lane].table))?;
            let mut out = Vec::new();
            let mut unreadable = Vec::new();
            for entry in rows_from(&table, after + 1)? {
                let (key, row) = entry?;
                let key = key.value();
                // One copy of the row, which its events share.
                let row = Bytes::copy_from_slice(row.value());
                match rows::events(key, &row) {
                    Ok(events) => {
                        let unread = events.iter().filter(|e| e.seq > after);
                        out.extend(unread.map(|e| Queued {
                            seq: e.seq,
                            json: EventJson::trusted_in(&row, e.json),
                        }));
                    }
                    Err(e) => unreadable.push((key, e)),
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok((out, unreadable))
        })?;
        if !unreadable.is_empty() {
            self.set_aside(lane, &unreadable)?;
        }
        Ok(out)
    }

    /// Moves unreadable rows (key, why) of `lane` to its `unreadable:`
    /// table, where they stay for a human, and releases their room.
    fn set_aside(&self, lane: usize, unreadable: &[(u64, String)]) -> Result<(), QueueError> {
        let (freed, moved) = self.with_db(|db| {
            let txn = db.begin_write()?;
            let (mut freed, mut moved) = (0, 0);
            {
                let mut table = txn.open_table(rows_table(&self.lanes[lane].table))?;
                let mut aside = txn.open_table(rows_table(&self.lanes[lane].set_aside))?;
                for (key, _) in unreadable {
                    if let Some(row) = table.remove(*key)? {
                        aside.insert(*key, row.value())?;
                        let usage = rows::usage(*key, row.value());
                        freed += usage.bytes;
                        moved += usage.events;
                    }
                }
            }
            txn.commit()?;
            Ok((freed, moved))
        })?;
        for (key, why) in unreadable {
            tracing::error!(
                queue = %self.lanes[lane].table,
                seq = key,
                error = %why,
                kept_in = %self.lanes[lane].set_aside,
                "unreadable event in the queue; set aside (not sent, not deleted)"
            );
        }
        self.release(lane, freed, moved);
        Ok(())
    }

    /// Takes `freed` bytes of `removed` events off `lane`'s size and wakes a
    /// waiting `append`.
    fn release(&self, lane: usize, freed: u64, removed: u64) {
        let mut usage = self.usage();
        usage.bytes[lane] = usage.bytes[lane].saturating_sub(freed);
        usage.events[lane] = usage.events[lane].saturating_sub(removed);
        self.room.notify_all();
    }

    /// Removes delivered (or dead-lettered) events and wakes a waiting `append`.
    pub fn remove(&self, lane: usize, seqs: &[u64]) -> Result<(), QueueError> {
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        let (freed, removed) = self.with_db(|db| {
            let txn = db.begin_write()?;
            let (mut freed, mut removed) = (0, 0);
            if let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) {
                let mut table = txn.open_table(rows_table(&self.lanes[lane].table))?;
                let taken = |seq| seqs.binary_search(&seq).is_ok();
                // Rows taken whole go in one pass, which reads each once
                // (looking each up to remove it read it again). A damaged
                // row is left to `read`, which sets it aside.
                let mut partly_taken = Vec::new();
                let start = row_holding(&table, first)?;
                table.retain_in(start..=last, |key, row| {
                    let Some(events) = rows::layout(key, row) else {
                        return true;
                    };
                    match events.iter().filter(|e| taken(e.seq)).count() {
                        0 => true,
                        gone if gone < events.len() => {
                            partly_taken.push(key);
                            true
                        }
                        _ => {
                            freed += events.iter().map(|e| e.size).sum::<u64>();
                            removed += events.len() as u64;
                            false
                        }
                    }
                })?;
                // Written back with the rest (the first and last rows of
                // a batch, at most); those were read, so checked, and the
                // rest is checked first.
                for key in partly_taken {
                    let rest = {
                        let Some(row) = table.get(key)? else { continue };
                        let Ok(events) = rows::events(key, row.value()) else {
                            continue;
                        };
                        let (gone, kept): (Vec<_>, Vec<_>) =
                            events.into_iter().partition(|e| taken(e.seq));
                        freed += gone.iter().map(|e| e.size).sum::<u64>();
                        removed += gone.len() as u64;
                        rows::rest_of(key, kept.iter())
                    };
                    match rest {
                        Some(row) => table.insert(key, row.as_slice())?,
                        None => table.remove(key)?,
                    };
                }
            }
            txn.commit()?;
            Ok((freed, removed))
        })?;
        if let Some(&last) = seqs.last() {
            self.fresh.removed_through(lane, last);
        }
        self.release(lane, freed, removed);
        self.compact_if_drained();
        Ok(())
    }

    /// Gives the disk back after a backlog: compacts the file when no lane
    /// holds an event and it grew well beyond what the last compaction left.
    /// Appends wait meanwhile (the write lock keeps every transaction out,
    /// as redb requires); the events' offsets are not committed until they
    /// are queued, so waiting loses nothing.
    fn compact_if_drained(&self) {
        if self
            .usage
            .lock()
            .expect("queue usage")
            .events
            .iter()
            .any(|&n| n > 0)
        {
            return;
        }
        let size = std::fs::metadata(&self.file).map_or(0, |m| m.len());
        let compacted = self.compacted_size.load(Ordering::Relaxed);
        if size <= COMPACT_ABOVE_BYTES || size <= 2 * compacted {
            return;
        }
        let mut handle = self.handle.write().expect("queue database");
        let generation = handle.generation;
        let Some(db) = handle.db.as_mut() else { return };
        let started = std::time::Instant::now();
        let result = db.compact();
        drop(handle);
        match result {
            Ok(_) => {
                let after = std::fs::metadata(&self.file).map_or(0, |m| m.len());
                self.compacted_size.store(after, Ordering::Relaxed);
                tracing::info!(queue = %self.path, bytes_before = size, bytes_after = after, took_ms = started.elapsed().as_millis() as u64, "queue compacted after its backlog drained");
            }
            Err(e) => {
                let error = redb::Error::from(e);
                tracing::warn!(queue = %self.path, error = %error, "cannot compact the queue; it keeps its size");
                if needs_reopen(&error) {
                    self.reopen(generation);
                } else {
                    // Not tried again until the file doubles.
                    self.compacted_size.store(size, Ordering::Relaxed);
                }
            }
        }
    }

    /// When the attempts made on `lane`'s webhook within `window` were made
    /// (for the rate limiter after a restart), by the wall clock.
    pub fn recent_attempts(
        &self,
        lane: usize,
        window: Duration,
    ) -> Result<Vec<SystemTime>, QueueError> {
        self.with_db(|db| attempt_times(&db.begin_read()?, &self.lanes[lane].attempts, window))
    }

    /// Depth, oldest event, attempts within `window` and last error of `lane`.
    pub fn lane_state(&self, lane: usize, window: Duration) -> Result<LaneState, QueueError> {
        let (events, bytes) = self.depth(lane);
        let lane = &self.lanes[lane];
        let remembered = self.with_db(|db| remembered(&db.begin_read()?, &lane.name, window))?;
        Ok(LaneState {
            events,
            bytes,
            ..remembered
        })
    }

    /// When `lane`'s oldest queued event was read (for the metrics' age gauge).
    pub fn oldest(&self, lane: usize) -> Result<Option<SystemTime>, QueueError> {
        self.with_db(|db| oldest_event(&db.begin_read()?, &self.lanes[lane].table))
    }

    /// Keeps `message` as `lane`'s last error.
    pub fn record_error(&self, lane: usize, message: &str) -> Result<(), QueueError> {
        let record = LastError {
            time: crate::event::rfc3339_now(),
            message: message.to_string(),
        };
        let json = serde_json::to_vec(&record).expect("errors serialize");
        self.with_db(|db| {
            let txn = db.begin_write()?;
            txn.open_table(LAST_ERRORS)?
                .insert(self.lanes[lane].name.as_str(), json.as_slice())?;
            Ok(txn.commit()?)
        })
    }

    /// Keeps `content_type` as one `lane`'s webhook has accepted.
    pub fn record_accepted_content_type(
        &self,
        lane: usize,
        content_type: &str,
    ) -> Result<(), QueueError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            txn.open_table(ACCEPTED_CONTENT_TYPES)?
                .insert(self.lanes[lane].name.as_str(), content_type)?;
            Ok(txn.commit()?)
        })
    }

    /// The Content-Type `lane`'s webhook last accepted a body with, if any.
    pub fn accepted_content_type(&self, lane: usize) -> Result<Option<String>, QueueError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ACCEPTED_CONTENT_TYPES)?;
            let accepted = table.get(self.lanes[lane].name.as_str())?;
            Ok(accepted.map(|value| value.value().to_string()))
        })
    }

    /// Records an attempt on `lane`'s webhook made at `at` (wall clock),
    /// forgetting those older than `window`; `replacing` an earlier record
    /// of the same attempt (its charge, now that its answer came).
    pub fn record_attempt(
        &self,
        lane: usize,
        at: SystemTime,
        replacing: Option<SystemTime>,
        window: Duration,
    ) -> Result<SystemTime, QueueError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let mut key = micros(at);
            {
                let mut table =
                    txn.open_table(TableDefinition::<u64, ()>::new(&self.lanes[lane].attempts))?;
                if let Some(earlier) = replacing {
                    table.remove(micros(earlier))?;
                }
                while table.get(key)?.is_some() {
                    key += 1;
                }
                table.insert(key, ())?;
                let before = micros_now().saturating_sub(window.as_micros() as u64);
                table.retain_in(..before, |_, ()| false)?;
            }
            txn.commit()?;
            Ok(UNIX_EPOCH + Duration::from_micros(key))
        })
    }
}

#[cfg(test)]
impl Queue {
    /// Appends events not read from an input (none is skipped).
    pub(crate) fn append_events(
        &self,
        events: &[(usize, Arc<Event>)],
    ) -> Result<Vec<u64>, QueueError> {
        let events: Vec<(usize, EventJson)> = events
            .iter()
            .map(|(lane, event)| (*lane, EventJson::of(event)))
            .collect();
        self.append(&not_read(&events))
    }
}

/// A disk slow to fsync, for tests: while it is held, every other queue
/// write waits. It lets go on [`SlowDisk::release`], or by itself after 10 s
/// so that a test whose code wrongly waited on it fails instead of hanging.
#[cfg(test)]
pub(crate) struct SlowDisk {
    released: Arc<AtomicBool>,
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

#[cfg(test)]
impl SlowDisk {
    /// Returns once the queue's writes are held.
    pub(crate) fn hold(queue: &Arc<Queue>) -> SlowDisk {
        let released = Arc::new(AtomicBool::new(false));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let (queue, released) = (queue.clone(), released.clone());
            std::thread::spawn(move || {
                let txn = queue
                    .with_db(|db| Ok(db.begin_write()?))
                    .expect("a write transaction");
                held_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(Duration::from_secs(10));
                released.store(true, Ordering::SeqCst);
                drop(txn);
            })
        };
        held_rx.recv().unwrap();
        SlowDisk {
            released,
            release,
            holder,
        }
    }

    /// Whether the writes were let go, by `release` or by the 10 s bound.
    pub(crate) fn was_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    pub(crate) fn release(self) {
        let _ = self.release.send(());
        self.holder.join().unwrap();
    }
}

fn micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn micros_now() -> u64 {
    micros(SystemTime::now())
}

/// The queue file opened read-only, for `tailhook status` while no agent
/// runs. redb lets one process open a file for writing, and no reader beside
/// it: while the agent runs it answers `status` itself.
pub struct QueueView {
    db: ReadOnlyDatabase,
    path: String,
}

impl QueueView {
    /// `None` when there is no queue file (the agent never ran here): status
    /// must not create one.
    pub fn open(state_dir: &Path) -> Result<Option<QueueView>, QueueError> {
        let file = state_dir.join("queue.redb");
        let path = file.display().to_string();
        if !file.exists() {
            return Ok(None);
        }
        let fail = |message: String| QueueError {
            path: path.clone(),
            message,
            in_use: false,
            closed: false,
        };
        let db = ReadOnlyDatabase::open(&file).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => {
                fail("in use by a running agent (whose control socket did not answer)".into())
            }
            DatabaseError::RepairAborted => fail(
                "was not closed cleanly (agent killed?); the next `tailhook run` repairs it".into(),
            ),
            other => fail(format!("cannot open: {other}")),
        })?;
        Ok(Some(QueueView { db, path }))
    }

    /// What the queue holds and remembers for the webhook `name`.
    pub fn lane_state(&self, name: &str, window: Duration) -> Result<LaneState, QueueError> {
        let fail = |e: redb::Error| QueueError {
            path: self.path.clone(),
            message: e.to_string(),
            in_use: false,
            closed: false,
        };
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let (events, bytes) = match txn.open_table(rows_table(&format!("events:{name}"))) {
            Ok(table) => {
                let held = held(&table).map_err(fail)?;
                (held.events, held.bytes)
            }
            Err(TableError::TableDoesNotExist(_)) => (0, 0),
            Err(e) => return Err(fail(e.into())),
        };
        Ok(LaneState {
            events,
            bytes,
            ..remembered(&txn, name, window).map_err(fail)?
        })
    }
}

/// Everything of a [`LaneState`] but the depth, which the running queue
/// keeps in memory and a [`QueueView`] counts.
fn remembered(
    txn: &ReadTransaction,
    name: &str,
    window: Duration,
) -> Result<LaneState, redb::Error> {
    let last_error = match txn.open_table(LAST_ERRORS) {
        Ok(table) => table
            .get(name)?
            .and_then(|json| serde_json::from_slice(json.value()).ok()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let dropped = match txn.open_table(DROPPED) {
        Ok(table) => table.get(name)?.map_or(0, |n| n.value()),
        Err(TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(LaneState {
        oldest: oldest_event(txn, &format!("events:{name}"))?,
        dropped,
        attempt_ages: attempt_times(txn, &format!("attempts:{name}"), window)?
            .into_iter()
            .map(|at| SystemTime::now().duration_since(at).unwrap_or_default())
            .collect(),
        last_error,
        ..LaneState::default()
    })
}

fn oldest_event(txn: &ReadTransaction, table: &str) -> Result<Option<SystemTime>, redb::Error> {
    let table = match txn.open_table(rows_table(table)) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some((key, row)) = table.first()? else {
        return Ok(None);
    };
    // `ingested`, not `time`: a backfilled line can state a time days old.
    // An event queued before events carried `ingested` has its read time
    // in `time`.
    Ok(rows::events(key.value(), row.value())
        .ok()
        .and_then(|events| Some(EventJson::trusted(events.first()?.json).decode()))
        .and_then(|event| {
            let read = if event.ingested.is_empty() {
                event.time
            } else {
                event.ingested
            };
            let read: jiff::Timestamp = read.parse().ok()?;
            SystemTime::try_from(read).ok()
        }))
}

/// When the attempts recorded in `table` within `window` were made.
fn attempt_times(
    txn: &ReadTransaction,
    table: &str,
    window: Duration,
) -> Result<Vec<SystemTime>, redb::Error> {
    let since = micros_now().saturating_sub(window.as_micros() as u64);
    let table = match txn.open_table(TableDefinition::<u64, ()>::new(table)) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut times = Vec::new();
    for entry in table.range(since..)? {
        let (at, ()) = entry.map(|(k, v)| (k.value(), v.value()))?;
        times.push(UNIX_EPOCH + Duration::from_micros(at));
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, message: &str) -> Arc<Event> {
        Arc::new(Event::sample(id, message))
    }

    fn lane(name: &str, max_bytes: u64, when_full: WhenFull) -> LaneLimits {
        LaneLimits {
            name: name.into(),
            max_bytes,
            when_full,
        }
    }

    fn hooks() -> Vec<LaneLimits> {
        vec![
            lane("a", 1_000_000, WhenFull::Pause),
            lane("b", 1_000_000, WhenFull::Pause),
        ]
    }

    #[test]
    fn events_survive_reopening_and_leave_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue
            .append_events(&[
                (0, event("1", "x")),
                (1, event("1", "x")),
                (0, event("2", "y")),
            ])
            .unwrap();
        drop(queue);

        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        assert_eq!(queue.depth(0).0, 2);
        let read = queue.read(0, 0, 10).unwrap();
        assert_eq!(
            read.iter().map(|q| q.event().message).collect::<Vec<_>>(),
            vec!["x", "y"]
        );
        assert_eq!(queue.read(0, read[0].seq, 10).unwrap().len(), 1);
        queue.remove(0, &[read[0].seq]).unwrap();
        assert_eq!(queue.depth(0).0, 1);
        assert_eq!(queue.depth(1).0, 1, "each webhook has its own copy");
        drop(queue);
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        assert_eq!(queue.read(0, 0, 10).unwrap()[0].event().message, "y");
    }

    /// Events of the lines at `offsets` of `file` (read by input `auth`),
    /// each to lanes 0 and 1, with ids naming the line.
    fn lines_of(file: SourceFile, offsets: &[u64]) -> Vec<ToQueue> {
        offsets
            .iter()
            .flat_map(|&offset| {
                let read_at = ReadAt::in_file(ReadAt::file_source("auth", file), offset);
                let event = EventJson::of(&event(&format!("{}@{offset}", file.generation), "x"));
                (0..2).map(move |lane| ToQueue {
                    lane,
                    event: event.clone(),
                    read_at: Some(read_at.clone()),
                })
            })
            .collect()
    }

    fn ids(queue: &Queue, lane: usize) -> Vec<String> {
        queue
            .read(lane, 0, 100)
            .unwrap()
            .iter()
            .map(|q| q.id().to_string())
            .collect()
    }

    #[test]
    fn lines_queued_in_the_last_run_are_skipped_when_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = SourceFile {
            dev: 1,
            ino: 2,
            generation: 0,
        };
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue.append(&lines_of(file, &[0, 100])).unwrap();
        // Delivered meanwhile, on one lane: the offset is kept all the same.
        let delivered: Vec<u64> = queue
            .read(0, 0, 10)
            .unwrap()
            .iter()
            .map(|q| q.seq)
            .collect();
        queue.remove(0, &delivered).unwrap();
        // A crash before the checkpoint: the next run reads 0 and 100 again.
        drop(queue);
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        let taken = queue.append(&lines_of(file, &[0, 100, 200])).unwrap();
        assert_eq!(taken, [1, 1]);
        assert_eq!(ids(&queue, 0), ["0@200"]);
        assert_eq!(ids(&queue, 1), ["0@0", "0@100", "0@200"]);
        // The same inode truncated (copytruncate): another generation, whose
        // lines at the same offsets are new.
        let truncated = SourceFile {
            generation: 1,
            ..file
        };
        queue.append(&lines_of(truncated, &[0, 100])).unwrap();
        assert_eq!(ids(&queue, 0), ["0@200", "1@0", "1@100"]);
        // Read past its last run's offset, a source skips nothing more: a
        // line below it now is another file's (a deleted file's inode reused).
        queue.append(&lines_of(file, &[50])).unwrap();
        assert_eq!(ids(&queue, 0), ["0@200", "1@0", "1@100", "0@50"]);

        // Another crash: the offsets queued in this run count at the next start.
        drop(queue);
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        let taken = queue
            .append(
                &lines_of(file, &[50])
                    .into_iter()
                    .chain(lines_of(truncated, &[100, 150]))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(taken, [1, 1], "only line 150 is new");
        // Another input reading the same file has its own offsets.
        let other_input = ToQueue {
            lane: 0,
            event: EventJson::of(&event("other", "x")),
            read_at: Some(ReadAt::in_file(ReadAt::file_source("web", file), 0)),
        };
        assert_eq!(queue.append(&[other_input]).unwrap(), [1, 0]);
        // Dead letters replayed are queued whatever was queued before.
        assert_eq!(
            queue
                .requeue(&[(0, EventJson::of(&event("1@0", "x")))])
                .unwrap(),
            [1, 0]
        );
    }

    proptest::proptest! {
        /// Any cursor: a journal entry is placed when, and only when, its
        /// cursor names a sequence-number id and its sequence number is known;
        /// entries of different ids are different sources.
        #[test]
        fn any_journal_cursor_places_an_entry_or_leaves_it_unplaced(
            cursor in "(\\PC{0,6}(;|s=)?){0,4}",
            seqnum in 0u64..3,
        ) {
            let seqnum_id = cursor.split(';').find_map(|part| part.strip_prefix("s=")).filter(|id| !id.is_empty());
            match ReadAt::journal("j", &cursor, seqnum) {
                Some(at) => {
                    proptest::prop_assert!(seqnum > 0);
                    proptest::prop_assert_eq!(&*at.source, format!("j\njournal {}", seqnum_id.unwrap()));
                    proptest::prop_assert_eq!(at.offset, seqnum);
                }
                None => proptest::prop_assert!(seqnum == 0 || seqnum_id.is_none()),
            }
        }
    }

    /// The keys and event counts of lane 0's rows.
    fn rows_of(queue: &Queue) -> Vec<(u64, u64)> {
        queue
            .with_db(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(rows_table("events:a"))?;
                let mut found = Vec::new();
                for entry in table.iter()? {
                    let (key, row) = entry?;
                    found.push((key.value(), rows::usage(key.value(), row.value()).events));
                }
                Ok(found)
            })
            .unwrap()
    }

    fn seqs(read: &[Queued]) -> Vec<u64> {
        read.iter().map(|q| q.seq).collect()
    }

    #[test]
    fn a_sender_that_keeps_up_reads_what_the_store_would_give() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        for chunk in 0..4 {
            let events: Vec<_> = (0..30)
                .map(|n| (n % 2, event(&format!("{chunk}-{n}"), &"x".repeat(n))))
                .collect();
            queue.append_events(&events).unwrap();
        }
        let read_all = |lane| {
            let (mut all, mut after) = (Vec::new(), 0);
            loop {
                let read = queue.read(lane, after, 7).unwrap();
                let Some(last) = read.last() else { break all };
                after = last.seq;
                all.extend(
                    read.into_iter()
                        .map(|q| (q.seq, q.json.as_bytes().to_vec())),
                );
            }
        };
        let kept: Vec<_> = (0..2).map(read_all).collect();
        assert_eq!(kept[0].len(), 60);
        assert!(queue.fresh.take(0, 0, 1).is_none(), "all taken");
        let stored: Vec<_> = (0..2).map(read_all).collect();
        assert_eq!(kept, stored);
    }

    #[test]
    fn removed_events_are_not_read_again_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        let events: Vec<_> = (1..=5).map(|n| (0, event(&n.to_string(), "x"))).collect();
        queue.append_events(&events).unwrap();
        // A forwarder reads the oldest each time, and removes what it took.
        let oldest = queue.read(0, 0, 2).unwrap();
        assert_eq!(seqs(&oldest), [1, 2]);
        queue.remove(0, &seqs(&oldest)).unwrap();
        assert_eq!(seqs(&queue.read(0, 0, 2).unwrap()), [3, 4, 5]);
    }

    /// A queue whose lane 0 holds events "0" to "first - 1" from one
    /// append, then event "first" from another.
    fn two_appends(dir: &Path, first: usize) -> Arc<Queue> {
        let queue = Queue::open(dir, &hooks()).unwrap();
        let chunk: Vec<_> = (0..first)
            .map(|n| (0, event(&n.to_string(), "x")))
            .collect();
        queue.append_events(&chunk).unwrap();
        queue
            .append_events(&[(0, event(&first.to_string(), "x"))])
            .unwrap();
        queue
    }

    /// The row at `key` of `table`, as stored.
    fn raw_row(queue: &Queue, table: &str, key: u64) -> Option<Vec<u8>> {
        queue
            .with_db(|db| {
                let txn = db.begin_read()?;
                let row = txn.open_table(rows_table(table))?.get(key)?;
                Ok(row.map(|row| row.value().to_vec()))
            })
            .unwrap()
    }

    /// Lets go of the events kept for the senders: reads come from the store.
    fn from_the_store(queue: &Queue) {
        (0..queue.lanes.len()).for_each(|lane| queue.fresh.forget(lane));
    }

    #[test]
    fn a_batch_may_take_part_of_a_row_and_the_rest_stays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = two_appends(dir.path(), 5);
        assert_eq!(rows_of(&queue), [(1, 5), (6, 1)], "one row per append");
        let (_, full) = queue.depth(0);
        from_the_store(&queue);

        // A read from the store ends where a row does.
        assert_eq!(seqs(&queue.read(0, 0, 2).unwrap()), [1, 2, 3, 4, 5]);
        // Reading from the middle of a row, across into the next.
        assert_eq!(seqs(&queue.read(0, 2, 10).unwrap()), [3, 4, 5, 6]);
        // A batch of the first two, then one out of order.
        queue.remove(0, &[2, 1]).unwrap();
        queue.remove(0, &[4]).unwrap();
        assert_eq!(
            rows_of(&queue),
            [(1, 2), (6, 1)],
            "written back under its key"
        );
        assert_eq!(seqs(&queue.read(0, 0, 10).unwrap()), [3, 5, 6]);
        assert_eq!(seqs(&queue.read(0, 3, 10).unwrap()), [5, 6]);
        let (events, bytes) = queue.depth(0);
        assert_eq!(events, 3);
        assert!(bytes < full);
        drop(queue);

        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        assert_eq!(
            queue.depth(0),
            (events, bytes),
            "counted from the rows as kept"
        );
        let read = queue.read(0, 0, 10).unwrap();
        assert_eq!(seqs(&read), [3, 5, 6]);
        assert_eq!(
            read.iter().map(|q| q.id().to_string()).collect::<Vec<_>>(),
            ["2", "4", "5"]
        );
        queue.remove(0, &[3, 5, 6]).unwrap();
        assert_eq!(queue.depth(0), (0, 0));
        assert!(rows_of(&queue).is_empty());
        queue.append_events(&[(0, event("6", "x"))]).unwrap();
        assert_eq!(seqs(&queue.read(0, 0, 10).unwrap()), [7], "sequences go on");
    }

    #[test]
    fn a_large_append_is_split_into_rows_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        let message = "m".repeat(1_000);
        let chunk: Vec<_> = (0..200)
            .map(|n| (0, event(&n.to_string(), &message)))
            .collect();
        queue.append_events(&chunk).unwrap();
        let rows = rows_of(&queue);
        assert!(rows.len() >= 3, "{rows:?}");
        assert_eq!(rows.iter().map(|(_, events)| events).sum::<u64>(), 200);
        let read = queue.read(0, 0, 1_000).unwrap();
        assert_eq!(seqs(&read), (1..=200).collect::<Vec<u64>>());
    }

    #[test]
    fn an_earlier_versions_rows_are_read_beside_this_ones() {
        let dir = tempfile::tempdir().unwrap();
        let old = EventJson::of(&event("old", "x"));
        {
            let queue = Queue::open(dir.path(), &[lane("a", 1_000_000, WhenFull::Pause)]).unwrap();
            put_raw(&queue, 1, old.as_bytes());
        }
        let queue = Queue::open(dir.path(), &[lane("a", 1_000_000, WhenFull::Pause)]).unwrap();
        assert_eq!(queue.depth(0), (1, old.as_bytes().len() as u64));
        queue
            .append_events(&[(0, event("new1", "x")), (0, event("new2", "x"))])
            .unwrap();
        assert_eq!(ids(&queue, 0), ["old", "new1", "new2"]);
        queue.remove(0, &[1, 2]).unwrap();
        assert_eq!(ids(&queue, 0), ["new2"]);
        assert_eq!(queue.depth(0).0, 1);
    }

    #[test]
    fn the_last_runs_offsets_skip_nothing_after_the_re_read_window() {
        let dir = tempfile::tempdir().unwrap();
        let file = SourceFile {
            dev: 1,
            ino: 2,
            generation: 0,
        };
        Queue::open(dir.path(), &hooks())
            .unwrap()
            .append(&lines_of(file, &[0, 100]))
            .unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        assert_eq!(queue.append(&lines_of(file, &[0])).unwrap(), [0, 0]);
        // A minute on: a line below the old offset is another file's.
        queue.appending.lock().unwrap().consult_until = Instant::now();
        assert_eq!(queue.append(&lines_of(file, &[0])).unwrap(), [1, 1]);
        assert!(queue.appending.lock().unwrap().last_run.is_empty());
    }

    #[test]
    fn journal_entries_are_placed_by_their_cursor_sequence_number_id() {
        let cursor = "s=9c4c2a0b;i=1a2b0;b=5f1e;m=141dd94240;t=660da8a60ca40;x=b658";
        let at = ReadAt::journal("journal", cursor, 0x1a2b0).unwrap();
        assert_eq!(&*at.source, "journal\njournal 9c4c2a0b");
        assert_eq!(at.offset, 0x1a2b0);
        assert_eq!(
            ReadAt::journal("journal", cursor, 0),
            None,
            "seqnum unknown"
        );
        assert_eq!(
            ReadAt::journal("journal", "i=1;b=5f1e", 1),
            None,
            "no seqnum id"
        );
        assert_ne!(
            ReadAt::journal("other", cursor, 1).unwrap().source,
            ReadAt::journal("journal", cursor, 1).unwrap().source
        );
    }

    #[test]
    fn the_oldest_sources_are_forgotten_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue
            .with_db(|db| {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(QUEUED_UP_TO)?;
                    for n in 0..REMEMBERED_SOURCES + 10 {
                        // Sources 0..10 were written longest ago.
                        table.insert(format!("s{n}").as_str(), (1, 1_000 + n.min(10)))?;
                    }
                    assert_eq!(forget_oldest_sources(&mut table)?, REMEMBERED_SOURCES);
                    assert!(table.get("s9")?.is_none());
                    assert!(table.get("s10")?.is_some());
                }
                Ok(txn.commit()?)
            })
            .unwrap();
    }

    #[test]
    fn a_drop_oldest_lane_drops_its_oldest_events_and_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let lanes = [
            lane("dead", 1_200, WhenFull::DropOldest),
            lane("live", 1_000_000, WhenFull::Pause),
        ];
        let queue = Queue::open(dir.path(), &lanes).unwrap();
        for n in 0..20 {
            let e = event(&n.to_string(), &format!("{n:03}{}", "x".repeat(300)));
            queue.append_events(&[(0, e.clone()), (1, e)]).unwrap();
            let (_, bytes) = queue.depth(0);
            assert!(bytes <= 1_200, "lane over its limit: {bytes}");
        }
        assert!(!queue.waiting_for_room());
        let kept: Vec<String> = queue
            .read(0, 0, 100)
            .unwrap()
            .iter()
            .map(|q| q.event().message[..3].to_string())
            .collect();
        assert_eq!(kept.last().map(String::as_str), Some("019"), "newest kept");
        let dropped = queue.dropped(0);
        assert_eq!(dropped as usize + kept.len(), 20, "{kept:?}");
        assert_eq!(kept[0], format!("{dropped:03}"), "the oldest went first");
        assert_eq!(queue.depth(1).0, 20, "the other lane keeps everything");
        assert_eq!(queue.dropped(1), 0);
        let (events, bytes) = queue.depth(0);
        drop(queue);

        // The count survives a restart, for status and the metric.
        let queue = Queue::open(dir.path(), &lanes).unwrap();
        assert_eq!(queue.dropped(0), dropped);
        assert_eq!(queue.depth(0), (events, bytes));
        drop(queue);
        let view = QueueView::open(dir.path()).unwrap().unwrap();
        assert_eq!(
            view.lane_state("dead", Duration::ZERO).unwrap().dropped,
            dropped
        );
    }

    #[test]
    fn a_drop_oldest_lane_keeps_the_newest_of_a_chunk_larger_than_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &[lane("a", 700, WhenFull::DropOldest)]).unwrap();
        queue.append_events(&[(0, event("old", "x"))]).unwrap();
        let chunk: Vec<_> = (0..4)
            .map(|n| (0, event(&format!("new{n}"), &"y".repeat(300))))
            .collect();
        queue.append_events(&chunk).unwrap();
        let ids: Vec<String> = queue
            .read(0, 0, 10)
            .unwrap()
            .iter()
            .map(|q| q.id().to_string())
            .collect();
        assert_eq!(ids.last().map(String::as_str), Some("new3"));
        assert!(queue.depth(0).1 <= 700, "{:?}", queue.depth(0));
        assert_eq!(queue.dropped(0) as usize + ids.len(), 5);

        // One event larger than the limit is still queued.
        queue
            .append_events(&[(0, event("huge", &"z".repeat(1_000)))])
            .unwrap();
        let ids: Vec<String> = queue
            .read(0, 0, 10)
            .unwrap()
            .iter()
            .map(|q| q.id().to_string())
            .collect();
        assert_eq!(ids, ["huge"]);
        assert_eq!(queue.dropped(0), 5);
    }

    #[test]
    fn a_full_lane_makes_append_wait_until_events_leave() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &[lane("a", 600, WhenFull::Pause)]).unwrap();
        queue
            .append_events(&[(0, event("1", &"x".repeat(300)))])
            .unwrap();
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                queue
                    .append_events(&[(0, event("2", &"y".repeat(300)))])
                    .unwrap()
            })
        };
        // The second append waits: the lane is full. Removing the first lets it in.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !queue.waiting_for_room() {
            assert!(std::time::Instant::now() < deadline, "append never waited");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(queue.depth(0).0, 1, "still waiting");
        let first = queue.read(0, 0, 1).unwrap();
        queue.remove(0, &[first[0].seq]).unwrap();
        writer.join().unwrap();
        assert!(!queue.waiting_for_room());
        assert_eq!(queue.read(0, 0, 10).unwrap()[0].id(), "2");
    }

    #[test]
    fn a_read_only_view_sees_what_the_agent_left_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(QueueView::open(dir.path()).unwrap().is_none());
        assert!(!dir.path().join("queue.redb").exists());
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue
            .append_events(&[(0, event("1", "x")), (0, event("2", "y"))])
            .unwrap();
        queue
            .record_attempt(0, SystemTime::now(), None, Duration::from_secs(60))
            .unwrap();
        queue.record_error(0, "503 Service Unavailable").unwrap();
        let err = QueueView::open(dir.path())
            .err()
            .expect("no reader beside the writer");
        assert!(
            err.to_string().contains("in use by a running agent"),
            "{err}"
        );
        let live = queue.lane_state(0, Duration::from_secs(60)).unwrap();
        drop(queue);

        let view = QueueView::open(dir.path()).unwrap().unwrap();
        let stored = view.lane_state("a", Duration::from_secs(60)).unwrap();
        for state in [&live, &stored] {
            assert_eq!((state.events, state.bytes), (live.events, live.bytes));
            assert_eq!(state.events, 2);
            assert_eq!(state.attempt_ages.len(), 1);
            assert_eq!(
                state.last_error.as_ref().unwrap().message,
                "503 Service Unavailable"
            );
            // When the line was read (`ingested`), not when it says it happened.
            assert_eq!(
                state.oldest,
                Some(humantime::parse_rfc3339("2026-11-22T10:00:01.020Z").unwrap())
            );
        }
        let unknown = view.lane_state("never", Duration::from_secs(60)).unwrap();
        assert_eq!(unknown.events, 0);
        assert!(unknown.last_error.is_none());
    }

    #[test]
    fn attempts_are_remembered_within_their_window_at_their_answer_time() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        let window = Duration::from_secs(60);
        let now = SystemTime::now();
        for _ in 0..3 {
            queue.record_attempt(0, now, None, window).unwrap();
        }
        // An attempt charged long ago (outside the window) and answered now counts from its answer.
        let charged = queue
            .record_attempt(0, now - Duration::from_secs(600), None, window)
            .unwrap();
        queue.record_attempt(0, now, Some(charged), window).unwrap();
        drop(queue);
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        let times = queue.recent_attempts(0, window).unwrap();
        assert_eq!(times.len(), 4, "{times:?}");
        // Same-microsecond records are kept apart by a microsecond each.
        assert!(
            times
                .iter()
                .all(|t| (micros(now)..micros(now) + 4).contains(&micros(*t))),
            "{times:?}"
        );
        assert!(queue.recent_attempts(1, window).unwrap().is_empty());
    }

    /// Writes `bytes` as row `seq` of lane 0, as a damaged store would hold it.
    fn put_raw(queue: &Queue, seq: u64, bytes: &[u8]) {
        queue
            .with_db(|db| {
                let txn = db.begin_write()?;
                txn.open_table(TableDefinition::<u64, &[u8]>::new("events:a"))?
                    .insert(seq, bytes)?;
                Ok(txn.commit()?)
            })
            .unwrap();
    }

    #[test]
    fn an_unreadable_row_is_set_aside_and_frees_its_room() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = vec![b'{'; 500];
        {
            let queue = Queue::open(dir.path(), &[lane("a", 600, WhenFull::Pause)]).unwrap();
            put_raw(&queue, 1, &garbage);
        }
        // Counted at open: the lane is as good as full.
        let queue = Queue::open(dir.path(), &[lane("a", 600, WhenFull::Pause)]).unwrap();
        assert_eq!(queue.depth(0), (1, 500));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let appended = queue.append_events(&[(0, event("1", &"y".repeat(200)))]);
                done_tx.send(appended.is_ok()).unwrap();
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !queue.waiting_for_room() {
            assert!(std::time::Instant::now() < deadline, "append never waited");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The delivery task reads: the garbage is set aside and its room freed.
        assert!(queue.read(0, 0, 10).unwrap().is_empty());
        let appended = done_rx.recv_timeout(Duration::from_secs(10));
        if appended.is_err() {
            queue.close_for_appends();
        }
        writer.join().unwrap();
        assert_eq!(appended, Ok(true), "the unreadable row kept the lane full");
        let read = queue.read(0, 0, 10).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].id(), "1");
        assert_eq!(queue.depth(0).0, 1, "the garbage no longer counts");
        // And the row is kept, not dropped.
        assert_eq!(raw_row(&queue, "unreadable:a", 1), Some(garbage));
    }

    #[test]
    fn a_damaged_row_is_set_aside_whole_with_the_room_of_all_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let queue = two_appends(dir.path(), 3);
        let mut damaged = raw_row(&queue, "events:a", 1).unwrap();
        let last = damaged.len() - 2;
        damaged[last] ^= 0x20;
        put_raw(&queue, 1, &damaged);
        drop(queue);

        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        assert_eq!(queue.depth(0).0, 4, "its layout still counts its events");
        assert_eq!(ids(&queue, 0), ["3"]);
        assert_eq!(
            queue.depth(0).0,
            1,
            "the damaged row's events no longer count"
        );
        assert_eq!(
            raw_row(&queue, "unreadable:a", 1),
            Some(damaged),
            "kept for a human"
        );
    }

    #[test]
    fn sizes_are_recounted_from_the_store_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue
            .append_events(&[(0, event("1", "x")), (0, event("2", "y"))])
            .unwrap();
        let before = queue.depth(0);
        // As if a failed transaction had been counted: the store is the truth.
        queue.usage.lock().unwrap().bytes[0] = 1 << 40;
        queue.reopen(0);
        // The next write recounts.
        queue.remove(0, &[]).unwrap();
        assert_eq!(queue.depth(0), before);
        let read = queue.read(0, 0, 10).unwrap();
        assert_eq!(read.len(), 2, "the reopened handle serves reads");
        let delivered: Vec<u64> = read.iter().map(|q| q.seq).collect();
        queue.remove(0, &delivered).unwrap();
        assert_eq!(queue.depth(0).0, 0);
        // Emptied, then reopened: new events still come after those a
        // delivery task already took.
        queue.reopen(1);
        queue.append_events(&[(0, event("3", "z"))]).unwrap();
        let after = queue.read(0, delivered[1], 10).unwrap();
        assert_eq!(after.len(), 1, "a reused sequence would be skipped");
        // A second caller failing on the same old handle does not reopen again.
        queue.reopen(1);
        assert_eq!(queue.handle.read().unwrap().generation, 2);
    }

    #[test]
    fn sizes_answer_while_an_append_waits_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue.append_events(&[(0, event("1", "x"))]).unwrap();
        let before = queue.depth(0);
        // A slow disk: the next append's write waits until this is released.
        let slow_disk = SlowDisk::hold(&queue);
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.append_events(&[(0, event("2", "y"))]).unwrap())
        };
        // What status and /metrics ask, from the async workers.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(200) {
            assert_eq!(queue.depth(0), before);
        }
        assert!(
            !slow_disk.was_released(),
            "the sizes waited for the blocked write"
        );
        slow_disk.release();
        writer.join().unwrap();
        assert_eq!(queue.depth(0).0, 2);
    }

    #[test]
    fn closing_ends_an_append_waiting_for_room_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &[lane("a", 600, WhenFull::Pause)]).unwrap();
        queue
            .append_events(&[(0, event("1", &"x".repeat(300)))])
            .unwrap();
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.append_events(&[(0, event("2", &"y".repeat(300)))]))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !queue.waiting_for_room() {
            assert!(std::time::Instant::now() < deadline, "append never waited");
            std::thread::sleep(Duration::from_millis(10));
        }
        queue.close_for_appends();
        let err = writer
            .join()
            .unwrap()
            .expect_err("a closed queue takes nothing");
        assert!(err.is_closed(), "{err}");
        assert!(!queue.waiting_for_room());
        assert_eq!(queue.depth(0).0, 1, "the waiting chunk was not queued");
        assert!(queue
            .append_events(&[(0, event("3", "z"))])
            .unwrap_err()
            .is_closed());
        // Delivery goes on while stopping.
        let first = queue.read(0, 0, 10).unwrap();
        queue.remove(0, &[first[0].seq]).unwrap();
        assert_eq!(queue.depth(0).0, 0);
    }

    #[cfg(unix)]
    #[test]
    fn the_queue_file_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("queue.redb");
        // As an older version left it.
        std::fs::write(&file, b"").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Queue::open(dir.path(), &hooks()).unwrap());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
