//! Queue: where events wait for their webhook, and which webhooks they go to.
//!
//! [`Router`] maps a rule id to the webhooks its events go to (`[[route]]`
//! sections; with none, every rule goes to every webhook). [`Queue`] (in
//! `store.rs`) keeps each webhook's events on disk until the webhook took them.

mod store;

use std::collections::HashMap;

use crate::config::RouteConfig;
use crate::rules::RuleSelector;

pub use store::{LaneState, LastError, Queue, QueueError, QueueView, Queued};

pub struct Router {
    /// Rule id → indexes of webhooks, in config order.
    destinations: HashMap<String, Vec<usize>>,
}

impl Router {
    pub fn new<'a>(
        rule_ids: impl IntoIterator<Item = &'a str>,
        webhooks: &[String],
        routes: &[RouteConfig],
    ) -> Router {
        let routes: Vec<(RuleSelector, Vec<usize>)> = routes
            .iter()
            .map(|route| {
                let hooks = route
                    .webhooks
                    .iter()
                    .filter_map(|name| webhooks.iter().position(|w| w == name))
                    .collect();
                (RuleSelector::validated(&route.rules), hooks)
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
                        .filter(|(selector, _)| selector.selects(id))
                        .flat_map(|(_, hooks)| hooks.iter().copied())
                        .collect()
                };
                to.sort_unstable();
                to.dedup();
                (id.to_string(), to)
            })
            .collect();
        Router { destinations }
    }

    /// The webhooks (by index) a rule's events go to.
    pub fn destinations(&self, rule_id: &str) -> &[usize] {
        self.destinations.get(rule_id).map_or(&[], Vec::as_slice)
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
    fn a_negated_route_glob_keeps_a_rule_away_from_a_webhook() {
        let hooks = vec!["soc".to_string(), "chat".to_string()];
        let routes = [
            route(&["sshd.*", "!sshd.login_accepted"], &["soc"]),
            route(&["sshd.login_accepted"], &["chat"]),
        ];
        let router = Router::new(["sshd.auth_failed", "sshd.login_accepted"], &hooks, &routes);
        assert_eq!(router.destinations("sshd.auth_failed"), &[0]);
        assert_eq!(router.destinations("sshd.login_accepted"), &[1]);
    }

    #[test]
    fn without_routes_every_rule_goes_everywhere() {
        let hooks = vec!["a".to_string(), "b".to_string()];
        let router = Router::new(["sshd.x"], &hooks, &[]);
        assert_eq!(router.destinations("sshd.x"), &[0, 1]);
    }

    #[test]
    fn routes_select_by_rule_glob_without_duplicates() {
        let hooks = vec!["soc".to_string(), "chat".to_string()];
        let routes = [
            route(&["sshd.*"], &["soc"]),
            route(&["*.auth_failed"], &["soc", "chat"]),
        ];
        let router = Router::new(
            ["sshd.auth_failed", "sshd.invalid_user", "sudo.command"],
            &hooks,
            &routes,
        );
        assert_eq!(router.destinations("sshd.auth_failed"), &[0, 1]);
        assert_eq!(router.destinations("sshd.invalid_user"), &[0]);
        assert!(router.destinations("sudo.command").is_empty());
    }
}
