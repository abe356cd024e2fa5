//! This agent's lane of a shared webhook → the fleet's stream.
//!
//! The lane (redb) stays the spool: events are read from it in order, sent
//! to Redis (ENQUEUE, which skips ids it already holds), and removed from
//! it only once Redis took them. While Redis is away or the stream is at
//! `max_stream_events`, events wait in the lane, whose limit then pauses
//! tailing: back-pressure reaches the log files, nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::SharedBudget;
use crate::deliver::{off_workers, Halt};
use crate::queue::{Queue, Queued};

/// Events sent to Redis in one ENQUEUE.
const CHUNK: usize = 200;

/// How long a forwarder waits before trying again after Redis failed or
/// the stream was full; doubled up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

pub struct Forwarder {
    budget: Arc<SharedBudget>,
    queue: Arc<Queue>,
    lane: usize,
}

impl Forwarder {
    pub fn new(budget: Arc<SharedBudget>, queue: Arc<Queue>, lane: usize) -> Forwarder {
        Forwarder {
            budget,
            queue,
            lane,
        }
    }

    /// Forwards until `stop` says so; with [`Halt::Drain`], once the lane
    /// is empty (or Redis cannot take it: the rest waits for the next run).
    pub async fn run(self, mut stop: watch::Receiver<Halt>) {
        let fleet = self.budget.fleet().clone();
        let name = self.budget.name().to_string();
        let arrivals = self.queue.arrivals(self.lane);
        let mut retry = FIRST_RETRY;
        let mut joined = false;
        let mut failing = false;
        loop {
            let halt = *stop.borrow();
            if halt == Halt::Pause {
                return;
            }
            let outcome = if joined {
                self.forward_some(fleet.config.max_stream_events).await
            } else {
                self.budget.join().await.map(|()| Forwarded::Rejoined)
            };
            let wait_for = match outcome {
                Ok(Forwarded::Some) => {
                    retry = FIRST_RETRY;
                    if failing {
                        tracing::info!(webhook = %name, "the fleet's Redis takes events again");
                        failing = false;
                    }
                    continue;
                }
                Ok(Forwarded::Rejoined) => {
                    joined = true;
                    continue;
                }
                Ok(Forwarded::Rejoin) => {
                    joined = false;
                    continue;
                }
                Ok(Forwarded::Empty) if halt == Halt::Drain => return,
                Ok(Forwarded::Empty) => None,
                Ok(Forwarded::StreamFull) => {
                    tracing::debug!(webhook = %name, "the fleet's stream is full; events wait in this agent's queue");
                    Some(retry)
                }
                Err(e) => {
                    if halt == Halt::Drain {
                        return;
                    }
                    if !failing {
                        tracing::warn!(webhook = %name, error = %e, "cannot forward events to the fleet's Redis; they wait in this agent's queue");
                        failing = true;
                    }
                    Some(retry)
                }
            };
            if let Some(wait) = wait_for {
                retry = (retry * 2).min(MAX_RETRY);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            } else {
                tokio::select! {
                    () = arrivals.notified() => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Sends the lane's oldest events to Redis and removes what it took.
    async fn forward_some(&self, max_stream_events: u64) -> Result<Forwarded, String> {
        let (queue, lane) = (self.queue.clone(), self.lane);
        let oldest = off_workers(move || queue.read(lane, 0, CHUNK))
            .await
            .map_err(|e| e.to_string())?;
        if oldest.is_empty() {
            return Ok(Forwarded::Empty);
        }
        let ids: Vec<_> = oldest.iter().map(Queued::id).collect();
        let events: Vec<(&str, &[u8])> = oldest
            .iter()
            .zip(&ids)
            .map(|(q, id)| (&**id, q.json.as_bytes()))
            .collect();
        let fleet = self.budget.fleet();
        let taken = fleet
            .engine
            .enqueue(&self.budget.keys, max_stream_events, &events)
            .await
            .map_err(|e| e.to_string())?;
        let Some(taken) = taken else {
            return Ok(Forwarded::Rejoin);
        };
        if taken > 0 {
            let seqs: Vec<u64> = oldest[..taken].iter().map(|q| q.seq).collect();
            let (queue, lane) = (self.queue.clone(), self.lane);
            off_workers(move || queue.remove(lane, &seqs))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(if taken < oldest.len() {
            Forwarded::StreamFull
        } else {
            Forwarded::Some
        })
    }
}

enum Forwarded {
    /// Events went to Redis; there may be more.
    Some,
    /// The lane is empty.
    Empty,
    /// The stream holds `max_stream_events`.
    StreamFull,
    /// The fleet's keys are gone: join again before forwarding.
    Rejoin,
    Rejoined,
}
