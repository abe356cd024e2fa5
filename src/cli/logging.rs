//! Where log lines go and how they look. Logs go to stderr, so the stdout
//! sink (`url = "-"`) carries bodies only; `TAILHOOK_LOG` takes `tracing`
//! filter directives (default `info`).

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Time, level, message and fields; colours on a terminal.
    Human,
    /// For the systemd journal: a `<N>` priority prefix journald reads as the
    /// line's level, no colours, no time (the journal stamps every line).
    Journald,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields, for log shippers.
    Json,
}

impl LogFormat {
    /// `journald` when stderr is the journal (systemd says so in
    /// `$JOURNAL_STREAM`), else `human`.
    pub fn detect() -> LogFormat {
        if stderr_is_journal() {
            LogFormat::Journald
        } else {
            LogFormat::Human
        }
    }
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TAILHOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Journald => builder
            .with_ansi(false)
            .event_format(JournaldFormat(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// `$JOURNAL_STREAM` is `DEVICE:INODE` of the stream systemd connected to
/// stderr; it only counts if stderr is still that stream (not redirected by a
/// wrapper script).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}

/// The plain format behind a syslog priority, as sd-daemon(3) describes.
struct JournaldFormat(Format<Full, ()>);

impl<S, N> FormatEvent<S, N> for JournaldFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
