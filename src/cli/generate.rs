//! `tailhook generate`: shell completions and the man pages, rendered from the
//! same clap definitions that parse the command line, so they never drift
//! from it. Hidden from `--help`: packagers and `install.sh` call it.

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
    /// The man pages tailhook(1) and tailhook-COMMAND(1), written into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

pub fn write(what: Generate, out: &mut impl Write) -> anyhow::Result<()> {
    let mut command = Cli::command();
    match what {
        Generate::Completions { shell } => {
            clap_complete::generate(shell, &mut command, "tailhook", out)
        }
        Generate::Man { dir } => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(command, &dir)
                .map_err(|e| anyhow::anyhow!("{}: cannot write man pages: {e}", dir.display()))?;
        }
    }
    Ok(())
}
