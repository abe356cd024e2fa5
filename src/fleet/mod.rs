//! Fleet mode: the agents of a fleet share a webhook (`fleet = true`)
//! through one Redis (>= 7), so N agents behave like one well-behaved sender.
//!
//! ```text
//! every agent:  tail → rules → redb lane → forwarder → ENQUEUE → stream (one per shared webhook)
//! one agent:    lease → fenced READ / RECLAIM → body of many hosts' events → fenced CHARGE → POST → SETTLE → ACK
//! ```
//! - `engine`/`scripts`: the connection and the Lua scripts (atomic, on
//!   Redis's clock, every step that moves entries or spends budget fenced by
//!   the lease's token).
//! - `forwarder`: this agent's lane → the shared stream; an event leaves the
//!   lane only once Redis has it. Redis away: events wait in the lane.
//! - `lease`: one sender per shared webhook, with a fencing token.
//! - `sender`: the lease holder's loop.
//! - `budget`: the shared budget behind [`crate::deliver::Webhook`]'s
//!   charge, for the sender, retries and `tailhook send` alike.
//!
//! Without `[fleet]` nothing here runs: no connection, no cost.

pub mod budget;
mod engine;
mod forwarder;
mod lease;
mod scripts;
mod sender;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{Observed, SharedBudget};
pub use engine::{
    Acquired, Charge, Engine, EngineError, Entry, Joined, Keys, Overview, Reclaimed, WindowArgs,
};
pub use forwarder::Forwarder;
pub use lease::Fence;
pub use sender::Sender;

use crate::config::{FleetConfig, RateLimit, WebhookConfig, WebhookTarget};
use crate::deliver::RateLimiter;
use crate::queue::Queue;

/// This agent's membership of a fleet: its Redis, namespace and name.
pub struct Fleet {
    pub engine: Arc<Engine>,
    pub config: FleetConfig,
    pub host: String,
}

impl Fleet {
    /// Makes no connection yet: an agent starts without Redis.
    pub fn new(config: FleetConfig, host: &str) -> Result<Arc<Fleet>, EngineError> {
        Ok(Arc::new(Fleet {
            engine: Arc::new(Engine::new(&config.redis)?),
            config,
            host: host.to_string(),
        }))
    }

    /// Whether the fleet's Redis answers and is recent enough (`check
    /// --online`): its version, or why not.
    pub fn reachable(config: &FleetConfig) -> Result<String, EngineError> {
        let engine = Engine::new(&config.redis)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Redis {
                at: config.redis.to_string(),
                reason: e.to_string(),
            })?;
        let version = runtime.block_on(engine.ping())?;
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(EngineError::Redis {
                at: config.redis.to_string(),
                reason: format!("version {version}; the fleet needs Redis 7 or later (XAUTOCLAIM, script effects)"),
            });
        }
        Ok(version)
    }

    /// The shared webhook of `keys` now: its sender, shared queue, agents
    /// seen recently and the fleet's use of each window of `limits`; with
    /// the ledger as a limiter.
    pub async fn observe(
        &self,
        keys: &Keys,
        limits: &[RateLimit],
        pacing: Option<f64>,
    ) -> Result<(Observed, RateLimiter), EngineError> {
        let overview = self.engine.overview(keys, SEEN_WITHIN).await?;
        let mut ledger = budget::ledger(&self.engine, keys, limits).await?;
        let budget = ledger.usage(tokio::time::Instant::now(), pacing);
        Ok((Observed { overview, budget }, ledger))
    }

    pub fn keys(&self, webhook: &str) -> Keys {
        Keys::new(&self.config.namespace, webhook)
    }

    /// The shared budget of `webhook` (whose lane in `queue` records this
    /// agent's own attempts).
    pub fn budget(
        self: &Arc<Fleet>,
        webhook: &WebhookConfig,
        queue: Arc<Queue>,
        lane: usize,
    ) -> Arc<SharedBudget> {
        Arc::new(SharedBudget::new(self.clone(), webhook, queue, lane))
    }

    /// How the agents of the fleet know they share the same webhook: a
    /// hash of its URL, content type and limits (never the URL itself).
    pub fn fingerprint(webhook: &WebhookConfig) -> String {
        let mut text = String::new();
        match &webhook.target {
            WebhookTarget::Http(url) => text.push_str(url.expose().as_str()),
            WebhookTarget::Stdout => text.push('-'),
        }
        text.push('\n');
        text.push_str(webhook.content_type.header_value());
        for limit in &webhook.rate_limits {
            text.push('\n');
            text.push_str(&limit.to_string());
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// How long an agent that has not joined again is still shown as seen.
pub const SEEN_WITHIN: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(extra: &str) -> WebhookConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tailhook.toml");
        std::fs::write(
            &path,
            format!(
                "[[input]]\nname = \"a\"\npaths = [\"a.log\"]\n[webhook.soc]\n\
                 url = \"https://x.test/w?api_key=k3y-k3y\"\npreset = \"securex\"\n{extra}"
            ),
        )
        .unwrap();
        crate::config::Config::load(&path)
            .unwrap()
            .webhook("soc")
            .unwrap()
    }

    #[test]
    fn the_fingerprint_tells_url_content_type_and_limits_apart_without_holding_them() {
        let base = Fleet::fingerprint(&webhook(""));
        assert_eq!(base, Fleet::fingerprint(&webhook("batch_timeout = \"1s\"")));
        for other in [
            "rate_limits = [\"5/1m\"]",
            "content_type = \"application/xml\"",
        ] {
            assert_ne!(base, Fleet::fingerprint(&webhook(other)), "{other}");
        }
        let mut other_url = webhook("");
        other_url.target = WebhookTarget::Http(
            crate::config::SecretUrl::parse("https://x.test/w?api_key=other").unwrap(),
        );
        assert_ne!(base, Fleet::fingerprint(&other_url));
        assert_eq!(base.len(), 32);
        assert!(!base.contains("k3y"));
    }
}
