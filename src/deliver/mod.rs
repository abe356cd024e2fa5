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
//! never delays another.

mod batch;
mod body;
mod limit;
mod send;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backon::BackoffBuilder;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::WebhookConfig;
use crate::queue::{Queue, Queued};
use batch::{Admitted, Encoded, Pending};
use body::BodyFormat;

pub use body::Template;
use limit::RateLimiter;
use send::{Outcome, Transport};

/// A webhook's delivery task, ready to run.
pub struct Deliverer {
    config: WebhookConfig,
    format: BodyFormat,
    transport: Transport,
    limiter: RateLimiter,
    dead_letters: PathBuf,
    queue: Arc<Queue>,
    /// This webhook's lane in `queue`.
    lane: usize,
}

/// Events read from the queue at a time while filling a body.
const READ_CHUNK: usize = 500;

impl Deliverer {
    pub fn new(
        config: WebhookConfig,
        host: &str,
        state_dir: &Path,
        queue: Arc<Queue>,
        lane: usize,
    ) -> anyhow::Result<Deliverer> {
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
        Ok(Deliverer {
            limiter: RateLimiter::with_history(&config.rate_limits, &earlier),
            dead_letters: state_dir
                .join("dead-letter")
                .join(format!("{}.jsonl", config.name)),
            transport,
            format: BodyFormat::new(config.content_type, config.template.as_deref(), host),
            config,
            queue,
            lane,
        })
    }

    /// Delivers the webhook's queue until `stop` turns true and nothing is
    /// left; what the limits do not let out before the pipeline gives up
    /// stays queued for the next run.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let arrivals = self.queue.arrivals(self.lane);
        let mut pending = Pending::new(&self.format, self.config.max_body_bytes);
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
                let send_at = (oldest + self.config.batch_timeout)
                    .max(self.limiter.next_free(Instant::now()));
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
        while !pending.has_full_body() {
            let fresh = match self.queue.read(self.lane, *cursor, READ_CHUNK) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::error!(webhook = %self.config.name, error = %e, "cannot read the queue; will retry");
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
        if let Admitted::TooLarge(encoded) = pending.push(event, &self.format) {
            let reason = format!(
                "event of {} bytes cannot fit max_body_bytes = {} even with its message removed",
                encoded.bytes.len(),
                self.config.max_body_bytes
            );
            self.settle(&[encoded], Some((None, reason)));
        }
    }

    /// Removes a batch from the queue once it is delivered or, with a
    /// status and reason, dead-lettered.
    fn settle(&self, batch: &[Encoded], rejected: Option<(Option<u16>, String)>) {
        if let Some((status, reason)) = rejected {
            self.dead_letter(batch, status, &reason);
        }
        let seqs: Vec<u64> = batch.iter().map(|e| e.seq).collect();
        if let Err(e) = self.queue.remove(self.lane, &seqs) {
            tracing::error!(webhook = %self.config.name, error = %e, "cannot remove sent events from the queue; they may be sent again");
        }
    }

    /// Sends one batch until it is delivered or rejected. A batch refused as
    /// too large (413) is split in two and each half sent in turn: the
    /// receiver's real limit may be below `max_body_bytes`.
    async fn deliver(&mut self, batch: Vec<Encoded>) {
        // Oldest last, so `pop` sends in order.
        let mut to_send = vec![batch];
        while let Some(batch) = to_send.pop() {
            if let Some(too_large) = self.send_until_settled(batch).await {
                let mut first = too_large;
                let second = first.split_off(first.len() / 2);
                tracing::warn!(
                    webhook = %self.config.name,
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
    async fn send_until_settled(&mut self, batch: Vec<Encoded>) -> Option<Vec<Encoded>> {
        let body = self.format.encode(batch.iter().map(|e| e.bytes.as_slice()));
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(500))
            .with_max_delay(self.config.max_retry_delay)
            .with_jitter()
            .without_max_times()
            .build();
        let name = &self.config.name;
        loop {
            let waited = self.limiter.acquire().await;
            if let Some(memory) = self.limiter.memory() {
                if let Err(e) = self.queue.record_attempt(self.lane, memory) {
                    tracing::warn!(webhook = %name, error = %e, "cannot record the attempt; a restart may count it out");
                }
            }
            if !waited.is_zero() {
                tracing::debug!(webhook = %name, waited_ms = waited.as_millis() as u64, "waited for rate-limit budget");
            }
            match self.transport.send(&body).await {
                Outcome::Delivered { status } => {
                    tracing::info!(webhook = %name, events = batch.len(), bytes = body.len(), status, "batch delivered");
                    self.settle(&batch, None);
                    return None;
                }
                Outcome::Retry { reason, after } => {
                    let delay = after
                        .unwrap_or_else(|| backoff.next().unwrap_or(self.config.max_retry_delay));
                    tracing::warn!(
                        webhook = %name,
                        target = %self.config.target,
                        events = batch.len(),
                        retry_in_ms = delay.as_millis() as u64,
                        reason,
                        "delivery failed; will retry"
                    );
                    tokio::time::sleep(delay).await;
                }
                Outcome::Rejected { status: 413, .. } if batch.len() > 1 => return Some(batch),
                Outcome::Rejected { status, reason } => {
                    self.settle(&batch, Some((Some(status), reason)));
                    return None;
                }
            }
        }
    }

    /// Appends the batch to this webhook's dead-letter file (JSON lines), so a
    /// rejected batch is kept for a human instead of lost.
    fn dead_letter(&self, batch: &[Encoded], status: Option<u16>, reason: &str) {
        let record = serde_json::json!({
            "time": crate::event::rfc3339_now(),
            "webhook": self.config.name,
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
                webhook = %self.config.name,
                target = %self.config.target,
                status,
                reason,
                events = batch.len(),
                file = %self.dead_letters.display(),
                "webhook rejected a batch; it was written to the dead-letter file"
            ),
            Err(e) => tracing::error!(
                webhook = %self.config.name,
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
