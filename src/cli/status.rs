//! `status`: asks the running agent over its control socket; when none
//! answers, builds the same report from the state files, creating none.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::config::{state_dir_despite_errors, Config};
use crate::control::{self, Reply, Request};
use crate::fleet::Fleet;
use crate::queue::{LaneState, QueueView};
use crate::status::{self, StatusReport, WebhookLimits};

/// How long `status` waits for a running agent's answer.
const STATUS_WAIT: Duration = Duration::from_secs(10);

pub fn status(path: &Path, json: bool) -> anyhow::Result<()> {
    let loaded = Config::load(path);
    // A config broken since the agent started (a reload failed on it) must
    // not hide the agent, which runs on and reports why.
    let state_dir = match &loaded {
        Ok(config) => config.agent.state_dir.clone(),
        Err(e) => match state_dir_despite_errors(path) {
            Some(state_dir) => state_dir,
            None => bail!("{e}"),
        },
    };
    let report = match control::ask(&state_dir, &Request::Status, STATUS_WAIT, |_| {})
        .map_err(|e| anyhow!(e))?
    {
        Some(Reply::Status { report }) => *report,
        Some(Reply::Error { message }) => bail!("the agent could not report: {message}"),
        Some(other) => bail!("the agent answered out of turn: {other:?}"),
        None => match &loaded {
            Ok(config) => stopped_status(config)?,
            Err(e) => bail!("{e}"),
        },
    };
    if let Err(e) = &loaded {
        eprintln!("warning: {e} (the running agent keeps the configuration it loaded before)");
    }
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
    let mut report = status::gather(
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
    .map_err(|e| anyhow!(e))?;
    add_fleet(config, &mut report);
    Ok(report)
}

/// The shared webhooks as the fleet's Redis says, asked from here: the
/// fleet goes on while this agent is stopped.
fn add_fleet(config: &Config, report: &mut StatusReport) {
    let shared = |name: &str| config.webhooks.get(name).is_some_and(|w| w.is_shared());
    if !report.webhooks.iter().any(|w| shared(&w.name)) {
        return;
    }
    let observe = |fleet_config: &crate::config::FleetConfig| -> Result<Vec<_>, String> {
        let fleet = Fleet::new(fleet_config.clone(), &config.host()).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(report
            .webhooks
            .iter()
            .map(|status| {
                let spec = config.webhooks.get(&status.name)?.clone();
                spec.is_shared().then(|| {
                    let keys = fleet.keys(&status.name);
                    runtime
                        .block_on(fleet.observe(&keys, &spec.rate_limits(), spec.pacing()))
                        .map(|(observed, _)| observed)
                        .map_err(|e| e.to_string())
                })
            })
            .collect())
    };
    match config.fleet() {
        Ok(Some(fleet_config)) => {
            let found = observe(&fleet_config);
            for (i, status) in report.webhooks.iter_mut().enumerate() {
                let observed = match &found {
                    Ok(each) => each[i].clone(),
                    Err(problem) => shared(&status.name).then(|| Err(problem.clone())),
                };
                if let Some(observed) = observed {
                    status.fleet = Some(status::FleetStatus::new(&fleet_config, Some(observed)));
                }
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!("warning: {e}"),
    }
}
