//! A shared webhook's budget: every attempt of every agent (the sender's,
//! its retries, `tailhook send` anywhere) is charged by one atomic script
//! against every window, on Redis's clock, with a pessimistic stamp
//! (`now + request_timeout`) until it is answered.
//!
//! The windows are the webhook's own, shaped as the local limiter shapes
//! them (`deliver::limit`: the same jitter margin, whole days counted by
//! the UTC calendar). For pacing and `status`, the fleet's ledger is read
//! back into a [`RateLimiter`], so pacing is the same arithmetic fleet-wide.
//!
//! Joining: an agent that finds the fleet's keys gone (a new fleet, or a
//! Redis that came back empty) makes a new genesis; then no attempt goes
//! for the longest sliding window, and every agent charges the attempts it
//! recorded itself again: the day's budget is never taken as fresh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use tokio::sync::watch;

use super::engine::{Charge, Engine, EngineError, Joined, Keys, Overview, WindowArgs};
use super::{Fence, Fleet};
use crate::config::{RateLimit, WebhookConfig};
use crate::deliver::limit::{held_for, is_calendar, jitter_margin};
use crate::deliver::{Halt, RateLimiter, Webhook, WindowUsage};
use crate::queue::Queue;

/// How long an attempt waits before asking an unreachable Redis again.
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);

/// The longest an attempt waits before asking the ledger again: an answer
/// elsewhere may free the budget sooner than the ledger said.
const RECHECK: Duration = Duration::from_millis(500);

/// What a charge did.
pub enum Spend {
    /// Charged: the attempt's id in the ledger.
    Charged(i64),
    /// No room until then (at the latest: asked again by then).
    FreeAt(Instant),
}

pub enum SpendError {
    /// The sender's lease is gone.
    Fenced,
    /// Nothing was charged: Redis is away, or this agent was refused.
    Unreachable(String),
}

pub struct SharedBudget {
    fleet: Arc<Fleet>,
    pub keys: Keys,
    webhook: String,
    limits: Vec<RateLimit>,
    windows: Vec<WindowArgs>,
    fingerprint: String,
    /// The genesis this agent joined, to tell a Redis that came back empty.
    genesis_seen: Mutex<Option<String>>,
    /// Another agent shares the webhook with a different fingerprint.
    refused: AtomicBool,
    /// The shared webhook as last observed, or why it could not be.
    observed: Mutex<Option<Result<Observed, String>>>,
    /// This agent's own attempts are recorded in this lane.
    queue: Arc<Queue>,
    lane: usize,
}

impl SharedBudget {
    pub fn new(
        fleet: Arc<Fleet>,
        webhook: &WebhookConfig,
        queue: Arc<Queue>,
        lane: usize,
    ) -> SharedBudget {
        SharedBudget {
            keys: fleet.keys(&webhook.name),
            fleet,
            webhook: webhook.name.clone(),
            limits: webhook.rate_limits.clone(),
            windows: window_args(&webhook.rate_limits),
            fingerprint: Fleet::fingerprint(webhook),
            genesis_seen: Mutex::new(None),
            refused: AtomicBool::new(false),
            observed: Mutex::new(None),
            queue,
            lane,
        }
    }

    /// The webhook's name.
    pub fn name(&self) -> &str {
        &self.webhook
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Why this agent may not use the shared webhook, once refused.
    pub fn refusal(&self) -> Option<String> {
        self.refused
            .load(Ordering::Relaxed)
            .then(|| self.refusal_text())
    }

    fn refusal_text(&self) -> String {
        format!(
            "webhook `{}`: another agent of the fleet (namespace `{}`) shares it with a different URL, \
             content type or rate limits; this agent does not join: make [webhook.{}] the same on every agent",
            self.webhook, self.fleet.config.namespace, self.webhook
        )
    }

    /// Joins the fleet for this webhook (and says this agent is alive);
    /// after a new genesis, charges this agent's recorded attempts again.
    pub async fn join(&self) -> Result<(), String> {
        let seen = self.genesis_seen.lock().expect("genesis").clone();
        let quiet = self
            .limits
            .iter()
            .filter(|l| !is_calendar(**l))
            .map(|l| held_for(*l))
            .max()
            .unwrap_or_default();
        let joined = self
            .fleet
            .engine
            .join(
                &self.keys,
                &self.fingerprint,
                &self.fleet.host,
                quiet,
                seen.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let (genesis, adopt) = match joined {
            Joined::Refused => {
                let refusal = self.refusal_text();
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::error!(webhook = %self.webhook, "{refusal}");
                }
                return Err(refusal);
            }
            Joined::Genesis { genesis, adopt } => (genesis, adopt),
        };
        self.refused.store(false, Ordering::Relaxed);
        if adopt {
            if seen.is_some() {
                tracing::warn!(webhook = %self.webhook, "the fleet's Redis lost its keys (restarted empty?): no attempt goes for the longest sliding window, and this agent's recorded attempts count again");
            }
            let memory = RateLimiter::new(&self.limits).memory().unwrap_or_default();
            let (queue, lane) = (self.queue.clone(), self.lane);
            let recorded = tokio::task::spawn_blocking(move || queue.recent_attempts(lane, memory))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let ms: Vec<i64> = recorded
                .iter()
                .filter_map(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .collect();
            if !ms.is_empty() {
                self.fleet
                    .engine
                    .adopt(&self.keys, &self.fleet.host, &ms)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        *self.genesis_seen.lock().expect("genesis") = Some(genesis);
        Ok(())
    }

    /// Charges one attempt that may take `timeout`, fenced by the sender's
    /// lease (`None`: a manual send).
    pub async fn charge(
        &self,
        fence: Option<&Fence>,
        timeout: Duration,
    ) -> Result<Spend, SpendError> {
        if let Some(refusal) = self.refusal() {
            return Err(SpendError::Unreachable(refusal));
        }
        let lease = match fence {
            Some(fence) => Some(fence.value().ok_or(SpendError::Fenced)?),
            None => None,
        };
        let skew = jitter_margin(Duration::from_secs(86_400));
        let charged = self
            .fleet
            .engine
            .charge(&self.keys, lease, timeout, skew, &self.windows)
            .await;
        match charged {
            Ok(Charge::Charged { attempt, .. }) => Ok(Spend::Charged(attempt)),
            Ok(Charge::Wait(wait)) => Ok(Spend::FreeAt(Instant::now() + wait.min(RECHECK))),
            Ok(Charge::Rejoin) => {
                self.join().await.map_err(SpendError::Unreachable)?;
                Ok(Spend::FreeAt(Instant::now()))
            }
            Err(EngineError::Fenced) => Err(SpendError::Fenced),
            Err(e) => Err(SpendError::Unreachable(e.to_string())),
        }
    }

    /// The attempt was answered (or timed out): it counts from now; a
    /// `retry_after` pauses every agent. Unrecorded, it keeps counting
    /// until its pessimistic stamp: safe, only slower.
    pub async fn settle(&self, attempt: i64, retry_after: Option<Duration>) {
        if let Err(e) = self
            .fleet
            .engine
            .settle(&self.keys, attempt, retry_after)
            .await
        {
            tracing::warn!(webhook = %self.webhook, error = %e, "cannot record the attempt's answer in the fleet's ledger; it counts until its deadline");
        }
    }

    /// The fleet's attempts as a limiter: what pacing and `status` read.
    pub async fn ledger(&self) -> Result<RateLimiter, EngineError> {
        ledger(&self.fleet.engine, &self.keys, &self.limits).await
    }

    /// What `status` and `/metrics` show, as last observed by [`SharedBudget::watch`].
    pub fn observed(&self) -> Option<Result<Observed, String>> {
        self.observed.lock().expect("observed").clone()
    }

    /// Says every `OBSERVE_EVERY` that this agent is alive, and observes
    /// the shared webhook for `status` and `/metrics` (the limiter of
    /// `webhook` then mirrors the fleet's ledger), until `stop` changes
    /// from [`Halt::Run`].
    pub async fn watch(self: Arc<Self>, webhook: Arc<Webhook>, mut stop: watch::Receiver<Halt>) {
        while *stop.borrow() == Halt::Run {
            let engine = &self.fleet.engine;
            let observed = match engine.seen(&self.keys, &self.fleet.host).await {
                Ok(()) => {
                    self.fleet
                        .observe(&self.keys, &self.limits, webhook.config.pacing)
                        .await
                }
                Err(e) => Err(e),
            };
            let observed = observed
                .map_err(|e| e.to_string())
                .map(|(observed, ledger)| {
                    webhook.mirror(ledger);
                    observed
                });
            *self.observed.lock().expect("observed") = Some(observed);
            tokio::select! {
                () = tokio::time::sleep(OBSERVE_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// How often an agent says it is alive and observes its shared webhooks
/// (a ledger read: up to a day's attempts).
const OBSERVE_EVERY: Duration = Duration::from_secs(5);

/// A shared webhook as `status` and `/metrics` show it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub overview: Overview,
    /// The fleet's attempts in each window.
    pub budget: Vec<WindowUsage>,
}

/// The fleet's attempts in the ledger of `keys` as a limiter of `limits`.
pub async fn ledger(
    engine: &Engine,
    keys: &Keys,
    limits: &[RateLimit],
) -> Result<RateLimiter, EngineError> {
    let memory = RateLimiter::new(limits).memory().unwrap_or_default();
    let (redis_now, stamps) = engine.ledger(keys, memory).await?;
    let local_now = SystemTime::now();
    let times: Vec<SystemTime> = stamps
        .iter()
        .map(|&stamp| {
            let offset = Duration::from_millis(stamp.abs_diff(redis_now));
            if stamp <= redis_now {
                local_now.checked_sub(offset).unwrap_or(UNIX_EPOCH)
            } else {
                local_now + offset
            }
        })
        .collect();
    Ok(RateLimiter::with_history(limits, &times))
}

/// The windows as the CHARGE script takes them.
fn window_args(limits: &[RateLimit]) -> Vec<WindowArgs> {
    limits
        .iter()
        .map(|&limit| WindowArgs {
            count: limit.count,
            period: limit.period,
            held: held_for(limit),
            calendar: is_calendar(limit),
        })
        .collect()
}
