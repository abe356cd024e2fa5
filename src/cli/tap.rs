//! `tap`: the last events the running agent queued or sent, with their
//! outcome, and with `--follow` every change live, from the agent's ring
//! over the control socket. Nothing is kept on disk, so it needs the agent.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::config::Config;
use crate::control::{self, socket_path, Reply, Request};
use crate::tap::Tapped;

/// How long `tap` without `--follow` waits for the agent's answer.
const TAP_WAIT: Duration = Duration::from_secs(10);

pub struct TapOptions<'a> {
    pub webhook: Option<&'a str>,
    pub count: usize,
    pub follow: bool,
    pub json: bool,
}

pub fn tap(config: &Path, options: &TapOptions) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    if let Some(name) = options.webhook {
        config.webhook_spec(name)?;
    }
    let state_dir = &config.agent.state_dir;
    let request = Request::Tap {
        webhook: options.webhook.map(str::to_string),
        count: options.count,
        follow: options.follow,
    };
    let show = |event: &Tapped| super::print_out(&line(event, options.json));
    // A closed stdout (`tap --follow | head`) ends the conversation.
    let mut shown = Ok(());
    let wait = (!options.follow).then_some(TAP_WAIT);
    let reply = control::converse(state_dir, &request, wait, |reply| match reply {
        Reply::Tapped { event } => {
            shown = show(event);
            shown.is_ok()
        }
        Reply::Note { text } => {
            eprintln!("tailhook: tap: {text}");
            true
        }
        _ => false,
    });
    shown?;
    match reply.map_err(|e| anyhow!(e))? {
        Some(Reply::Tap { events }) => events.iter().try_for_each(show),
        Some(Reply::Error { message }) => bail!("tap: {message}"),
        Some(other) => bail!("the agent answered out of turn: {other:?}"),
        None => bail!(
            "no agent is running with state_dir {} (nothing answers on {}); tap shows what a running agent queues and sends: start it (`systemctl start tailhook`), or see `tailhook status` and `tailhook dead-letter list`",
            state_dir.display(),
            socket_path(state_dir).display()
        ),
    }
}

/// One event: a JSON object, or a line for people.
fn line(tapped: &Tapped, json: bool) -> String {
    if json {
        return format!(
            "{}\n",
            serde_json::to_string(tapped).expect("tapped events serialize")
        );
    }
    let event = &tapped.event;
    format!(
        "{} {} {:<13} {} {} {}\n",
        tapped.at,
        tapped.webhook,
        tapped.outcome.to_string(),
        event.rule,
        event.severity.as_str(),
        event.message
    )
}
