//! Diagnostics: errors are values that carry a source span, a message in the
//! user's terms and, where a fix is known, a `help:` line. They are rendered
//! the way rustc renders them (file:line:col, the source line, a caret
//! underline) by codespan-reporting.

mod excerpt;

use codespan_reporting::diagnostic::{Diagnostic as Report, Label};
use codespan_reporting::term::{self, Chars, Config};
use excerpt::Excerpt;
use std::fmt;
use std::ops::Range;

/// A byte range in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    fn range(self) -> Range<usize> {
        self.start..self.end
    }
}

impl From<pest::Span<'_>> for Span {
    fn from(span: pest::Span<'_>) -> Span {
        Span::new(span.start(), span.end())
    }
}

/// One error about the user's model.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Span,
    /// Short text printed under the caret.
    pub label: String,
    /// Secondary places, e.g. the earlier layer an error follows from.
    pub related: Vec<(Span, String)>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span,
            label: String::new(),
            related: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push((span, label.into()));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Adds a did-you-mean help when `word` is close to one of `candidates`.
    pub fn did_you_mean<'a>(self, word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Diagnostic {
        match closest(word, candidates) {
            Some(best) => self.help(format!("did you mean `{best}`?")),
            None => self,
        }
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to
/// be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let near = |c: &str| (c.len().max(word.len()) / 3).max(1);
    candidates
        .into_iter()
        // The distance is at least the difference in length; skipping those
        // keeps a megabyte-long word from costing seconds.
        .filter(|c| word.len().abs_diff(c.len()) <= near(c))
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|&(d, c)| d <= near(c))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: Levenshtein plus adjacent swaps, the
/// most common typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Several independent errors from one run, and the source they point into.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub file: String,
    pub source: String,
    pub errors: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Renders all errors rustc-style, followed by a count line.
    pub fn render(&self) -> String {
        let spans = self
            .errors
            .iter()
            .flat_map(|e| std::iter::once(e.span).chain(e.related.iter().map(|r| r.0)));
        let marks: Vec<usize> = spans
            .flat_map(|s| {
                let r = clamp(s, &self.source);
                [r.start, r.end]
            })
            .collect();
        let file = Excerpt::new(&self.file, &self.source, &marks);
        let config = Config {
            chars: Chars::ascii(),
            ..Config::default()
        };
        let mut out = String::new();
        for error in &self.errors {
            let shown = |span| file.range(clamp(span, &self.source));
            let mut labels = vec![Label::primary((), shown(error.span)).with_message(bounded(&error.label))];
            for (span, text) in &error.related {
                labels.push(Label::secondary((), shown(*span)).with_message(bounded(text)));
            }
            let mut notes: Vec<String> = error.notes.iter().map(|n| format!("note: {}", bounded(n))).collect();
            if let Some(help) = &error.help {
                notes.push(format!("help: {}", bounded(help)));
            }
            let report = Report::error()
                .with_message(bounded(&error.message))
                .with_labels(labels)
                .with_notes(notes);
            match term::emit_into_string(&config, &file, &report) {
                Ok(text) => out.push_str(&text),
                Err(_) => out.push_str(&format!("error: {}\n", bounded(&error.message))),
            }
        }
        let n = self.errors.len();
        if n > 1 {
            let what = match self.file.as_str() {
                crate::parse::params::COMMAND_LINE => "the command line".to_string(),
                file => format!("`{file}`"),
            };
            out.push_str(&format!("error: could not check {what} due to {n} errors\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// A message, label or note cut short if it echoes a long piece of the
/// user's text (a megabyte-long name, say).
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        None => text.into(),
        Some((end, _)) => {
            let more = text[end..].chars().count();
            format!("{} ... ({more} more characters)", &text[..end]).into()
        }
    }
}

/// Keeps a span inside the text and on character boundaries, so a rendering
/// can never fail on a bad span.
fn clamp(span: Span, source: &str) -> Range<usize> {
    let fix = |mut i: usize| {
        i = i.min(source.len());
        while !source.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    Span::new(fix(span.start), fix(span.end.max(span.start))).range()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_rejects_strangers() {
        let layers = ["conv2d", "dense", "maxpool2d", "flatten"];
        assert_eq!(closest("conv2", layers), Some("conv2d"));
        assert_eq!(closest("dnese", layers), Some("dense"));
        assert_eq!(closest("Flaten", layers), Some("flatten"));
        assert_eq!(closest("lstm", layers), None);
    }
}
