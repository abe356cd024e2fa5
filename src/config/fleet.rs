//! `[fleet]`: agents that share webhooks (`[webhook.NAME] fleet = true`)
//! through one Redis (>= 7): one queue, one budget and one sender per shared
//! webhook for the whole fleet.
//!
//! The Redis URL may hold a password: it is only ever held as a
//! [`SecretUrl`], whose `Display` drops the user info and redacts the query.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::humantime_duration;
use super::url_source::{KeyError, UrlSource};
use super::SecretUrl;

/// As written in the config.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    redis_url: Option<String>,
    redis_url_env: Option<String>,
    pub(super) redis_url_file: Option<PathBuf>,
    /// Key prefix: one namespace is one fleet.
    #[serde(default = "default_namespace")]
    namespace: String,
    /// How long the sender's lease lasts without a renewal: how long a
    /// shared webhook waits when its sender dies.
    #[serde(default = "default_lease_ttl", with = "humantime_duration")]
    lease_ttl: Duration,
    /// Events a shared webhook's Redis stream may hold; past it the agents
    /// keep theirs in their own queue (and then the log files).
    #[serde(default = "default_max_stream_events")]
    max_stream_events: u64,
}

impl std::fmt::Debug for FleetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSpec")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("redis_url_env", &self.redis_url_env)
            .field("redis_url_file", &self.redis_url_file)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// `[fleet]` with the Redis URL resolved.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub redis: SecretUrl,
    pub namespace: String,
    pub lease_ttl: Duration,
    pub max_stream_events: u64,
}

fn default_namespace() -> String {
    "tailhook".into()
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_max_stream_events() -> u64 {
    1_000_000
}

impl FleetSpec {
    fn url_source(&self) -> UrlSource<'_> {
        UrlSource {
            keys: ["redis_url", "redis_url_env", "redis_url_file"],
            inline: self.redis_url.as_deref(),
            env: self.redis_url_env.as_deref(),
            file: self.redis_url_file.as_deref(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), KeyError> {
        self.url_source().check_one()?;
        if let Some(url) = &self.redis_url {
            SecretUrl::parse_redis(url).map_err(|e| ("redis_url", e))?;
        }
        let usable = !self.namespace.is_empty()
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !usable {
            return Err((
                "namespace",
                "is letters, digits, `_`, `-` and `.` only (it prefixes every key)".into(),
            ));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(("lease_ttl", "must be at least 1s".into()));
        }
        if self.max_stream_events == 0 {
            return Err(("max_stream_events", "must be above zero".into()));
        }
        Ok(())
    }

    pub(super) fn resolve(&self) -> Result<FleetConfig, KeyError> {
        let source = self.url_source();
        let (key, text) = source.read()?;
        let redis = SecretUrl::parse_redis(&text).map_err(|e| source.invalid(key, e))?;
        Ok(FleetConfig {
            redis,
            namespace: self.namespace.clone(),
            lease_ttl: self.lease_ttl,
            max_stream_events: self.max_stream_events,
        })
    }

    /// Whether `redis_url` is written in the config itself with a password.
    pub(super) fn url_holds_secret(&self) -> bool {
        self.redis_url
            .as_deref()
            .and_then(|url| SecretUrl::parse_redis(url).ok())
            .is_some_and(|url| url.has_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_shows_without_its_password() {
        let url = SecretUrl::parse_redis("redis://:hunter22@10.0.0.5:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://10.0.0.5:6380/2");
        assert!(url.has_secret());
        let text = url.scrub("NOAUTH hunter22 rejected for redis://:hunter22@10.0.0.5:6380/2");
        assert!(!text.contains("hunter22"), "{text}");
        let url = SecretUrl::parse_redis("unix:///run/redis/r.sock?pass=hunter22").unwrap();
        assert_eq!(url.to_string(), "unix:///run/redis/r.sock?<redacted>");
        for (bad, says) in [
            ("http://h:6379", "not a Redis URL"),
            ("redis://", "names no host"),
            ("unix://", "names no socket path"),
            ("redis://:hunter22@h:6379 x", "whitespace"),
        ] {
            let err = SecretUrl::parse_redis(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains("hunter22"), "{err}");
        }
    }

    proptest::proptest! {
        /// Whatever the text, parsing never panics and an error never echoes it.
        #[test]
        fn redis_url_errors_never_echo_the_text(secret in "[a-zA-Z0-9]{8,16}", tail in ".{0,12}") {
            let text = format!("redis://:{secret}@{tail}");
            match SecretUrl::parse_redis(&text) {
                Ok(url) => proptest::prop_assert!(!url.to_string().contains(&secret)),
                Err(e) => proptest::prop_assert!(!e.contains(&secret), "{}", e),
            }
        }
    }
}
