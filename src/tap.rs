//! `tailhook tap`: the last events the agent queued or sent and what became
//! of them, kept in a bounded ring in memory (nothing on disk), and the same
//! changes live for `--follow`.
//!
//! An event enters the ring as `waiting` when it is queued for a webhook and
//! turns `sent` or `dead_lettered` when its batch settles. An event that
//! settles after it left the ring (or was queued by an earlier run) enters
//! again with its outcome, so the ring always shows the latest news.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::event::{rfc3339_seconds, Event, EventJson};
use crate::queue::Queued;

/// Events the ring keeps; `tap -n` asks for at most this many.
pub const CAPACITY: usize = 1000;

/// Changes a `--follow` client may fall behind by before it misses some.
const LIVE_BACKLOG: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Queued on disk, not accepted by the webhook yet.
    Waiting,
    Sent,
    DeadLettered,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Waiting => "waiting",
            Outcome::Sent => "sent",
            Outcome::DeadLettered => "dead-lettered",
        })
    }
}

/// One event of the ring, as `tap` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tapped {
    pub webhook: String,
    pub outcome: Outcome,
    /// When the event got this outcome (RFC 3339, UTC).
    pub at: String,
    pub event: Event,
}

struct Entry {
    lane: usize,
    outcome: Outcome,
    /// When it got its outcome; formatted only when shown.
    at: SystemTime,
    /// Decoded only when shown.
    event: EventJson,
    /// Its id's [`id_key`].
    key: u128,
}

/// An event id as the ring's key: its 128-bit hash, where the id itself
/// would be an allocation per event queued.
fn id_key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Per lane: the serial number of each waiting event by [`id_key`]. The
/// keys are hashes already: a cheap hash of them spreads them as well as
/// SipHash, which was a third of the ring's cost per event.
type Waiting = HashMap<u128, u64, rustc_hash::FxBuildHasher>;

#[derive(Clone, Copy)]
struct Change {
    at: SystemTime,
    followed: bool,
}

/// The entries, oldest first, and where each lane's waiting ones are: a
/// batch settling finds its events without a pass over the ring each.
struct Ring {
    entries: VecDeque<Entry>,
    /// The serial number of `entries[0]`; each entry pushed takes the next.
    first: u64,
    /// Per lane: event id (by [`id_key`]) → serial number of its latest
    /// waiting entry.
    waiting: Vec<Waiting>,
}

/// The ring of one agent, shared by the rules stage (queued), the delivery
/// tasks (settled) and the control socket (read, followed).
pub struct Tap {
    /// Webhook names by lane.
    webhooks: Vec<String>,
    ring: Mutex<Ring>,
    /// Boxed: the channel allocates all its slots at the start, each the
    /// size of what it carries (a third of a megabyte for `Tapped` itself).
    live: broadcast::Sender<Box<Tapped>>,
}

impl Tap {
    pub fn new(webhooks: Vec<String>) -> Tap {
        let lanes = webhooks.len();
        Tap {
            webhooks,
            ring: Mutex::new(Ring {
                entries: VecDeque::with_capacity(CAPACITY),
                first: 0,
                waiting: vec![Waiting::default(); lanes],
            }),
            live: broadcast::channel(LIVE_BACKLOG).0,
        }
    }

    /// `events` were queued for the webhook at `lane`.
    pub fn queued<'a>(&self, events: impl IntoIterator<Item = (usize, &'a EventJson)>) {
        let events: Vec<(usize, &EventJson)> = events.into_iter().collect();
        let mut ring = self.ring.lock().expect("tap ring");
        let change = self.change();
        // Unfollowed, only the last `CAPACITY` stay: the others (a backlog
        // queues thousands at a time) would only pass through the ring.
        let skipped = if change.followed {
            0
        } else {
            events.len().saturating_sub(CAPACITY)
        };
        for &(lane, event) in &events[skipped..] {
            let key = id_key(&event.id());
            self.push(
                &mut ring,
                lane,
                Outcome::Waiting,
                event.clone(),
                key,
                change,
            );
        }
    }

    /// `events` of the webhook at `lane` were accepted or dead-lettered.
    pub fn settled<'a>(
        &self,
        lane: usize,
        outcome: Outcome,
        events: impl IntoIterator<Item = &'a Queued>,
    ) {
        let mut ring = self.ring.lock().expect("tap ring");
        let change = self.change();
        for event in events {
            let key = id_key(&event.id());
            let known = ring.waiting[lane].remove(&key);
            match known {
                Some(serial) => {
                    let index = (serial - ring.first) as usize;
                    let entry = &mut ring.entries[index];
                    entry.outcome = outcome;
                    entry.at = change.at;
                    if change.followed {
                        self.tell_followers(entry);
                    }
                }
                None => self.push(&mut ring, lane, outcome, event.json.clone(), key, change),
            }
        }
    }

    /// The last `count` events (of `webhook`, or of all), oldest first, and
    /// a receiver of every change after them: taken together under the
    /// lock, so a follower neither misses nor repeats one.
    pub fn last_and_follow(
        &self,
        webhook: Option<&str>,
        count: usize,
    ) -> (Vec<Tapped>, broadcast::Receiver<Box<Tapped>>) {
        let ring = self.ring.lock().expect("tap ring");
        let mut last: Vec<Tapped> = ring
            .entries
            .iter()
            .rev()
            .filter(|e| webhook.is_none_or(|name| self.webhooks[e.lane] == name))
            .take(count)
            .map(|e| self.shown(e))
            .collect();
        last.reverse();
        (last, self.live.subscribe())
    }

    /// What the changes of one call share, taken under the ring's lock (a
    /// follower subscribes under it too).
    fn change(&self) -> Change {
        Change {
            at: SystemTime::now(),
            // Copies of events are made only when someone follows: on the
            // queue writer's path, most of the time nobody does.
            followed: self.live.receiver_count() > 0,
        }
    }

    fn push(
        &self,
        ring: &mut Ring,
        lane: usize,
        outcome: Outcome,
        event: EventJson,
        key: u128,
        change: Change,
    ) {
        if ring.entries.len() == CAPACITY {
            let oldest = ring.entries.pop_front().expect("the ring is full");
            // Only a waiting entry can be in `waiting` (its batch settling
            // took it out): under a backlog most that leave have settled,
            // and the lookup, a cache miss, was a third of this call.
            if oldest.outcome == Outcome::Waiting {
                let waiting = &mut ring.waiting[oldest.lane];
                if waiting.get(&oldest.key) == Some(&ring.first) {
                    waiting.remove(&oldest.key);
                }
            }
            ring.first += 1;
        }
        if outcome == Outcome::Waiting {
            let serial = ring.first + ring.entries.len() as u64;
            ring.waiting[lane].insert(key, serial);
        }
        let entry = Entry {
            lane,
            outcome,
            at: change.at,
            event,
            key,
        };
        if change.followed {
            self.tell_followers(&entry);
        }
        ring.entries.push_back(entry);
    }

    fn tell_followers(&self, entry: &Entry) {
        // A follower that left meanwhile is no error.
        let _ = self.live.send(Box::new(self.shown(entry)));
    }

    fn shown(&self, entry: &Entry) -> Tapped {
        Tapped {
            webhook: self.webhooks[entry.lane].clone(),
            outcome: entry.outcome,
            at: rfc3339_seconds(entry.at),
            event: entry.event.decode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: usize) -> Event {
        Event::sample(&format!("e{id}"), &format!("line {id}"))
    }

    #[test]
    fn the_ring_keeps_the_last_events_with_their_outcome_and_tells_followers() {
        let tap = Tap::new(vec!["soc".into(), "slack".into()]);
        let events: Vec<Event> = (0..CAPACITY + 5).map(event).collect();
        let jsons: Vec<EventJson> = events.iter().map(EventJson::of).collect();
        tap.queued(jsons.iter().map(|e| (0, e)));
        tap.queued([(1, &jsons[0])]);
        let (mut follow_all, mut follow) = (None, None);
        {
            let (last, receiver) = tap.last_and_follow(Some("soc"), 3);
            let ids: Vec<&str> = last.iter().map(|t| t.event.id.as_str()).collect();
            assert_eq!(
                ids,
                [
                    format!("e{}", CAPACITY + 2),
                    format!("e{}", CAPACITY + 3),
                    format!("e{}", CAPACITY + 4)
                ]
            );
            assert!(last.iter().all(|t| t.outcome == Outcome::Waiting));
            follow.get_or_insert(receiver);
            let (all, receiver) = tap.last_and_follow(None, CAPACITY + 100);
            assert_eq!(all.len(), CAPACITY, "the ring is bounded");
            assert_eq!(all.last().unwrap().webhook, "slack");
            follow_all.get_or_insert(receiver);
        }
        // The last event settles in place; e0 of soc left the ring, so it comes back.
        let settled = [&events[CAPACITY + 4], &events[0]].map(|event| Queued::new(0, event));
        tap.settled(0, Outcome::Sent, &settled);
        let (last, _) = tap.last_and_follow(Some("soc"), 2);
        assert_eq!(
            last.iter()
                .map(|t| (t.event.id.as_str(), t.outcome))
                .collect::<Vec<_>>(),
            [
                (format!("e{}", CAPACITY + 4).as_str(), Outcome::Sent),
                ("e0", Outcome::Sent)
            ]
        );
        let mut follow = follow.unwrap();
        let first = follow.try_recv().unwrap();
        assert_eq!(
            (first.event.id.as_str(), first.outcome),
            (format!("e{}", CAPACITY + 4).as_str(), Outcome::Sent)
        );
        assert_eq!(follow.try_recv().unwrap().event.id, "e0");
        assert!(follow.try_recv().is_err(), "one change, one message");
        assert_eq!(follow_all.unwrap().len(), 2);
    }

    #[test]
    fn a_backlog_larger_than_the_ring_leaves_what_passing_through_it_would() {
        let tap = Tap::new(vec!["soc".into()]);
        let events: Vec<Event> = (0..2 * CAPACITY).map(event).collect();
        let jsons: Vec<EventJson> = events.iter().map(EventJson::of).collect();
        let shown = |tap: &Tap| -> Vec<(String, Outcome)> {
            let (last, _) = tap.last_and_follow(None, CAPACITY);
            last.into_iter().map(|t| (t.event.id, t.outcome)).collect()
        };
        let ids = |range: std::ops::Range<usize>, outcome| -> Vec<(String, Outcome)> {
            range.map(|n| (format!("e{n}"), outcome)).collect()
        };
        tap.queued(jsons.iter().map(|e| (0, e)));
        assert_eq!(shown(&tap), ids(CAPACITY..2 * CAPACITY, Outcome::Waiting));
        let settled = |range: std::ops::Range<usize>, outcome| {
            let batch: Vec<Queued> = events[range].iter().map(|e| Queued::new(0, e)).collect();
            tap.settled(0, outcome, &batch);
        };
        // Events that never stayed in the ring come back as news when
        // they settle; those still in it settle in place.
        settled(0..CAPACITY / 2, Outcome::Sent);
        settled(3 * CAPACITY / 2..2 * CAPACITY, Outcome::DeadLettered);
        let mut expected = ids(3 * CAPACITY / 2..2 * CAPACITY, Outcome::DeadLettered);
        expected.extend(ids(0..CAPACITY / 2, Outcome::Sent));
        assert_eq!(shown(&tap), expected);
    }
}
