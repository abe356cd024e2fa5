//! Delivery: one task per webhook that turns its queue into requests.
//!
//! The loop is: collect events into a body (`batch`) until it is full, or
//! the oldest event has waited `batch_timeout` and the windows' pace allows
//! it (`limit`: a day's budget must last the day), or the queue closed; wait
//! for the rate windows to allow an attempt; send (`send`); on a retryable
//! failure wait (Retry-After, else exponential backoff with jitter below
//! `max_retry_delay`, `retry`) and try again, charging the limiter every
//! time; on 413 split the batch in two; on another rejection write the batch
//! to the dead-letter file. An attempt that timed out may have arrived: the
//! next attempt of that batch waits twice as long, so a slow receiver gets it
//! a bounded number of times. A 415 once the receiver has accepted the
//! Content-Type is "over the limit", retried. While budget is not yet
//! available the batch keeps filling, so a rate-limited webhook gets as few,
//! as full requests as possible.
//!
//! Each webhook has its own task, queue and limiter: one that is slow or down
//! never delays another. A [`Webhook`] (transport, body format, limiter,
//! record of attempts) is shared by its delivery task and by manual sends
//! (`manual`, for `tailhook send`), so both are charged to one budget.
//!
//! A webhook shared by a fleet (`fleet = true`) is charged to the fleet's
//! budget in Redis instead ([`crate::fleet::SharedBudget`]); its limiter then
//! mirrors the fleet's ledger, for pacing and `status`. Its batches come from
//! the fleet's stream (`crate::fleet`'s sender), not from this queue.

mod batch;
mod body;
pub(crate) mod limit;
mod manual;
mod removal;
mod retry;
mod send;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{RateLimit, WebhookConfig};
use crate::deadletter::{self, dead_letter_file};
use crate::fleet::budget::{self, Spend, SpendError};
use crate::fleet::{Fence, SharedBudget};
use crate::metrics::{self, WebhookCounters};
use crate::queue::{Queue, Queued};
use crate::tap::{self, Tap};
pub(crate) use batch::{Admitted, Encoded, Pending};
pub(crate) use body::BodyFormat;

pub use body::Template;
pub(crate) use limit::RateLimiter;
pub use limit::WindowUsage;
pub use manual::{manual_fields, Sent};
use removal::Removals;
use retry::RetryDelays;
use send::{Outcome, Transport};

/// A webhook as its delivery task and manual sends (`tailhook send`) share
/// it: one transport and body format, and above all one rate limiter and
/// one record of attempts, so every request is charged to one budget.
pub struct Webhook {
    pub config: WebhookConfig,
    pub(crate) format: BodyFormat,
    transport: Transport,
    limiter: Mutex<RateLimiter>,
    queue: Arc<Queue>,
    /// This webhook's lane in `queue`.
    lane: usize,
    counters: Arc<WebhookCounters>,
    /// The receiver has accepted a body with the configured Content-Type
    /// (in this run or, as recorded in `queue`, an earlier one).
    content_type_accepted: AtomicBool,
    /// The fleet's budget in Redis, for a webhook shared by a fleet.
    shared: Option<Arc<SharedBudget>>,
    /// The buffer of the last full body sent, for the next: a backlog's
    /// bodies reuse one buffer instead of each mapping and faulting in a
    /// fresh megabyte (glibc maps blocks this large on their own, see
    /// `main.rs`). A body that is not full (the backlog is over) lets it go.
    spare_body: Mutex<Vec<u8>>,
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
    /// Only for a fleet's sender: its lease is gone, another agent may be
    /// sending now; the batch stays in the fleet's stream.
    Fenced,
}

/// Why no attempt was charged.
#[derive(Debug)]
enum Refused {
    /// The windows have room only at this instant, past the deadline.
    Beyond(Instant),
    /// The fleet's budget could not be reached before the deadline.
    Unreachable(String),
    /// The fleet sender's lease is gone.
    Fenced,
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
        Self::open_with(config, host, queue, lane, counters, None)
    }

    /// A webhook whose every attempt is charged to `shared`, the fleet's budget.
    pub fn open_shared(
        config: WebhookConfig,
        host: &str,
        queue: Arc<Queue>,
        lane: usize,
        counters: Arc<WebhookCounters>,
        shared: Arc<SharedBudget>,
    ) -> anyhow::Result<Arc<Webhook>> {
        Self::open_with(config, host, queue, lane, counters, Some(shared))
    }

    fn open_with(
        config: WebhookConfig,
        host: &str,
        queue: Arc<Queue>,
        lane: usize,
        counters: Arc<WebhookCounters>,
        shared: Option<Arc<SharedBudget>>,
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
        let accepted = queue.accepted_content_type(lane)?.as_deref()
            == Some(config.content_type.header_value());
        Ok(Arc::new(Webhook {
            content_type_accepted: AtomicBool::new(accepted),
            limiter: Mutex::new(RateLimiter::with_history(&config.rate_limits, &earlier)),
            transport,
            format: BodyFormat::new(config.content_type, config.template.as_deref(), host),
            config,
            queue,
            lane,
            counters,
            shared,
            spare_body: Mutex::default(),
        }))
    }

    /// How much of each rate window is spent now.
    pub fn budget(&self) -> Vec<WindowUsage> {
        self.limiter().usage(Instant::now(), self.config.pacing)
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, RateLimiter> {
        self.limiter.lock().expect("rate limiter")
    }

    /// The fleet's budget, for a webhook shared by a fleet.
    pub fn shared(&self) -> Option<&Arc<SharedBudget>> {
        self.shared.as_ref()
    }

    /// This webhook's lane in the queue.
    pub(crate) fn lane(&self) -> usize {
        self.lane
    }

    /// When a body that is not full may go: at the binding window's pace
    /// (with pacing), else as soon as every window has room.
    pub(crate) fn ready_at(&self, now: Instant) -> Instant {
        match self.config.pacing {
            Some(reserve) => self.limiter().next_paced(now, reserve),
            None => self.limiter().next_free(now),
        }
    }

    /// A shared webhook's limiter becomes `ledger`, the fleet's attempts.
    pub(crate) fn mirror(&self, ledger: RateLimiter) {
        *self.limiter() = ledger;
    }

    /// Waits until the rate windows allow an attempt that may take
    /// `timeout` and charges it, in memory and on disk (a shared webhook's
    /// to the fleet's budget, fenced by `fence` for the fleet's sender);
    /// what it charged, or why not before `deadline`.
    async fn acquire(
        &self,
        deadline: Option<Instant>,
        timeout: Duration,
        fence: Option<&Fence>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Charged, Refused> {
        // Only a refusal by the limiter is a wait: the instants around a
        // free attempt always differ by a little.
        let mut first_refused = None;
        let (charged, attempt) = loop {
            let now = Instant::now();
            let free = match &self.shared {
                None => match self.limiter().try_acquire(now) {
                    Ok(()) => break (now, None),
                    Err(free) => free,
                },
                Some(shared) => match shared.charge(fence, timeout).await {
                    Ok(Spend::Charged(attempt)) => break (now, Some(attempt)),
                    Ok(Spend::FreeAt(free)) => free,
                    Err(SpendError::Fenced) => return Err(Refused::Fenced),
                    Err(SpendError::Unreachable(why)) => {
                        let retry_at = now + budget::UNREACHABLE_RETRY;
                        if deadline.is_some_and(|deadline| retry_at > deadline) {
                            return Err(Refused::Unreachable(why));
                        }
                        tokio::time::sleep_until(retry_at).await;
                        continue;
                    }
                },
            };
            if deadline.is_some_and(|deadline| free > deadline) {
                return Err(Refused::Beyond(free));
            }
            // The fleet's budget is asked again after a bounded wait (an
            // answer elsewhere may free it sooner): tell the wait once.
            if self.shared.is_none() || first_refused.is_none() {
                progress(Progress::WaitingForBudget(free - now));
            }
            first_refused.get_or_insert(now);
            tokio::time::sleep_until(free).await;
        };
        let recorded = self.record_attempt(SystemTime::now(), None).await;
        if let Some(refused) = first_refused {
            let waited = charged - refused;
            metrics::add(&self.counters.rate_limit_waits, 1);
            metrics::add(
                &self.counters.rate_limit_wait_micros,
                waited.as_micros() as u64,
            );
        }
        Ok(Charged {
            at: charged,
            recorded,
            attempt,
        })
    }

    /// The attempt `charged` was answered now: it counts from now, in memory
    /// and on disk, and for a shared webhook in the fleet's ledger, where a
    /// `retry_after` pauses every agent.
    async fn answered(&self, charged: Charged, retry_after: Option<Duration>) {
        self.limiter().answered(charged.at, Instant::now());
        if let (Some(shared), Some(attempt)) = (&self.shared, charged.attempt) {
            shared.settle(attempt, retry_after).await;
        }
        if let Some(recorded) = charged.recorded {
            self.record_attempt(SystemTime::now(), Some(recorded)).await;
        }
    }

    /// Persists an attempt at `at` (replacing the record `replacing`), so a
    /// restart still counts it; the record's key, if it was written.
    async fn record_attempt(
        &self,
        at: SystemTime,
        replacing: Option<SystemTime>,
    ) -> Option<SystemTime> {
        // The guard is a temporary of this statement: no lock is held across the write.
        let memory = self.limiter().memory()?;
        let (queue, lane) = (self.queue.clone(), self.lane);
        match off_workers(move || queue.record_attempt(lane, at, replacing, memory)).await {
            Ok(recorded) => Some(recorded),
            Err(e) => {
                tracing::warn!(webhook = %self.config.name, error = %e, "cannot record the attempt; a restart may count it out");
                None
            }
        }
    }

    /// Sends `body` until it is delivered or rejected: every attempt waits
    /// for the rate windows and is charged to them; a retryable failure waits
    /// `Retry-After`, else exponential backoff with jitter below the cap. With a
    /// `deadline`, gives up rather than wait past it. A fleet's sender passes
    /// its `fence`, and stops when its lease is gone.
    async fn send_with_retries(
        &self,
        body: &Bytes,
        deadline: Option<Instant>,
        fence: Option<&Fence>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Settled {
        let mut backoff = RetryDelays::new(self.config.max_retry_delay);
        let mut attempts = 0;
        // Doubled after each attempt that timed out, so a receiver slower
        // than request_timeout gets the batch a bounded number of times.
        let mut timeout = self.config.request_timeout;
        loop {
            let charged = match self.acquire(deadline, timeout, fence, progress).await {
                Ok(charged) => charged,
                Err(Refused::Beyond(free)) => {
                    return Settled::GaveUp(format!(
                        "the rate limits ({}) allow the next request in {}, beyond that time",
                        self.windows(),
                        human(free - Instant::now())
                    ))
                }
                Err(Refused::Unreachable(why)) => {
                    return Settled::GaveUp(format!("the fleet's budget cannot be charged: {why}"))
                }
                Err(Refused::Fenced) => return Settled::Fenced,
            };
            attempts += 1;
            // The fleet's ledger stamped this attempt as arriving at the
            // latest `timeout` after the instant taken before charging it:
            // an answer later than that is taken as no answer.
            let stamped = self.shared.is_some().then(|| charged.at + timeout);
            let until = deadline.into_iter().chain(stamped).min();
            // A sender resumed after `until` (a paused process) must not put
            // its request on the wire then, when the ledger no longer counts
            // it: the transport checks it as the request is written, and the
            // deadline is looked at here before the request is polled again.
            let sending = self.transport.send(body, timeout, until);
            let outcome = match until {
                None => sending.await,
                Some(until) => match until_deadline(until, sending).await {
                    Some(outcome) => outcome,
                    None if Some(until) == stamped => Outcome::Retry {
                        reason: format!("no answer within {}", human(timeout)),
                        status: None,
                        after: None,
                        timed_out: true,
                    },
                    None => {
                        self.counters.count_response(None);
                        return Settled::GaveUp(format!(
                            "attempt {attempts} had no answer within that time"
                        ));
                    }
                },
            };
            let retry_after = match &outcome {
                Outcome::Retry {
                    after: Some(after), ..
                } => Some(after.wait),
                _ => None,
            };
            self.answered(charged, retry_after).await;
            let outcome = match outcome {
                Outcome::Rejected {
                    status: 415,
                    reason,
                } => self.unsupported_media_type(reason),
                Outcome::Delivered { status } => {
                    self.note_content_type_accepted().await;
                    Outcome::Delivered { status }
                }
                other => other,
            };
            let status = match &outcome {
                Outcome::Delivered { status } | Outcome::Rejected { status, .. } => Some(*status),
                Outcome::Retry { status, .. } => *status,
            };
            self.counters.count_response(status);
            match outcome {
                Outcome::Delivered { status } => {
                    self.counters.count_success();
                    return Settled::Delivered { status };
                }
                Outcome::Rejected { status, reason } => {
                    self.remember_error(&reason).await;
                    return Settled::Rejected { status, reason };
                }
                Outcome::Retry {
                    reason,
                    status,
                    after,
                    timed_out,
                } => {
                    if timed_out {
                        timeout = self.unknown_outcome(timeout);
                    }
                    self.remember_error(&reason).await;
                    let delay = match after {
                        Some(after) => {
                            if let Some(asked) = after.capped_from {
                                tracing::warn!(
                                    webhook = %self.config.name,
                                    retry_after_s = asked.as_secs(),
                                    max_retry_after_s = after.wait.as_secs(),
                                    "Retry-After is above max_retry_after; retrying after max_retry_after"
                                );
                            }
                            after.wait
                        }
                        None => backoff.next().unwrap_or(self.config.max_retry_delay),
                    };
                    if deadline.is_some_and(|deadline| {
                        Instant::now()
                            .checked_add(delay)
                            .is_none_or(|then| then > deadline)
                    }) {
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

    /// An attempt that waited `timeout` had no answer: the receiver may
    /// have the batch already, and the next attempt would time out too if
    /// the receiver is that slow. Counts and says so; the next timeout.
    fn unknown_outcome(&self, timeout: Duration) -> Duration {
        metrics::add(&self.counters.unknown_outcomes, 1);
        let next = timeout
            .saturating_mul(2)
            .min(self.config.max_request_timeout);
        tracing::warn!(
            webhook = %self.config.name,
            timeout_ms = timeout.as_millis() as u64,
            next_timeout_ms = next.as_millis() as u64,
            "no answer within the request timeout: the webhook may already have this batch and get it twice; the next attempt waits longer"
        );
        next
    }

    /// A 415 means "over the limit" from a receiver that has accepted this
    /// Content-Type before (SecureX answers 415 or 429 then): retried like
    /// a 429. Before any success it means the Content-Type is not the
    /// receiver's: rejected, saying which key to fix.
    fn unsupported_media_type(&self, reason: String) -> Outcome {
        if self.content_type_accepted.load(Ordering::Relaxed) {
            Outcome::Retry {
                reason: format!(
                    "{reason} (taken as over the limit: the webhook has accepted Content-Type `{}` before)",
                    self.config.content_type.header_value()
                ),
                status: Some(415),
                after: None,
                timed_out: false,
            }
        } else {
            Outcome::Rejected {
                status: 415,
                reason: format!(
                    "{reason} (the webhook refuses Content-Type `{}` and never accepted it: set webhook.{}.content_type to the webhook's configured type)",
                    self.config.content_type.header_value(),
                    self.config.name
                ),
            }
        }
    }

    /// Remembers, on disk the first time, that the receiver accepted this
    /// webhook's Content-Type: a later 415 is then over-limit, also after a
    /// restart, when SecureX's daily budget is most likely spent.
    async fn note_content_type_accepted(&self) {
        if self.content_type_accepted.swap(true, Ordering::Relaxed) {
            return;
        }
        let (queue, lane) = (self.queue.clone(), self.lane);
        let content_type = self.config.content_type.header_value();
        if let Err(e) =
            off_workers(move || queue.record_accepted_content_type(lane, content_type)).await
        {
            tracing::warn!(webhook = %self.config.name, error = %e, "cannot record that the webhook accepts its Content-Type; after a restart a 415 before the next success is taken as a configuration error");
        }
    }

    pub(crate) async fn remember_error(&self, reason: &str) {
        let (queue, lane, reason) = (self.queue.clone(), self.lane, reason.to_string());
        if let Err(e) = off_workers(move || queue.record_error(lane, &reason)).await {
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

/// How much of each window of `limits` the attempts made `ages` ago spend,
/// and each window's pace with the pacing reserve `pacing`.
pub fn budget_from_history(
    limits: &[RateLimit],
    ages: &[Duration],
    pacing: Option<f64>,
) -> Vec<WindowUsage> {
    let now = SystemTime::now();
    let times: Vec<SystemTime> = ages
        .iter()
        .filter_map(|age| now.checked_sub(*age))
        .collect();
    RateLimiter::with_history(limits, &times).usage(Instant::now(), pacing)
}

/// `work`'s output, or `None` once `until` has passed, which is checked
/// before `work` is polled again.
async fn until_deadline<T>(
    until: Instant,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = tokio::time::sleep_until(until) => None,
        done = work => Some(done),
    }
}

/// An attempt charged to the rate windows.
struct Charged {
    /// Taken just before charging.
    at: Instant,
    /// Its record on disk, to be moved to the answer's time.
    recorded: Option<SystemTime>,
    /// Its id in the fleet's ledger, for a shared webhook.
    attempt: Option<i64>,
}

/// Runs `work` (a queue or file write that fsyncs, a read that may wait on
/// the disk) on tokio's blocking threads: a slow disk must not stall the
/// async workers, which also serve the control socket, `/metrics` and the
/// watchdog.
pub(crate) async fn off_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    joined(tokio::task::spawn_blocking(work).await)
}

/// What a blocking task returned; its panic goes on in the task that waited.
fn joined<T>(result: Result<T, tokio::task::JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
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

/// A webhook's delivery task, ready to run.
pub struct Deliverer {
    webhook: Arc<Webhook>,
    dead_letters: PathBuf,
    /// Sent or dead-lettered events on their way out of the queue.
    removals: Removals,
    tap: Arc<Tap>,
}

/// What the pipeline asks of its delivery tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// Deliver as batches fill or time out.
    Run,
    /// The agent stops: send everything queued, full or not, then end.
    Drain,
    /// A reload swaps the webhooks: end once the batch being sent is
    /// settled, leaving the rest queued for the task that replaces this one.
    Pause,
}

/// Events read from the queue at a time while filling a body.
const READ_CHUNK: usize = 500;

/// How often an idle webhook tries again to read the queue after that failed.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

impl Deliverer {
    pub fn new(webhook: Arc<Webhook>, state_dir: &Path, tap: Arc<Tap>) -> Deliverer {
        Deliverer {
            dead_letters: dead_letter_file(state_dir, &webhook.config.name),
            removals: Removals::new(webhook.clone()),
            webhook,
            tap,
        }
    }

    /// Delivers the webhook's queue until `stop` says [`Halt::Drain`] and
    /// nothing is left, or [`Halt::Pause`] and the batch in hand is settled;
    /// what the limits do not let out before the pipeline gives up stays
    /// queued for the next run. The pipeline gives up by dropping this
    /// future, at an await point: a batch is removed from the queue only
    /// once it was delivered or dead-lettered, so that loses nothing.
    pub async fn run(mut self, mut stop: watch::Receiver<Halt>) {
        let webhook = self.webhook.clone();
        let arrivals = webhook.queue.arrivals(webhook.lane);
        let mut pending = Pending::new(&webhook.format, webhook.config.max_body_bytes);
        // The highest sequence taken from the queue into `pending`.
        let mut cursor = 0;
        loop {
            self.removals.advance().await;
            let halt = *stop.borrow();
            // Events taken into `pending` are still queued: the next
            // delivery task of this webhook reads them again.
            if halt == Halt::Pause {
                self.removals.finish().await;
                return;
            }
            let read_failed = !self.fill(&mut pending, &mut cursor).await;
            let stopping = halt == Halt::Drain;
            if pending.is_empty() {
                if stopping {
                    self.removals.finish().await;
                    return;
                }
                let read_again = read_failed.then(|| Instant::now() + QUEUE_RETRY);
                let retry_at = read_again.into_iter().chain(self.removals.retry_at()).min();
                tokio::select! {
                    () = arrivals.notified() => {}
                    _ = stop.changed() => {}
                    () = self.removals.running_done() => {}
                    () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
                }
                continue;
            }
            if !pending.has_full_body() && !stopping {
                let oldest = pending.oldest.map_or_else(Instant::now, Instant::from_std);
                let send_at =
                    (oldest + webhook.config.batch_timeout).max(webhook.ready_at(Instant::now()));
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
    /// full body or the queue has no more; `false` if the queue could not be read.
    async fn fill(&mut self, pending: &mut Pending, cursor: &mut u64) -> bool {
        let webhook = self.webhook.clone();
        while !pending.has_full_body() {
            let (queue, lane, after) = (webhook.queue.clone(), webhook.lane, *cursor);
            let fresh = match off_workers(move || queue.read(lane, after, READ_CHUNK)).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::error!(webhook = %webhook.config.name, error = %e, "cannot read the queue; will retry");
                    return false;
                }
            };
            if fresh.is_empty() {
                return true;
            }
            for queued in fresh {
                *cursor = queued.seq;
                self.admit(pending, queued).await;
            }
        }
        true
    }

    async fn admit(&mut self, pending: &mut Pending, event: Queued) {
        if let Admitted::TooLarge(encoded) = pending.push(event, &self.webhook.format) {
            let reason = format!(
                "event of {} bytes cannot fit max_body_bytes = {} even with its message removed",
                encoded.bytes.len(),
                self.webhook.config.max_body_bytes
            );
            self.settle(&[encoded], Some((None, reason))).await;
        }
    }

    /// Removes a batch from the queue once it is delivered or, with a
    /// status and reason, dead-lettered (which waits until the dead-letter
    /// file could be written: until then the events stay queued).
    async fn settle(&mut self, batch: &[Encoded], rejected: Option<(Option<u16>, String)>) {
        let webhook = self.webhook.clone();
        webhook
            .account(&self.dead_letters, &self.tap, batch, rejected)
            .await;
        self.removals
            .settled(batch.iter().map(|e| e.queued.seq))
            .await;
    }

    /// Sends one batch until it is delivered or rejected (see [`Webhook::deliver`]).
    async fn deliver(&mut self, batch: Vec<Encoded>) {
        let webhook = self.webhook.clone();
        let delivered = webhook.deliver(batch, None, self).await;
        debug_assert!(delivered.is_ok(), "only a fleet's sender is fenced");
    }
}

impl Settle for Deliverer {
    async fn settle(&mut self, batch: &[Encoded], rejected: Option<(Option<u16>, String)>) {
        Deliverer::settle(self, batch, rejected).await
    }
}

/// Where a batch goes once sent: removed from where it waited, once
/// delivered or (with a status and reason) dead-lettered.
pub(crate) trait Settle {
    async fn settle(&mut self, batch: &[Encoded], rejected: Option<(Option<u16>, String)>);
}

/// A fleet sender's lease was lost while sending: the rest of its batch
/// stays in the fleet's stream for the next sender.
#[derive(Debug)]
pub(crate) struct LeaseLost;

impl Webhook {
    /// Sends one batch until it is delivered or rejected, settling each part
    /// with `settle` as it ends. A batch refused as too large (413) is split
    /// in two and each half sent in turn: the receiver's real limit may be
    /// below `max_body_bytes`. `fence`: a fleet sender's lease.
    pub(crate) async fn deliver(
        &self,
        batch: Vec<Encoded>,
        fence: Option<&Fence>,
        settle: &mut impl Settle,
    ) -> Result<(), LeaseLost> {
        // Oldest last, so `pop` sends in order.
        let mut to_send = vec![batch];
        while let Some(batch) = to_send.pop() {
            if let Some(too_large) = self.send_until_settled(batch, fence, settle).await? {
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
        Ok(())
    }

    /// Sends `batch` until it is delivered or dead-lettered; hands it back
    /// when it was refused as too large and can still be split.
    async fn send_until_settled(
        &self,
        batch: Vec<Encoded>,
        fence: Option<&Fence>,
        settle: &mut impl Settle,
    ) -> Result<Option<Vec<Encoded>>, LeaseLost> {
        let name = &self.config.name;
        let buffer = std::mem::take(&mut *self.spare_body.lock().expect("spare body"));
        let body = Bytes::from(
            self.format
                .encode_into(batch.iter().map(|e| &e.bytes[..]), buffer),
        );
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
                url = %self.config.target,
                events = batch.len(),
                status,
                retry_in_ms = delay.as_millis() as u64,
                reason,
                "delivery failed; will retry"
            ),
        };
        let settled = self.send_with_retries(&body, None, fence, &mut log).await;
        let bytes = body.len();
        self.keep_for_next(body);
        match settled {
            Settled::Delivered { status } => {
                tracing::info!(webhook = %name, events = batch.len(), bytes, status, "batch delivered");
                settle.settle(&batch, None).await;
                Ok(None)
            }
            Settled::Rejected { status: 413, .. } if batch.len() > 1 => Ok(Some(batch)),
            Settled::Rejected { status, reason } => {
                settle.settle(&batch, Some((Some(status), reason))).await;
                Ok(None)
            }
            Settled::Fenced => Err(LeaseLost),
            Settled::GaveUp(_) => unreachable!("without a deadline sending never gives up"),
        }
    }

    /// Keeps the buffer of a full `body` for the next, once nothing else
    /// holds it.
    fn keep_for_next(&self, body: Bytes) {
        if body.len() * 2 >= self.config.max_body_bytes && body.is_unique() {
            *self.spare_body.lock().expect("spare body") = Vec::from(body);
        }
    }

    /// Counts a settled batch (sent, or dead-lettered into `file` with a
    /// status and reason) and tells the tap.
    pub(crate) async fn account(
        &self,
        file: &Path,
        tap: &Tap,
        batch: &[Encoded],
        rejected: Option<(Option<u16>, String)>,
    ) {
        let (counter, outcome) = if let Some((status, reason)) = rejected {
            self.dead_letter(file, batch, status, &reason).await;
            metrics::add(&self.counters.dead_letter_batches, 1);
            (
                &self.counters.events_dead_lettered,
                tap::Outcome::DeadLettered,
            )
        } else {
            (&self.counters.events_sent, tap::Outcome::Sent)
        };
        metrics::add(counter, batch.len() as u64);
        tap.settled(self.lane, outcome, batch.iter().map(|e| &e.queued));
    }

    /// Appends the batch to this webhook's dead-letter file (JSON lines), so a
    /// rejected batch is kept for a human instead of lost. Until the file can
    /// be written (a full disk, a folder that is a file) the events stay
    /// queued and the write is tried again, with backoff.
    async fn dead_letter(&self, file: &Path, batch: &[Encoded], status: Option<u16>, reason: &str) {
        let record = serde_json::json!({
            "time": crate::event::rfc3339_now(),
            "webhook": self.config.name,
            "status": status,
            "reason": reason,
            "events": batch.iter().map(|e| e.queued.event()).collect::<Vec<_>>(),
        });
        let mut line = serde_json::to_vec(&record).expect("JSON values serialize");
        line.push(b'\n');
        let line = Arc::new(line);
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(self.config.max_retry_delay)
            .without_max_times()
            .build();
        loop {
            let (owned, line) = (file.to_path_buf(), line.clone());
            match off_workers(move || deadletter::append(&owned, &line)).await {
                Ok(()) => {
                    return tracing::error!(
                        webhook = %self.config.name,
                        url = %self.config.target,
                        status,
                        reason,
                        events = batch.len(),
                        file = %file.display(),
                        "webhook rejected a batch; it was written to the dead-letter file"
                    )
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(self.config.max_retry_delay);
                    tracing::error!(
                        webhook = %self.config.name,
                        status,
                        reason,
                        events = batch.len(),
                        file = %file.display(),
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "webhook rejected a batch and the dead-letter file cannot be written; the events stay queued until it can"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventJson};

    /// Webhook `soc` to `url` with `settings` (TOML lines of its table), as
    /// a config file written in `dir` makes it.
    pub(super) fn soc_config(dir: &Path, url: &str, settings: &str) -> WebhookConfig {
        let path = dir.join("tailhook.toml");
        std::fs::write(
            &path,
            format!(
                "[[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\n\
                 [webhook.soc]\nurl = \"{url}\"\n{settings}\n"
            ),
        )
        .unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        config.webhook("soc").unwrap()
    }

    /// Webhook `soc`, writing to stdout with `settings` (TOML lines of its
    /// table), with its queue in `dir` and its counters.
    fn stdout_webhook(
        dir: &Path,
        settings: &str,
    ) -> (Arc<Queue>, Arc<WebhookCounters>, Arc<Webhook>) {
        let soc = soc_config(dir, "-", settings);
        let queue = Queue::open(dir, &[soc.lane_limits()]).unwrap();
        let counters = Arc::new(WebhookCounters::default());
        let webhook = Webhook::open(soc, "host", queue.clone(), 0, counters.clone()).unwrap();
        (queue, counters, webhook)
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_attempt_the_limits_hold_back_counts_as_a_rate_limit_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (_queue, counters, webhook) = stdout_webhook(dir.path(), r#"rate_limits = ["2/1m"]"#);
        let waits = || counters.rate_limit_waits.load(Ordering::Relaxed);
        for _ in 0..2 {
            let charged = webhook
                .acquire(None, Duration::from_secs(30), None, &mut |_| {})
                .await
                .unwrap();
            webhook.answered(charged, None).await;
        }
        assert_eq!(waits(), 0, "both attempts had budget at hand");
        let start = Instant::now();
        let charged = webhook
            .acquire(None, Duration::from_secs(30), None, &mut |_| {})
            .await
            .unwrap();
        webhook.answered(charged, None).await;
        assert_eq!(waits(), 1, "the third waited for the 2/1m window");
        let waited = Duration::from_micros(counters.rate_limit_wait_micros.load(Ordering::Relaxed));
        assert!(
            waited >= Duration::from_secs(59) && waited <= start.elapsed(),
            "{waited:?}"
        );
    }

    #[test]
    fn a_blocked_queue_write_stalls_neither_the_runtime_nor_the_limiter() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _counters, webhook) = stdout_webhook(dir.path(), r#"rate_limits = ["100/1m"]"#);
        // A slow disk: while this transaction is held, every queue write
        // (the attempt's record among them) waits. Released after a bound,
        // so a runtime blocked by the write gets going again and fails below.
        let slow_disk = crate::queue::SlowDisk::hold(&queue);
        // One worker: anything that blocks it stalls every other task.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let charging = tokio::spawn({
                let webhook = webhook.clone();
                async move {
                    webhook
                        .acquire(None, Duration::from_secs(30), None, &mut |_| {})
                        .await
                        .is_ok()
                }
            });
            // What the control socket and /metrics ask: the budget (the limiter's lock).
            while webhook.budget()[0].used == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(
                !slow_disk.was_released(),
                "the runtime or the limiter waited for the blocked queue write"
            );
            assert!(
                !charging.is_finished(),
                "the attempt's record is still waiting"
            );
            slow_disk.release();
            assert!(charging.await.unwrap());
        });
        let recorded = queue.recent_attempts(0, Duration::from_secs(60)).unwrap();
        assert_eq!(
            recorded.len(),
            1,
            "the attempt was recorded once the disk let it"
        );
    }

    #[test]
    fn the_next_batch_goes_while_the_one_before_is_being_removed() {
        let dir = tempfile::tempdir().unwrap();
        // No rate limit, so no attempt is recorded, and the Content-Type
        // accepted already: sending writes nothing to the queue, and only
        // the removals wait for its disk.
        let (queue, counters, webhook) = stdout_webhook(
            dir.path(),
            "max_body_bytes = 2000\nbatch_timeout = \"10ms\"",
        );
        webhook.content_type_accepted.store(true, Ordering::Relaxed);
        let events: Vec<_> = (0..40)
            .map(|i| (0, Arc::new(Event::sample(&i.to_string(), &"m".repeat(200)))))
            .collect();
        let per_body = 2000 / EventJson::of(&events[0].1).as_bytes().len();
        assert!(40 >= 4 * per_body, "the events fill several bodies");
        queue.append_events(&events).unwrap();
        let slow_disk = crate::queue::SlowDisk::hold(&queue);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let sent = || counters.events_sent.load(Ordering::Relaxed);
        runtime.block_on(async {
            let (stop, halt) = watch::channel(Halt::Run);
            let tap = Arc::new(Tap::new(vec!["soc".into()]));
            let delivering = tokio::spawn(Deliverer::new(webhook, dir.path(), tap).run(halt));
            while sent() < 40 {
                assert!(
                    !slow_disk.was_released(),
                    "only {} of 40 events went before the first batch's removal could commit",
                    sent()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(queue.depth(0).0, 40, "nothing removed yet");
            slow_disk.release();
            stop.send(Halt::Drain).unwrap();
            delivering.await.unwrap();
        });
        assert_eq!(
            queue.depth(0),
            (0, 0),
            "every settled batch removed before the task ended"
        );
    }
}
