//! The standard `process_*` metrics of the agent itself, read from /proc at
//! scrape time, as Prometheus' own client libraries export them.

/// Clock ticks per second of /proc's times: USER_HZ, which the kernel's ABI
/// fixes at 100 whatever its internal HZ.
const TICKS_PER_SECOND: f64 = 100.0;

/// The agent's process figures; a figure /proc does not give is left out.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    pub fn read() -> ProcessFigures {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let system = std::fs::read_to_string("/proc/stat").ok();
        let stat_fields = stat.as_deref().map(fields_after_name).unwrap_or_default();
        let ticks = |index: usize| -> Option<f64> { stat_fields.get(index)?.parse().ok() };
        ProcessFigures {
            // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
            cpu_seconds: ticks(11)
                .zip(ticks(12))
                .map(|(user, system)| (user + system) / TICKS_PER_SECOND),
            resident_bytes: status.as_deref().and_then(resident_bytes),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as f64),
            // starttime (field 22) counts ticks since boot; btime is the boot's Unix time.
            start_time_seconds: system
                .as_deref()
                .and_then(boot_time)
                .zip(ticks(19))
                .map(|(boot, since_boot)| boot + since_boot / TICKS_PER_SECOND),
        }
    }
}

/// The fields of `/proc/self/stat` after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn fields_after_name(stat: &str) -> Vec<&str> {
    stat.rfind(')')
        .map(|end| stat[end + 1..].split_whitespace().collect())
        .unwrap_or_default()
}

/// `VmRSS:   1234 kB` of `/proc/self/status`, in bytes.
fn resident_bytes(status: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: f64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024.0)
}

/// `btime SECONDS` of `/proc/stat`.
fn boot_time(system: &str) -> Option<f64> {
    system
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn this_process_has_every_figure() {
        let figures = ProcessFigures::read();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(figures.cpu_seconds.is_some_and(|s| s >= 0.0), "{figures:?}");
        assert!(
            figures.resident_bytes.is_some_and(|b| b > 0.0),
            "{figures:?}"
        );
        assert!(figures.open_fds.is_some_and(|n| n >= 3.0), "{figures:?}");
        // Started before now, and not before the tests were built (a day is plenty).
        let start = figures.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0";
        let fields = fields_after_name(stat);
        assert_eq!(fields[0], "S");
        assert_eq!((fields[11], fields[12]), ("250", "50"));
    }

    proptest! {
        #[test]
        fn arbitrary_proc_text_never_panics(text in ".*") {
            let _ = fields_after_name(&text);
            let _ = resident_bytes(&text);
            let _ = boot_time(&text);
        }
    }
}
