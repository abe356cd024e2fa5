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

use backon::BackoffBuilder;
use tokio::time::Instant;

use crate::config::WebhookConfig;
use crate::queue::{EventReceiver, Queued};
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
}

impl Deliverer {
    pub fn new(config: WebhookConfig, host: String, state_dir: &Path) -> anyhow::Result<Deliverer> {
        let transport = Transport::new(&config).map_err(|e| {
            anyhow::anyhow!(
                "webhook `{}`: cannot build HTTP client: {}",
                config.name,
                e.without_url()
            )
        })?;
        Ok(Deliverer {
            limiter: RateLimiter::new(&config.rate_limits),
            dead_letters: state_dir
                .join("dead-letter")
                .join(format!("{}.jsonl", config.name)),
            transport,
            format: BodyFormat::new(config.content_type, config.template.as_deref(), &host),
            config,
        })
    }

    /// Runs until `events` is closed and everything it held was sent or
    /// dead-lettered.
    pub async fn run(mut self, mut events: EventReceiver) {
        let mut pending = Pending::new(&self.format, self.config.max_body_bytes);
        let mut closed = false;
        loop {
            if pending.is_empty() {
                match events.recv().await {
                    Some(event) => self.admit(&mut pending, event),
                    None => return,
                }
            }
            while !closed && !pending.has_full_body() {
                let oldest = pending.oldest.map_or_else(Instant::now, Instant::from_std);
                let send_at = (oldest + self.config.batch_timeout)
                    .max(self.limiter.next_free(Instant::now()));
                tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => self.admit(&mut pending, event),
                        None => closed = true,
                    },
                    () = tokio::time::sleep_until(send_at) => break,
                }
            }
            if !pending.is_empty() {
                let batch = pending.take_batch();
                self.deliver(batch).await;
            }
            if closed && pending.is_empty() {
                return;
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
            self.dead_letter(&[encoded], None, &reason);
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
            if !waited.is_zero() {
                tracing::debug!(webhook = %name, waited_ms = waited.as_millis() as u64, "waited for rate-limit budget");
            }
            match self.transport.send(&body).await {
                Outcome::Delivered { status } => {
                    tracing::info!(webhook = %name, events = batch.len(), bytes = body.len(), status, "batch delivered");
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
                    self.dead_letter(&batch, Some(status), &reason);
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
