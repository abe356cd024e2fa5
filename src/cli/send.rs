//! `send`: one manual trigger. Through the running agent's control socket,
//! so the agent charges its own limiter; when none answers, with the
//! webhook's limiter and attempt record loaded from the state files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::config::Config;
use crate::control::{self, Reply, Request};
use crate::deliver::{manual_fields, Sent, Webhook};
use crate::fleet::Fleet;
use crate::metrics::WebhookCounters;
use crate::queue::Queue;

pub struct SendOptions {
    pub config: PathBuf,
    pub webhook: String,
    pub data: Option<String>,
    pub data_file: Option<PathBuf>,
    pub timeout: Duration,
}

pub fn send(options: &SendOptions) -> anyhow::Result<()> {
    let config = Config::load(&options.config)?;
    let name = &options.webhook;
    config.webhook_spec(name)?;
    let fields = match (&options.data, &options.data_file) {
        (Some(text), _) => manual_fields(text).map_err(|e| anyhow!("--data {e}; nothing sent"))?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--data-file {}", file.display()))?;
            manual_fields(&text)
                .map_err(|e| anyhow!("--data-file {}: {e}; nothing sent", file.display()))?
        }
        (None, None) => Default::default(),
    };
    let state_dir = &config.agent.state_dir;
    let note = |text: &str| eprintln!("tailhook: {name}: {text}");
    let request = Request::Send {
        webhook: name.clone(),
        fields: fields.clone(),
        timeout_ms: options.timeout.as_millis() as u64,
    };
    // Each line (note or reply) comes within the send's own time bound.
    let wait = options.timeout + Duration::from_secs(10);
    let sent = match control::ask(state_dir, &request, wait, note).map_err(|e| anyhow!(e))? {
        Some(Reply::Sent { sent }) => sent,
        Some(Reply::Error { message }) => bail!("{name}: {message}"),
        Some(other) => bail!("the agent answered out of turn: {other:?}"),
        None => {
            let budget = if config.webhook_spec(name)?.is_shared() {
                "the fleet's budget in Redis"
            } else {
                "the budget in the state dir"
            };
            note(&format!(
                "no agent is running: sending directly, charged to {budget}"
            ));
            send_directly(&config, name, fields, options.timeout, &note)?
        }
    };
    println!(
        "{name}: HTTP {} after {} attempt(s)",
        sent.status, sent.attempts
    );
    Ok(())
}

/// Sends with the webhook's limiter and attempt record loaded from (and
/// charged to) the queue file, as the agent would.
fn send_directly(
    config: &Config,
    name: &str,
    fields: crate::event::Fields,
    timeout: Duration,
    note: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Sent> {
    let webhook = config.webhook(name)?;
    let state_dir = &config.agent.state_dir;
    crate::private::create_dir_all(state_dir)
        .with_context(|| format!("agent.state_dir: cannot create {}", state_dir.display()))?;
    let queue = Queue::open(state_dir, &[webhook.lane_limits()])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counters = Arc::new(WebhookCounters::default());
    let host = config.host();
    let webhook = match config.fleet()? {
        // A shared webhook: charged to the fleet's budget in Redis, as
        // every other attempt of the fleet.
        Some(fleet) if webhook.fleet => {
            let fleet = Fleet::new(fleet, &host)?;
            let budget = fleet.budget(&webhook, queue.clone(), 0);
            runtime.block_on(budget.join()).map_err(|e| {
                anyhow!("{name}: the fleet's budget cannot be charged: {e}; nothing sent")
            })?;
            Webhook::open_shared(webhook, &host, queue, 0, counters, budget)?
        }
        _ => Webhook::open(webhook, &host, queue, 0, counters)?,
    };
    let mut tell = |text: String| note(&text);
    runtime
        .block_on(webhook.send_manual(fields, timeout, &mut tell))
        .map_err(|e| anyhow!("{name}: {e}"))
}
