//! `tailhook generate`: shell completions and the man pages, rendered from the
//! same clap definitions that parse the command line, so they never drift
//! from it; the section-5 pages (config and rule files) are written by hand
//! in `packaging/man/` and embedded. Hidden from `--help`: packagers and
//! `install.sh` call it. The bash, zsh and fish completions ask the binary
//! itself (`tailhook completions-webhooks`) for the webhook names
//! `--webhook` takes.

use std::io::Write;

use clap::{CommandFactory, Subcommand};

use super::Cli;

#[derive(Subcommand)]
pub enum Generate {
    /// Completions for a shell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man pages tailhook(1), tailhook-COMMAND(1), tailhook.toml(5) and
    /// tailhook-rules(5), written into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

pub fn write(what: Generate, out: &mut impl Write) -> anyhow::Result<()> {
    let mut command = Cli::command();
    match what {
        Generate::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "tailhook", &mut script);
            let script = String::from_utf8(script)?;
            let script = match shell {
                clap_complete::Shell::Bash => script + BASH_WEBHOOK_NAMES,
                clap_complete::Shell::Zsh => zsh_with_webhook_names(&script)?,
                clap_complete::Shell::Fish => fish_with_webhook_names(&script)?,
                _ => script,
            };
            out.write_all(script.as_bytes())?;
        }
        Generate::Man { dir } => {
            let cannot = |e: std::io::Error| {
                anyhow::anyhow!("{}: cannot write man pages: {e}", dir.display())
            };
            std::fs::create_dir_all(&dir).map_err(cannot)?;
            clap_mangen::generate_to(command, &dir).map_err(cannot)?;
            for (name, page) in FILE_FORMAT_PAGES {
                std::fs::write(dir.join(name), page).map_err(cannot)?;
            }
        }
    }
    Ok(())
}

/// The section-5 pages: what the config and rule files hold.
const FILE_FORMAT_PAGES: [(&str, &str); 2] = [
    (
        "tailhook.toml.5",
        include_str!("../../packaging/man/tailhook.toml.5"),
    ),
    (
        "tailhook-rules.5",
        include_str!("../../packaging/man/tailhook-rules.5"),
    ),
];

/// Wraps clap's `_tailhook`: after `--webhook`, the names of the config's
/// webhooks (the config named by `-c`/`--config` on the line, else
/// `$TAILHOOK_CONFIG` or the default), asked of the binary being completed.
const BASH_WEBHOOK_NAMES: &str = r#"
_tailhook_webhooks() {
    local i
    local -a config=()
    for ((i = 1; i < COMP_CWORD - 1; i++)); do
        case "${COMP_WORDS[i]}" in
            -c | --config) config=(-c "${COMP_WORDS[i + 1]}") ;;
        esac
    done
    if [[ "${COMP_WORDS[COMP_CWORD - 1]}" == --webhook ]]; then
        local names
        names=$("${COMP_WORDS[0]}" completions-webhooks "${config[@]}" 2>/dev/null)
        COMPREPLY=($(compgen -W "$names" -- "${COMP_WORDS[COMP_CWORD]}"))
        return 0
    fi
    _tailhook "$@"
}
complete -F _tailhook_webhooks -o bashdefault -o default tailhook
"#;

/// clap's zsh script leaves `--webhook`'s value to `_default` (file names);
/// this hands it to `_tailhook_webhooks`. Inside a subcommand clap's script
/// has shifted `$words` (and dropped the options of the commands above), so
/// `_tailhook` keeps the line as typed for it (zsh's `local` is seen by the
/// functions it calls).
fn zsh_with_webhook_names(script: &str) -> anyhow::Result<String> {
    let script = replace_all(
        script,
        ":WEBHOOK:_default'",
        ":WEBHOOK:_tailhook_webhooks'",
        "zsh",
    )?;
    let script = replace_all(
        &script,
        "\n_tailhook() {\n",
        "\n_tailhook() {\n    local -a _tailhook_line=(\"${(@)words[1,CURRENT-1]}\")\n",
        "zsh",
    )?;
    replace_all(
        &script,
        "\nautoload -U is-at-least\n",
        ZSH_WEBHOOK_NAMES,
        "zsh",
    )
}

/// The names after `--webhook`, for the config named by `-c`/`--config` on
/// the line (else `$TAILHOOK_CONFIG` or the default).
const ZSH_WEBHOOK_NAMES: &str = r#"
autoload -U is-at-least

_tailhook_webhooks() {
    local -a config names
    local i
    for ((i = 2; i < ${#_tailhook_line}; i++)); do
        case ${_tailhook_line[i]} in
            (-c|--config) config=(-c "${_tailhook_line[i + 1]}") ;;
        esac
    done
    names=(${${(f)"$("${_tailhook_line[1]:-tailhook}" completions-webhooks "${config[@]}" 2>/dev/null)"}:#})
    compadd -a names
}
"#;

/// clap's fish script lets `--webhook` take any value; this adds the
/// configured names as its candidates (and no file names).
fn fish_with_webhook_names(script: &str) -> anyhow::Result<String> {
    let mut found = false;
    let mut out = String::with_capacity(script.len() + FISH_WEBHOOK_NAMES.len());
    for line in script.lines() {
        out.push_str(line);
        if line.starts_with("complete -c tailhook ")
            && line.contains(" -l webhook ")
            && line.ends_with(" -r")
        {
            out.push_str(" -f -a \"(__tailhook_webhooks)\"");
            found = true;
        }
        out.push('\n');
    }
    anyhow::ensure!(
        found,
        "fish completions: clap wrote no `-l webhook` option to complete"
    );
    Ok(out + FISH_WEBHOOK_NAMES)
}

/// The names after `--webhook`, for the config named by `-c`/`--config` on
/// the line (else `$TAILHOOK_CONFIG` or the default), asked of the binary
/// being completed.
const FISH_WEBHOOK_NAMES: &str = r#"
function __tailhook_webhooks
    set -l words (commandline -opc)
    set -l config
    for i in (seq 2 (math (count $words) - 1))
        if contains -- $words[$i] -c --config
            set config -c $words[(math $i + 1)]
        end
    end
    command -q $words[1]; and $words[1] completions-webhooks $config 2>/dev/null
end
"#;

/// `script` with every `from` replaced; an error if there is none, so a
/// change in clap_complete's output cannot silently drop the names.
fn replace_all(script: &str, from: &str, to: &str, shell: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        script.contains(from),
        "{shell} completions: clap's script no longer has {from:?} to hook the webhook names into"
    );
    Ok(script.replace(from, to))
}

/// `tailhook completions-webhooks`: the configured webhook names, one a line.
pub fn webhook_names(config: &std::path::Path, out: &mut impl Write) -> anyhow::Result<()> {
    let config = crate::config::Config::load(config)?;
    for name in config.webhooks.keys() {
        writeln!(out, "{name}")?;
    }
    Ok(())
}
