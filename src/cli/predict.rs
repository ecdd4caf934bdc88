//! `cnnc predict FILE --weights W INPUT...`: the most likely classes of
//! images or of a `.npy` batch (a regression model's output values), and
//! optionally every output, and the outputs of chosen layers, as `.npy`.

use super::common::{
    ConvArgs, EngineKind, Failure, SetArgs, Trained, engine, fail, ignored_note, layer_index, load, trained,
};
use crate::parse::ast::Loss;
use crate::runtime::engine::Engine;
use crate::runtime::serve::ranked;
use crate::runtime::{data, npy};
use ndarray::{ArrayD, ArrayViewD, Axis};
use std::path::{Path, PathBuf};

/// Samples per run of the compiled routine: its arena grows with the batch,
/// and a whole dataset at once (60,000 digits) would need gigabytes.
const BATCH: usize = 256;

/// Output values shown per sample of a regression model.
const SHOWN: usize = 10;

#[derive(clap::Args)]
pub struct PredictArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Trained weights (safetensors with Keras names).
    #[arg(long)]
    weights: PathBuf,
    /// Images (PNG, JPEG) or one `.npy` batch of float32 in the model's
    /// input layout (NHWC), with or without the batch axis.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Classes shown per input.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    top: u32,
    /// Write every output, [N, ...output shape] float32 (a classifier's
    /// probabilities), to this `.npy` file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also write this layer's outputs, [N, ...its output shape] float32, to
    /// `NAME.npy` in the current folder (repeat for several layers).
    #[arg(long = "layer", value_name = "NAME")]
    layers: Vec<String>,
    /// Accept a weights file holding tensors the model lacks (a larger
    /// model's, say): they are ignored, and listed.
    #[arg(long)]
    allow_extra: bool,
    #[arg(long, value_enum, default_value_t = EngineKind::Jit)]
    engine: EngineKind,
    #[command(flatten)]
    conv: ConvArgs,
}

pub fn run(args: PredictArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let layers = args
        .layers
        .iter()
        .map(|name| layer_index(&checked, name))
        .collect::<Result<Vec<_>, _>>()?;
    // The probe returns layers in the model's order, each once.
    let mut layers = layers;
    layers.sort_unstable();
    layers.dedup();
    let Trained {
        graphs,
        mut state,
        classes,
        ignored,
    } = trained(&checked, &args.weights, args.allow_extra)?;
    let graphs = graphs.probing(&checked, &layers).map_err(fail)?;
    let (batch, names) = inputs(&args.inputs, &checked.model.input.shape)?;
    let mut engine = engine(args.engine, &args.conv, &graphs);
    let (outputs, layer_values) = probe(
        engine.as_mut(),
        &mut state.values[..state.weights],
        &batch,
        layers.len(),
    )?;

    let classifier = checked.loss() != Loss::MeanSquaredError;
    let mut out = ignored_note(&args.weights, &ignored);
    for (name, row) in names.iter().zip(outputs.axis_iter(Axis(0))) {
        let shown = if classifier {
            top(row, args.top as usize, &classes)
        } else {
            values(row)
        };
        out += &format!("{name}: {shown}\n");
    }
    if let Some(path) = &args.output {
        let flat: Vec<f32> = outputs.iter().copied().collect();
        npy::write_f32(path, outputs.shape(), &flat).map_err(fail)?;
        let what = if classifier { "probabilities" } else { "outputs" };
        out += &format!("wrote all {what} to {}\n", path.display());
    }
    for (&layer, value) in layers.iter().zip(&layer_values) {
        let name = &checked.model.layers[layer].name;
        let path = PathBuf::from(format!("{name}.npy"));
        let flat: Vec<f32> = value.iter().copied().collect();
        npy::write_f32(&path, value.shape(), &flat).map_err(fail)?;
        let shape = npy::shape_text(value.shape());
        out += &format!("wrote the outputs of `{name}`, {shape}, to {}\n", path.display());
    }
    Ok(out)
}

/// The model's outputs for every sample and those of the `layers` layers
/// the probe routine taps, `BATCH` samples at a time.
fn probe(
    engine: &mut dyn Engine,
    weights: &mut [ArrayD<f32>],
    batch: &ArrayD<f32>,
    layers: usize,
) -> Result<(ArrayD<f32>, Vec<ArrayD<f32>>), Failure> {
    let mut predictions = Vec::new();
    let mut values = vec![Vec::new(); layers];
    for chunk in batch.axis_chunks_iter(Axis(0), BATCH) {
        let probed = engine.probe(weights, chunk).map_err(fail)?;
        predictions.push(probed.prediction);
        for (all, (_, v)) in values.iter_mut().zip(probed.layers) {
            all.push(v);
        }
    }
    let joined = |parts: &[ArrayD<f32>]| {
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| Failure::new(e.to_string()))
    };
    let values = values.iter().map(|v| joined(v)).collect::<Result<_, _>>()?;
    Ok((joined(&predictions)?, values))
}

/// A classifier's `k` most likely classes with their probabilities.
fn top(row: ArrayViewD<f32>, k: usize, classes: &[String]) -> String {
    let row: Vec<f32> = row.iter().copied().collect();
    let label = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    let shown: Vec<String> = ranked(&row, k)
        .iter()
        .map(|(i, p)| format!("{} {p:.4}", label(*i)))
        .collect();
    shown.join(", ")
}

/// A regression model's output values, the first `SHOWN` of many.
fn values(row: ArrayViewD<f32>) -> String {
    let shown: Vec<String> = row.iter().take(SHOWN).map(|v| format!("{v:.4}")).collect();
    if row.len() <= SHOWN {
        format!("[{}]", shown.join(", "))
    } else {
        format!("[{}, ...] ({} values)", shown.join(", "), row.len())
    }
}

/// The inputs as one batch, with a display name per sample.
pub(super) fn inputs(paths: &[PathBuf], input_shape: &[usize]) -> Result<(ArrayD<f32>, Vec<String>), Failure> {
    let is_npy = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    match paths {
        [one] if is_npy(one) => {
            let array = npy::read_f32(one).map_err(fail)?;
            let batch = if array.shape() == input_shape {
                array.insert_axis(Axis(0))
            } else if array
                .shape()
                .split_first()
                .is_some_and(|(_, sample)| sample == input_shape)
            {
                array
            } else {
                let sample = npy::shape_text(input_shape);
                return Err(Failure::new(format!(
                    "{}: holds an array of shape {}, the model reads (N, {}), or {sample} for one sample",
                    one.display(),
                    npy::shape_text(array.shape()),
                    sample.trim_start_matches('(').trim_end_matches([',', ')']),
                )));
            };
            let n = batch.len_of(Axis(0));
            if n == 0 {
                return Err(Failure::new(format!("{}: holds no samples", one.display())));
            }
            let names = (0..n).map(|i| format!("{}[{i}]", one.display())).collect();
            Ok((batch, names))
        }
        _ => {
            if let Some(npy) = paths.iter().find(|p| is_npy(p)) {
                return Err(Failure::new(format!(
                    "`{}`: give either one .npy batch or image files, not both",
                    npy.display()
                )));
            }
            let batch = data::images(paths, input_shape).map_err(fail)?;
            Ok((batch, paths.iter().map(|p| p.display().to_string()).collect()))
        }
    }
}
