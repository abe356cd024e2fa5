//! The sender's lease: one agent at a time sends a shared webhook's events.
//!
//! Taken with `SET NX PX` and a fencing token from an epoch counter; renewed
//! only while its value is unchanged. The holder also keeps a local,
//! monotonic deadline (0.8 × the lease's time after the instant taken before
//! its last renewal): past it, it acts as if it had lost the lease even when
//! Redis cannot say so. Every step that moves entries or spends budget
//! carries the lease's value ([`Fence`]), so a stale holder is refused there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::engine::{Acquired, EngineError, Keys};
use super::Fleet;

/// A held lease: its value in Redis (`token:holder`) and how long this
/// agent may trust it.
#[derive(Debug)]
pub struct Fence {
    value: String,
    token: u64,
    valid_until: Mutex<Instant>,
}

impl Fence {
    /// The lease's value, while the local deadline has not passed.
    pub fn value(&self) -> Option<&str> {
        (Instant::now() < *self.valid_until.lock().expect("fence")).then_some(&self.value)
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    fn trust_until(&self, until: Instant) {
        *self.valid_until.lock().expect("fence") = until;
    }

    fn lose(&self) {
        self.trust_until(Instant::now());
    }
}

pub struct Lease {
    fleet: Arc<Fleet>,
    keys: Keys,
}

impl Lease {
    pub fn new(fleet: Arc<Fleet>, keys: Keys) -> Lease {
        Lease { fleet, keys }
    }

    fn ttl(&self) -> Duration {
        self.fleet.config.lease_ttl
    }

    /// How long after a renewal the holder trusts its lease.
    fn trusted(&self) -> Duration {
        self.ttl().mul_f64(0.8)
    }

    /// The lease, if free; `None` while another agent holds it.
    pub async fn acquire(&self) -> Result<Option<Arc<Fence>>, EngineError> {
        let before = Instant::now();
        let acquired = self
            .fleet
            .engine
            .acquire(&self.keys, &self.fleet.host, self.ttl())
            .await?;
        Ok(match acquired {
            Acquired::Token(token) => Some(Arc::new(Fence {
                value: format!("{token}:{}", self.fleet.host),
                token,
                valid_until: Mutex::new(before + self.trusted()),
            })),
            Acquired::HeldBy(_) => None,
        })
    }

    /// Renews `fence` every third of the lease's time until it is lost
    /// (taken over, or not renewed within the local deadline).
    pub async fn keep(&self, fence: Arc<Fence>) {
        loop {
            tokio::time::sleep(self.ttl() / 3).await;
            let Some(value) = fence.value() else { return };
            let before = Instant::now();
            match self.fleet.engine.renew(&self.keys, value, self.ttl()).await {
                Ok(()) => fence.trust_until(before + self.trusted()),
                Err(EngineError::Fenced) => {
                    fence.lose();
                    return;
                }
                // Unanswered: the local deadline decides.
                Err(e) => tracing::warn!(error = %e, "cannot renew the fleet sender's lease"),
            }
        }
    }

    /// Frees the lease at once (the agent stops), so another takes over
    /// without waiting for it to expire.
    pub async fn release(&self, fence: &Fence) {
        if let Some(value) = fence.value() {
            if let Err(e) = self.fleet.engine.release(&self.keys, value).await {
                tracing::debug!(error = %e, "cannot free the fleet sender's lease; it expires by itself");
            }
        }
        fence.lose();
    }
}
