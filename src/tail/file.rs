//! One open log file: its identity, its read position, and reading it.
//!
//! A file is followed through its open handle, not its path, so a file that is
//! renamed or deleted (log rotation) is still read to its end. Identity is the
//! (device, inode) pair of that handle.
//!
//! A file idle at its end may be closed to spare descriptors (`close`); it
//! keeps its position, held partial line and commits in memory, and is
//! opened again by its path only if the path still leads to the same inode
//! (`reopen`), where reading resumes. Truncation is then detected as usual.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::checkpoint::Fingerprint;
use super::reader::{LineBatch, LineReader};
use super::{CommitToken, Commits};
use crate::event::SourceFile;

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

/// The path of file `id`: `path` itself, or another name in its folder
/// (where rotation renames files).
pub fn find_beside(path: &Path, id: FileId) -> Option<PathBuf> {
    let is_it =
        |candidate: &Path| std::fs::metadata(candidate).is_ok_and(|meta| FileId::of(&meta) == id);
    if is_it(path) {
        return Some(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path.parent()?).ok()?;
    entries
        .flatten()
        .map(|entry| entry.path())
        .find(|candidate| is_it(candidate))
}

/// Outcome of one [`TailedFile::read`] call.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub bytes: u64,
    /// The read stopped at its budget; more may be waiting.
    pub more: bool,
    /// The read reached the end of the file.
    pub at_end: bool,
    /// The read failed after `bytes` (an I/O error on a network file
    /// system, a bad sector). The lines read before it are in the output
    /// and are committed as usual; the next read resumes where it failed.
    pub error: Option<io::Error>,
}

/// Where reading a newly opened file starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Beginning,
    /// After the last complete line present now.
    End,
    /// A committed offset from a checkpoint.
    Offset(u64),
}

pub struct TailedFile {
    pub id: FileId,
    pub fingerprint: Fingerprint,
    /// How many times this inode was truncated in place (copytruncate) or
    /// refilled with other content; see [`SourceFile`].
    pub generation: u64,
    /// The path it was last seen at; the event's `log.file`.
    pub path: Arc<str>,
    /// `None` while closed to spare a descriptor.
    file: Option<File>,
    reader: LineReader,
    /// Whether a discovered path still leads to this file. A file that lost its
    /// path (rotated away, deleted) is read to its end before it is let go.
    pub live: bool,
    /// When this file was last seen at its end without growing.
    pub idle_since: Option<Instant>,
    /// The last read reached the end: closing it now skips nothing.
    pub at_end: bool,
    /// When the agent started following it.
    pub followed_since: std::time::SystemTime,
    /// Closed, and found grown or renamed: to be opened again when a
    /// descriptor is free.
    pub wants_open: bool,
    /// Size and mtime at the last read; a change makes the first bytes worth checking.
    last_seen: (u64, Option<std::time::SystemTime>),
    /// A look at every file found its path's stat as the last read left it,
    /// at its end: the next read needs no stat of its own.
    looked_unchanged: bool,
    /// Chunks handed downstream, with the offset each one commits.
    commits: Commits<u64>,
}

const CHUNK: usize = 64 * 1024;

fn closed() -> io::Error {
    io::Error::other("the file is closed to spare a descriptor")
}

impl TailedFile {
    /// Opens `path`, positioned at its beginning; see [`TailedFile::start_from`].
    pub fn open(path: &Path, max_line_bytes: usize) -> io::Result<TailedFile> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(TailedFile {
            id: FileId::of(&meta),
            fingerprint: Fingerprint::of(&file)?,
            generation: 0,
            path: Arc::from(path.to_string_lossy().as_ref()),
            file: Some(file),
            reader: LineReader::new(0, max_line_bytes),
            live: true,
            idle_since: None,
            at_end: false,
            followed_since: std::time::SystemTime::now(),
            wants_open: false,
            commits: Commits::new(0),
            last_seen: (meta.len(), meta.modified().ok()),
            looked_unchanged: false,
        })
    }

    fn handle(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(closed)
    }

    /// What event ids hash for this file's lines.
    pub fn source(&self) -> SourceFile {
        SourceFile {
            dev: self.id.dev,
            ino: self.id.ino,
            generation: self.generation,
        }
    }

    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Gives the descriptor back; everything else stays.
    pub fn close(&mut self) {
        self.file = None;
        self.wants_open = false;
    }

    /// Opens the file again at its path and resumes where reading stopped.
    /// `false` when the path now leads to another file (or none).
    pub fn reopen(&mut self) -> io::Result<bool> {
        let mut file = File::open(Path::new(&*self.path))?;
        if FileId::of(&file.metadata()?) != self.id {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.reader.position()))?;
        self.file = Some(file);
        self.wants_open = false;
        // Opened because it changed: not to be closed again before a read.
        self.at_end = false;
        Ok(true)
    }

    /// Whether size or modification time differ from the last read.
    pub fn changed_since_read(&self, meta: &std::fs::Metadata) -> bool {
        (meta.len(), meta.modified().ok()) != self.last_seen
    }

    /// Takes the stat of this file's path from a look at every file, so that
    /// an idle file costs one stat per look, not two. A write after it wakes
    /// the tailer again (or is seen by the next look), like one just after a
    /// read's own stat.
    pub fn note_look(&mut self, meta: &std::fs::Metadata) {
        self.looked_unchanged = self.file.is_some()
            && !self.changed_since_read(meta)
            && meta.len() == self.reader.position();
    }

    /// Whether the file starts with the bytes `fingerprint` was taken of.
    pub fn starts_like(&self, fingerprint: &Fingerprint) -> io::Result<bool> {
        fingerprint.matches(self.handle()?)
    }

    /// Moves a just-opened file to where reading starts.
    pub fn start_from(&mut self, start: StartFrom) -> io::Result<()> {
        let size = self.handle()?.metadata()?.len();
        let max_line_bytes = self.reader.max_line_bytes();
        self.reader = match start {
            StartFrom::End if size > 0 => {
                let mut last = [0u8; 1];
                self.handle()?.read_exact_at(&mut last, size - 1)?;
                if last[0] == b'\n' {
                    LineReader::new(size, max_line_bytes)
                } else {
                    LineReader::starting_mid_line(size, max_line_bytes)
                }
            }
            StartFrom::Offset(offset) if offset <= size => LineReader::new(offset, max_line_bytes),
            StartFrom::Offset(offset) => {
                self.generation += 1;
                tracing::warn!(
                    file = %self.path,
                    size,
                    checkpoint = offset,
                    "file is shorter than its checkpoint (truncated while stopped); reading it from the start"
                );
                LineReader::new(0, max_line_bytes)
            }
            StartFrom::End | StartFrom::Beginning => LineReader::new(0, max_line_bytes),
        };
        self.commits.reset(self.reader.line_start());
        let position = self.reader.position();
        self.handle()?.seek(SeekFrom::Start(position))?;
        Ok(())
    }

    pub fn set_path(&mut self, path: &Path) {
        if *self.path != *path.to_string_lossy() {
            self.path = Arc::from(path.to_string_lossy().as_ref());
        }
    }

    /// After the file lost its path, looks for its new name in the same
    /// folder (logrotate renames `x.log` to `x.log.1`), so that the
    /// checkpoint can find it again after a restart. Whether it was found.
    pub fn follow_rename(&mut self) -> bool {
        match find_beside(Path::new(&*self.path), self.id) {
            Some(new) => {
                tracing::info!(file = %self.path, renamed_to = %new.display(), "file was rotated; reading it to its end");
                self.set_path(&new);
                true
            }
            None => false,
        }
    }

    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Whether a line without its newline is held, to be flushed once the
    /// file has been idle for the input's `partial_line_timeout`.
    pub fn holds_partial_line(&self) -> bool {
        self.reader.holds_partial()
    }

    /// The held line without a newline, as a line of its own, added to
    /// `out`. Whether there was one.
    pub fn flush_partial_line(&mut self, out: &mut LineBatch) -> bool {
        self.reader.flush_partial(out)
    }

    /// Registers a chunk of lines just read; the returned token goes with
    /// the lines, and the chunk is committed once all its copies are dropped.
    pub fn chunk_token(&mut self) -> CommitToken {
        self.commits.chunk(self.reader.line_start())
    }

    /// The offset up to which every line's events have left the pipeline.
    pub fn committed(&mut self) -> u64 {
        *self.commits.committed()
    }

    pub fn has_in_flight(&mut self) -> bool {
        self.commits.has_in_flight()
    }

    /// Extends a fingerprint taken while the file was shorter than the
    /// window, as soon as it grew: truncation is detected by it.
    fn refresh_fingerprint(&mut self) -> io::Result<()> {
        let grew_past_it = self.reader.position() > self.fingerprint.len as u64;
        if self.fingerprint.len < super::checkpoint::FINGERPRINT_BYTES && grew_past_it {
            self.fingerprint = Fingerprint::of(self.handle()?)?;
        }
        Ok(())
    }

    /// Reads what was appended since the last call, up to `budget` bytes.
    /// A file now shorter than what was read was truncated (copytruncate):
    /// reading restarts at 0.
    pub fn read(&mut self, budget: u64, out: &mut LineBatch) -> io::Result<ReadOutcome> {
        if std::mem::take(&mut self.looked_unchanged) {
            self.at_end = true;
            return Ok(ReadOutcome {
                at_end: true,
                ..ReadOutcome::default()
            });
        }
        let meta = self.handle()?.metadata()?;
        let size = meta.len();
        let shrunk = size < self.reader.position();
        // Truncated and written past our position (or to the very same size)
        // again between two looks, as copytruncate under load does: the size
        // cannot tell, the first bytes can. Checked only when the file changed.
        let changed = (size, meta.modified().ok()) != self.last_seen;
        let refilled = !shrunk && changed && !self.fingerprint.matches(self.handle()?)?;
        self.last_seen = (size, meta.modified().ok());
        if shrunk || refilled {
            tracing::warn!(
                file = %self.path,
                size,
                position = self.reader.position(),
                "file was truncated; reading it again from the start"
            );
            self.reader.reset(0);
            self.generation += 1;
            self.handle()?.seek(SeekFrom::Start(0))?;
            self.fingerprint = Fingerprint::of(self.handle()?)?;
            // What was in flight came from content that no longer exists.
            self.commits.reset(0);
        }
        if size == self.reader.position() {
            // Nothing new: most files at most looks. No read, no buffer.
            self.at_end = true;
            return Ok(ReadOutcome {
                at_end: true,
                ..ReadOutcome::default()
            });
        }
        let mut handle = self.file.as_ref().ok_or_else(closed)?;
        let outcome = feed_lines(&mut handle, &mut self.reader, budget, out);
        self.at_end = outcome.at_end;
        if outcome.error.is_none() {
            self.refresh_fingerprint()?;
        }
        Ok(outcome)
    }
}

/// Feeds what `source` holds to `reader`, up to `budget` bytes. A read error
/// ends the pass but keeps what was read before it: those lines are in `out`
/// and the reader's position is just past them, so they are neither lost
/// nor skipped by the next commit.
fn feed_lines(
    source: &mut impl Read,
    reader: &mut LineReader,
    budget: u64,
    out: &mut LineBatch,
) -> ReadOutcome {
    let mut outcome = ReadOutcome::default();
    let mut buf = [0u8; CHUNK];
    while outcome.bytes < budget {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                outcome.error = Some(e);
                break;
            }
        };
        outcome.bytes += n as u64;
        reader.feed(&buf[..n], out);
    }
    outcome.more = outcome.error.is_none() && outcome.bytes >= budget;
    outcome.at_end = outcome.error.is_none() && !outcome.more;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::RawLine;
    use std::io::Write;

    fn opened(path: &Path, start: StartFrom) -> TailedFile {
        let mut file = TailedFile::open(path, 1024).unwrap();
        file.start_from(start).unwrap();
        file
    }

    #[test]
    fn from_end_skips_existing_content_including_a_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old 1\nold 2\npart").unwrap();
        let mut tailed = opened(&path, StartFrom::End);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"ial\nnew 1\n").unwrap();
        let mut out = LineBatch::default();
        tailed.read(u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out.iter().next().unwrap().text, "new 1");
        assert_eq!(out.iter().next().unwrap().offset, 20);
    }

    #[test]
    fn a_look_that_saw_the_file_unchanged_spares_one_read_and_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "seq=1\n").unwrap();
        let mut tailed = opened(&path, StartFrom::Beginning);
        let mut out = LineBatch::default();
        tailed.read(u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);

        // Seen unchanged, then written before the read: that read trusts the
        // look, the next one (woken by the write's notification) reads it.
        tailed.note_look(&std::fs::metadata(&path).unwrap());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"seq=2\n").unwrap();
        out.clear();
        assert!(tailed.read(u64::MAX, &mut out).unwrap().at_end);
        assert!(out.is_empty());
        tailed.read(u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out.iter().next().unwrap().text, "seq=2");

        // A look that saw it grown leaves the read to look for itself.
        f.write_all(b"seq=3\n").unwrap();
        tailed.note_look(&std::fs::metadata(&path).unwrap());
        out.clear();
        tailed.read(u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out.iter().next().unwrap().text, "seq=3");
    }

    #[test]
    fn truncation_restarts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let mut tailed = opened(&path, StartFrom::Beginning);
        let mut out = LineBatch::default();
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
            out.iter().collect::<Vec<_>>(),
            [RawLine {
                offset: 0,
                text: "x",
                cut_from: None
            }]
        );
    }

    #[test]
    fn commit_advances_only_when_every_token_copy_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        let mut tailed = opened(&path, StartFrom::Beginning);
        let mut out = LineBatch::default();
        tailed.read(u64::MAX, &mut out).unwrap();
        let first = tailed.chunk_token();
        let held = first.clone();
        drop(first);
        assert_eq!(tailed.committed(), 0, "an event still holds the chunk");
        drop(held);
        assert_eq!(
            tailed.committed(),
            8,
            "committed up to the last complete line"
        );
        assert!(!tailed.has_in_flight());

        let resumed = opened(&path, StartFrom::Offset(8));
        assert_eq!(resumed.position(), 8);
        let beyond = opened(&path, StartFrom::Offset(1000));
        assert_eq!(
            beyond.position(),
            0,
            "a checkpoint past the end means truncation"
        );
    }

    #[test]
    fn truncation_hidden_by_regrowth_is_caught_by_the_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old 1\nold 2\n").unwrap();
        let mut tailed = opened(&path, StartFrom::Beginning);
        let mut out = LineBatch::default();
        tailed.read(u64::MAX, &mut out).unwrap();
        // Truncated and refilled beyond the old size before the next look.
        std::fs::write(&path, "new 1\nnew 2\nnew 3\n").unwrap();
        out.clear();
        tailed.read(u64::MAX, &mut out).unwrap();
        let texts: Vec<&str> = out.iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["new 1", "new 2", "new 3"]);
    }

    /// Serves `data` in small pieces, then fails the way a lost NFS server
    /// or a bad sector does.
    struct FailingAfter<'a> {
        data: &'a [u8],
    }

    impl Read for FailingAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            let n = buf.len().min(self.data.len()).min(7);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_read_before_an_io_error_are_kept_and_not_skipped() {
        let mut reader = LineReader::new(0, 1024);
        let mut out = LineBatch::default();
        let mut source = FailingAfter {
            data: b"seq=1 a\nseq=2 b\nseq=3 par",
        };
        let outcome = feed_lines(&mut source, &mut reader, u64::MAX, &mut out);
        assert_eq!(outcome.error.map(|e| e.raw_os_error()), Some(Some(5)));
        assert!(!outcome.more);
        let texts: Vec<&str> = out.iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["seq=1 a", "seq=2 b"]);
        // What a commit after this pass records: just past the last whole
        // line handed on, so the partial third line is read again, not skipped.
        assert_eq!(reader.line_start(), 16);
        assert_eq!(outcome.bytes, 25);
        // The next pass resumes where the error struck.
        let mut rest = FailingAfter {
            data: b"t\nseq=4 c\n",
        };
        out.clear();
        feed_lines(&mut rest, &mut reader, u64::MAX, &mut out);
        let texts: Vec<&str> = out.iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["seq=3 part", "seq=4 c"]);
    }

    #[test]
    fn read_respects_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "x\n".repeat(100_000)).unwrap();
        let mut tailed = opened(&path, StartFrom::Beginning);
        let mut out = LineBatch::default();
        let first = tailed.read(CHUNK as u64, &mut out).unwrap();
        assert!(first.more);
        let rest = tailed.read(u64::MAX, &mut out).unwrap();
        assert!(!rest.more);
        assert_eq!(out.len(), 100_000);
    }
}
