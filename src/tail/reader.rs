//! Splitting a file's bytes into lines, whatever the bytes are.
//!
//! Bytes arrive in arbitrary chunks; a line may span many chunks. A line longer
//! than `max_line_bytes` is cut (the rest skipped up to its newline) and marked,
//! never dropped; invalid UTF-8 is replaced lossily; a trailing `\r` is removed.
//! A final line without a newline stays pending until its newline arrives.

/// One complete line and where it started in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    pub offset: u64,
    pub text: String,
    /// The line was longer than `max_line_bytes` and was cut: how many
    /// bytes it had (without its newline).
    pub cut_from: Option<u64>,
}

#[derive(Debug)]
pub struct LineReader {
    max_line_bytes: usize,
    /// Bytes of the line being assembled (at most `max_line_bytes`).
    partial: Vec<u8>,
    /// File offset of the first byte of `partial`'s line.
    line_start: u64,
    /// File offset of the next byte to be fed.
    position: u64,
    partial_truncated: bool,
    /// Discard bytes up to the next newline (we started mid-line).
    skip_to_newline: bool,
}

impl LineReader {
    pub fn new(position: u64, max_line_bytes: usize) -> LineReader {
        LineReader {
            max_line_bytes,
            partial: Vec::new(),
            line_start: position,
            position,
            partial_truncated: false,
            skip_to_newline: false,
        }
    }

    /// Starts mid-line: the bytes before the next newline belong to a line that
    /// began before `position` and are not ours to report.
    pub fn starting_mid_line(position: u64, max_line_bytes: usize) -> LineReader {
        LineReader {
            skip_to_newline: true,
            ..LineReader::new(position, max_line_bytes)
        }
    }

    /// Offset of the next byte to read from the file.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Offset just past the last complete line: where reading would resume
    /// after a restart without repeating or skipping a line.
    pub fn line_start(&self) -> u64 {
        self.line_start
    }

    /// Forgets everything and restarts at `position` (after truncation).
    pub fn reset(&mut self, position: u64) {
        *self = LineReader::new(position, self.max_line_bytes);
    }

    /// Feeds the next bytes of the file; complete lines are pushed to `out`.
    /// Returns how many of them were cut to `max_line_bytes`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<RawLine>) -> usize {
        let mut truncated = 0;
        while !chunk.is_empty() {
            let newline = memchr::memchr(b'\n', chunk);
            let (piece, rest) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..]),
                None => (chunk, &[][..]),
            };
            let consumed = piece.len() as u64 + u64::from(newline.is_some());
            if self.skip_to_newline {
                if newline.is_some() {
                    self.skip_to_newline = false;
                    self.line_start = self.position + consumed;
                }
            } else {
                let room = self.max_line_bytes - self.partial.len();
                if piece.len() > room {
                    self.partial.extend_from_slice(&piece[..room]);
                    self.partial_truncated = true;
                } else {
                    self.partial.extend_from_slice(piece);
                }
                if newline.is_some() {
                    truncated += usize::from(self.partial_truncated);
                    let length = self.position + piece.len() as u64 - self.line_start;
                    out.push(self.take_line(length));
                    self.line_start = self.position + consumed;
                }
            }
            self.position += consumed;
            chunk = rest;
        }
        truncated
    }

    /// Whether bytes of an unfinished line are held (what `flush_partial`
    /// would emit).
    pub fn holds_partial(&self) -> bool {
        !self.skip_to_newline && self.position != self.line_start
    }

    /// Emits the bytes held for an unfinished line as a complete line, for a
    /// writer that stopped mid-line. Whatever follows starts a new line.
    pub fn flush_partial(&mut self) -> Option<RawLine> {
        if !self.holds_partial() {
            return None;
        }
        let line = self.take_line(self.position - self.line_start);
        self.line_start = self.position;
        Some(line)
    }

    /// The line assembled so far, which had `length` bytes in the file.
    fn take_line(&mut self, length: u64) -> RawLine {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        RawLine {
            offset: self.line_start,
            text,
            cut_from: std::mem::take(&mut self.partial_truncated).then_some(length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, Just};

    fn lines(reader: &mut LineReader, chunks: &[&[u8]]) -> Vec<RawLine> {
        let mut out = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, &mut out);
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_keep_their_offsets() {
        let mut reader = LineReader::new(100, 1024);
        let out = lines(&mut reader, &[b"one\ntw", b"o\r\n", b"thr"]);
        assert_eq!(
            out,
            vec![
                RawLine {
                    offset: 100,
                    text: "one".into(),
                    cut_from: None
                },
                RawLine {
                    offset: 104,
                    text: "two".into(),
                    cut_from: None
                },
            ]
        );
        assert_eq!(reader.position(), 112);
        let out = lines(&mut reader, &[b"ee\n"]);
        assert_eq!(
            out[0],
            RawLine {
                offset: 109,
                text: "three".into(),
                cut_from: None
            }
        );
    }

    #[test]
    fn long_lines_are_cut_and_counted_not_dropped() {
        let mut reader = LineReader::new(0, 4);
        let mut out = Vec::new();
        let cut = reader.feed(b"abcdefgh\nxy\n", &mut out);
        assert_eq!(cut, 1);
        assert_eq!(
            out[0],
            RawLine {
                offset: 0,
                text: "abcd".into(),
                cut_from: Some(8)
            }
        );
        assert_eq!(
            out[1],
            RawLine {
                offset: 9,
                text: "xy".into(),
                cut_from: None
            }
        );
        // A cut line spread over chunks is counted once.
        let cut = reader.feed(b"123", &mut out)
            + reader.feed(b"456", &mut out)
            + reader.feed(b"7\n", &mut out);
        assert_eq!(cut, 1);
        assert_eq!(out[2].text, "1234");
        assert_eq!(out[2].cut_from, Some(7));
        // A cut line that never gets its newline is marked when flushed.
        reader.feed(b"0123456789", &mut out);
        let flushed = reader.flush_partial().unwrap();
        assert_eq!(
            (flushed.text.as_str(), flushed.cut_from),
            ("0123", Some(10))
        );
    }

    #[test]
    fn invalid_utf8_and_binary_garbage_are_replaced_lossily() {
        let mut reader = LineReader::new(0, 64);
        let out = lines(&mut reader, &[b"ok \xff\xfe\x00 end\n"]);
        assert_eq!(out[0].text, "ok \u{fffd}\u{fffd}\u{0} end");
    }

    #[test]
    fn a_held_partial_line_can_be_flushed_once() {
        let mut reader = LineReader::new(0, 64);
        assert!(lines(&mut reader, &[b"done\nhalf"]).len() == 1);
        let flushed = reader.flush_partial().unwrap();
        assert_eq!(
            flushed,
            RawLine {
                offset: 5,
                text: "half".into(),
                cut_from: None
            }
        );
        assert_eq!(reader.line_start(), 9);
        assert_eq!(reader.flush_partial(), None);
        let out = lines(&mut reader, &[b" more\n"]);
        assert_eq!(
            out,
            vec![RawLine {
                offset: 9,
                text: " more".into(),
                cut_from: None
            }]
        );
    }

    proptest::proptest! {
        /// Whatever the bytes and however they are chunked, every line
        /// comes out once, at its offset, cut exactly when it is longer
        /// than the limit and then saying how long it was.
        #[test]
        fn any_bytes_in_any_chunks_become_exactly_their_lines(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![Just(b'\n'), Just(b'\r'), Just(0xffu8), any::<u8>()],
                0..400,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            max_line_bytes in 1usize..40,
        ) {
            let mut reader = LineReader::new(1000, max_line_bytes);
            let mut out = Vec::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                reader.feed(&bytes[from..cut], &mut out);
                from = cut;
            }
            out.extend(reader.flush_partial());
            proptest::prop_assert_eq!(reader.position(), 1000 + bytes.len() as u64);

            let mut expected = Vec::new();
            let mut start = 0;
            for piece in bytes.split(|&b| b == b'\n') {
                let last = start + piece.len() == bytes.len();
                if !(last && piece.is_empty()) {
                    let mut kept = piece[..piece.len().min(max_line_bytes)].to_vec();
                    if kept.last() == Some(&b'\r') {
                        kept.pop();
                    }
                    expected.push(RawLine {
                        offset: 1000 + start as u64,
                        text: String::from_utf8_lossy(&kept).into_owned(),
                        cut_from: (piece.len() > max_line_bytes).then_some(piece.len() as u64),
                    });
                }
                start += piece.len() + 1;
            }
            proptest::prop_assert_eq!(out, expected);
        }
    }

    #[test]
    fn starting_mid_line_skips_the_fragment() {
        let mut reader = LineReader::starting_mid_line(10, 64);
        let out = lines(&mut reader, &[b"gment\nnext\n"]);
        assert_eq!(
            out,
            vec![RawLine {
                offset: 16,
                text: "next".into(),
                cut_from: None
            }]
        );
    }
}
