//! Batching: packing queued events into bodies no larger than `max_body_bytes`.
//!
//! Sizes are counted on the encoded bytes, envelope and separators included,
//! so the limit holds for what goes on the wire. An event too large for any
//! body has its `message` cut until it fits (and is marked `truncated`); one
//! that still cannot fit is handed back to be dead-lettered, so it never blocks
//! the queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::event::{Envelope, Event};
use crate::queue::Queued;
use crate::tail::CommitToken;

/// An event with its JSON encoding, computed once. Dropping it (after
/// delivery or dead-lettering) releases its line for commit.
#[derive(Debug)]
pub struct Encoded {
    pub event: Arc<Event>,
    pub json: Vec<u8>,
    _commit: CommitToken,
}

impl Encoded {
    pub fn new(queued: Queued) -> Encoded {
        let json = serde_json::to_vec(&*queued.event).expect("events always serialize");
        Encoded {
            event: queued.event,
            json,
            _commit: queued.commit,
        }
    }
}

/// Events waiting for a body, oldest first.
pub struct Pending {
    events: VecDeque<Encoded>,
    /// Bytes a body with all of `events` would have.
    body_bytes: usize,
    overhead: usize,
    max_body_bytes: usize,
    /// When the oldest event arrived: bounds its wait by `batch_timeout`.
    pub oldest: Option<Instant>,
}

/// What [`Pending::push`] did with an event.
pub enum Admitted {
    Queued,
    /// Fits in no body even with an empty message.
    TooLarge(Encoded),
}

impl Pending {
    pub fn new(envelope: &Envelope, max_body_bytes: usize) -> Pending {
        let overhead = envelope.overhead();
        Pending {
            events: VecDeque::new(),
            body_bytes: overhead,
            overhead,
            max_body_bytes,
            oldest: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn room_for_one(&self) -> usize {
        self.max_body_bytes.saturating_sub(self.overhead)
    }

    pub fn push(&mut self, queued: Queued) -> Admitted {
        let encoded = Encoded::new(queued);
        let encoded = if encoded.json.len() > self.room_for_one() {
            match shrink(encoded, self.room_for_one()) {
                Ok(shrunk) => shrunk,
                Err(whole) => return Admitted::TooLarge(whole),
            }
        } else {
            encoded
        };
        self.body_bytes += encoded.json.len() + usize::from(!self.events.is_empty());
        self.events.push_back(encoded);
        self.oldest.get_or_insert_with(Instant::now);
        Admitted::Queued
    }

    /// More is pending than one body can carry: send now, no point waiting.
    pub fn has_full_body(&self) -> bool {
        self.body_bytes >= self.max_body_bytes
    }

    /// Takes the oldest events that fit in one body (at least one).
    pub fn take_batch(&mut self) -> Vec<Encoded> {
        let mut size = self.overhead;
        let mut batch = Vec::new();
        while let Some(next) = self.events.front() {
            let added = next.json.len() + usize::from(!batch.is_empty());
            if !batch.is_empty() && size + added > self.max_body_bytes {
                break;
            }
            size += added;
            batch.push(self.events.pop_front().expect("front exists"));
        }
        self.body_bytes = self.overhead
            + self.events.iter().map(|e| e.json.len()).sum::<usize>()
            + self.events.len().saturating_sub(1);
        self.oldest = if self.events.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        batch
    }
}

/// Cuts the event's message to the longest prefix whose encoding fits `room`.
fn shrink(encoded: Encoded, room: usize) -> Result<Encoded, Encoded> {
    let mut event = (*encoded.event).clone();
    event.truncated = true;
    let message = std::mem::take(&mut event.message);
    let encoded_len = |text: &str| {
        serde_json::to_string(text)
            .expect("strings serialize")
            .len()
    };
    let without_message = serde_json::to_vec(&event)
        .expect("events always serialize")
        .len();
    if without_message > room {
        return Err(encoded);
    }
    // Room for the message's quoted, escaped form; escaping makes its size
    // differ from its length, and the size grows with the prefix, so search.
    let budget = room - without_message + encoded_len("");
    let (mut fits, mut too_long) = (0, message.len() + 1);
    while too_long - fits > 1 {
        let mut mid = (fits + too_long) / 2;
        while !message.is_char_boundary(mid) {
            mid -= 1;
        }
        if mid == fits {
            break;
        }
        if encoded_len(&message[..mid]) <= budget {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    event.message = message[..fits].to_string();
    let json = serde_json::to_vec(&event).expect("events always serialize");
    Ok(Encoded {
        event: Arc::new(event),
        json,
        _commit: encoded._commit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Fields, LogOrigin};
    use crate::rules::Severity;

    fn event(message: &str) -> Queued {
        let event = Arc::new(Event {
            id: "0".repeat(32),
            rule: "r".into(),
            severity: Severity::Low,
            time: "2026-11-22T10:00:01Z".into(),
            log: LogOrigin {
                file: "/f".into(),
                offset: 0,
            },
            message: message.into(),
            fields: Fields::new(),
            count: None,
            truncated: false,
        });
        Queued {
            event,
            commit: CommitToken::default(),
        }
    }

    fn body(envelope: &Envelope, batch: &[Encoded]) -> Vec<u8> {
        envelope.encode(batch.iter().map(|e| e.json.as_slice()))
    }

    #[test]
    fn batches_never_exceed_the_limit_and_keep_order() {
        let envelope = Envelope { host: "h" };
        let limit = 2_000;
        let mut pending = Pending::new(&envelope, limit);
        // Sizes from tiny to nearly the whole body, deterministic but irregular.
        let mut seed = 7u64;
        let mut sent = Vec::new();
        for i in 0..300 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 33) as usize % 1_800;
            assert!(matches!(
                pending.push(event(&format!("{i}:{}", "é".repeat(len / 2)))),
                Admitted::Queued
            ));
        }
        while !pending.is_empty() {
            let batch = pending.take_batch();
            let encoded = body(&envelope, &batch);
            assert!(encoded.len() <= limit, "body of {} bytes", encoded.len());
            let value: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
            for e in value["events"].as_array().unwrap() {
                sent.push(
                    e["message"]
                        .as_str()
                        .unwrap()
                        .split(':')
                        .next()
                        .unwrap()
                        .parse::<usize>()
                        .unwrap(),
                );
            }
        }
        assert_eq!(sent, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn full_body_is_detected_exactly() {
        let envelope = Envelope { host: "h" };
        let one = Encoded::new(event("x")).json.len();
        let limit = envelope.overhead() + 2 * one + 1;
        let mut pending = Pending::new(&envelope, limit);
        pending.push(event("x"));
        pending.push(event("x"));
        assert!(pending.has_full_body());
        assert_eq!(pending.take_batch().len(), 2);
        pending.push(event("x"));
        assert!(!pending.has_full_body());
    }

    #[test]
    fn oversized_event_is_cut_to_fit_and_flagged() {
        let envelope = Envelope { host: "h" };
        let limit = 600;
        let mut pending = Pending::new(&envelope, limit);
        assert!(matches!(
            pending.push(event(&"\"<quoted>\" ".repeat(500))),
            Admitted::Queued
        ));
        let batch = pending.take_batch();
        let encoded = body(&envelope, &batch);
        assert!(encoded.len() <= limit);
        let value: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(value["events"][0]["truncated"], true);
        let message = value["events"][0]["message"].as_str().unwrap();
        assert!(message.starts_with("\"<quoted>\""), "{message:?}");
        // The longest prefix that fits was kept: one more character would not.
        assert!(
            encoded.len() > limit - 3,
            "{} bytes used of {limit}",
            encoded.len()
        );
    }

    #[test]
    fn event_that_cannot_fit_is_handed_back() {
        let envelope = Envelope { host: "h" };
        let mut pending = Pending::new(&envelope, 100);
        assert!(matches!(pending.push(event("x")), Admitted::TooLarge(_)));
        assert!(pending.is_empty());
    }
}
