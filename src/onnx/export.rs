//! A checked model and its weights as an ONNX inference graph.
//!
//! Layout: the graph reads and writes Keras's layout (NHWC images), so it
//! is a drop-in for the Keras model and for `cnnc predict`. ONNX's Conv,
//! MaxPool and BatchNormalization want channels first, so a Transpose turns
//! the image to NCHW before the first layer that needs it, and back to NHWC
//! before the first layer that needs Keras's order: Flatten (Keras flattens
//! in height, width, channel order) and the graph's output. Layers that
//! work in either layout (activations, softmax over the channel axis) keep
//! whichever they get, so a stack of convolutions costs two transposes in
//! all. Weights keep Keras's values; conv kernels are stored OIHW, as Conv
//! reads them.
//!
//! Batch normalization is exported as BatchNormalization, not folded into
//! the convolution or dense layer before it: the graph then holds the
//! model's own weights and moving statistics with Keras's arithmetic, it
//! exports a batchnorm wherever the model has one (after an activation, as
//! in `fcnn_homework`, there is nothing to fold it into), and the runtimes
//! that care (onnxruntime, TensorRT) fold Conv + BatchNormalization
//! themselves when they optimize the graph.
//!
//! Dropout is the identity at inference and is left out. `same` padding is
//! written as explicit pads, with the odd pixel at the bottom and right as
//! Keras puts it; ONNX MaxPool never lets a padded value win, as Keras.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, data_type, tensor_shape_proto, type_proto,
};
use super::{IR_VERSION, OPSET, tensor};
use crate::ir::op::{SELU_ALPHA, SELU_SCALE};
use crate::parse::ast::{Activation, LayerKind, Padding};
use crate::shape::{Checked, LayerInfo, Role, window};
use ndarray::ArrayD;

/// The names of the graph's input and output, and of its batch axis.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "output";
pub const BATCH: &str = "N";

/// The model with `weights` (in [`Checked::weights`] order) as ONNX.
/// `classes` names the outputs, if the weights file does; they go in the
/// model's metadata.
pub fn export(checked: &Checked, weights: &[ArrayD<f32>], classes: &[String]) -> Result<ModelProto, String> {
    let expected = checked.weights().count();
    if weights.len() != expected {
        return Err(format!("{} weights given for a model of {expected}", weights.len()));
    }
    let mut graph = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
        current: INPUT.to_string(),
        rank: checked.model.input.shape.len() + 1,
        layout: Layout::ChannelsLast,
    };
    let mut weights = weights.iter();
    for (layer, info) in checked.model.layers.iter().zip(&checked.layers) {
        let mine: Vec<(Role, &ArrayD<f32>)> = info.weights.iter().map(|w| w.role).zip(weights.by_ref()).collect();
        graph.layer(&layer.name, &layer.kind, info, &mine)?;
    }
    graph.to(Layout::ChannelsLast, OUTPUT);
    graph.name_output();

    let value = |name: &str, shape: &[usize]| ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(batched(shape)),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    };
    let mut metadata = Vec::new();
    if !classes.is_empty() {
        metadata.push(StringStringEntryProto {
            key: "classes".into(),
            value: serde_json::to_string(classes).map_err(|e| e.to_string())?,
        });
    }
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "cnnc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{} exported by cnnc. Input NHWC, as Keras; conv kernels OIHW.",
            checked.model.name
        ),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: checked.model.name.clone(),
            initializer: graph.initializers,
            input: vec![value(INPUT, &checked.model.input.shape)],
            output: vec![value(OUTPUT, checked.output_shape())],
            ..GraphProto::default()
        }),
        metadata_props: metadata,
        ..ModelProto::default()
    })
}

/// Where the channels of the current value are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Last, as Keras and cnnc keep them.
    ChannelsLast,
    /// Second, after the batch axis, as ONNX's Conv wants them.
    ChannelsFirst,
}

struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// The value the next node reads.
    current: String,
    /// Of the current value, with the batch axis.
    rank: usize,
    layout: Layout,
}

impl Graph {
    /// Appends the nodes of one layer. Each kind says which layout it needs;
    /// the match has no wildcard, so a new layer kind must say here how it
    /// is exported.
    fn layer(
        &mut self,
        name: &str,
        kind: &LayerKind,
        info: &LayerInfo,
        weights: &[(Role, &ArrayD<f32>)],
    ) -> Result<(), String> {
        let weight = |role: Role| weights.iter().find(|(r, _)| *r == role).map(|(_, w)| *w);
        match kind {
            LayerKind::Conv2D(c) => {
                self.to(Layout::ChannelsFirst, name);
                let mut inputs = vec![self.current.clone()];
                if let Some(k) = weight(Role::Kernel) {
                    // HWIO to OIHW.
                    let oihw = k.view().permuted_axes(vec![3, 2, 0, 1]);
                    inputs.push(self.initializer(&format!("{name}/kernel"), &oihw.to_owned()));
                }
                if let Some(b) = weight(Role::Bias) {
                    inputs.push(self.initializer(&format!("{name}/bias"), b));
                }
                let attributes = vec![
                    ints("kernel_shape", &c.kernel_size),
                    ints("strides", &c.strides),
                    ints("pads", &pads(info, c.kernel_size, c.strides, c.padding)),
                    ints("dilations", &[1, 1]),
                    int("group", 1),
                ];
                self.node("Conv", name, inputs, attributes);
                self.activation(c.activation, &format!("{name}/{}", c.activation.name()));
            }
            LayerKind::Dense(d) => {
                let mut inputs = vec![self.current.clone()];
                for role in [Role::Kernel, Role::Bias] {
                    if let Some(w) = weight(role) {
                        inputs.push(self.initializer(&format!("{name}/{}", role.keras_name()), w));
                    }
                }
                self.node("Gemm", name, inputs, Vec::new());
                self.activation(d.activation, &format!("{name}/{}", d.activation.name()));
            }
            LayerKind::DepthwiseConv2D(c) => {
                self.to(Layout::ChannelsFirst, name);
                let channels = info.input[2];
                let mut inputs = vec![self.current.clone()];
                if let Some(k) = weight(Role::Kernel) {
                    // Keras's (KH, KW, C, M) is, as C groups of M filters
                    // of one channel each, OIHW (C*M, 1, KH, KW).
                    let [kh, kw] = c.kernel_size;
                    let grouped = k
                        .to_shape(vec![kh, kw, 1, info.output[2]])
                        .map_err(|e| format!("{name}/kernel: {e}"))?;
                    let oihw = grouped.view().permuted_axes(vec![3, 2, 0, 1]);
                    inputs.push(self.initializer(&format!("{name}/kernel"), &oihw.to_owned()));
                }
                if let Some(b) = weight(Role::Bias) {
                    inputs.push(self.initializer(&format!("{name}/bias"), b));
                }
                let attributes = vec![
                    ints("kernel_shape", &c.kernel_size),
                    ints("strides", &c.strides),
                    ints("pads", &pads(info, c.kernel_size, c.strides, c.padding)),
                    ints("dilations", &[1, 1]),
                    int("group", channels as i64),
                ];
                self.node("Conv", name, inputs, attributes);
                self.activation(c.activation, &format!("{name}/{}", c.activation.name()));
            }
            LayerKind::MaxPool2D(p) | LayerKind::AvgPool2D(p) => {
                self.to(Layout::ChannelsFirst, name);
                let mut attributes = vec![
                    ints("kernel_shape", &p.pool_size),
                    ints("strides", &p.strides),
                    ints("pads", &pads(info, p.pool_size, p.strides, p.padding)),
                ];
                let op = match kind {
                    LayerKind::MaxPool2D(_) => "MaxPool",
                    _ => {
                        // Padded cells are not counted, as Keras's.
                        attributes.push(int("count_include_pad", 0));
                        "AveragePool"
                    }
                };
                self.node(op, name, vec![self.current.clone()], attributes);
            }
            LayerKind::GlobalAvgPool2D { keepdims } | LayerKind::GlobalMaxPool2D { keepdims } => {
                self.to(Layout::ChannelsFirst, name);
                let op = match kind {
                    LayerKind::GlobalAvgPool2D { .. } => "GlobalAveragePool",
                    _ => "GlobalMaxPool",
                };
                if *keepdims {
                    self.node(op, name, vec![self.current.clone()], Vec::new());
                } else {
                    // [N, C, 1, 1] to [N, C].
                    self.node(op, &format!("{name}/pool"), vec![self.current.clone()], Vec::new());
                    self.node("Flatten", name, vec![self.current.clone()], vec![int("axis", 1)]);
                    self.rank = 2;
                }
            }
            LayerKind::Flatten => {
                if self.rank > 2 {
                    self.to(Layout::ChannelsLast, name);
                    self.node("Flatten", name, vec![self.current.clone()], vec![int("axis", 1)]);
                    self.rank = 2;
                }
            }
            LayerKind::Dropout { .. } => {}
            LayerKind::BatchNorm(b) => {
                self.to(Layout::ChannelsFirst, name);
                let channels = info.output.last().copied().unwrap_or(1);
                let ones = ArrayD::from_elem(vec![channels], 1.0);
                let zeros = ArrayD::from_elem(vec![channels], 0.0);
                let mut inputs = vec![self.current.clone()];
                for (role, absent) in [
                    (Role::Gamma, &ones),
                    (Role::Beta, &zeros),
                    (Role::MovingMean, &zeros),
                    (Role::MovingVariance, &ones),
                ] {
                    let w = weight(role).unwrap_or(absent);
                    inputs.push(self.initializer(&format!("{name}/{}", role.keras_name()), w));
                }
                let attributes = vec![float("epsilon", b.epsilon as f32), float("momentum", b.momentum as f32)];
                self.node("BatchNormalization", name, inputs, attributes);
            }
            LayerKind::Activation(a) => self.activation(*a, name),
            LayerKind::LeakyRelu { negative_slope } => self.node(
                "LeakyRelu",
                name,
                vec![self.current.clone()],
                vec![float("alpha", *negative_slope as f32)],
            ),
            LayerKind::Elu { alpha } => self.node(
                "Elu",
                name,
                vec![self.current.clone()],
                vec![float("alpha", *alpha as f32)],
            ),
        }
        Ok(())
    }

    fn activation(&mut self, a: Activation, name: &str) {
        let x = self.current.clone();
        let (op, attributes) = match a {
            Activation::Linear => return,
            Activation::Relu => ("Relu", Vec::new()),
            Activation::Sigmoid => ("Sigmoid", Vec::new()),
            Activation::Tanh => ("Tanh", Vec::new()),
            Activation::Elu => ("Elu", vec![float("alpha", Activation::ELU_ALPHA as f32)]),
            Activation::Selu => (
                "Selu",
                vec![float("alpha", SELU_ALPHA as f32), float("gamma", SELU_SCALE as f32)],
            ),
            Activation::LeakyRelu => ("LeakyRelu", vec![float("alpha", Activation::LEAKY_RELU_SLOPE as f32)]),
            Activation::Softplus => ("Softplus", Vec::new()),
            // x sigmoid(x).
            Activation::Silu => {
                self.node("Sigmoid", &format!("{name}/sigmoid"), vec![x.clone()], Vec::new());
                self.node("Mul", name, vec![x, self.current.clone()], Vec::new());
                return;
            }
            // Opset 17 has no Gelu (it came in 20): x (erf(x / sqrt 2) + 1) / 2,
            // as Keras writes it.
            Activation::Gelu => {
                let root = self.scalar(&format!("{name}/sqrt2"), std::f32::consts::SQRT_2);
                let one = self.scalar(&format!("{name}/one"), 1.0);
                let half = self.scalar(&format!("{name}/half"), 0.5);
                self.node("Div", &format!("{name}/scaled"), vec![x.clone(), root], Vec::new());
                self.node("Erf", &format!("{name}/erf"), vec![self.current.clone()], Vec::new());
                self.node(
                    "Add",
                    &format!("{name}/cdf2"),
                    vec![self.current.clone(), one],
                    Vec::new(),
                );
                self.node(
                    "Mul",
                    &format!("{name}/x_cdf2"),
                    vec![x, self.current.clone()],
                    Vec::new(),
                );
                self.node("Mul", name, vec![self.current.clone(), half], Vec::new());
                return;
            }
            Activation::Softmax => {
                // Over the channels, wherever the layout has them.
                let axis = match self.layout {
                    Layout::ChannelsFirst if self.rank > 2 => 1,
                    _ => -1,
                };
                self.node("Softmax", name, vec![self.current.clone()], vec![int("axis", axis)]);
                return;
            }
        };
        self.node(op, name, vec![x], attributes);
    }

    /// A scalar initializer.
    fn scalar(&mut self, name: &str, value: f32) -> String {
        self.initializer(name, &ArrayD::from_elem(vec![], value))
    }

    /// Moves the channels where `layout` has them, if they are not there:
    /// a Transpose named after the layer that needs it. Vectors are both.
    fn to(&mut self, layout: Layout, before: &str) {
        if self.layout == layout || self.rank <= 2 {
            self.layout = layout;
            return;
        }
        let last = self.rank as i64 - 1;
        let (perm, suffix): (Vec<i64>, _) = match layout {
            Layout::ChannelsFirst => ([0, last].into_iter().chain(1..last).collect(), "to_channels_first"),
            Layout::ChannelsLast => ([0].into_iter().chain(2..=last).chain([1]).collect(), "to_channels_last"),
        };
        let attribute = AttributeProto {
            name: "perm".into(),
            r#type: attribute_type::INTS,
            ints: perm,
            ..AttributeProto::default()
        };
        let name = format!("{before}/{suffix}");
        self.node("Transpose", &name, vec![self.current.clone()], vec![attribute]);
        self.layout = layout;
    }

    /// A node named after its layer; its output is `NAME:0`, so that no
    /// layer name (`output` is a common one) can clash with the graph's
    /// input and output.
    fn node(&mut self, op: &str, name: &str, inputs: Vec<String>, attribute: Vec<AttributeProto>) {
        let output = format!("{name}:0");
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute,
            ..NodeProto::default()
        });
        self.current = output;
    }

    fn initializer(&mut self, name: &str, values: &ArrayD<f32>) -> String {
        let data: Vec<f32> = values.iter().copied().collect();
        self.initializers.push(tensor(name, values.shape(), &data));
        name.to_string()
    }

    /// The last node writes the graph's output; a model of no nodes (a
    /// vector through a linear activation) copies its input there.
    fn name_output(&mut self) {
        match self.nodes.last_mut() {
            Some(last) => last.output = vec![OUTPUT.to_string()],
            None => {
                self.node("Identity", OUTPUT, vec![INPUT.to_string()], Vec::new());
                self.name_output();
            }
        }
    }
}

/// ONNX's `pads` (top, left, bottom, right) for Keras's padding of a window
/// over the layer's input.
fn pads(info: &LayerInfo, window: [usize; 2], strides: [usize; 2], padding: Padding) -> [usize; 4] {
    let (top, bottom) = window::padding(info.input[0], window[0], strides[0], padding);
    let (left, right) = window::padding(info.input[1], window[1], strides[1], padding);
    [top, left, bottom, right]
}

fn batched(shape: &[usize]) -> TensorShapeProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    let batch = Dimension {
        value: Some(Value::DimParam(BATCH.into())),
        ..Dimension::default()
    };
    let sizes = shape.iter().map(|&d| Dimension {
        value: Some(Value::DimValue(d as i64)),
        ..Dimension::default()
    });
    TensorShapeProto {
        dim: std::iter::once(batch).chain(sizes).collect(),
    }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..AttributeProto::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: value,
        ..AttributeProto::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: value,
        ..AttributeProto::default()
    }
}
