//! Settled events leaving the queue, behind the sender's back.
//!
//! A removal is a write transaction with an fsync. Waited for in turn, it
//! would hold the sender between a batch's answer and the next read, while
//! the writer fills the events kept in memory for the sender, which then
//! reads them back from the store. So one removal at a time runs on the
//! blocking threads while the next batch is read and sent, and what
//! settles meanwhile goes with the next. A crash loses nothing: a settled
//! event not yet removed is sent again after a restart (at least once).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{joined, Webhook};
use crate::queue::QueueError;

/// How long a removal that failed waits before the next try: a disk that
/// cannot be written fails at once, and each failure is logged.
const RETRY: Duration = Duration::from_secs(1);

/// A removal on the blocking threads: the events it takes out, and how it went.
type Removal = JoinHandle<(Vec<u64>, Result<(), QueueError>)>;

pub(super) struct Removals {
    webhook: Arc<Webhook>,
    /// Settled events not yet being removed, or whose removal failed. They
    /// are not read again meanwhile: the sender's cursor is past them.
    waiting: Vec<u64>,
    running: Option<Removal>,
    /// After a failure, no removal starts before this.
    not_before: Option<Instant>,
}

impl Removals {
    pub(super) fn new(webhook: Arc<Webhook>) -> Removals {
        Removals {
            webhook,
            waiting: Vec::new(),
            running: None,
            not_before: None,
        }
    }

    /// `seqs` were delivered or dead-lettered: removed as soon as the
    /// removal before them is done.
    pub(super) async fn settled(&mut self, seqs: impl IntoIterator<Item = u64>) {
        self.waiting.extend(seqs);
        self.advance().await;
    }

    /// Takes in a removal that is done and starts the next; never waits
    /// for one that runs.
    pub(super) async fn advance(&mut self) {
        if self.running.as_ref().is_some_and(|r| r.is_finished()) {
            self.collect().await;
        }
        let retry_due = self.not_before.is_none_or(|at| Instant::now() >= at);
        if self.running.is_none() && !self.waiting.is_empty() && retry_due {
            let (queue, lane, seqs) = (
                self.webhook.queue.clone(),
                self.webhook.lane,
                std::mem::take(&mut self.waiting),
            );
            self.running = Some(tokio::task::spawn_blocking(move || {
                let removed = queue.remove(lane, &seqs);
                (seqs, removed)
            }));
        }
    }

    /// Until the running removal is done and taken in, or forever when none
    /// runs (a `select!` branch; dropped early, it loses nothing).
    pub(super) async fn running_done(&mut self) {
        if self.running.is_none() {
            std::future::pending::<()>().await;
        }
        self.collect().await;
    }

    /// When an idle sender should try a failed removal again.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        match self.running {
            Some(_) => None,
            None if self.waiting.is_empty() => None,
            None => Some(self.not_before.unwrap_or_else(Instant::now)),
        }
    }

    /// Waits for the running removal, then tries once to remove the rest:
    /// before the sender ends, so the task that takes over its queue does
    /// not read settled events again.
    pub(super) async fn finish(&mut self) {
        self.collect().await;
        self.not_before = None;
        self.advance().await;
        self.collect().await;
    }

    /// Waits for the running removal, if any, and takes in how it went.
    async fn collect(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let outcome = running.await;
        self.running = None;
        let (seqs, removed) = joined(outcome);
        match removed {
            Ok(()) => self.not_before = None,
            Err(e) => {
                tracing::error!(
                    webhook = %self.webhook.config.name,
                    events = seqs.len(),
                    error = %e,
                    "cannot remove settled events from the queue; will try again (until then they use its room; after a restart they may be sent again)"
                );
                self.waiting.extend(seqs);
                self.not_before = Some(Instant::now() + RETRY);
            }
        }
    }
}
