//! `dead-letter list|replay`: what a webhook rejected, and queuing it again.
//! `list` reads the dead-letter file; `replay` asks the running agent (whose
//! queue redb keeps to itself), else queues into the state directly, so the
//! next run sends the events through the same limits as any other.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::config::Config;
use crate::control::{self, Reply, Request};
use crate::deadletter::{self, dead_letter_file, Replayed};
use crate::queue::Queue;

/// How long `replay` waits for the running agent to queue the events.
const REPLAY_WAIT: Duration = Duration::from_secs(60);

pub fn list(config: &Path, webhook: &str, json: bool) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    config.webhook_spec(webhook)?;
    let state_dir = &config.agent.state_dir;
    let letters = deadletter::list(state_dir, webhook).map_err(|e| anyhow!(e))?;
    if json {
        for letter in &letters {
            let summary = serde_json::json!({
                "time": letter.time,
                "status": letter.status,
                "reason": letter.reason,
                "events": letter.events.len(),
                "rules": letter.rules(),
            });
            super::print_out(&format!("{summary}\n"))?;
        }
        return Ok(());
    }
    let file = dead_letter_file(state_dir, webhook);
    if letters.is_empty() {
        return super::print_out(&format!(
            "{webhook}: no dead letters ({} holds none)\n",
            file.display()
        ));
    }
    let mut out = String::new();
    for letter in &letters {
        let status = letter
            .status
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        out.push_str(&format!(
            "{}  status {status}  {} events  rules {}\n    {}\n",
            letter.time,
            letter.events.len(),
            letter.rules().join(","),
            letter.reason
        ));
    }
    let events: usize = letters.iter().map(|l| l.events.len()).sum();
    out.push_str(&format!(
        "{webhook}: {} batches, {events} events in {}; `tailhook dead-letter replay --webhook {webhook}` queues them again\n",
        letters.len(),
        file.display()
    ));
    super::print_out(&out)
}

pub fn replay(config: &Path, webhook: &str) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    config.webhook_spec(webhook)?;
    let state_dir = &config.agent.state_dir;
    let request = Request::Replay {
        webhook: webhook.to_string(),
    };
    let (replayed, by) =
        match control::ask(state_dir, &request, REPLAY_WAIT, |_| {}).map_err(|e| anyhow!(e))? {
            Some(Reply::Replayed { replayed }) => (replayed, "the running agent sends them"),
            Some(Reply::Error { message }) => bail!("{webhook}: {message}"),
            Some(other) => bail!("the agent answered out of turn: {other:?}"),
            None => (
                replay_directly(&config, webhook)?,
                "no agent is running: the next run sends them",
            ),
        };
    let Replayed { batches, events } = replayed;
    super::print_out(&format!(
        "{webhook}: {batches} batches, {events} events queued again; {by}\n"
    ))
}

/// Queues into the state files, as the agent would.
fn replay_directly(config: &Config, webhook: &str) -> anyhow::Result<Replayed> {
    let lane = config.webhook(webhook)?.lane_limits();
    let state_dir = &config.agent.state_dir;
    crate::private::create_dir_all(state_dir)
        .with_context(|| format!("agent.state_dir: cannot create {}", state_dir.display()))?;
    let queue = Queue::open(state_dir, &[lane])?;
    deadletter::replay(state_dir, webhook, &queue, 0).map_err(|e| anyhow!("{webhook}: {e}"))
}
