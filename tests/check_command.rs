//! `tailhook check`: exit 0 with a summary, or exit 1 with an
//! error that names the file, line, rule or key, like `nginx -t`.

mod support;

use std::process::Command;

use support::*;

fn check(config: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `check` exits with on a config or rules error, like `nginx -t`
/// (`run` exits 78 instead, for systemd).
const CONFIG_ERROR: i32 = 1;

const CONFIG: &str = r#"
[rules]
paths = ["rules"]
[[input]]
name = "auth"
paths = ["auth.log"]
[webhook.soc]
url = "https://example.test/webhooks/1?api_key=hunter2"
preset = "securex"
"#;

#[test]
fn valid_config_passes_with_a_summary() {
    let setup = Setup::new();
    let (code, stdout, stderr) = check(&setup.write_config(CONFIG));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "OK: 1 input(s), 1 webhook(s), 1 rule(s) from 1 file(s), 1 example(s) passed"
        ),
        "{stdout}"
    );
}

#[test]
fn shipped_rules_and_configs_pass() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, stdout, stderr) = check(std::path::Path::new(&format!(
        "{root}/config/quickstart.toml"
    )));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");

    // The production config, with its secret from the environment and the
    // rules folder overridden the way an administrator would.
    let out = Command::new(binary())
        .args(["check", "-c", &format!("{root}/config/tailhook.toml")])
        .env(
            "SOC_WEBHOOK_URL",
            "https://securex-ao.us.security.cisco.com/webhooks/01X?api_key=hunter2",
        )
        .env("TAILHOOK_RULES__PATHS", format!("[\"{root}/rules\"]"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn bad_regex_names_the_file_line_rule_and_position() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("rules/test.toml"),
        "[[rule]]\nid = \"sshd.broken\"\nregex = 'Failed (?P<user.name>\\S+ from (?P<source.ip>\\S+)'\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&setup.write_config(CONFIG));
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    let expected = format!(
        "{}:3: rule `sshd.broken`: regex does not compile",
        setup
            .path("rules/test.toml")
            .canonicalize()
            .unwrap()
            .display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("unclosed group"), "{stderr}");
    assert!(stderr.contains("^"), "the position is marked: {stderr}");
}

#[test]
fn failing_example_is_reported_with_the_line() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("rules/test.toml"),
        TEST_RULES.replace("\"user.name\" = \"root\"", "\"user.name\" = \"admin\""),
    )
    .unwrap();
    let (code, _, stderr) = check(&setup.write_config(CONFIG));
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    assert!(
        stderr.contains("rule `test.auth_failed`: example 1 fields differ"),
        "{stderr}"
    );
    assert!(
        stderr.contains("seq=1 Failed password for root"),
        "{stderr}"
    );
}

#[test]
fn config_mistakes_name_the_key_and_never_the_secret() {
    let setup = Setup::new();
    let (code, _, stderr) = check(&setup.write_config(&CONFIG.replace("preset =", "presett =")));
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    assert!(stderr.contains("webhook.soc.presett"), "{stderr}");
    assert!(stderr.contains("tailhook.toml"), "{stderr}");

    let (code, _, stderr) =
        check(&setup.write_config(&CONFIG.replace("https://example.test", "https//example.test")));
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    assert!(stderr.contains("webhook.soc.url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let (code, _, stderr) = check(&setup.write_config(
        &CONFIG.replace("name = \"auth\"", "name = \"auth\"\nrules = [\"nginx.*\"]"),
    ));
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    assert!(
        stderr.contains("input `auth`") && stderr.contains("selects none"),
        "{stderr}"
    );

    let (code, _, stderr) = check(&setup.path("missing.toml"));
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn a_secret_every_user_can_read_is_warned_about_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let config = setup.write_config(CONFIG);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 0, "a warning, not an error: {stderr}");
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: webhook.soc.url holds the webhook's secret",
            config.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 640"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[test]
fn a_webhook_url_that_cannot_be_found_names_the_file_key_and_source() {
    let setup = Setup::new();
    let url_line = "url = \"https://example.test/webhooks/1?api_key=hunter2\"";
    // What a service sees when /etc/default/tailhook was never filled in.
    let config =
        setup.write_config(&CONFIG.replace(url_line, "url_env = \"TAILHOOK_TEST_NEVER_SET\""));
    let (code, _, stderr) = check(&config);
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:8:11: webhook.soc.url_env: environment variable `TAILHOOK_TEST_NEVER_SET` is not set",
            config.display()
        )),
        "{stderr}"
    );

    let config = setup.write_config(&CONFIG.replace(url_line, "url_file = \"soc.url\""));
    let (code, _, stderr) = check(&config);
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    let url_file = setup.dir.path().canonicalize().unwrap().join("soc.url");
    assert!(
        stderr.contains(&format!(
            "{}:8:12: webhook.soc.url_file: cannot read {}",
            config.display(),
            url_file.display()
        )),
        "{stderr}"
    );
}

/// Whether a line of `stderr` reports `problem` at `config`: the file, the
/// value's `:LINE:COLUMN` where the file holds the key, then the problem.
fn reports(stderr: &str, config: &std::path::Path, problem: &str) -> bool {
    let file = config.display().to_string();
    stderr.lines().any(|line| {
        let Some((_, after)) = line.split_once(file.as_str()) else {
            return false;
        };
        let after = after
            .strip_prefix(':')
            .and_then(|rest| {
                let (line, rest) = rest.split_once(':')?;
                let (column, rest) = rest.split_once(':')?;
                let numbers = [line, column]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                numbers.then(|| format!(":{rest}"))
            })
            .unwrap_or_else(|| after.to_string());
        after.starts_with(&format!(": {problem}"))
    })
}

/// The exit status of a refused config: `check` says 1, as `nginx -t`;
/// `run` says 78 (`EX_CONFIG`), which keeps systemd from restarting it.
fn refused_status(command: &str) -> i32 {
    if command == "run" {
        78
    } else {
        1
    }
}

/// `check` and `run` with `env` added: (exit code, stderr).
fn refused_by(command: &str, config: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(binary())
        .args([command, "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Settings that parse but cannot work: `check` and `run` both refuse
/// them, naming the file and the key, and never print the URL's secret.
#[test]
fn accepted_but_wrong_settings_are_refused_naming_the_file_and_key() {
    let setup = Setup::new();
    let url_line = "url = \"https://example.test/webhooks/1?api_key=hunter2\"";
    let cases: &[(&str, String, &str)] = &[
        (
            "a request timeout of zero",
            CONFIG.replace(url_line, &format!("{url_line}\nrequest_timeout = \"0s\"")),
            "webhook.soc.request_timeout: must be above zero",
        ),
        (
            "a retry delay of zero",
            CONFIG.replace(url_line, &format!("{url_line}\nmax_retry_delay = \"0ms\"")),
            "webhook.soc.max_retry_delay: must be above zero",
        ),
        (
            "a queue of zero bytes",
            CONFIG.replace(url_line, &format!("{url_line}\nmax_queue_bytes = 0")),
            "webhook.soc.max_queue_bytes: must be above zero",
        ),
        (
            "a poll interval of zero",
            format!("[agent]\npoll_interval = \"0s\"\n{CONFIG}"),
            "agent.poll_interval: must be above zero",
        ),
        (
            "a partial-line timeout of zero",
            CONFIG.replace(
                "paths = [\"auth.log\"]",
                "paths = [\"auth.log\"]\npartial_line_timeout = \"0s\"",
            ),
            "input[0].partial_line_timeout: must be above zero",
        ),
        (
            "user:password in the URL",
            CONFIG.replace(
                "https://example.test",
                "https://admin:s3cretpw@example.test",
            ),
            "webhook.soc.url: holds a user name or password",
        ),
        (
            "plain http to another host",
            CONFIG.replace("https://example.test", "http://example.test"),
            "webhook.soc.url: plain http:// to example.test would send the key in clear text",
        ),
        (
            "a webhook name that is a path",
            CONFIG.replace("[webhook.soc]", "[webhook.\"../../x\"]"),
            "webhook.../../x: a webhook name is letters, digits, `_` and `-` only",
        ),
        (
            "a CA file that is not one",
            CONFIG.replace(
                url_line,
                &format!("{url_line}\nca_file = \"rules/test.toml\""),
            ),
            "webhook.soc.ca_file: ",
        ),
    ];
    for (what, text, expected) in cases {
        let config = setup.write_config(text);
        for command in ["check", "run"] {
            let (code, stderr) = refused_by(command, &config, &[]);
            assert_eq!(code, refused_status(command), "{command}, {what}: {stderr}");
            assert!(
                reports(&stderr, &config, expected),
                "{command}, {what}: {stderr}"
            );
            for secret in ["hunter2", "s3cretpw"] {
                assert!(!stderr.contains(secret), "{command}, {what}: {stderr}");
            }
        }
    }
    let shown = setup
        .path("rules/test.toml")
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let (_, stderr) = refused_by("check", &setup.write_config(&cases[8].1), &[]);
    assert!(
        stderr.contains(&format!("{shown}: holds no PEM certificate")),
        "the CA file is named: {stderr}"
    );

    // An empty override would otherwise become the config's own folder.
    let config = setup.write_config(CONFIG);
    for command in ["check", "run"] {
        let (code, stderr) = refused_by(command, &config, &[("TAILHOOK_AGENT__STATE_DIR", "")]);
        assert_eq!(code, refused_status(command), "{command}: {stderr}");
        assert!(
            reports(&stderr, &config, "agent.state_dir: is empty"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn plain_http_is_allowed_on_loopback_or_when_asked_for() {
    let setup = Setup::new();
    for (url, extra) in [
        ("http://127.0.0.1:9/x?api_key=hunter2", ""),
        ("http://[::1]:9/x?api_key=hunter2", ""),
        ("http://localhost:9/x?api_key=hunter2", ""),
        (
            "http://siem.internal/x?api_key=hunter2",
            "allow_insecure_http = true",
        ),
    ] {
        let config = setup.write_config(&CONFIG.replace(
            "https://example.test/webhooks/1?api_key=hunter2\"",
            &format!("{url}\"\n{extra}"),
        ));
        let (code, _, stderr) = check(&config);
        assert_eq!(code, 0, "{url}: {stderr}");
    }
}

/// One URL per `url_file`: a trailing newline and spaces are trimmed, a
/// second line or a space inside is refused without showing the URL.
#[test]
fn a_url_file_holds_exactly_one_url() {
    let setup = Setup::new();
    let config = setup.write_config(&CONFIG.replace(
        "url = \"https://example.test/webhooks/1?api_key=hunter2\"",
        "url_file = \"soc.url\"",
    ));
    let url_file = setup.dir.path().canonicalize().unwrap().join("soc.url");
    let url = "https://example.test/webhooks/1?api_key=hunter2";
    std::fs::write(&url_file, format!("  {url}  \n\n")).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 0, "{stderr}");

    for (contents, problem) in [
        (
            format!("{url}\nhttps://other.test/x?api_key=hunter3\n"),
            "holds 2 lines; give exactly one URL",
        ),
        (
            format!("{url} https://other.test/x?api_key=hunter3"),
            "holds whitespace inside the URL",
        ),
        (
            "https://example.test/web hooks/1?api_key=hunter2".to_string(),
            "holds whitespace inside the URL",
        ),
    ] {
        std::fs::write(&url_file, &contents).unwrap();
        let (code, _, stderr) = check(&config);
        assert_eq!(code, 1, "{contents:?}: {stderr}");
        assert!(
            reports(
                &stderr,
                &config,
                &format!("webhook.soc.url_file: {}: {problem}", url_file.display())
            ),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter"), "{stderr}");
        assert!(!stderr.contains("example.test"), "{stderr}");
    }
}

#[test]
fn a_rule_a_client_could_steer_is_warned_about_and_still_passes() {
    let setup = Setup::new();
    // Issue 12's sshd.auth_failed: the user name can hold " from ADDRESS",
    // and `(?:: .*)?$` after the address takes sshd's own address in.
    std::fs::write(
        setup.path("rules/test.toml"),
        "[[rule]]\nid = \"t.steerable\"\nregex = 'Failed password for (?P<user.name>.*?) from (?P<source.ip>[0-9a-fA-F:.]+)(?: port \\d+)?(?: ssh2)?(?:: .*)?$'\ntypes = { \"source.ip\" = \"ip\" }\n\n[[rule.example]]\nline = \"Failed password for root from 192.0.2.1 port 22 ssh2\"\nfields = { \"user.name\" = \"root\", \"source.ip\" = \"192.0.2.1\" }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check(&setup.write_config(CONFIG));
    assert_eq!(code, 0, "a warning does not fail check: {stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    let expected = format!(
        "warning: {}:1: rule `t.steerable`: a client-controlled capture before `source.ip` can hold a forged \" from \" and address",
        setup
            .path("rules/test.toml")
            .canonicalize()
            .unwrap()
            .display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_config_error_is_printed_once_at_file_line_column_with_a_suggestion() {
    let setup = Setup::new();
    for (mistake, fixed, key, suggestion) in [
        (
            "[agent]\nstat_dir = \"state\"\n",
            2,
            "agent.stat_dir",
            "state_dir",
        ),
        (
            "[webhook.soc]\nurl = \"-\"\n  rate_limit = [\"5/1m\"]\n",
            3,
            "webhook.soc.rate_limit",
            "rate_limits",
        ),
    ] {
        let config = setup.write_config(mistake);
        let (code, stdout, stderr) = check(&config);
        assert_eq!(code, CONFIG_ERROR, "{stderr}");
        assert_eq!(stdout, "");
        let column = if fixed == 3 { 3 } else { 1 };
        let field = key.rsplit('.').next().unwrap();
        assert_eq!(
            stderr,
            format!(
                "tailhook: error: {}:{fixed}:{column}: {key}: unknown key `{field}`; did you mean `{suggestion}`?\n",
                config.display()
            )
        );
    }
    let config = setup.write_config("[agent]\nstate_dir = 5\n");
    let (code, _, stderr) = check(&config);
    assert_eq!(code, CONFIG_ERROR, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "tailhook: error: {}:2:13: agent.state_dir: invalid type: found signed int `5`, expected path string\n",
            config.display()
        )
    );
    let config = setup.write_config("[agent\n");
    let (_, _, stderr) = check(&config);
    assert_eq!(
        stderr,
        format!(
            "tailhook: error: {}:1:7: invalid table header; expected `.`, `]`\n",
            config.display()
        )
    );
}
