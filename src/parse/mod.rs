//! Front end: `.cnn` text to a [`ast::Model`] with every Keras default filled
//! in, or every independent error found in the file.
//!
//! The grammar (`grammar/cnn.pest`) gives the shape of a line; `layers.rs`
//! and `train.rs` give it meaning. Shapes are checked later, in `shape`.

// Errors are values here, built only on the error path and once per mistake
// in a file; their size costs nothing worth boxing them for.
#![allow(clippy::result_large_err)]

pub mod args;
pub mod ast;
pub mod habits;
pub mod layers;
pub mod params;
pub mod print;
pub mod regularizer;
pub mod syntax;
pub mod train;

use crate::diag::{Diagnostic, Diagnostics, Span};
use args::Args;
use ast::{Input, Layer, LayerKind, Model};
use std::collections::HashMap;
use syntax::{Statement, Value, ValueKind};

/// The largest model file read, in bytes: some 300,000 layers, far past any
/// real model, and small enough that a wrong path (`/dev/zero`, a dataset)
/// is refused before it fills memory.
pub const MAX_FILE: u64 = 8 << 20;

/// Parses a whole file. `file` names it in diagnostics; its stem is the
/// model's name unless the file says `model NAME`.
pub fn parse(file: &str, source: &str) -> Result<Model, Diagnostics> {
    parse_with(file, source, &params::Overrides::default())
}

/// Parses a whole file with parameter values from the command line. A
/// parameter the file does not declare is an error pointing into the
/// command line; every other error points into the file.
pub fn parse_with(file: &str, source: &str, overrides: &params::Overrides) -> Result<Model, Diagnostics> {
    let fail = |errors: Vec<Diagnostic>| Diagnostics {
        file: file.to_string(),
        source: source.to_string(),
        errors,
    };
    let statements = syntax::parse(source).map_err(|e| fail(vec![e]))?;
    if statements.is_empty() {
        let what = if source.trim().is_empty() {
            "empty file"
        } else {
            "only comments and blank lines"
        };
        return Err(fail(vec![
            Diagnostic::error(Span::new(0, 0), format!("`{file}` has no model in it"))
                .label(what)
                .help("a model is an input and its layers, e.g.\n      input 28x28x1\n      flatten\n      dense 10 activation=softmax"),
        ]));
    }
    let mut errors = Vec::new();
    let (statements, params) = params::resolve(file, statements, overrides, &mut errors)?;
    let model = build(&statements, default_name(file), &mut errors, &Lines::new(source));
    params::explain(&params, &mut errors);
    match model {
        Some(model) if errors.is_empty() => Ok(Model { params, ..model }),
        _ => Err(fail(errors)),
    }
}

fn default_name(file: &str) -> String {
    std::path::Path::new(file)
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned())
}

/// Top-level keywords other than layers.
const MODEL_KEYWORDS: [&str; 4] = ["model", "input", "train", "param"];

fn build(statements: &[Statement], name: String, errors: &mut Vec<Diagnostic>, source: &Lines) -> Option<Model> {
    let mut model_name: Option<(String, Span)> = None;
    let mut input: Option<Input> = None;
    // Where `input` was written, valid or not, so that a bad input line is
    // one error and not also "the model has no input".
    let mut input_span: Option<Span> = None;
    let mut layers = Vec::new();
    let mut train = None;
    let mut train_span: Option<Span> = None;
    let mut names = AutoNames::default();
    let mut first_layer: Option<Span> = None;

    for s in statements {
        let keyword = s.keyword.text.as_str();
        if s.block.is_some() && keyword != "train" {
            errors.push(
                Diagnostic::error(s.keyword.span, format!("`{keyword}` cannot open a block"))
                    .label("not a block")
                    .help("only `train { ... }` is a block"),
            );
            continue;
        }
        match keyword {
            "model" => {
                let mut a = Args::bind(s, &["name"], &["name"]);
                let n = a.require("name", "write e.g. `model mnist_cnn`", valid_model_name);
                errors.append(&mut a.errors);
                if let Some((_, first)) = &model_name {
                    errors.push(twice(s, *first, "the model name").help("keep one `model` line"));
                } else if let Some(n) = n {
                    model_name = Some((n, s.span));
                }
            }
            "input" => {
                let i = input_statement(s, errors, source);
                if let Some(earlier) = input_span {
                    errors.push(twice(s, earlier, "the input").note("a model has exactly one input"));
                    continue;
                }
                input_span = Some(s.span);
                if let Some(first) = first_layer {
                    errors.push(
                        Diagnostic::error(s.keyword.span, "the input comes after the first layer")
                            .label("declared here")
                            .related(first, "first layer")
                            .help("move `input` above the layers"),
                    );
                }
                input = i;
            }
            "train" => {
                if let Some(first) = train_span {
                    errors.push(twice(s, first, "the training block").note("a model has one training block"));
                } else {
                    train_span = Some(s.keyword.span);
                    train = Some(train::build(s, s.block.as_deref().unwrap_or_default(), errors));
                }
            }
            _ => match layers::spec(keyword) {
                Some(spec) => {
                    first_layer.get_or_insert(s.span);
                    if let Some(layer) = layer(s, spec, &mut names, errors, source) {
                        layers.push(layer);
                    }
                }
                None => {
                    if let Some(d) = habits::activation_as_layer(keyword, s.keyword.span) {
                        errors.push(d);
                        continue;
                    }
                    let all = MODEL_KEYWORDS.iter().copied().chain(layers::spellings());
                    let names: Vec<&str> = layers::LAYERS.iter().map(|l| l.keyword).collect();
                    errors.push(
                        Diagnostic::error(s.keyword.span, format!("unknown layer `{keyword}`"))
                            .label("not a layer or setting")
                            .did_you_mean(keyword, all)
                            .note(format!("layers are {}", names.join(", "))),
                    );
                }
            },
        }
    }

    unique_names(&layers, errors);
    let Some(input) = input else {
        if input_span.is_some() {
            return None;
        }
        // A file with statements has a first character to point at.
        let at = first_layer.unwrap_or(Span::new(0, 1));
        errors.push(
            Diagnostic::error(at, "the model has no input")
                .label("first layer")
                .help("declare the input shape before the first layer, e.g. `input 28x28x1` or `input 784`"),
        );
        return None;
    };
    if layers.is_empty() && errors.is_empty() {
        errors.push(
            Diagnostic::error(input.span, "the model has no layers")
                .label("input only")
                .help("add layers below the input, e.g. `dense 10 activation=softmax`"),
        );
    }
    Some(Model {
        name: model_name.map_or(name, |(n, _)| n),
        input,
        layers,
        train,
        params: Vec::new(),
    })
}

/// The model's name names its run folder (`runs/<name>/`), so it must be
/// one plain file-name component: nothing a run writes may land outside it.
fn valid_model_name(v: &Value) -> Result<String, Diagnostic> {
    let name = args::text(v, "the model name")?;
    let problem = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "names a folder of its own (`.` or `..`)"
    } else if name.contains(['/', '\\', ':']) {
        "contains a path separator"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else if name.len() > MAX_MODEL_NAME {
        "is longer than a file name can be"
    } else {
        return Ok(name);
    };
    Err(Diagnostic::error(v.span, format!("the model name {problem}"))
        .label("not a plain file name")
        .note(format!(
            "the name names the folder a run writes to (`runs/<name>/`): one file-name component of at most \
             {MAX_MODEL_NAME} bytes, without `/`, `\\` or `:`"
        ))
        .help("write e.g. `model mnist_cnn`, and choose the folder with `cnnc run --out`"))
}

/// The longest file name common file systems allow, in bytes.
const MAX_MODEL_NAME: usize = 255;

fn twice(s: &Statement, first: Span, what: &str) -> Diagnostic {
    Diagnostic::error(s.keyword.span, format!("{what} is declared twice"))
        .label("second declaration")
        .related(first, "first declaration")
}

fn input_statement(s: &Statement, errors: &mut Vec<Diagnostic>, source: &Lines) -> Option<Input> {
    let mut a = Args::bind(s, &["shape"], &["shape"]);
    let shape = a.require(
        "shape",
        "write e.g. `input 28x28x1` for images or `input 784` for vectors",
        |v| match &v.kind {
            ValueKind::Number(..) => args::count(v, "the input size").map(|n| vec![n]),
            ValueKind::Dims(d) if d.len() <= 3 => {
                if d.contains(&0) {
                    Err(
                        Diagnostic::error(v.span, "every input dimension must be at least 1, found a 0")
                            .label("a dimension of 0")
                            .help("write the size of one sample, e.g. `input 28x28x1`"),
                    )
                } else if d.iter().any(|&x| x > args::MAX_SIZE) {
                    Err(Diagnostic::error(v.span, "an input dimension is too large")
                        .label("too large")
                        .note(format!("the largest size cnnc accepts is {}", args::MAX_SIZE)))
                } else {
                    Ok(d.iter().map(|&x| x as usize).collect())
                }
            }
            ValueKind::Dims(d) if d.len() == 4 => {
                let sample: Vec<String> = d[1..].iter().map(u64::to_string).collect();
                Err(Diagnostic::error(
                    v.span,
                    "the input shape has 4 dimensions; cnnc leaves out the batch axis",
                )
                .label("batch x height x width x channels?")
                .help(format!("write the shape of one sample: `input {}`", sample.join("x"))))
            }
            _ => Err(
                Diagnostic::error(v.span, "the input shape must be HxWxC or a vector length")
                    .label("not an input shape")
                    .help("write e.g. `input 28x28x1` (height x width x channels) or `input 784`"),
            ),
        },
    );
    errors.append(&mut a.errors);
    Some(Input {
        shape: shape?,
        span: s.span,
        line: source.line(s.span),
    })
}

fn layer(
    s: &Statement,
    spec: &layers::LayerSpec,
    names: &mut AutoNames,
    errors: &mut Vec<Diagnostic>,
    source: &Lines,
) -> Option<Layer> {
    let mut a = Args::bind(s, spec.positional, &spec.arguments());
    let kind = (spec.build)(&mut a);
    let trainable = a.or("trainable", true, |v| args::boolean(v, "trainable"));
    let name = a.get("name", |v| args::text(v, "the layer name"));
    // Checked whether on or off, so that every variant of a grid is.
    let on = a.or("if", true, |v| args::boolean(v, "if"));
    errors.append(&mut a.errors);
    let kind = kind?;
    if !on? {
        return None;
    }
    let name = name.unwrap_or_else(|| names.take(&kind));
    Some(Layer {
        name,
        kind,
        trainable: trainable?,
        span: s.span,
        keyword: s.keyword.span,
        line: source.line(s.span),
    })
}

/// Keras's automatic layer names: a counter per class, `conv2d`,
/// `conv2d_1`, ...; layers named by hand take no number.
#[derive(Default)]
pub struct AutoNames(HashMap<&'static str, usize>);

impl AutoNames {
    /// The name the next layer of this kind gets.
    pub fn peek(&self, kind: &LayerKind) -> String {
        let prefix = kind.keras_name_prefix();
        match self.0.get(prefix).copied().unwrap_or(0) {
            0 => prefix.to_string(),
            n => format!("{prefix}_{n}"),
        }
    }

    /// That name, counted.
    pub fn take(&mut self, kind: &LayerKind) -> String {
        let name = self.peek(kind);
        *self.0.entry(kind.keras_name_prefix()).or_insert(0) += 1;
        name
    }
}

fn unique_names(layers: &[Layer], errors: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Layer> = HashMap::new();
    for l in layers {
        let first = *seen.entry(l.name.as_str()).or_insert(l);
        if !std::ptr::eq(first, l) {
            errors.push(
                Diagnostic::error(l.keyword, format!("two layers are named `{}`", l.name))
                    .label("second layer with this name")
                    .related(first.keyword, "first one")
                    .help("layer names name the weights in saved files, so they must be unique; pick another `name=`"),
            );
        }
    }
}

/// Where each line of the source starts, so that a statement finds its
/// line in log time rather than by counting from the start of the file.
struct Lines(Vec<usize>);

impl Lines {
    fn new(source: &str) -> Lines {
        let starts = source.match_indices('\n').map(|(i, _)| i + 1);
        Lines(std::iter::once(0).chain(starts).collect())
    }

    /// The 1-based line of the span's start.
    fn line(&self, span: Span) -> usize {
        self.0.partition_point(|&start| start <= span.start)
    }
}
