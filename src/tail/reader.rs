//! Splitting a file's bytes into lines, whatever the bytes are.
//!
//! Bytes arrive in arbitrary chunks; a line may span many chunks. A line longer
//! than `max_line_bytes` is cut (the rest skipped up to its newline) and marked,
//! never dropped; invalid UTF-8 is replaced lossily; a trailing `\r` is removed.
//! A final line without a newline stays pending until its newline arrives.
//!
//! Complete lines go to a [`LineBatch`]: their text back to back in one
//! buffer that is cleared and filled again, so cutting a line allocates
//! nothing (millions of lines a second, most of which no rule wants).

/// Lines cut from a file, their text back to back in one buffer.
#[derive(Debug, Default, Clone)]
pub struct LineBatch {
    text: String,
    spans: Vec<Span>,
}

/// Where one line of a batch is: its text ends at `end` in the batch's
/// buffer and starts where the line before it ended.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    end: usize,
    cut_from: Option<u64>,
}

/// One complete line and where it started in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine<'a> {
    pub offset: u64,
    pub text: &'a str,
    /// The line was longer than `max_line_bytes` and was cut: how many
    /// bytes it had (without its newline).
    pub cut_from: Option<u64>,
}

impl LineBatch {
    /// A batch whose buffer takes `text_bytes` of lines before it grows.
    pub fn with_capacity(text_bytes: usize) -> LineBatch {
        LineBatch {
            text: String::with_capacity(text_bytes),
            spans: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of text held (newlines and cut parts not counted).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Forgets the lines and keeps the buffers for the next ones.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RawLine<'_>> + '_ {
        let mut start = 0;
        self.spans.iter().map(move |span| {
            let text = &self.text[start..span.end];
            start = span.end;
            RawLine {
                offset: span.offset,
                text,
                cut_from: span.cut_from,
            }
        })
    }

    /// Adds a line of `bytes` (without its newline; invalid UTF-8 replaced
    /// lossily) that started at `offset` in its file.
    pub fn push(&mut self, offset: u64, bytes: &[u8], cut_from: Option<u64>) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.push_text(offset, text, cut_from),
            Err(_) => self.push_text(offset, &String::from_utf8_lossy(bytes), cut_from),
        }
    }

    /// Adds a copy of `line` (of another batch).
    pub fn push_line(&mut self, line: RawLine) {
        self.push_text(line.offset, line.text, line.cut_from);
    }

    /// [`LineBatch::push`] of a line already known to be valid UTF-8.
    fn push_text(&mut self, offset: u64, text: &str, cut_from: Option<u64>) {
        self.text.push_str(text);
        self.spans.push(Span {
            offset,
            end: self.text.len(),
            cut_from,
        });
    }
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

    /// Feeds the next bytes of the file; complete lines are added to `out`.
    /// Returns how many of them were cut to `max_line_bytes`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut LineBatch) -> usize {
        // One UTF-8 check for the whole chunk, not one per line: lines are
        // short, and most chunks are valid to their end (a read may stop
        // inside a character; the line it cuts is checked when whole).
        let valid = match std::str::from_utf8(chunk) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&chunk[..e.valid_up_to()]).expect("valid up to there"),
        };
        let mut at = 0;
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
            } else if newline.is_some()
                && self.line_start == self.position
                && piece.len() <= self.max_line_bytes
            {
                // The whole line is in this chunk, the common case: straight
                // from the read buffer to the batch, no copy held between.
                match valid.get(at..at + piece.len()) {
                    Some(text) => out.push_text(self.line_start, text_without_cr(text), None),
                    None => out.push(self.line_start, without_cr(piece), None),
                }
                self.line_start = self.position + consumed;
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
                    self.take_line(length, out);
                    self.line_start = self.position + consumed;
                }
            }
            self.position += consumed;
            at += consumed as usize;
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
    /// Whether there was one.
    pub fn flush_partial(&mut self, out: &mut LineBatch) -> bool {
        if !self.holds_partial() {
            return false;
        }
        self.take_line(self.position - self.line_start, out);
        self.line_start = self.position;
        true
    }

    /// Adds the line assembled so far, which had `length` bytes in the
    /// file, to `out`. Its buffer is let go: a line spans two reads at most
    /// once per read, and a long one must not stay held by an idle file.
    fn take_line(&mut self, length: u64, out: &mut LineBatch) {
        let bytes = std::mem::take(&mut self.partial);
        let cut_from = std::mem::take(&mut self.partial_truncated).then_some(length);
        out.push(self.line_start, without_cr(&bytes), cut_from);
    }
}

/// A line's bytes without the `\r` of a CRLF line end.
fn without_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn text_without_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, Just, Strategy};

    fn lines(reader: &mut LineReader, chunks: &[&[u8]]) -> LineBatch {
        let mut out = LineBatch::default();
        for chunk in chunks {
            reader.feed(chunk, &mut out);
        }
        out
    }

    fn all(batch: &LineBatch) -> Vec<RawLine<'_>> {
        batch.iter().collect()
    }

    #[test]
    fn lines_split_across_chunks_keep_their_offsets() {
        let mut reader = LineReader::new(100, 1024);
        let out = lines(&mut reader, &[b"one\ntw", b"o\r\n", b"thr"]);
        assert_eq!(
            all(&out),
            vec![
                RawLine {
                    offset: 100,
                    text: "one",
                    cut_from: None
                },
                RawLine {
                    offset: 104,
                    text: "two",
                    cut_from: None
                },
            ]
        );
        assert_eq!(reader.position(), 112);
        let out = lines(&mut reader, &[b"ee\n"]);
        assert_eq!(
            all(&out)[0],
            RawLine {
                offset: 109,
                text: "three",
                cut_from: None
            }
        );
    }

    #[test]
    fn long_lines_are_cut_and_counted_not_dropped() {
        let mut reader = LineReader::new(0, 4);
        let mut out = LineBatch::default();
        let cut = reader.feed(b"abcdefgh\nxy\n", &mut out);
        assert_eq!(cut, 1);
        assert_eq!(
            all(&out)[0],
            RawLine {
                offset: 0,
                text: "abcd",
                cut_from: Some(8)
            }
        );
        assert_eq!(
            all(&out)[1],
            RawLine {
                offset: 9,
                text: "xy",
                cut_from: None
            }
        );
        // A cut line spread over chunks is counted once.
        let cut = reader.feed(b"123", &mut out)
            + reader.feed(b"456", &mut out)
            + reader.feed(b"7\n", &mut out);
        assert_eq!(cut, 1);
        assert_eq!(all(&out)[2].text, "1234");
        assert_eq!(all(&out)[2].cut_from, Some(7));
        // A cut line that never gets its newline is marked when flushed.
        reader.feed(b"0123456789", &mut out);
        assert!(reader.flush_partial(&mut out));
        let flushed = all(&out)[3];
        assert_eq!((flushed.text, flushed.cut_from), ("0123", Some(10)));
    }

    #[test]
    fn invalid_utf8_and_binary_garbage_are_replaced_lossily() {
        let mut reader = LineReader::new(0, 64);
        let out = lines(&mut reader, &[b"ok \xff\xfe\x00 end\n"]);
        assert_eq!(all(&out)[0].text, "ok \u{fffd}\u{fffd}\u{0} end");
    }

    #[test]
    fn a_held_partial_line_can_be_flushed_once() {
        let mut reader = LineReader::new(0, 64);
        let mut out = lines(&mut reader, &[b"done\nhalf"]);
        assert!(out.len() == 1);
        out.clear();
        assert!(reader.flush_partial(&mut out));
        assert_eq!(
            all(&out),
            [RawLine {
                offset: 5,
                text: "half",
                cut_from: None
            }]
        );
        assert_eq!(reader.line_start(), 9);
        assert!(!reader.flush_partial(&mut out));
        let out = lines(&mut reader, &[b" more\n"]);
        assert_eq!(
            all(&out),
            vec![RawLine {
                offset: 9,
                text: " more",
                cut_from: None
            }]
        );
    }

    proptest::proptest! {
        /// Whatever the bytes and however they are chunked, every line
        /// comes out once, at its offset, cut exactly when it is longer
        /// than the limit and then saying how long it was; valid UTF-8 as
        /// it was, even where a chunk or a cut splits a character, and
        /// invalid bytes replaced.
        #[test]
        fn any_bytes_in_any_chunks_become_exactly_their_lines(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    Just(b"\n".to_vec()),
                    Just(b"\r".to_vec()),
                    Just(vec![0xffu8]),
                    Just("é".as_bytes().to_vec()),
                    Just("€".as_bytes().to_vec()),
                    any::<u8>().prop_map(|b| vec![b]),
                ],
                0..300,
            ).prop_map(|pieces| pieces.concat()),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            max_line_bytes in 1usize..40,
        ) {
            let mut reader = LineReader::new(1000, max_line_bytes);
            let mut out = LineBatch::default();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                reader.feed(&bytes[from..cut], &mut out);
                from = cut;
            }
            reader.flush_partial(&mut out);
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
                    expected.push((
                        1000 + start as u64,
                        String::from_utf8_lossy(&kept).into_owned(),
                        (piece.len() > max_line_bytes).then_some(piece.len() as u64),
                    ));
                }
                start += piece.len() + 1;
            }
            let got: Vec<(u64, String, Option<u64>)> = out
                .iter()
                .map(|line| (line.offset, line.text.to_string(), line.cut_from))
                .collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn starting_mid_line_skips_the_fragment() {
        let mut reader = LineReader::starting_mid_line(10, 64);
        let out = lines(&mut reader, &[b"gment\nnext\n"]);
        assert_eq!(
            all(&out),
            vec![RawLine {
                offset: 16,
                text: "next",
                cut_from: None
            }]
        );
    }
}
