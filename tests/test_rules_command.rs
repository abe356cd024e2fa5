//! `tailhook test-rules`: runs rules over files or stdin like fail2ban-regex.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

#[test]
fn prints_matches_with_fields_and_a_summary() {
    let setup = Setup::new();
    setup.append("auth.log", &[failed_line(1), noise_line(2), failed_line(3)]);
    let out = Command::new(binary())
        .args(["test-rules", "--rules"])
        .arg(setup.path("rules"))
        .arg(setup.path("auth.log"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("auth.log:1  test.auth_failed  {\"event.sequence\":1,"),
        "{stdout}"
    );
    assert!(stdout.contains("auth.log:3  test.auth_failed"), "{stdout}");
    assert!(stdout.contains("test.auth_failed  2"), "{stdout}");
    assert!(
        stdout.contains("Lines: 3 read, 2 matched, 0 ignored, 0 type mismatch, 1 missed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("auth.log:2  {}", noise_line(2))),
        "missed sample: {stdout}"
    );
    assert!(stdout.contains("lines/s"), "{stdout}");
}

#[test]
fn json_mode_reads_stdin_and_keeps_stdout_machine_readable() {
    let setup = Setup::new();
    let mut child = Command::new(binary())
        .args(["test-rules", "--json", "--rules"])
        .arg(setup.path("rules"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!("{}\n{}\n{}", noise_line(1), failed_line(2), failed_line(3));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        records.len(),
        2,
        "the last line has no newline and still counts"
    );
    assert_eq!(records[0]["line"], 2);
    assert_eq!(records[0]["rule"], "test.auth_failed");
    assert_eq!(records[0]["fields"]["user.name"], "user2");
    assert_eq!(records[1]["event"]["message"], failed_line(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Lines: 3 read, 2 matched"));
}

#[test]
fn bad_rules_exit_1_with_the_rule_named() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("rules/test.toml"),
        "[[rule]]\nid = \"x.bad\"\nregex = '(?P<a>['\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["test-rules", "--rules"])
        .arg(setup.path("rules"))
        .arg("/dev/null")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rule `x.bad`"));
}

#[test]
fn a_rule_a_client_could_steer_is_warned_about() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("rules/test.toml"),
        "[[rule]]\nid = \"x.steerable\"\nregex = 'ruser=(?P<user.name>.*?) rhost=(?P<source.ip>[0-9a-fA-F:.]+).*$'\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["test-rules", "--rules"])
        .arg(setup.path("rules"))
        .arg("/dev/null")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("rule `x.steerable`: a client-controlled capture before `source.ip` can hold a forged \" rhost=\" and address"),
        "{stderr}"
    );
}
