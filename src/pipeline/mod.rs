//! The pipeline a line travels: config → tail → rules → queue → deliver.
//!
//! [`Pipeline::build`] does everything that can fail before the agent starts
//! (load rules, run their examples, resolve webhooks, check that every
//! selection selects something), so `tailhook check` and `tailhook run` refuse
//! exactly the same mistakes. [`Pipeline::run`] then wires the stages, says
//! when they run (systemd's `READY=1`, then watchdog pings while the tail
//! thread keeps making passes), and owns shutdown: stop the tailer, let each
//! webhook flush what the limits allow within `shutdown_timeout`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::{Config, FleetConfig, InputConfig, InputKind, WebhookConfig};
use crate::control::{ControlSocket, Current, Reloads, Running};
use crate::deliver::{Deliverer, Halt, Webhook};
use crate::fleet::{Fleet, Forwarder, Sender};
use crate::health::{Health, TailWatch};
use crate::metrics::{self, Metrics};
use crate::queue::{LaneLimits, Queue, Router};
use crate::rules::{
    self, line_too_long_rule, Gate, LineClock, Matcher, OverrideReport, Rule, RuleSelector,
    LINE_TOO_LONG,
};
use crate::systemd::Notifier;
use crate::tail::{
    journalctl_missing, journalctl_on_path, read_recorded, survey, PathSet, Severity, TailOptions,
    Tailer,
};
use crate::tap::Tap;

mod stages;
use stages::{RuleSetup, RuleStage};

pub struct Pipeline {
    config: Config,
    webhooks: Vec<WebhookConfig>,
    /// `[fleet]` with its Redis URL resolved; `None`: no webhook is shared.
    fleet: Option<FleetConfig>,
    rules: Vec<Arc<Rule>>,
    rule_files: usize,
    overrides: OverrideReport,
    /// The rules each input applies, in config order. Kept as rules, not
    /// matchers: a generation builds its matchers of the routed ones, and a
    /// second prefilter held here for the whole run would cost megabytes.
    input_rules: Vec<Vec<Arc<Rule>>>,
    /// How each input's line times are read, in config order; shared too.
    clocks: Arc<Vec<LineClock>>,
}

impl Pipeline {
    pub fn build(config: Config) -> anyhow::Result<Pipeline> {
        let webhooks = config.webhooks()?;
        let fleet = config.fleet()?;
        if webhooks.is_empty() {
            bail!(
                "{}: no [webhook.NAME] section: events would have nowhere to go",
                config.source.display()
            );
        }
        let files = rules::rule_files(&config.rules.paths)?;
        let loaded = rules::load_rules(&files)?;
        let rules: Vec<Arc<Rule>> = loaded.rules.into_iter().map(Arc::new).collect();
        if rules.is_empty() {
            bail!(
                "{}: rules.paths ({}) hold no rule",
                config.source.display(),
                config
                    .rules
                    .paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let failures: Vec<String> = rules
            .iter()
            .flat_map(|rule| {
                // On a copy: each regex search leaves a cache in its regex's
                // pool (the backtracker's, up to 256 KiB), and the running
                // agent keeps `rules` but searches with its own copies.
                Rule::clone(rule)
                    .check_examples()
                    .into_iter()
                    .map(move |f| format!("{}: rule `{}`: {f}", rule.origin, rule.id))
            })
            .collect();
        if !failures.is_empty() {
            bail!(
                "{} rule example(s) failed:\n  {}",
                failures.len(),
                failures.join("\n  ")
            );
        }

        let mut input_rules = Vec::new();
        for input in &config.inputs {
            if input.kind == InputKind::Journald && journalctl_on_path().is_none() {
                bail!(
                    "{}: {}",
                    config.source.display(),
                    journalctl_missing(&input.name)
                );
            }
            let selected = rules::select(&rules, &input.rules).map_err(|problem| {
                anyhow::anyhow!(
                    "{}: input `{}`: {problem}",
                    config.source.display(),
                    input.name
                )
            })?;
            input_rules.push(selected);
        }
        // A route may name the built-in rule that reports cut lines.
        let ids: Vec<&str> = rules
            .iter()
            .map(|r| r.id.as_str())
            .chain([LINE_TOO_LONG])
            .collect();
        for (i, route) in config.routes.iter().enumerate() {
            let unmatched = RuleSelector::validated(&route.rules).unmatched(&ids);
            if let Some(pattern) = unmatched.first() {
                bail!(
                    "{}: route[{i}].rules: `{pattern}` matches no loaded rule",
                    config.source.display()
                );
            }
        }
        let clocks = config
            .inputs
            .iter()
            .map(|input| {
                input.clock().map_err(|problem| {
                    anyhow::anyhow!(
                        "{}: input `{}`: timezone: {problem}",
                        config.source.display(),
                        input.name
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Pipeline {
            config,
            webhooks,
            fleet,
            rules,
            rule_files: files.len(),
            overrides: loaded.overrides,
            input_rules,
            clocks: Arc::new(clocks),
        })
    }

    /// `[fleet]`, when webhooks are shared through Redis.
    pub fn fleet(&self) -> Option<&FleetConfig> {
        self.fleet.as_ref()
    }

    /// What expanding the file inputs' globs runs into now (a folder loop
    /// through symlinks, a bound reached), for `check`.
    pub fn path_problems(&self) -> Vec<String> {
        self.config
            .inputs
            .iter()
            .filter(|input| input.kind == InputKind::File)
            .flat_map(|input| {
                PathSet::new(&input.paths, &input.exclude)
                    .problems()
                    .into_iter()
                    .map(|problem| format!("input `{}`: {problem}", input.name))
            })
            .collect()
    }

    /// Warnings about loaded rules a client could steer into reporting a
    /// forged address (see `rules::forgery_warning`), and overrides whose
    /// globs select no rule.
    pub fn rule_warnings(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|rule| rules::forgery_warning(rule))
            .chain(self.overrides.warnings.iter().cloned())
            .collect()
    }

    /// Each input path that reads nothing now (matches no file, or cannot be
    /// read by this process), naming the input, with the fix if it is a
    /// permission.
    pub fn unread_paths(&self) -> Vec<(Severity, String)> {
        unread_paths(&self.config.inputs)
    }

    /// What each `[[override]]` changed, for `check` and the start-up log.
    pub fn overrides_applied(&self) -> &[String] {
        &self.overrides.applied
    }

    /// One line describing what was loaded, for `check` and the start-up log.
    pub fn summary(&self) -> String {
        let examples: usize = self.rules.iter().map(|r| r.examples.len()).sum();
        format!(
            "{} input(s), {} webhook(s), {} rule(s) from {} file(s), {} example(s) passed",
            self.config.inputs.len(),
            self.webhooks.len(),
            self.rules.len(),
            self.rule_files,
            examples
        )
    }

    /// Runs each journald input's rules over entries recorded with
    /// `journalctl --output=json`; says how many matched which rule.
    pub fn try_journal_entries(&self, path: &std::path::Path) -> anyhow::Result<String> {
        let journald: Vec<usize> = (0..self.config.inputs.len())
            .filter(|&i| self.config.inputs[i].kind == InputKind::Journald)
            .collect();
        if journald.is_empty() {
            bail!(
                "{}: --journal-json {}: no input has type = \"journald\"",
                self.config.source.display(),
                path.display()
            );
        }
        let mut report = String::new();
        for index in journald {
            let input = &self.config.inputs[index];
            let recorded = read_recorded(path, input.max_line_bytes)?;
            let mut per_rule: std::collections::BTreeMap<&str, u64> = Default::default();
            let mut matched = 0;
            let matcher = Matcher::new(self.input_rules[index].clone());
            for (_, entry) in &recorded.entries {
                let mut hit = false;
                for (rule, _) in matcher.matches(&entry.line) {
                    *per_rule.entry(&rule.id).or_default() += 1;
                    hit = true;
                }
                matched += u64::from(hit);
            }
            let rules: Vec<String> = per_rule
                .iter()
                .map(|(rule, count)| format!("{rule} {count}"))
                .collect();
            report.push_str(&format!(
                "{}: input `{}`: {} entries ({} without MESSAGE skipped), {matched} matched{}{}\n",
                path.display(),
                input.name,
                recorded.entries.len(),
                recorded.without_message,
                if rules.is_empty() { "" } else { ": " },
                rules.join(", ")
            ));
        }
        Ok(report)
    }

    /// Runs until `shutdown` completes, then drains. Each message on
    /// `reloads` (SIGHUP) builds a new pipeline with `reload` (the same
    /// validation as `check`) and, if that succeeds, swaps it in; if not,
    /// keeps running as it is and says why (log, `status`, `/metrics`).
    /// With a `notifier` (systemd), tells it when the agent is ready (and
    /// what it runs after each reload), alive and stopping.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        mut reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
        reload: impl Fn() -> anyhow::Result<Pipeline> + Clone + Send + 'static,
        notifier: Option<Notifier>,
    ) -> anyhow::Result<()> {
        let summary = self.summary();
        let state_dir = self.config.agent.state_dir.clone();
        crate::private::create_dir_all(&state_dir).with_context(|| {
            format!(
                "{}: agent.state_dir: cannot create {}",
                self.config.source.display(),
                state_dir.display()
            )
        })?;
        let queue = open_queue(&state_dir, &self.lanes()).await?;
        let metrics = Arc::new(Metrics::new(
            self.config.inputs.iter().map(|i| i.name.as_str()),
            self.rule_ids(),
            self.webhooks.iter().map(|w| w.name.as_str()),
        ));
        let metrics_listener = match self.config.agent.metrics_listen {
            Some(addr) => Some(metrics::server::bind(addr).await?),
            None => None,
        };
        let history = Arc::new(Reloads::at_start());
        let mut generation = Generation::start(
            &self,
            Vec::new(),
            gates_after_reload(&self, HashMap::new()),
            queue,
            metrics,
            history.clone(),
        )?;
        let (publish, current) = tokio::sync::watch::channel(Some(generation.running.clone()));
        // Both serve until dropped; the socket's file goes with it.
        let mut services = tokio::task::JoinSet::new();
        match ControlSocket::bind(&state_dir) {
            Ok(socket) => {
                services.spawn(socket.serve(current.clone()));
            }
            // The agent's job is the pipeline: without the socket it still
            // runs, and `status`/`send` say that they cannot reach it.
            Err(e) => {
                tracing::warn!(error = %e, "no control socket: `tailhook status` and `tailhook send` cannot reach this agent")
            }
        }
        if let Some(listener) = metrics_listener {
            // The bound address: with port 0 the system picked one.
            if let Ok(listen) = listener.local_addr() {
                tracing::info!(%listen, "serving /metrics and /health");
            }
            services.spawn(metrics::server::serve(listener, current.clone()));
        }
        let mut heartbeat = generation.tailer.heartbeat();
        tokio::pin!(shutdown);
        // Ready once every file is open and where reading starts is on disk.
        let start = tokio::select! {
            scanned = heartbeat.wait_for(Option::is_some) => match scanned {
                Ok(_) => Start::Scanned,
                Err(_) => Start::TailerGone,
            },
            () = &mut shutdown => Start::StoppedEarly,
        };
        let notifier = notifier.map(Arc::new);
        let mut watchdog = None;
        let mut pipeline = self;
        if start == Start::Scanned {
            tracing::info!(config = %pipeline.config.source.display(), "tailhook running");
            warn_about_reach(&pipeline.config.inputs);
            if let Some(notifier) = &notifier {
                notifier.ready(&summary);
                watchdog = notifier.watchdog_timeout().map(|timeout| {
                    // The heartbeat says when the tailer's next pass is due;
                    // missing that by the whole timeout is a stall.
                    let stale_after = timeout;
                    tokio::spawn(feed_watchdog(
                        notifier.clone(),
                        timeout / 2,
                        current.clone(),
                        stale_after,
                    ))
                });
            }
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    Some(ended) = generation.deliveries.join_next_with_id() => {
                        let (id, how) = match ended {
                            Ok((id, ())) => (id, "returned".to_string()),
                            Err(e) if e.is_panic() => (e.id(), "panicked".to_string()),
                            Err(e) => (e.id(), format!("ended: {e}")),
                        };
                        let webhook = generation.delivery_of.get(&id).map_or("?", String::as_str);
                        tracing::error!(%webhook, how, "a delivery task ended while the agent runs; /health reports it and the systemd watchdog is no longer fed");
                        generation.running.health.delivery_ended(webhook, &how);
                    }
                    Some(()) = reloads.recv() => {
                        if let Some(notifier) = &notifier {
                            notifier.reloading();
                        }
                        let built = tokio::task::spawn_blocking(reload.clone()).await;
                        let outcome = match built {
                            Ok(Ok(next)) => swap(pipeline, generation, next, &publish, &history).await,
                            Ok(Err(e)) => Swap::Kept(pipeline, generation, format!("{e:#}")),
                            Err(e) => Swap::Kept(pipeline, generation, format!("the reload panicked: {e}")),
                        };
                        let refused;
                        (pipeline, generation) = match outcome {
                            Swap::Done(pipeline, generation, notes) => {
                                tracing::info!(config = %pipeline.config.source.display(), "reloaded: {}", pipeline.summary());
                                for note in &notes {
                                    tracing::warn!("{note}");
                                }
                                for applied in pipeline.overrides_applied() {
                                    tracing::info!("{applied}");
                                }
                                warn_about_reach(&pipeline.config.inputs);
                                history.record(Ok(notes));
                                refused = false;
                                (pipeline, generation)
                            }
                            Swap::Failed(e) => return Err(e),
                            Swap::Kept(pipeline, generation, error) => {
                                tracing::error!(error = %error, "reload failed; still running the configuration loaded before");
                                history.record(Err(error));
                                refused = true;
                                (pipeline, generation)
                            }
                        };
                        if let Some(notifier) = &notifier {
                            let summary = pipeline.summary();
                            notifier.ready(&if refused {
                                format!("reload refused (see the log or `tailhook status`); still running: {summary}")
                            } else {
                                summary
                            });
                        }
                    }
                }
            }
        }
        if let Some(notifier) = &notifier {
            notifier.stopping();
        }
        let grace = pipeline.config.agent.shutdown_timeout;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: sending what the limits allow"
        );
        let drained = generation.stop(Halt::Drain, grace).await;
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        if start == Start::TailerGone {
            bail!("the tail thread ended before its first scan");
        }
        if !drained {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "shutdown_timeout elapsed with events still queued; they stay queued for the next run"
            );
        } else {
            tracing::info!("stopped");
        }
        services.shutdown().await;
        Ok(())
    }

    /// Every rule's id, the built-in one that reports cut lines included.
    fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .map(|r| r.id.as_str())
            .chain([LINE_TOO_LONG])
    }

    /// Each webhook's lane in the queue: its name, and its limits.
    fn lanes(&self) -> Vec<LaneLimits> {
        self.webhooks
            .iter()
            .map(WebhookConfig::lane_limits)
            .collect()
    }
}

/// Replaces the running `generation` of `old` by one of `next`: the tail
/// thread and the delivery tasks stop at a safe point (what is read is
/// queued and its offset committed; a batch being sent is settled), the
/// queue file is reopened with `next`'s lanes (a lane is its webhook's
/// name, so a kept webhook keeps its queued events and its record of
/// attempts, the rate-limit usage), and `next` starts from the checkpoints.
/// When `next` cannot start, `old` starts again. The notes say what stays
/// behind (queued events of a removed webhook).
async fn swap(
    old: Pipeline,
    generation: Generation,
    next: Pipeline,
    publish: &tokio::sync::watch::Sender<Option<Arc<Running>>>,
    history: &Arc<Reloads>,
) -> Swap {
    let agent = (&old.config.agent, &next.config.agent);
    let needs_restart = if agent.0.state_dir != agent.1.state_dir {
        Some("agent.state_dir")
    } else if agent.0.metrics_listen != agent.1.metrics_listen {
        Some("agent.metrics_listen")
    } else {
        None
    };
    if let Some(key) = needs_restart {
        let error = format!(
            "{}: {key} changed: a reload cannot apply it; restart the agent",
            next.config.source.display()
        );
        return Swap::Kept(old, generation, error);
    }
    publish.send_replace(None);
    let metrics = generation.running.metrics.clone();
    let queue = generation.running.queue.clone();
    let gates = generation.gates.clone();
    generation
        .stop(Halt::Pause, old.config.agent.shutdown_timeout)
        .await;
    let names: Vec<&str> = next.webhooks.iter().map(|w| w.name.as_str()).collect();
    let mut notes: Vec<String> = old
        .webhooks
        .iter()
        .enumerate()
        .filter(|(_, w)| !names.contains(&w.name.as_str()))
        .filter_map(|(lane, w)| {
            let (events, _) = queue.depth(lane);
            (events > 0).then(|| {
                format!(
                    "webhook `{}` was removed with {events} event(s) queued: they stay in {} and are sent once it is configured again",
                    w.name,
                    old.config.agent.state_dir.join("queue.redb").display()
                )
            })
        })
        .collect();
    notes.extend(
        old.config
            .inputs
            .iter()
            .filter(|i| !next.config.inputs.iter().any(|n| n.name == i.name))
            .map(|i| {
                format!(
                    "input `{}` was removed; its checkpoints stay in the state dir",
                    i.name
                )
            }),
    );
    // The queue file is reopened with the new lanes: this handle goes first.
    drop(queue);
    let added: Vec<String> = next
        .config
        .inputs
        .iter()
        .filter(|n| !old.config.inputs.iter().any(|i| i.name == n.name))
        .map(|n| n.name.clone())
        .collect();
    let earlier_gates = std::mem::take(&mut *gates.lock().expect("rule gates"));
    let started = start_over(&next, added, earlier_gates, &metrics, history).await;
    match started {
        Ok(generation) => {
            publish.send_replace(Some(generation.running.clone()));
            Swap::Done(next, generation, notes)
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(error = %error, "the reloaded configuration could not start; starting the one before again");
            // The rules' gates went to the config that failed: the old
            // one's thresholds and suppression start afresh.
            match start_over(&old, Vec::new(), HashMap::new(), &metrics, history).await {
                Ok(generation) => {
                    publish.send_replace(Some(generation.running.clone()));
                    Swap::Kept(old, generation, error)
                }
                // Nothing runs: exiting lets systemd start the agent afresh.
                Err(again) => Swap::Failed(anyhow::anyhow!(
                    "after a reload neither the new nor the old configuration could start: {error}; {again:#}"
                )),
            }
        }
    }
}

/// How a reload ended.
enum Swap {
    /// The new config runs; notes on what it left behind.
    Done(Pipeline, Generation, Vec<String>),
    /// The old config runs on; why the new one does not.
    Kept(Pipeline, Generation, String),
    /// Neither can run.
    Failed(anyhow::Error),
}

/// Opens the queue with `pipeline`'s lanes (waiting while a client that
/// asked before the swap still holds the old handle) and starts it, its
/// counters going on from `metrics`.
async fn start_over(
    pipeline: &Pipeline,
    added_inputs: Vec<String>,
    earlier_gates: HashMap<String, Gate>,
    metrics: &Metrics,
    history: &Arc<Reloads>,
) -> anyhow::Result<Generation> {
    let state_dir = &pipeline.config.agent.state_dir;
    let queue = loop {
        match open_queue(state_dir, &pipeline.lanes()).await {
            Err(e)
                if e.downcast_ref::<crate::queue::QueueError>()
                    .is_some_and(|e| e.is_in_use()) =>
            {
                continue
            }
            opened => break opened?,
        }
    };
    let gates = gates_after_reload(pipeline, earlier_gates);
    let metrics = Arc::new(metrics.continuing(
        pipeline.config.inputs.iter().map(|i| i.name.as_str()),
        pipeline.rule_ids(),
        pipeline.webhooks.iter().map(|w| w.name.as_str()),
    ));
    Generation::start(
        pipeline,
        added_inputs,
        gates,
        queue,
        metrics,
        history.clone(),
    )
}

/// Rule id → its threshold and suppress state, shared by the rules stage
/// (on the tail thread, locked once a chunk) and the reload that hands it
/// on.
type Gates = Arc<std::sync::Mutex<HashMap<String, Gate>>>;

/// The gates of `pipeline`'s rules, going on from `earlier` where a rule
/// kept its id, threshold and suppress.
fn gates_after_reload(pipeline: &Pipeline, mut earlier: HashMap<String, Gate>) -> Gates {
    let gates = pipeline
        .rules
        .iter()
        .map(|rule| {
            (
                rule.id.clone(),
                rule.gate_after_reload(earlier.remove(&rule.id)),
            )
        })
        .collect();
    Arc::new(std::sync::Mutex::new(gates))
}

/// Each input path that reads nothing now, naming the input.
fn unread_paths(inputs: &[InputConfig]) -> Vec<(Severity, String)> {
    inputs
        .iter()
        .filter_map(|input| Some((input, survey(input)?)))
        .flat_map(|(input, reach)| {
            reach
                .findings()
                .into_iter()
                .map(|(severity, finding)| (severity, format!("input `{}`: {finding}", input.name)))
        })
        .collect()
}

/// Says once, with the fix, which input paths read nothing now (the
/// tailer retries them quietly).
fn warn_about_reach(inputs: &[InputConfig]) {
    for (severity, finding) in unread_paths(inputs) {
        match severity {
            Severity::Warning => tracing::warn!("{finding}"),
            Severity::Note => tracing::info!("{finding}"),
        }
    }
}

/// One config's running parts: the tail thread, the delivery tasks, and
/// what the control socket and `/metrics` see. A reload stops them and
/// starts the next config's; the queue and state files stay.
struct Generation {
    tailer: Tailer,
    gates: Gates,
    deliveries: tokio::task::JoinSet<()>,
    /// Which webhook each delivery task serves, to name one that ends.
    delivery_of: HashMap<tokio::task::Id, String>,
    halt: tokio::sync::watch::Sender<Halt>,
    running: Arc<Running>,
}

impl Generation {
    /// `added_inputs`: inputs new since the config before (a reload);
    /// `gates`: the state of the rules' thresholds and suppression.
    fn start(
        pipeline: &Pipeline,
        added_inputs: Vec<String>,
        gates: Gates,
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
        reloads: Arc<Reloads>,
    ) -> anyhow::Result<Generation> {
        let config = &pipeline.config;
        let state_dir = &config.agent.state_dir;
        let host = config.host();
        let names: Vec<String> = pipeline.webhooks.iter().map(|w| w.name.clone()).collect();
        let line_too_long = line_too_long_rule();
        let router = Router::new(
            pipeline
                .rules
                .iter()
                .map(|r| &**r)
                .chain([&line_too_long])
                .map(|r| (r.id.as_str(), r.severity)),
            &names,
            &config.routes,
        );
        // The built-in rule is said apart below: not routing it is a choice.
        for rule in router.unselected().iter().filter(|r| *r != LINE_TOO_LONG) {
            tracing::warn!(rule = %rule, "no route sends this rule's events to a webhook; its matches are not sent");
        }
        let long_lines: Vec<Option<usize>> = config
            .inputs
            .iter()
            .map(|i| i.report_long_lines.then_some(i.max_line_bytes))
            .collect();
        if long_lines.iter().any(Option::is_some) && router.destinations(LINE_TOO_LONG).is_empty() {
            tracing::info!(rule = LINE_TOO_LONG, "no [[route]] selects the events of lines cut at max_line_bytes: cut lines are logged and counted, not sent (name the rule id in a route to send them)");
        }
        // No connection is made here: an agent starts without Redis.
        let fleet = match &pipeline.fleet {
            Some(fleet) => Some(Fleet::new(fleet.clone(), &host)?),
            None => None,
        };
        let mut webhooks = Vec::new();
        let mut budgets = Vec::new();
        for (lane, config) in pipeline.webhooks.iter().enumerate() {
            let counters = metrics.webhooks[lane].1.clone();
            let shared = fleet
                .as_ref()
                .filter(|_| config.fleet)
                .map(|fleet| fleet.budget(config, queue.clone(), lane));
            webhooks.push(match &shared {
                Some(budget) => Webhook::open_shared(
                    config.clone(),
                    &host,
                    queue.clone(),
                    lane,
                    counters,
                    budget.clone(),
                )?,
                None => Webhook::open(config.clone(), &host, queue.clone(), lane, counters)?,
            });
            budgets.push(shared);
        }
        let (halt, halted) = tokio::sync::watch::channel(Halt::Run);
        let mut deliveries = tokio::task::JoinSet::new();
        // Which webhook each delivery task serves, to name one that ends.
        let mut delivery_of = HashMap::new();
        let tap = Arc::new(Tap::new(names));
        for (webhook, shared) in webhooks.iter().zip(&budgets) {
            let name = webhook.config.name.clone();
            match shared {
                // A shared webhook: this lane goes to the fleet's stream,
                // and this agent sends the fleet's batches while it holds
                // the lease.
                Some(budget) => {
                    tracing::info!(webhook = %name, url = %webhook.config.target, redis = %budget.fleet().config.redis, namespace = %budget.fleet().config.namespace, "webhook ready, shared by the fleet");
                    let forwarder = Forwarder::new(budget.clone(), queue.clone(), webhook.lane());
                    let task = deliveries.spawn(forwarder.run(halted.clone()));
                    delivery_of.insert(task.id(), name.clone());
                    let sender =
                        Sender::new(webhook.clone(), budget.clone(), state_dir, tap.clone());
                    let task = deliveries.spawn(sender.run(halted.clone()));
                    delivery_of.insert(task.id(), name.clone());
                    let watching = budget.clone().watch(webhook.clone(), halted.clone());
                    let task = deliveries.spawn(watching);
                    delivery_of.insert(task.id(), name);
                }
                None => {
                    tracing::info!(webhook = %name, url = %webhook.config.target, "webhook ready");
                    let task = deliveries.spawn(
                        Deliverer::new(webhook.clone(), state_dir, tap.clone()).run(halted.clone()),
                    );
                    delivery_of.insert(task.id(), name);
                }
            }
        }
        let options = TailOptions {
            poll_interval: config.agent.poll_interval,
            use_inotify: config.agent.inotify,
            added_inputs,
            ..TailOptions::default()
        };
        // A rule whose events no route takes (an `info` rule under the
        // default routing: every accepted login) is not run at all: its
        // captures would cost more than the lines that are sent.
        let matchers = pipeline
            .input_rules
            .iter()
            .map(|rules| {
                Arc::new(Matcher::new(
                    rules
                        .iter()
                        .filter(|rule| !router.destinations(&rule.id).is_empty())
                        .cloned()
                        .collect(),
                ))
            })
            .collect();
        let stage = RuleStage::spawn(RuleSetup {
            input_names: config.inputs.iter().map(|i| i.name.clone()).collect(),
            matchers,
            line_too_long,
            long_lines,
            gates: gates.clone(),
            clocks: pipeline.clocks.clone(),
            host,
            router,
            metrics: metrics.clone(),
            queue: queue.clone(),
            tap: tap.clone(),
        });
        let tailer =
            Tailer::spawn(&config.inputs, state_dir, options, stage).map_err(anyhow::Error::msg)?;
        let tail = TailWatch {
            heartbeat: tailer.heartbeat(),
            queue: queue.clone(),
        };
        let running = Arc::new(Running {
            state_dir: state_dir.clone(),
            inputs: config.inputs.clone(),
            webhooks,
            queue,
            metrics,
            tap,
            health: Health::new(tail, config.agent.poll_interval, config.agent.stall_timeout)
                .since(reloads.agent_started),
            reloads,
        });
        Ok(Generation {
            tailer,
            gates,
            deliveries,
            delivery_of,
            halt,
            running,
        })
    }

    /// Stops the tail thread (what it read is queued and committed, or left
    /// to be read again) and the delivery tasks: `Drain` sends what the
    /// limits allow within `grace`, `Pause` only settles the batches being
    /// sent. A task still busy after `grace` ends at its await point; its
    /// batch stays queued. Whether every task ended by itself.
    async fn stop(mut self, halt: Halt, grace: Duration) -> bool {
        self.running.health.stopping();
        let deadline = tokio::time::Instant::now() + grace;
        // Ends a wait for room in a full lane (or for a full disk): the
        // chunk it held is not queued and its offset not committed.
        self.running.queue.close_for_appends();
        let tailer = self.tailer;
        let tailer_stopped = tokio::task::spawn_blocking(move || tailer.stop(grace));
        let _ = self.halt.send(halt);
        let ended = tokio::time::timeout_at(deadline, async {
            while self.deliveries.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        self.deliveries.shutdown().await;
        if tokio::time::timeout_at(deadline + TAIL_STOP_MARGIN, tailer_stopped)
            .await
            .is_err()
        {
            tracing::warn!("the tail thread did not stop in time; lines after its last checkpoint are read again");
        }
        ended
    }
}

#[derive(PartialEq, Eq)]
enum Start {
    /// The tailer finished its first scan: the agent is running.
    Scanned,
    /// Shutdown was asked for before that.
    StoppedEarly,
    /// The tail thread ended (panicked) before that.
    TailerGone,
}

/// Pings the systemd watchdog every `period` while the pipeline is alive.
/// The delivery tasks share the runtime that runs the pinger, so a ping also
/// shows the runtime turns; the tail thread is its own thread and must show
/// it still makes passes within `stale_after`. Once it stalls, or a delivery
/// task ended, the pings stop, and systemd restarts the agent after
/// `WatchdogSec=`. While a reload swaps the pipeline nothing is stuck.
async fn feed_watchdog(
    notifier: Arc<Notifier>,
    period: Duration,
    current: Current,
    stale_after: Duration,
) {
    let mut ticks = tokio::time::interval(period);
    let mut warned = false;
    loop {
        ticks.tick().await;
        let running = current.borrow().clone();
        let (stalled, delivery_ended) = match &running {
            Some(running) => (
                running.health.tail().stalled_for(stale_after),
                running.health.a_delivery_ended(),
            ),
            None => (None, false),
        };
        if stalled.is_none() && !delivery_ended {
            notifier.watchdog();
            warned = false;
        } else if !std::mem::replace(&mut warned, true) {
            if let Some(stalled) = stalled {
                tracing::error!(
                    stalled_ms = stalled.as_millis() as u64,
                    "the tail thread has made no pass for too long; the systemd watchdog is no longer fed"
                );
            }
        }
    }
}

/// How long past `shutdown_timeout` the tail thread may take to write its
/// last checkpoints.
const TAIL_STOP_MARGIN: Duration = Duration::from_secs(1);

/// How long a starting agent waits for another process to let go of the queue.
const QUEUE_IN_USE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// While no agent runs, `tailhook send` holds the queue file for as long as
/// it sends, and `status` for a moment; an agent starting just then waits
/// for them (bounded) instead of failing.
async fn open_queue(
    state_dir: &std::path::Path,
    lanes: &[LaneLimits],
) -> anyhow::Result<Arc<Queue>> {
    let deadline = tokio::time::Instant::now() + QUEUE_IN_USE_PATIENCE;
    let mut warned = false;
    loop {
        match Queue::open(state_dir, lanes) {
            Err(e) if e.is_in_use() && tokio::time::Instant::now() < deadline => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(error = %e, patience_s = QUEUE_IN_USE_PATIENCE.as_secs(), "waiting for the queue");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            opened => return Ok(opened?),
        }
    }
}
