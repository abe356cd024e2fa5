//! criterion micro-benchmarks of the per-line hot paths: cutting bytes into
//! lines, matching a line against the shipped rules (a miss, the common case,
//! and a hit with captures), reading the time a matched line states in each
//! header form, and encoding an event into a body.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tailhook::rules::{load_rules, rule_files, zone_named, LineClock, Matcher};
use tailhook::tail::{LineBatch, LineReader};

fn shipped_matcher() -> Matcher {
    let rules = rule_files(&[concat!(env!("CARGO_MANIFEST_DIR"), "/rules").into()]).unwrap();
    Matcher::new(
        load_rules(&rules)
            .unwrap()
            .rules
            .into_iter()
            .map(Arc::new)
            .collect(),
    )
}

const MISS: &str = "Nov 22 10:00:09 web1 CRON[902]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)";
const HIT: &str = "Nov 22 10:00:01 web1 sshd[811]: Failed password for invalid user admin from 203.0.113.7 port 52144 ssh2";

fn hot_paths(c: &mut Criterion) {
    let chunk: Vec<u8> = format!("{MISS}\n{HIT}\n").repeat(300).into_bytes();
    let mut group = c.benchmark_group("line_reader");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("split 64 KB into lines", |b| {
        b.iter(|| {
            let mut reader = LineReader::new(0, 64 * 1024);
            let mut out = LineBatch::default();
            reader.feed(black_box(&chunk), &mut out);
            out.len()
        })
    });
    group.finish();

    let matcher = shipped_matcher();
    let mut group = c.benchmark_group("matcher");
    group.throughput(Throughput::Elements(1));
    group.bench_function("line no rule matches", |b| {
        b.iter(|| matcher.matches(black_box(MISS)).count())
    });
    group.bench_function("line a rule matches (captures, types)", |b| {
        b.iter(|| matcher.matches(black_box(HIT)).count())
    });
    group.finish();

    // Paid once per matched line, never by a line no rule wants.
    let clock = LineClock::new(zone_named(Some("Europe/Berlin")).unwrap());
    let now = jiff::Timestamp::now();
    let mut group = c.benchmark_group("line_time");
    group.throughput(Throughput::Elements(1));
    for (form, line) in [
        ("classic syslog, year inferred", HIT),
        (
            "RFC 3339 with offset",
            "2026-11-22T10:00:01.003456+01:00 web1 sshd[811]: Failed password for root",
        ),
        (
            "RFC 5424",
            "<38>1 2026-11-22T10:00:01.003Z web1 sshd 811 - - Failed password for root",
        ),
        (
            "ISO, no offset (zone lookup)",
            "2026-11-22 10:00:01  web1 sshd[811]: Failed password for root",
        ),
        (
            "access log, after the client",
            r#"203.0.113.7 - - [22/Nov/2026:10:03:00 +0000] "GET /.env HTTP/1.1" 404 153 "-" "curl/8""#,
        ),
        ("no time in the line", "seq=1 Failed password for root"),
    ] {
        group.bench_function(form, |b| b.iter(|| clock.stated_time(black_box(line), now)));
    }
    group.finish();

    // Paid once per event: its JSON, written once and sent as it is.
    let event: tailhook::event::Event = serde_json::from_str(EVENT).unwrap();
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode an event's JSON", |b| {
        b.iter(|| tailhook::event::EventJson::of(black_box(&event)))
    });
    group.finish();
}

const EVENT: &str = r#"{"id":"191d7016d24b41c8dbfadf1c27011c76","rule":"sshd.auth_failed","severity":"medium","time":"2026-11-22T10:00:01Z","ingested":"2026-11-30T18:14:25.851Z","host":"vm","message":"Nov 22 10:00:01 web1 sshd[811]: Failed password for invalid user admin from 203.0.113.7 port 52144 ssh2","fields":{"event.action":"password","host.hostname":"web1","process.pid":811,"source.ip":"203.0.113.7","source.port":52144,"user.name":"admin"},"log":{"file":"/var/log/auth.log","offset":129}}"#;

criterion_group!(benches, hot_paths);
criterion_main!(benches);
