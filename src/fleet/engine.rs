//! The connection to Redis and the scripts of `scripts`, as typed calls.
//!
//! The connection is made on first use and made again after any failure, so
//! an agent starts, tails and queues without Redis, and a Redis that comes
//! back is used again without a restart. Every call is bounded in time.
//! Messages never hold the URL's password: they show the URL redacted and
//! scrub what the client says.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, Value};
use tokio::sync::Mutex;

use super::scripts;
use crate::config::SecretUrl;

/// How long connecting, and then any one call, may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The keys of one shared webhook, all under the hash tag `{namespace:webhook}`.
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    pub fn new(namespace: &str, webhook: &str) -> Keys {
        Keys {
            tag: format!("{{{namespace}:{webhook}}}"),
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.tag)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Redis could not be reached or failed the call.
    #[error("Redis at {at}: {reason}")]
    Redis { at: String, reason: String },
    /// The caller's lease is gone: another agent may be the sender now.
    #[error("the sender's lease expired or was taken over")]
    Fenced,
}

/// A queued event as the shared stream holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its id in the stream, to acknowledge it.
    pub stream_id: String,
    /// The event's own id (the dedupe key).
    pub event_id: String,
    /// The event's JSON.
    pub event: Vec<u8>,
}

/// What [`Engine::join`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// The fleet's genesis (when its keys were first made, Redis's clock,
    /// ms); `adopt`: the agent must charge its recorded attempts again.
    Genesis { genesis: String, adopt: bool },
    /// Another agent shares this webhook with a different URL, content type or limits.
    Refused,
}

/// What [`Engine::acquire`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is the caller's, with this fencing token.
    Token(u64),
    /// Another agent holds it (`token:holder`).
    HeldBy(String),
}

/// What [`Engine::charge`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Charge {
    /// One attempt charged, at Redis's `now` (ms).
    Charged { attempt: i64, now_ms: i64 },
    /// No room (or a Retry-After, or a quiet period): nothing charged.
    Wait(Duration),
    /// The fleet's keys are gone (a Redis back empty): join again first.
    Rejoin,
}

/// What [`Engine::reclaim`] did.
#[derive(Debug)]
pub enum Reclaimed {
    /// An earlier holder's attempt may still arrive: reclaim after this.
    Wait(Duration),
    /// Entries now pending for the caller; `done` when none is left to claim.
    Entries { entries: Vec<Entry>, next: String },
}

/// One rate window as the CHARGE script takes it.
#[derive(Debug, Clone, Copy)]
pub struct WindowArgs {
    pub count: u32,
    pub period: Duration,
    /// The period plus the jitter margin.
    pub held: Duration,
    /// Counts whole UTC days rather than sliding.
    pub calendar: bool,
}

struct Scripts {
    join: Script,
    adopt: Script,
    enqueue: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    read: Script,
    reclaim: Script,
    charge: Script,
    settle: Script,
    ack: Script,
    ledger: Script,
    seen: Script,
    overview: Script,
}

pub struct Engine {
    client: redis::Client,
    url: SecretUrl,
    connection: Mutex<Option<MultiplexedConnection>>,
    scripts: Scripts,
}

impl Engine {
    pub fn new(url: &SecretUrl) -> Result<Engine, EngineError> {
        let client =
            redis::Client::open(url.expose().as_str()).map_err(|e| EngineError::Redis {
                at: url.to_string(),
                reason: url.scrub(&e.to_string()),
            })?;
        Ok(Engine {
            client,
            url: url.clone(),
            connection: Mutex::new(None),
            scripts: Scripts {
                join: Script::new(&scripts::join()),
                adopt: Script::new(scripts::ADOPT),
                enqueue: Script::new(scripts::ENQUEUE),
                acquire: Script::new(scripts::ACQUIRE),
                renew: Script::new(&scripts::renew()),
                release: Script::new(&scripts::release()),
                read: Script::new(&scripts::read()),
                reclaim: Script::new(&scripts::reclaim()),
                charge: Script::new(&scripts::charge()),
                settle: Script::new(&scripts::settle()),
                ack: Script::new(scripts::ACK),
                ledger: Script::new(&scripts::ledger()),
                seen: Script::new(&scripts::seen()),
                overview: Script::new(&scripts::overview()),
            },
        })
    }

    fn failed(&self, reason: impl std::fmt::Display) -> EngineError {
        EngineError::Redis {
            at: self.url.to_string(),
            reason: self.url.scrub(&reason.to_string()),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, EngineError> {
        let mut held = self.connection.lock().await;
        if let Some(connection) = held.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let connection = tokio::time::timeout(CALL_TIMEOUT, connecting)
            .await
            .map_err(|_| self.failed("no connection within 3s"))?
            .map_err(|e| self.failed(e))?;
        *held = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `script`; any failure drops the connection, so the next call
    /// connects again.
    async fn run(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<Value, EngineError> {
        let mut connection = self.connection().await?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg.as_slice());
        }
        let called = tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async(&mut connection));
        let result = match called.await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => self.failed(e),
            Err(_) => self.failed("no answer within 3s"),
        };
        *self.connection.lock().await = None;
        Err(result)
    }

    /// A fenced script's reply: `Fenced` when it says so.
    async fn run_fenced(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<Vec<Value>, EngineError> {
        let reply = array(self.run(script, keys, args).await?);
        match reply.first().map(text).as_deref() {
            Some("fenced") => Err(EngineError::Fenced),
            Some(_) => Ok(reply),
            None => Err(self.failed("empty reply from a script")),
        }
    }

    /// Whether Redis answers (`check --online`): its version, or why not.
    pub async fn ping(&self) -> Result<String, EngineError> {
        let mut connection = self.connection().await?;
        let info: String = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("INFO")
                .arg("server")
                .query_async(&mut connection),
        )
        .await
        .map_err(|_| self.failed("no answer within 3s"))?
        .map_err(|e| self.failed(e))?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string())
    }

    /// Joins the fleet for the webhook of `keys` (and says `host` is
    /// alive); `genesis_seen`: the genesis this agent saw before.
    pub async fn join(
        &self,
        keys: &Keys,
        fingerprint: &str,
        host: &str,
        quiet: Duration,
        genesis_seen: Option<&str>,
    ) -> Result<Joined, EngineError> {
        let names = ["fingerprint", "genesis", "quiet", "stream", "agents"];
        let args = [
            fingerprint.as_bytes().to_vec(),
            host.as_bytes().to_vec(),
            millis(quiet).to_string().into_bytes(),
            genesis_seen.unwrap_or("").as_bytes().to_vec(),
        ];
        let reply = array(
            self.run(&self.scripts.join, &key_list(keys, &names), &args)
                .await?,
        );
        match reply.first().map(text).as_deref() {
            Some("refused") => Ok(Joined::Refused),
            Some("ok") => Ok(Joined::Genesis {
                genesis: reply.get(1).map(text).unwrap_or_default(),
                adopt: reply.get(2).map_or(0, int) == 1,
            }),
            _ => Err(self.failed("unexpected reply to JOIN")),
        }
    }

    /// Charges `host`'s own recorded attempts (ms since the epoch) again.
    pub async fn adopt(
        &self,
        keys: &Keys,
        host: &str,
        attempts_ms: &[i64],
    ) -> Result<(), EngineError> {
        let mut args = vec![host.as_bytes().to_vec()];
        args.extend(attempts_ms.iter().map(|ms| ms.to_string().into_bytes()));
        self.run(&self.scripts.adopt, &key_list(keys, &["stamps"]), &args)
            .await
            .map(drop)
    }

    /// Adds `events` (id, JSON) not already in the stream, in order, while
    /// it has room; how many of them it took (added or already there), or
    /// `None` when the fleet's keys are gone and the agent must join again.
    pub async fn enqueue(
        &self,
        keys: &Keys,
        max_stream_events: u64,
        events: &[(&str, &[u8])],
    ) -> Result<Option<usize>, EngineError> {
        let mut args = vec![max_stream_events.to_string().into_bytes()];
        for (id, json) in events {
            args.push(id.as_bytes().to_vec());
            args.push(json.to_vec());
        }
        let reply = self
            .run(
                &self.scripts.enqueue,
                &key_list(keys, &["stream", "ids", "genesis"]),
                &args,
            )
            .await?;
        Ok(usize::try_from(int(&reply)).ok())
    }

    pub async fn acquire(
        &self,
        keys: &Keys,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquired, EngineError> {
        let args = [
            holder.as_bytes().to_vec(),
            millis(ttl).to_string().into_bytes(),
        ];
        let reply = array(
            self.run(
                &self.scripts.acquire,
                &key_list(keys, &["lease", "epoch"]),
                &args,
            )
            .await?,
        );
        match reply.first().map(text).as_deref() {
            Some("ok") => Ok(Acquired::Token(reply.get(1).map_or(0, int) as u64)),
            Some("held") => Ok(Acquired::HeldBy(reply.get(1).map(text).unwrap_or_default())),
            _ => Err(self.failed("unexpected reply to ACQUIRE")),
        }
    }

    pub async fn renew(&self, keys: &Keys, lease: &str, ttl: Duration) -> Result<(), EngineError> {
        let args = [
            lease.as_bytes().to_vec(),
            millis(ttl).to_string().into_bytes(),
        ];
        self.run_fenced(&self.scripts.renew, &key_list(keys, &["lease"]), &args)
            .await
            .map(drop)
    }

    pub async fn release(&self, keys: &Keys, lease: &str) -> Result<(), EngineError> {
        self.run_fenced(
            &self.scripts.release,
            &key_list(keys, &["lease"]),
            &[lease.as_bytes().to_vec()],
        )
        .await
        .map(drop)
    }

    /// Up to `count` new entries into the pending list of `consumer`.
    pub async fn read(
        &self,
        keys: &Keys,
        lease: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, EngineError> {
        let args = [
            lease.as_bytes().to_vec(),
            consumer.as_bytes().to_vec(),
            count.to_string().into_bytes(),
        ];
        let reply = self
            .run_fenced(
                &self.scripts.read,
                &key_list(keys, &["lease", "stream"]),
                &args,
            )
            .await?;
        Ok(entries(reply.into_iter().nth(1)))
    }

    /// Claims up to `count` pending entries of any consumer for `consumer`,
    /// from the cursor `from` (`0-0` first).
    pub async fn reclaim(
        &self,
        keys: &Keys,
        lease: &str,
        consumer: &str,
        count: usize,
        from: &str,
    ) -> Result<Reclaimed, EngineError> {
        let args = [
            lease.as_bytes().to_vec(),
            consumer.as_bytes().to_vec(),
            count.to_string().into_bytes(),
            from.as_bytes().to_vec(),
        ];
        let reply = self
            .run_fenced(
                &self.scripts.reclaim,
                &key_list(keys, &["lease", "stream", "open"]),
                &args,
            )
            .await?;
        if reply.first().map(text).as_deref() == Some("wait") {
            return Ok(Reclaimed::Wait(wait_of(reply.get(1))));
        }
        let mut parts = reply.into_iter().skip(1);
        let next = parts.next().as_ref().map(text).unwrap_or_default();
        Ok(Reclaimed::Entries {
            entries: entries(parts.next()),
            next,
        })
    }

    /// Charges one attempt if every window has room; `lease` is `None` for
    /// a manual send, which moves no entry and so needs no lease.
    pub async fn charge(
        &self,
        keys: &Keys,
        lease: Option<&str>,
        request_timeout: Duration,
        skew: Duration,
        windows: &[WindowArgs],
    ) -> Result<Charge, EngineError> {
        let mut args = vec![
            lease.unwrap_or("").as_bytes().to_vec(),
            millis(request_timeout).to_string().into_bytes(),
            millis(skew).to_string().into_bytes(),
            windows.len().to_string().into_bytes(),
        ];
        for w in windows {
            args.push(w.count.to_string().into_bytes());
            args.push(millis(w.period).to_string().into_bytes());
            args.push(millis(w.held).to_string().into_bytes());
            args.push(if w.calendar {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            });
        }
        let names = [
            "lease", "stamps", "open", "retry", "quiet", "attempts", "genesis",
        ];
        let reply = self
            .run_fenced(&self.scripts.charge, &key_list(keys, &names), &args)
            .await?;
        match reply.first().map(text).as_deref() {
            Some("ok") => Ok(Charge::Charged {
                attempt: reply.get(1).map_or(0, int),
                now_ms: reply.get(2).map_or(0, int),
            }),
            Some("wait") => Ok(Charge::Wait(wait_of(reply.get(1)))),
            Some("genesis") => Ok(Charge::Rejoin),
            _ => Err(self.failed("unexpected reply to CHARGE")),
        }
    }

    /// The attempt was answered (or timed out) now; `retry_after` pauses
    /// every sender of the webhook.
    pub async fn settle(
        &self,
        keys: &Keys,
        attempt: i64,
        retry_after: Option<Duration>,
    ) -> Result<(), EngineError> {
        let args = [
            attempt.to_string().into_bytes(),
            retry_after.map_or(0, millis).to_string().into_bytes(),
        ];
        self.run(
            &self.scripts.settle,
            &key_list(keys, &["stamps", "open", "retry"]),
            &args,
        )
        .await
        .map(drop)
    }

    /// Delivered or dead-lettered entries leave the stream and the dedupe index.
    pub async fn ack(&self, keys: &Keys, done: &[Entry]) -> Result<(), EngineError> {
        let mut args = vec![done.len().to_string().into_bytes()];
        args.extend(done.iter().map(|e| e.stream_id.as_bytes().to_vec()));
        args.extend(done.iter().map(|e| e.event_id.as_bytes().to_vec()));
        self.run(
            &self.scripts.ack,
            &key_list(keys, &["stream", "ids"]),
            &args,
        )
        .await
        .map(drop)
    }

    /// The stamps (ms, Redis's clock) of the attempts made within `memory`
    /// before Redis's `now`, with that `now`.
    pub async fn ledger(
        &self,
        keys: &Keys,
        memory: Duration,
    ) -> Result<(i64, Vec<i64>), EngineError> {
        let reply = array(
            self.run(
                &self.scripts.ledger,
                &key_list(keys, &["stamps"]),
                &[millis(memory).to_string().into_bytes()],
            )
            .await?,
        );
        let mut stamps = reply.iter().map(int);
        let now = stamps
            .next()
            .ok_or_else(|| self.failed("empty LEDGER reply"))?;
        Ok((now, stamps.collect()))
    }

    /// What `status` shows of a shared webhook.
    pub async fn overview(
        &self,
        keys: &Keys,
        seen_within: Duration,
    ) -> Result<Overview, EngineError> {
        let reply = array(
            self.run(
                &self.scripts.overview,
                &key_list(keys, &["lease", "stream", "agents"]),
                &[millis(seen_within).to_string().into_bytes()],
            )
            .await?,
        );
        let lease = reply.first().map(text).unwrap_or_default();
        Ok(Overview {
            holder: lease.split_once(':').map(|(_, holder)| holder.to_string()),
            queued: reply.get(1).map_or(0, int) as u64,
            agents: reply.iter().skip(2).map(text).collect(),
        })
    }

    /// Records that `host` is alive (for `status`'s agents seen recently).
    pub async fn seen(&self, keys: &Keys, host: &str) -> Result<(), EngineError> {
        self.run(
            &self.scripts.seen,
            &key_list(keys, &["agents"]),
            &[host.as_bytes().to_vec()],
        )
        .await
        .map(drop)
    }
}

/// What `status` shows of a shared webhook.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The sender's `agent.host`, while one holds the lease.
    pub holder: Option<String>,
    /// Events in the shared stream (waiting or being sent).
    pub queued: u64,
    /// Agents seen within the asked time.
    pub agents: Vec<String>,
}

fn key_list(keys: &Keys, names: &[&str]) -> Vec<String> {
    names.iter().map(|name| keys.key(name)).collect()
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn wait_of(value: Option<&Value>) -> Duration {
    Duration::from_millis(value.map_or(0, int).max(1) as u64)
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        other => vec![other],
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => text(other).parse().unwrap_or(0),
    }
}

/// Stream entries (`[[id, [field, value, ...]], ...]`) as [`Entry`]s; an
/// entry without its fields (deleted meanwhile) is left out.
fn entries(value: Option<Value>) -> Vec<Entry> {
    value
        .map(array)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| {
            let mut parts = array(item).into_iter();
            let stream_id = text(&parts.next()?);
            let fields = array(parts.next()?);
            let mut event_id = None;
            let mut event = None;
            for pair in fields.chunks(2) {
                match (text(&pair[0]).as_str(), pair.get(1)) {
                    ("id", Some(v)) => event_id = Some(text(v)),
                    ("event", Some(Value::BulkString(bytes))) => event = Some(bytes.clone()),
                    _ => {}
                }
            }
            Some(Entry {
                stream_id,
                event_id: event_id?,
                event: event?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::BulkString),
            prop_oneof![Just("id"), Just("event"), Just("ok"), Just("x")]
                .prop_map(|s| Value::BulkString(s.as_bytes().to_vec())),
            "[a-z]{0,4}".prop_map(Value::SimpleString),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        })
    }

    proptest! {
        /// Whatever Redis answers, reading entries never panics, and only
        /// entries with both an id and an event come out.
        #[test]
        fn any_reply_reads_as_entries_without_panic(reply in value()) {
            let items = array(reply.clone()).len();
            prop_assert!(entries(Some(reply.clone())).len() <= items);
            // A wait is never zero: a caller never spins.
            prop_assert!(wait_of(Some(&reply)) >= Duration::from_millis(1));
            let _ = (int(&reply), text(&reply));
        }
    }

    #[test]
    fn stream_entries_read_as_events() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("id"), bulk("e1"), bulk("event"), bulk("{}")]),
            ]),
            // Deleted meanwhile: no fields.
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let read = entries(Some(reply));
        assert_eq!(read.len(), 1);
        assert_eq!(
            (
                read[0].stream_id.as_str(),
                read[0].event_id.as_str(),
                read[0].event.as_slice()
            ),
            ("1-0", "e1", b"{}".as_slice())
        );
    }
}
