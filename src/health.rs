//! Whether the agent is doing its job, for `/health` and the systemd
//! watchdog: every delivery task still runs, the tail thread still makes
//! passes, and no webhook has had events waiting without a delivery for
//! longer than its `stall_timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::deliver::{human, Webhook};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::status::age;

/// A tail thread with no pass for this long past when one was due (an idle
/// thread sleeps until its next look, a busy one passes every
/// `poll_interval`) is stalled for `/health` (the watchdog uses its own,
/// `WatchdogSec=`, bound).
const TAIL_STALL_MARGIN: Duration = Duration::from_secs(30);

/// What `/health` answers, as JSON.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// `ok`, `stopping` or `unhealthy`.
    pub status: &'static str,
    /// Why it is not `ok`, one short sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The tail thread's heartbeat, and whether a pause is on purpose.
pub struct TailWatch {
    /// When the tail thread's next pass is due at the latest.
    pub heartbeat: tokio::sync::watch::Receiver<Option<Instant>>,
    pub queue: Arc<Queue>,
}

impl TailWatch {
    /// How long the tail thread has been stuck, if it is: its next pass due
    /// more than `stale_after` ago while not paused on purpose (for room in
    /// the queue, or for a disk that refused a write).
    pub fn stalled_for(&self, stale_after: Duration) -> Option<Duration> {
        let overdue = self
            .heartbeat
            .borrow()
            .map(|due| Instant::now().saturating_duration_since(due))?;
        (overdue > stale_after && !self.queue.tailer_paused()).then_some(overdue)
    }
}

/// The agent's health as the pipeline keeps it up to date.
pub struct Health {
    started: SystemTime,
    tail: TailWatch,
    poll_interval: Duration,
    /// `agent.stall_timeout`: for webhooks without their own.
    stall_timeout: Duration,
    /// Delivery tasks that ended while the agent runs: how, per webhook.
    ended_deliveries: Mutex<Vec<String>>,
    stopping: AtomicBool,
}

impl Health {
    pub fn new(tail: TailWatch, poll_interval: Duration, stall_timeout: Duration) -> Health {
        Health {
            started: SystemTime::now(),
            tail,
            poll_interval,
            stall_timeout,
            ended_deliveries: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        }
    }

    /// The same, judged as if the agent started at `started`: a reload
    /// builds a new one, and a webhook that has had no success since the
    /// agent started must not look fresh because of it.
    pub fn since(mut self, started: SystemTime) -> Health {
        self.started = started;
        self
    }

    pub fn tail(&self) -> &TailWatch {
        &self.tail
    }

    /// The delivery task of `webhook` ended (`how`: panicked, returned) before
    /// the agent was asked to stop: its events wait until a restart.
    pub fn delivery_ended(&self, webhook: &str, how: &str) {
        self.ended_deliveries
            .lock()
            .expect("ended deliveries")
            .push(format!(
                "webhook `{webhook}`: its delivery task {how}; events wait until a restart"
            ));
    }

    pub fn a_delivery_ended(&self) -> bool {
        !self
            .ended_deliveries
            .lock()
            .expect("ended deliveries")
            .is_empty()
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The verdict now, given the webhooks (in lane order) and the metrics
    /// that count their deliveries.
    pub fn verdict(&self, webhooks: &[Arc<Webhook>], metrics: &Metrics) -> Verdict {
        if self.stopping.load(Ordering::SeqCst) {
            return Verdict {
                status: "stopping",
                problems: Vec::new(),
            };
        }
        let mut problems = self
            .ended_deliveries
            .lock()
            .expect("ended deliveries")
            .clone();
        if let Some(stalled) = self
            .tail
            .stalled_for(self.poll_interval + TAIL_STALL_MARGIN)
        {
            problems.push(format!(
                "tailing stalled: no pass over the inputs for {}",
                human(stalled)
            ));
        }
        for (lane, (webhook, (_, counters))) in webhooks.iter().zip(&metrics.webhooks).enumerate() {
            let stall_timeout = webhook.config.stall_timeout.unwrap_or(self.stall_timeout);
            let (waiting, _) = self.tail.queue.depth(lane);
            if waiting == 0 {
                continue;
            }
            let Ok(Some(oldest)) = self.tail.queue.oldest(lane) else {
                continue;
            };
            let since_success = age(counters.last_success().unwrap_or(self.started));
            if age(oldest) > stall_timeout && since_success > stall_timeout {
                problems.push(format!(
                    "webhook `{}`: {waiting} events waiting and no delivery for {} (stall_timeout {})",
                    webhook.config.name,
                    human(since_success),
                    human(stall_timeout)
                ));
            }
        }
        Verdict {
            status: if problems.is_empty() {
                "ok"
            } else {
                "unhealthy"
            },
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(last_pass: Instant) -> (tempfile::TempDir, Health) {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(
            dir.path(),
            &[crate::queue::LaneLimits::pausing("soc", 1_000_000)],
        )
        .unwrap();
        let (_, heartbeat) = tokio::sync::watch::channel(Some(last_pass));
        let tail = TailWatch { heartbeat, queue };
        let health = Health::new(tail, Duration::from_millis(100), Duration::from_secs(60));
        (dir, health)
    }

    #[test]
    fn an_ended_delivery_task_and_a_stalled_tail_make_it_unhealthy_until_it_stops() {
        let metrics = Metrics::new(["auth"], [], []);
        let (_dir, well) = health(Instant::now());
        assert!(well.verdict(&[], &metrics).is_ok());
        well.delivery_ended("soc", "panicked");
        assert!(well.a_delivery_ended());
        let verdict = well.verdict(&[], &metrics);
        assert_eq!(verdict.status, "unhealthy");
        assert_eq!(
            verdict.problems,
            ["webhook `soc`: its delivery task panicked; events wait until a restart"]
        );
        well.stopping();
        assert_eq!(well.verdict(&[], &metrics).status, "stopping");

        let long_ago = Instant::now() - (TAIL_STALL_MARGIN + Duration::from_secs(5));
        let (_dir, stalled) = health(long_ago);
        let verdict = stalled.verdict(&[], &metrics);
        assert!(!stalled.a_delivery_ended());
        assert!(
            verdict.problems[0].starts_with("tailing stalled: no pass over the inputs for"),
            "{verdict:?}"
        );
    }
}
