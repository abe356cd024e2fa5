//! What a server gets: install.sh staged into a temp root (as an unprivileged
//! packager would, so nothing on this machine changes), the installed config
//! and rules passing `tailhook check`, and the hardened unit. The .deb and
//! .rpm are built and checked by packaging/check-packages.sh in CI; the
//! .deb maintainer scripts are run through install, enable, upgrade, remove
//! and purge by packaging/check-enable-state.sh, here and there.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn install_into(destdir: &Path) -> String {
    let out = Command::new(format!("{ROOT}/install.sh"))
        .args(["--prefix", "/opt/th", "--destdir"])
        .arg(destdir)
        .args(["--binary", binary()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "install.sh failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_sh_stages_the_whole_layout_and_keeps_local_changes() {
    let root = tempfile::tempdir().unwrap();
    let at = |p: &str| root.path().join(p);
    install_into(root.path());

    for (path, expected) in [
        ("opt/th/bin/tailhook", 0o755),
        ("opt/th/lib/tailhook/tailhook-setup", 0o755),
        ("etc/tailhook/tailhook.toml", 0o640),
        ("etc/tailhook/rules.d/sshd.toml", 0o644),
        ("etc/default/tailhook", 0o600),
        ("etc/systemd/system/tailhook.service", 0o644),
        ("opt/th/share/bash-completion/completions/tailhook", 0o644),
        ("opt/th/share/zsh/site-functions/_tailhook", 0o644),
        (
            "opt/th/share/fish/vendor_completions.d/tailhook.fish",
            0o644,
        ),
        ("opt/th/share/man/man1/tailhook.1.gz", 0o644),
        ("opt/th/share/man/man1/tailhook-run.1.gz", 0o644),
        ("opt/th/share/man/man5/tailhook.toml.5.gz", 0o644),
        ("opt/th/share/man/man5/tailhook-rules.5.gz", 0o644),
    ] {
        assert_eq!(mode(&at(path)), expected, "{path}");
    }
    let packs = std::fs::read_dir(format!("{ROOT}/rules")).unwrap().count();
    assert_eq!(
        std::fs::read_dir(at("etc/tailhook/rules.d"))
            .unwrap()
            .count(),
        packs
    );
    let unit = std::fs::read_to_string(at("etc/systemd/system/tailhook.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/th/bin/tailhook run -c /etc/tailhook/tailhook.toml"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/bin/tailhook"), "{unit}");

    // The installed config and rule packs work together where they landed.
    let out = Command::new(at("opt/th/bin/tailhook"))
        .arg("check")
        .arg("-c")
        .arg(at("etc/tailhook/tailhook.toml"))
        .env(
            "SOC_WEBHOOK_URL",
            "https://securex.test/webhooks/1?api_key=k",
        )
        .env(
            "TAILHOOK_RULES__PATHS",
            format!("[\"{}\"]", at("etc/tailhook/rules.d").display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Again: idempotent, nothing beside the files.
    let again = install_into(root.path());
    assert!(!again.contains("kept your"), "{again}");
    assert!(!at("etc/tailhook/tailhook.toml.new").exists());

    // A changed config and rule pack are kept; the shipped ones go beside.
    let config = at("etc/tailhook/tailhook.toml");
    let local = "# local settings\n";
    std::fs::write(&config, local).unwrap();
    std::fs::write(at("etc/tailhook/rules.d/sshd.toml"), local).unwrap();
    let third = install_into(root.path());
    assert!(third.contains("kept your"), "{third}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), local);
    assert_eq!(
        std::fs::read_to_string(at("etc/tailhook/rules.d/sshd.toml")).unwrap(),
        local
    );
    assert_eq!(
        std::fs::read(at("etc/tailhook/tailhook.toml.new")).unwrap(),
        std::fs::read(format!("{ROOT}/config/tailhook.toml")).unwrap()
    );
    assert!(at("etc/tailhook/rules.d/sshd.toml.new").exists());
}

#[test]
fn the_unit_runs_unprivileged_hardened_and_supervised() {
    let unit = std::fs::read_to_string(format!("{ROOT}/packaging/tailhook.service")).unwrap();
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for required in [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "User=tailhook",
        "Group=tailhook",
        "StateDirectory=tailhook",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "ExecStart=/usr/bin/tailhook run -c /etc/tailhook/tailhook.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
    ] {
        assert!(directives.contains(&required), "missing {required}");
    }
    // A group missing on the machine would stop the unit from starting.
    assert!(
        !directives
            .iter()
            .any(|d| d.starts_with("SupplementaryGroups=")),
        "log groups come from the user's memberships"
    );
    // The shipped config must fit the unit: state where StateDirectory= is
    // writable under ProtectSystem=strict, rules where the packages put them.
    let config = std::fs::read_to_string(format!("{ROOT}/config/tailhook.toml")).unwrap();
    assert!(config.contains("state_dir = \"/var/lib/tailhook\""));
    assert!(config.contains("paths = [\"/etc/tailhook/rules.d\"]"));
}

/// Whether this machine can run the maintainer-script check: root (for a
/// mount namespace), `unshare`, `deb-systemd-helper` and `systemctl`.
/// Outside CI a machine without them skips, saying so; under `CI=true` the
/// test fails instead.
fn can_run_enable_state_check() -> bool {
    let missing: Vec<&str> = ["unshare", "deb-systemd-helper", "systemctl"]
        .into_iter()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |out| !out.status.success())
        })
        .collect();
    let unshare_works = Command::new("unshare")
        .args(["--mount", "true"])
        .output()
        .is_ok_and(|out| out.status.success());
    if missing.is_empty() && unshare_works {
        return true;
    }
    let why = format!(
        "the enable-state check needs root with mount namespaces (unshare works: {unshare_works}) and {missing:?}"
    );
    missing_prerequisite(&why);
    false
}

#[test]
fn deb_scripts_keep_the_admins_enable_state_across_upgrade_reinstall_and_remove() {
    if !can_run_enable_state_check() {
        return;
    }
    let out = Command::new(format!("{ROOT}/packaging/check-enable-state.sh"))
        .arg(format!("{ROOT}/packaging/deb"))
        .arg(format!("{ROOT}/packaging/tailhook.service"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
