//! `[webhook.NAME]` sections: where batches go, and the limits that apply there.
//!
//! A preset fills the target's published limits (SecureX: < 1 MB bodies,
//! 5 requests/min, 5000/day); any key set explicitly wins over the preset.
//! The URL carries the webhook's secret (`api_key`), so it is only ever held as
//! a [`SecretUrl`], whose `Display` and `Debug` redact it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::humantime_duration;
use super::url_source::{KeyError, UrlSource};
use super::RateLimit;

/// 100 MB: days of events for a 5000/day webhook.
const DEFAULT_MAX_QUEUE_BYTES: u64 = 100_000_000;

/// The line a Slack message shows per event, unless `template` says otherwise.
const SLACK_TEMPLATE: &str = "*{severity}* `{rule}` on {host}: {message}";

/// `url = "-"` prints each body on stdout instead of POSTing it: for trying
/// rules and for the quick start, with the same batching and limits.
pub const STDOUT_URL: &str = "-";

/// As written in the config. `Debug` is implemented by hand: `url` is a secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    url: Option<String>,
    url_env: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    #[serde(default)]
    preset: Preset,
    content_type: Option<ContentType>,
    rate_limits: Option<Vec<RateLimit>>,
    max_body_bytes: Option<usize>,
    /// Bytes of events this webhook's queue may hold on disk before tailing
    /// pauses (the log files then keep the rest).
    max_queue_bytes: Option<u64>,
    #[serde(default, with = "optional_duration")]
    batch_timeout: Option<Duration>,
    /// How long one request may take before it counts as failed and is retried.
    #[serde(default, with = "optional_duration")]
    request_timeout: Option<Duration>,
    /// How long the attempts after a timed-out one may wait: each waits
    /// twice as long as the one before, up to this.
    #[serde(default, with = "optional_duration")]
    max_request_timeout: Option<Duration>,
    /// Upper bound of the exponential retry delay.
    #[serde(default, with = "optional_duration")]
    max_retry_delay: Option<Duration>,
    /// `false`: a body that is not full goes as soon as the windows allow
    /// (greedy) instead of at the binding window's pace.
    pacing: Option<bool>,
    /// The fraction of each window pacing leaves for retries, full bodies
    /// and manual sends.
    pacing_reserve: Option<f64>,
    /// Longest `Retry-After` honoured; a receiver asking for more is tried
    /// again after this.
    #[serde(default, with = "optional_duration")]
    max_retry_after: Option<Duration>,
    /// `agent.stall_timeout` for this webhook alone.
    #[serde(default, with = "optional_duration")]
    stall_timeout: Option<Duration>,
    /// One line of text per event (`{rule}`, `{message}`, `{fields.NAME}`…),
    /// sent as `{"text": …}` instead of the envelope.
    template: Option<String>,
    /// Plain `http://` to a host other than loopback sends the key in clear
    /// text; refused unless the operator says so here.
    #[serde(default)]
    allow_insecure_http: bool,
    /// PEM certificates trusted for this webhook on top of the system store
    /// (a private CA, or a self-signed receiver).
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default)]
    when_full: WhenFull,
    /// Shared by the agents of a fleet (`[fleet]`): one queue and one
    /// budget in Redis, one sender at a time.
    #[serde(default)]
    pub(super) fleet: bool,
}

/// What a webhook's full queue lane does to tailing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Tailing waits for room (for every webhook): nothing is lost, the log
    /// files hold the rest.
    #[default]
    Pause,
    /// This webhook's oldest queued events are dropped (logged and counted)
    /// to make room, so the other webhooks keep receiving.
    DropOldest,
}

impl fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_env", &self.url_env)
            .field("url_file", &self.url_file)
            .field("preset", &self.preset)
            .field("ca_file", &self.ca_file)
            .field("when_full", &self.when_full)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Cisco SecureX orchestration: body < 1 MB, 5/min and 5000/day per webhook.
    Securex,
    /// Cisco XDR Automation: body < 1 MB, 10/min and 5000/day.
    Xdr,
    /// Slack (and compatible) incoming webhooks: about 1 request/s, a
    /// `{"text": …}` body, and the secret in the URL's path.
    Slack,
    /// Any JSON receiver; no rate limit unless configured.
    #[default]
    Generic,
}

/// The `Content-Type` a webhook was configured with; SecureX rejects any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ContentType {
    #[serde(rename = "application/json")]
    Json,
    #[serde(rename = "application/json; charset=utf-8")]
    JsonUtf8,
    #[serde(rename = "application/x-www-form-urlencoded")]
    FormUrlencoded,
    #[serde(rename = "application/xml")]
    Xml,
}

impl ContentType {
    pub fn header_value(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::JsonUtf8 => "application/json; charset=utf-8",
            ContentType::FormUrlencoded => "application/x-www-form-urlencoded",
            ContentType::Xml => "application/xml",
        }
    }
}

/// Where a webhook's bodies go.
#[derive(Debug, Clone)]
pub enum WebhookTarget {
    Http(SecretUrl),
    Stdout,
}

impl fmt::Display for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookTarget::Http(url) => url.fmt(f),
            WebhookTarget::Stdout => f.write_str("stdout"),
        }
    }
}

/// A webhook with its URL resolved and every preset default filled in.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub name: String,
    pub target: WebhookTarget,
    pub content_type: ContentType,
    pub rate_limits: Vec<RateLimit>,
    pub max_body_bytes: usize,
    pub max_queue_bytes: u64,
    pub batch_timeout: Duration,
    pub request_timeout: Duration,
    /// The longest a later attempt of a batch whose attempt timed out waits.
    pub max_request_timeout: Duration,
    pub max_retry_delay: Duration,
    pub max_retry_after: Duration,
    /// `None`: `agent.stall_timeout` applies.
    pub stall_timeout: Option<Duration>,
    /// `Some(reserve)`: bodies that are not full go at the binding window's
    /// pace, keeping `reserve` (a fraction) of each window for retries, full
    /// bodies and manual sends. `None`: greedy.
    pub pacing: Option<f64>,
    pub template: Option<String>,
    /// Trusted on top of the system store (from `ca_file`).
    pub extra_roots: Vec<reqwest::Certificate>,
    pub when_full: WhenFull,
    /// Shared by the fleet through Redis (`[fleet]`).
    pub fleet: bool,
}

impl WebhookConfig {
    /// What the queue needs to know of this webhook.
    pub fn lane_limits(&self) -> crate::queue::LaneLimits {
        crate::queue::LaneLimits {
            name: self.name.clone(),
            max_bytes: self.max_queue_bytes,
            when_full: self.when_full,
        }
    }
}

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The cap of the doubling timeouts after a timed-out attempt, unless
/// configured (or `request_timeout` is longer).
const DEFAULT_MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The share of each rate window pacing keeps back unless configured.
const DEFAULT_PACING_RESERVE: f64 = 0.05;

/// A webhook URL. Its query string (the `api_key`) and any user info are
/// secrets, and so is the path where the target keeps its secret there
/// (Slack): formatting it shows `<redacted>` instead.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    url: reqwest::Url,
    path_is_secret: bool,
}

impl SecretUrl {
    /// Parses one URL; surrounding whitespace (a file's trailing newline) is
    /// trimmed, anything else that is not a URL is refused. No message ever
    /// echoes the text: it holds the secret.
    pub fn parse(text: &str) -> Result<SecretUrl, String> {
        let text = text.trim();
        if text.lines().nth(1).is_some() {
            return Err(format!(
                "holds {} lines; give exactly one URL",
                text.lines().count()
            ));
        }
        if text.contains(char::is_whitespace) {
            return Err("holds whitespace inside the URL; give exactly one URL".into());
        }
        // The parser's message never echoes the input, so it is safe to show.
        let url = reqwest::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "holds a user name or password (`user:password@`), which tailhook \
                        does not send; put the key where the receiver expects it (SecureX, XDR: \
                        the `api_key` query parameter)"
                    .into(),
            );
        }
        match url.scheme() {
            "http" | "https" => Ok(SecretUrl {
                url,
                path_is_secret: false,
            }),
            other => Err(format!(
                "scheme `{other}` is not supported; use https:// (or http:// on loopback)"
            )),
        }
    }

    /// Parses a Redis URL (`redis://`, `rediss://`, `unix://`), whose
    /// password, user name and query are secrets; like [`SecretUrl::parse`],
    /// no message echoes the text.
    pub fn parse_redis(text: &str) -> Result<SecretUrl, String> {
        let text = text.trim();
        if text.lines().nth(1).is_some() || text.contains(char::is_whitespace) {
            return Err("holds whitespace or several lines; give exactly one URL".into());
        }
        let url = reqwest::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
        match url.scheme() {
            "redis" | "rediss" if url.host_str().is_some_and(|h| !h.is_empty()) => {}
            "unix" | "redis+unix" if !url.path().is_empty() && url.path() != "/" => {}
            "redis" | "rediss" => return Err("names no host (redis://HOST:6379)".into()),
            "unix" | "redis+unix" => {
                return Err("names no socket path (unix:///run/redis/redis.sock)".into())
            }
            other => {
                return Err(format!(
                    "scheme `{other}` is not a Redis URL; use redis://, rediss:// or unix://"
                ))
            }
        }
        Ok(SecretUrl {
            url,
            path_is_secret: false,
        })
    }

    /// The real URL, for the HTTP client only.
    pub fn expose(&self) -> &reqwest::Url {
        &self.url
    }

    /// Whether the URL holds anything [`Display`](fmt::Display) redacts.
    pub fn has_secret(&self) -> bool {
        self.path_is_secret || self.url.query().is_some() || self.url.password().is_some()
    }

    /// Plain `http://` to anything but this machine: the key would cross the
    /// network in clear text.
    fn is_insecure(&self) -> bool {
        let loopback = match self.url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        self.url.scheme() == "http" && !loopback
    }

    /// `text` with every secret of this URL (the URL itself, its query and
    /// query values, its password, a secret path) replaced by `<redacted>`,
    /// for text that came from elsewhere, such as a receiver's error page.
    pub fn scrub(&self, text: &str) -> String {
        let url = &self.url;
        let mut secrets: Vec<String> = vec![url.as_str().to_string()];
        secrets.extend(url.query().map(str::to_string));
        secrets.extend(url.password().map(str::to_string));
        for (_, value) in url.query_pairs() {
            secrets.push(value.into_owned());
        }
        secrets.extend(url.query_pairs().map(|(_, value)| {
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        }));
        if self.path_is_secret {
            secrets.push(url.path().to_string());
        }
        // Longest first, so a secret inside another goes with it; very short
        // values (`a=1`) would blank out ordinary text and guard nothing.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret, "<redacted>")
        })
    }

    fn with_secret_path(self) -> SecretUrl {
        SecretUrl {
            path_is_secret: true,
            ..self
        }
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        write!(f, "{}://{}", url.scheme(), url.host_str().unwrap_or(""))?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(if self.path_is_secret {
            "/<redacted>"
        } else {
            url.path()
        })?;
        if url.query().is_some() {
            f.write_str("?<redacted>")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

struct PresetDefaults {
    rate_limits: &'static [(u32, u64)],
    max_body_bytes: usize,
}

impl Preset {
    fn defaults(self) -> PresetDefaults {
        const MINUTE: u64 = 60;
        const DAY: u64 = 86_400;
        match self {
            Preset::Securex => PresetDefaults {
                rate_limits: &[(5, MINUTE), (5000, DAY)],
                max_body_bytes: 1_000_000,
            },
            Preset::Xdr => PresetDefaults {
                rate_limits: &[(10, MINUTE), (5000, DAY)],
                max_body_bytes: 1_000_000,
            },
            Preset::Slack => PresetDefaults {
                rate_limits: &[(1, 1)],
                // Slack cuts messages past 40,000 characters.
                max_body_bytes: 35_000,
            },
            Preset::Generic => PresetDefaults {
                rate_limits: &[],
                max_body_bytes: 1_000_000,
            },
        }
    }
}

impl WebhookSpec {
    fn url_source(&self) -> UrlSource<'_> {
        UrlSource {
            keys: ["url", "url_env", "url_file"],
            inline: self.url.as_deref(),
            env: self.url_env.as_deref(),
            file: self.url_file.as_deref(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), KeyError> {
        self.url_source().check_one()?;
        if let Some(url) = &self.url {
            if url != STDOUT_URL {
                self.secret_url(url).map_err(|e| ("url", e))?;
            }
        }
        if self.max_body_bytes.is_some_and(|b| b < 256) {
            return Err((
                "max_body_bytes",
                "must be at least 256 bytes to hold one event".into(),
            ));
        }
        if self.max_queue_bytes == Some(0) {
            return Err((
                "max_queue_bytes",
                "must be above zero (the queue holds at least one chunk of events)".into(),
            ));
        }
        if let Some(reserve) = self.pacing_reserve {
            if !(0.0..=0.5).contains(&reserve) {
                return Err((
                    "pacing_reserve",
                    format!("must be a fraction from 0 to 0.5 (e.g. 0.05 for 5 %), not {reserve}"),
                ));
            }
        }
        for (key, duration) in [
            ("batch_timeout", self.batch_timeout),
            // Zero: every request "times out" at once and is sent again, forever.
            ("request_timeout", self.request_timeout),
            // Zero: a failing webhook is retried in a busy loop.
            ("max_retry_delay", self.max_retry_delay),
        ] {
            if duration.is_some_and(|d| d.is_zero()) {
                return Err((key, "must be above zero".into()));
            }
        }
        if let Some(max) = self.max_request_timeout {
            if max < self.request_timeout() {
                return Err((
                    "max_request_timeout",
                    format!(
                        "must be at least request_timeout ({})",
                        humantime::format_duration(self.request_timeout())
                    ),
                ));
            }
        }
        if let Some(path) = &self.ca_file {
            load_ca_file(path).map_err(|e| ("ca_file", e))?;
        }
        if let Some(template) = &self.template {
            crate::deliver::Template::parse(template).map_err(|e| ("template", e))?;
            if self.content_type == Some(ContentType::Xml) {
                return Err((
                    "template",
                    "renders text for a JSON or form body; not with application/xml".into(),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn resolve(&self, name: &str) -> Result<WebhookConfig, KeyError> {
        let target = self.resolve_target()?;
        let defaults = self.preset.defaults();
        Ok(WebhookConfig {
            name: name.to_string(),
            target,
            content_type: self.content_type.unwrap_or(ContentType::Json),
            rate_limits: self.rate_limits(),
            max_body_bytes: self.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_queue_bytes: self.max_queue_bytes.unwrap_or(DEFAULT_MAX_QUEUE_BYTES),
            batch_timeout: self.batch_timeout.unwrap_or(Duration::from_secs(5)),
            request_timeout: self.request_timeout(),
            max_request_timeout: self
                .max_request_timeout
                .unwrap_or_else(|| DEFAULT_MAX_REQUEST_TIMEOUT.max(self.request_timeout())),
            max_retry_delay: self.max_retry_delay.unwrap_or(Duration::from_secs(300)),
            max_retry_after: self.max_retry_after.unwrap_or(Duration::from_secs(3600)),
            stall_timeout: self.stall_timeout,
            pacing: self.pacing(),
            template: self
                .template
                .clone()
                .or_else(|| (self.preset == Preset::Slack).then(|| SLACK_TEMPLATE.to_string())),
            extra_roots: match &self.ca_file {
                Some(path) => load_ca_file(path).map_err(|e| ("ca_file", e))?,
                None => Vec::new(),
            },
            when_full: self.when_full,
            fleet: self.fleet,
        })
    }

    /// The rate windows: as configured, else the preset's. Needs no URL, so
    /// `status` can show budgets without the webhook's secret at hand.
    pub fn rate_limits(&self) -> Vec<RateLimit> {
        self.rate_limits.clone().unwrap_or_else(|| {
            self.preset
                .defaults()
                .rate_limits
                .iter()
                .map(|&(count, secs)| RateLimit {
                    count,
                    period: Duration::from_secs(secs),
                })
                .collect()
        })
    }

    fn request_timeout(&self) -> Duration {
        self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }

    /// Whether the webhook is shared by the fleet (`fleet = true`).
    pub fn is_shared(&self) -> bool {
        self.fleet
    }

    /// The pacing reserve, or `None` when `pacing = false`. Needs no URL,
    /// like [`WebhookSpec::rate_limits`].
    pub fn pacing(&self) -> Option<f64> {
        (self.pacing != Some(false)).then(|| self.pacing_reserve.unwrap_or(DEFAULT_PACING_RESERVE))
    }

    fn resolve_target(&self) -> Result<WebhookTarget, KeyError> {
        let source = self.url_source();
        let (key, text) = source.read()?;
        let text = text.trim();
        if text == STDOUT_URL {
            return Ok(WebhookTarget::Stdout);
        }
        let url = self.secret_url(text).map_err(|e| source.invalid(key, e))?;
        Ok(WebhookTarget::Http(url))
    }

    fn secret_url(&self, text: &str) -> Result<SecretUrl, String> {
        let url = SecretUrl::parse(text)?;
        if url.is_insecure() && !self.allow_insecure_http {
            return Err(format!(
                "plain http:// to {} would send the key in clear text; use https://, \
                 or set allow_insecure_http = true for a trusted network",
                url.url.host_str().unwrap_or("")
            ));
        }
        Ok(if self.preset == Preset::Slack {
            url.with_secret_path()
        } else {
            url
        })
    }

    /// Whether `url` is written in the config itself and holds a secret
    /// (`api_key`, Slack's path), so whoever reads the config holds it too.
    pub(super) fn url_holds_secret(&self) -> bool {
        self.url
            .as_deref()
            .filter(|url| *url != STDOUT_URL)
            .and_then(|url| self.secret_url(url).ok())
            .is_some_and(|url| url.has_secret())
    }
}

/// The certificates of a `ca_file`: at least one, each one a trust anchor
/// rustls accepts. Errors name the file.
fn load_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{shown}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown}: holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
        ));
    }
    // reqwest parses each certificate only when a client is built: build one
    // now, so a bad file is a config error rather than a failed delivery.
    certs
        .iter()
        .fold(
            reqwest::Client::builder().tls_built_in_root_certs(false),
            |builder, cert| builder.add_root_certificate(cert.clone()),
        )
        .build()
        .map_err(|e| format!("{shown}: not a usable CA certificate: {e}"))?;
    Ok(certs)
}

pub(super) mod optional_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::humantime_duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_the_query() {
        let url = SecretUrl::parse(
            "https://securex-ao.us.security.cisco.com:8443/webhooks/01ABC?api_key=+61Nt/C8==",
        )
        .unwrap();
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("61Nt"), "{shown}");
        assert!(
            shown.contains(
                "https://securex-ao.us.security.cisco.com:8443/webhooks/01ABC?<redacted>"
            ),
            "{shown}"
        );
    }

    #[test]
    fn scrub_removes_the_secrets_a_receiver_echoes() {
        let url =
            SecretUrl::parse("https://h/webhooks/1?api_key=k3y%2BWith%2FSlash%3D%3D").unwrap();
        let echoed = "bad key k3y+With/Slash== in /webhooks/1?api_key=k3y%2BWith%2FSlash%3D%3D";
        let scrubbed = url.scrub(echoed);
        assert!(!scrubbed.contains("k3y"), "{scrubbed}");
        assert!(scrubbed.contains("/webhooks/1?"), "{scrubbed}");
    }

    #[test]
    fn debug_output_of_the_spec_hides_the_url() {
        let spec: WebhookSpec = toml::from_str(r#"url = "https://h/x?api_key=hunter2""#).unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
    }

    #[test]
    fn bad_url_error_does_not_echo_the_secret() {
        let err = SecretUrl::parse("https//nohost?api_key=hunter2").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = SecretUrl::parse("ftp://host/x?api_key=hunter2").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn explicit_keys_override_preset() {
        let spec: WebhookSpec = toml::from_str(
            r#"url = "http://127.0.0.1:1/x"
               preset = "xdr"
               max_body_bytes = 4096"#,
        )
        .unwrap();
        let hook = spec.resolve("x").unwrap();
        assert_eq!(hook.max_body_bytes, 4096);
        assert_eq!(hook.rate_limits[0].count, 10);
        assert_eq!(hook.rate_limits[1].count, 5000);
    }

    #[test]
    fn stdout_target() {
        let spec: WebhookSpec = toml::from_str(r#"url = "-""#).unwrap();
        assert!(matches!(
            spec.resolve("x").unwrap().target,
            WebhookTarget::Stdout
        ));
    }

    #[test]
    fn slack_preset_hides_the_path_and_sends_text() {
        let spec: WebhookSpec = toml::from_str(
            r#"url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
               preset = "slack""#,
        )
        .unwrap();
        let hook = spec.resolve("chat").unwrap();
        let shown = hook.target.to_string();
        assert_eq!(shown, "https://hooks.slack.com/<redacted>");
        assert!(hook.template.is_some());
        assert_eq!(hook.rate_limits[0].count, 1);
    }

    #[test]
    fn template_is_checked_and_not_mixed_with_xml() {
        let err = toml::from_str::<WebhookSpec>(
            r#"url = "-"
               template = "{nope}""#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(err.0, "template");
        let err = toml::from_str::<WebhookSpec>(
            r#"url = "-"
               content_type = "application/xml"
               template = "{rule}""#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(err.1.contains("application/xml"), "{}", err.1);
    }

    #[test]
    fn max_request_timeout_is_5_minutes_and_never_below_request_timeout() {
        let spec =
            |keys: &str| toml::from_str::<WebhookSpec>(&format!("url = \"-\"\n{keys}")).unwrap();
        let hook = spec("").resolve("x").unwrap();
        assert_eq!(hook.max_request_timeout, Duration::from_secs(300));
        let hook = spec("request_timeout = \"10m\"").resolve("x").unwrap();
        assert_eq!(hook.max_request_timeout, Duration::from_secs(600));
        let err = spec("request_timeout = \"10s\"\nmax_request_timeout = \"5s\"")
            .validate()
            .unwrap_err();
        assert_eq!(err.0, "max_request_timeout");
        assert!(err.1.contains("10s"), "{}", err.1);
    }

    #[test]
    fn pacing_is_on_with_a_5_percent_reserve_unless_configured() {
        let spec =
            |keys: &str| toml::from_str::<WebhookSpec>(&format!("url = \"-\"\n{keys}")).unwrap();
        assert_eq!(spec("").resolve("x").unwrap().pacing, Some(0.05));
        assert_eq!(
            spec("pacing_reserve = 0.2").resolve("x").unwrap().pacing,
            Some(0.2)
        );
        assert_eq!(spec("pacing = false").resolve("x").unwrap().pacing, None);
        let err = spec("pacing_reserve = 5.0").validate().unwrap_err();
        assert_eq!(err.0, "pacing_reserve");
        assert!(err.1.contains("0.5"), "{}", err.1);
    }

    #[test]
    fn content_types_outside_the_supported_set_are_rejected() {
        let err = toml::from_str::<WebhookSpec>(
            r#"url = "-"
               content_type = "text/plain""#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("application/json"), "{err}");
    }

    /// An http(s) URL with arbitrary path segments and query pairs.
    fn arbitrary_url() -> impl proptest::strategy::Strategy<Value = reqwest::Url> {
        use proptest::prelude::*;
        (
            prop_oneof![Just("https"), Just("http")],
            // No `--`: a label starting `xn--` is punycode, which an
            // arbitrary one is not, and the URL parser refuses it.
            "[a-z](-?[a-z0-9]){0,10}(\\.[a-z]{2,5}){0,2}",
            proptest::option::of(1u16..),
            proptest::collection::vec(any::<String>(), 0..4),
            proptest::collection::vec((any::<String>(), any::<String>()), 0..4),
        )
            .prop_map(|(scheme, host, port, segments, pairs)| {
                let mut url = reqwest::Url::parse(&format!("{scheme}://{host}/")).unwrap();
                url.set_port(port).unwrap();
                url.path_segments_mut().unwrap().extend(&segments);
                if !pairs.is_empty() {
                    url.query_pairs_mut().extend_pairs(&pairs);
                }
                url
            })
    }

    proptest::proptest! {
        /// Shown, a URL is its scheme, host, port and (unless secret) path;
        /// the query and a secret path are `<redacted>`, whatever they hold.
        #[test]
        fn redaction_shows_nothing_of_the_query_or_a_secret_path(url in arbitrary_url(), slack in proptest::prelude::any::<bool>()) {
            let mut secret = SecretUrl::parse(url.as_str()).unwrap();
            if slack {
                secret = secret.with_secret_path();
            }
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            let path = if slack { "/<redacted>" } else { url.path() };
            let query = if url.query().is_some() { "?<redacted>" } else { "" };
            let expected = format!("{}://{}{port}{path}{query}", url.scheme(), url.host_str().unwrap());
            proptest::prop_assert_eq!(secret.to_string(), expected.clone());
            proptest::prop_assert_eq!(format!("{secret:?}"), format!("SecretUrl({expected})"));
            proptest::prop_assert_eq!(secret.has_secret(), slack || url.query().is_some());
        }

        /// A receiver's text that echoes a key (as sent or decoded) keeps
        /// none of it after `scrub`.
        #[test]
        fn scrub_removes_every_echoed_key(
            key in "[A-Za-z0-9+/=_.-]{4,40}",
            before in proptest::prelude::any::<String>(),
            after in proptest::prelude::any::<String>(),
            encoded in proptest::prelude::any::<bool>(),
        ) {
            proptest::prop_assume!(!"<redacted>".contains(key.as_str()));
            let mut url = reqwest::Url::parse("https://receiver.test/webhooks/1").unwrap();
            url.query_pairs_mut().append_pair("api_key", &key);
            let secret = SecretUrl::parse(url.as_str()).unwrap();
            let echoed = if encoded {
                url::form_urlencoded::byte_serialize(key.as_bytes()).collect()
            } else {
                key.clone()
            };
            let scrubbed = secret.scrub(&format!("{before}{echoed}{after}"));
            proptest::prop_assert!(!scrubbed.contains(&key), "{}", scrubbed);
            proptest::prop_assert!(!scrubbed.contains(&echoed), "{}", scrubbed);
        }

        /// Any text as a URL: parsed or refused, and a refusal never
        /// repeats what it was given.
        #[test]
        fn a_refused_url_is_never_echoed(text in "\\PC{0,60}SECRETKEY\\PC{0,20}") {
            if let Err(problem) = SecretUrl::parse(&text) {
                proptest::prop_assert!(!problem.contains("SECRETKEY"), "{}", problem);
            }
        }
    }
}
