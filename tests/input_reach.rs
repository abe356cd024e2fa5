//! Inputs that read nothing are visible: a path that matches no file (a
//! typo, a dangling symlink) and a log the agent's user may not read are
//! warned about by `check` (an error with `--strict`), logged once by `run`
//! with the fix, shown by `status` and counted by `/metrics` gauges.
//!
//! Root reads every file whatever its mode, so when the tests run as root
//! (as in CI) the agent runs as `nobody` through `setpriv`; otherwise a file
//! of mode 000 is unreadable to the test's own user.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// The command prefix under which `secret.log` cannot be read: none for a
/// user that is not root; `setpriv` to `nobody` for root. `None` (with a
/// note) when root has no setpriv, outside CI; under CI that fails.
fn unprivileged() -> Option<Vec<&'static str>> {
    if !is_root() {
        return Some(Vec::new());
    }
    if Path::new("/usr/bin/setpriv").exists() {
        return Some(vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "running as root needs /usr/bin/setpriv (util-linux) to run the agent as nobody"
    );
    eprintln!("skipped the unreadable-file part: root without setpriv cannot be kept from reading");
    None
}

/// A folder the unprivileged agent can work in: `auth.log` readable, a
/// `secret.log` it may not read, a `private` folder it may not list, a
/// dangling `gone.log` link, and a config whose input names those and a
/// glob over a folder that does not exist.
fn setup(receiver: &Receiver) -> (Setup, std::path::PathBuf) {
    let setup = Setup::new();
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(setup.dir.path(), 0o777);
    setup.append("auth.log", &[]);
    setup.append("secret.log", &[failed_line(1)]);
    mode(&setup.path("secret.log"), 0o000);
    std::os::unix::fs::symlink(setup.path("nowhere.log"), setup.path("gone.log")).unwrap();
    std::fs::create_dir(setup.path("private")).unwrap();
    setup.append("private/in.log", &[failed_line(3)]);
    // Enter, but not list: `private/*.log` cannot be expanded.
    mode(&setup.path("private"), 0o100);
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"\nmetrics_listen = \"127.0.0.1:0\"",
            input: "paths = [\"auth.log\", \"missing/*.log\", \"gone.log\", \"secret.log\", \"private/*.log\"]\nstart_at = \"beginning\"",
            // A second input, `web`, whose only path matches nothing.
            webhook: "batch_timeout = \"100ms\"\n[[input]]\nname = \"web\"\npaths = [\"nginx/*.log\"]",
        },
    );
    (setup, config)
}

/// Lets the temp folder be removed again.
fn open_private(setup: &Setup) {
    std::fs::set_permissions(
        setup.path("private"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

fn run_as(wrapper: &[&str], config: &Path, args: &[&str]) -> Output {
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(binary());
            command
        }
        None => Command::new(binary()),
    };
    command
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run tailhook")
}

#[test]
fn check_warns_about_input_paths_that_read_nothing_and_strict_refuses_them() {
    let receiver = Receiver::start(ReceiverOptions::default());
    let (setup, config) = setup(&receiver);
    let dir = setup.dir.path().display().to_string();
    let wrapper = unprivileged();

    let output = run_as(wrapper.as_deref().unwrap_or(&[]), &config, &["check"]);
    let said = text(&output);
    assert!(output.status.success(), "warnings only:\n{said}");
    for warning in [
        format!("note: input `auth`: path `{dir}/missing/*.log` matches no file (the input reads 1 file through its other paths)"),
        format!("note: input `auth`: path `{dir}/gone.log` matches no file (the input reads 1 file through its other paths)"),
        format!("warning: input `web`: path `{dir}/nginx/*.log` matches no file: the input reads nothing"),
    ] {
        assert!(said.contains(&warning), "{warning:?} missing in\n{said}");
    }
    assert!(
        !said.contains("auth.log`"),
        "a readable file is no warning:\n{said}"
    );
    if wrapper.is_some() {
        for path in ["secret.log", "private"] {
            let unreadable =
                format!("warning: input `auth`: `{dir}/{path}` cannot be read: Permission denied");
            assert!(
                said.contains(&unreadable),
                "{unreadable:?} missing in\n{said}"
            );
        }
        assert!(said.contains("usermod -aG adm tailhook"), "{said}");
        assert!(
            said.contains(&format!("setfacl -m u:tailhook:r {dir}/secret.log")),
            "{said}"
        );
    }

    let strict = run_as(
        wrapper.as_deref().unwrap_or(&[]),
        &config,
        &["check", "--strict"],
    );
    let said = text(&strict);
    assert_eq!(strict.status.code(), Some(1), "{said}");
    assert!(
        said.contains("--strict") && said.contains(&format!("{dir}/nginx/*.log")),
        "{said}"
    );

    // A path that matches nothing beside one that reads is a note, which
    // --strict lets pass: /var/log/secure beside /var/log/auth.log.
    let alternatives = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            input: "paths = [\"auth.log\", \"missing/*.log\"]",
            ..ConfigKeys::default()
        },
    );
    let passed = run_as(&[], &alternatives, &["check", "--strict"]);
    let said = text(&passed);
    assert!(passed.status.success(), "{said}");
    assert!(said.contains("note: input `auth`: path"), "{said}");
    open_private(&setup);
}

#[test]
fn run_logs_status_shows_and_metrics_count_what_an_input_cannot_read() {
    let Some(wrapper) = unprivileged() else {
        return;
    };
    let receiver = Receiver::start(ReceiverOptions::default());
    let (setup, config) = setup(&receiver);
    let dir = setup.dir.path().display().to_string();
    let agent = Agent::start_wrapped(&config, &wrapper);
    let port = agent.metrics_port(DEADLINE);
    agent.wait_for_log("matches no file", DEADLINE);
    setup.append("auth.log", &[failed_line(2)]);
    receiver.wait_for_events(1, DEADLINE);
    assert_eq!(
        sequences(&receiver.events()),
        [2],
        "the readable file is tailed"
    );
    let logs = agent.logs();
    assert_eq!(
        logs.matches("setfacl -m u:tailhook:r").count(),
        2,
        "the fix is logged once for each of the two paths:\n{logs}"
    );
    assert_eq!(logs.matches("matches no file").count(), 3, "{logs}");

    let status = status_json(&config);
    let reach = &status["inputs"][0]["reach"];
    assert_eq!(reach["readable_files"], 1, "{status}");
    assert_eq!(
        reach["unmatched"],
        serde_json::json!([format!("{dir}/missing/*.log"), format!("{dir}/gone.log")]),
        "{status}"
    );
    assert_eq!(reach["unreadable"][0]["path"], format!("{dir}/private"));
    assert_eq!(reach["unreadable"][1]["path"], format!("{dir}/secret.log"));
    let table = text(&tailhook(&config, &["status"]));
    assert!(
        table.contains(&format!(
            "warning: input `auth`: `{dir}/secret.log` cannot be read"
        )),
        "{table}"
    );

    let metrics = http_get(port, "/metrics").unwrap().1;
    for (series, value) in [
        ("tailhook_input_files{input=\"auth\"}", 1.0),
        ("tailhook_input_unreadable_paths{input=\"auth\"}", 2.0),
        ("tailhook_input_unmatched_paths{input=\"auth\"}", 2.0),
        ("tailhook_input_files{input=\"web\"}", 0.0),
        ("tailhook_input_unmatched_paths{input=\"web\"}", 1.0),
    ] {
        assert_eq!(sample(&metrics, series), value, "{series}");
    }

    // Made readable, the gauges say so and its line is read.
    std::fs::set_permissions(
        setup.path("secret.log"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    receiver.wait_for_events(2, DEADLINE);
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        sample(&metrics, "tailhook_input_unreadable_paths{input=\"auth\"}"),
        1.0,
        "only the private folder is left"
    );
    assert_eq!(
        sample(&metrics, "tailhook_input_files{input=\"auth\"}"),
        2.0
    );
    open_private(&setup);
}
