//! What the importers (`onnx::import`, `keras`) share: the layer stack they
//! build from a foreign model, with its weights in Keras's layouts, made
//! into a `.cnn` file and named tensors.
//!
//! The stack is printed as `.cnn` text and that text is parsed and checked
//! again, so an imported model is exactly what the file says, checked by
//! the same code as a hand-written one; the weights are then named after
//! the checked model's own weights (`conv2d/kernel`), and their shapes
//! must be the ones it expects.

use crate::diag::Span;
use crate::parse::AutoNames;
use crate::parse::ast::{Input, Layer, LayerKind, Model};
use crate::runtime::checkpoint::Tensor;
use crate::shape::{Checked, Role};
use ndarray::ArrayD;

/// A layer's weights, each with what it is for.
pub type Weights = Vec<(Role, ArrayD<f32>)>;

/// The layers read so far, each with its weights.
#[derive(Default)]
pub struct Stack {
    layers: Vec<Layer>,
    weights: Vec<Weights>,
    names: AutoNames,
}

impl Stack {
    /// Appends a layer, named `name` or else automatically as Keras would.
    pub fn push(&mut self, name: Option<String>, kind: LayerKind, trainable: bool, weights: Weights) {
        let name = name.unwrap_or_else(|| self.names.take(&kind));
        let nowhere = Span::new(0, 0);
        self.layers.push(Layer {
            name,
            kind,
            trainable,
            span: nowhere,
            keyword: nowhere,
            line: 0,
        });
        self.weights.push(weights);
    }

    /// The last layer and its weights, to fold what follows into it (an
    /// activation into a dense layer, a bias into a matrix product).
    pub fn last_mut(&mut self) -> Option<(&mut LayerKind, &mut Weights)> {
        Some((&mut self.layers.last_mut()?.kind, self.weights.last_mut()?))
    }
}

/// What a foreign file became: the layers, the input cnnc reads (NHWC, or
/// a vector), and what the user should know about the conversion.
pub struct Imported {
    pub stack: Stack,
    pub input: Vec<usize>,
    /// The program that wrote the file (`pytorch 2.5.0, opset 18`), for the
    /// `.cnn` file's header.
    pub origin: String,
    pub notes: Vec<String>,
}

/// A model converted to cnnc: its `.cnn` text, checked, and its weights
/// named as the checked model names them.
pub struct Converted {
    pub text: String,
    pub checked: Checked,
    pub tensors: Vec<Tensor>,
}

/// The `.cnn` text of `stack` on an input of `input` (without the batch
/// axis), with `header` as its opening comment, checked as the file
/// `file`, whose stem names the model. A dropout at the end is left out:
/// it is the identity at inference, and cnnc refuses a model that ends in
/// one.
pub fn finish(mut stack: Stack, input: Vec<usize>, header: &[String], file: &str) -> Result<Converted, String> {
    while stack
        .layers
        .last()
        .is_some_and(|l| matches!(l.kind, LayerKind::Dropout { .. }))
    {
        stack.layers.pop();
        stack.weights.pop();
    }
    let name = std::path::Path::new(file).file_stem().map_or_else(
        || "model".to_string(),
        |s| s.to_string_lossy().replace(['"', '\n', '\r'], "_"),
    );
    let nowhere = Span::new(0, 0);
    let model = Model {
        name,
        input: Input {
            shape: input,
            span: nowhere,
            line: 0,
        },
        layers: stack.layers,
        train: None,
        params: Vec::new(),
    };
    let body = crate::parse::print::model(&model)
        .map_err(|name| format!("the layer name `{name}` cannot be written in a .cnn file"))?;
    let mut text: String = header.iter().map(|line| format!("# {line}\n")).collect();
    text += &body;
    let rejected = |d: crate::diag::Diagnostics| format!("the imported model does not check:\n{}", d.render());
    let parsed = crate::parse::parse(file, &text).map_err(rejected)?;
    let checked = crate::shape::check(parsed, file, &text).map_err(rejected)?;
    let mut tensors = Vec::new();
    for (info, mut weights) in checked.layers.iter().zip(stack.weights) {
        for w in &info.weights {
            let at = weights.iter().position(|(role, _)| *role == w.role);
            let Some((_, values)) = at.map(|i| weights.swap_remove(i)) else {
                return Err(format!("the model has no values for `{}`", w.name));
            };
            if values.shape() != w.shape.as_slice() {
                return Err(format!(
                    "`{}` has shape {:?}, the checked model needs {:?}",
                    w.name,
                    values.shape(),
                    w.shape
                ));
            }
            tensors.push(Tensor {
                name: w.name.clone(),
                shape: w.shape.clone(),
                data: values.iter().copied().collect(),
            });
        }
    }
    Ok(Converted { text, checked, tensors })
}
