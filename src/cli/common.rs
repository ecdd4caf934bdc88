//! What several commands share: reading and checking a model, building
//! its graphs and engine, finding its dataset and loading trained weights,
//! and the failure every command returns.

use crate::codegen::{self, ConvPolicy, Options};
use crate::parse;
use crate::parse::params::{CommandLine, Overrides};
use crate::runtime::Error;
use crate::runtime::data::{self, Splits};
use crate::runtime::engine::{Engine, Graphs, Interpreter};
use crate::runtime::jit::Compiled;
use crate::runtime::train;
use crate::shape::{self, Checked};
use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Why a command failed; `main` prints it on stderr.
#[derive(Debug)]
pub enum Failure {
    /// A message in the user's terms, with its `help:` lines if any.
    Message(String),
    /// Diagnostics rendered with the model lines they point at.
    Diagnostics(String),
    /// Stopped when asked to (Ctrl-C), after saying so and what was saved.
    Interrupted,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure::Message(message.into())
    }
}

impl From<crate::diag::Diagnostics> for Failure {
    fn from(d: crate::diag::Diagnostics) -> Failure {
        Failure::Diagnostics(d.render())
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::new(e.to_string())
    }
}

// Parsers of the float flags: every one must be a finite number that fits
// the 32-bit floats the model computes in, and in its own range.

fn float_flag(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.abs() <= f64::from(f32::MAX))
}

/// A learning rate and the like: finite and greater than 0.
pub fn positive(s: &str) -> Result<f64, String> {
    match float_flag(s) {
        Some(x) if x > 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a number greater than 0")),
    }
}

/// A validation split: in [0, 1).
pub fn fraction(s: &str) -> Result<f64, String> {
    match float_flag(s) {
        Some(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}` is not a fraction in [0, 1)")),
    }
}

/// An input or target value: any finite 32-bit float.
pub fn finite(s: &str) -> Result<f64, String> {
    float_flag(s).ok_or_else(|| format!("`{s}` is not a finite number within the 32-bit float range"))
}

/// Reads a model file: its name for diagnostics and its text.
pub fn read_model(path: &Path) -> Result<(String, String), Failure> {
    let name = path.display().to_string();
    let bytes = crate::runtime::file::read_bounded(path, "a model file", parse::MAX_FILE).map_err(|e| {
        Failure::new(match e.kind() {
            std::io::ErrorKind::NotFound => format!("no such file `{name}`"),
            std::io::ErrorKind::IsADirectory => format!("`{name}` is a directory, not a model file"),
            _ => format!("cannot read `{name}`: {e}"),
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = at - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        Failure::new(format!(
            "`{name}` is not UTF-8 text (invalid byte at {name}:{line}:{column})\n  = help: a model file is plain text; save it as UTF-8"
        ))
    })?;
    Ok((name, text))
}

/// Values for the model's parameters: every command that reads a model
/// takes them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SetArgs {
    /// Give the model's parameter NAME (declared `param NAME = DEFAULT`) the
    /// value VALUE, written as in the model file; repeat for several
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
}

/// Reads, parses and checks a model file with the parameter values of
/// `set`: the common first step of every command.
pub fn load(path: &Path, set: &SetArgs) -> Result<shape::Checked, Failure> {
    let line = CommandLine::parse(&set.set, &[])?;
    load_variant(path, &line.variants().into_iter().next().unwrap_or_default())
}

/// Reads, parses and checks one variant of a model file.
pub fn load_variant(path: &Path, overrides: &Overrides) -> Result<shape::Checked, Failure> {
    let (name, source) = read_model(path)?;
    let model = parse::parse_with(&name, &source, overrides)?;
    Ok(shape::check(model, &name, &source)?)
}

/// The folder of a run of `model` in `out`: `OUT/<model name>/`, and for a
/// model with parameters `OUT/<model name>/<name=value,...>/`, every
/// parameter in the file's order, so that the folder names the variant
/// whatever the file's defaults are; `compare` adds the seed
/// (`.../<name=value,...,seed=N>/`).
pub fn run_folder(out: &Path, model: &crate::parse::ast::Model, seed: Option<u64>) -> PathBuf {
    let mut parts = model.values();
    parts.extend(seed.map(|s| format!("seed={s}")));
    let dir = out.join(&model.name);
    match parts.is_empty() {
        true => dir,
        false => dir.join(file_name(&parts.join(","))),
    }
}

/// `text` as one file-name component: characters other than letters,
/// digits and `_.-+=,[]` become `_` (a value may be a path or a string),
/// and a name too long for file systems is cut, with a checksum of the
/// whole so that two long names stay apart.
pub fn file_name(text: &str) -> String {
    const MAX: usize = 200;
    let kept: String = text
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "_.-+=,[]".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    if kept.len() <= MAX {
        return kept;
    }
    format!("{}-{:08x}", &kept[..MAX], crc32fast::hash(text.as_bytes()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// Native code compiled with Cranelift.
    Jit,
    /// The reference interpreter (ndarray).
    Interp,
}

/// How the compiled engine computes convolutions: every command that
/// compiles a model takes `--conv`.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct ConvArgs {
    /// Algorithm of the compiled engine's convolutions: `auto`, the cost
    /// model's choice for each; `gemm`, im2col + GEMM for all (the numbers
    /// cnnc gave before it had other algorithms, bit for bit, with the
    /// smallest rounding error); or another algorithm, wherever it applies
    #[arg(long, value_name = "ALGORITHM", default_value = "auto", value_parser = conv_policy())]
    pub conv: ConvPolicy,
}

impl ConvArgs {
    /// Compile options with this choice.
    pub fn options(&self) -> Options {
        Options {
            conv: self.conv,
            ..Options::default()
        }
    }
}

/// `auto` or an algorithm's name.
fn conv_policy() -> impl TypedValueParser<Value = ConvPolicy> {
    let mut names = vec!["auto"];
    names.extend(codegen::conv_algorithms());
    PossibleValuesParser::new(names).map(|name| ConvPolicy::named(&name).unwrap_or_default())
}

/// Where the data comes from, shared by `run` and `eval`.
#[derive(clap::Args)]
pub struct DataArgs {
    /// Dataset: `mnist10k`, a folder of IDX files or an image folder with one
    /// subfolder per class [default: the training block's `data`; mnist10k
    /// for a 28x28 digit model with 10 outputs]
    #[arg(long)]
    pub data: Option<String>,
    /// Keep only these classes (comma-separated: digits for IDX data, folder
    /// names for images), relabelled 0, 1, ... in the order given, so the
    /// model needs one output per class [default: all]
    #[arg(long, value_delimiter = ',', value_name = "CLASS,...")]
    pub classes: Vec<String>,
    /// Engine that runs the model.
    #[arg(long, value_enum, default_value_t = EngineKind::Jit)]
    pub engine: EngineKind,
    #[command(flatten)]
    pub conv: ConvArgs,
}

/// A failure of files, data or settings: a message.
pub fn fail(e: impl Into<Error>) -> Failure {
    e.into().into()
}

/// A later stage's failure on `checked`: shown at the model line it belongs
/// to where it has one, as the front end's diagnostics are.
pub fn in_model<E: Into<Error>>(checked: &Checked) -> impl Fn(E) -> Failure + '_ {
    move |e| {
        let e = e.into();
        match e.diagnostic() {
            Some(d) => checked.diagnostics(d).into(),
            None => e.into(),
        }
    }
}

/// The engine `kind` names; a compiled one computes convolutions as `conv`
/// says.
pub fn engine(kind: EngineKind, conv: &ConvArgs, graphs: &Graphs) -> Box<dyn Engine> {
    match kind {
        EngineKind::Jit => Box::new(Compiled::with_options(graphs.clone(), conv.options())),
        EngineKind::Interp => Box::new(Interpreter::new(graphs.clone())),
    }
}

/// The model's graphs, with the optimizer of its training block.
pub fn graphs(checked: &Checked) -> Result<Graphs, Failure> {
    Graphs::of_model(checked).map_err(in_model(checked))
}

/// The model's dataset: the flag's (relative to the current folder), the
/// training block's (relative to the model file), or mnist10k for a digit
/// model.
pub fn dataset(
    checked: &Checked,
    model_file: &Path,
    flag: Option<&str>,
    split: Option<f64>,
    selection: &data::Selection,
) -> Result<Splits, Failure> {
    let block = checked.model.train.as_ref().and_then(|t| t.data.clone());
    let input = &checked.model.input.shape;
    let outputs: usize = checked.output_shape().iter().product();
    let digits = matches!(input.as_slice(), [28, 28, 1] | [28, 28] | [784]) && outputs == 10;
    let (source, base) = match (flag, block) {
        (Some(f), _) => (f.to_string(), PathBuf::from(".")),
        (None, Some(b)) => (
            b,
            model_file
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        ),
        (None, None) if digits => (data::BUNDLED.to_string(), PathBuf::from(".")),
        (None, None) => {
            return Err(Failure::new(format!(
                "`{}` names no dataset\n  = help: add `data \"path/to/images\"` to its `train {{ ... }}` block, or pass `--data`",
                model_file.display()
            )));
        }
    };
    if source.trim().is_empty() {
        // An empty path would read the current folder as a dataset.
        return Err(Failure::new(
            "the dataset path is empty\n  = help: pass a folder or `mnist10k`, e.g. `--data mnist10k`".to_string(),
        ));
    }
    data::load(&source, &base, input, outputs, split, selection).map_err(fail)
}

/// A model's graphs and its state with weights: what `eval`, `predict`,
/// `export` and `show` start from.
pub struct Trained {
    pub graphs: Graphs,
    pub state: train::State,
    /// Class names by label, if the weights file records them.
    pub classes: Vec<String>,
    /// Tensors of the weights file the model lacks, ignored as asked.
    pub ignored: Vec<String>,
}

/// The model's graphs and state with trained weights from a file; with
/// `allow_extra`, tensors of the file the model lacks are ignored (and
/// listed) rather than refused.
pub fn trained(checked: &Checked, weights: &Path, allow_extra: bool) -> Result<Trained, Failure> {
    let graphs = graphs(checked)?;
    let mut state = train::State::new(checked, &graphs, 0);
    let loaded = train::load_some_weights(weights, &graphs, state.weights, allow_extra).map_err(in_model(checked))?;
    state.values[..state.weights].clone_from_slice(&loaded.values);
    Ok(Trained {
        graphs,
        state,
        classes: loaded.classes,
        ignored: loaded.ignored,
    })
}

/// Trained weights from `weights` if given, else the model's initial
/// weights (seed 0: its initializers, or the literal values it gives).
pub fn trained_or_initial(checked: &Checked, weights: Option<&Path>, allow_extra: bool) -> Result<Trained, Failure> {
    match weights {
        Some(path) => trained(checked, path, allow_extra),
        None => {
            let graphs = graphs(checked)?;
            let state = train::State::new(checked, &graphs, 0);
            Ok(Trained {
                graphs,
                state,
                classes: Vec::new(),
                ignored: Vec::new(),
            })
        }
    }
}

/// The note that says which tensors of a weights file were ignored.
pub fn ignored_note(weights: &Path, ignored: &[String]) -> String {
    if ignored.is_empty() {
        return String::new();
    }
    let names: Vec<String> = ignored.iter().map(|n| format!("`{n}`")).collect();
    format!(
        "note: ignored {} tensor{} of {} that the model lacks: {}\n",
        ignored.len(),
        if ignored.len() == 1 { "" } else { "s" },
        weights.display(),
        names.join(", ")
    )
}

/// The index of the model's layer called `name`, or an error naming the
/// closest name and every layer.
pub fn layer_index(checked: &Checked, name: &str) -> Result<usize, Failure> {
    let names = || checked.model.layers.iter().map(|l| l.name.as_str());
    if let Some(i) = names().position(|n| n == name) {
        return Ok(i);
    }
    let help = match crate::diag::closest(name, names()) {
        Some(near) => format!("did you mean `{near}`?"),
        None => "name one of its layers".into(),
    };
    let all: Vec<&str> = names().collect();
    Err(Failure::new(format!(
        "the model has no layer `{name}`\n  = help: {help} (its layers: {})",
        all.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Origin, Phase};

    fn checked() -> Checked {
        let source = "input 4\ndense 2 activation=relu name=hidden\ndense 1 activation=sigmoid\n";
        let model = parse::parse("m.cnn", source).unwrap();
        shape::check(model, "m.cnn", source).unwrap()
    }

    #[test]
    fn an_error_with_an_origin_shows_its_model_line() {
        let checked = checked();
        let layer = &checked.model.layers[0];
        let origin = Origin {
            what: layer.name.clone(),
            line: 2,
            span: layer.span,
            phase: Phase::Backward,
        };
        let error = crate::autodiff::Error::NoRule {
            op: "frobnicate".into(),
            origin,
        };
        let Failure::Diagnostics(shown) = in_model(&checked)(error) else {
            panic!("not rendered as a diagnostic");
        };
        assert!(shown.starts_with("error: cannot differentiate `frobnicate`"), "{shown}");
        assert!(shown.contains("m.cnn:2:1"), "{shown}");
        assert!(shown.contains("2 | dense 2 activation=relu name=hidden"), "{shown}");
        assert!(shown.contains("^^^"), "{shown}");
        assert!(!shown.contains("line 2"), "{shown}");
    }

    #[test]
    fn an_error_without_one_is_a_message_without_a_prefix() {
        let checked = checked();
        let error = Error::Message("the disk is full".into());
        let Failure::Message(shown) = in_model(&checked)(error) else {
            panic!("a message became a diagnostic");
        };
        assert_eq!(shown, "the disk is full");
    }
}
