//! Batching: packing queued events into bodies no larger than `max_body_bytes`.
//!
//! Sizes are counted on the encoded bytes in the webhook's body format,
//! envelope and separators included, so the limit holds for what goes on the
//! wire. An event too large for any body has its `message` cut until it fits
//! (and is marked `truncated`); one that still cannot fit is handed back to be
//! dead-lettered, so it never blocks the queue.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::body::BodyFormat;
use crate::queue::Queued;

/// A queued event with its bytes in the body format, computed once; its
/// `seq` is its place in the queue (removed from there once delivered or
/// dead-lettered).
#[derive(Debug)]
pub struct Encoded {
    pub queued: Queued,
    pub bytes: Bytes,
}

impl Encoded {
    fn new(queued: Queued, format: &BodyFormat) -> Encoded {
        Encoded {
            bytes: format.encode_queued(&queued),
            queued,
        }
    }
}

/// Events waiting for a body, oldest first.
pub struct Pending {
    events: VecDeque<Encoded>,
    /// Bytes a body with all of `events` would have.
    body_bytes: usize,
    overhead: usize,
    separator: usize,
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
    pub fn new(format: &BodyFormat, max_body_bytes: usize) -> Pending {
        let overhead = format.overhead();
        Pending {
            events: VecDeque::new(),
            body_bytes: overhead,
            overhead,
            separator: format.separator_len(),
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

    fn separator_before(&self, events_before: usize) -> usize {
        if events_before > 0 {
            self.separator
        } else {
            0
        }
    }

    pub fn push(&mut self, queued: Queued, format: &BodyFormat) -> Admitted {
        let encoded = Encoded::new(queued, format);
        let encoded = if encoded.bytes.len() > self.room_for_one() {
            match shrink(encoded, self.room_for_one(), format) {
                Ok(shrunk) => shrunk,
                Err(whole) => return Admitted::TooLarge(whole),
            }
        } else {
            encoded
        };
        self.body_bytes += encoded.bytes.len() + self.separator_before(self.events.len());
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
            let added = next.bytes.len() + self.separator_before(batch.len());
            if !batch.is_empty() && size + added > self.max_body_bytes {
                break;
            }
            size += added;
            batch.push(self.events.pop_front().expect("front exists"));
        }
        self.body_bytes = self.overhead
            + self.events.iter().map(|e| e.bytes.len()).sum::<usize>()
            + self.events.len().saturating_sub(1) * self.separator;
        self.oldest = if self.events.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        batch
    }
}

/// Cuts the event's message to the longest prefix whose encoded event fits
/// `room` bytes; hands the event back if not even an empty message fits.
fn shrink(encoded: Encoded, room: usize, format: &BodyFormat) -> Result<Encoded, Encoded> {
    let mut event = encoded.queued.event();
    event.truncated = true;
    let message = std::mem::take(&mut event.message);
    let mut size_with = |len: usize| {
        event.message = message[..len].to_string();
        format.encode_event(&event).len()
    };
    if size_with(0) > room {
        return Err(encoded);
    }
    // Escaping makes the encoded size differ from the message's length, but
    // it grows with the prefix: search for the longest prefix that fits.
    let (mut fits, mut too_long) = (0, message.len() + 1);
    while too_long - fits > 1 {
        let mut mid = (fits + too_long) / 2;
        while !message.is_char_boundary(mid) {
            mid -= 1;
        }
        if mid == fits {
            break;
        }
        if size_with(mid) <= room {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    event.message = message[..fits].to_string();
    let bytes = format.encode_event(&event);
    Ok(Encoded {
        queued: Queued::new(encoded.queued.seq, &event),
        bytes: bytes.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ContentType;

    fn event(message: &str) -> Queued {
        Queued::new(0, &crate::event::Event::sample(&"0".repeat(32), message))
    }

    fn body(format: &BodyFormat, batch: &[Encoded]) -> Vec<u8> {
        format.encode(batch.iter().map(|e| &e.bytes[..]))
    }

    /// The messages of a JSON or form body's events.
    fn messages(content_type: ContentType, body: &[u8]) -> Vec<String> {
        let json = match content_type {
            ContentType::FormUrlencoded => url::form_urlencoded::parse(body)
                .next()
                .unwrap()
                .1
                .into_owned(),
            _ => String::from_utf8(body.to_vec()).unwrap(),
        };
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn batches_never_exceed_the_limit_and_keep_order_in_every_format() {
        for content_type in [ContentType::Json, ContentType::FormUrlencoded] {
            let format = BodyFormat::new(content_type, None, "h");
            let limit = 2_000;
            let mut pending = Pending::new(&format, limit);
            // Sizes from tiny to nearly the whole body, deterministic but irregular.
            let mut seed = 7u64;
            for i in 0..300 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = (seed >> 33) as usize % 1_800;
                let message = format!("{i}:{}", "é\"&".repeat(len / 6));
                assert!(matches!(
                    pending.push(event(&message), &format),
                    Admitted::Queued
                ));
            }
            let mut sent = Vec::new();
            while !pending.is_empty() {
                let encoded = body(&format, &pending.take_batch());
                assert!(
                    encoded.len() <= limit,
                    "{content_type:?}: body of {} bytes",
                    encoded.len()
                );
                for message in messages(content_type, &encoded) {
                    sent.push(message.split(':').next().unwrap().parse::<usize>().unwrap());
                }
            }
            assert_eq!(sent, (0..300).collect::<Vec<_>>(), "{content_type:?}");
        }
    }

    #[test]
    fn full_body_is_detected_exactly() {
        let format = BodyFormat::new(ContentType::Json, None, "h");
        let one = format.encode_event(&event("x").event()).len();
        let limit = format.overhead() + 2 * one + format.separator_len();
        let mut pending = Pending::new(&format, limit);
        pending.push(event("x"), &format);
        pending.push(event("x"), &format);
        assert!(pending.has_full_body());
        assert_eq!(pending.take_batch().len(), 2);
        pending.push(event("x"), &format);
        assert!(!pending.has_full_body());
    }

    #[test]
    fn oversized_event_is_cut_to_fit_and_flagged() {
        let format = BodyFormat::new(ContentType::Json, None, "h");
        let limit = 600;
        let mut pending = Pending::new(&format, limit);
        assert!(matches!(
            pending.push(event(&"\"<quoted>\" ".repeat(500)), &format),
            Admitted::Queued
        ));
        let encoded = body(&format, &pending.take_batch());
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
        let format = BodyFormat::new(ContentType::Json, None, "h");
        let mut pending = Pending::new(&format, 100);
        assert!(matches!(
            pending.push(event("x"), &format),
            Admitted::TooLarge(_)
        ));
        assert!(pending.is_empty());
    }
}
