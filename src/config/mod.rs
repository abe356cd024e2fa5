//! Configuration: the first stage every line's journey depends on.
//!
//! The agent reads one TOML file (`-c FILE`, `$TAILHOOK_CONFIG`, or
//! `/etc/tailhook/tailhook.toml`) through figment, then applies `TAILHOOK_…`
//! environment overrides with `__` separating nested keys
//! (`TAILHOOK_AGENT__STATE_DIR=/tmp/x`). Every struct denies unknown keys so a
//! typo is an error naming the key's path, never a silently ignored setting.
//!
//! Loading only parses and validates: nothing here opens log files or sockets.
//! Relative paths (state dir, rule paths, input globs) are taken relative to the
//! config file's folder, so a config works wherever the agent is started from.

mod fleet;
mod located;
mod units;
mod url_source;
mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::rules::Severity;

pub use fleet::{FleetConfig, FleetSpec};
pub use units::RateLimit;
pub use webhook::{
    ContentType, Preset, SecretUrl, WebhookConfig, WebhookSpec, WebhookTarget, WhenFull,
};

/// Where `run` and `check` look when neither `-c` nor `$TAILHOOK_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tailhook/tailhook.toml";

/// Environment variables under the `TAILHOOK_` prefix that are not config
/// keys: `TAILHOOK_REDIS_URL` is where DESIGN's `[fleet]` example
/// (`redis_url_env`) keeps the fleet's Redis URL.
const NON_CONFIG_ENV: &[&str] = &["config", "log", "log_format", "redis_url"];

/// A config problem, always naming the file and, where known, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not parse into a config: `FILE:LINE:COL: key: problem`
    /// (or the environment variable at fault instead of the position).
    #[error("{at}: {}{problem}", key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Parse {
        at: String,
        key: Option<String>,
        problem: String,
    },
    /// A key with a value that does not fit (validation): at the value's
    /// line and column when the file holds the key.
    #[error("{path}{}: {key}: {problem}", position.map(|(line, column)| format!(":{line}:{column}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        position: Option<(usize, usize)>,
        key: String,
        problem: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default, rename = "input")]
    pub inputs: Vec<InputConfig>,
    #[serde(default, rename = "webhook")]
    pub webhooks: BTreeMap<String, WebhookSpec>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Agents sharing webhooks through Redis; absent: every webhook is this agent's alone.
    #[serde(default)]
    pub fleet: Option<FleetSpec>,
    /// The file this config came from; relative paths were resolved against its folder.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Checkpoints, queues and rate-limit usage live here.
    pub state_dir: PathBuf,
    /// The `host` field of every envelope; defaults to the machine's host name.
    pub host: Option<String>,
    /// How often known files are stat'ed even when inotify says nothing.
    #[serde(with = "humantime_duration")]
    pub poll_interval: Duration,
    /// How long SIGTERM/SIGINT may take to flush what is queued before exiting.
    #[serde(with = "humantime_duration")]
    pub shutdown_timeout: Duration,
    /// inotify wakes the tailer as soon as a file changes; turn it off where
    /// it does not work (NFS and other network file systems) to poll only.
    pub inotify: bool,
    /// Where to serve `/metrics` (Prometheus) and `/health`; off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `/health` answers 503 once a webhook has had events waiting this long
    /// without a delivery (a webhook's own `stall_timeout` overrides it).
    #[serde(with = "humantime_duration")]
    pub stall_timeout: Duration,
}

impl AgentConfig {
    /// `host`, else the machine's host name.
    pub fn host(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: PathBuf::from("/var/lib/tailhook"),
            host: None,
            poll_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(10),
            inotify: true,
            metrics_listen: None,
            stall_timeout: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rule files, or folders whose `*.toml` files are rule files.
    pub paths: Vec<PathBuf>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            paths: vec![PathBuf::from("/etc/tailhook/rules.d")],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Files present at first start are read from their end: a fresh install
    /// must not flood a 5000/day webhook with old history.
    #[default]
    End,
    Beginning,
}

/// Where an input's lines come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// Log files named by `paths`.
    #[default]
    File,
    /// The systemd journal, read through `journalctl`, filtered by `units`,
    /// `identifiers` and `matches`.
    Journald,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: InputKind,
    /// File paths or globs (file inputs).
    #[serde(default)]
    pub paths: Vec<String>,
    /// journald inputs read the entries of these systemd units
    /// (`_SYSTEMD_UNIT`)…
    #[serde(default)]
    pub units: Vec<String>,
    /// …or with these syslog identifiers (`SYSLOG_IDENTIFIER`)…
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// …or matching these journalctl matches (`FIELD=value` terms, `+`
    /// between alternative groups). None of the three: the whole journal.
    #[serde(default)]
    pub matches: Vec<String>,
    /// Globs of paths that `paths` matches but must not be tailed (e.g. `*.gz`).
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub start_at: StartAt,
    /// Rule-id globs applied to this input's lines.
    #[serde(default = "match_everything")]
    pub rules: Vec<String>,
    /// Longer lines are cut to this many bytes (and counted), never dropped.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// A last line without its newline is held this long for the rest, then
    /// taken as a line of its own.
    #[serde(default = "default_partial_line_timeout", with = "humantime_duration")]
    pub partial_line_timeout: Duration,
    /// With inotify on, how often the globs are matched again and every
    /// file looked at when no notification came (one can be lost: queue
    /// overflow, network file systems). The shortest of all inputs applies.
    #[serde(default = "default_rescan_interval", with = "humantime_duration")]
    pub rescan_interval: Duration,
    /// A file read to its end that did not grow for this long is closed, so
    /// thousands of quiet logs do not hold thousands of descriptors; it is
    /// opened again, by its identity, when it grows.
    #[serde(default = "default_close_inactive", with = "humantime_duration")]
    pub close_inactive: Duration,
    /// Files not modified for this long are not opened (old rotated logs
    /// matched by a glob). Off when unset.
    #[serde(default, with = "webhook::optional_duration")]
    pub ignore_older: Option<Duration>,
    /// A line cut at `max_line_bytes` also raises a low-severity
    /// `tailhook.line_too_long` event, so a rule defeated by the cut (a
    /// `$`-anchored one behind a 70 kB user name) is visible.
    #[serde(default = "report_long_lines_by_default")]
    pub report_long_lines: bool,
    /// The zone of times the lines write without an offset (classic syslog's
    /// `Nov 22 10:00:01`): an IANA name (`Europe/Berlin`) or `UTC`; by
    /// default the host's (`TZ`, else `/etc/localtime`).
    #[serde(default)]
    pub timezone: Option<String>,
}

impl InputConfig {
    /// How this input's line times are read: in its `timezone`.
    pub fn clock(&self) -> Result<crate::rules::LineClock, String> {
        crate::rules::zone_named(self.timezone.as_deref()).map(crate::rules::LineClock::new)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Rule-id globs.
    pub rules: Vec<String>,
    /// Webhook names.
    pub webhooks: Vec<String>,
    /// Events of lower severity are not sent this way: `info` events are
    /// 10–100× more frequent than failures, so they go only where asked.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
}

/// What a route sends unless it says otherwise, and what every webhook gets
/// when there is no `[[route]]` at all.
pub const DEFAULT_MIN_SEVERITY: Severity = Severity::Low;

fn default_min_severity() -> Severity {
    DEFAULT_MIN_SEVERITY
}

/// A journalctl match is `+` (or between the groups around it) or
/// `FIELD=value`, where a field name is upper-case letters, digits and
/// underscores, not starting with a digit (journald's rule).
fn check_journal_match(text: &str) -> Result<(), &'static str> {
    if text == "+" {
        return Ok(());
    }
    let Some((field, _)) = text.split_once('=') else {
        return Err("is not `FIELD=value` (e.g. `_SYSTEMD_UNIT=ssh.service`) or `+`");
    };
    let valid = !field.is_empty()
        && !field.starts_with(|c: char| c.is_ascii_digit())
        && field
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err("has no valid field name before `=`: upper-case letters, digits and `_`")
    }
}

fn match_everything() -> Vec<String> {
    vec!["*".to_string()]
}

fn default_partial_line_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_rescan_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_close_inactive() -> Duration {
    Duration::from_secs(5 * 60)
}

fn report_long_lines_by_default() -> bool {
    true
}

fn default_max_line_bytes() -> usize {
    64 * 1024
}

fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Serde adapter for human durations (`"500ms"`, `"5s"`, `"10m"`, `"1d"`).
pub(crate) mod humantime_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); use e.g. \"500ms\", \"5s\", \"10m\", \"1d\""
            ))
        })
    }
}

/// Resolves a path of the config file `source` against its folder.
fn resolver(source: &Path) -> impl Fn(&Path) -> PathBuf {
    let folder = source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The file exists (it was just read), so its folder canonicalizes; paths
    // in events and logs then read /srv/logs/x, not config/../logs/x.
    let base = folder
        .canonicalize()
        .unwrap_or_else(|_| folder.to_path_buf());
    move |p: &Path| -> PathBuf {
        let mut resolved = PathBuf::new();
        for part in base.join(p).components() {
            match part {
                std::path::Component::ParentDir => {
                    resolved.pop();
                }
                std::path::Component::CurDir => {}
                other => resolved.push(other),
            }
        }
        resolved
    }
}

/// Where the state lives per the config file `path` (and `TAILHOOK_…`),
/// read even when the rest of the file is wrong, so that `status` still
/// reaches a running agent whose reload failed on this very file. `None`
/// when not even that key can be read (the file is not TOML).
pub fn state_dir_despite_errors(path: &Path) -> Option<PathBuf> {
    state_dir_with_env(path, Env::prefixed("TAILHOOK_"))
}

fn state_dir_with_env(path: &Path, env: Env) -> Option<PathBuf> {
    let env = env.ignore(NON_CONFIG_ENV).split("__");
    let found = Figment::new()
        .merge(Toml::file_exact(path))
        .merge(env)
        .find_value("agent.state_dir");
    let state_dir = match found {
        Ok(value) => PathBuf::from(value.into_string()?),
        Err(e) if e.missing() => AgentConfig::default().state_dir,
        Err(_) => return None,
    };
    Some(resolver(path)(&state_dir))
}

impl Config {
    /// Reads `path` plus `TAILHOOK_…` overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, Env::prefixed("TAILHOOK_"))
    }

    fn load_with_env(path: &Path, env: Env) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                position: None,
                key: "-c".into(),
                problem: "no such config file (give one with -c FILE or $TAILHOOK_CONFIG)".into(),
            });
        }
        let env = env.ignore(NON_CONFIG_ENV).split("__");
        let mut config: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(env)
            .extract()
            .map_err(|e| located::locate(path, e))?;
        config.source = path.to_path_buf();
        // Checked before resolving: an empty path would become the config's folder.
        if config.agent.state_dir.to_string_lossy().trim().is_empty() {
            return Err(config.invalid(
                "agent.state_dir",
                "is empty (an empty TAILHOOK_AGENT__STATE_DIR?); name the folder for checkpoints and queues",
            ));
        }
        config.resolve_relative_paths();
        config.validate()?;
        for warning in config.readable_secrets() {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// Files that every local user can read and that hold a webhook's
    /// secret: the config itself when a `url` in it carries one, and every
    /// `url_file`. Each is a warning naming the file, the key and the fix.
    pub fn readable_secrets(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if world_readable(&self.source) {
            for (name, spec) in &self.webhooks {
                if spec.url_holds_secret() {
                    warnings.push(format!(
                        "{file}: webhook.{name}.url holds the webhook's secret and this file is readable by every user: \
                         chmod 640 {file} (group tailhook), or move the URL to url_env or url_file",
                        file = self.source.display()
                    ));
                }
            }
        }
        if let Some(fleet) = &self.fleet {
            if fleet.url_holds_secret() && world_readable(&self.source) {
                warnings.push(format!(
                    "{file}: fleet.redis_url holds the Redis password and this file is readable by every user: \
                     chmod 640 {file} (group tailhook), or move the URL to redis_url_env or redis_url_file",
                    file = self.source.display()
                ));
            }
            if let Some(file) = fleet
                .redis_url_file
                .as_deref()
                .filter(|f| world_readable(f))
            {
                warnings.push(format!(
                    "{file}: fleet.redis_url_file may hold the Redis password and is readable by every user: \
                     chmod 640 {file} (group tailhook)",
                    file = file.display()
                ));
            }
        }
        for (name, spec) in &self.webhooks {
            if let Some(file) = spec.url_file.as_deref().filter(|f| world_readable(f)) {
                warnings.push(format!(
                    "{file}: webhook.{name}.url_file holds the webhook's secret and is readable by every user: \
                     chmod 640 {file} (group tailhook)",
                    file = file.display()
                ));
            }
        }
        warnings
    }

    fn resolve_relative_paths(&mut self) {
        let resolve = resolver(&self.source);
        self.agent.state_dir = resolve(&self.agent.state_dir);
        for p in &mut self.rules.paths {
            *p = resolve(p);
        }
        for input in &mut self.inputs {
            for pattern in input.paths.iter_mut().chain(input.exclude.iter_mut()) {
                *pattern = resolve(Path::new(pattern)).to_string_lossy().into_owned();
            }
        }
        for spec in self.webhooks.values_mut() {
            for file in [&mut spec.url_file, &mut spec.ca_file]
                .into_iter()
                .flatten()
            {
                *file = resolve(file);
            }
        }
        if let Some(file) = self.fleet.as_mut().and_then(|f| f.redis_url_file.as_mut()) {
            *file = resolve(file);
        }
    }

    /// A problem with `key`, at `FILE:LINE:COL` when the file holds the key.
    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        let key = key.into();
        ConfigError::Invalid {
            path: self.source.clone(),
            position: std::fs::read_to_string(&self.source)
                .ok()
                .and_then(|text| located::key_position(&text, &key)),
            key,
            problem: problem.into(),
        }
    }

    /// Checks what serde cannot: references between sections, globs, names.
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, duration) in [
            // Zero: the tailer would stat every file in a busy loop.
            ("poll_interval", self.agent.poll_interval),
            // Zero: nothing queued could be flushed at stop.
            ("shutdown_timeout", self.agent.shutdown_timeout),
        ] {
            if duration.is_zero() {
                return Err(self.invalid(format!("agent.{key}"), "must be above zero"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let key = |k: &str| format!("input[{i}].{k}");
            if input.name.trim().is_empty() {
                return Err(self.invalid(key("name"), "must not be empty"));
            }
            if !names.insert(&input.name) {
                return Err(self.invalid(
                    key("name"),
                    format!("`{}` is used by two inputs", input.name),
                ));
            }
            input
                .clock()
                .map_err(|problem| self.invalid(key("timezone"), problem))?;
            match input.kind {
                InputKind::File => {
                    if input.paths.is_empty() {
                        return Err(self.invalid(key("paths"), "needs at least one path or glob"));
                    }
                    for (field, values) in [
                        ("units", &input.units),
                        ("identifiers", &input.identifiers),
                        ("matches", &input.matches),
                    ] {
                        if !values.is_empty() {
                            return Err(self.invalid(
                                key(field),
                                "only a journald input (type = \"journald\") filters by it",
                            ));
                        }
                    }
                }
                InputKind::Journald => {
                    for (field, values) in [("paths", &input.paths), ("exclude", &input.exclude)] {
                        if !values.is_empty() {
                            return Err(self.invalid(
                                key(field),
                                "a journald input reads the journal, not files; select entries with units, identifiers or matches",
                            ));
                        }
                    }
                    for m in &input.matches {
                        check_journal_match(m).map_err(|problem| {
                            self.invalid(key("matches"), format!("`{m}` {problem}"))
                        })?;
                    }
                    let plus_misplaced = input.matches.first().is_some_and(|m| m == "+")
                        || input.matches.last().is_some_and(|m| m == "+")
                        || input.matches.windows(2).any(|w| w[0] == "+" && w[1] == "+");
                    if plus_misplaced {
                        return Err(self.invalid(
                            key("matches"),
                            "`+` goes between two groups of `FIELD=value` terms",
                        ));
                    }
                    for (field, values) in
                        [("units", &input.units), ("identifiers", &input.identifiers)]
                    {
                        if values.iter().any(|v| v.trim().is_empty()) {
                            return Err(self.invalid(key(field), "holds an empty name"));
                        }
                    }
                    if let Some(unit) = input.units.iter().find(|u| !u.contains('.')) {
                        return Err(self.invalid(
                            key("units"),
                            format!(
                                "`{unit}` is not a full unit name; did you mean `{unit}.service`?"
                            ),
                        ));
                    }
                }
            }
            crate::rules::RuleSelector::parse(&input.rules)
                .map_err(|problem| self.invalid(key("rules"), problem))?;
            for (field, patterns) in [("paths", &input.paths), ("exclude", &input.exclude)] {
                for p in patterns {
                    glob::Pattern::new(p).map_err(|e| {
                        self.invalid(key(field), format!("`{p}` is not a valid glob: {e}"))
                    })?;
                }
            }
            if input.max_line_bytes == 0 {
                return Err(self.invalid(key("max_line_bytes"), "must be at least 1 byte"));
            }
            // Zero: a line still being written would be cut in two.
            if input.partial_line_timeout.is_zero() {
                return Err(self.invalid(key("partial_line_timeout"), "must be above zero"));
            }
            for (field, duration) in [
                ("rescan_interval", input.rescan_interval),
                ("close_inactive", input.close_inactive),
                ("ignore_older", input.ignore_older.unwrap_or(Duration::MAX)),
            ] {
                if duration.is_zero() {
                    return Err(self.invalid(key(field), "must be above zero"));
                }
            }
        }
        for (name, spec) in &self.webhooks {
            // Names become file names (dead letters) and queue tables.
            let usable = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !usable {
                return Err(self.invalid(
                    format!("webhook.{name}"),
                    "a webhook name is letters, digits, `_` and `-` only",
                ));
            }
            spec.validate()
                .map_err(|(k, problem)| self.invalid(format!("webhook.{name}.{k}"), problem))?;
            if spec.fleet && self.fleet.is_none() {
                return Err(self.invalid(
                    format!("webhook.{name}.fleet"),
                    "shares this webhook with a fleet, but there is no [fleet] section (redis_url_env = \"…\")",
                ));
            }
        }
        if let Some(fleet) = &self.fleet {
            fleet
                .validate()
                .map_err(|(k, problem)| self.invalid(format!("fleet.{k}"), problem))?;
            if !self.webhooks.values().any(|w| w.fleet) {
                tracing::warn!(
                    "[fleet] is set but no webhook has `fleet = true`: nothing is shared"
                );
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            for w in &route.webhooks {
                if !self.webhooks.contains_key(w) {
                    return Err(self.invalid(
                        format!("route[{i}].webhooks"),
                        format!("no webhook named `{w}` (defined: {})", self.webhook_names()),
                    ));
                }
            }
            if route.webhooks.is_empty() {
                return Err(self.invalid(format!("route[{i}].webhooks"), "names no webhook"));
            }
            crate::rules::RuleSelector::parse(&route.rules)
                .map_err(|problem| self.invalid(format!("route[{i}].rules"), problem))?;
        }
        Ok(())
    }

    fn webhook_names(&self) -> String {
        if self.webhooks.is_empty() {
            return "none".into();
        }
        self.webhooks
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resolves every webhook's URL and preset into what the deliver stage needs.
    /// Separate from [`Config::load`] because it reads the environment and files
    /// named by `url_env` / `url_file`.
    pub fn webhooks(&self) -> Result<Vec<WebhookConfig>, ConfigError> {
        self.webhooks
            .iter()
            .map(|(name, spec)| {
                spec.resolve(name)
                    .map_err(|(k, problem)| self.invalid(format!("webhook.{name}.{k}"), problem))
            })
            .collect()
    }

    /// Resolves the webhook `name` alone (its URL source must be at hand,
    /// the others' need not); an unknown name is an error listing the names.
    /// `[fleet]` with its Redis URL resolved (from the environment or a
    /// file); `None` without the section.
    pub fn fleet(&self) -> Result<Option<FleetConfig>, ConfigError> {
        self.fleet
            .as_ref()
            .map(|spec| {
                spec.resolve()
                    .map_err(|(k, problem)| self.invalid(format!("fleet.{k}"), problem))
            })
            .transpose()
    }

    pub fn webhook(&self, name: &str) -> Result<WebhookConfig, ConfigError> {
        let spec = self.webhook_spec(name)?;
        spec.resolve(name)
            .map_err(|(k, problem)| self.invalid(format!("webhook.{name}.{k}"), problem))
    }

    /// The section of webhook `name`; an unknown name is an error listing the names.
    pub fn webhook_spec(&self, name: &str) -> Result<&WebhookSpec, ConfigError> {
        self.webhooks.get(name).ok_or_else(|| {
            self.invalid(
                "--webhook",
                format!(
                    "no webhook named `{name}` (configured: {})",
                    self.webhook_names()
                ),
            )
        })
    }

    /// The input `name`; an unknown name is an error listing the names.
    pub fn input(&self, name: &str) -> Result<&InputConfig, ConfigError> {
        self.inputs.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            self.invalid(
                "--input",
                format!("no input named `{name}` (configured: {})", names.join(", ")),
            )
        })
    }

    /// The envelope's `host`, and every event's.
    pub fn host(&self) -> String {
        self.agent.host()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tailhook.toml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, path)
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        let (_dir, path) = write_config(text);
        Config::load_with_env(&path, Env::prefixed("TAILHOOK_TEST_NOTHING_"))
    }

    fn state_dir_of(text: &str) -> (tempfile::TempDir, Option<PathBuf>) {
        let (dir, path) = write_config(text);
        let found = state_dir_with_env(&path, Env::prefixed("TAILHOOK_TEST_NOTHING_"));
        (dir, found)
    }

    #[test]
    fn the_state_dir_is_found_in_a_config_that_is_otherwise_wrong() {
        let (dir, found) = state_dir_of("[agent]\nstate_dir = \"st\"\npoll_intervall = 1\n");
        let folder = dir.path().canonicalize().unwrap();
        assert_eq!(found, Some(folder.join("st")));
        let (_dir, found) = state_dir_of("[[input]]\nname = 7\n");
        assert_eq!(found, Some(PathBuf::from("/var/lib/tailhook")));
        let (_dir, found) = state_dir_of("[agent\nstate_dir = ");
        assert_eq!(found, None, "not TOML: no guess");
    }

    proptest::proptest! {
        /// Any text as a config: an absolute state dir or none, never a panic.
        #[test]
        fn any_text_gives_an_absolute_state_dir_or_none(
            text in "(\\[agent\\]\n|state_dir = |\"[^\"]{0,6}\"|[0-9]{1,3}|\n|.){0,16}",
        ) {
            let (_dir, found) = state_dir_of(&text);
            if let Some(state_dir) = found {
                proptest::prop_assert!(state_dir.is_absolute(), "{}", state_dir.display());
            }
        }
    }

    const MINIMAL: &str = r#"
        [[input]]
        name = "auth"
        paths = ["logs/auth.log", "../other/./x.log"]

        [webhook.soc]
        url = "https://example.test/webhooks/1?api_key=secret"
        preset = "securex"
    "#;

    #[test]
    fn tailing_durations_have_defaults_and_refuse_zero() {
        let config = load(MINIMAL).unwrap();
        let input = &config.inputs[0];
        assert_eq!(input.rescan_interval, Duration::from_secs(10));
        assert_eq!(input.close_inactive, Duration::from_secs(300));
        assert_eq!(input.ignore_older, None);
        assert!(input.report_long_lines);
        let with =
            |key: &str| MINIMAL.replace("name = \"auth\"", &format!("name = \"auth\"\n{key}"));
        let config = load(&with("ignore_older = \"7d\"\nreport_long_lines = false")).unwrap();
        assert_eq!(
            config.inputs[0].ignore_older,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert!(!config.inputs[0].report_long_lines);
        for key in ["rescan_interval", "close_inactive", "ignore_older"] {
            let err = load(&with(&format!("{key} = \"0s\"")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("input[0].{key}")) && err.contains("must be above zero"),
                "{err}"
            );
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_relative_paths() {
        let (dir, path) = write_config(MINIMAL);
        let config = Config::load_with_env(&path, Env::prefixed("TAILHOOK_TEST_NOTHING_")).unwrap();
        assert_eq!(config.inputs[0].start_at, StartAt::End);
        assert_eq!(config.inputs[0].rules, vec!["*"]);
        assert_eq!(
            config.inputs[0].paths[0],
            dir.path()
                .canonicalize()
                .unwrap()
                .join("logs/auth.log")
                .to_string_lossy()
        );
        assert_eq!(
            config.inputs[0].paths[1],
            dir.path()
                .canonicalize()
                .unwrap()
                .parent()
                .unwrap()
                .join("other/x.log")
                .to_string_lossy()
        );
        assert_eq!(config.agent.state_dir, PathBuf::from("/var/lib/tailhook"));
        let hooks = config.webhooks().unwrap();
        assert_eq!(hooks[0].rate_limits.len(), 2);
        assert_eq!(hooks[0].max_body_bytes, 1_000_000);
    }

    #[test]
    fn unknown_key_is_an_error_naming_its_path() {
        let err = load(&format!("{MINIMAL}\n[agent]\nstate_dri = \"/tmp\"\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("state_dri"), "{text}");
        assert!(text.contains("agent"), "{text}");
        assert!(text.contains("tailhook.toml"), "{text}");

        let err =
            load(&MINIMAL.replace("preset =", "colour = \"red\"\n        preset =")).unwrap_err();
        assert!(err.to_string().contains("webhook.soc.colour"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // Jail's closure type is figment's, not ours
    fn env_overrides_nested_keys_and_skips_non_config_variables() {
        let (_dir, path) = write_config(MINIMAL);
        // figment's Jail isolates the process environment for this test.
        figment::Jail::expect_with(|jail| {
            jail.set_env("TAILHOOK_AGENT__STATE_DIR", "/srv/th");
            jail.set_env("TAILHOOK_WEBHOOK__SOC__BATCH_TIMEOUT", "250ms");
            jail.set_env("TAILHOOK_CONFIG", "/ignored.toml");
            jail.set_env("TAILHOOK_LOG", "debug");
            jail.set_env("TAILHOOK_LOG_FORMAT", "json");
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            assert_eq!(config.agent.state_dir, PathBuf::from("/srv/th"));
            let hooks = config.webhooks().map_err(|e| e.to_string())?;
            assert_eq!(hooks[0].batch_timeout, Duration::from_millis(250));
            Ok(())
        });
    }

    #[test]
    fn timezone_is_an_iana_name_checked_at_load() {
        let with = |zone: &str| {
            load(&MINIMAL.replace(
                "paths = [\"logs",
                &format!("timezone = \"{zone}\"\n        paths = [\"logs"),
            ))
        };
        assert_eq!(
            with("Europe/Berlin").unwrap().inputs[0].timezone.as_deref(),
            Some("Europe/Berlin")
        );
        assert!(with("UTC").is_ok());
        let err = with("Europe/Atlantis").unwrap_err().to_string();
        assert!(err.contains("input[0].timezone"), "{err}");
        assert!(err.contains("Europe/Atlantis"), "{err}");
        assert!(err.contains("tailhook.toml"), "{err}");
        assert_eq!(load(MINIMAL).unwrap().inputs[0].timezone, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = load(&format!("{MINIMAL}\n[agent]\npoll_interval = \"soon\"\n")).unwrap_err();
        assert!(err.to_string().contains("poll_interval"), "{err}");

        let err = load(&format!(
            "{MINIMAL}\n[[route]]\nrules = [\"*\"]\nwebhooks = [\"nope\"]\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("route[0].webhooks"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");

        let err = load(&format!(
            "{MINIMAL}\n[[route]]\nrules = [\"*\"]\nwebhooks = [\"soc\"]\nmin_severity = \"urgent\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("min_severity"), "{err}");
        assert!(err.to_string().contains("urgent"), "{err}");

        let err = load(&MINIMAL.replace("\"logs/auth.log\"", "\"logs/[auth.log\"")).unwrap_err();
        assert!(err.to_string().contains("input[0].paths"), "{err}");

        let err = load(&MINIMAL.replace(
            "preset = \"securex\"",
            "rate_limits = [\"five per minute\"]",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("rate_limits"), "{err}");
    }

    #[test]
    fn secrets_readable_by_every_user_are_named_with_their_fix() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let (dir, path) = write_config(MINIMAL);
        let load = || Config::load_with_env(&path, Env::prefixed("TAILHOOK_TEST_NOTHING_"));

        chmod(&path, 0o644);
        let warnings = load().unwrap().readable_secrets();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let file = path.display();
        assert!(
            warnings[0].starts_with(&format!(
                "{file}: webhook.soc.url holds the webhook's secret"
            )),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains(&format!("chmod 640 {file}")),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("url_env or url_file"), "{warnings:?}");
        assert!(!warnings[0].contains("api_key"), "the secret is not shown");

        chmod(&path, 0o640);
        assert!(load().unwrap().readable_secrets().is_empty());

        // No key in the URL, nothing to protect.
        std::fs::write(&path, MINIMAL.replace("?api_key=secret", "")).unwrap();
        chmod(&path, 0o644);
        assert!(load().unwrap().readable_secrets().is_empty());

        // Slack keeps its secret in the path.
        std::fs::write(
            &path,
            MINIMAL
                .replace(
                    "example.test/webhooks/1?api_key=secret",
                    "hooks.slack.test/services/T/B/x",
                )
                .replace("\"securex\"", "\"slack\""),
        )
        .unwrap();
        assert_eq!(load().unwrap().readable_secrets().len(), 1);

        let url_file = dir.path().join("soc.url");
        std::fs::write(
            &url_file,
            "https://example.test/webhooks/1?api_key=secret\n",
        )
        .unwrap();
        std::fs::write(
            &path,
            MINIMAL.replace(
                "url = \"https://example.test/webhooks/1?api_key=secret\"",
                "url_file = \"soc.url\"",
            ),
        )
        .unwrap();
        chmod(&url_file, 0o604);
        let warnings = load().unwrap().readable_secrets();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let shown = url_file.canonicalize().unwrap();
        assert!(
            warnings[0].starts_with(&format!(
                "{}: webhook.soc.url_file holds the webhook's secret",
                shown.display()
            )),
            "{warnings:?}"
        );
        chmod(&url_file, 0o640);
        assert!(load().unwrap().readable_secrets().is_empty());
    }

    #[test]
    fn journald_inputs_take_filters_not_paths() {
        let journal = |keys: &str| {
            load(&format!(
                "[[input]]\nname = \"journal\"\ntype = \"journald\"\n{keys}\n\
                 [webhook.soc]\nurl = \"-\"\n"
            ))
        };
        let config = journal(
            "units = [\"ssh.service\"]\nidentifiers = [\"sudo\"]\nmatches = [\"_UID=0\", \"+\", \"PRIORITY=2\"]",
        )
        .unwrap();
        assert_eq!(config.inputs[0].kind, InputKind::Journald);
        assert_eq!(config.inputs[0].start_at, StartAt::End);
        assert!(journal("").is_ok(), "no filter: the whole journal");

        let err = journal("paths = [\"/var/log/auth.log\"]").unwrap_err();
        assert!(err.to_string().contains("input[0].paths"), "{err}");
        let err = journal("matches = [\"sshd\"]").unwrap_err();
        assert!(err.to_string().contains("input[0].matches"), "{err}");
        assert!(err.to_string().contains("FIELD=value"), "{err}");
        let err = journal("matches = [\"_systemd_unit=x\"]").unwrap_err();
        assert!(err.to_string().contains("field name"), "{err}");
        let err = journal("matches = [\"_UID=0\", \"+\"]").unwrap_err();
        assert!(err.to_string().contains("between two groups"), "{err}");
        let err = journal("units = [\"ssh\"]").unwrap_err();
        assert!(
            err.to_string().contains("did you mean `ssh.service`"),
            "{err}"
        );
        let err = load(&MINIMAL.replace("paths =", "type = \"systemd\"\npaths =")).unwrap_err();
        assert!(err.to_string().contains("systemd"), "{err}");
        assert!(err.to_string().contains("journald"), "{err}");

        let err =
            load(&MINIMAL.replace("paths =", "units = [\"ssh.service\"]\npaths =")).unwrap_err();
        assert!(err.to_string().contains("input[0].units"), "{err}");
        assert!(err.to_string().contains("journald"), "{err}");
        let err = load(&MINIMAL.replace("paths = [\"logs/auth.log\", \"../other/./x.log\"]", ""))
            .unwrap_err();
        assert!(err.to_string().contains("input[0].paths"), "{err}");
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_must_be_an_address() {
        assert_eq!(load(MINIMAL).unwrap().agent.metrics_listen, None);
        let config = load(&format!(
            "{MINIMAL}\n[agent]\nmetrics_listen = \"127.0.0.1:9898\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.agent.metrics_listen,
            Some("127.0.0.1:9898".parse().unwrap())
        );
        let err = load(&format!(
            "{MINIMAL}\n[agent]\nmetrics_listen = \"localhost\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("metrics_listen"), "{err}");
    }

    #[test]
    fn an_unknown_webhook_name_lists_the_configured_ones() {
        let err = load(MINIMAL).unwrap().webhook("nope").unwrap_err();
        assert!(
            err.to_string()
                .contains("no webhook named `nope` (configured: soc)"),
            "{err}"
        );
    }

    #[test]
    fn syntax_and_type_errors_never_quote_a_url() {
        let url = "url = \"https://example.test/x?api_key=SECRETKEY\"";
        let err = load(&format!("[webhook.soc]\n{url}\n{url}\n")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("tailhook.toml:3:1: duplicate key `url`"),
            "{text}"
        );
        assert!(!text.contains("SECRETKEY"), "{text}");

        // `[webhook]` without a name: a string where a section belongs.
        let err = load(&format!("[webhook]\n{url}\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("found a string"), "{text}");
        assert!(text.contains("webhook.url"), "{text}");
        assert!(!text.contains("SECRETKEY"), "{text}");
    }

    #[test]
    fn missing_file_is_reported() {
        let err = Config::load(Path::new("/nonexistent/tailhook.toml")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tailhook.toml"),
            "{err}"
        );
    }

    /// Every key a config may set, in any section.
    const KEYS: &[&str] = &[
        "state_dir",
        "host",
        "poll_interval",
        "shutdown_timeout",
        "inotify",
        "metrics_listen",
        "paths",
        "name",
        "type",
        "units",
        "identifiers",
        "matches",
        "exclude",
        "start_at",
        "rules",
        "max_line_bytes",
        "partial_line_timeout",
        "url_env",
        "url_file",
        "preset",
        "content_type",
        "rate_limits",
        "max_body_bytes",
        "max_queue_bytes",
        "batch_timeout",
        "request_timeout",
        "max_retry_delay",
        "template",
        "allow_insecure_http",
        "ca_file",
        "when_full",
        "webhooks",
    ];

    /// Lines of a config: section headers, `key = value` with values of
    /// every type and typical mistakes, webhook URLs holding a secret
    /// (`SECRETKEY`), and arbitrary text.
    fn config_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        use proptest::sample::select;
        let text = || any::<String>().prop_map(|t| toml::Value::String(t).to_string());
        let value = prop_oneof![
            text(),
            select(vec![
                "\"0s\"",
                "\"5s\"",
                "\"1d\"",
                "\"soon\"",
                "\"99999999999999d\"",
                "0",
                "1",
                "-1",
                "18446744073709551616",
                "true",
                "\"end\"",
                "\"beginning\"",
                "\"journald\"",
                "\"slack\"",
                "\"securex\"",
                "\"drop_oldest\"",
                "\"pause\"",
                "\"application/xml\"",
                "[\"5/1m\"]",
                "[\"0/1m\"]",
                "[\"*\"]",
                "[\"soc\"]",
                "[\"[\"]",
                "[]",
                "\"127.0.0.1:0\"",
                "{}",
                "\"{rule}\"",
                "\"{nope\"",
                "\"\"",
            ])
            .prop_map(str::to_string),
            any::<i64>().prop_map(|n| n.to_string()),
            proptest::collection::vec(text(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
        ];
        let url = select(vec![
            "https://example.test/x?api_key=SECRETKEY",
            "http://example.test/x?api_key=SECRETKEY",
            "http://127.0.0.1:1/x?api_key=SECRETKEY",
            "https://user:SECRETKEY@example.test/x",
            "https://example.test/x?api_key=SECRETKEY\\nhttps://other.test/",
            "https://exa mple.test/x?api_key=SECRETKEY",
            "ftp://example.test/SECRETKEY",
            "https//example.test?api_key=SECRETKEY",
            "-",
        ]);
        prop_oneof![
            select(vec![
                "[agent]",
                "[rules]",
                "[[input]]",
                "[webhook.soc]",
                "[webhook.\"../x\"]",
                "[webhook.\"\"]",
                "[[route]]",
                "[webhook]",
                "[input]",
            ])
            .prop_map(str::to_string),
            (select(KEYS.to_vec()), value).prop_map(|(k, v)| format!("{k} = {v}")),
            url.prop_map(|u| format!("url = \"{u}\"")),
            "\\PC{0,30}",
        ]
    }

    proptest::proptest! {
        /// Any config text: loaded, or an error naming the file; resolving
        /// the webhooks likewise; no error ever shows a URL's secret.
        #[test]
        fn arbitrary_configs_load_or_fail_cleanly(lines in proptest::collection::vec(config_line(), 0..14)) {
            let (_dir, path) = write_config(&lines.join("\n"));
            let shown = path.display().to_string();
            let problem = match Config::load_with_env(&path, Env::prefixed("TAILHOOK_TEST_NOTHING_")) {
                Ok(config) => config.webhooks().err(),
                Err(e) => Some(e),
            };
            if let Some(e) = problem {
                let text = e.to_string();
                proptest::prop_assert!(text.starts_with(&shown), "{}", text);
                proptest::prop_assert!(!text.contains("SECRETKEY"), "{}", text);
            }
        }
    }
}

#[cfg(test)]
mod fleet_tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tailhook.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(&path, Env::prefixed("TAILHOOK_TEST_NOTHING_"))
    }

    const SHARED: &str = "[[input]]\nname = \"auth\"\npaths = [\"a.log\"]\n\
        [webhook.soc]\nurl = \"https://example.test/w?api_key=k\"\nfleet = true\n";

    #[test]
    fn fleet_keys_are_validated_with_their_location() {
        let config = load(&format!(
            "{SHARED}[fleet]\nredis_url = \"redis://:hunter22@10.0.0.5:6379\"\n"
        ))
        .unwrap();
        let fleet = config.fleet().unwrap().unwrap();
        assert_eq!(fleet.namespace, "tailhook");
        assert_eq!(fleet.redis.to_string(), "redis://10.0.0.5:6379");
        assert!(config.webhook("soc").unwrap().fleet);
        for (tail, key, says) in [
            ("", "webhook.soc.fleet", "no [fleet] section"),
            (
                "[fleet]\nredis_url = \"redis://h\"\nredis_url_env = \"X\"\n",
                "fleet.redis_url",
                "only one of",
            ),
            (
                "[fleet]\nnamespace = \"x\"\n",
                "fleet.redis_url",
                "set one of",
            ),
            (
                "[fleet]\nredis_url = \"http://:hunter22@h\"\n",
                "fleet.redis_url",
                "not a Redis URL",
            ),
            (
                "[fleet]\nredis_url = \"redis://h\"\nnamespace = \"a{b}\"\n",
                "fleet.namespace",
                "letters, digits",
            ),
            (
                "[fleet]\nredis_url = \"redis://h\"\nlease_ttl = \"10ms\"\n",
                "fleet.lease_ttl",
                "at least 1s",
            ),
            (
                "[fleet]\nredis_url = \"redis://h\"\nredis_port = 1\n",
                "fleet",
                "redis_port",
            ),
        ] {
            let err = load(&format!("{SHARED}{tail}")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{tail}: {err}");
            assert!(err.contains("tailhook.toml:"), "located: {err}");
            assert!(!err.contains("hunter22"), "{err}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // Jail's closure type is figment's, not ours
    fn the_redis_url_comes_from_the_environment_or_a_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("redis.url", "redis://:hunter22@10.0.0.9:6379\n")?;
            jail.create_file(
                "a.toml",
                &format!("{SHARED}[fleet]\nredis_url_file = \"redis.url\"\n"),
            )?;
            jail.create_file(
                "b.toml",
                &format!("{SHARED}[fleet]\nredis_url_env = \"TH_TEST_REDIS\"\n"),
            )?;
            let config = Config::load(Path::new("a.toml")).map_err(|e| e.to_string())?;
            let fleet = config.fleet().map_err(|e| e.to_string())?.unwrap();
            assert_eq!(fleet.redis.to_string(), "redis://10.0.0.9:6379");
            let config = Config::load(Path::new("b.toml")).map_err(|e| e.to_string())?;
            let err = config.fleet().unwrap_err().to_string();
            assert!(
                err.contains("fleet.redis_url_env") && err.contains("TH_TEST_REDIS"),
                "{err}"
            );
            jail.set_env("TH_TEST_REDIS", "unix:///run/r.sock");
            let fleet = config.fleet().map_err(|e| e.to_string())?.unwrap();
            assert_eq!(fleet.redis.to_string(), "unix:///run/r.sock");
            // The variable DESIGN's example names is not taken for a config key.
            jail.create_file(
                "c.toml",
                &format!("{SHARED}[fleet]\nredis_url_env = \"TAILHOOK_REDIS_URL\"\n"),
            )?;
            jail.set_env("TAILHOOK_REDIS_URL", "redis://:hunter22@10.0.0.7:6379");
            let config = Config::load(Path::new("c.toml")).map_err(|e| e.to_string())?;
            let fleet = config.fleet().map_err(|e| e.to_string())?.unwrap();
            assert_eq!(fleet.redis.to_string(), "redis://10.0.0.7:6379");
            Ok(())
        });
    }
}
