//! The events each lane's latest appends committed, kept in memory for the
//! lane's sender: read back from the store, an event cost a read of its
//! row (redb reads a row of up to 64 KiB whole, into a zero-filled buffer,
//! and its checksum is checked), and a sender that keeps up takes each
//! event moments after it was written. These are copies of what the store
//! holds: a read that does not find its next sequence number here reads the
//! store, and nothing is removed from the store by being taken from here.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::Queued;

/// What all lanes keep at most, in bytes of JSON, shared out evenly: with
/// one webhook, more than a body of the default `max_body_bytes`, so a
/// sender that keeps up never reads the store. A sender that falls behind
/// (or a webhook that is down) leaves the events beyond its share to the
/// store, and holds no more than its share meanwhile.
const BYTES: usize = 1 << 20;

pub(super) struct Fresh {
    lanes: Vec<Mutex<Run>>,
    /// What each lane keeps at most.
    lane_bytes: usize,
}

/// Events of one lane with sequence numbers one after another.
#[derive(Default)]
struct Run {
    events: VecDeque<Queued>,
    bytes: usize,
    /// The highest sequence number removed from the store: an append that
    /// committed before a removal of its events may hand them here after.
    removed_through: u64,
}

impl Fresh {
    pub(super) fn new(lanes: usize) -> Fresh {
        Fresh {
            lanes: (0..lanes).map(|_| Mutex::default()).collect(),
            lane_bytes: BYTES / lanes.max(1),
        }
    }

    fn run(&self, lane: usize) -> std::sync::MutexGuard<'_, Run> {
        self.lanes[lane].lock().expect("fresh events")
    }

    /// `events` of `lane`, in sequence order, were committed. Kept while
    /// the lane has room, and only after the events before them: a run
    /// with a gap would hand out events out of order.
    pub(super) fn committed(&self, lane: usize, events: impl IntoIterator<Item = Queued>) {
        let mut run = self.run(lane);
        let removed_through = run.removed_through;
        for event in events.into_iter().filter(|e| e.seq > removed_through) {
            if run
                .events
                .back()
                .is_some_and(|last| last.seq + 1 != event.seq)
            {
                run.events.clear();
                run.bytes = 0;
            }
            let size = event.json.as_bytes().len();
            if run.bytes + size > self.lane_bytes {
                return;
            }
            run.bytes += size;
            run.events.push_back(event);
        }
    }

    /// Takes up to `limit` events of `lane` from sequence `after + 1` on,
    /// or `None` when this run does not start there (the store has them).
    /// Events at or below `after` are let go: the reader is past them.
    pub(super) fn take(&self, lane: usize, after: u64, limit: usize) -> Option<Vec<Queued>> {
        let mut run = self.run(lane);
        let passed = run.events.partition_point(|event| event.seq <= after);
        run.drain_front(passed);
        if run.events.front()?.seq != after + 1 {
            return None;
        }
        Some(run.drain_front(limit).collect())
    }

    /// Lets go of `lane`'s events at or below `seq`: they left the store,
    /// and a reader starting below them must not find them here.
    pub(super) fn removed_through(&self, lane: usize, seq: u64) {
        let mut run = self.run(lane);
        run.removed_through = run.removed_through.max(seq);
        let gone = run.events.partition_point(|event| event.seq <= seq);
        run.drain_front(gone);
    }

    /// Lets go of all of `lane`'s events: the store dropped some to make room.
    pub(super) fn forget(&self, lane: usize) {
        let mut run = self.run(lane);
        run.events.clear();
        run.bytes = 0;
    }
}

impl Run {
    /// The first `count` events, out of the run once the drain is dropped
    /// (collected by a reader, let go otherwise).
    fn drain_front(&mut self, count: usize) -> std::collections::vec_deque::Drain<'_, Queued> {
        let count = count.min(self.events.len());
        self.bytes -= self
            .events
            .range(..count)
            .map(|e| e.json.as_bytes().len())
            .sum::<usize>();
        self.events.drain(..count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn queued(seq: u64) -> Queued {
        Queued::new(seq, &Event::sample(&format!("e{seq}"), "line"))
    }

    fn seqs(events: Option<Vec<Queued>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn a_reader_takes_the_run_from_its_next_sequence_only() {
        let fresh = Fresh::new(2);
        fresh.committed(1, (5..=9).map(queued));
        assert_eq!(seqs(fresh.take(0, 4, 10)), None, "another lane");
        assert_eq!(seqs(fresh.take(1, 3, 10)), None, "4 is only in the store");
        assert_eq!(seqs(fresh.take(1, 4, 2)), Some(vec![5, 6]));
        assert_eq!(
            seqs(fresh.take(1, 7, 10)),
            Some(vec![8, 9]),
            "7 was read from the store"
        );
        assert_eq!(seqs(fresh.take(1, 9, 10)), None, "nothing left");
    }

    #[test]
    fn a_gap_starts_a_new_run() {
        let fresh = Fresh::new(1);
        fresh.committed(0, (1..=3).map(queued));
        fresh.committed(0, (5..=6).map(queued));
        assert_eq!(seqs(fresh.take(0, 0, 10)), None);
        assert_eq!(seqs(fresh.take(0, 4, 10)), Some(vec![5, 6]));
    }

    #[test]
    fn a_full_lane_keeps_the_oldest_and_the_store_the_rest() {
        let fresh = Fresh::new(2);
        let mut bytes = 0;
        let fits = (1..)
            .take_while(|&seq| {
                bytes += queued(seq).json.as_bytes().len();
                bytes <= BYTES / 2
            })
            .count() as u64;
        fresh.committed(0, (1..=fits + 10).map(queued));
        let taken = seqs(fresh.take(0, 0, usize::MAX)).unwrap();
        assert_eq!(taken, (1..=fits).collect::<Vec<_>>());
        // The events past the limit were not kept, so what follows them is
        // not either: it would leave a gap.
        fresh.committed(0, [queued(fits + 11)]);
        assert_eq!(seqs(fresh.take(0, fits, 10)), None);
        assert_eq!(seqs(fresh.take(0, fits + 10, 10)), Some(vec![fits + 11]));
    }

    #[test]
    fn removed_and_forgotten_events_are_not_handed_out() {
        let fresh = Fresh::new(1);
        fresh.committed(0, (1..=5).map(queued));
        fresh.removed_through(0, 2);
        assert_eq!(seqs(fresh.take(0, 0, 10)), None, "1 and 2 left the store");
        assert_eq!(seqs(fresh.take(0, 2, 1)), Some(vec![3]));
        fresh.forget(0);
        assert_eq!(seqs(fresh.take(0, 3, 10)), None);
        // An append that committed 6 and 7 before they were sent and
        // removed, and only hands them over now.
        fresh.removed_through(0, 7);
        fresh.committed(0, (6..=8).map(queued));
        assert_eq!(seqs(fresh.take(0, 0, 10)), None);
        assert_eq!(seqs(fresh.take(0, 7, 10)), Some(vec![8]));
    }
}
