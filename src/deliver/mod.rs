//! Delivery: one task per webhook that turns its queue into requests.
//!
//! The loop is: collect events into a body (`batch`) until it is full, the
//! oldest event has waited `batch_timeout`, or the queue closed; wait for the
//! rate windows to allow an attempt (`limit`); send (`send`); on a retryable
//! failure wait (Retry-After, else capped exponential backoff with jitter) and
//! try again, charging the limiter every time; on 413 split the batch in two;
//! on another rejection write the batch to the dead-letter file. While budget is not yet available the batch keeps
//! filling, so a rate-limited webhook gets as few, as full requests as possible.
//!
//! Each webhook has its own task, queue and limiter: one that is slow or down
//! never delays another. A [`Webhook`] (transport, body format, limiter,
//! record of attempts) is shared by its delivery task and by manual sends
//! (`manual`, for `tailhook send`), so both are charged to one budget.

mod batch;
mod body;
mod limit;
mod manual;
mod send;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{RateLimit, WebhookConfig};
use crate::metrics::{self, WebhookCounters};
use crate::queue::{Queue, Queued};
use batch::{Admitted, Encoded, Pending};
use body::BodyFormat;

pub use body::Template;
use limit::RateLimiter;
pub use limit::WindowUsage;
pub use manual::{manual_fields, Sent};
use send::{Outcome, Transport};

/// A webhook as its delivery task and manual sends (`tailhook send`) share
/// it: one transport and body format, and above all one rate limiter and
/// one record of attempts, so every request is charged to one budget.
pub struct Webhook {
    pub config: WebhookConfig,
    format: BodyFormat,
    transport: Transport,
    limiter: Mutex<RateLimiter>,
    queue: Arc<Queue>,
    /// This webhook's lane in `queue`.
    lane: usize,
    counters: Arc<WebhookCounters>,
}

/// How a body's sending ended.
enum Settled {
    Delivered {
        status: u16,
    },
    Rejected {
        status: u16,
        reason: String,
    },
    /// Only with a deadline: the budget or the retries would outlast it.
    GaveUp(String),
}

/// Something worth telling while a body is being sent.
enum Progress<'a> {
    WaitingForBudget(Duration),
    Retrying {
        reason: &'a str,
        status: Option<u16>,
        delay: Duration,
    },
}

impl Webhook {
    pub fn open(
        config: WebhookConfig,
        host: &str,
        queue: Arc<Queue>,
        lane: usize,
        counters: Arc<WebhookCounters>,
    ) -> anyhow::Result<Arc<Webhook>> {
        let transport = Transport::new(&config).map_err(|e| {
            anyhow::anyhow!(
                "webhook `{}`: cannot build HTTP client: {}",
                config.name,
                e.without_url()
            )
        })?;
        // Attempts of earlier runs count: a restart loop gets no fresh budget.
        let earlier = match RateLimiter::new(&config.rate_limits).memory() {
            Some(memory) => queue.recent_attempts(lane, memory)?,
            None => Vec::new(),
        };
        Ok(Arc::new(Webhook {
            limiter: Mutex::new(RateLimiter::with_history(&config.rate_limits, &earlier)),
            transport,
            format: BodyFormat::new(config.content_type, config.template.as_deref(), host),
            config,
            queue,
            lane,
            counters,
        }))
    }

    /// How much of each rate window is spent now.
    pub fn budget(&self) -> Vec<WindowUsage> {
        self.limiter().usage(Instant::now())
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, RateLimiter> {
        self.limiter.lock().expect("rate limiter")
    }

    /// Waits until the rate windows allow an attempt and charges it, in
    /// memory and on disk; the moment it was charged, or `Err(when)` if
    /// that is past `deadline`.
    async fn acquire(
        &self,
        deadline: Option<Instant>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Instant, Instant> {
        let start = Instant::now();
        let charged = loop {
            let now = Instant::now();
            let free = match self.limiter().try_acquire(now) {
                Ok(()) => break now,
                Err(free) => free,
            };
            if deadline.is_some_and(|deadline| free > deadline) {
                return Err(free);
            }
            progress(Progress::WaitingForBudget(free - now));
            tokio::time::sleep_until(free).await;
        };
        let waited = charged - start;
        if let Some(memory) = self.limiter().memory() {
            if let Err(e) = self.queue.record_attempt(self.lane, memory) {
                tracing::warn!(webhook = %self.config.name, error = %e, "cannot record the attempt; a restart may count it out");
            }
        }
        if !waited.is_zero() {
            metrics::add(&self.counters.rate_limit_waits, 1);
            metrics::add(
                &self.counters.rate_limit_wait_micros,
                waited.as_micros() as u64,
            );
        }
        Ok(charged)
    }

    /// Sends `body` until it is delivered or rejected: every attempt waits
    /// for the rate windows and is charged to them; a retryable failure waits
    /// `Retry-After`, else capped exponential backoff with jitter. With a
    /// `deadline`, gives up rather than wait past it.
    async fn send_with_retries(
        &self,
        body: &[u8],
        deadline: Option<Instant>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Settled {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(self.config.max_retry_delay)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempts = 0;
        loop {
            let charged = match self.acquire(deadline, progress).await {
                Ok(charged) => charged,
                Err(free) => {
                    return Settled::GaveUp(format!(
                        "the rate limits ({}) allow the next request in {}, beyond that time",
                        self.windows(),
                        human(free - Instant::now())
                    ))
                }
            };
            attempts += 1;
            let outcome = match deadline {
                None => self.transport.send(body).await,
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.transport.send(body)).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            self.counters.count_response(None);
                            return Settled::GaveUp(format!(
                                "attempt {attempts} had no answer within that time"
                            ));
                        }
                    }
                }
            };
            self.limiter().answered(charged, Instant::now());
            let status = match &outcome {
                Outcome::Delivered { status } | Outcome::Rejected { status, .. } => Some(*status),
                Outcome::Retry { status, .. } => *status,
            };
            self.counters.count_response(status);
            match outcome {
                Outcome::Delivered { status } => return Settled::Delivered { status },
                Outcome::Rejected { status, reason } => {
                    self.remember_error(&reason);
                    return Settled::Rejected { status, reason };
                }
                Outcome::Retry {
                    reason,
                    status,
                    after,
                } => {
                    self.remember_error(&reason);
                    let delay = after
                        .unwrap_or_else(|| backoff.next().unwrap_or(self.config.max_retry_delay));
                    if deadline.is_some_and(|deadline| Instant::now() + delay > deadline) {
                        return Settled::GaveUp(format!(
                            "attempt {attempts} failed ({reason}) and the next would come in {}, beyond that time",
                            human(delay)
                        ));
                    }
                    metrics::add(&self.counters.retries, 1);
                    progress(Progress::Retrying {
                        reason: &reason,
                        status,
                        delay,
                    });
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn remember_error(&self, reason: &str) {
        if let Err(e) = self.queue.record_error(self.lane, reason) {
            tracing::warn!(webhook = %self.config.name, error = %e, "cannot record the last error");
        }
    }

    /// The rate windows as configured, e.g. `5/1m, 5000/1d`.
    fn windows(&self) -> String {
        self.config
            .rate_limits
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How much of each window of `limits` the attempts made `ages` ago spend.
pub fn budget_from_history(limits: &[RateLimit], ages: &[Duration]) -> Vec<WindowUsage> {
    RateLimiter::with_history(limits, ages).usage(Instant::now())
}

/// How long an attempt counts in some window of `limits`.
pub fn attempt_memory(limits: &[RateLimit]) -> Duration {
    RateLimiter::new(limits).memory().unwrap_or_default()
}

/// A duration for people: `8.2s`, `3m 10s`.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// Where a webhook's rejected batches are kept, one JSON object a line.
pub fn dead_letter_file(state_dir: &Path, webhook: &str) -> PathBuf {
    state_dir
        .join("dead-letter")
        .join(format!("{webhook}.jsonl"))
}

/// A webhook's delivery task, ready to run.
pub struct Deliverer {
    webhook: Arc<Webhook>,
    dead_letters: PathBuf,
}

/// Events read from the queue at a time while filling a body.
const READ_CHUNK: usize = 500;

impl Deliverer {
    pub fn new(webhook: Arc<Webhook>, state_dir: &Path) -> Deliverer {
        Deliverer {
            dead_letters: dead_letter_file(state_dir, &webhook.config.name),
            webhook,
        }
    }

    /// Delivers the webhook's queue until `stop` turns true and nothing is
    /// left; what the limits do not let out before the pipeline gives up
    /// stays queued for the next run.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let webhook = &self.webhook;
        let arrivals = webhook.queue.arrivals(webhook.lane);
        let mut pending = Pending::new(&webhook.format, webhook.config.max_body_bytes);
        // The highest sequence taken from the queue into `pending`.
        let mut cursor = 0;
        loop {
            self.fill(&mut pending, &mut cursor);
            let stopping = *stop.borrow();
            if pending.is_empty() {
                if stopping {
                    return;
                }
                tokio::select! {
                    () = arrivals.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            if !pending.has_full_body() && !stopping {
                let oldest = pending.oldest.map_or_else(Instant::now, Instant::from_std);
                let send_at = (oldest + webhook.config.batch_timeout)
                    .max(webhook.limiter().next_free(Instant::now()));
                // While the batch may still grow, more arrivals are taken in.
                tokio::select! {
                    () = arrivals.notified() => continue,
                    _ = stop.changed() => continue,
                    () = tokio::time::sleep_until(send_at) => {}
                }
            }
            let batch = pending.take_batch();
            self.deliver(batch).await;
        }
    }

    /// Takes queued events after `cursor` into `pending` until it holds a
    /// full body or the queue has no more.
    fn fill(&self, pending: &mut Pending, cursor: &mut u64) {
        let webhook = &self.webhook;
        while !pending.has_full_body() {
            let fresh = match webhook.queue.read(webhook.lane, *cursor, READ_CHUNK) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::error!(webhook = %webhook.config.name, error = %e, "cannot read the queue; will retry");
                    return;
                }
            };
            if fresh.is_empty() {
                return;
            }
            for queued in fresh {
                *cursor = queued.seq;
                self.admit(pending, queued);
            }
        }
    }

    fn admit(&self, pending: &mut Pending, event: Queued) {
        if let Admitted::TooLarge(encoded) = pending.push(event, &self.webhook.format) {
            let reason = format!(
                "event of {} bytes cannot fit max_body_bytes = {} even with its message removed",
                encoded.bytes.len(),
                self.webhook.config.max_body_bytes
            );
            self.settle(&[encoded], Some((None, reason)));
        }
    }

    /// Removes a batch from the queue once it is delivered or, with a
    /// status and reason, dead-lettered.
    fn settle(&self, batch: &[Encoded], rejected: Option<(Option<u16>, String)>) {
        let webhook = &self.webhook;
        let counter = if let Some((status, reason)) = rejected {
            self.dead_letter(batch, status, &reason);
            &webhook.counters.events_dead_lettered
        } else {
            &webhook.counters.events_sent
        };
        metrics::add(counter, batch.len() as u64);
        let seqs: Vec<u64> = batch.iter().map(|e| e.seq).collect();
        if let Err(e) = webhook.queue.remove(webhook.lane, &seqs) {
            tracing::error!(webhook = %webhook.config.name, error = %e, "cannot remove sent events from the queue; they may be sent again");
        }
    }

    /// Sends one batch until it is delivered or rejected. A batch refused as
    /// too large (413) is split in two and each half sent in turn: the
    /// receiver's real limit may be below `max_body_bytes`.
    async fn deliver(&self, batch: Vec<Encoded>) {
        // Oldest last, so `pop` sends in order.
        let mut to_send = vec![batch];
        while let Some(batch) = to_send.pop() {
            if let Some(too_large) = self.send_until_settled(batch).await {
                let mut first = too_large;
                let second = first.split_off(first.len() / 2);
                tracing::warn!(
                    webhook = %self.webhook.config.name,
                    events = first.len() + second.len(),
                    "webhook refused the body as too large (413); sending it in two halves"
                );
                to_send.push(second);
                to_send.push(first);
            }
        }
    }

    /// Sends `batch` until it is delivered or dead-lettered; hands it back
    /// when it was refused as too large and can still be split.
    async fn send_until_settled(&self, batch: Vec<Encoded>) -> Option<Vec<Encoded>> {
        let webhook = &self.webhook;
        let name = &webhook.config.name;
        let body = webhook
            .format
            .encode(batch.iter().map(|e| e.bytes.as_slice()));
        let mut log = |progress: Progress| match progress {
            Progress::WaitingForBudget(wait) => {
                tracing::debug!(webhook = %name, wait_ms = wait.as_millis() as u64, "waiting for rate-limit budget");
            }
            Progress::Retrying {
                reason,
                status,
                delay,
            } => tracing::warn!(
                webhook = %name,
                url = %webhook.config.target,
                events = batch.len(),
                status,
                retry_in_ms = delay.as_millis() as u64,
                reason,
                "delivery failed; will retry"
            ),
        };
        match webhook.send_with_retries(&body, None, &mut log).await {
            Settled::Delivered { status } => {
                tracing::info!(webhook = %name, events = batch.len(), bytes = body.len(), status, "batch delivered");
                self.settle(&batch, None);
                None
            }
            Settled::Rejected { status: 413, .. } if batch.len() > 1 => Some(batch),
            Settled::Rejected { status, reason } => {
                self.settle(&batch, Some((Some(status), reason)));
                None
            }
            Settled::GaveUp(_) => unreachable!("without a deadline sending never gives up"),
        }
    }

    /// Appends the batch to this webhook's dead-letter file (JSON lines), so a
    /// rejected batch is kept for a human instead of lost.
    fn dead_letter(&self, batch: &[Encoded], status: Option<u16>, reason: &str) {
        let record = serde_json::json!({
            "time": crate::event::rfc3339_now(),
            "webhook": self.webhook.config.name,
            "status": status,
            "reason": reason,
            "events": batch.iter().map(|e| &*e.event).collect::<Vec<_>>(),
        });
        let written = self
            .dead_letters
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.dead_letters)?;
                let mut line = serde_json::to_vec(&record).expect("JSON values serialize");
                line.push(b'\n');
                file.write_all(&line)?;
                file.sync_data()
            });
        match written {
            Ok(()) => tracing::error!(
                webhook = %self.webhook.config.name,
                url = %self.webhook.config.target,
                status,
                reason,
                events = batch.len(),
                file = %self.dead_letters.display(),
                "webhook rejected a batch; it was written to the dead-letter file"
            ),
            Err(e) => tracing::error!(
                webhook = %self.webhook.config.name,
                status,
                reason,
                events = batch.len(),
                file = %self.dead_letters.display(),
                error = %e,
                "webhook rejected a batch and the dead-letter file cannot be written; events lost"
            ),
        }
    }
}
