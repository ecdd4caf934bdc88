//! `cnnc export FILE --weights W -o model.onnx`: the model and its weights
//! as an ONNX inference graph, for onnxruntime, onnxruntime-web or TensorRT.

use super::common::{Failure, SetArgs, Trained, fail, load, trained};
use crate::onnx::export::{BATCH, INPUT, OUTPUT, export};
use crate::runtime::checkpoint::write_atomic;
use crate::shape::group;
use ndarray::ArrayD;
use prost::Message;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Trained weights (safetensors with Keras names) [default: the model's
    /// initial weights, seed 0]
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Where to write the ONNX model.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let mut out = String::new();
    let (weights, classes) = match &args.weights {
        Some(path) => {
            let Trained {
                graphs, state, classes, ..
            } = trained(&checked, path, false)?;
            // The state holds the weights in the graphs' order; the
            // exporter takes them in the model's.
            let by_name: HashMap<&str, &ArrayD<f32>> = graphs.train.vars[..state.weights]
                .iter()
                .map(|v| v.name.as_str())
                .zip(&state.values)
                .collect();
            let weights = checked
                .weights()
                .map(|w| by_name.get(w.name.as_str()).map(|&a| a.clone()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Failure::new(format!("`{}` lacks a weight of the model", path.display())))?;
            (weights, classes)
        }
        None => {
            out += "note: no --weights given: exporting the model's initial weights (seed 0)\n";
            (crate::runtime::initial_weights::<f32>(&checked, 0), Vec::new())
        }
    };
    let model = export(&checked, &weights, &classes).map_err(|e| Failure::new(e.to_string()))?;
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    write_atomic(&args.output, &model.encode_to_vec()).map_err(fail)?;
    let shape = |s: &[usize]| {
        let dims: Vec<String> = std::iter::once(BATCH.to_string())
            .chain(s.iter().map(usize::to_string))
            .collect();
        format!("[{}]", dims.join(", "))
    };
    let params: u64 = checked.weights().map(|w| w.numel()).sum();
    out += &format!(
        "wrote {}: ONNX opset {}, {nodes} nodes, {} parameters\n  input  `{INPUT}` {} float32{}\n  output `{OUTPUT}` {} float32\n",
        args.output.display(),
        crate::onnx::OPSET,
        group(params),
        shape(&checked.model.input.shape),
        if checked.model.input.shape.len() == 3 {
            " (NHWC, as Keras)"
        } else {
            ""
        },
        shape(checked.output_shape()),
    );
    Ok(out)
}
