//! What a diagnostic shows of a line too long to print whole: a window
//! around each place a label marks, the rest elided. An error in a
//! megabyte-long list then prints a few lines instead of the list, and its
//! line and column numbers stay those of the file.

use codespan_reporting::files::{Error, Files, line_starts};
use std::ops::Range;

/// Lines longer than this (in bytes) are cut.
const LONG_LINE: usize = 160;
/// Bytes kept on each side of a place a label marks.
const CONTEXT: usize = 40;
const ELISION: &str = " ... ";

/// The text a diagnostic renders, for codespan-reporting: the file with its
/// long lines cut.
pub struct Excerpt<'a> {
    name: &'a str,
    original: &'a str,
    original_lines: Vec<usize>,
    text: String,
    lines: Vec<usize>,
    /// The kept pieces in order: where each starts in the original, where in
    /// `text`, and its length.
    pieces: Vec<Piece>,
}

#[derive(Clone, Copy)]
struct Piece {
    original: usize,
    shown: usize,
    len: usize,
}

impl<'a> Excerpt<'a> {
    /// `marks` are the byte offsets the labels start and end at; each stays
    /// in the excerpt.
    pub fn new(name: &'a str, original: &'a str, marks: &[usize]) -> Excerpt<'a> {
        let original_lines: Vec<usize> = line_starts(original).collect();
        let mut marks = marks.to_vec();
        marks.sort_unstable();
        let mut excerpt = Excerpt {
            name,
            original,
            original_lines: original_lines.clone(),
            text: String::new(),
            lines: Vec::new(),
            pieces: Vec::new(),
        };
        let ends = original_lines.iter().skip(1).copied().chain([original.len()]);
        for (start, next) in original_lines.iter().copied().zip(ends) {
            let end = if original[start..next].ends_with('\n') {
                next - 1
            } else {
                next
            };
            if end - start <= LONG_LINE {
                excerpt.keep(start..next);
                continue;
            }
            let windows = excerpt.windows(start..end, &marks);
            let mut at = start;
            for window in windows {
                if window.start > at {
                    excerpt.text.push_str(ELISION);
                }
                at = window.end;
                excerpt.keep(window);
            }
            if end > at {
                excerpt.text.push_str(ELISION);
            }
            excerpt.keep(end..next);
        }
        excerpt.lines = line_starts(&excerpt.text).collect();
        excerpt
    }

    /// The merged windows of a long line: around each mark on it, or its
    /// beginning if it has none.
    fn windows(&self, line: Range<usize>, marks: &[usize]) -> Vec<Range<usize>> {
        let first = marks.partition_point(|&m| m < line.start);
        let on_line = marks[first..].iter().take_while(|&&m| m <= line.end);
        let mut around: Vec<Range<usize>> = on_line
            .map(|&m| m.saturating_sub(CONTEXT).max(line.start)..(m + CONTEXT).min(line.end))
            .collect();
        if around.is_empty() {
            around.push(line.start..line.start + 2 * CONTEXT);
        }
        let mut merged: Vec<Range<usize>> = Vec::new();
        for w in around {
            let w = self.floor(w.start)..self.ceil(w.end);
            match merged.last_mut() {
                Some(last) if w.start <= last.end + ELISION.len() => last.end = last.end.max(w.end),
                _ => merged.push(w),
            }
        }
        merged
    }

    fn floor(&self, mut i: usize) -> usize {
        while !self.original.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    fn ceil(&self, mut i: usize) -> usize {
        while !self.original.is_char_boundary(i) {
            i += 1;
        }
        i
    }

    fn keep(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.pieces.push(Piece {
            original: range.start,
            shown: self.text.len(),
            len: range.len(),
        });
        self.text.push_str(&self.original[range]);
    }

    /// Where an offset of the original shows; an elided one shows where its
    /// elision begins.
    pub fn shown(&self, original: usize) -> usize {
        let i = self.pieces.partition_point(|p| p.original <= original);
        match i.checked_sub(1).map(|i| self.pieces[i]) {
            Some(p) => p.shown + (original - p.original).min(p.len),
            None => 0,
        }
    }

    pub fn range(&self, original: Range<usize>) -> Range<usize> {
        self.shown(original.start)..self.shown(original.end)
    }

    fn original_of(&self, shown: usize) -> usize {
        let i = self.pieces.partition_point(|p| p.shown <= shown);
        match i.checked_sub(1).map(|i| self.pieces[i]) {
            Some(p) => p.original + (shown - p.shown).min(p.len),
            None => 0,
        }
    }
}

impl<'a> Files<'a> for Excerpt<'a> {
    type FileId = ();
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, (): ()) -> Result<&'a str, Error> {
        Ok(self.name)
    }

    fn source(&'a self, (): ()) -> Result<&'a str, Error> {
        Ok(&self.text)
    }

    fn line_index(&'a self, (): (), byte_index: usize) -> Result<usize, Error> {
        Ok(self.lines.partition_point(|&s| s <= byte_index).saturating_sub(1))
    }

    fn line_range(&'a self, (): (), line_index: usize) -> Result<Range<usize>, Error> {
        let start = *self.lines.get(line_index).ok_or(Error::LineTooLarge {
            given: line_index,
            max: self.lines.len() - 1,
        })?;
        let end = self.lines.get(line_index + 1).copied().unwrap_or(self.text.len());
        Ok(start..end)
    }

    /// The column in the file, not in the excerpt.
    fn column_number(&'a self, (): (), line_index: usize, byte_index: usize) -> Result<usize, Error> {
        let start = self.original_lines.get(line_index).copied().unwrap_or(0);
        let at = self.original_of(byte_index).max(start);
        Ok(self.original[start..at].chars().count() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_kept_whole_and_long_ones_cut_around_the_marks() {
        let long = format!("x = [{}]", "1.0, ".repeat(1000));
        let source = format!("input 2\n{long}\ndense 1\n");
        let mark = 8 + 5 + 5 * 500;
        let e = Excerpt::new("m.cnn", &source, &[mark, mark + 3]);
        let lines: Vec<&str> = e.text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "input 2");
        assert_eq!(lines[2], "dense 1");
        assert!(lines[1].len() < 2 * CONTEXT + 2 * ELISION.len() + 8, "{}", lines[1]);
        assert!(lines[1].starts_with(ELISION) && lines[1].ends_with(ELISION));
        let shown = e.range(mark..mark + 3);
        assert_eq!(&e.text[shown.clone()], &source[mark..mark + 3]);
        assert_eq!(
            e.location((), shown.start).ok().map(|l| l.column_number),
            Some(mark - 8 + 1)
        );
        assert_eq!(
            e.location((), e.shown(source.len() - 3)).ok().map(|l| l.line_number),
            Some(3)
        );
    }
}
