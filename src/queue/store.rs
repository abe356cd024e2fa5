//! The durable queue: events wait on disk (redb, `<state_dir>/queue.redb`)
//! until their webhook took them.
//!
//! Each webhook has its own table of `sequence → event JSON`, so one that is
//! down only fills its own, up to `max_queue_bytes`; then `append` waits and
//! back-pressure reaches the tailer (the log files are the buffer). Events are
//! appended in one transaction per chunk of lines, before the lines' offsets
//! may be committed, so a crash at any moment loses nothing. Lines read again
//! after a crash (between the queue write and the checkpoint write) yield
//! events with the same ids, which `append` recognises and skips: after a
//! restart only batches that were in flight are sent twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::event::Event;

/// Ids of recently queued events, and their order for forgetting the oldest.
const RECENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("recent_ids");
const RECENT_ORDER: TableDefinition<u64, &str> = TableDefinition::new("recent_order");
/// Per webhook name: its last delivery error, as JSON ([`LastError`]).
const LAST_ERRORS: TableDefinition<&str, &[u8]> = TableDefinition::new("last_errors");
/// How many ids are remembered: far more than the lines between two
/// checkpoint writes, which is what can be read twice.
const REMEMBERED_IDS: u64 = 200_000;

/// The queue is written once and read once per event; a large page cache
/// would only cost memory on a small server.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("queue {path}: {message}")]
pub struct QueueError {
    path: String,
    message: String,
    /// Another process has the file open for writing.
    in_use: bool,
}

impl QueueError {
    /// Another process (an agent, or `tailhook send` while none runs) has
    /// the queue open: it may be free again in a moment.
    pub fn is_in_use(&self) -> bool {
        self.in_use
    }
}

/// An event taken from a webhook's queue.
pub struct Queued {
    pub seq: u64,
    pub event: Arc<Event>,
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
}

struct Lane {
    name: String,
    table: String,
    attempts: String,
    max_bytes: u64,
    /// Wakes the webhook's delivery task when events arrive.
    arrived: Arc<Notify>,
}

/// Sizes of what each lane holds, guarded together so `append` can wait for room.
struct Usage {
    bytes: Vec<u64>,
    events: Vec<u64>,
    next_seq: Vec<u64>,
    recent_counter: u64,
}

pub struct Queue {
    db: Database,
    path: String,
    lanes: Vec<Lane>,
    usage: Mutex<Usage>,
    room: Condvar,
    /// An `append` is waiting for room: the tailer is paused on purpose.
    waiting_for_room: AtomicBool,
}

impl Queue {
    /// Opens (or creates) the queue for `webhooks` (name, max bytes) in `state_dir`.
    pub fn open(state_dir: &Path, webhooks: &[(String, u64)]) -> Result<Arc<Queue>, QueueError> {
        let file = state_dir.join("queue.redb");
        let path = file.display().to_string();
        let fail = |message: String| QueueError {
            path: path.clone(),
            message,
            in_use: false,
        };
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => QueueError {
                    in_use: true,
                    ..fail("in use by another process (an agent, or `tailhook send`)".into())
                },
                other => fail(format!("cannot open: {other}")),
            })?;
        let lanes: Vec<Lane> = webhooks
            .iter()
            .map(|(name, max_bytes)| Lane {
                name: name.clone(),
                table: format!("events:{name}"),
                attempts: format!("attempts:{name}"),
                max_bytes: *max_bytes,
                arrived: Arc::new(Notify::new()),
            })
            .collect();
        let mut usage = Usage {
            bytes: vec![],
            events: vec![],
            next_seq: vec![],
            recent_counter: 0,
        };
        let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
        {
            for lane in &lanes {
                let table = txn
                    .open_table(TableDefinition::<u64, &[u8]>::new(&lane.table))
                    .map_err(|e| fail(e.to_string()))?;
                let (mut bytes, mut events, mut last) = (0, 0, 0);
                for entry in table.iter().map_err(|e| fail(e.to_string()))? {
                    let (seq, json) = entry.map_err(|e| fail(e.to_string()))?;
                    bytes += json.value().len() as u64;
                    events += 1;
                    last = seq.value();
                }
                usage.bytes.push(bytes);
                usage.events.push(events);
                usage.next_seq.push(last + 1);
                txn.open_table(TableDefinition::<u64, ()>::new(&lane.attempts))
                    .map_err(|e| fail(e.to_string()))?;
            }
            txn.open_table(RECENT_IDS)
                .map_err(|e| fail(e.to_string()))?;
            txn.open_table(LAST_ERRORS)
                .map_err(|e| fail(e.to_string()))?;
            let order = txn
                .open_table(RECENT_ORDER)
                .map_err(|e| fail(e.to_string()))?;
            usage.recent_counter = order
                .last()
                .map_err(|e| fail(e.to_string()))?
                .map_or(0, |(k, _)| k.value() + 1);
        }
        txn.commit().map_err(|e| fail(e.to_string()))?;
        for (lane, events) in lanes.iter().zip(&usage.events) {
            if *events > 0 {
                tracing::info!(queue = %lane.table, events, "events kept from the last run");
            }
        }
        Ok(Arc::new(Queue {
            db,
            path,
            lanes,
            usage: Mutex::new(usage),
            room: Condvar::new(),
            waiting_for_room: AtomicBool::new(false),
        }))
    }

    fn fail(&self, error: impl std::fmt::Display) -> QueueError {
        QueueError {
            path: self.path.clone(),
            message: error.to_string(),
            in_use: false,
        }
    }

    pub fn arrivals(&self, lane: usize) -> Arc<Notify> {
        self.lanes[lane].arrived.clone()
    }

    /// Events and bytes waiting for `lane`'s webhook.
    pub fn depth(&self, lane: usize) -> (u64, u64) {
        let usage = self.usage.lock().expect("queue usage");
        (usage.events[lane], usage.bytes[lane])
    }

    /// Whether an `append` is waiting for a full lane to make room (and so
    /// the tailer that called it is paused, not stuck).
    pub fn waiting_for_room(&self) -> bool {
        self.waiting_for_room.load(Ordering::Relaxed)
    }

    /// Appends `events` (lane, event) in one durable transaction, skipping
    /// events whose id was queued before; returns how many each lane took.
    /// Waits while a lane they go to is full: that pauses the tailer, which
    /// calls this.
    pub fn append(&self, events: &[(usize, Arc<Event>)]) -> Result<Vec<u64>, QueueError> {
        let mut taken = vec![0; self.lanes.len()];
        if events.is_empty() {
            return Ok(taken);
        }
        let encoded: Vec<(usize, &Event, Vec<u8>)> = events
            .iter()
            .map(|(lane, event)| {
                (
                    *lane,
                    &**event,
                    serde_json::to_vec(&**event).expect("events serialize"),
                )
            })
            .collect();
        let mut usage = self.usage.lock().expect("queue usage");
        let mut warned = vec![false; self.lanes.len()];
        loop {
            let mut adding = vec![0u64; self.lanes.len()];
            for (lane, _, json) in &encoded {
                adding[*lane] += json.len() as u64;
            }
            // A lane that holds nothing always takes the chunk, however large.
            let full = (0..self.lanes.len()).find(|&l| {
                adding[l] > 0
                    && usage.bytes[l] > 0
                    && usage.bytes[l] + adding[l] > self.lanes[l].max_bytes
            });
            let Some(lane) = full else { break };
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
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut added = Vec::new();
        {
            let mut ids = txn.open_table(RECENT_IDS).map_err(|e| self.fail(e))?;
            let mut order = txn.open_table(RECENT_ORDER).map_err(|e| self.fail(e))?;
            let mut tables = HashMap::new();
            for (lane, event, json) in &encoded {
                let key = format!("{lane}/{}", event.id);
                if ids.get(key.as_str()).map_err(|e| self.fail(e))?.is_some() {
                    continue;
                }
                let counter = usage.recent_counter;
                usage.recent_counter += 1;
                ids.insert(key.as_str(), counter)
                    .map_err(|e| self.fail(e))?;
                order
                    .insert(counter, key.as_str())
                    .map_err(|e| self.fail(e))?;
                if !tables.contains_key(lane) {
                    let table = txn
                        .open_table(TableDefinition::<u64, &[u8]>::new(&self.lanes[*lane].table))
                        .map_err(|e| self.fail(e))?;
                    tables.insert(*lane, table);
                }
                let seq = usage.next_seq[*lane];
                tables
                    .get_mut(lane)
                    .expect("opened above")
                    .insert(seq, json.as_slice())
                    .map_err(|e| self.fail(e))?;
                usage.next_seq[*lane] += 1;
                added.push((*lane, json.len() as u64));
            }
            let forget_below = usage.recent_counter.saturating_sub(REMEMBERED_IDS);
            loop {
                let oldest = order
                    .first()
                    .map_err(|e| self.fail(e))?
                    .map(|(c, k)| (c.value(), k.value().to_string()));
                let Some((counter, key)) = oldest.filter(|(counter, _)| *counter < forget_below)
                else {
                    break;
                };
                order.remove(counter).map_err(|e| self.fail(e))?;
                ids.remove(key.as_str()).map_err(|e| self.fail(e))?;
            }
        }
        txn.commit().map_err(|e| self.fail(e))?;
        for (lane, bytes) in added {
            usage.bytes[lane] += bytes;
            usage.events[lane] += 1;
            taken[lane] += 1;
            self.lanes[lane].arrived.notify_one();
        }
        Ok(taken)
    }

    /// Up to `limit` events of `lane` with a sequence above `after`, oldest first.
    pub fn read(&self, lane: usize, after: u64, limit: usize) -> Result<Vec<Queued>, QueueError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&self.lanes[lane].table))
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for entry in table
            .range(after + 1..)
            .map_err(|e| self.fail(e))?
            .take(limit)
        {
            let (seq, json) = entry.map_err(|e| self.fail(e))?;
            match serde_json::from_slice::<Event>(json.value()) {
                Ok(event) => out.push(Queued {
                    seq: seq.value(),
                    event: Arc::new(event),
                }),
                Err(e) => {
                    tracing::error!(queue = %self.lanes[lane].table, seq = seq.value(), error = %e, "unreadable event in the queue; skipped")
                }
            }
        }
        Ok(out)
    }

    /// Removes delivered (or dead-lettered) events and wakes a waiting `append`.
    pub fn remove(&self, lane: usize, seqs: &[u64]) -> Result<(), QueueError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut freed = 0;
        let mut removed = 0;
        {
            let mut table = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(&self.lanes[lane].table))
                .map_err(|e| self.fail(e))?;
            for seq in seqs {
                if let Some(json) = table.remove(*seq).map_err(|e| self.fail(e))? {
                    freed += json.value().len() as u64;
                    removed += 1;
                }
            }
        }
        txn.commit().map_err(|e| self.fail(e))?;
        let mut usage = self.usage.lock().expect("queue usage");
        usage.bytes[lane] -= freed;
        usage.events[lane] -= removed;
        self.room.notify_all();
        Ok(())
    }

    /// Attempts made on `lane`'s webhook within `window` (for the rate
    /// limiter after a restart), as ages.
    pub fn recent_attempts(
        &self,
        lane: usize,
        window: Duration,
    ) -> Result<Vec<Duration>, QueueError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        attempt_ages(&txn, &self.lanes[lane].attempts, window).map_err(|e| self.fail(e))
    }

    /// Depth, oldest event, attempts within `window` and last error of `lane`.
    pub fn lane_state(&self, lane: usize, window: Duration) -> Result<LaneState, QueueError> {
        let (events, bytes) = self.depth(lane);
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let lane = &self.lanes[lane];
        Ok(LaneState {
            events,
            bytes,
            ..remembered(&txn, &lane.name, window).map_err(|e| self.fail(e))?
        })
    }

    /// When `lane`'s oldest queued event was read (for the metrics' age gauge).
    pub fn oldest(&self, lane: usize) -> Result<Option<SystemTime>, QueueError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        oldest_event(&txn, &self.lanes[lane].table).map_err(|e| self.fail(e))
    }

    /// Keeps `message` as `lane`'s last error.
    pub fn record_error(&self, lane: usize, message: &str) -> Result<(), QueueError> {
        let record = LastError {
            time: crate::event::rfc3339_now(),
            message: message.to_string(),
        };
        let json = serde_json::to_vec(&record).expect("errors serialize");
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        txn.open_table(LAST_ERRORS)
            .map_err(|e| self.fail(e))?
            .insert(self.lanes[lane].name.as_str(), json.as_slice())
            .map_err(|e| self.fail(e))?;
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Records an attempt on `lane`'s webhook, forgetting those older than `window`.
    pub fn record_attempt(&self, lane: usize, window: Duration) -> Result<(), QueueError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn
                .open_table(TableDefinition::<u64, ()>::new(&self.lanes[lane].attempts))
                .map_err(|e| self.fail(e))?;
            let mut at = micros_now();
            while table.get(at).map_err(|e| self.fail(e))?.is_some() {
                at += 1;
            }
            table.insert(at, ()).map_err(|e| self.fail(e))?;
            let before = at.saturating_sub(window.as_micros() as u64);
            table
                .retain_in(..before, |_, ()| false)
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
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
        };
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let (mut events, mut bytes) = (0, 0);
        match txn.open_table(TableDefinition::<u64, &[u8]>::new(&format!(
            "events:{name}"
        ))) {
            Ok(table) => {
                for entry in table.iter().map_err(|e| fail(e.into()))? {
                    let (_, json) = entry.map_err(|e| fail(e.into()))?;
                    events += 1;
                    bytes += json.value().len() as u64;
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(fail(e.into())),
        }
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
    Ok(LaneState {
        oldest: oldest_event(txn, &format!("events:{name}"))?,
        attempt_ages: attempt_ages(txn, &format!("attempts:{name}"), window)?,
        last_error,
        ..LaneState::default()
    })
}

fn oldest_event(txn: &ReadTransaction, table: &str) -> Result<Option<SystemTime>, redb::Error> {
    let table = match txn.open_table(TableDefinition::<u64, &[u8]>::new(table)) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some((_, json)) = table.first()? else {
        return Ok(None);
    };
    // `ingested`, not `time`: a backfilled line can state a time days old.
    // An event queued before events carried `ingested` has its read time
    // in `time`.
    Ok(serde_json::from_slice::<Event>(json.value())
        .ok()
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

/// Ages of the attempts recorded in `table` within `window`.
fn attempt_ages(
    txn: &ReadTransaction,
    table: &str,
    window: Duration,
) -> Result<Vec<Duration>, redb::Error> {
    let now = micros_now();
    let since = now.saturating_sub(window.as_micros() as u64);
    let table = match txn.open_table(TableDefinition::<u64, ()>::new(table)) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut ages = Vec::new();
    for entry in table.range(since..)? {
        let (at, ()) = entry.map(|(k, v)| (k.value(), v.value()))?;
        ages.push(Duration::from_micros(now.saturating_sub(at)));
    }
    Ok(ages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, message: &str) -> Arc<Event> {
        Arc::new(Event::sample(id, message))
    }

    fn hooks() -> Vec<(String, u64)> {
        vec![("a".into(), 1_000_000), ("b".into(), 1_000_000)]
    }

    #[test]
    fn events_survive_reopening_and_leave_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue
            .append(&[
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
            read.iter()
                .map(|q| q.event.message.as_str())
                .collect::<Vec<_>>(),
            vec!["x", "y"]
        );
        assert_eq!(queue.read(0, read[0].seq, 10).unwrap().len(), 1);
        queue.remove(0, &[read[0].seq]).unwrap();
        assert_eq!(queue.depth(0).0, 1);
        assert_eq!(queue.depth(1).0, 1, "each webhook has its own copy");
        drop(queue);
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        assert_eq!(queue.read(0, 0, 10).unwrap()[0].event.message, "y");
    }

    #[test]
    fn an_event_queued_before_is_not_queued_again() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue.append(&[(0, event("same", "x"))]).unwrap();
        let first = queue.read(0, 0, 10).unwrap();
        queue.remove(0, &[first[0].seq]).unwrap();
        // Read again after a crash, even once delivered: still skipped.
        queue
            .append(&[(0, event("same", "x")), (0, event("new", "y"))])
            .unwrap();
        let read = queue.read(0, 0, 10).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].event.id, "new");
    }

    #[test]
    fn a_full_lane_makes_append_wait_until_events_leave() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &[("a".into(), 600)]).unwrap();
        queue.append(&[(0, event("1", &"x".repeat(300)))]).unwrap();
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.append(&[(0, event("2", &"y".repeat(300)))]).unwrap())
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
        assert_eq!(queue.read(0, 0, 10).unwrap()[0].event.id, "2");
    }

    #[test]
    fn a_read_only_view_sees_what_the_agent_left_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(QueueView::open(dir.path()).unwrap().is_none());
        assert!(!dir.path().join("queue.redb").exists());
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        queue
            .append(&[(0, event("1", "x")), (0, event("2", "y"))])
            .unwrap();
        queue.record_attempt(0, Duration::from_secs(60)).unwrap();
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
    fn attempts_are_remembered_within_their_window() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        for _ in 0..3 {
            queue.record_attempt(0, Duration::from_secs(60)).unwrap();
        }
        drop(queue);
        let queue = Queue::open(dir.path(), &hooks()).unwrap();
        let ages = queue.recent_attempts(0, Duration::from_secs(60)).unwrap();
        assert_eq!(ages.len(), 3);
        assert!(ages.iter().all(|a| *a < Duration::from_secs(5)));
        assert!(queue
            .recent_attempts(1, Duration::from_secs(60))
            .unwrap()
            .is_empty());
    }
}
