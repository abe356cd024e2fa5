//! `status`: asks the running agent over its control socket; when none
//! answers, builds the same report from the state files, creating none.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::config::Config;
use crate::control::{self, Reply, Request};
use crate::queue::{LaneState, QueueView};
use crate::status::{self, StatusReport, WebhookLimits};

/// How long `status` waits for a running agent's answer.
const STATUS_WAIT: Duration = Duration::from_secs(10);

pub fn status(config: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let state_dir = &config.agent.state_dir;
    let report = match control::ask(state_dir, &Request::Status, STATUS_WAIT, |_| {})
        .map_err(|e| anyhow!(e))?
    {
        Some(Reply::Status { report }) => *report,
        Some(Reply::Error { message }) => bail!("the agent could not report: {message}"),
        Some(other) => bail!("the agent answered out of turn: {other:?}"),
        None => stopped_status(&config)?,
    };
    if json {
        let text = serde_json::to_string_pretty(&report).expect("reports serialize");
        super::print_out(&format!("{text}\n"))
    } else {
        super::print_out(&report.render())
    }
}

/// The report read from the state files; creates none of them.
fn stopped_status(config: &Config) -> anyhow::Result<StatusReport> {
    let state_dir = &config.agent.state_dir;
    let limits: Vec<WebhookLimits> = config
        .webhooks
        .iter()
        .map(|(name, spec)| WebhookLimits {
            name: name.clone(),
            rate_limits: spec.rate_limits(),
            pacing: spec.pacing(),
        })
        .collect();
    let view = QueueView::open(state_dir).map_err(|e| e.to_string());
    status::gather(
        "stopped",
        state_dir,
        &config.inputs,
        &limits,
        |_, name, window| match &view {
            Ok(Some(view)) => view.lane_state(name, window).map_err(|e| e.to_string()),
            Ok(None) => Ok(LaneState::default()),
            Err(problem) => Err(problem.clone()),
        },
    )
    .map_err(|e| anyhow!(e))
}
