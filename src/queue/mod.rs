//! Queue: where events wait for their webhook, and which webhooks they go to.
//!
//! [`Router`] maps a rule id to the webhooks its events go to (`[[route]]`
//! sections, each with a `min_severity`, `low` unless it says otherwise;
//! with none, every rule of `low` and above goes to every webhook). [`Queue`] (in
//! `store.rs`) keeps each webhook's events on disk until the webhook took them,
//! in rows of many events laid out as `rows.rs` says; `fresh.rs` keeps a copy
//! of the latest in memory for a sender that keeps up.

mod fresh;
mod rows;
mod store;

use std::collections::HashMap;

use crate::config::{RouteConfig, DEFAULT_MIN_SEVERITY};
use crate::rules::{RuleSelector, Severity};

#[cfg(test)]
pub(crate) use store::SlowDisk;
pub use store::{
    LaneLimits, LaneState, LastError, Queue, QueueError, QueueView, Queued, ReadAt, ToQueue,
};

pub struct Router {
    /// Rule id → indexes of webhooks, in config order.
    destinations: HashMap<String, Vec<usize>>,
    /// Rules whose id no route's globs select: a likely mistake, unlike a
    /// rule that routes select but whose severity is below their minimum.
    unselected: Vec<String>,
}

impl Router {
    /// Routes each rule (id and severity, after overrides) to the webhooks
    /// (by index in `webhooks`) of every route that selects it and whose
    /// `min_severity` it reaches.
    pub fn new<'a>(
        rules: impl IntoIterator<Item = (&'a str, Severity)>,
        webhooks: &[String],
        routes: &[RouteConfig],
    ) -> Router {
        let routes: Vec<(RuleSelector, Vec<usize>, Severity)> = routes
            .iter()
            .map(|route| {
                let hooks = route
                    .webhooks
                    .iter()
                    .filter_map(|name| webhooks.iter().position(|w| w == name))
                    .collect();
                (
                    RuleSelector::validated(&route.rules),
                    hooks,
                    route.min_severity,
                )
            })
            .collect();
        let mut unselected = Vec::new();
        let destinations = rules
            .into_iter()
            .map(|(id, severity)| {
                if !routes.is_empty() && !routes.iter().any(|(selector, _, _)| selector.selects(id))
                {
                    unselected.push(id.to_string());
                }
                let mut to: Vec<usize> = if routes.is_empty() {
                    if severity >= DEFAULT_MIN_SEVERITY {
                        (0..webhooks.len()).collect()
                    } else {
                        Vec::new()
                    }
                } else {
                    routes
                        .iter()
                        .filter(|(selector, _, min)| severity >= *min && selector.selects(id))
                        .flat_map(|(_, hooks, _)| hooks.iter().copied())
                        .collect()
                };
                to.sort_unstable();
                to.dedup();
                (id.to_string(), to)
            })
            .collect();
        Router {
            destinations,
            unselected,
        }
    }

    /// Rules that no route selects, whatever their severity.
    pub fn unselected(&self) -> &[String] {
        &self.unselected
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
            min_severity: DEFAULT_MIN_SEVERITY,
        }
    }

    #[test]
    fn a_negated_route_glob_keeps_a_rule_away_from_a_webhook() {
        let hooks = vec!["soc".to_string(), "chat".to_string()];
        let routes = [
            route(&["sshd.*", "!sshd.login_accepted"], &["soc"]),
            RouteConfig {
                min_severity: Severity::Info,
                ..route(&["sshd.login_accepted"], &["chat"])
            },
        ];
        let router = Router::new(
            [
                ("sshd.auth_failed", Severity::Medium),
                ("sshd.login_accepted", Severity::Info),
            ],
            &hooks,
            &routes,
        );
        assert_eq!(router.destinations("sshd.auth_failed"), &[0]);
        assert_eq!(router.destinations("sshd.login_accepted"), &[1]);
    }

    #[test]
    fn without_routes_every_rule_of_low_and_above_goes_everywhere() {
        let hooks = vec!["a".to_string(), "b".to_string()];
        let router = Router::new(
            [("sshd.x", Severity::Low), ("sshd.login", Severity::Info)],
            &hooks,
            &[],
        );
        assert_eq!(router.destinations("sshd.x"), &[0, 1]);
        assert!(router.destinations("sshd.login").is_empty());
    }

    #[test]
    fn a_route_sends_only_what_reaches_its_min_severity() {
        let hooks = vec!["soc".to_string(), "audit".to_string()];
        let routes = [
            RouteConfig {
                min_severity: Severity::High,
                ..route(&["*"], &["soc"])
            },
            RouteConfig {
                min_severity: Severity::Info,
                ..route(&["sshd.*"], &["audit"])
            },
            route(&["sudo.*"], &["audit"]),
        ];
        let router = Router::new(
            [
                ("sshd.login", Severity::Info),
                ("sshd.failed", Severity::Medium),
                ("sshd.root", Severity::Critical),
                ("sudo.session", Severity::Info),
                ("sudo.denied", Severity::Low),
            ],
            &hooks,
            &routes,
        );
        assert_eq!(router.destinations("sshd.login"), &[1]);
        assert_eq!(router.destinations("sshd.failed"), &[1]);
        assert_eq!(router.destinations("sshd.root"), &[0, 1]);
        assert!(router.destinations("sudo.session").is_empty());
        assert_eq!(router.destinations("sudo.denied"), &[1]);
        assert!(
            router.unselected().is_empty(),
            "every rule is selected by a glob"
        );
    }

    #[test]
    fn routes_select_by_rule_glob_without_duplicates() {
        let hooks = vec!["soc".to_string(), "chat".to_string()];
        let routes = [
            route(&["sshd.*"], &["soc"]),
            route(&["*.auth_failed"], &["soc", "chat"]),
        ];
        let router = Router::new(
            [
                ("sshd.auth_failed", Severity::Medium),
                ("sshd.invalid_user", Severity::Medium),
                ("sudo.command", Severity::Medium),
            ],
            &hooks,
            &routes,
        );
        assert_eq!(router.destinations("sshd.auth_failed"), &[0, 1]);
        assert_eq!(router.destinations("sshd.invalid_user"), &[0]);
        assert!(router.destinations("sudo.command").is_empty());
        assert_eq!(router.unselected(), ["sudo.command"]);
    }
}
