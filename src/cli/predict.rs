//! `cnnc predict FILE --weights W INPUT...`: the most likely classes of
//! images or of a `.npy` batch, and optionally every probability as `.npy`.

use super::run::{EngineKind, engine, fail, trained};
use super::{Failure, check::load};
use crate::runtime::data;
use ndarray::{ArrayD, Axis, IxDyn};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct PredictArgs {
    /// The model file (.cnn).
    file: PathBuf,
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
    /// Write every probability, [N, classes] float32, to this `.npy` file.
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = EngineKind::Jit)]
    engine: EngineKind,
}

pub fn run(args: PredictArgs) -> Result<String, Failure> {
    let checked = load(&args.file)?;
    let (routines, mut state, classes) = trained(&checked, &args.weights)?;
    let input_shape = &checked.model.input.shape;
    let (batch, names) = inputs(&args.inputs, input_shape)?;
    let mut engine = engine(args.engine, &routines);
    let probabilities = engine
        .predict(&mut state.values[..state.weights], batch.view())
        .map_err(fail)?;

    let label = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut out = String::new();
    for (name, row) in names.iter().zip(probabilities.axis_iter(Axis(0))) {
        let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        // A single sigmoid unit: class 1 with p, class 0 with 1 - p.
        if let [(_, p)] = ranked[..] {
            ranked = vec![(1, p), (0, 1.0 - p)];
        }
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = ranked
            .iter()
            .take(args.top as usize)
            .map(|(i, p)| format!("{} {:.4}", label(*i), p))
            .collect();
        out += &format!("{name}: {}\n", top.join(", "));
    }
    if let Some(path) = &args.output {
        let flat = probabilities.as_standard_layout().into_owned();
        ndarray_npy::write_npy(path, &flat)
            .map_err(|e| Failure(format!("error: cannot write `{}`: {e}", path.display())))?;
        out += &format!("wrote all probabilities to {}\n", path.display());
    }
    Ok(out)
}

/// The inputs as one batch, with a display name per sample.
fn inputs(paths: &[PathBuf], input_shape: &[usize]) -> Result<(ArrayD<f32>, Vec<String>), Failure> {
    let is_npy = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    match paths {
        [one] if is_npy(one) => {
            let array: ArrayD<f32> = ndarray_npy::read_npy(one).map_err(|e| {
                Failure(format!(
                    "error: `{}` is not a float32 .npy array: {e}\n  = help: save it with numpy.save(path, x.astype(\"float32\"))",
                    one.display()
                ))
            })?;
            let batch = if array.shape() == input_shape {
                array.insert_axis(Axis(0))
            } else {
                array
            };
            if &batch.shape()[1..] != input_shape {
                return Err(Failure(format!(
                    "error: `{}` holds an array of shape {:?}, the model reads [N, {}]",
                    one.display(),
                    batch.shape(),
                    input_shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
                )));
            }
            let names = (0..batch.shape()[0])
                .map(|i| format!("{}[{i}]", one.display()))
                .collect();
            let batch = batch.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&{
                let mut s = vec![batch.shape()[0]];
                s.extend(input_shape);
                s
            }));
            Ok((batch.map_err(|e| Failure(format!("error: {e}")))?, names))
        }
        _ => {
            if let Some(npy) = paths.iter().find(|p| is_npy(p)) {
                return Err(Failure(format!(
                    "error: `{}`: give either one .npy batch or image files, not both",
                    npy.display()
                )));
            }
            let batch = data::images(paths, input_shape).map_err(|e| fail(e.into()))?;
            Ok((batch, paths.iter().map(|p| p.display().to_string()).collect()))
        }
    }
}
