//! Byte offsets → `LINE:COL`, and the diagnostics collector.
//!
//! The TOML parser reports positions as byte offsets. Users read `FILE:LINE:COL`,
//! with columns counted in characters (so a multi-byte UTF-8 character before
//! the error does not push the column off). Every check in the config parser
//! reports through [`Diags`], which keeps the byte offset and sorts by it at the
//! end: problems come out in file order however the checks were ordered.

use crate::config::Diagnostic;

/// The text being parsed, with a line index for offset → position lookups.
pub(crate) struct Source<'a> {
    text: &'a str,
    file: &'a str,
    /// Byte offset of the first character of every line.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str, file: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            text,
            file,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; columns count characters.
    /// Offsets past the end (an error "at end of file") map just past the
    /// last character.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        // Clamp to a char boundary so a span inside a character cannot panic.
        let mut end = offset;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let col = self.text[start..end].chars().count();
        (line + 1, col + 1)
    }
}

/// Collects every problem found in one file.
pub(crate) struct Diags<'a> {
    src: &'a Source<'a>,
    found: Vec<(usize, String)>,
    warnings: Vec<(usize, String)>,
}

impl<'a> Diags<'a> {
    pub(crate) fn new(src: &'a Source<'a>) -> Self {
        Diags {
            src,
            found: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a problem at byte offset `at`.
    pub(crate) fn error(&mut self, at: usize, message: impl Into<String>) {
        self.found.push((at, message.into()));
    }

    /// Records a warning at byte offset `at` (does not make the config
    /// invalid; `ringlb check` and start print it).
    pub(crate) fn warn(&mut self, at: usize, message: impl Into<String>) {
        self.warnings
            .push((at, format!("warning: {}", message.into())));
    }

    /// The warnings so far, positioned (taken out of the collector).
    pub(crate) fn take_warnings(&mut self) -> Vec<Diagnostic> {
        let w = std::mem::take(&mut self.warnings);
        w.into_iter()
            .map(|(at, message)| self.positioned(at, message))
            .collect()
    }

    fn positioned(&self, at: usize, message: String) -> Diagnostic {
        let (line, col) = self.src.position(at);
        Diagnostic {
            file: self.src.file.to_string(),
            line,
            col,
            message,
        }
    }

    /// 1-based (line, column) of a byte offset.
    pub(crate) fn position(&self, at: usize) -> (usize, usize) {
        self.src.position(at)
    }

    /// 1-based line of a byte offset (for "first defined at line N").
    pub(crate) fn line(&self, at: usize) -> usize {
        self.src.position(at).0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The diagnostics in file order (ties keep the order they were found in).
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|&(at, _)| at);
        let found = std::mem::take(&mut self.found);
        found
            .into_iter()
            .map(|(at, message)| self.positioned(at, message))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = Source::new("ab\nçd = 1\n\nx", "f");
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(1), (1, 2));
        assert_eq!(src.position(3), (2, 1));
        // 'ç' is two bytes: 'd' is at byte 5 but column 2.
        assert_eq!(src.position(5), (2, 2));
        assert_eq!(src.position(11), (3, 1));
        assert_eq!(src.position(12), (4, 1));
        // End of file: just past the last character.
        assert_eq!(src.position(13), (4, 2));
        assert_eq!(src.position(99), (4, 2));
    }

    #[test]
    fn diagnostics_come_out_in_file_order() {
        let src = Source::new("a\nb\nc\n", "x.toml");
        let mut d = Diags::new(&src);
        d.error(4, "third");
        d.error(0, "first");
        d.error(2, "second");
        let out = d.finish();
        let got: Vec<_> = out.iter().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(got, [(1, "first"), (2, "second"), (3, "third")]);
        assert_eq!(out[0].to_string(), "x.toml:1:1: first");
    }
}
