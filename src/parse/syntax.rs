//! The generic shape of a `.cnn` line, as the pest grammar sees it: a keyword,
//! values and `key=value` pairs, or a `keyword { ... }` block. Meaning is
//! given to it by the tables in `layers.rs` and `train.rs`.

use crate::diag::{Diagnostic, Span};
use pest::Parser;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "../grammar/cnn.pest"]
struct CnnParser;

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub keyword: Word,
    pub args: Vec<Argument>,
    /// `Some` for `keyword { ... }`.
    pub block: Option<Vec<Statement>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Argument {
    pub key: Option<Word>,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    /// The text is kept to tell `3` from `3.0`.
    Number(f64, String),
    /// `28x28x1`.
    Dims(Vec<u64>),
    Name(String),
    Str(String),
    List(Vec<Value>),
    /// `l2(0.01)`: a name applied to arguments, as Keras writes a
    /// regularizer.
    Call(String, Vec<Argument>),
    /// `$name`: a parameter's value, until `params` substitutes it.
    Param(String),
}

impl ValueKind {
    /// The value as it would be written in a file.
    pub fn text(&self) -> String {
        match self {
            ValueKind::Number(_, text) => text.clone(),
            ValueKind::Dims(d) => d.iter().map(u64::to_string).collect::<Vec<_>>().join("x"),
            ValueKind::Name(n) => n.clone(),
            ValueKind::Str(s) => format!("\"{s}\""),
            ValueKind::List(items) => format!(
                "[{}]",
                items.iter().map(|v| v.kind.text()).collect::<Vec<_>>().join(", ")
            ),
            ValueKind::Call(name, args) => {
                let args: Vec<String> = args
                    .iter()
                    .map(|a| match &a.key {
                        Some(k) => format!("{}={}", k.text, a.value.kind.text()),
                        None => a.value.kind.text(),
                    })
                    .collect();
                format!("{name}({})", args.join(", "))
            }
            ValueKind::Param(name) => format!("${name}"),
        }
    }

    /// How the value reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            ValueKind::Number(_, text) => format!("the number `{text}`"),
            ValueKind::Dims(d) => format!(
                "the size `{}`",
                d.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
            ),
            ValueKind::Name(n) => format!("`{n}`"),
            ValueKind::Str(s) => format!("the string \"{s}\""),
            ValueKind::List(items) => format!("a list of {} values", items.len()),
            ValueKind::Call(..) => format!("`{}`", self.text()),
            ValueKind::Param(name) => format!("the parameter `${name}`"),
        }
    }

    /// Whether a parameter is left in it, one that named no declared
    /// parameter (and was reported as such).
    pub fn has_param(&self) -> bool {
        match self {
            ValueKind::Param(_) => true,
            ValueKind::List(items) => items.iter().any(|v| v.kind.has_param()),
            ValueKind::Call(_, args) => args.iter().any(|a| a.value.kind.has_param()),
            _ => false,
        }
    }
}

/// Lists nest at most this deep. Weights nest four levels (HWIO); the limit
/// keeps a file of ten thousand `[` from exhausting the stack of the
/// recursive parser and of everything that walks the list afterwards.
pub const MAX_LIST_NESTING: usize = 16;

/// Splits the source into statements, or reports the first syntax error.
pub fn parse(source: &str) -> Result<Vec<Statement>, Diagnostic> {
    let delimiters = Delimiters::scan(source);
    if let Some(at) = delimiters.too_deep {
        return Err(Diagnostic::error(
            Span::new(at, at + 1),
            format!("lists nest more than {MAX_LIST_NESTING} deep"),
        )
        .label("too deep")
        .note("a conv2d kernel, the deepest weight, nests four levels: height, width, in, out"));
    }
    if let Some(at) = delimiters.calls_too_deep {
        return Err(Diagnostic::error(
            Span::new(at, at + 1),
            format!("calls nest more than {MAX_LIST_NESTING} deep"),
        )
        .label("too deep")
        .note("a regularizer such as `l2(0.01)` is a call one level deep"));
    }
    let mut pairs = CnnParser::parse(Rule::file, source).map_err(|e| syntax_error(source, &delimiters, e))?;
    let file = pairs.next().map(Pair::into_inner);
    file.into_iter()
        .flatten()
        .filter(|p| p.as_rule() != Rule::EOI)
        .map(statement)
        .collect()
}

/// Parses one value, as the command line gives it (`--set act=relu`);
/// spans are offsets into `text`.
pub fn lone_value(text: &str) -> Result<Value, Diagnostic> {
    let delimiters = Delimiters::scan(text);
    if let Some(at) = delimiters.too_deep {
        return Err(Diagnostic::error(
            Span::new(at, at + 1),
            format!("lists nest more than {MAX_LIST_NESTING} deep"),
        )
        .label("too deep"));
    }
    let mut pairs = CnnParser::parse(Rule::lone_value, text).map_err(|e| {
        let e = syntax_error(text, &delimiters, e);
        if e.message.contains("never closed") {
            return e;
        }
        // The file's hints speak of lines and keywords; a lone value's
        // say what values look like.
        Diagnostic::error(e.span, format!("`{text}` is not a value"))
            .label("not a value")
            .help("write it as in a model file: a number `0.5`, a size `3x3`, a name `relu`, a list `[1, 2]` or a string `\"data/\"`")
    })?;
    let value = pairs
        .next()
        .and_then(|p| p.into_inner().find(|p| p.as_rule() != Rule::EOI));
    match value {
        Some(v) => self::value(v),
        None => Err(Diagnostic::error(Span::new(0, text.len()), "no value").label("expected a value")),
    }
}

fn statement(pair: Pair<Rule>) -> Result<Statement, Diagnostic> {
    let span = Span::from(pair.as_span());
    let is_block = pair.as_rule() == Rule::block;
    let mut inner = pair.into_inner();
    let keyword = match inner.next() {
        Some(k) => word(&k),
        None => return Err(Diagnostic::error(span, "empty statement")),
    };
    let mut args = Vec::new();
    let mut body = Vec::new();
    for p in inner {
        match p.as_rule() {
            Rule::statement => body.push(statement(p)?),
            _ => args.push(argument(p)?),
        }
    }
    Ok(Statement {
        keyword,
        args,
        block: is_block.then_some(body),
        span,
    })
}

/// A `key=value` pair or a bare value.
fn argument(pair: Pair<Rule>) -> Result<Argument, Diagnostic> {
    if pair.as_rule() != Rule::keyword_arg {
        return Ok(Argument {
            key: None,
            value: value(pair)?,
        });
    }
    let span = Span::from(pair.as_span());
    let mut kv = pair.into_inner();
    let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
        return Err(Diagnostic::error(span, "malformed `key=value`"));
    };
    Ok(Argument {
        key: Some(word(&k)),
        value: value(v)?,
    })
}

fn word(pair: &Pair<Rule>) -> Word {
    Word {
        text: pair.as_str().to_string(),
        span: pair.as_span().into(),
    }
}

const F32_RANGE: &str =
    "numbers must fit a 32-bit float: at most about 3.4e38 in size, and 0 or at least about 1.4e-45";

fn value(pair: Pair<Rule>) -> Result<Value, Diagnostic> {
    let span = Span::from(pair.as_span());
    let text = pair.as_str();
    let kind = match pair.as_rule() {
        // Every number ends up in a 32-bit float (weights, hyperparameters)
        // or below it (counts, sizes, seeds): one outside its range would
        // silently become inf or 0.
        Rule::number => match text.parse::<f64>() {
            Ok(x) if x.abs() > f64::from(f32::MAX) || !x.is_finite() => {
                return Err(Diagnostic::error(span, format!("`{text}` is too large a number"))
                    .label("too large")
                    .note(F32_RANGE));
            }
            Ok(x) if x != 0.0 && x as f32 == 0.0 => {
                return Err(Diagnostic::error(span, format!("`{text}` is too small a number"))
                    .label("too small: it would be 0")
                    .note(F32_RANGE)
                    .help("write 0 if zero is meant"));
            }
            Ok(x) => ValueKind::Number(x, text.to_string()),
            Err(_) => return Err(Diagnostic::error(span, format!("`{text}` is not a number")).label("not a number")),
        },
        Rule::dims => {
            let mut dims = Vec::new();
            for part in text.split('x') {
                match part.parse::<u64>() {
                    Ok(d) => dims.push(d),
                    Err(_) => {
                        return Err(Diagnostic::error(span, format!("`{part}` is too large a size")).label("too large"));
                    }
                }
            }
            ValueKind::Dims(dims)
        }
        Rule::name => ValueKind::Name(text.to_string()),
        Rule::param => ValueKind::Param(text[1..].to_string()),
        Rule::string => ValueKind::Str(pair.into_inner().as_str().to_string()),
        Rule::list => ValueKind::List(pair.into_inner().map(value).collect::<Result<_, _>>()?),
        Rule::call => {
            let mut inner = pair.into_inner();
            let name = inner.next().map(|n| n.as_str().to_string()).unwrap_or_default();
            ValueKind::Call(name, inner.map(argument).collect::<Result<_, _>>()?)
        }
        other => return Err(Diagnostic::error(span, format!("unexpected {other:?}"))),
    };
    Ok(Value { kind, span })
}

/// Where lists and blocks open without closing, found by a scan that skips
/// comments and strings as the grammar does. Pest can only say "expected
/// ..." where it gave up, often far from the bracket that was left open.
struct Delimiters {
    unclosed_lists: Vec<usize>,
    unclosed_blocks: Vec<usize>,
    too_deep: Option<usize>,
    /// Where `(` first opens a call nested too deep (on one line).
    calls_too_deep: Option<usize>,
}

impl Delimiters {
    fn scan(source: &str) -> Delimiters {
        let mut lists = Vec::new();
        let mut blocks = Vec::new();
        let mut too_deep = None;
        let mut calls = 0usize;
        let mut calls_too_deep = None;
        let mut in_comment = false;
        let mut in_string = false;
        for (i, c) in source.char_indices() {
            if c == '\n' || c == '\r' {
                in_comment = false;
                in_string = false;
                calls = 0;
                continue;
            }
            if in_comment {
                continue;
            }
            if in_string {
                in_string = c != '"';
                continue;
            }
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '[' => {
                    lists.push(i);
                    if lists.len() > MAX_LIST_NESTING && too_deep.is_none() {
                        too_deep = Some(i);
                    }
                }
                ']' => {
                    lists.pop();
                }
                '(' => {
                    calls += 1;
                    if calls > MAX_LIST_NESTING && calls_too_deep.is_none() {
                        calls_too_deep = Some(i);
                    }
                }
                ')' => calls = calls.saturating_sub(1),
                '{' => blocks.push(i),
                '}' => {
                    blocks.pop();
                }
                _ => {}
            }
        }
        Delimiters {
            unclosed_lists: lists,
            unclosed_blocks: blocks,
            too_deep,
            calls_too_deep,
        }
    }
}

/// Characters that can begin a token of the grammar; anything else is a
/// stray character and is reported alone.
fn starts_token(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.\"[]{},=$".contains(c)
}

/// Turns pest's "expected X, Y" into the user's vocabulary.
fn syntax_error(source: &str, delimiters: &Delimiters, error: pest::error::Error<Rule>) -> Diagnostic {
    let mut start = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    }
    .min(source.len());
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    // Keras pasted in: its brackets are what pest stumbles on.
    if let Some(keras) = super::habits::pasted_keras(source, start) {
        return keras;
    }
    let expected = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => describe_rules(positives),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    if let Some(&open) = delimiters.unclosed_lists.iter().rev().find(|&&at| at <= start) {
        return Diagnostic::error(Span::new(open, open + 1), "syntax error: this list is never closed")
            .label("unclosed `[`")
            .help("close the list with `]`, e.g. `kernel_initializer=[1, 2]`");
    }
    if let Some(&open) = delimiters.unclosed_blocks.iter().rev().find(|&&at| at <= start) {
        return Diagnostic::error(Span::new(open, open + 1), "syntax error: this block is never closed")
            .label("unclosed `{`")
            .help("close the block with `}` on a line of its own after its settings");
    }
    let line_start = source[..start].rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let at_line_start = source[line_start..start].trim().is_empty();
    let Some(c) = source[start..].chars().next() else {
        return Diagnostic::error(Span::new(start, start), "syntax error: unexpected end of file")
            .label(format!("expected {expected}"));
    };
    if c == '\n' || c == '\r' {
        let before = source[line_start..start].trim_end();
        if let Some(key) = before.strip_suffix('=') {
            let key = key.trim_end();
            let key_start = key
                .char_indices()
                .rfind(|&(_, c)| c.is_whitespace())
                .map_or(line_start, |(i, c)| line_start + i + c.len_utf8());
            let key = &source[key_start..line_start + key.len()];
            return Diagnostic::error(
                Span::new(key_start, line_start + before.len()),
                format!("syntax error: `{key}=` has no value"),
            )
            .label("missing value")
            .help("write the value right after `=` on the same line, e.g. `activation=relu`");
        }
        return Diagnostic::error(Span::new(start, start), "syntax error: unexpected end of line")
            .label(format!("expected {expected}"));
    }
    if !starts_token(c) {
        let span = Span::new(start, start + c.len_utf8());
        let shown = if c.is_whitespace() || c.is_control() || c == '\u{feff}' {
            format!("U+{:04X}", u32::from(c))
        } else if c.is_ascii() {
            format!("`{c}`")
        } else {
            format!("`{c}` (U+{:04X})", u32::from(c))
        };
        let diag = Diagnostic::error(span, format!("syntax error: unexpected character {shown}"))
            .label(format!("expected {expected}"));
        return match c {
            '\u{feff}' => diag.help("the file starts with a byte-order mark; save it as UTF-8 without BOM"),
            '×' | '✕' | '⨯' => diag.help("sizes use the letter x: `28x28x1`"),
            '“' | '”' | '„' | '«' | '»' => diag.help("strings use straight quotes: `\"celeb8/\"`"),
            ':' => diag.help("arguments are written `name=value`, not `name: value`"),
            '\'' => diag.help("strings use double quotes: `\"celeb8/\"`"),
            '(' | ')' => diag.help("sizes are written like `3x3`, lists like `[1, 2]`"),
            _ if c.is_whitespace() => diag.help("replace it with an ordinary space"),
            _ => diag.help("remove it"),
        };
    }
    // Underline the whole offending token, not a single column.
    let token_end = source[start..]
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c.is_whitespace() || c == ',' || c == ']')
        .map_or(source.len(), |(i, _)| start + i);
    let found = &source[start..token_end];
    if c == '$' {
        return Diagnostic::error(
            Span::new(start, token_end),
            format!("syntax error: `{found}` is not a parameter"),
        )
        .label(format!("expected {expected}"))
        .help("`$` starts the use of a parameter, `$name`, declared with `param name = VALUE`; or remove it");
    }
    if c == '"' {
        return Diagnostic::error(Span::new(start, token_end), "syntax error: this string is never closed")
            .label("no closing `\"` on this line")
            .help("a string ends with `\"` on the line it starts, e.g. `data \"celeb8/\"`");
    }
    if c == '{' && !Delimiters::scan(&source[..start]).unclosed_blocks.is_empty() {
        return Diagnostic::error(Span::new(start, start + 1), "syntax error: blocks cannot be nested")
            .label("a block inside a block")
            .help("only `train` opens a block; write its settings one per line, e.g. `optimizer adam`");
    }
    let diag = Diagnostic::error(
        Span::new(start, token_end),
        format!("syntax error: unexpected `{found}`"),
    )
    .label(format!("expected {expected}"));
    if c.is_ascii_digit() && found.contains(|c: char| c.is_ascii_alphabetic() && c != 'x' && c != 'e') {
        diag.help("sizes are written like `3x3` or `28x28x1`, numbers like `0.5` or `1e-3`")
    } else if c == '{' || c == '}' {
        diag.help("a block is written `train {` on one line, its settings on the lines below, `}` on its own line")
    } else if c == '=' {
        diag.help("arguments are written `name=value`, on the line of the layer they belong to")
    } else if at_line_start {
        diag.help("each line starts with a keyword: a layer such as `dense`, or `input`, `model`, `train`")
    } else {
        diag
    }
}

fn describe_rules(rules: &[Rule]) -> String {
    let mut words: Vec<&str> = rules
        .iter()
        .map(|r| match r {
            Rule::keyword | Rule::statement | Rule::block | Rule::name => "a name",
            Rule::keyword_arg => "an argument `name=value`",
            Rule::value | Rule::number | Rule::dims | Rule::string | Rule::list | Rule::call | Rule::param => "a value",
            Rule::EOI | Rule::line_end => "the end of the line",
            _ => "something else",
        })
        .collect();
    words.sort_unstable();
    words.dedup();
    match words.as_slice() {
        [] => "something else".to_string(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_positional_keyword_and_list_arguments() {
        let s = parse("conv2d 32 3x3 strides=2 kernel=[1, -2.5e-1]\n").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].keyword.text, "conv2d");
        assert_eq!(s[0].args[0].value.kind, ValueKind::Number(32.0, "32".into()));
        assert_eq!(s[0].args[1].value.kind, ValueKind::Dims(vec![3, 3]));
        assert_eq!(s[0].args[2].key.as_ref().unwrap().text, "strides");
        let ValueKind::List(items) = &s[0].args[3].value.kind else {
            panic!("expected a list")
        };
        assert_eq!(items[1].kind, ValueKind::Number(-0.25, "-2.5e-1".into()));
    }

    #[test]
    fn blocks_hold_statements_and_comments_vanish() {
        let s = parse("# hi\ntrain {\n  epochs 3 # three\n\n  optimizer sgd lr=0.1\n}\n").unwrap();
        assert_eq!(s.len(), 1);
        let body = s[0].block.as_ref().unwrap();
        assert_eq!(body.len(), 2);
        assert_eq!(body[1].args.len(), 2);
    }

    #[test]
    fn a_stray_multibyte_character_is_underlined_alone() {
        // A no-break space once made the error's span end inside it.
        let src = "input 784\ndense\u{a0}10\n";
        let e = parse(src).unwrap_err();
        assert_eq!(&src[e.span.start..e.span.end], "\u{a0}");
    }

    #[test]
    fn deep_lists_are_refused_before_parsing() {
        let src = format!("dense 1 kernel_initializer={}\n", "[".repeat(100_000));
        let e = parse(&src).unwrap_err();
        assert!(e.message.contains("nest"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let src = "input 28x28x1\nconv2d 32 3y3\n";
        let e = parse(src).unwrap_err();
        assert_eq!(&src[e.span.start..e.span.end], "3y3");
    }
}
