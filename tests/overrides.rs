//! Local overrides (`[[override]]` in a rules file of one's own) change the
//! shipped rules without editing them: the real binary, a copy of the
//! shipped sshd pack, and a loopback receiver. Each line carries its number
//! as `source.port`, so the receiver proves which lines became events.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(20);
const SHIPPED_SSHD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/sshd.toml");

/// Disables one shipped rule, raises another's severity and ignores our own
/// networks for it; the last override's glob is a typo.
const LOCAL: &str = r#"# local changes; sshd.toml stays as shipped
[[override]]
rules = ["sshd.invalid_user"]
enabled = false

[[override]]
rules = ["sshd.auth_*"]
severity = "high"
ignore_ips = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]

[[override]]
rules = ["sshd.auth_faild"]
severity = "low"
"#;

const PUBLICKEY_KEY: &str = "RSA SHA256:3XbPqzM0eBd4mpB6l2oi3G5t0T8aB6fJ9w0i1p2mZ7A";

/// Line `port` of the log: what each rule makes of it is in `expected`.
fn lines() -> Vec<String> {
    let at = |port: u32, text: &str| format!("Nov 22 10:00:01 web1 sshd[811]: {text} port {port}");
    vec![
        // disabled by the override
        at(1001, "Invalid user admin from 203.0.113.8"),
        // inside ignore_ips: 10.0.0.0/8, 2001:db8::/32, 192.0.2.7
        at(1002, "Failed password for root from 10.1.2.3") + " ssh2",
        at(1003, "Failed password for root from 203.0.113.7") + " ssh2",
        at(1004, "Failed password for root from 2001:db8::5") + " ssh2",
        at(1005, "Failed password for root from 192.0.2.7") + " ssh2",
        // taken out of the input by `!sshd.publickey_failed`
        at(1006, "Failed publickey for git from 203.0.113.20") + &format!(" ssh2: {PUBLICKEY_KEY}"),
        at(1007, "Failed password for root from 2001:db9::1") + " ssh2",
    ]
}

fn setup_with_overrides(receiver_url: &str) -> (Setup, std::path::PathBuf) {
    let setup = Setup::new();
    let rules = setup.path("sshd-rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(SHIPPED_SSHD, rules.join("sshd.toml")).unwrap();
    std::fs::write(rules.join("local.toml"), LOCAL).unwrap();
    let config = setup.write_config(&format!(
        "[agent]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\
         [rules]\npaths = [\"sshd-rules\"]\n\
         [[input]]\nname = \"auth\"\npaths = [\"auth.log\"]\nstart_at = \"beginning\"\n\
         rules = [\"sshd.*\", \"!sshd.publickey_failed\"]\n\
         [webhook.soc]\nurl = \"{receiver_url}\"\nbatch_timeout = \"100ms\"\n"
    ));
    (setup, config)
}

#[test]
fn overrides_disable_raise_and_ignore_our_own_addresses_end_to_end() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let (setup, config) = setup_with_overrides(&receiver.url);
    setup.append("auth.log", &lines());
    let mut agent = Agent::start(&config);

    // Lines are queued and sent in order: once the last line's event is
    // there, every earlier line was decided.
    wait_until(DEADLINE, "the event of the last line", || {
        receiver
            .events()
            .iter()
            .any(|e| e["fields"]["source.port"] == 1007)
    });
    let events = receiver.events();
    let delivered: Vec<(i64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["fields"]["source.port"].as_i64().unwrap(),
                e["rule"].as_str().unwrap(),
                e["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            (1003, "sshd.auth_failed", "high"),
            (1007, "sshd.auth_failed", "high")
        ],
        "{events:?}"
    );
    assert_eq!(events[0]["fields"]["source.ip"], "203.0.113.7");
    agent.wait_for_log("override sshd.invalid_user: disabled", DEADLINE);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    assert_eq!(
        std::fs::read(setup.path("sshd-rules/sshd.toml")).unwrap(),
        std::fs::read(SHIPPED_SSHD).unwrap(),
        "the shipped file is never edited"
    );
}

#[test]
fn check_lists_what_each_override_did_and_warns_about_a_glob_that_selects_nothing() {
    let (setup, config) = setup_with_overrides("-");
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a warning does not fail check: {stderr}"
    );
    let local = setup.path("sshd-rules/local.toml").canonicalize().unwrap();
    let local = local.display();
    assert!(
        stdout.contains(&format!(
            "{local}:2: override sshd.invalid_user: disabled (sshd.invalid_user)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{local}:6: override sshd.auth_*: severity high; source.ip ignored in 10.0.0.0/8, 2001:db8::/32, 192.0.2.7/32 (sshd.auth_failed)"
        )),
        "{stdout}"
    );
    assert_eq!(
        stderr.trim_end(),
        format!("warning: {local}:11: override: rules glob `sshd.auth_faild` matches no rule"),
    );
}

#[test]
fn test_rules_counts_an_ignored_address_and_skips_a_disabled_rule() {
    let (setup, _) = setup_with_overrides("-");
    setup.append("auth.log", &lines());
    let out = Command::new(binary())
        .args(["test-rules", "--json", "--rules"])
        .arg(setup.path("sshd-rules"))
        .arg(setup.path("auth.log"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let matched: Vec<(u64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                record["line"].as_u64().unwrap(),
                record["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Without an input, no `!glob` applies: the publickey line matches.
    assert_eq!(
        matched,
        [
            (3, "sshd.auth_failed".to_string()),
            (6, "sshd.publickey_failed".to_string()),
            (7, "sshd.auth_failed".to_string())
        ]
    );
    assert!(
        stderr.contains("7 read, 3 matched, 3 ignored, 0 type mismatch, 1 missed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("override sshd.invalid_user: disabled"),
        "{stderr}"
    );
    assert!(stderr.contains("warning: "), "{stderr}");
}

#[test]
fn a_bad_override_names_the_file_line_and_value() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("rules/local.toml"),
        "\n[[override]]\nrules = [\"test.*\"]\nignore_ips = [\"10.0.0.0/33\"]\n",
    )
    .unwrap();
    let config = setup.agent_config("-", ConfigKeys::default());
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let local = setup.path("rules/local.toml").canonicalize().unwrap();
    assert_eq!(
        stderr.trim_end(),
        format!(
            "tailhook: error: {}:2: override: ignore_ips: `10.0.0.0/33` is neither an address nor a CIDR network (e.g. \"10.0.0.0/8\")",
            local.display()
        )
    );
}
