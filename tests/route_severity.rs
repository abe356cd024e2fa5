//! Routes and severity, end to end: `info` events (successful logins) go only
//! where a route says `min_severity = "info"`; without any `[[route]]` every
//! webhook gets `low` and above.

mod support;

use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// The test rules plus an `info` rule for the noise lines (`Accepted …`).
fn rules_with_an_info_rule(setup: &Setup) {
    setup.append(
        "rules/test.toml",
        &[r#"
[[rule]]
id = "test.login_accepted"
severity = "info"
regex = '^seq=(?P<event.sequence>\d+) Accepted password for (?P<user.name>\S+) from (?P<source.ip>[0-9a-f.:]+) port (?P<source.port>\d+)$'
types = { "event.sequence" = "int", "source.port" = "int", "source.ip" = "ip" }
"#
        .to_string()],
    );
}

/// Lines 1..=20: every third an `info` login, the rest `high` failures; the
/// last is a failure, so a webhook that has every failure has seen the lane
/// past every login.
fn lines() -> (Vec<String>, Vec<i64>, Vec<i64>) {
    let (mut text, mut logins, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for seq in 1..=20 {
        if seq % 3 == 0 {
            text.push(noise_line(seq));
            logins.push(seq as i64);
        } else {
            text.push(failed_line(seq));
            failures.push(seq as i64);
        }
    }
    (text, logins, failures)
}

fn severities(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["severity"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_info_event_reaches_only_the_webhook_whose_route_asks_for_info() {
    let soc = Receiver::start(ReceiverOptions::default());
    let audit = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    rules_with_an_info_rule(&setup);
    let config = setup.write_config(&format!(
        "[agent]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\
         [rules]\npaths = [\"rules\"]\n\
         [[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nstart_at = \"beginning\"\n\
         [webhook.soc]\nurl = \"{}\"\nbatch_timeout = \"100ms\"\n\
         [webhook.audit]\nurl = \"{}\"\nbatch_timeout = \"100ms\"\n\
         [[route]]\nrules = [\"test.*\"]\nwebhooks = [\"soc\"]\n\
         [[route]]\nrules = [\"test.*\"]\nwebhooks = [\"audit\"]\nmin_severity = \"info\"\n",
        soc.url, audit.url
    ));
    let (text, logins, failures) = lines();
    setup.append("auth.log", &text);
    let agent = Agent::start(&config);

    let to_audit = audit.wait_for_events(20, DEADLINE);
    assert_eq!(sequences(&to_audit), (1..=20).collect::<Vec<_>>());
    let to_soc = soc.wait_for_events(failures.len(), DEADLINE);
    assert_eq!(
        sequences(&to_soc),
        failures,
        "soc's route is `low` and above: no login among {logins:?}"
    );
    assert!(severities(&to_soc).iter().all(|s| s == "high"));
    assert_eq!(
        severities(&to_audit)
            .iter()
            .filter(|s| *s == "info")
            .count(),
        logins.len()
    );
    assert!(
        !agent.logs().contains("no route sends"),
        "a rule below a route's minimum is deliberate, not unrouted: {}",
        agent.logs()
    );
}

#[test]
fn without_routes_every_webhook_gets_low_and_above_but_no_info() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    rules_with_an_info_rule(&setup);
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "start_at = \"beginning\"",
            webhook: "batch_timeout = \"100ms\"",
        },
    );
    let (text, _, failures) = lines();
    setup.append("auth.log", &text);
    let _agent = Agent::start(&config);
    let events = receiver.wait_for_events(failures.len(), DEADLINE);
    assert_eq!(sequences(&events), failures);
}

#[test]
fn a_negated_glob_in_a_route_takes_those_rules_out_of_it() {
    let soc = Receiver::start(ReceiverOptions::default());
    let audit = Receiver::start(ReceiverOptions::default());
    let setup = Setup::new();
    rules_with_an_info_rule(&setup);
    let config = setup.write_config(&format!(
        "[agent]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\
         [rules]\npaths = [\"rules\"]\n\
         [[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nstart_at = \"beginning\"\n\
         [webhook.soc]\nurl = \"{}\"\nbatch_timeout = \"100ms\"\n\
         [webhook.audit]\nurl = \"{}\"\nbatch_timeout = \"100ms\"\n\
         [[route]]\nrules = [\"test.*\", \"!test.auth_failed\"]\nwebhooks = [\"soc\"]\nmin_severity = \"info\"\n\
         [[route]]\nrules = [\"!test.login_accepted\"]\nwebhooks = [\"audit\"]\nmin_severity = \"info\"\n",
        soc.url, audit.url
    ));
    let (text, logins, failures) = lines();
    setup.append("auth.log", &text);
    let mut agent = Agent::start(&config);

    // Each webhook gets what its route leaves in, in order; the last line
    // is a failure, so once audit has it every login was routed already.
    assert_eq!(
        sequences(&audit.wait_for_events(failures.len(), DEADLINE)),
        failures
    );
    assert_eq!(
        sequences(&soc.wait_for_events(logins.len(), DEADLINE)),
        logins
    );
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    assert_eq!(sequences(&soc.events()), logins, "no failure reached soc");
    assert_eq!(
        sequences(&audit.events()),
        failures,
        "no login reached audit"
    );
}
