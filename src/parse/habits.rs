//! Keras habits: a line of Keras (Python) pasted into a `.cnn` file, and
//! an activation used as a layer, answered with the `.cnn` line to write.
//!
//! The translation reads the call the way Keras would bind it: positional
//! values in the order of the layer's Keras signature (which is the order
//! of the `.cnn` layer's positional arguments, `layers.rs`), keywords by
//! name. A Keras class finds its layer by name, spelled without case or
//! underscores (`MaxPooling2D` is `maxpooling2d`, an alias of
//! `maxpool2d`), so the table of layers stays the one home of the names.

use super::ast::Activation;
use super::layers::{self, LayerSpec};
use crate::diag::{Diagnostic, Span};

/// What a pasted line becomes.
#[derive(Debug, PartialEq)]
pub struct Translation {
    /// The Keras class called: `Conv2D`.
    pub class: String,
    /// The `.cnn` lines (an `input` line first when the layer gives
    /// `input_shape`), or none for a class cnnc lacks.
    pub lines: Vec<String>,
    /// What was left out, in the user's terms.
    pub dropped: Vec<String>,
}

/// The Keras layer call on `line`, if it is one:
/// `model.add(Conv2D(32, (3, 3), activation='relu'))`,
/// `layers.Dense(10, activation="softmax"),`,
/// `x = keras.layers.Flatten()(x)`, `keras.Input(shape=(28, 28, 1))`.
pub fn keras_line(line: &str) -> Option<Translation> {
    let tokens = lex(line)?;
    let mut p = Parser { tokens, at: 0 };
    // `x = ` of the functional API.
    if let (Some(Token::Name(_)), Some(Token::Punct('='))) = (p.peek(0), p.peek(1)) {
        p.at += 2;
    }
    let mut call = p.call()?;
    // `model.add(...)`: the layer is its one argument.
    if call.name.ends_with(".add") || call.name == "add" {
        match &call.args[..] {
            [(None, Value::Call(inner))] => call = inner.clone(),
            _ => return None,
        }
    }
    // `(x)` of the functional API, a comma of a list, a semicolon.
    if p.eat(&Token::Punct('(')) {
        p.take_name()?;
        p.expect(')')?;
    }
    while p.eat(&Token::Punct(',')) || p.eat(&Token::Punct(';')) || p.eat(&Token::Punct(')')) {}
    if p.at != p.tokens.len() {
        return None;
    }
    translate(&call)
}

/// The diagnostic for a syntax error at `at` in a file holding Keras
/// lines: the line's `.cnn` form, and the whole model's when several
/// lines were pasted. `None` if the file holds no Keras layer line.
pub fn pasted_keras(source: &str, at: usize) -> Option<Diagnostic> {
    let lines: Vec<(Span, Translation)> = line_spans(source)
        .filter_map(|span| keras_line(&source[span.start..span.end]).map(|t| (span, t)))
        .collect();
    let error_line = line_spans(source).find(|s| s.start <= at && at <= s.end)?;
    let here = lines.iter().find(|(span, _)| *span == error_line);
    let (span, first) = match here {
        Some((span, t)) => (*span, t),
        // The error is on a line of Python around the layers (`model =
        // keras.Sequential([`): point at it, and give the layers below.
        None if !lines.is_empty() && looks_like_python(&source[error_line.start..error_line.end]) => {
            let whole = whole_model(&lines)?;
            return Some(
                Diagnostic::error(error_line, "this is Keras (Python), not a line of a .cnn file")
                    .label("Python")
                    .note(format!(
                        "a .cnn file holds only the layers, one per line; the Keras layers of this file are\n{whole}"
                    ))
                    .help("write the model as those lines, and the training settings in a `train { ... }` block"),
            );
        }
        None => return None,
    };
    let text = source[span.start..span.end].trim();
    let start = span.start + (source[span.start..span.end].len() - source[span.start..span.end].trim_start().len());
    let span = Span::new(start, start + text.len());
    let mut d = Diagnostic::error(span, "this is a line of Keras (Python), not of a .cnn file")
        .label(format!("Keras's `{}(...)`", first.class));
    d = match &first.lines[..] {
        [] => d.note(format!(
            "cnnc has no layer like Keras's {}; its layers are {}",
            first.class,
            layer_names()
        )),
        [one] => d.help(format!("write `{one}`")),
        many => d.help(format!("write\n{}", indented(many))),
    };
    for dropped in &first.dropped {
        d = d.note(dropped.clone());
    }
    if lines.len() > 1
        && let Some(whole) = whole_model(&lines)
    {
        d = d.note(format!("the Keras layers of this file, as .cnn:\n{whole}"));
    }
    Some(d)
}

/// `relu` written as a layer: the `activation` layer it means.
pub fn activation_as_layer(keyword: &str, span: Span) -> Option<Diagnostic> {
    let (name, _) = Activation::ALL.iter().find(|(name, _)| *name == keyword)?;
    let d = Diagnostic::error(span, format!("`{name}` is an activation, not a layer"))
        .label("an activation")
        .help(format!(
            "write `activation {name}`, or `activation={name}` on the conv2d or dense layer before"
        ));
    Some(if *name == "leaky_relu" {
        d.note(format!(
            "Keras's LeakyReLU layer, whose slope is {} where the `leaky_relu` activation's is {}, is `leakyrelu`",
            layers::LEAKY_RELU_LAYER_SLOPE,
            Activation::LEAKY_RELU_SLOPE
        ))
    } else {
        d
    })
}

/// Brackets, or an import: not the shape of any `.cnn` line.
fn looks_like_python(line: &str) -> bool {
    let line = line.trim_start();
    line.contains(['(', ')', '[', ']']) || line.starts_with("import ") || line.starts_with("from ")
}

fn layer_names() -> String {
    let names: Vec<&str> = layers::LAYERS.iter().map(|l| l.keyword).collect();
    names.join(", ")
}

fn indented(lines: &[String]) -> String {
    let lines: Vec<String> = lines.iter().map(|l| format!("      {l}")).collect();
    lines.join("\n")
}

/// Every translated line, in order, or `None` if one has no `.cnn` form.
fn whole_model(lines: &[(Span, Translation)]) -> Option<String> {
    let all: Vec<String> = lines.iter().flat_map(|(_, t)| t.lines.iter().cloned()).collect();
    (!all.is_empty() && lines.iter().all(|(_, t)| !t.lines.is_empty())).then(|| indented(&all))
}

/// Each line of `source`, without its line break.
fn line_spans(source: &str) -> impl Iterator<Item = Span> + '_ {
    let mut start = 0;
    source.split_inclusive('\n').map(move |line| {
        let span = Span::new(start, start + line.trim_end_matches(['\n', '\r']).len());
        start += line.len();
        span
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// A dotted name: `keras.layers.Conv2D`, `True`.
    Name(String),
    /// As written.
    Number(String),
    Str(String),
    Punct(char),
}

fn lex(line: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            break;
        }
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Name(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || ((c == '-' || c == '.') && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            tokens.push(Token::Number(chars[start..i].iter().collect()));
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..].iter().position(|&q| q == c)? + i + 1;
            tokens.push(Token::Str(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if "()[],=;".contains(c) {
            tokens.push(Token::Punct(c));
            i += 1;
        } else {
            return None;
        }
    }
    Some(tokens)
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Number(String),
    Str(String),
    Name(String),
    Tuple(Vec<Value>),
    Call(Call),
}

#[derive(Clone, Debug, PartialEq)]
struct Call {
    name: String,
    args: Vec<(Option<String>, Value)>,
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.at + ahead)
    }

    fn eat(&mut self, t: &Token) -> bool {
        let matched = self.peek(0) == Some(t);
        self.at += usize::from(matched);
        matched
    }

    fn expect(&mut self, c: char) -> Option<()> {
        self.eat(&Token::Punct(c)).then_some(())
    }

    fn take_name(&mut self) -> Option<String> {
        match self.peek(0) {
            Some(Token::Name(n)) => {
                let n = n.clone();
                self.at += 1;
                Some(n)
            }
            _ => None,
        }
    }

    fn call(&mut self) -> Option<Call> {
        let name = self.take_name()?;
        self.expect('(')?;
        let mut args = Vec::new();
        while !self.eat(&Token::Punct(')')) {
            let key = match (self.peek(0), self.peek(1)) {
                (Some(Token::Name(k)), Some(Token::Punct('='))) => {
                    let k = k.clone();
                    self.at += 2;
                    Some(k)
                }
                _ => None,
            };
            args.push((key, self.value()?));
            if !self.eat(&Token::Punct(',')) {
                self.expect(')')?;
                break;
            }
        }
        Some(Call { name, args })
    }

    fn value(&mut self) -> Option<Value> {
        match self.peek(0)?.clone() {
            Token::Number(n) => {
                self.at += 1;
                Some(Value::Number(n))
            }
            Token::Str(s) => {
                self.at += 1;
                Some(Value::Str(s))
            }
            Token::Name(_) if self.peek(1) == Some(&Token::Punct('(')) => self.call().map(Value::Call),
            Token::Name(n) => {
                self.at += 1;
                Some(Value::Name(n))
            }
            Token::Punct(open @ ('(' | '[')) => {
                self.at += 1;
                let close = if open == '(' { ')' } else { ']' };
                let mut items = Vec::new();
                while !self.eat(&Token::Punct(close)) {
                    items.push(self.value()?);
                    if !self.eat(&Token::Punct(',')) {
                        self.expect(close)?;
                        break;
                    }
                }
                Some(Value::Tuple(items))
            }
            Token::Punct(_) => None,
        }
    }
}

/// The last component of a dotted name: `keras.layers.Conv2D` is `Conv2D`.
fn last(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// A value as `.cnn` writes it, or `None` for Python's `None` (Keras's
/// default, so left out).
fn cnn_value(v: &Value) -> Option<String> {
    Some(match v {
        Value::Number(n) => n.clone(),
        Value::Str(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => s.clone(),
        Value::Str(s) => format!("\"{s}\""),
        Value::Name(n) => match last(n) {
            "None" => return None,
            "True" => "true".into(),
            "False" => "false".into(),
            // `activation=tf.nn.relu`, `keras.activations.gelu`.
            other => other.to_string(),
        },
        Value::Tuple(items) => {
            let parts: Option<Vec<String>> = items.iter().map(cnn_value).collect();
            let parts = parts?;
            let whole = parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            match parts.len() {
                1 => parts[0].clone(),
                _ if whole => parts.join("x"),
                _ => format!("[{}]", parts.join(", ")),
            }
        }
        Value::Call(c) => {
            let args: Vec<String> = c
                .args
                .iter()
                .filter_map(|(k, v)| {
                    let v = cnn_value(v)?;
                    Some(k.as_ref().map_or(v.clone(), |k| format!("{k}={v}")))
                })
                .collect();
            format!("{}({})", last(&c.name), args.join(", "))
        }
    })
}

/// The layer a Keras class names: its lowercase name without underscores
/// is one of a layer's spellings without underscores.
fn spec_of(class: &str) -> Option<&'static LayerSpec> {
    let plain = |s: &str| s.replace('_', "").to_ascii_lowercase();
    let want = plain(class);
    layers::LAYERS.iter().find(|l| {
        std::iter::once(l.keyword)
            .chain(l.aliases.iter().copied())
            .any(|s| plain(s) == want)
    })
}

/// Keyword arguments written positionally in `.cnn` when they come in
/// order: the sizes a layer is written with (`conv2d 32 3x3`).
const LEADING: [&str; 6] = ["filters", "kernel_size", "units", "pool_size", "rate", "negative_slope"];

fn translate(call: &Call) -> Option<Translation> {
    let class = last(&call.name).to_string();
    let mut t = Translation {
        class: class.clone(),
        lines: Vec::new(),
        dropped: Vec::new(),
    };
    if class == "Input" || class == "InputLayer" {
        let shape = call
            .args
            .iter()
            .find(|(k, _)| k.is_none() || matches!(k.as_deref(), Some("shape" | "input_shape" | "batch_shape")))
            .and_then(|(_, v)| cnn_value(v))?;
        t.lines.push(format!("input {shape}"));
        return Some(t);
    }
    // ReLU(), Softmax(): the activation layer.
    if let Some((name, _)) = Activation::ALL
        .iter()
        .find(|(n, _)| n.replace('_', "") == class.to_ascii_lowercase())
        && spec_of(&class).is_none()
    {
        t.lines.push(format!("activation {name}"));
        for (k, _) in &call.args {
            t.dropped.push(format!(
                "`{}` is left out: cnnc's {name} has no arguments",
                k.as_deref().unwrap_or("a value")
            ));
        }
        return Some(t);
    }
    let Some(spec) = spec_of(&class) else {
        // Only a call that is surely a Keras layer is one.
        let layer = call.name.contains("layers.") || class.ends_with("2D") || class.ends_with("1D");
        return layer.then_some(t);
    };
    let accepted = spec.arguments();
    let mut positional = Vec::new();
    let mut named = Vec::new();
    for (i, (key, value)) in call.args.iter().enumerate() {
        let Some(text) = cnn_value(value) else { continue };
        match key.as_deref() {
            None if i < spec.positional.len() && positional.len() == i => positional.push(text),
            None => t.dropped.push(format!(
                "the value `{text}` is left out: cnnc's `{}` takes {} without a name",
                spec.keyword,
                spec.positional.len()
            )),
            Some("input_shape") => t.lines.push(format!("input {text}")),
            Some(k) if spec.positional.get(positional.len()) == Some(&k) && LEADING.contains(&k) => {
                positional.push(text)
            }
            Some("data_format") if text == "channels_last" => {}
            Some(k) if accepted.contains(&k) => named.push(format!("{k}={text}")),
            Some(k) => t
                .dropped
                .push(format!("`{k}` is left out: cnnc's `{}` has no `{k}`", spec.keyword)),
        }
    }
    let mut words = vec![spec.keyword.to_string()];
    words.extend(positional);
    words.extend(named);
    t.lines.push(words.join(" "));
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cnn(line: &str) -> Vec<String> {
        keras_line(line).unwrap_or_else(|| panic!("not read: {line}")).lines
    }

    #[test]
    fn the_common_layers_in_their_usual_spellings() {
        for (keras, want) in [
            (
                "model.add(Conv2D(32, (3, 3), activation='relu'))",
                "conv2d 32 3x3 activation=relu",
            ),
            (
                "layers.Conv2D(32, kernel_size=3, strides=(2, 2), padding=\"same\"),",
                "conv2d 32 3 strides=2x2 padding=same",
            ),
            (
                "keras.layers.Dense(10, activation=\"softmax\")",
                "dense 10 activation=softmax",
            ),
            ("model.add(MaxPooling2D(pool_size=(2, 2)))", "maxpool2d 2x2"),
            ("tf.keras.layers.Dropout(0.25),", "dropout 0.25"),
            ("layers.Flatten()", "flatten"),
            ("layers.BatchNormalization(momentum=0.9)", "batchnorm momentum=0.9"),
            ("layers.Activation('relu')", "activation relu"),
            ("layers.ReLU()", "activation relu"),
            (
                "layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)",
                "depthwiseconv2d 3 depth_multiplier=2 use_bias=false",
            ),
            ("layers.AveragePooling2D(2)", "avgpool2d 2"),
            ("layers.GlobalAveragePooling2D()", "globalavgpool2d"),
            ("layers.GlobalMaxPool2D(keepdims=True)", "globalmaxpool2d keepdims=true"),
            ("layers.LeakyReLU(negative_slope=0.1)", "leakyrelu 0.1"),
            ("layers.ELU(alpha=0.5)", "elu alpha=0.5"),
            (
                "x = layers.Dense(64, activation=keras.activations.gelu)(x)",
                "dense 64 activation=gelu",
            ),
            ("keras.Input(shape=(28, 28, 1))", "input 28x28x1"),
            ("Input((784,))", "input 784"),
        ] {
            assert_eq!(cnn(keras), [want], "{keras}");
        }
    }

    #[test]
    fn input_shape_becomes_an_input_line_and_the_rest_is_named() {
        let t = keras_line("model.add(Conv2D(8, (5, 5), input_shape=(28, 28, 1), dilation_rate=2))").unwrap();
        assert_eq!(t.lines, ["input 28x28x1", "conv2d 8 5x5"]);
        assert_eq!(
            t.dropped,
            ["`dilation_rate` is left out: cnnc's `conv2d` has no `dilation_rate`"]
        );
    }

    #[test]
    fn lines_that_are_not_keras_layers() {
        for line in ["conv2d 32 3x3", "model = keras.Sequential([", "print(x)", "])"] {
            assert_eq!(keras_line(line), None, "{line}");
        }
        let unknown = keras_line("layers.Conv3D(8, 3)").unwrap();
        assert!(unknown.lines.is_empty());
    }
}
