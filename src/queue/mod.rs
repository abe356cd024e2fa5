//! Queue: where events wait for their webhook, and which webhooks they go to.
//!
//! Each webhook has its own bounded queue, so a webhook that is down only fills
//! its own. The [`Router`] maps a rule id to the webhooks its events go to
//! (`[[route]]` sections; with none, every rule goes to every webhook) and
//! blocks when a queue is full, which is how back-pressure reaches the tailer.
//!
//! The queues are in memory for now; they are the seam where the durable
//! on-disk queue plugs in, behind the same `push`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::RouteConfig;
use crate::event::Event;
use crate::rules::{compile_globs, id_selected};
use crate::tail::CommitToken;

/// Events one webhook's queue holds before `push` blocks.
pub const QUEUE_CAPACITY: usize = 10_000;

/// An event waiting for one webhook. Its line's offset stays uncommitted
/// until every webhook's copy of `commit` is dropped, after delivery.
pub struct Queued {
    pub event: Arc<Event>,
    pub commit: CommitToken,
}

pub type EventReceiver = mpsc::Receiver<Queued>;

#[derive(Debug)]
pub struct QueueClosed;

pub struct Router {
    queues: Vec<mpsc::Sender<Queued>>,
    /// Rule id → indexes into `queues`.
    destinations: HashMap<String, Vec<usize>>,
}

impl Router {
    /// One queue per webhook in `webhooks` order; receivers come back in that order.
    pub fn new<'a>(
        rule_ids: impl IntoIterator<Item = &'a str>,
        webhooks: &[String],
        routes: &[RouteConfig],
    ) -> (Router, Vec<EventReceiver>) {
        let (queues, receivers) = webhooks
            .iter()
            .map(|_| mpsc::channel(QUEUE_CAPACITY))
            .unzip();
        let routes: Vec<(Vec<glob::Pattern>, Vec<usize>)> = routes
            .iter()
            .map(|route| {
                let hooks = route
                    .webhooks
                    .iter()
                    .filter_map(|name| webhooks.iter().position(|w| w == name))
                    .collect();
                (compile_globs(&route.rules), hooks)
            })
            .collect();
        let destinations = rule_ids
            .into_iter()
            .map(|id| {
                let mut to: Vec<usize> = if routes.is_empty() {
                    (0..webhooks.len()).collect()
                } else {
                    routes
                        .iter()
                        .filter(|(globs, _)| id_selected(id, globs))
                        .flat_map(|(_, hooks)| hooks.iter().copied())
                        .collect()
                };
                to.sort_unstable();
                to.dedup();
                (id.to_string(), to)
            })
            .collect();
        (
            Router {
                queues,
                destinations,
            },
            receivers,
        )
    }

    /// Names of the webhooks a rule's events go to, by index.
    pub fn destinations(&self, rule_id: &str) -> &[usize] {
        self.destinations.get(rule_id).map_or(&[], Vec::as_slice)
    }

    /// Queues `event` for each of its rule's webhooks, waiting while a queue is
    /// full. Called from the tailer thread, outside the async runtime.
    pub fn push_blocking(&self, event: Event, commit: &CommitToken) -> Result<(), QueueClosed> {
        let event = Arc::new(event);
        for &i in self.destinations(&event.rule) {
            let queued = Queued {
                event: event.clone(),
                commit: commit.clone(),
            };
            self.queues[i]
                .blocking_send(queued)
                .map_err(|_| QueueClosed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(rules: &[&str], webhooks: &[&str]) -> RouteConfig {
        RouteConfig {
            rules: rules.iter().map(|s| s.to_string()).collect(),
            webhooks: webhooks.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn without_routes_every_rule_goes_everywhere() {
        let hooks = vec!["a".to_string(), "b".to_string()];
        let (router, _rx) = Router::new(["sshd.x"], &hooks, &[]);
        assert_eq!(router.destinations("sshd.x"), &[0, 1]);
    }

    #[test]
    fn routes_select_by_rule_glob_without_duplicates() {
        let hooks = vec!["soc".to_string(), "chat".to_string()];
        let routes = [
            route(&["sshd.*"], &["soc"]),
            route(&["*.auth_failed"], &["soc", "chat"]),
        ];
        let (router, _rx) = Router::new(
            ["sshd.auth_failed", "sshd.invalid_user", "sudo.command"],
            &hooks,
            &routes,
        );
        assert_eq!(router.destinations("sshd.auth_failed"), &[0, 1]);
        assert_eq!(router.destinations("sshd.invalid_user"), &[0]);
        assert!(router.destinations("sudo.command").is_empty());
    }
}
