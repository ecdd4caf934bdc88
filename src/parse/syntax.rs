//! The generic shape of a `.cnn` line, as the pest grammar sees it: a keyword,
//! values and `key=value` pairs, or a `keyword { ... }` block. Meaning is
//! given to it in `build.rs`.

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
}

impl ValueKind {
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
        }
    }
}

/// Splits the source into statements, or reports the first syntax error.
pub fn parse(source: &str) -> Result<Vec<Statement>, Diagnostic> {
    let mut pairs = CnnParser::parse(Rule::file, source).map_err(|e| syntax_error(source, e))?;
    let file = pairs.next().map(Pair::into_inner);
    file.into_iter()
        .flatten()
        .filter(|p| p.as_rule() != Rule::EOI)
        .map(statement)
        .collect()
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
            Rule::keyword_arg => {
                let mut kv = p.into_inner();
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    return Err(Diagnostic::error(span, "malformed `key=value`"));
                };
                args.push(Argument {
                    key: Some(word(&k)),
                    value: value(v)?,
                });
            }
            _ => args.push(Argument {
                key: None,
                value: value(p)?,
            }),
        }
    }
    Ok(Statement {
        keyword,
        args,
        block: is_block.then_some(body),
        span,
    })
}

fn word(pair: &Pair<Rule>) -> Word {
    Word {
        text: pair.as_str().to_string(),
        span: pair.as_span().into(),
    }
}

fn value(pair: Pair<Rule>) -> Result<Value, Diagnostic> {
    let span = Span::from(pair.as_span());
    let text = pair.as_str();
    let kind = match pair.as_rule() {
        Rule::number => match text.parse::<f64>() {
            Ok(x) if x.is_finite() => ValueKind::Number(x, text.to_string()),
            _ => return Err(Diagnostic::error(span, format!("`{text}` is too large a number")).label("not finite")),
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
        Rule::string => ValueKind::Str(pair.into_inner().as_str().to_string()),
        Rule::list => ValueKind::List(pair.into_inner().map(value).collect::<Result<_, _>>()?),
        other => return Err(Diagnostic::error(span, format!("unexpected {other:?}"))),
    };
    Ok(Value { kind, span })
}

/// Turns pest's "expected X, Y" into the user's vocabulary.
fn syntax_error(source: &str, error: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match error.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    // Underline the whole offending token, not a single column.
    let token_end = source[start..]
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || c == ',' || c == ']')
        .map_or(source.len(), |(i, _)| start + i)
        .max(end);
    let span = Span::new(start, token_end.max(start + 1).min(source.len().max(start)));
    let found = &source[span.start..span.end.min(source.len())];
    let expected = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => describe_rules(positives),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let what = if found.is_empty() {
        "unexpected end of line".to_string()
    } else {
        format!("unexpected `{found}`")
    };
    let diag = Diagnostic::error(span, format!("syntax error: {what}")).label(format!("expected {expected}"));
    match found.chars().next() {
        Some(c) if c.is_ascii_digit() && found.contains(|c: char| c.is_ascii_alphabetic() && c != 'x' && c != 'e') => {
            diag.help("sizes are written like `3x3` or `28x28x1`, numbers like `0.5` or `1e-3`")
        }
        Some('{') | Some('}') => {
            diag.help("a block is written `train {` on one line, its settings on the lines below, `}` on its own line")
        }
        Some('=') => diag.help("arguments are written `name=value` with no space before `=`"),
        _ => diag,
    }
}

fn describe_rules(rules: &[Rule]) -> String {
    let mut words: Vec<&str> = rules
        .iter()
        .map(|r| match r {
            Rule::keyword | Rule::statement | Rule::block | Rule::name => "a name",
            Rule::keyword_arg => "an argument `name=value`",
            Rule::value | Rule::number | Rule::dims | Rule::string | Rule::list => "a value",
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
    fn syntax_errors_point_at_the_token() {
        let src = "input 28x28x1\nconv2d 32 3y3\n";
        let e = parse(src).unwrap_err();
        assert_eq!(&src[e.span.start..e.span.end], "3y3");
    }
}
