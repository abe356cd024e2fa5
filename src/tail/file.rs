//! One open log file: its identity, its read position, and reading it.
//!
//! A file is followed through its open handle, not its path, so a file that is
//! renamed or deleted (log rotation) is still read to its end. Identity is the
//! (device, inode) pair of that handle.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::reader::{LineReader, RawLine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Outcome of one [`TailedFile::read`] call.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub bytes: u64,
    /// Lines cut to `max_line_bytes`.
    pub truncated_lines: usize,
    /// The read stopped at its budget; more may be waiting.
    pub more: bool,
}

pub struct TailedFile {
    pub id: FileId,
    /// The path it was last seen at; the event's `log.file`.
    pub path: Arc<str>,
    file: File,
    reader: LineReader,
    /// Whether a discovered path still leads to this file. A file that lost its
    /// path (rotated away, deleted) is read to its end before it is let go.
    pub live: bool,
    /// When this file was last seen at its end without growing.
    pub idle_since: Option<Instant>,
}

const CHUNK: usize = 64 * 1024;

impl TailedFile {
    /// Opens `path`; reading starts at the end when `from_end`, else at 0.
    pub fn open(path: &Path, from_end: bool, max_line_bytes: usize) -> io::Result<TailedFile> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let reader = if from_end && meta.len() > 0 {
            let end = meta.len();
            file.seek(SeekFrom::Start(end - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] == b'\n' {
                LineReader::new(end, max_line_bytes)
            } else {
                LineReader::starting_mid_line(end, max_line_bytes)
            }
        } else {
            LineReader::new(0, max_line_bytes)
        };
        file.seek(SeekFrom::Start(reader.position()))?;
        Ok(TailedFile {
            id: FileId::of(&meta),
            path: Arc::from(path.to_string_lossy().as_ref()),
            file,
            reader,
            live: true,
            idle_since: None,
        })
    }

    pub fn set_path(&mut self, path: &Path) {
        if *self.path != *path.to_string_lossy() {
            self.path = Arc::from(path.to_string_lossy().as_ref());
        }
    }

    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Reads what was appended since the last call, up to `budget` bytes.
    /// A file now shorter than what was read was truncated (copytruncate):
    /// reading restarts at 0.
    pub fn read(&mut self, budget: u64, out: &mut Vec<RawLine>) -> io::Result<ReadOutcome> {
        let size = self.file.metadata()?.len();
        if size < self.reader.position() {
            tracing::warn!(
                file = %self.path,
                size,
                position = self.reader.position(),
                "file was truncated; reading it again from the start"
            );
            self.reader.reset(0);
            self.file.seek(SeekFrom::Start(0))?;
        }
        let mut outcome = ReadOutcome::default();
        let mut buf = [0u8; CHUNK];
        while outcome.bytes < budget {
            let n = match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            outcome.bytes += n as u64;
            outcome.truncated_lines += self.reader.feed(&buf[..n], out);
        }
        outcome.more = outcome.bytes >= budget;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn from_end_skips_existing_content_including_a_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old 1\nold 2\npart").unwrap();
        let mut tailed = TailedFile::open(&path, true, 1024).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"ial\nnew 1\n").unwrap();
        let mut out = Vec::new();
        tailed.read(u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "new 1");
        assert_eq!(out[0].offset, 20);
    }

    #[test]
    fn truncation_restarts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let mut tailed = TailedFile::open(&path, false, 1024).unwrap();
        let mut out = Vec::new();
        tailed.read(u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"x\n")
            .unwrap();
        out.clear();
        tailed.read(u64::MAX, &mut out).unwrap();
        assert_eq!(
            out,
            vec![RawLine {
                offset: 0,
                text: "x".into(),
                truncated: false
            }]
        );
    }

    #[test]
    fn read_respects_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "x\n".repeat(100_000)).unwrap();
        let mut tailed = TailedFile::open(&path, false, 1024).unwrap();
        let mut out = Vec::new();
        let first = tailed.read(CHUNK as u64, &mut out).unwrap();
        assert!(first.more);
        let rest = tailed.read(u64::MAX, &mut out).unwrap();
        assert!(!rest.more);
        assert_eq!(out.len(), 100_000);
    }
}
