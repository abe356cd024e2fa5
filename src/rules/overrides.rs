//! `[[override]]` tables: local changes to rules without editing the files
//! that define them, so a package upgrade never conflicts with them
//! (DESIGN §4). Any rule file may hold overrides; they apply after every
//! rule is loaded, in file order (files sorted as loaded, tables in file
//! order), and a later override wins per key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::{Rule, RuleError, RuleSelector, Severity};

/// One `[[override]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideSpec {
    rules: Vec<String>,
    enabled: Option<bool>,
    severity: Option<Severity>,
    ignore_ips: Option<Vec<String>>,
}

/// A checked override and where it is written.
pub(super) struct Override {
    file: PathBuf,
    line: usize,
    patterns: Vec<String>,
    selector: RuleSelector,
    enabled: Option<bool>,
    severity: Option<Severity>,
    ignore_ips: Option<Vec<IpNet>>,
}

impl Override {
    pub(super) fn new(file: &Path, line: usize, spec: OverrideSpec) -> Result<Override, RuleError> {
        let fail = |problem: String| RuleError {
            file: file.to_path_buf(),
            line: Some(line),
            rule: None,
            problem: format!("override: {problem}"),
        };
        if spec.rules.is_empty() {
            return Err(fail("`rules` names no rule-id glob".into()));
        }
        let selector = RuleSelector::parse(&spec.rules).map_err(|p| fail(format!("rules: {p}")))?;
        if spec.enabled.is_none() && spec.severity.is_none() && spec.ignore_ips.is_none() {
            return Err(fail(
                "changes nothing: give `enabled`, `severity` or `ignore_ips`".into(),
            ));
        }
        let ignore_ips = spec
            .ignore_ips
            .map(|texts| {
                texts
                    .iter()
                    .map(|text| parse_network(text).map_err(|p| fail(format!("ignore_ips: {p}"))))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Override {
            file: file.to_path_buf(),
            line,
            patterns: spec.rules,
            selector,
            enabled: spec.enabled,
            severity: spec.severity,
            ignore_ips,
        })
    }
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or one address (`192.0.2.7`).
fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!("`{text}` is neither an address nor a CIDR network (e.g. \"10.0.0.0/8\")")
        })
}

/// Whether `ip` (a field's text) is inside any of `networks`. IPv4-mapped
/// IPv6 addresses count as the IPv4 address they carry, as `ip` fields do.
pub(super) fn ignored_address(networks: &[IpNet], ip: &str) -> bool {
    ip.parse::<IpAddr>()
        .is_ok_and(|ip| networks.iter().any(|net| net.contains(&ip.to_canonical())))
}

/// What the overrides did, for `check` and `test-rules`.
#[derive(Debug, Default)]
pub struct OverrideReport {
    /// `FILE:LINE: override: …` for each override and what it changed.
    pub applied: Vec<String>,
    /// Globs that select no rule, naming the file and line.
    pub warnings: Vec<String>,
}

/// Applies `overrides` in order to `rules`; disabled rules are removed.
pub(super) fn apply(rules: &mut Vec<Rule>, overrides: &[Override]) -> OverrideReport {
    let mut report = OverrideReport::default();
    let mut disabled = vec![false; rules.len()];
    let ids: Vec<String> = rules.iter().map(|r| r.id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for o in overrides {
        let at = format!("{}:{}", o.file.display(), o.line);
        for pattern in o.selector.unmatched(&id_refs) {
            report.warnings.push(format!(
                "{at}: override: rules glob `{pattern}` matches no rule"
            ));
        }
        let selected: Vec<usize> = (0..rules.len())
            .filter(|&i| o.selector.selects(&rules[i].id))
            .collect();
        if selected.is_empty() {
            continue;
        }
        for &i in &selected {
            if let Some(enabled) = o.enabled {
                disabled[i] = !enabled;
            }
            if let Some(severity) = o.severity {
                rules[i].severity = severity;
            }
            if let Some(networks) = &o.ignore_ips {
                rules[i].ignore_ips = networks.clone();
            }
        }
        let mut changes = Vec::new();
        match o.enabled {
            Some(false) => changes.push("disabled".to_string()),
            Some(true) => changes.push("enabled".to_string()),
            None => {}
        }
        if let Some(severity) = o.severity {
            changes.push(format!("severity {}", severity.as_str()));
        }
        if let Some(networks) = &o.ignore_ips {
            let list: Vec<String> = networks.iter().map(IpNet::to_string).collect();
            changes.push(format!("source.ip ignored in {}", list.join(", ")));
        }
        let names: Vec<&str> = selected.iter().map(|&i| rules[i].id.as_str()).collect();
        report.applied.push(format!(
            "{at}: override {}: {} ({})",
            o.patterns.join(", "),
            changes.join("; "),
            names.join(", ")
        ));
    }
    let mut index = 0;
    rules.retain(|_| {
        index += 1;
        !disabled[index - 1]
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_single_addresses_of_both_families() {
        let nets: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "fe80::1"]
            .iter()
            .map(|t| parse_network(t).unwrap())
            .collect();
        for inside in [
            "10.1.2.3",
            "192.0.2.7",
            "2001:db8::5",
            "fe80::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(ignored_address(&nets, inside), "{inside}");
        }
        for outside in [
            "203.0.113.7",
            "192.0.2.8",
            "2001:db9::1",
            "fe80::2",
            "not an ip",
        ] {
            assert!(!ignored_address(&nets, outside), "{outside}");
        }
        // Host bits set in a CIDR mean the network, as ip(8) reads them.
        assert!(ignored_address(
            &[parse_network("10.1.2.3/8").unwrap()],
            "10.200.0.1"
        ));
        let err = parse_network("10.0.0.0/33").unwrap_err();
        assert!(err.contains("`10.0.0.0/33`"), "{err}");
        assert!(parse_network("office").is_err());
    }

    proptest::proptest! {
        /// Any text as a network or an address: an error or a network,
        /// never a panic; any text as a field: a yes or no.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,64}", ip in ".{0,48}") {
            let nets: Vec<IpNet> = parse_network(&text).into_iter().collect();
            ignored_address(&nets, &ip);
        }

        /// An address is inside the /N network built from itself, for any N.
        #[test]
        fn an_address_is_inside_its_own_networks(octets in proptest::array::uniform4(0u8..), bits in 0u8..=32) {
            let ip = std::net::Ipv4Addr::from(octets);
            let net = parse_network(&format!("{ip}/{bits}")).unwrap();
            proptest::prop_assert!(ignored_address(&[net], &ip.to_string()));
        }
    }
}
