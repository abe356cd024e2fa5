//! Command line: parses arguments and runs one command. Each command is a thin
//! layer over the pipeline; nothing here knows how a stage works.

mod dead_letter;
mod generate;
mod logging;
mod send;
mod status;
mod tap;
mod test_rules;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{AgentConfig, Config, DEFAULT_CONFIG_PATH};
use crate::pipeline::Pipeline;
use crate::systemd::Notifier;
use crate::tail::Severity;
use logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "tailhook",
    version,
    about = "Tails security logs and pushes rule matches to webhooks, within their limits"
)]
struct Cli {
    /// Log line format [default: journald when stderr is the systemd journal, else human].
    #[arg(long, global = true, value_enum, env = "TAILHOOK_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run(ConfigArg),
    /// Validate the config and rules, compile every regex, run every rule's examples;
    /// warn about rules a client could steer into reporting a forged address.
    Check(CheckArgs),
    /// Run the rules over lines and show every match, its fields and event, and a summary.
    TestRules(TestRulesArgs),
    /// Send one manual trigger through a webhook's limits, headers and retries.
    Send(SendArgs),
    /// Show per input the files, offsets and lag; per webhook the queue,
    /// budget, last error and dead letters. Works whether the agent runs or not.
    Status(StatusArgs),
    /// The last events the running agent queued or sent, with their outcome
    /// (waiting, sent, dead-lettered); live with --follow.
    Tap(TapArgs),
    /// Show, or queue again through the same limits, what a webhook rejected.
    DeadLetter(DeadLetterArgs),
    /// Write shell completions on stdout, or the man pages into a folder (for packagers).
    #[command(hide = true, subcommand)]
    Generate(generate::Generate),
    /// The configured webhook names, one a line, for shell completion of --webhook.
    #[command(hide = true)]
    CompletionsWebhooks(ConfigArg),
}

#[derive(Args)]
struct SendArgs {
    /// Config file.
    #[arg(short = 'c', long = "config", env = "TAILHOOK_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// The webhook's name (its [webhook.NAME] section).
    #[arg(long)]
    webhook: String,
    /// A JSON object: the event's fields, e.g. '{"source.ip": "203.0.113.7"}'
    /// (without --data or --data-file: an event without fields).
    #[arg(long, value_name = "JSON", conflicts_with = "data_file")]
    data: Option<String>,
    /// A file holding the JSON object of --data.
    #[arg(long = "data-file", value_name = "F")]
    data_file: Option<PathBuf>,
    /// Longest time to spend, waiting for rate-limit budget and retries
    /// included; a send that cannot finish by then fails and says why.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct StatusArgs {
    /// Config file.
    #[arg(short = 'c', long = "config", env = "TAILHOOK_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// One JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TapArgs {
    /// Config file.
    #[arg(short = 'c', long = "config", env = "TAILHOOK_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Only the events of this webhook (its [webhook.NAME] section).
    #[arg(long)]
    webhook: Option<String>,
    /// How many of the last events to show.
    #[arg(short = 'n', long = "count", default_value_t = 20,
          value_parser = clap::value_parser!(u16).range(1..=crate::tap::CAPACITY as i64))]
    count: u16,
    /// Keep printing events and outcomes as they happen, until interrupted.
    #[arg(long)]
    follow: bool,
    /// One JSON object per event.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DeadLetterArgs {
    /// Config file.
    #[arg(short = 'c', long = "config", env = "TAILHOOK_CONFIG", default_value = DEFAULT_CONFIG_PATH, global = true)]
    config: PathBuf,
    #[command(subcommand)]
    action: DeadLetterAction,
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Each rejected batch: time, status, reason, event count and rule ids.
    List {
        /// The webhook's name (its [webhook.NAME] section).
        #[arg(long)]
        webhook: String,
        /// One JSON object per batch.
        #[arg(long)]
        json: bool,
    },
    /// Queue the rejected events again (through the running agent, or into
    /// the state for its next run); the file moves to dead-letter/replayed/.
    Replay {
        /// The webhook's name (its [webhook.NAME] section).
        #[arg(long)]
        webhook: String,
    },
}

#[derive(Args)]
struct TestRulesArgs {
    /// Config file whose `rules.paths` are used when no --rules is given.
    #[arg(short = 'c', long = "config", env = "TAILHOOK_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// A rule file or folder (repeatable); replaces the config's rules.
    #[arg(long = "rules", value_name = "PATH")]
    rules: Vec<PathBuf>,
    /// One JSON object per matched line on stdout; the summary on stderr.
    #[arg(long)]
    json: bool,
    /// Entries recorded with `journalctl --output=json > FILE` (repeatable),
    /// read as a journald input reads the journal.
    #[arg(long = "journal-json", value_name = "FILE")]
    journal_json: Vec<PathBuf>,
    /// Apply `threshold` and `suppress` by each line's own time, to see
    /// which events a replayed log would have sent.
    #[arg(long)]
    thresholds: bool,
    /// Apply this input of the config: its rule selection and its
    /// `timezone` (without it: every rule, the host's zone).
    #[arg(long = "input", value_name = "NAME")]
    input: Option<String>,
    /// Log files to read; `-`, or none and no --journal-json, reads stdin.
    #[arg(value_name = "FILE")]
    inputs: Vec<String>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also run the journald inputs' rules over entries recorded with
    /// `journalctl --output=json > FILE` (repeatable) and show what matched.
    #[arg(long = "journal-json", value_name = "FILE")]
    journal_json: Vec<PathBuf>,
    /// Fail (exit 1) when an input's path matches no file or cannot be
    /// read, instead of warning.
    #[arg(long)]
    strict: bool,
    /// Also connect to the fleet's Redis (`[fleet]`) and check that it
    /// answers; without it, `check` stays offline.
    #[arg(long)]
    online: bool,
}

#[derive(Args)]
struct ConfigArg {
    /// Config file.
    #[arg(short = 'c', long = "config", env = "TAILHOOK_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format.unwrap_or_else(LogFormat::detect));
    // `check` keeps nginx -t's contract (exit 1); only the service needs the
    // distinct code that systemd is told not to restart on.
    let config_error_code = match cli.command {
        Command::Run(_) => EXIT_CONFIG,
        _ => 1,
    };
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Check(args) => check(&args),
        Command::TestRules(args) => test_rules(args),
        Command::Generate(what) => generate::write(what, &mut std::io::stdout().lock()),
        Command::CompletionsWebhooks(args) => {
            generate::webhook_names(&args.config, &mut std::io::stdout().lock())
        }
        Command::Send(args) => send::send(&send::SendOptions {
            config: args.config,
            webhook: args.webhook,
            data: args.data,
            data_file: args.data_file,
            timeout: args.timeout,
        }),
        Command::Status(args) => status::status(&args.config, args.json),
        Command::Tap(args) => tap::tap(
            &args.config,
            &tap::TapOptions {
                webhook: args.webhook.as_deref(),
                count: usize::from(args.count),
                follow: args.follow,
                json: args.json,
            },
        ),
        Command::DeadLetter(args) => match args.action {
            DeadLetterAction::List { webhook, json } => {
                dead_letter::list(&args.config, &webhook, json)
            }
            DeadLetterAction::Replay { webhook } => dead_letter::replay(&args.config, &webhook),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `tailhook status --json | head`: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tailhook: error: {e:#}");
            if e.is::<InvalidConfig>() {
                ExitCode::from(config_error_code)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// sysexits.h's EX_CONFIG: the config or rules are wrong, so starting again
/// cannot help; the unit's `RestartPreventExitStatus=78` stops systemd from
/// restarting in a loop.
pub const EXIT_CONFIG: u8 = 78;

/// A config or rules problem found before the agent starts: `run` exits
/// with [`EXIT_CONFIG`] on it, `check` with 1.
#[derive(Debug)]
struct InvalidConfig(anyhow::Error);

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for InvalidConfig {}

/// Loads the config and builds the pipeline, as `run` and `check` both must.
fn validated_pipeline(config: &std::path::Path) -> anyhow::Result<Pipeline> {
    Config::load(config)
        .map_err(anyhow::Error::from)
        .and_then(Pipeline::build)
        .map_err(|e| InvalidConfig(e).into())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes command output to stdout; an error (a closed pipe) is returned,
/// where `print!` would panic.
pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let config = &args.config.config;
    let pipeline = validated_pipeline(config)?;
    for warning in pipeline.rule_warnings() {
        eprintln!("warning: {warning}");
    }
    let unread = pipeline.unread_paths();
    let warnings: Vec<&str> = unread
        .iter()
        .filter(|(severity, _)| *severity == Severity::Warning)
        .map(|(_, finding)| finding.as_str())
        .collect();
    if args.strict && !warnings.is_empty() {
        anyhow::bail!(
            "{}: --strict: {} input path(s) read nothing:\n  {}",
            config.display(),
            warnings.len(),
            warnings.join("\n  ")
        );
    }
    for (severity, finding) in &unread {
        eprintln!("{}: {finding}", severity.label());
    }
    for applied in pipeline.overrides_applied() {
        print_out(&format!("{applied}\n"))?;
    }
    for path in &args.journal_json {
        print_out(&pipeline.try_journal_entries(path)?)?;
    }
    for problem in pipeline.path_problems() {
        eprintln!("{}: warning: {problem}", config.display());
    }
    if let (true, Some(fleet)) = (args.online, pipeline.fleet()) {
        let version = crate::fleet::Fleet::reachable(fleet)
            .map_err(|e| anyhow::anyhow!("{}: fleet.redis_url: {e}", config.display()))?;
        print_out(&format!(
            "{}: fleet: Redis {version} at {} answers\n",
            config.display(),
            fleet.redis
        ))?;
    }
    print_out(&format!(
        "{}: OK: {}\n",
        config.display(),
        pipeline.summary()
    ))
}

fn test_rules(args: TestRulesArgs) -> anyhow::Result<()> {
    let config = if args.rules.is_empty() || args.input.is_some() {
        Some(Config::load(&args.config)?)
    } else {
        None
    };
    let input = match (&config, &args.input) {
        (Some(config), Some(name)) => Some((config, config.input(name)?)),
        _ => None,
    };
    let rule_paths = match &config {
        Some(config) if args.rules.is_empty() => config.rules.paths.clone(),
        _ => args.rules,
    };
    let clock = match input {
        Some((_, input)) => input.clock(),
        None => crate::rules::zone_named(None).map(crate::rules::LineClock::new),
    }
    .map_err(|problem| anyhow::anyhow!("timezone: {problem}"))?;
    test_rules::run(&test_rules::Options {
        rule_paths,
        selection: input.map(|(config, input)| {
            let label = format!("{}: input `{}`", config.source.display(), input.name);
            (label, input.rules.clone())
        }),
        clock,
        host: config.map_or_else(|| AgentConfig::default().host(), |c| c.host()),
        thresholds: args.thresholds,
        json: args.json,
        inputs: args.inputs,
        journal_json: args.journal_json,
    })
}

fn run(args: &ConfigArg) -> anyhow::Result<()> {
    let pipeline = validated_pipeline(&args.config)?;
    tracing::info!("{}", pipeline.summary());
    for applied in pipeline.overrides_applied() {
        tracing::info!("{applied}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let notifier =
        Notifier::from_env().map_err(|e| anyhow::anyhow!("$NOTIFY_SOCKET: cannot use it: {e}"))?;
    let config = args.config.clone();
    let reload = move || validated_pipeline(&config);
    let result = runtime.block_on(async {
        let (shutdown, reloads) = signals()?;
        pipeline.run(shutdown, reloads, reload, notifier).await
    });
    // Dropping a runtime waits for its blocking tasks without limit; one
    // stuck on a hung disk must not break the shutdown_timeout promise.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

/// Installs the handlers now, before any stage starts, so a signal that comes
/// early is a graceful stop rather than the default kill. SIGHUP never ends
/// the agent (its default action would, without a flush): it asks for a
/// reload, one message per signal on the returned receiver.
fn signals() -> std::io::Result<(
    impl std::future::Future<Output = ()>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let (ask, reloads) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = term.recv() => return tracing::info!("SIGTERM received"),
                _ = int.recv() => return tracing::info!("SIGINT received"),
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP received: reloading the configuration and rules");
                    let _ = ask.send(());
                }
            }
        }
    };
    Ok((shutdown, reloads))
}
