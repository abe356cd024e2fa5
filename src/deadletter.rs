//! Dead letters: the batches a webhook rejected (a 4xx other than 408, 413
//! and 429), kept in `<state_dir>/dead-letter/<webhook>.jsonl`, one JSON
//! object a line, for `tailhook dead-letter list` and `replay`.
//!
//! A replay claims the file by renaming it (so the agent's next rejection
//! starts a new one, and two replays cannot both take it), queues its events
//! again, then moves it to `dead-letter/replayed/`: a second replay finds
//! nothing to queue twice. The rename and the agent's appends take one lock,
//! so no rejected batch lands in a file already claimed.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventJson};
use crate::queue::Queue;

/// Held by an append to a dead-letter file and by a claim of one.
static FILES: Mutex<()> = Mutex::new(());

/// One rejected batch as the dead-letter file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was rejected (RFC 3339, UTC).
    pub time: String,
    pub webhook: String,
    /// The receiver's status; `None` when the agent refused it itself (an
    /// event too large for `max_body_bytes`).
    pub status: Option<u16>,
    /// Why; the receiver's answer, with the URL's secrets scrubbed when it
    /// was written.
    pub reason: String,
    pub events: Vec<Event>,
}

impl DeadLetter {
    /// The distinct rule ids of its events, in first-seen order.
    pub fn rules(&self) -> Vec<&str> {
        let mut rules: Vec<&str> = Vec::new();
        for event in &self.events {
            if !rules.contains(&event.rule.as_str()) {
                rules.push(&event.rule);
            }
        }
        rules
    }
}

/// What a replay queued again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    pub batches: usize,
    pub events: usize,
}

/// Where a webhook's rejected batches are kept.
pub fn dead_letter_file(state_dir: &Path, webhook: &str) -> PathBuf {
    state_dir
        .join("dead-letter")
        .join(format!("{webhook}.jsonl"))
}

/// Appends one record to `file` durably, creating it (and its folder) private.
pub fn append(file: &Path, record: &[u8]) -> std::io::Result<()> {
    let _claims_wait = FILES.lock().expect("dead-letter files");
    if let Some(folder) = file.parent() {
        crate::private::create_dir_all(folder)?;
    }
    let mut out = crate::private::open_options()
        .create(true)
        .append(true)
        .open(file)?;
    out.write_all(record)?;
    out.sync_data()
}

/// The webhook's dead letters, oldest first; none when it has no file.
pub fn list(state_dir: &Path, webhook: &str) -> Result<Vec<DeadLetter>, String> {
    read(&dead_letter_file(state_dir, webhook))
}

fn read(path: &Path) -> Result<Vec<DeadLetter>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut letters = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        letters.push(serde_json::from_str(&line).map_err(|e| {
            format!(
                "{}:{}: not a dead-letter record: {e}",
                path.display(),
                index + 1
            )
        })?);
    }
    Ok(letters)
}

/// Queues the webhook's dead letters again on `lane` of `queue`, where they
/// go through the same limits as any event, and moves the file to
/// `dead-letter/replayed/`. A file that cannot be read or queued is put back.
pub fn replay(
    state_dir: &Path,
    webhook: &str,
    queue: &Queue,
    lane: usize,
) -> Result<Replayed, String> {
    let file = dead_letter_file(state_dir, webhook);
    let claimed = file.with_extension("replaying");
    {
        let _no_appends = FILES.lock().expect("dead-letter files");
        // A claim left by a replay that was killed comes first: its
        // events were either never queued or are deduplicated by nothing, so
        // the operator decides; refuse rather than guess.
        if claimed.exists() {
            return Err(format!(
                "{}: an earlier replay was interrupted; check whether its events arrived, then remove it or rename it back to {}",
                claimed.display(),
                file.display()
            ));
        }
        match std::fs::rename(&file, &claimed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replayed::default()),
            Err(e) => return Err(format!("{}: cannot claim it: {e}", file.display())),
        }
    }
    // Put back unless the agent started a new file meanwhile (which a
    // rename would overwrite): then the claim stays, and the error says so.
    let put_back = |why: String| -> String {
        let _no_appends = FILES.lock().expect("dead-letter files");
        if file.exists() {
            return format!("{why}; the batches stay in {}", claimed.display());
        }
        match std::fs::rename(&claimed, &file) {
            Ok(()) => why,
            Err(e) => format!("{why}; and {} cannot be put back: {e}", claimed.display()),
        }
    };
    let letters = read(&claimed).map_err(put_back)?;
    let mut replayed = Replayed::default();
    for letter in &letters {
        let events: Vec<(usize, EventJson)> = letter
            .events
            .iter()
            .map(|event| (lane, EventJson::of(event)))
            .collect();
        if let Err(e) = queue.requeue(&events) {
            let why = format!("cannot queue the dead letters again: {e}");
            return Err(if replayed.batches == 0 {
                put_back(why)
            } else {
                format!(
                    "{why}; {} of {} batches were queued again, and {} keeps them all: remove the first {} lines of it before replaying the rest",
                    replayed.batches,
                    letters.len(),
                    claimed.display(),
                    replayed.batches
                )
            });
        }
        replayed.batches += 1;
        replayed.events += events.len();
    }
    let done = state_dir.join("dead-letter").join("replayed");
    crate::private::create_dir_all(&done)
        .map_err(|e| format!("{}: cannot create it: {e}", done.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let kept = done.join(format!("{webhook}.{stamp}.jsonl"));
    std::fs::rename(&claimed, &kept).map_err(|e| {
        format!(
            "{}: queued again, but cannot be moved to {}: {e}; remove it before the next replay",
            claimed.display(),
            kept.display()
        )
    })?;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever a dead-letter file holds, reading it never panics, and
        /// a line that is no record is named by file and line.
        #[test]
        fn any_file_content_is_read_or_refused_with_its_line(lines in proptest::collection::vec(".*", 0..5)) {
            let dir = tempfile::tempdir().unwrap();
            let file = dead_letter_file(dir.path(), "soc");
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, lines.join("\n")).unwrap();
            match list(dir.path(), "soc") {
                Ok(letters) => prop_assert!(letters.len() <= lines.len()),
                Err(e) => prop_assert!(e.starts_with(&format!("{}:", file.display())), "{}", e),
            }
        }
    }

    #[test]
    fn a_replay_queues_every_event_once_and_a_second_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(
            dir.path(),
            &[crate::queue::LaneLimits::pausing("soc", 1_000_000)],
        )
        .unwrap();
        let events: Vec<Arc<Event>> = (0..3)
            .map(|i| Arc::new(Event::sample(&format!("e{i}"), "m")))
            .collect();
        // Queued (and so remembered) once already, as rejected events were.
        queue
            .append_events(&events.iter().map(|e| (0, e.clone())).collect::<Vec<_>>())
            .unwrap();
        let seqs: Vec<u64> = queue
            .read(0, 0, 10)
            .unwrap()
            .iter()
            .map(|q| q.seq)
            .collect();
        queue.remove(0, &seqs).unwrap();
        let letter = DeadLetter {
            time: "2026-11-22T10:00:01Z".into(),
            webhook: "soc".into(),
            status: Some(400),
            reason: "400 Bad Request".into(),
            events: events.iter().map(|e| (**e).clone()).collect(),
        };
        let mut line = serde_json::to_vec(&letter).unwrap();
        line.push(b'\n');
        append(&dead_letter_file(dir.path(), "soc"), &line).unwrap();
        assert_eq!(list(dir.path(), "soc").unwrap(), [letter]);

        let replayed = replay(dir.path(), "soc", &queue, 0).unwrap();
        assert_eq!(
            replayed,
            Replayed {
                batches: 1,
                events: 3
            }
        );
        let ids: Vec<String> = queue
            .read(0, 0, 10)
            .unwrap()
            .iter()
            .map(|q| q.id().to_string())
            .collect();
        assert_eq!(ids, ["e0", "e1", "e2"]);
        assert_eq!(
            replay(dir.path(), "soc", &queue, 0).unwrap(),
            Replayed::default()
        );
        assert!(list(dir.path(), "soc").unwrap().is_empty());
    }
}
