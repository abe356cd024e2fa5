//! The fleet's scripts against a real redis-server: the lease and its
//! fencing, the budget that cannot overshoot, dedupe, the stream's cap,
//! genesis and fingerprint refusal.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::redis_server::RedisServer;
use tailhook::config::SecretUrl;
use tailhook::fleet::{Acquired, Charge, Engine, EngineError, Joined, Keys, Reclaimed, WindowArgs};

fn engine(server: &RedisServer) -> Arc<Engine> {
    Arc::new(Engine::new(&SecretUrl::parse_redis(&server.url()).unwrap()).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sliding(count: u32, period_ms: u64) -> WindowArgs {
    let period = Duration::from_millis(period_ms);
    WindowArgs {
        count,
        period,
        held: period + Duration::from_millis(50),
        calendar: false,
    }
}

/// Joins as `host` (no quiet period: these tests charge at once).
async fn join(engine: &Engine, keys: &Keys, host: &str) {
    let joined = engine
        .join(keys, "fp", host, Duration::ZERO, None)
        .await
        .unwrap();
    assert!(matches!(joined, Joined::Genesis { .. }), "{joined:?}");
}

/// One attempt of at most a second against `windows`, under `lease` (none
/// for a manual send), with no clock skew allowed for.
async fn charge(
    engine: &Engine,
    keys: &Keys,
    lease: Option<&str>,
    windows: &[WindowArgs],
) -> Result<Charge, EngineError> {
    engine
        .charge(keys, lease, Duration::from_secs(1), Duration::ZERO, windows)
        .await
}

async fn lease(engine: &Engine, keys: &Keys, host: &str, ttl: Duration) -> String {
    match engine.acquire(keys, host, ttl).await.unwrap() {
        Acquired::Token(token) => format!("{token}:{host}"),
        Acquired::HeldBy(other) => panic!("lease held by {other}"),
    }
}

#[test]
fn agents_racing_for_the_lease_get_one_holder_and_a_new_token_each_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server);
    runtime().block_on(async {
        let keys = Keys::new("t", "soc");
        join(&engine, &keys, "a").await;
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let (engine, keys) = (engine.clone(), keys.clone());
                tokio::spawn(async move {
                    engine
                        .acquire(&keys, &format!("host{i}"), Duration::from_secs(30))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for racer in racers {
            if let Acquired::Token(token) = racer.await.unwrap() {
                tokens.push(token);
            }
        }
        assert_eq!(tokens.len(), 1, "exactly one agent holds the lease");
        // Freed, the next holder gets a higher token: an old one never matches again.
        let holder = match engine
            .acquire(&keys, "x", Duration::from_secs(30))
            .await
            .unwrap()
        {
            Acquired::HeldBy(value) => value,
            other => panic!("{other:?}"),
        };
        engine.release(&keys, &holder).await.unwrap();
        let next = engine
            .acquire(&keys, "x", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(next, Acquired::Token(tokens[0] + 1));
    });
}

#[test]
fn a_stale_sender_can_neither_read_reclaim_nor_charge() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server);
    runtime().block_on(async {
        let keys = Keys::new("t", "soc");
        join(&engine, &keys, "a").await;
        let events: Vec<(String, Vec<u8>)> = (0..4)
            .map(|i| (format!("id{i}"), format!("{{\"n\":{i}}}").into_bytes()))
            .collect();
        let pairs: Vec<(&str, &[u8])> = events
            .iter()
            .map(|(i, e)| (i.as_str(), e.as_slice()))
            .collect();
        assert_eq!(engine.enqueue(&keys, 100, &pairs).await.unwrap(), Some(4));
        let stale = lease(&engine, &keys, "a", Duration::from_millis(1000)).await;
        let read = engine.read(&keys, &stale, "a:1", 2).await.unwrap();
        assert_eq!(read.len(), 2, "the holder reads");
        // Its lease expires (a pause, a partition); another agent takes it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let fresh = loop {
            if let Acquired::Token(token) = engine
                .acquire(&keys, "b", Duration::from_secs(30))
                .await
                .unwrap()
            {
                break format!("{token}:b");
            }
            assert!(Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let windows = [sliding(100, 1000)];
        assert!(matches!(
            engine.read(&keys, &stale, "a:1", 10).await,
            Err(EngineError::Fenced)
        ));
        assert!(matches!(
            engine.reclaim(&keys, &stale, "a:1", 10, "0-0").await,
            Err(EngineError::Fenced)
        ));
        assert!(matches!(
            charge(&engine, &keys, Some(&stale), &windows).await,
            Err(EngineError::Fenced)
        ));
        assert!(matches!(
            engine.renew(&keys, &stale, Duration::from_secs(1)).await,
            Err(EngineError::Fenced)
        ));
        // The new holder reclaims what the stale one had read, then reads the rest.
        let Reclaimed::Entries { entries, next } = engine
            .reclaim(&keys, &fresh, "b:2", 10, "0-0")
            .await
            .unwrap()
        else {
            panic!("no open attempt: nothing to wait for")
        };
        assert_eq!(next, "0-0");
        let mut ids: Vec<String> = entries.iter().map(|e| e.event_id.clone()).collect();
        ids.extend(
            engine
                .read(&keys, &fresh, "b:2", 10)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_id),
        );
        assert_eq!(ids, ["id0", "id1", "id2", "id3"]);
        assert!(matches!(
            charge(&engine, &keys, Some(&fresh), &windows).await,
            Ok(Charge::Charged { .. })
        ));
    });
}

#[test]
fn a_takeover_waits_for_the_open_attempts_of_the_previous_sender() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server);
    runtime().block_on(async {
        let keys = Keys::new("t", "soc");
        join(&engine, &keys, "a").await;
        let first = lease(&engine, &keys, "a", Duration::from_secs(30)).await;
        let timeout = Duration::from_millis(1500);
        let charged = engine
            .charge(
                &keys,
                Some(&first),
                timeout,
                Duration::ZERO,
                &[sliding(10, 1000)],
            )
            .await
            .unwrap();
        assert!(matches!(charged, Charge::Charged { .. }));
        // The sender dies mid-request; its lease is gone.
        engine.release(&keys, &first).await.unwrap();
        let second = lease(&engine, &keys, "b", Duration::from_secs(30)).await;
        match engine
            .reclaim(&keys, &second, "b:2", 10, "0-0")
            .await
            .unwrap()
        {
            Reclaimed::Wait(wait) => assert!(
                wait > Duration::from_millis(1000) && wait <= timeout,
                "waits until the open attempt's deadline: {wait:?}"
            ),
            other => panic!("reclaimed while an attempt may still arrive: {other:?}"),
        }
    });
}

#[test]
fn concurrent_charges_never_overshoot_a_window() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server);
    let windows = [sliding(5, 1000), sliding(8, 3000)];
    let charged = runtime().block_on(async {
        let keys = Keys::new("t", "soc");
        join(&engine, &keys, "a").await;
        let start = Instant::now();
        let agents: Vec<_> = (0..8)
            .map(|_| {
                let (engine, keys) = (engine.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut at = Vec::new();
                    while start.elapsed() < Duration::from_secs(4) {
                        match engine
                            .charge(
                                &keys,
                                None,
                                Duration::from_millis(200),
                                Duration::ZERO,
                                &windows,
                            )
                            .await
                            .unwrap()
                        {
                            Charge::Charged { attempt, now_ms } => {
                                at.push(now_ms);
                                engine.settle(&keys, attempt, None).await.unwrap();
                            }
                            Charge::Wait(wait) => {
                                tokio::time::sleep(wait.min(Duration::from_millis(20))).await
                            }
                            Charge::Rejoin => panic!("the fleet's keys vanished"),
                        }
                    }
                    at
                })
            })
            .collect();
        let mut all = Vec::new();
        for agent in agents {
            all.extend(agent.await.unwrap());
        }
        all.sort_unstable();
        all
    });
    for window in &windows {
        let period = window.period.as_millis() as i64;
        for (i, at) in charged.iter().enumerate() {
            let within = charged[i..]
                .iter()
                .take_while(|t| **t - *at < period)
                .count();
            assert!(
                within <= window.count as usize,
                "{within} attempts within {period} ms from {at}: {charged:?}"
            );
        }
    }
    // 4 s of 8/3s (and 5/1s): at most 16, and the windows were used.
    assert!(charged.len() >= 8 && charged.len() <= 16, "{charged:?}");
}

#[test]
fn enqueue_drops_duplicate_ids_and_stops_at_the_stream_cap() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server);
    runtime().block_on(async {
        let keys = Keys::new("t", "soc");
        join(&engine, &keys, "a").await;
        let events: Vec<(String, Vec<u8>)> =
            (0..5).map(|i| (format!("id{i}"), b"{}".to_vec())).collect();
        let pairs: Vec<(&str, &[u8])> = events
            .iter()
            .map(|(i, e)| (i.as_str(), e.as_slice()))
            .collect();
        assert_eq!(
            engine.enqueue(&keys, 3, &pairs).await.unwrap(),
            Some(3),
            "the cap"
        );
        // The same events again (a forwarder whose removal failed): no duplicate.
        assert_eq!(
            engine.enqueue(&keys, 3, &pairs[..3]).await.unwrap(),
            Some(3)
        );
        assert_eq!(engine.enqueue(&keys, 10, &pairs).await.unwrap(), Some(5));
        let mut redis = server.connection();
        let length: u64 = redis::cmd("XLEN")
            .arg(keys.key("stream"))
            .query(&mut redis)
            .unwrap();
        assert_eq!(length, 5);
    });
}

#[test]
fn a_redis_back_empty_is_detected_and_gives_no_fresh_budget() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server);
    let rt = runtime();
    let keys = Keys::new("t", "soc");
    let windows = [sliding(5, 2000)];
    let quiet = windows[0].held;
    rt.block_on(async {
        let first = engine.join(&keys, "fp", "a", quiet, None).await.unwrap();
        let Joined::Genesis { genesis, adopt } = first else {
            panic!("{first:?}")
        };
        assert!(adopt, "a new genesis: the agent's own attempts count again");
        // A new genesis keeps every attempt back for the longest sliding window.
        match charge(&engine, &keys, None, &windows).await.unwrap() {
            Charge::Wait(wait) => assert!(
                wait > Duration::from_millis(1500) && wait <= quiet,
                "{wait:?}"
            ),
            other => panic!("charged during the quiet period: {other:?}"),
        }
        let again = engine
            .join(&keys, "fp", "a", quiet, Some(&genesis))
            .await
            .unwrap();
        assert_eq!(
            again,
            Joined::Genesis {
                genesis: genesis.clone(),
                adopt: false
            }
        );
    });
    server.kill();
    server.restart_empty();
    rt.block_on(async {
        // The engine connects again by itself; the fleet's keys are gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            match charge(&engine, &keys, None, &windows).await {
                Ok(found) => break found,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(found, Charge::Rejoin);
        assert_eq!(
            engine.enqueue(&keys, 10, &[("x", b"{}")]).await.unwrap(),
            None
        );
        let Joined::Genesis { adopt, .. } = engine
            .join(&keys, "fp", "a", quiet, Some("earlier"))
            .await
            .unwrap()
        else {
            panic!("refused")
        };
        assert!(adopt);
        engine.adopt(&keys, "a", &[1, 2]).await.unwrap();
        assert!(matches!(
            charge(&engine, &keys, None, &windows).await.unwrap(),
            Charge::Wait(_)
        ));
    });
}

#[test]
fn an_agent_with_another_fingerprint_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server);
    runtime().block_on(async {
        let keys = Keys::new("t", "soc");
        join(&engine, &keys, "a").await;
        let other = engine
            .join(&keys, "another", "b", Duration::ZERO, None)
            .await
            .unwrap();
        assert_eq!(other, Joined::Refused);
    });
    // Only the fingerprint is stored, never a URL.
    let mut redis = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
    assert!(keys.iter().all(|k| k.starts_with("{t:soc}:")), "{keys:?}");
}
