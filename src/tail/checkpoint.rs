//! Checkpoints: how far each followed file, and each journald input, has
//! been committed, on disk.
//!
//! An offset (a journal cursor) is committed only when every event from the
//! lines before it is in the durable queue (which keeps it until it is
//! delivered or dead-lettered), so a crash re-reads at most what was not yet
//! committed and loses nothing. The file is written
//! crash-consistently (temp file, fsync, rename, fsync of the folder) and is a
//! versioned document so later formats can read this one. A corrupt file is
//! set aside with a warning and tailing starts over from the config's
//! `start_at`, never a crash loop.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::file::FileId;

/// Bytes at the start of a file that identify it together with its inode: a
/// reused inode with other content is a new file. Shorter files use what they
/// have, and the fingerprint grows with them up to this size.
pub const FINGERPRINT_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub input: String,
    pub dev: u64,
    pub ino: u64,
    /// How many times the file was seen truncated in place; part of its
    /// events' ids. Absent in files written before it existed.
    #[serde(default)]
    pub generation: u64,
    pub fingerprint: Fingerprint,
    /// Last path the file was seen at; entries whose path is gone are dropped.
    pub path: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: usize,
    pub hash: u64,
}

impl Fingerprint {
    /// Of the first `FINGERPRINT_BYTES` (or fewer, when the file is shorter).
    pub fn of(file: &File) -> io::Result<Fingerprint> {
        Self::of_prefix(file, FINGERPRINT_BYTES)
    }

    fn of_prefix(file: &File, len: usize) -> io::Result<Fingerprint> {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(Fingerprint {
            len: filled,
            hash: xxhash_rust::xxh3::xxh3_64(&buf[..filled]),
        })
    }

    /// Whether `file` still starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        Ok(Self::of_prefix(file, self.len)? == *self)
    }
}

/// Where a journald input resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalCheckpoint {
    pub input: String,
    /// The cursor of the last entry whose events are queued; `None` when the
    /// input started on a journal with no entry for it yet, so it resumes at
    /// the journal's beginning.
    pub cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum Stored {
    #[serde(rename = "1")]
    V1 {
        files: Vec<Checkpoint>,
        /// Absent in files written before journald inputs existed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        journals: Vec<JournalCheckpoint>,
    },
}

pub struct CheckpointStore {
    path: PathBuf,
    /// Whether a checkpoint file was found: if not, this is the first start.
    pub existed: bool,
    loaded: BTreeMap<(String, FileId), Checkpoint>,
    journals: Vec<JournalCheckpoint>,
    last_saved: (Vec<Checkpoint>, Vec<JournalCheckpoint>),
}

impl CheckpointStore {
    /// Loads `checkpoints.json` from `state_dir`. Only a missing file is a
    /// first start, and only a file that reads but does not parse is set
    /// aside: any other error (permissions, I/O, a folder in its place) is
    /// returned, because starting over would skip or repeat logs and then
    /// overwrite a file that may be perfectly valid.
    pub fn open(state_dir: &Path) -> Result<CheckpointStore, String> {
        let path = state_dir.join("checkpoints.json");
        let mut store = CheckpointStore {
            path: path.clone(),
            existed: false,
            loaded: BTreeMap::new(),
            journals: Vec::new(),
            last_saved: (Vec::new(), Vec::new()),
        };
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(store),
            Err(e) => {
                return Err(format!(
                    "{}: cannot read checkpoints: {e}; not starting, since starting without them would skip or repeat log lines and overwrite the file",
                    path.display()
                ))
            }
        };
        store.existed = true;
        match parse(&text) {
            Ok((files, journals)) => {
                store.last_saved = (files.clone(), journals.clone());
                store.journals = journals;
                store.loaded = files
                    .into_iter()
                    .map(|c| {
                        (
                            (
                                c.input.clone(),
                                FileId {
                                    dev: c.dev,
                                    ino: c.ino,
                                },
                            ),
                            c,
                        )
                    })
                    .collect();
            }
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                let _ = std::fs::rename(&path, &aside);
                tracing::warn!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "checkpoint file is corrupt; set it aside and starting as on a first start"
                );
                store.existed = false;
            }
        }
        Ok(store)
    }

    /// The checkpoint recorded for this input's file, taken out of the store.
    pub fn claim(&mut self, input: &str, id: FileId) -> Option<Checkpoint> {
        self.loaded.remove(&(input.to_string(), id))
    }

    /// Whether a checkpoint is recorded (and not claimed yet) for this file.
    pub fn holds(&self, input: &str, id: FileId) -> bool {
        self.loaded.contains_key(&(input.to_string(), id))
    }

    /// Checkpoints not claimed by a discovered file: candidates for a rotated
    /// file that the agent had not finished when it stopped.
    pub fn unclaimed(&self) -> Vec<Checkpoint> {
        self.loaded.values().cloned().collect()
    }

    /// Where the journald input `input` resumes; `None` on its first start.
    pub fn journal(&self, input: &str) -> Option<&JournalCheckpoint> {
        self.journals.iter().find(|j| j.input == input)
    }

    /// Writes `current` plus loaded entries not claimed yet whose file is
    /// still at their path (e.g. one unreadable for now), and the journald
    /// inputs' cursors. Skips the write when nothing changed since the file
    /// was last written.
    pub fn save(
        &mut self,
        mut current: Vec<Checkpoint>,
        journals: Vec<JournalCheckpoint>,
    ) -> io::Result<()> {
        self.loaded.retain(|(_, id), c| {
            std::fs::metadata(&c.path).is_ok_and(|meta| FileId::of(&meta) == *id)
        });
        current.extend(self.loaded.values().cloned());
        let current = (current, journals);
        if self.existed && current == self.last_saved {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&Stored::V1 {
            files: current.0.clone(),
            journals: current.1.clone(),
        })
        .expect("checkpoints serialize");
        write_atomically(&self.path, &text)?;
        self.journals.clone_from(&current.1);
        self.last_saved = current;
        self.existed = true;
        Ok(())
    }
}

fn parse(text: &[u8]) -> serde_json::Result<(Vec<Checkpoint>, Vec<JournalCheckpoint>)> {
    serde_json::from_slice::<Stored>(text).map(|Stored::V1 { files, journals }| (files, journals))
}

/// One checkpointed file as `tailhook status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProgress {
    pub input: String,
    pub path: String,
    /// Bytes committed: their events are queued.
    pub offset: u64,
    /// The file's size now; `None` when the path is gone or holds another
    /// file (rotated away: the agent finishes the old one by its inode).
    pub size: Option<u64>,
}

impl FileProgress {
    /// Bytes not committed yet: size − offset; `None` when the path is gone.
    pub fn lag(&self) -> Option<u64> {
        self.size.map(|size| size.saturating_sub(self.offset))
    }
}

/// What `checkpoints.json` holds, as `tailhook status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub files: Vec<FileProgress>,
    pub journals: Vec<JournalCheckpoint>,
}

/// What `checkpoints.json` in `state_dir` holds, with each file's size now.
/// Only reads: a corrupt file is reported, not set aside (the agent does
/// that when it starts). No file yet gives empty lists.
pub fn committed_progress(state_dir: &Path) -> Result<Progress, String> {
    let path = state_dir.join("checkpoints.json");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Progress::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let (files, journals) =
        parse(&text).map_err(|e| format!("{}: corrupt: {e}", path.display()))?;
    let files = files
        .into_iter()
        .map(|c| {
            let size = std::fs::metadata(&c.path)
                .ok()
                .filter(|meta| {
                    FileId::of(meta)
                        == FileId {
                            dev: c.dev,
                            ino: c.ino,
                        }
                })
                .map(|meta| meta.len());
            FileProgress {
                input: c.input,
                path: c.path,
                offset: c.offset,
                size,
            }
        })
        .collect();
    Ok(Progress { files, journals })
}

/// Write, fsync, rename over, fsync the folder: after a crash the file holds
/// either the old or the new content, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    crate::private::create_dir_all(folder)?;
    let temp = path.with_extension("json.tmp");
    let mut file = crate::private::open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    crate::private::restrict(&file)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(offset: u64, path: &Path) -> Checkpoint {
        let id = FileId::of(&std::fs::metadata(path).unwrap());
        Checkpoint {
            input: "auth".into(),
            dev: id.dev,
            ino: id.ino,
            generation: 0,
            fingerprint: Fingerprint { len: 3, hash: 4 },
            path: path.to_string_lossy().into_owned(),
            offset,
        }
    }

    #[test]
    fn saved_checkpoints_load_back_and_unclaimed_ones_survive_while_their_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, "x\n").unwrap();
        let mut store = CheckpointStore::open(dir.path()).unwrap();
        assert!(!store.existed);
        store.save(vec![checkpoint(42, &log)], vec![]).unwrap();

        let mut store = CheckpointStore::open(dir.path()).unwrap();
        assert!(store.existed);
        // Not claimed this time (say, unreadable): kept on the next save.
        store.save(vec![], vec![]).unwrap();
        let id = FileId::of(&std::fs::metadata(&log).unwrap());
        let mut store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.unclaimed().len(), 1);
        assert_eq!(store.claim("auth", id).map(|c| c.offset), Some(42));
        assert_eq!(store.claim("auth", id), None);

        // Another file now at that path: the entry is stale and dropped.
        // (Renamed away, the old file keeps its inode: the new one differs.)
        std::fs::rename(&log, dir.path().join("a.log.1")).unwrap();
        std::fs::write(&log, "new\n").unwrap();
        let mut store = CheckpointStore::open(dir.path()).unwrap();
        store.save(vec![], vec![]).unwrap();
        assert!(CheckpointStore::open(dir.path())
            .unwrap()
            .unclaimed()
            .is_empty());
    }

    #[test]
    fn journal_cursors_are_saved_beside_files_and_older_files_load_without_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("checkpoints.json"),
            br#"{"version":"1","files":[]}"#,
        )
        .unwrap();
        let mut store = CheckpointStore::open(dir.path()).unwrap();
        assert!(store.existed);
        assert_eq!(store.journal("journal"), None);
        let journals = vec![
            JournalCheckpoint {
                input: "journal".into(),
                cursor: Some("s=1;i=2".into()),
            },
            JournalCheckpoint {
                input: "empty".into(),
                cursor: None,
            },
        ];
        store.save(vec![], journals.clone()).unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.journal("journal"), Some(&journals[0]));
        assert_eq!(store.journal("empty"), Some(&journals[1]));
    }

    #[test]
    fn corrupt_or_truncated_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("checkpoints.json"),
            b"{\"version\":\"1\",\"fil",
        )
        .unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert!(!store.existed);
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
        assert!(!dir.path().join("checkpoints.json").exists());
    }

    #[test]
    fn fingerprint_grows_with_short_files_and_detects_replaced_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "short\n").unwrap();
        let short = Fingerprint::of(&File::open(&path).unwrap()).unwrap();
        assert_eq!(short.len, 6);
        std::fs::write(&path, format!("short\n{}", "y".repeat(1000))).unwrap();
        let file = File::open(&path).unwrap();
        assert!(
            short.matches(&file).unwrap(),
            "a grown file still matches its old prefix"
        );
        assert_eq!(Fingerprint::of(&file).unwrap().len, FINGERPRINT_BYTES);
        std::fs::write(&path, "other\n").unwrap();
        assert!(!short.matches(&File::open(&path).unwrap()).unwrap());
    }
}
