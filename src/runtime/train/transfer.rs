//! Starting a run from another model's weights (`cnnc run --init`), as
//! Keras's `load_weights(path, skip_mismatch=...)` does by name: the
//! tensors of the file whose names and shapes match the model's weights
//! are loaded, every other weight keeps its initializer.

use super::resume::CHECKPOINT;
use crate::runtime::Error;
use crate::runtime::checkpoint::{self, CheckpointError, Problem};
use crate::runtime::engine::Graphs;
use ndarray::{ArrayD, IxDyn};
use std::path::Path;

/// How one of the model's weights starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// From the file.
    Loaded,
    /// From its initializer: the file has no tensor of its name.
    Fresh,
    /// From its initializer: the file's tensor of its name has another
    /// shape, skipped as asked.
    Skipped { found: Vec<usize> },
}

/// The weights a run starts from.
pub struct Initial {
    /// The model's weights in `State` order.
    pub values: Vec<ArrayD<f32>>,
    /// How each of them starts, in the same order.
    pub starts: Vec<Start>,
    /// Tensors of the file the model lacks (a run's optimizer slots aside).
    pub ignored: Vec<String>,
}

/// The model's weights, `fresh` (its initializers) overwritten by the
/// tensors of `path` that fit. A tensor of the right name but another shape
/// is an error, unless `skip_mismatch`; so is a file of which nothing fits.
pub fn initial_from(
    path: &Path,
    graphs: &Graphs,
    fresh: Vec<ArrayD<f32>>,
    skip_mismatch: bool,
) -> Result<Initial, Error> {
    let vars = &graphs.train.vars[..fresh.len()];
    let expected: Vec<(&str, &[usize])> = vars.iter().map(|v| (v.name.as_str(), v.shape.as_slice())).collect();
    let (found, problems) = checkpoint::inspect(path, &expected)?;
    let is_checkpoint = found.metadata.get("format").is_some_and(|f| f == CHECKPOINT);
    let mut starts = vec![Start::Loaded; vars.len()];
    let mut ignored = Vec::new();
    let mut mismatched = Vec::new();
    let mut refused = Vec::new();
    for problem in problems {
        match problem {
            Problem::Missing { name, similar } => {
                set(&mut starts, vars, &name, Start::Fresh);
                // A near name is not loaded either: it is listed as ignored.
                ignored.extend(similar.filter(|_| !is_checkpoint));
            }
            Problem::Shape {
                ref name, ref found, ..
            } if skip_mismatch => {
                set(&mut starts, vars, name, Start::Skipped { found: found.clone() });
            }
            Problem::Shape { .. } => mismatched.push(problem),
            // A run's checkpoint holds optimizer slots beside the weights.
            Problem::Unexpected { .. } if is_checkpoint => {}
            Problem::Unexpected { name } => ignored.push(name),
            Problem::Dtype { .. } | Problem::NonFinite { .. } | Problem::Metadata { .. } => refused.push(problem),
        }
    }
    refused.extend(super::resume::non_finite(&found.tensors));
    checkpoint::mismatch(path, refused)?;
    if !mismatched.is_empty() {
        let error = CheckpointError::Mismatch {
            path: path.to_path_buf(),
            problems: mismatched,
        };
        return Err(Error::Message(format!(
            "{error}\n  = help: pass --skip-mismatch to start such weights from their initializers \
             (Keras's skip_mismatch=True)"
        )));
    }
    if found.tensors.is_empty() {
        return Err(Error::Message(format!(
            "no tensor of `{}` fits the model: none has the name and shape of one of its weights\n  = help: \
             weights load by Keras name (`conv2d/kernel`, `dense_1/bias`): name the layers as the model that \
             wrote the file did",
            path.display()
        )));
    }
    let mut values = fresh;
    for tensor in found.tensors {
        let Some(i) = vars.iter().position(|v| v.name == tensor.name) else {
            continue;
        };
        values[i] = ArrayD::from_shape_vec(IxDyn(&tensor.shape), tensor.data)
            .map_err(|e| Error::Message(format!("`{}`: {e}", path.display())))?;
    }
    ignored.sort();
    ignored.dedup();
    Ok(Initial {
        values,
        starts,
        ignored,
    })
}

fn set(starts: &mut [Start], vars: &[crate::ir::VarDecl], name: &str, start: Start) {
    if let Some(i) = vars.iter().position(|v| v.name == name) {
        starts[i] = start;
    }
}
