//! The sender of a shared webhook: the agent that holds its lease reads the
//! fleet's stream into bodies (events of many hosts, each with its `host`)
//! and sends them through the webhook's usual delivery (limits, retries,
//! 413 splits, dead letters), every attempt charged to the fleet's budget.
//!
//! On taking the lease it first waits until no attempt of an earlier
//! holder may still arrive, then reclaims every pending entry (an earlier
//! holder's batch in flight when it died). A delivered or dead-lettered
//! batch is acknowledged and deleted from the stream; a sender that dies
//! between a 2xx and that acknowledgement gets the batch sent again by the
//! next one: at most one batch of duplicates per failover, with the same ids.
//! Every step that moves entries or spends budget is fenced by the lease.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::engine::{EngineError, Entry, Reclaimed};
use super::lease::Lease;
use super::{Fence, SharedBudget};
use crate::deadletter::dead_letter_file;
use crate::deliver::{Admitted, Encoded, Halt, Pending, Settle, Webhook};
use crate::event::EventJson;
use crate::queue::Queued;
use crate::tap::Tap;

/// Entries read from the stream at a time.
const READ_CHUNK: usize = 500;

/// How often the holder looks at the stream while it is empty, and how
/// often a body that waits for its time checks again for more events.
const POLL: Duration = Duration::from_millis(100);

/// How long to wait after Redis failed before trying again.
const REDIS_RETRY: Duration = Duration::from_millis(500);

pub struct Sender {
    webhook: Arc<Webhook>,
    budget: Arc<SharedBudget>,
    lease: Lease,
    tap: Arc<Tap>,
    dead_letters: PathBuf,
}

impl Sender {
    pub fn new(
        webhook: Arc<Webhook>,
        budget: Arc<SharedBudget>,
        state_dir: &Path,
        tap: Arc<Tap>,
    ) -> Sender {
        Sender {
            dead_letters: dead_letter_file(state_dir, &webhook.config.name),
            lease: Lease::new(budget.fleet().clone(), budget.keys.clone()),
            webhook,
            budget,
            tap,
        }
    }

    /// Tries for the lease until `stop` says anything but [`Halt::Run`];
    /// while it holds it, sends. Joining again each time also tells the
    /// fleet this agent is alive, and finds a Redis that came back empty.
    pub async fn run(self, mut stop: watch::Receiver<Halt>) {
        let name = self.webhook.config.name.clone();
        let ttl = self.budget.fleet().config.lease_ttl;
        let mut failing = false;
        while *stop.borrow() == Halt::Run {
            let acquired = match self.budget.join().await {
                Ok(()) => self.lease.acquire().await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match acquired {
                Ok(Some(fence)) => {
                    failing = false;
                    tracing::info!(webhook = %name, token = fence.token(), "this agent is now the fleet's sender");
                    self.send_while_holding(&fence, &mut stop).await;
                    self.lease.release(&fence).await;
                    tracing::info!(webhook = %name, "this agent is no longer the fleet's sender");
                    continue;
                }
                Ok(None) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(webhook = %name, error = %e, "cannot try for the fleet sender's lease; will try again");
                        self.webhook.remember_error(&e).await;
                        failing = true;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ttl / 4) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Sends while `fence` holds; the lease is renewed alongside.
    async fn send_while_holding(&self, fence: &Arc<Fence>, stop: &mut watch::Receiver<Halt>) {
        let keeping = tokio::spawn({
            let lease = Lease::new(self.budget.fleet().clone(), self.budget.keys.clone());
            let fence = fence.clone();
            async move { lease.keep(fence).await }
        });
        let mut batch = Holding {
            sender: self,
            consumer: format!("{}:{}", self.budget.fleet().host, fence.token()),
            pending: Pending::new(&self.webhook.format, self.webhook.config.max_body_bytes),
            entries: HashMap::new(),
            next_seq: 0,
            unacked: Vec::new(),
        };
        let ended = batch.send(fence, stop).await;
        keeping.abort();
        if let Err(e) = ended {
            tracing::warn!(webhook = %self.webhook.config.name, error = %e, "the fleet sender stops");
        }
    }
}

/// What the holder has in hand: entries read from the stream (pending for
/// its consumer) and not yet acknowledged.
struct Holding<'a> {
    sender: &'a Sender,
    consumer: String,
    pending: Pending,
    /// The entry behind each sequence number given to `pending`.
    entries: HashMap<u64, Entry>,
    next_seq: u64,
    /// Settled entries whose acknowledgement failed: tried again first.
    unacked: Vec<Entry>,
}

impl Holding<'_> {
    async fn send(
        &mut self,
        fence: &Fence,
        stop: &mut watch::Receiver<Halt>,
    ) -> Result<(), EngineError> {
        self.reclaim(fence, stop).await?;
        let webhook = self.sender.webhook.clone();
        while *stop.borrow() == Halt::Run {
            self.ack_unacked().await;
            let lease = fence.value().ok_or(EngineError::Fenced)?;
            while !self.pending.has_full_body() {
                let read = self.sender.budget.fleet().engine.read(
                    &self.sender.budget.keys,
                    lease,
                    &self.consumer,
                    READ_CHUNK,
                );
                let entries = match read.await {
                    Ok(entries) => entries,
                    Err(EngineError::Fenced) => return Err(EngineError::Fenced),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the fleet's stream");
                        break;
                    }
                };
                if entries.is_empty() {
                    break;
                }
                for entry in entries {
                    self.admit(entry).await;
                }
            }
            if self.pending.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            if !self.pending.has_full_body() {
                // Pacing is the limiter's, over the fleet's attempts: the
                // limiter mirrors the ledger (`SharedBudget::watch`), read
                // again when the body is due, to confirm.
                let send_at = self.due(&webhook);
                let now = Instant::now();
                let send_at = if send_at <= now {
                    match self.sender.budget.ledger().await {
                        Ok(ledger) => webhook.mirror(ledger),
                        Err(e) => tracing::debug!(error = %e, "cannot read the fleet's ledger"),
                    }
                    self.due(&webhook)
                } else {
                    send_at
                };
                let now = Instant::now();
                if send_at > now {
                    // While the body may still grow, more entries are read.
                    tokio::select! {
                        () = tokio::time::sleep_until(send_at.min(now + POLL)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
            let batch = self.pending.take_batch();
            if webhook.deliver(batch, Some(fence), self).await.is_err() {
                return Err(EngineError::Fenced);
            }
        }
        Ok(())
    }

    /// When the body that is not full should go: after `batch_timeout`
    /// and at the pace of the fleet's budget.
    fn due(&self, webhook: &Webhook) -> Instant {
        let oldest = self
            .pending
            .oldest
            .map_or_else(Instant::now, Instant::from_std);
        (oldest + webhook.config.batch_timeout).max(webhook.ready_at(Instant::now()))
    }

    /// Takes every pending entry of earlier holders, once none of their
    /// attempts may still arrive.
    async fn reclaim(
        &mut self,
        fence: &Fence,
        stop: &mut watch::Receiver<Halt>,
    ) -> Result<(), EngineError> {
        let mut cursor = "0-0".to_string();
        loop {
            let lease = fence.value().ok_or(EngineError::Fenced)?;
            let claimed = self.sender.budget.fleet().engine.reclaim(
                &self.sender.budget.keys,
                lease,
                &self.consumer,
                READ_CHUNK,
                &cursor,
            );
            let wait = match claimed.await {
                Ok(Reclaimed::Entries { entries, next }) => {
                    if !entries.is_empty() {
                        tracing::info!(webhook = %self.sender.webhook.config.name, events = entries.len(), "reclaimed events an earlier sender had taken");
                    }
                    for entry in entries {
                        self.admit(entry).await;
                    }
                    if next == "0-0" {
                        return Ok(());
                    }
                    cursor = next;
                    continue;
                }
                Ok(Reclaimed::Wait(wait)) => wait,
                Err(EngineError::Fenced) => return Err(EngineError::Fenced),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot reclaim from the fleet's stream");
                    REDIS_RETRY
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    async fn admit(&mut self, entry: Entry) {
        // Checked as the queue checks an earlier version's rows:
        // `Queued::event` relies on it.
        let json = match EventJson::checked(&entry.event) {
            Ok(json) => json,
            Err(e) => {
                // Written by an agent of another version, or corrupted: it
                // can never be sent, and must not block the stream.
                let text = String::from_utf8_lossy(&entry.event);
                let shown: String = text.chars().take(1000).collect();
                tracing::error!(webhook = %self.sender.webhook.config.name, event = %entry.event_id, error = %e, entry = %shown, "an entry of the fleet's stream is not an event; it is logged here and removed");
                self.unacked.push(entry);
                return;
            }
        };
        // What acknowledging it needs: its ids, not its bytes.
        let seq = self.hold(Entry {
            stream_id: entry.stream_id.clone(),
            event_id: entry.event_id.clone(),
            event: Vec::new(),
        });
        let queued = Queued { seq, json };
        if let Admitted::TooLarge(encoded) = self.pending.push(queued, &self.sender.webhook.format)
        {
            let reason = format!(
                "event of {} bytes cannot fit max_body_bytes = {} even with its message removed",
                encoded.bytes.len(),
                self.sender.webhook.config.max_body_bytes
            );
            self.settle(&[encoded], Some((None, reason))).await;
        }
    }

    fn hold(&mut self, entry: Entry) -> u64 {
        self.next_seq += 1;
        self.entries.insert(self.next_seq, entry);
        self.next_seq
    }

    async fn ack_unacked(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        let budget = &self.sender.budget;
        match budget.fleet().engine.ack(&budget.keys, &self.unacked).await {
            Ok(()) => self.unacked.clear(),
            Err(e) => {
                tracing::warn!(webhook = %self.sender.webhook.config.name, events = self.unacked.len(), error = %e, "cannot acknowledge sent events in the fleet's stream; will try again (a sender taking over meanwhile sends them again)")
            }
        }
    }
}

impl Settle for Holding<'_> {
    async fn settle(&mut self, batch: &[Encoded], rejected: Option<(Option<u16>, String)>) {
        let sender = self.sender;
        sender
            .webhook
            .account(&sender.dead_letters, &sender.tap, batch, rejected)
            .await;
        self.unacked.extend(
            batch
                .iter()
                .filter_map(|e| self.entries.remove(&e.queued.seq)),
        );
        self.ack_unacked().await;
    }
}
