//! The instant a log line says it happened.
//!
//! An event's `time` is when the line says it happened, not when the agent
//! read it, so a backfill keeps its history and thresholds count the
//! original traffic (DESIGN §5). This runs on matched lines only: a line no
//! rule wants never pays for it.
//!
//! Forms read, at the start of the line (after an optional `<PRI>` and
//! RFC 5424's version `1 `):
//! - RFC 3339 / ISO 8601: `2026-11-22T10:00:01.003Z`, `…+01:00`, `…+0100`,
//!   with a space instead of the `T`, `-` or `/` between date parts, a `.`
//!   or `,` before the fraction (`2026/11/22 10:00:01` is nginx's error
//!   log); without an offset the input's zone applies;
//! - classic syslog: `Nov 22 10:00:01` (also `Nov  2`), in the input's zone,
//!   its year inferred (see [`LineClock::times`]).
//!
//! Else, anywhere in the line, the access-log form `[22/Nov/2026:10:03:00 +0000]`.
//! A line stating none of these (or an impossible date or time) has none:
//! its event's time is its read time.
//! A journal entry's line starts with the entry's own time (RFC 3339), so it
//! is read like any other.
//!
//! A local time that a DST change skips (spring forward) or repeats (fall
//! back) resolves as RFC 5545 and Temporal do ("compatible"): in a gap, the
//! clock reading is taken with the offset before the change (02:30 in a
//! skipped hour is 03:30 after it); in a fold, the earlier of the two instants.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// A syslog line without a year dated more than this after "now" is last
/// year's: clocks of sender and agent differ by seconds or a misconfigured
/// zone's hours, never by a day, while last December's lines read in January
/// are eleven months "ahead".
const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_hours(24);

/// How far back a yearless `Feb 29` is looked for: the latest leap year.
const LEAP_YEAR_SEARCH: i16 = 8;

/// Reads the time of lines from one input: the zone its local times are in.
#[derive(Debug, Clone)]
pub struct LineClock {
    zone: TimeZone,
}

/// The zone named by an input's `timezone` key (an IANA name such as
/// `Europe/Berlin`, or `UTC`); without one, the host's (`TZ`, else
/// `/etc/localtime`).
pub fn zone_named(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None => Ok(TimeZone::system()),
        Some(name) => TimeZone::get(name).map_err(|e| {
            format!("`{name}` is no time zone known to this system's tz database ({e})")
        }),
    }
}

impl LineClock {
    pub fn new(zone: TimeZone) -> LineClock {
        LineClock { zone }
    }

    /// When `line` happened, if it says, and when it was read. `read` is
    /// also "now" for a syslog time without a year gets
    /// the latest year that does not put it more than a day after `read`
    /// (`Dec 31 23:59:59` read on Jan 1 is last year's; `Jan 1 00:00:01`
    /// read a few seconds before midnight on Dec 31 is next year's).
    pub fn times(&self, line: &str, read: Timestamp) -> LineTimes {
        LineTimes {
            stated: self.stated_time(line, read),
            read,
        }
    }

    /// The instant `line` states, or `None` when it states none this module
    /// reads; see [`LineClock::times`].
    pub fn stated_time(&self, line: &str, now: Timestamp) -> Option<Timestamp> {
        self.stated(line, now, &mut SyslogMemo::default())
    }

    fn stated(&self, line: &str, now: Timestamp, memo: &mut SyslogMemo) -> Option<Timestamp> {
        let bytes = line.as_bytes();
        let start = after_priority(bytes);
        let head = &bytes[start..];
        if let Some(known) = memo.recall(head, now) {
            return Some(known);
        }
        iso_time(head, &self.zone)
            .or_else(|| {
                let (stated, read) = syslog_time(head, &self.zone, now)?;
                memo.keep(&head[..read], now, stated);
                Some(stated)
            })
            .or_else(|| access_log_time(bytes))
    }
}

/// An input's clock where its events are dated, line after line: it keeps
/// the last classic syslog time it read, as a burst of lines shares its
/// second, and reading one (its year inferred, its zone applied) cost more
/// than all else of its event's time.
#[derive(Debug)]
pub struct RememberingClock {
    clock: LineClock,
    last: SyslogMemo,
}

impl RememberingClock {
    pub fn new(clock: LineClock) -> RememberingClock {
        RememberingClock {
            clock,
            last: SyslogMemo::default(),
        }
    }

    /// [`LineClock::times`], a classic syslog time the same as the last one
    /// read taken from memory.
    pub fn times(&mut self, line: &str, read: Timestamp) -> LineTimes {
        LineTimes {
            stated: self.clock.stated(line, read, &mut self.last),
            read,
        }
    }
}

/// The last classic syslog time read, as its text, the "now" it was read
/// at and the instant it read as.
#[derive(Debug, Default)]
struct SyslogMemo {
    text: [u8; SyslogMemo::LONGEST],
    len: usize,
    now: Timestamp,
    stated: Timestamp,
}

impl SyslogMemo {
    /// `Nov 22 10:00:01.123456789`: longer ones are not kept.
    const LONGEST: usize = 32;

    /// The instant of `head`'s time if it is the one kept, read at the
    /// same "now" and followed by a space (or nothing), where any reading
    /// of it ends: before a `.` it might go on with a fraction. A classic
    /// time starts with a month's name, so no other form reads the same text.
    fn recall(&self, head: &[u8], now: Timestamp) -> Option<Timestamp> {
        let kept = &self.text[..self.len];
        (self.len > 0
            && self.now == now
            && head.starts_with(kept)
            && head.get(self.len).is_none_or(|&b| b == b' '))
        .then_some(self.stated)
    }

    fn keep(&mut self, text: &[u8], now: Timestamp, stated: Timestamp) {
        if text.len() <= Self::LONGEST {
            self.text[..text.len()].copy_from_slice(text);
            (self.len, self.now, self.stated) = (text.len(), now, stated);
        }
    }
}

/// When a line happened and when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTimes {
    /// What the line states, if it states a time this module reads.
    pub stated: Option<Timestamp>,
    pub read: Timestamp,
}

impl LineTimes {
    /// The event's `time`: what the line states, else when it was read.
    pub fn time(&self) -> Timestamp {
        self.stated.unwrap_or(self.read)
    }

    /// What thresholds and suppress windows count by: the event's time, but
    /// never later than the read time. A sender whose clock runs ahead (or a
    /// line misdated into the future) cannot open a window that swallows the
    /// lines after it; it counts as if it happened when it was read.
    pub fn gate_time(&self) -> Timestamp {
        self.time().min(self.read)
    }
}

/// Where the timestamp starts: after `<PRI>` and RFC 5424's `1 `, if present.
fn after_priority(bytes: &[u8]) -> usize {
    let mut cursor = Cursor { bytes, at: 0 };
    if !cursor.eat(b'<') {
        return 0;
    }
    let Some(_) = cursor.number(1, 3) else {
        return 0;
    };
    if !cursor.eat(b'>') {
        return 0;
    }
    let after_pri = cursor.at;
    if cursor.number(1, 2).is_some() && cursor.eat(b' ') {
        return cursor.at;
    }
    after_pri
}

/// A reader over the bytes of a line, for fixed-shape timestamps.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let matched = self.peek() == Some(byte);
        self.at += usize::from(matched);
        matched
    }

    fn eat_any(&mut self, set: &[u8]) -> Option<u8> {
        let byte = self.peek().filter(|b| set.contains(b))?;
        self.at += 1;
        Some(byte)
    }

    /// Between `min` and `max` ASCII digits, as a number.
    fn number(&mut self, min: usize, max: usize) -> Option<i32> {
        let digits = self.bytes[self.at..]
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits < min {
            return None;
        }
        let value = self.bytes[self.at..self.at + digits]
            .iter()
            .fold(0i32, |n, b| n * 10 + i32::from(b - b'0'));
        self.at += digits;
        Some(value)
    }

    /// Exactly `n` digits.
    fn digits(&mut self, n: usize) -> Option<i32> {
        let start = self.at;
        let value = self.number(n, n);
        if value.is_none() {
            self.at = start;
        }
        value
    }

    /// `HH:MM:SS` and an optional `.fraction` or `,fraction`, as a civil
    /// time's parts; the fraction in nanoseconds (digits past nine dropped).
    fn clock(&mut self) -> Option<(i8, i8, i8, i32)> {
        let hour = self.digits(2)?;
        self.eat(b':').then_some(())?;
        let minute = self.digits(2)?;
        self.eat(b':').then_some(())?;
        let second = self.digits(2)?;
        let mut nanos = 0;
        let before = self.at;
        if self.eat_any(b".,").is_some() {
            let digits = self.bytes[self.at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                self.at = before;
            } else {
                let kept = digits.min(9);
                let value = self.number(kept, kept)?;
                nanos = value * 10i32.pow(9 - kept as u32);
                self.at += digits - kept;
            }
        }
        Some((
            i8::try_from(hour).ok()?,
            i8::try_from(minute).ok()?,
            i8::try_from(second).ok()?,
            nanos,
        ))
    }

    /// `Z`, `+HH:MM`, `+HHMM` or `+HH` (or `-`).
    fn offset(&mut self) -> Option<Offset> {
        if self.eat_any(b"Zz").is_some() {
            return Some(Offset::UTC);
        }
        let start = self.at;
        let parsed = (|| {
            let sign = if self.eat_any(b"+-")? == b'-' { -1 } else { 1 };
            let hours = self.digits(2)?;
            let colon = self.eat(b':');
            let minutes = match self.digits(2) {
                Some(minutes) => minutes,
                None if colon => return None,
                None => 0,
            };
            if hours > 25 || minutes > 59 {
                return None;
            }
            Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()
        })();
        if parsed.is_none() {
            self.at = start;
        }
        parsed
    }

    /// The timestamp ends here: at the end of the line or before a byte that
    /// cannot continue it (so `10:00:01` is not read out of `10:00:012`, nor
    /// a local time out of a broken offset such as `+01:`).
    fn at_boundary(&self) -> bool {
        self.peek()
            .is_none_or(|b| !b.is_ascii_alphanumeric() && b != b'+' && b != b'-')
    }
}

/// The instant of a civil time in `zone`, DST gaps and folds resolved as
/// the module documents.
fn in_zone(civil: DateTime, zone: &TimeZone) -> Option<Timestamp> {
    zone.to_ambiguous_timestamp(civil).compatible().ok()
}

fn civil(
    year: i32,
    month: i32,
    day: i32,
    (hour, minute, second, nanos): (i8, i8, i8, i32),
) -> Option<DateTime> {
    DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        hour,
        minute,
        // A leap second (`:60`) is read as the last second of its minute.
        second.min(59),
        nanos,
    )
    .ok()
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.frac][offset]` (also with `/` in the date).
fn iso_time(head: &[u8], zone: &TimeZone) -> Option<Timestamp> {
    let mut cursor = Cursor { bytes: head, at: 0 };
    let year = cursor.digits(4)?;
    let separator = cursor.eat_any(b"-/")?;
    let month = cursor.digits(2)?;
    cursor.eat(separator).then_some(())?;
    let day = cursor.digits(2)?;
    cursor.eat_any(b"Tt ")?;
    let clock = cursor.clock()?;
    let offset = cursor.offset();
    if !cursor.at_boundary() {
        return None;
    }
    let civil = civil(year, month, day, clock)?;
    match offset {
        Some(offset) => offset.to_timestamp(civil).ok(),
        None => in_zone(civil, zone),
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn month_number(name: &[u8]) -> Option<i32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(name))
        .map(|i| i as i32 + 1)
}

/// `Mmm dd HH:MM:SS[.frac]` (`Mmm  d` for one-digit days), year inferred.
/// A classic syslog time at the start of `head`, and how many bytes it took.
fn syslog_time(head: &[u8], zone: &TimeZone, now: Timestamp) -> Option<(Timestamp, usize)> {
    let month = month_number(head.get(..3)?)?;
    let mut cursor = Cursor { bytes: head, at: 3 };
    cursor.eat(b' ').then_some(())?;
    cursor.eat(b' ');
    let day = cursor.number(1, 2)?;
    cursor.eat(b' ').then_some(())?;
    let clock = cursor.clock()?;
    if !cursor.at_boundary() {
        return None;
    }
    let latest = now.checked_add(FUTURE_TOLERANCE).ok()?;
    let this_year = i32::from(now.to_zoned_datetime(zone.clone()).year());
    // Next year's first, so a line just past midnight on New Year read a
    // moment early keeps its year; then back, for Feb 29, to a leap year.
    (this_year - i32::from(LEAP_YEAR_SEARCH)..=this_year + 1)
        .rev()
        .filter_map(|year| in_zone(civil(year, month, day, clock)?, zone))
        .find(|&instant| instant <= latest)
        .map(|instant| (instant, cursor.at))
}

/// `[dd/Mmm/yyyy:HH:MM:SS ±hhmm]` anywhere in the line (nginx and Apache
/// write it after the client address and user).
fn access_log_time(line: &[u8]) -> Option<Timestamp> {
    memchr::memchr_iter(b'[', line).find_map(|open| {
        let mut cursor = Cursor {
            bytes: &line[open + 1..],
            at: 0,
        };
        let day = cursor.digits(2)?;
        cursor.eat(b'/').then_some(())?;
        let month = month_number(cursor.bytes.get(cursor.at..cursor.at + 3)?)?;
        cursor.at += 3;
        cursor.eat(b'/').then_some(())?;
        let year = cursor.digits(4)?;
        cursor.eat(b':').then_some(())?;
        let clock = cursor.clock()?;
        cursor.eat(b' ').then_some(())?;
        let offset = cursor.offset()?;
        cursor.eat(b']').then_some(())?;
        offset.to_timestamp(civil(year, month, day, clock)?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn clock(zone: &str) -> LineClock {
        LineClock::new(zone_named(Some(zone)).unwrap())
    }

    /// The time `line` states, read at `now`, as RFC 3339.
    fn stated(zone: &str, line: &str, now: &str) -> Option<String> {
        clock(zone)
            .stated_time(line, at(now))
            .map(|t| t.to_string())
    }

    const NOW: &str = "2026-11-30T05:00:00Z";

    #[test]
    fn classic_syslog_takes_the_zone_and_this_year() {
        let line = "Nov 22 10:00:01 web1 sshd[811]: Failed password for root";
        assert_eq!(
            stated("UTC", line, NOW).as_deref(),
            Some("2026-11-22T10:00:01Z")
        );
        assert_eq!(
            stated("Europe/Berlin", line, NOW).as_deref(),
            Some("2026-11-22T09:00:01Z")
        );
        // One-digit days are padded with a space.
        assert_eq!(
            stated("UTC", "Nov  2 03:04:05 web1 su: x", NOW).as_deref(),
            Some("2026-11-02T03:04:05Z")
        );
        assert_eq!(
            stated("America/New_York", "Jul 4 12:00:00.25 h x", NOW).as_deref(),
            Some("2026-07-04T16:00:00.25Z")
        );
    }

    #[test]
    fn the_year_rolls_over_at_new_year() {
        // Read on New Year's day: December is last year's.
        assert_eq!(
            stated("UTC", "Dec 31 23:59:59 h x", "2027-01-01T00:00:05Z").as_deref(),
            Some("2026-12-31T23:59:59Z")
        );
        // Read a moment before midnight from a clock a little ahead: next year's.
        assert_eq!(
            stated("UTC", "Jan  1 00:00:01 h x", "2026-12-31T23:59:58Z").as_deref(),
            Some("2027-01-01T00:00:01Z")
        );
        // More than a day in the future is last year's.
        assert_eq!(
            stated("UTC", "Dec  5 10:00:00 h x", NOW).as_deref(),
            Some("2025-12-05T10:00:00Z")
        );
        // Up to a day ahead (a skewed clock) stays this year.
        assert_eq!(
            stated("UTC", "Nov 30 20:00:00 h x", NOW).as_deref(),
            Some("2026-11-30T20:00:00Z")
        );
        // Feb 29 belongs to the latest leap year before now.
        assert_eq!(
            stated("UTC", "Feb 29 12:00:00 h x", NOW).as_deref(),
            Some("2024-02-29T12:00:00Z")
        );
        // The zone decides which local day "now" is in.
        assert_eq!(
            stated(
                "Pacific/Kiritimati",
                "Jan  1 00:30:00 h x",
                "2026-12-31T10:45:00Z"
            )
            .as_deref(),
            Some("2026-12-31T10:30:00Z")
        );
    }

    #[test]
    fn dst_gaps_and_folds_resolve_as_documented() {
        // 2026-03-29 02:30 does not exist in Berlin: read as 03:30 CEST.
        assert_eq!(
            stated("Europe/Berlin", "2026-03-29 02:30:00 h x", NOW).as_deref(),
            Some("2026-03-29T01:30:00Z")
        );
        // 2026-10-25 02:30 happens twice: the first (CEST) is taken.
        assert_eq!(
            stated("Europe/Berlin", "Oct 25 02:30:00 h x", NOW).as_deref(),
            Some("2026-10-25T00:30:00Z")
        );
    }

    #[test]
    fn rfc3339_and_iso_forms() {
        let cases = [
            (
                "2026-11-22T10:00:01.003456+01:00 web1 sshd[1]: x",
                "2026-11-22T09:00:01.003456Z",
            ),
            ("2026-11-22T10:00:01Z web1 x", "2026-11-22T10:00:01Z"),
            ("2026-11-22T10:00:01-0500 web1 x", "2026-11-22T15:00:01Z"),
            // A space for the `T`, a double space before the host, no offset: the zone's.
            (
                "2026-11-22 10:00:01  web1 sshd[1]: x",
                "2026-11-22T09:00:01Z",
            ),
            ("2026-11-22 10:00:01,250 INFO x", "2026-11-22T09:00:01.25Z"),
            // nginx's error log.
            (
                "2026/11/22 10:00:01 [error] 77#77: *1 x",
                "2026-11-22T09:00:01Z",
            ),
            // Digits past nanoseconds are dropped.
            (
                "2026-11-22T10:00:01.1234567891Z x",
                "2026-11-22T10:00:01.123456789Z",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                stated("Europe/Berlin", line, NOW).as_deref(),
                Some(want),
                "{line}"
            );
        }
    }

    #[test]
    fn rfc5424_with_and_without_structured_data() {
        for line in [
            "<34>1 2026-11-22T10:00:01.003Z host app 1 ID47 - Failed password",
            "<165>1 2026-11-22T10:00:01.003Z host app - - [exampleSDID@32473 iut=\"3\"] x",
            "<34>2026-11-22T10:00:01.003Z host app: x",
        ] {
            assert_eq!(
                stated("Asia/Tokyo", line, NOW).as_deref(),
                Some("2026-11-22T10:00:01.003Z"),
                "{line}"
            );
        }
        // A priority before a classic syslog time.
        assert_eq!(
            stated("UTC", "<13>Nov 22 10:00:01 h x", NOW).as_deref(),
            Some("2026-11-22T10:00:01Z")
        );
        // RFC 5424's nil timestamp states no time.
        assert_eq!(stated("UTC", "<34>1 - host app - - - x", NOW), None);
    }

    #[test]
    fn access_log_time_anywhere() {
        let line = r#"203.0.113.7 - - [22/Nov/2026:10:03:00 +0100] "GET /.env HTTP/1.1" 404 153"#;
        assert_eq!(
            stated("UTC", line, NOW).as_deref(),
            Some("2026-11-22T09:03:00Z")
        );
        // A bracket that is not a time is skipped.
        let line = r#"[client 1.2.3.4] [22/Nov/2026:10:03:00 -0000] x"#;
        assert_eq!(
            stated("UTC", line, NOW).as_deref(),
            Some("2026-11-22T10:03:00Z")
        );
    }

    #[test]
    fn lines_without_a_readable_time_state_none() {
        for line in [
            "",
            "seq=1 Failed password for root",
            "Foo 22 10:00:01 h x",
            "Nov 22 10:00 h x",
            "Nov 32 10:00:01 h x",
            "2026-13-22T10:00:01Z x",
            "2026-11-22T25:00:01Z x",
            "2026-11-22T10:00:012 x",
            "2026-11-22T10:00:01+01: x",
            "[22/Nov/2026:10:03:00] no offset",
            "<34>",
            "<34>1 ",
        ] {
            assert_eq!(stated("UTC", line, NOW), None, "{line:?}");
        }
    }

    #[test]
    fn gates_count_by_the_stated_time_but_never_after_the_read_time() {
        let clock = clock("UTC");
        let read = at(NOW);
        let past = clock.times("2026-11-22T10:00:01Z h x", read);
        assert_eq!(past.time(), at("2026-11-22T10:00:01Z"));
        assert_eq!(past.gate_time(), past.time());
        let ahead = clock.times("2026-11-30T07:00:00Z h x", read);
        assert_eq!(ahead.time(), at("2026-11-30T07:00:00Z"));
        assert_eq!(ahead.gate_time(), read);
        let none = clock.times("no time here", read);
        assert_eq!((none.stated, none.time()), (None, read));
    }

    #[test]
    fn unknown_zones_are_named_in_the_error() {
        let error = zone_named(Some("Mars/Olympus")).unwrap_err();
        assert!(error.contains("Mars/Olympus"), "{error}");
        assert!(zone_named(Some("UTC")).is_ok());
    }

    /// A civil time in a year near now, with an optional fraction.
    fn civil_times() -> impl Strategy<Value = DateTime> {
        (
            2000i16..2100,
            1i8..=12,
            1i8..=31,
            0i8..24,
            0i8..60,
            0i8..60,
            prop_oneof![Just(0i32), 0i32..1_000_000_000],
        )
            .prop_filter_map("a real date", |(y, mo, d, h, mi, s, ns)| {
                DateTime::new(y, mo, d, h, mi, s, ns).ok()
            })
    }

    fn fraction(nanos: i32) -> String {
        if nanos == 0 {
            String::new()
        } else {
            format!(".{nanos:09}")
        }
    }

    proptest! {
        /// Lines read one after another through a memo read as each alone:
        /// classic times in any zone and form (fractions, one-digit days,
        /// what follows them), other forms between them, "now" changing.
        #[test]
        fn a_remembered_time_reads_as_the_line_alone(
            lines in prop::collection::vec((
                prop::sample::select(vec!["", "<13>", "<13>1 "]),
                prop::sample::select(vec![
                    "Nov 22 10:00:01", "Nov 22 10:00:01.5", "Nov 22 10:00:01,25", "Nov  2 10:00:01",
                    "Nov 2 10:00:01", "Feb 29 23:59:59", "Dec 31 23:59:59", "Jan  1 00:00:00",
                    "2026-11-22T10:00:01Z", "Nov 22 10:00:0", "Nov 22 10:00:01.123456789012345678901",
                ]),
                prop::sample::select(vec![" web1 sshd[1]: x", "", "+01:00 x", ".7 x", "x", "5 x", "-"]),
                0usize..2,
            ), 1..12),
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"]),
        ) {
            let clock = clock(zone);
            let nows = [at(NOW), at("2027-01-01T00:30:00Z")];
            let mut remembering = RememberingClock::new(clock.clone());
            for (priority, time, rest, now) in lines {
                let line = format!("{priority}{time}{rest}");
                prop_assert_eq!(
                    remembering.times(&line, nows[now]).stated,
                    clock.stated_time(&line, nows[now]),
                    "{:?}", line
                );
            }
        }

        #[test]
        fn arbitrary_input_never_panics(line in any::<String>()) {
            let clock = clock("Europe/Berlin");
            let _ = clock.stated_time(&line, at(NOW));
        }

        #[test]
        fn timestamp_like_input_never_panics(
            line in r"(<[0-9]{1,4}>)?1? ?[0-9A-Za-z]{3,4}[-/ ]{1,2}[0-9]{1,3}[-/ T:][0-9:.,]{0,20}[Zz+\-0-9: \]\[]{0,8}.{0,5}"
        ) {
            let clock = clock("America/New_York");
            let _ = clock.stated_time(&line, at(NOW));
        }

        #[test]
        fn rfc3339_with_offset_round_trips(
            civil in civil_times(),
            offset_minutes in -(14 * 60)..=(14 * 60i32),
            space in any::<bool>(),
            colon in any::<bool>(),
        ) {
            let offset = Offset::from_seconds(offset_minutes * 60).unwrap();
            let want = offset.to_timestamp(civil).unwrap();
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let (h, m) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
            let line = format!(
                "{}{}{}{}{sign}{h:02}{}{m:02} web1 sshd[1]: x",
                civil.date(),
                if space { ' ' } else { 'T' },
                civil.time().strftime("%H:%M:%S"),
                fraction(civil.subsec_nanosecond()),
                if colon { ":" } else { "" },
            );
            prop_assert_eq!(clock("UTC").stated_time(&line, at(NOW)), Some(want), "{}", line);
        }

        #[test]
        fn rfc5424_round_trips(civil in civil_times(), pri in 0u8..192) {
            let want = Offset::UTC.to_timestamp(civil).unwrap();
            let line = format!(
                "<{pri}>1 {}T{}{}Z host app - - - x",
                civil.date(),
                civil.time().strftime("%H:%M:%S"),
                fraction(civil.subsec_nanosecond()),
            );
            prop_assert_eq!(clock("Asia/Kolkata").stated_time(&line, at(NOW)), Some(want), "{}", line);
        }

        #[test]
        fn iso_without_offset_is_in_the_input_zone(civil in civil_times()) {
            let zone = zone_named(Some("Australia/Sydney")).unwrap();
            let want = in_zone(civil, &zone).unwrap();
            let line = format!(
                "{}{}  web1 x",
                civil.strftime("%Y-%m-%d %H:%M:%S"),
                fraction(civil.subsec_nanosecond())
            );
            let got = LineClock::new(zone).stated_time(&line, at(NOW));
            prop_assert_eq!(got, Some(want), "{}", line);
        }

        #[test]
        fn access_log_round_trips(civil in civil_times(), offset_minutes in -(12 * 60)..=(14 * 60i32)) {
            let offset = Offset::from_seconds(offset_minutes * 60).unwrap();
            let want = offset.to_timestamp(civil.with().subsec_nanosecond(0).build().unwrap()).unwrap();
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let (h, m) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
            let line = format!(
                "192.0.2.1 - bob [{} {sign}{h:02}{m:02}] \"GET / HTTP/1.1\" 200 1",
                civil.strftime("%d/%b/%Y:%H:%M:%S"),
            );
            prop_assert_eq!(clock("UTC").stated_time(&line, at(NOW)), Some(want), "{}", line);
        }

        #[test]
        fn syslog_round_trips_within_the_last_year(
            seconds_ago in 0i64..(364 * 86_400),
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kathmandu"]),
        ) {
            let now = at(NOW);
            let tz = zone_named(Some(zone)).unwrap();
            let when = now.checked_sub(SignedDuration::from_secs(seconds_ago)).unwrap();
            let local = when.to_zoned_datetime(tz.clone()).datetime();
            let line = format!("{} web1 sshd[1]: x", local.strftime("%b %e %H:%M:%S"));
            let got = LineClock::new(tz.clone()).stated_time(&line, now);
            // In a DST fold the earlier instant of the two is taken.
            let want = in_zone(local, &tz).unwrap();
            prop_assert_eq!(got, Some(want), "{}", line);
            prop_assert!(want <= when);
        }
    }
}
