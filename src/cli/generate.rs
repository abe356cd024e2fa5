//! `tailhook generate`: shell completions and the man pages, rendered from the
//! same clap definitions that parse the command line, so they never drift
//! from it; the section-5 pages (config and rule files) are written by hand
//! in `packaging/man/` and embedded. Hidden from `--help`: packagers and
//! `install.sh` call it. The bash completion asks the binary itself
//! (`tailhook completions-webhooks`) for the webhook names `--webhook` takes.

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
            clap_complete::generate(shell, &mut command, "tailhook", out);
            if shell == clap_complete::Shell::Bash {
                out.write_all(BASH_WEBHOOK_NAMES.as_bytes())?;
            }
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

/// `tailhook completions-webhooks`: the configured webhook names, one a line.
pub fn webhook_names(config: &std::path::Path, out: &mut impl Write) -> anyhow::Result<()> {
    let config = crate::config::Config::load(config)?;
    for name in config.webhooks.keys() {
        writeln!(out, "{name}")?;
    }
    Ok(())
}
