//! How the queue lays events out in its rows.
//!
//! A row holds the events one append queued for one webhook (a row of up
//! to [`BLOCK_BYTES`]), under the sequence number of its first:
//! a B-tree entry per event cost more than writing the event did. Each
//! event keeps its own sequence number, so a batch may take part of a row;
//! the rest is written back under the same key. Rows' events come in
//! sequence order and never overlap, so the row holding a sequence number
//! is the last whose key is at or below it.
//!
//! Rows of earlier versions hold one event each, at its sequence number: a
//! [`SINGLE_TAG`] row, or the JSON alone. They read as before.

use xxhash_rust::xxh3::xxh3_64;

/// The first byte of a row of events: then the XXH3-64 of all that follows
/// it (8 bytes), the number of events (4 bytes), per event the distance of
/// its sequence number from the row's key and the length of its JSON (4
/// bytes each), then the JSONs one after the other; integers little-endian.
/// A row whose checksum holds is JSON this version encoded, and is sent
/// without decoding it.
const BLOCK_TAG: u8 = 0x02;
/// The first byte of a row of one event (earlier versions): the XXH3-64 of
/// its JSON (8 bytes), then the JSON.
const SINGLE_TAG: u8 = 0x01;
const CHECKSUM: usize = 8;
/// A block's tag, checksum and count of events.
const BLOCK_HEADER: usize = 1 + CHECKSUM + 4;
/// What each event adds to a row beside its JSON: it counts towards the
/// webhook's `max_queue_bytes`.
const ENTRY: usize = 8;

/// A row takes events while it stays within this: large enough that a
/// row's own cost vanishes per event, and with its page's own bytes within
/// 64 KiB (redb gives a value larger than a page a power-of-two run of
/// pages: a row a little over 64 KiB took 128). A batch taking part of a
/// row rewrites little, and a reader holds little at a time.
pub const BLOCK_BYTES: usize = 60 * 1024;

/// An event as stored: its sequence number, its JSON, and the bytes it
/// counts for in its webhook's queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored<'a> {
    pub seq: u64,
    pub json: &'a [u8],
    pub size: u64,
}

/// What a row counts for, read from its layout without checking its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowUsage {
    pub events: u64,
    pub bytes: u64,
    /// The sequence number of its last event.
    pub last_seq: u64,
}

/// The bytes an event of `json_len` bytes counts for in a row of events.
pub fn event_size(json_len: usize) -> u64 {
    (ENTRY + json_len) as u64
}

/// `events` (sequence number and JSON, in sequence order, none below
/// `key`) as the row at `key`, written into `row`.
pub fn write_block(key: u64, events: &[(u64, &[u8])], row: &mut Vec<u8>) {
    let json_bytes: usize = events.iter().map(|(_, json)| json.len()).sum();
    row.clear();
    row.reserve(BLOCK_HEADER + ENTRY * events.len() + json_bytes);
    row.push(BLOCK_TAG);
    row.extend_from_slice(&[0; CHECKSUM]);
    row.extend_from_slice(&u32_of(events.len()).to_le_bytes());
    for (seq, json) in events {
        let distance = u32::try_from(seq - key).expect("a row's events are near its key");
        row.extend_from_slice(&distance.to_le_bytes());
        row.extend_from_slice(&u32_of(json.len()).to_le_bytes());
    }
    for (_, json) in events {
        row.extend_from_slice(json);
    }
    let sum = xxh3_64(&row[1 + CHECKSUM..]).to_le_bytes();
    row[1..1 + CHECKSUM].copy_from_slice(&sum);
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).expect("a row holds far less than 4 GiB")
}

/// The row at `key` once the events not in `kept` left it: `None` when
/// none is kept, else a block of those kept.
pub fn rest_of<'s, 'j: 's>(
    key: u64,
    kept: impl IntoIterator<Item = &'s Stored<'j>>,
) -> Option<Vec<u8>> {
    let events: Vec<(u64, &[u8])> = kept.into_iter().map(|e| (e.seq, e.json)).collect();
    if events.is_empty() {
        return None;
    }
    let mut row = Vec::new();
    write_block(key, &events, &mut row);
    Some(row)
}

/// Splits `events` (in sequence order) into the runs that make one row
/// each: rows of up to [`BLOCK_BYTES`], and at least one event each.
pub fn blocks<'e, 'j>(
    events: &'e [(u64, &'j [u8])],
) -> impl Iterator<Item = &'e [(u64, &'j [u8])]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = BLOCK_HEADER;
        let end = rest
            .iter()
            .position(|(_, json)| {
                bytes += ENTRY + json.len();
                bytes > BLOCK_BYTES
            })
            .map_or(rest.len(), |at| at.max(1));
        let (block, after) = rest.split_at(end);
        rest = after;
        Some(block)
    })
}

/// The events of the row at `key`, its bytes checked: a block's checksum,
/// an earlier version's checksum or, for its JSON alone, that it decodes as
/// an event. `Err` says why the row holds none.
pub fn events(key: u64, row: &[u8]) -> Result<Vec<Stored<'_>>, String> {
    match row.split_first() {
        Some((&BLOCK_TAG, rest)) => {
            block_events(key, verified(rest)?).ok_or_else(|| "its layout is broken".to_string())
        }
        Some((&SINGLE_TAG, rest)) => Ok(vec![single(key, row, verified(rest)?)]),
        _ => crate::event::EventJson::checked(row)
            .map(|_| vec![single(key, row, row)])
            .map_err(|e| e.to_string()),
    }
}

/// The events of the row at `key` as its layout places them, without
/// checking their bytes: `None` when a block's layout is broken.
pub fn layout(key: u64, row: &[u8]) -> Option<Vec<Stored<'_>>> {
    match row.split_first() {
        Some((&BLOCK_TAG, rest)) => block_events(key, checksummed(rest).ok()?.1),
        Some((&SINGLE_TAG, rest)) => Some(vec![single(key, row, checksummed(rest).ok()?.1)]),
        _ => Some(vec![single(key, row, row)]),
    }
}

/// What the row at `key` counts for: a row whose layout is broken counts
/// as one event of all its bytes, as does a row of an earlier version.
pub fn usage(key: u64, row: &[u8]) -> RowUsage {
    match layout(key, row) {
        Some(events) => RowUsage {
            events: events.len() as u64,
            bytes: events.iter().map(|e| e.size).sum(),
            last_seq: events.last().map_or(key, |e| e.seq),
        },
        None => RowUsage {
            events: 1,
            bytes: row.len() as u64,
            last_seq: key,
        },
    }
}

/// An earlier version's row: one event at `key`, counting for the whole row.
fn single<'a>(key: u64, row: &[u8], json: &'a [u8]) -> Stored<'a> {
    Stored {
        seq: key,
        json,
        size: row.len() as u64,
    }
}

/// What follows a row's tag, once its checksum holds for it.
fn verified(rest: &[u8]) -> Result<&[u8], String> {
    let (sum, body) = checksummed(rest)?;
    if sum == xxh3_64(body) {
        Ok(body)
    } else {
        Err("its checksum does not match its bytes".to_string())
    }
}

/// What follows a row's tag: its checksum, and the bytes it covers.
fn checksummed(rest: &[u8]) -> Result<(u64, &[u8]), String> {
    match rest.split_first_chunk::<CHECKSUM>() {
        Some((sum, body)) => Ok((u64::from_le_bytes(*sum), body)),
        None => Err("it is shorter than its checksum".to_string()),
    }
}

/// A block's events from what follows its checksum, or `None` when its
/// counts and lengths do not add up to its bytes or its sequence numbers
/// do not rise.
fn block_events(key: u64, body: &[u8]) -> Option<Vec<Stored<'_>>> {
    let (count, rest) = body.split_first_chunk::<4>()?;
    let count = u32::from_le_bytes(*count) as usize;
    let (entries, mut jsons) = rest.split_at_checked(count.checked_mul(ENTRY)?)?;
    let mut events = Vec::with_capacity(count);
    for entry in entries.chunks_exact(ENTRY) {
        let (distance, len) = entry.split_at(4);
        let seq = key.checked_add(u64::from(u32::from_le_bytes(distance.try_into().ok()?)))?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        if events.last().is_some_and(|last: &Stored| last.seq >= seq) {
            return None;
        }
        let (json, after) = jsons.split_at_checked(len)?;
        jsons = after;
        events.push(Stored {
            seq,
            json,
            size: event_size(len),
        });
    }
    (jsons.is_empty() && !events.is_empty()).then_some(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventJson};
    use proptest::prelude::*;

    fn jsons(messages: &[String]) -> Vec<EventJson> {
        messages
            .iter()
            .enumerate()
            .map(|(i, message)| EventJson::of(&Event::sample(&format!("e{i}"), message)))
            .collect()
    }

    proptest! {
        /// A block reads back as written, whatever its events' sequence
        /// numbers; a block with any bit changed is refused; its layout
        /// gives what its events count for.
        #[test]
        fn a_block_reads_back_as_written_and_refuses_any_changed_bit(
            messages in prop::collection::vec("\\PC{0,40}", 1..6),
            key in 0u64..u64::MAX / 2,
            gaps in prop::collection::vec(1u64..1000, 6),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let jsons = jsons(&messages);
            let mut seq = key;
            let written: Vec<(u64, &[u8])> = jsons.iter().zip(&gaps).map(|(json, gap)| {
                let at = seq;
                seq += gap;
                (at, json.as_bytes())
            }).collect();
            let mut row = Vec::new();
            write_block(key, &written, &mut row);
            let read = events(key, &row).unwrap();
            prop_assert_eq!(read.iter().map(|e| (e.seq, e.json)).collect::<Vec<_>>(), written.clone());
            prop_assert_eq!(usage(key, &row), RowUsage {
                events: written.len() as u64,
                bytes: read.iter().map(|e| e.size).sum(),
                last_seq: written.last().unwrap().0,
            });
            let at = flip.index(row.len());
            row[at] ^= 1 << bit;
            prop_assert!(events(key, &row).is_err());
        }

        /// Any bytes as a row: reading it or counting it never panics; what
        /// an earlier version wrote (the JSON alone) reads as decoding
        /// would; a row read counts as its events do.
        #[test]
        fn any_row_reads_without_panic_and_counts_as_its_events(
            bytes in prop::collection::vec(any::<u8>(), 0..96),
            key in any::<u32>(),
        ) {
            let key = u64::from(key);
            let read = events(key, &bytes);
            let counted = usage(key, &bytes);
            if let Ok(read) = &read {
                prop_assert_eq!(counted.events, read.len() as u64);
                prop_assert_eq!(counted.bytes, read.iter().map(|e| e.size).sum::<u64>());
            }
            if !matches!(bytes.first(), Some(&BLOCK_TAG | &SINGLE_TAG)) {
                let decoded = read.ok().map(|r| EventJson::trusted(r[0].json).decode());
                prop_assert_eq!(decoded, serde_json::from_slice::<Event>(&bytes).ok());
            }
        }

        /// Blocks take events in order, none twice, each a row of at most
        /// [`BLOCK_BYTES`] unless one event alone makes a larger one.
        #[test]
        fn blocks_split_events_in_order_within_their_size(
            sizes in prop::collection::vec(0usize..3 * BLOCK_BYTES / 2, 0..12),
        ) {
            let text = vec![b'x'; 3 * BLOCK_BYTES / 2];
            let events: Vec<(u64, &[u8])> = sizes.iter().enumerate().map(|(i, &n)| (i as u64, &text[..n])).collect();
            let split: Vec<&[(u64, &[u8])]> = blocks(&events).collect();
            prop_assert_eq!(split.concat(), events.clone());
            let mut row = Vec::new();
            for block in split {
                write_block(block[0].0, block, &mut row);
                prop_assert!(row.len() <= BLOCK_BYTES || block.len() == 1, "{} bytes in {}", row.len(), block.len());
            }
        }
    }

    #[test]
    fn an_earlier_versions_rows_read_as_one_event_of_their_size() {
        let json = EventJson::of(&Event::sample("e1", "m"));
        let mut single_row = vec![SINGLE_TAG];
        single_row.extend_from_slice(&xxh3_64(json.as_bytes()).to_le_bytes());
        single_row.extend_from_slice(json.as_bytes());
        for row in [single_row, json.as_bytes().to_vec()] {
            let read = events(7, &row).unwrap();
            assert_eq!(
                read,
                [Stored {
                    seq: 7,
                    json: json.as_bytes(),
                    size: row.len() as u64
                }]
            );
            assert_eq!(
                usage(7, &row),
                RowUsage {
                    events: 1,
                    bytes: row.len() as u64,
                    last_seq: 7
                }
            );
        }
    }
}
