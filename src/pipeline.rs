//! The pipeline a line travels: config → tail → rules → queue → deliver.
//!
//! [`Pipeline::build`] does everything that can fail before the agent starts
//! (load rules, run their examples, resolve webhooks, check that every
//! selection selects something), so `tailhook check` and `tailhook run` refuse
//! exactly the same mistakes. [`Pipeline::run`] then wires the stages and owns
//! shutdown: stop the tailer, let each webhook flush what the limits allow
//! within `shutdown_timeout`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::config::{Config, InputKind, WebhookConfig};
use crate::deliver::Deliverer;
use crate::queue::{Queue, Router};
use crate::rules::{self, compile_globs, event_for, id_selected, Admit, Gate, Matcher, Rule};
use crate::tail::{
    journalctl_missing, journalctl_on_path, read_recorded, Line, LineSink, SinkClosed, TailOptions,
    Tailer,
};

pub struct Pipeline {
    config: Config,
    webhooks: Vec<WebhookConfig>,
    rules: Vec<Arc<Rule>>,
    rule_files: usize,
    /// One per input, in config order.
    matchers: Vec<Matcher>,
}

impl Pipeline {
    pub fn build(config: Config) -> anyhow::Result<Pipeline> {
        let webhooks = config.webhooks()?;
        if webhooks.is_empty() {
            bail!(
                "{}: no [webhook.NAME] section: events would have nowhere to go",
                config.source.display()
            );
        }
        let files = rules::rule_files(&config.rules.paths)?;
        let rules: Vec<Arc<Rule>> = rules::load_rules(&files)?
            .into_iter()
            .map(Arc::new)
            .collect();
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
                rule.check_examples()
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

        let mut matchers = Vec::new();
        for input in &config.inputs {
            if input.kind == InputKind::Journald && journalctl_on_path().is_none() {
                bail!(
                    "{}: {}",
                    config.source.display(),
                    journalctl_missing(&input.name)
                );
            }
            let globs = compile_globs(&input.rules);
            let selected: Vec<Arc<Rule>> = rules
                .iter()
                .filter(|r| id_selected(&r.id, &globs))
                .cloned()
                .collect();
            if selected.is_empty() {
                bail!(
                    "{}: input `{}`: rules = {:?} selects none of the {} loaded rules",
                    config.source.display(),
                    input.name,
                    input.rules,
                    rules.len()
                );
            }
            matchers.push(Matcher::new(selected));
        }
        for (i, route) in config.routes.iter().enumerate() {
            for pattern in &route.rules {
                let globs = compile_globs(std::slice::from_ref(pattern));
                if !rules.iter().any(|r| id_selected(&r.id, &globs)) {
                    bail!(
                        "{}: route[{i}].rules: `{pattern}` matches no loaded rule",
                        config.source.display()
                    );
                }
            }
        }
        Ok(Pipeline {
            config,
            webhooks,
            rules,
            rule_files: files.len(),
            matchers,
        })
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
            for (_, entry) in &recorded.entries {
                let mut hit = false;
                for (rule, _) in self.matchers[index].matches(&entry.line) {
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

    /// Runs until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let state_dir = &self.config.agent.state_dir;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("agent.state_dir: cannot create {}", state_dir.display()))?;
        let host = self.config.host();
        let names: Vec<String> = self.webhooks.iter().map(|w| w.name.clone()).collect();
        let router = Router::new(
            self.rules.iter().map(|r| r.id.as_str()),
            &names,
            &self.config.routes,
        );
        for rule in &self.rules {
            if router.destinations(&rule.id).is_empty() {
                tracing::warn!(rule = %rule.id, "no route sends this rule's events to a webhook; its matches are not sent");
            }
        }
        let lanes: Vec<(String, u64)> = self
            .webhooks
            .iter()
            .map(|w| (w.name.clone(), w.max_queue_bytes))
            .collect();
        let queue = Queue::open(state_dir, &lanes)?;

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut deliveries = tokio::task::JoinSet::new();
        for (lane, webhook) in self.webhooks.into_iter().enumerate() {
            tracing::info!(webhook = %webhook.name, target = %webhook.target, "webhook ready");
            let deliverer = Deliverer::new(webhook, &host, state_dir, queue.clone(), lane)?;
            deliveries.spawn(deliverer.run(stopped.clone()));
        }
        let options = TailOptions {
            poll_interval: self.config.agent.poll_interval,
            use_inotify: self.config.agent.inotify,
            ..TailOptions::default()
        };
        let gates = self
            .rules
            .iter()
            .map(|r| (r.id.clone(), r.gate()))
            .collect();
        let stage = RuleStage {
            gates,
            matchers: self.matchers,
            router,
            queue,
        };
        let tailer = Tailer::spawn(&self.config.inputs, state_dir, options, stage);
        tracing::info!(config = %self.config.source.display(), "tailhook running");

        shutdown.await;
        let grace = self.config.agent.shutdown_timeout;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: sending what the limits allow"
        );
        // Lines read are queued on disk before their offsets are committed,
        // so the tailer stops at once; the webhooks get the grace period to
        // send what is queued, and what is left is sent by the next run.
        let tailer_stopped = tokio::task::spawn_blocking(move || tailer.stop(grace));
        let _ = stop.send(true);
        let drained = tokio::time::timeout(grace, async {
            while deliveries.join_next().await.is_some() {}
        })
        .await;
        let _ = tailer_stopped.await;
        if drained.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "shutdown_timeout elapsed with events still queued; they stay queued for the next run"
            );
        } else {
            tracing::info!("stopped");
        }
        Ok(())
    }
}

/// The rules stage, run on the tailer's thread: most lines match nothing, and
/// matching where they are read spares a hand-off per line. A chunk's events
/// are queued on disk in one transaction before `accept` returns, which is
/// when the tailer may commit the chunk's offset.
struct RuleStage {
    matchers: Vec<Matcher>,
    /// Per rule id: threshold and suppress state.
    gates: HashMap<String, Gate>,
    router: Router,
    queue: Arc<Queue>,
}

impl LineSink for RuleStage {
    fn accept(&mut self, lines: Vec<Line>) -> Result<(), SinkClosed> {
        let mut events = Vec::new();
        for line in &lines {
            for (rule, fields) in self.matchers[line.input].matches(&line.text) {
                let gate = self
                    .gates
                    .get_mut(&rule.id)
                    .expect("a gate per loaded rule");
                let Admit::Emit { count } = gate.admit(&fields, tokio::time::Instant::now()) else {
                    continue;
                };
                let mut event = event_for(
                    rule,
                    line.origin(),
                    &line.text,
                    fields,
                    line.truncated,
                    count,
                );
                if let Some(journal) = &line.journal {
                    journal.annotate(&mut event);
                }
                let event = Arc::new(event);
                events.extend(
                    self.router
                        .destinations(&rule.id)
                        .iter()
                        .map(|&lane| (lane, event.clone())),
                );
            }
        }
        // Nothing may be lost: a queue that cannot be written (disk full) holds
        // the tailer here, with an error each time, until it can.
        while let Err(e) = self.queue.append(&events) {
            tracing::error!(error = %e, "cannot queue events; tailing waits and retries");
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        Ok(())
    }
}
