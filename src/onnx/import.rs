//! ONNX graphs of a sequential stack, as `torch.onnx.export` makes them of
//! an `nn.Sequential` (both exporters: the legacy one with Flatten, the
//! dynamo one with Reshape), read as cnnc layers.
//!
//! PyTorch is NCHW; cnnc is NHWC. The walk keeps track of the layout the
//! ONNX graph has at each node and converts the weights: conv kernels OIHW
//! to HWIO, linear weights (out, in) to (in, out), and the rows of the first
//! dense layer after a flatten (and any batchnorm between) from PyTorch's
//! channel, height, width order to Keras's height, width, channel order.
//! The model's input becomes NHWC. A Transpose of the input to NCHW, or to
//! NHWC before a flatten or the output (as converters from TensorFlow
//! write them), is taken as a change of layout and needs no layer.
//!
//! Anything else is an error that names the node and its operator: an
//! imported model computes what the ONNX graph computes, or is not
//! written.

use super::proto::{AttributeProto, ModelProto, NodeProto, TensorProto, attribute_type, data_type, type_proto};
use super::{OLDEST_OPSET, dims, floats, ints};
use crate::convert::{Imported, Stack};
use crate::ir::op::{SELU_ALPHA, SELU_SCALE};
use crate::parse::args::MAX_SIZE;
use crate::parse::ast::{Activation, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Init, LayerKind, Padding, Pool2D};
use crate::shape::{Role, window};
use ndarray::{ArrayD, Axis, IxDyn};
use prost::Message;
use std::collections::HashMap;

/// The operators read, each with its reader. An operator missing here is
/// refused with its name.
const OPS: [(&str, Reader); 23] = [
    ("Conv", conv),
    ("MaxPool", max_pool),
    ("AveragePool", average_pool),
    ("GlobalAveragePool", |w, n| global_pool(w, n, true)),
    ("GlobalMaxPool", |w, n| global_pool(w, n, false)),
    ("Gemm", gemm),
    ("MatMul", mat_mul),
    ("Add", add),
    ("Relu", |w, n| w.activation(n, Activation::Relu)),
    ("Sigmoid", |w, n| w.activation(n, Activation::Sigmoid)),
    ("Tanh", |w, n| w.activation(n, Activation::Tanh)),
    ("Elu", elu),
    ("Selu", selu),
    ("LeakyRelu", leaky_relu),
    ("Softplus", |w, n| w.activation(n, Activation::Softplus)),
    ("Gelu", gelu),
    ("Softmax", softmax),
    ("Flatten", flatten),
    ("Reshape", reshape),
    ("BatchNormalization", batch_norm),
    ("Dropout", dropout),
    ("Transpose", transpose),
    ("Identity", |_, _| Ok(())),
];

/// Reads one node into the walk; the message says what cannot be read.
type Reader = fn(&mut Walk, &Node) -> Result<(), String>;

/// Reads an ONNX model's bytes.
pub fn import(bytes: &[u8]) -> Result<Imported, String> {
    let model = ModelProto::decode(bytes).map_err(|e| format!("is not an ONNX model ({e})"))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or("imports no version of the standard ONNX operators (opset_import)")?;
    if opset < OLDEST_OPSET {
        return Err(format!(
            "uses opset {opset}; cnnc reads opset {OLDEST_OPSET} and later\n  = help: convert it: \
             onnx.save(onnx.version_converter.convert_version(onnx.load(path), 17), path)"
        ));
    }
    let graph = model.graph.as_ref().ok_or("holds no graph")?;
    let mut consts: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !consts.contains_key(i.name.as_str()))
        .collect();
    let [input] = inputs[..] else {
        let names: Vec<String> = inputs.iter().map(|i| format!("`{}`", i.name)).collect();
        return Err(format!(
            "has {} inputs ({}); cnnc models have one",
            inputs.len(),
            names.join(", ")
        ));
    };
    let shape = input_shape(input)?;
    let act = match shape[..] {
        [n] => Act::Vector { len: n, chw: None },
        [c, h, w] => Act::Image {
            hwc: [h, w, c],
            channels_first: true,
        },
        _ => {
            return Err(format!(
                "input `{}` has shape [N, {}]; cnnc reads images [N, C, H, W] and vectors [N, F]",
                input.name,
                sizes(&shape)
            ));
        }
    };
    // Constant nodes are weights too; collected first, so that a node may
    // read one wherever the graph defines it.
    let mut constant_values = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type == "Constant" {
            let Some(name) = node.output.first() else { continue };
            let value = node
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.clone())
                .ok_or_else(|| format!("{}: has no tensor `value`", label(node, i)))?;
            constant_values.push((name.as_str(), value));
        }
    }
    for (name, value) in &constant_values {
        consts.insert(name, value);
    }
    let mut walk = Walk {
        consts,
        current: input.name.clone(),
        act,
        input: match shape[..] {
            [c, h, w] => vec![h, w, c],
            _ => shape.clone(),
        },
        nchw_input: shape.len() == 3,
        flattened_by: String::new(),
        nodes_read: 0,
        last_op: "",
        stack: Stack::default(),
    };
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type == "Constant" {
            continue;
        }
        let node = Node { proto: node, index: i };
        walk.node(&node).map_err(|e| format!("{}: {e}", node.label()))?;
    }
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    if outputs != [walk.current.as_str()] {
        return Err(format!(
            "has outputs {outputs:?}; cnnc imports a stack whose one output is its last node's (`{}`)",
            walk.current
        ));
    }
    let mut notes = Vec::new();
    if walk.nchw_input {
        notes.push(format!(
            "the input is NHWC ([N, {}]), where the ONNX model reads NCHW ([N, {}]): transpose batches with x.transpose(0, 2, 3, 1)",
            sizes(&walk.input),
            sizes(&shape)
        ));
    }
    match walk.act {
        Act::Vector { chw: Some(chw), .. } => {
            return Err(format!(
                "{}: its output, the graph's, is a {}x{}x{} NCHW image flattened channel by channel; cnnc \
                 flattens in height, width, channel order and has no layer that reorders the values",
                walk.flattened_by, chw[0], chw[1], chw[2]
            ));
        }
        Act::Image {
            hwc: [h, w, c],
            channels_first: true,
        } if c > 1 && h * w > 1 => notes.push(format!(
            "the output is NHWC ([N, {h}, {w}, {c}]), where the ONNX model's is NCHW ([N, {c}, {h}, {w}])"
        )),
        _ => {}
    }
    let producer = match (model.producer_name.as_str(), model.producer_version.as_str()) {
        ("", _) => "an unnamed producer".to_string(),
        (name, "") => name.to_string(),
        (name, version) => format!("{name} {version}"),
    };
    Ok(Imported {
        stack: walk.stack,
        input: walk.input,
        origin: format!("{producer}, opset {opset}"),
        notes,
    })
}

/// The input's shape without the batch axis, whose size may be anything.
fn input_shape(input: &super::proto::ValueInfoProto) -> Result<Vec<usize>, String> {
    use super::proto::tensor_shape_proto::dimension::Value;
    let not = |what: &str| format!("input `{}` {what}", input.name);
    let Some(type_proto::Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(not("is not a tensor"));
    };
    if t.elem_type != data_type::FLOAT {
        return Err(not(&format!(
            "holds {} values; cnnc models read float32",
            super::type_name(t.elem_type)
        )));
    }
    let shape = t.shape.as_ref().ok_or_else(|| not("has no shape"))?;
    let Some((_, sample)) = shape.dim.split_first() else {
        return Err(not("has no batch axis"));
    };
    sample
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(n)) if n > 0 && n as u64 <= MAX_SIZE => Ok(n as usize),
            Some(Value::DimValue(n)) if n > 0 => Err(not(&format!("has a size of {n}, larger than cnnc reads"))),
            _ => Err(not(
                "has a dynamic size other than the batch; export it with fixed image sizes",
            )),
        })
        .collect()
}

/// The value a node reads and writes: an image in the layout the ONNX graph
/// has it in, or a vector.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Height, width and channels; `channels_first` when the ONNX graph
    /// holds it as NCHW, else NHWC.
    Image { hwc: [usize; 3], channels_first: bool },
    /// `chw` when it is an NCHW image flattened: its values are in channel,
    /// height, width order, where cnnc's flatten gives height, width,
    /// channel. The next dense layer's rows are reordered to match.
    Vector { len: usize, chw: Option<[usize; 3]> },
}

struct Walk<'a> {
    consts: HashMap<&'a str, &'a TensorProto>,
    /// The name of the value the next node must read.
    current: String,
    act: Act,
    /// The input cnnc reads: NHWC, or a vector.
    input: Vec<usize>,
    /// Whether the ONNX graph reads its image NCHW (cnnc reads NHWC).
    nchw_input: bool,
    /// The node that flattened the image, for messages.
    flattened_by: String,
    /// Nodes read so far, other than Constant.
    nodes_read: usize,
    /// The operator of the node read last (an Add after a MatMul is its bias).
    last_op: &'static str,
    stack: Stack,
}

/// A node and its place in the graph, for messages.
struct Node<'a> {
    proto: &'a NodeProto,
    index: usize,
}

impl Node<'_> {
    fn label(&self) -> String {
        label(self.proto, self.index)
    }

    fn attribute(&self, name: &str) -> Option<&AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.attribute(name) {
            None => Ok(default),
            Some(a) if a.r#type == attribute_type::INT => Ok(a.i),
            Some(_) => Err(format!("attribute `{name}` is not an integer")),
        }
    }

    fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        match self.attribute(name) {
            None => Ok(default),
            Some(a) if a.r#type == attribute_type::FLOAT => Ok(a.f),
            Some(_) => Err(format!("attribute `{name}` is not a float")),
        }
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.attribute(name) {
            None => Ok(None),
            Some(a) if a.r#type == attribute_type::INTS => Ok(Some(a.ints.clone())),
            Some(_) => Err(format!("attribute `{name}` is not a list of integers")),
        }
    }

    fn string(&self, name: &str) -> Result<String, String> {
        match self.attribute(name) {
            None => Ok(String::new()),
            Some(a) if a.r#type == attribute_type::STRING => Ok(String::from_utf8_lossy(&a.s).into_owned()),
            Some(_) => Err(format!("attribute `{name}` is not a string")),
        }
    }

    /// The input at `i`, if given (optional inputs may be left empty).
    fn input(&self, i: usize) -> Option<&str> {
        self.proto.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }
}

fn label(node: &NodeProto, index: usize) -> String {
    match node.name.as_str() {
        "" => format!(
            "node {index} ({}, output `{}`)",
            node.op_type,
            node.output.first().map_or("", String::as_str)
        ),
        name => format!("node `{name}` ({})", node.op_type),
    }
}

impl Walk<'_> {
    fn node(&mut self, node: &Node) -> Result<(), String> {
        let p = node.proto;
        if !(p.domain.is_empty() || p.domain == "ai.onnx") {
            return Err(format!(
                "is an operator of the set `{}`; cnnc reads the standard ONNX operators",
                p.domain
            ));
        }
        let Some(&(op, read)) = OPS.iter().find(|(op, _)| *op == p.op_type) else {
            let known: Vec<&str> = OPS.iter().map(|(op, _)| *op).filter(|op| *op != "Identity").collect();
            return Err(format!(
                "cnnc has no layer that computes {}\n  = note: cnnc imports {}, Identity and Constant",
                p.op_type,
                known.join(", ")
            ));
        };
        // A stack: every node reads the value before it, and weights.
        if !p.input.contains(&self.current) {
            return Err(format!(
                "does not read `{}`, the value the node before it computes; cnnc imports straight stacks of layers",
                self.current
            ));
        }
        for name in p.input.iter().filter(|n| !n.is_empty() && **n != self.current) {
            if !self.consts.contains_key(name.as_str()) {
                return Err(format!(
                    "reads `{name}`, which is neither the value before it nor a weight (an initializer or Constant)"
                ));
            }
        }
        if op != "Identity" {
            read(self, node)?;
            self.nodes_read += 1;
            self.last_op = op;
        }
        self.current = p.output.first().cloned().ok_or("has no output")?;
        Ok(())
    }

    /// The weight a node reads at input `i`, as f32 with its dimensions.
    fn weight(&self, node: &Node, i: usize, what: &str) -> Result<Option<ArrayD<f32>>, String> {
        let Some(name) = node.input(i) else { return Ok(None) };
        let t = self.tensor(name, what)?;
        let values = floats(t).map_err(|e| format!("its {what} `{name}` {e}"))?;
        let shape = dims(t).map_err(|e| format!("its {what} `{name}` {e}"))?;
        ArrayD::from_shape_vec(IxDyn(&shape), values)
            .map(Some)
            .map_err(|e| format!("its {what} `{name}`: {e}"))
    }

    fn tensor(&self, name: &str, what: &str) -> Result<&TensorProto, String> {
        self.consts
            .get(name)
            .copied()
            .ok_or_else(|| format!("its {what} `{name}` is not a weight (an initializer or Constant)"))
    }

    /// The image a node needs in NCHW, as ONNX's Conv, MaxPool and
    /// BatchNormalization read it.
    fn nchw(&self) -> Result<[usize; 3], String> {
        match self.act {
            Act::Image {
                hwc,
                channels_first: true,
            } => Ok(hwc),
            Act::Image { .. } => Err("reads an NHWC image, where the operator reads NCHW".into()),
            Act::Vector { len, .. } => Err(format!(
                "reads a vector of {len} values, where the operator reads an image"
            )),
        }
    }

    fn vector(&self) -> Result<(usize, Option<[usize; 3]>), String> {
        match self.act {
            Act::Vector { len, chw } => Ok((len, chw)),
            Act::Image { hwc, .. } => Err(format!(
                "reads an image ({}), where cnnc's dense layer reads a vector: flatten it first",
                crate::shape::dims(&hwc)
            )),
        }
    }

    fn activation(&mut self, _node: &Node, a: Activation) -> Result<(), String> {
        // Folded into the layer before when that layer has no activation
        // (PyTorch writes `Conv2d, ReLU`, Keras `Conv2D(activation="relu")`).
        let into = match self.stack.last_mut().map(|(kind, _)| kind) {
            Some(LayerKind::Conv2D(c)) if c.activation == Activation::Linear => Some(&mut c.activation),
            Some(LayerKind::DepthwiseConv2D(c)) if c.activation == Activation::Linear => Some(&mut c.activation),
            Some(LayerKind::Dense(d)) if d.activation == Activation::Linear => Some(&mut d.activation),
            Some(
                LayerKind::Conv2D(_)
                | LayerKind::DepthwiseConv2D(_)
                | LayerKind::Dense(_)
                | LayerKind::MaxPool2D(_)
                | LayerKind::AvgPool2D(_)
                | LayerKind::GlobalAvgPool2D { .. }
                | LayerKind::GlobalMaxPool2D { .. }
                | LayerKind::Flatten
                | LayerKind::Dropout { .. }
                | LayerKind::BatchNorm(_)
                | LayerKind::Activation(_)
                | LayerKind::LeakyRelu { .. }
                | LayerKind::Elu { .. },
            )
            | None => None,
        };
        match into {
            Some(slot) => *slot = a,
            None => self.stack.push(None, LayerKind::Activation(a), true, Vec::new()),
        }
        Ok(())
    }

    /// Keras's padding for ONNX's `pads` (or `auto_pad`) of a window over
    /// `hw`, or why there is none: cnnc pads not at all or as Keras's `same`.
    fn padding(&self, node: &Node, hw: [usize; 2], window: [usize; 2], strides: [usize; 2]) -> Result<Padding, String> {
        let same = [0, 1].map(|a| window::padding(hw[a], window[a], strides[a], Padding::Same));
        let keras_same = [same[0].0, same[1].0, same[0].1, same[1].1];
        let pads: [usize; 4] = match node.string("auto_pad")?.as_str() {
            "" | "NOTSET" => match node.ints("pads")? {
                None => [0; 4],
                Some(p) => p
                    .iter()
                    .map(|&x| usize::try_from(x).map_err(|_| format!("has negative pads {p:?}")))
                    .collect::<Result<Vec<_>, _>>()?
                    .try_into()
                    .map_err(|_| format!("has pads {p:?}, not 4 values"))?,
            },
            "VALID" => [0; 4],
            "SAME_UPPER" => keras_same,
            "SAME_LOWER" => [same[0].1, same[1].1, same[0].0, same[1].0],
            other => return Err(format!("has auto_pad `{other}`")),
        };
        if pads == [0; 4] {
            Ok(Padding::Valid)
        } else if pads == keras_same {
            Ok(Padding::Same)
        } else {
            Err(format!(
                "pads the {}x{} image by {} (top, left, bottom, right); cnnc pads either not at all or as Keras's \
                 `same`, which here is {} (the odd pixel at the bottom and right)",
                hw[0],
                hw[1],
                sizes(&pads),
                sizes(&keras_same)
            ))
        }
    }
}

/// A 2-element attribute (`strides`, `kernel_shape`), at least 1 each.
fn pair(node: &Node, name: &str, default: [usize; 2]) -> Result<[usize; 2], String> {
    let Some(v) = node.ints(name)? else { return Ok(default) };
    let fits = |x: i64| x > 0 && x as u64 <= MAX_SIZE;
    match v[..] {
        [a, b] if fits(a) && fits(b) => Ok([a as usize, b as usize]),
        _ => Err(format!("has {name} {v:?}; cnnc reads two sizes of at least 1")),
    }
}

fn no_dilation(node: &Node) -> Result<(), String> {
    match node.ints("dilations")? {
        Some(d) if d.iter().any(|&x| x != 1) => Err(format!("has dilations {d:?}; cnnc's windows are not dilated")),
        _ => Ok(()),
    }
}

fn out_len(input: usize, window: usize, stride: usize, padding: Padding) -> Result<usize, String> {
    let (lo, hi) = window::padding(input, window, stride, padding);
    window::output_len(input, (lo as i64, hi as i64), 1, window, 1, stride)
        .ok_or_else(|| format!("its window of {window} does not fit in {input}"))
}

/// A convolution (plain or depthwise) as cnnc writes it: its window and
/// its weights, the kernel and, if it has one, the bias.
struct Convolution {
    size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
    weights: Vec<(Role, ArrayD<f32>)>,
}

impl Convolution {
    fn use_bias(&self) -> bool {
        self.weights.len() > 1
    }
}

/// What a convolution and a depthwise one share: the window (undilated,
/// its `kernel_shape` the kernel's), the bias (one per filter), the weights
/// (`hwio` gives the kernel in cnnc's layout) and the output image of `o`
/// channels, which becomes the walk's activation.
fn convolution(
    w: &mut Walk,
    node: &Node,
    [h, wd]: [usize; 2],
    [kh, kw]: [usize; 2],
    o: usize,
    hwio: impl FnOnce() -> Result<ArrayD<f32>, String>,
) -> Result<Convolution, String> {
    no_dilation(node)?;
    let size = pair(node, "kernel_shape", [kh, kw])?;
    if size != [kh, kw] {
        return Err(format!("has kernel_shape {size:?}, but its kernel is {kh}x{kw}"));
    }
    let strides = pair(node, "strides", [1, 1])?;
    let padding = w.padding(node, [h, wd], size, strides)?;
    let bias = w.weight(node, 2, "bias")?;
    if let Some(b) = &bias
        && b.len() != o
    {
        return Err(format!("has {} biases for {o} filters", b.len()));
    }
    let mut weights = vec![(Role::Kernel, hwio()?)];
    weights.extend(bias.map(|b| (Role::Bias, b.into_shape_clone(IxDyn(&[o])).unwrap_or_default())));
    w.act = Act::Image {
        hwc: [
            out_len(h, kh, strides[0], padding)?,
            out_len(wd, kw, strides[1], padding)?,
            o,
        ],
        channels_first: true,
    };
    Ok(Convolution {
        size,
        strides,
        padding,
        weights,
    })
}

fn conv(w: &mut Walk, node: &Node) -> Result<(), String> {
    let [h, wd, c] = w.nchw()?;
    let kernel = w.weight(node, 1, "kernel")?.ok_or("has no kernel")?;
    let &[o, i, kh, kw] = kernel.shape() else {
        return Err(format!(
            "has a kernel of shape {:?}; cnnc reads 2-D convolutions",
            kernel.shape()
        ));
    };
    let group = node.int("group", 1)?;
    if group != 1 && !(group as usize == c && i == 1) {
        return Err(format!(
            "is a grouped convolution (group={group}) of {i} channels per group; cnnc convolves all channels \
             together (conv2d) or each alone (depthwiseconv2d, group={c})"
        ));
    }
    if group != 1 {
        return depthwise(w, node, kernel);
    }
    if i != c {
        return Err(format!("has a kernel for {i} channels, but its input has {c}"));
    }
    // OIHW to HWIO.
    let convolved = convolution(w, node, [h, wd], [kh, kw], o, || {
        Ok(kernel.permuted_axes(IxDyn(&[2, 3, 1, 0])))
    })?;
    let kind = LayerKind::Conv2D(Conv2D {
        filters: o,
        kernel_size: convolved.size,
        strides: convolved.strides,
        padding: convolved.padding,
        activation: Activation::Linear,
        use_bias: convolved.use_bias(),
        kernel_initializer: Init::GlorotUniform,
        bias_initializer: Init::Zeros,
        kernel_regularizer: None,
    });
    w.stack.push(None, kind, true, convolved.weights);
    Ok(())
}

/// A convolution of each channel alone: Keras's DepthwiseConv2D, whose
/// kernel (KH, KW, C, M) is the OIHW kernel (C*M, 1, KH, KW) in HWIO.
fn depthwise(w: &mut Walk, node: &Node, kernel: ArrayD<f32>) -> Result<(), String> {
    let [h, wd, c] = w.nchw()?;
    let &[o, _, kh, kw] = kernel.shape() else {
        return Err("has a kernel that is not 4-D".into());
    };
    if o % c != 0 {
        return Err(format!("has {o} filters for {c} groups"));
    }
    let convolved = convolution(w, node, [h, wd], [kh, kw], o, || {
        let hwio = kernel.permuted_axes(IxDyn(&[2, 3, 1, 0]));
        Ok(hwio
            .to_shape(IxDyn(&[kh, kw, c, o / c]))
            .map_err(|e| format!("its kernel: {e}"))?
            .into_owned())
    })?;
    let kind = LayerKind::DepthwiseConv2D(DepthwiseConv2D {
        kernel_size: convolved.size,
        strides: convolved.strides,
        padding: convolved.padding,
        depth_multiplier: o / c,
        activation: Activation::Linear,
        use_bias: convolved.use_bias(),
        depthwise_initializer: Init::GlorotUniform,
        bias_initializer: Init::Zeros,
    });
    w.stack.push(None, kind, true, convolved.weights);
    Ok(())
}

fn max_pool(w: &mut Walk, node: &Node) -> Result<(), String> {
    if node.proto.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err("also returns the indices of the maxima, which cnnc's maxpool2d does not".into());
    }
    let pool = pool_window(w, node)?;
    w.stack.push(None, LayerKind::MaxPool2D(pool), true, Vec::new());
    Ok(())
}

/// A pooling node's window, and the image it leaves.
fn pool_window(w: &mut Walk, node: &Node) -> Result<Pool2D, String> {
    let [h, wd, c] = w.nchw()?;
    let size = pair(node, "kernel_shape", [0, 0]).and_then(|s| match s {
        [0, 0] => Err("has no kernel_shape".to_string()),
        s => Ok(s),
    })?;
    no_dilation(node)?;
    let strides = pair(node, "strides", [1, 1])?;
    let padding = w.padding(node, [h, wd], size, strides)?;
    let out = [
        out_len(h, size[0], strides[0], padding)?,
        out_len(wd, size[1], strides[1], padding)?,
    ];
    if node.int("ceil_mode", 0)? != 0 {
        // Rounding up changes nothing where the windows tile the padded
        // image exactly.
        let ceil = |a: usize| {
            let (lo, hi) = window::padding([h, wd][a], size[a], strides[a], padding);
            ([h, wd][a] + lo + hi - size[a]).div_ceil(strides[a]) + 1
        };
        if ceil(0) != out[0] || ceil(1) != out[1] {
            return Err(format!(
                "rounds its output size up (ceil_mode=1), which on this {h}x{wd} image adds a window; \
                 cnnc rounds down, as Keras"
            ));
        }
    }
    w.act = Act::Image {
        hwc: [out[0], out[1], c],
        channels_first: true,
    };
    Ok(Pool2D {
        pool_size: size,
        strides,
        padding,
    })
}

fn average_pool(w: &mut Walk, node: &Node) -> Result<(), String> {
    let pool = pool_window(w, node)?;
    if pool.padding == Padding::Same && node.int("count_include_pad", 0)? != 0 {
        return Err(
            "counts the padding in its averages (count_include_pad=1); Keras's average pooling, and cnnc's, \
             averages the cells inside the image (PyTorch: AvgPool2d(..., count_include_pad=False))"
                .into(),
        );
    }
    w.stack.push(None, LayerKind::AvgPool2D(pool), true, Vec::new());
    Ok(())
}

/// GlobalAveragePool or GlobalMaxPool: an image of 1x1, kept as one
/// (`keepdims=true`) until a flatten makes it a vector.
fn global_pool(w: &mut Walk, _: &Node, average: bool) -> Result<(), String> {
    let [_, _, c] = w.nchw()?;
    w.act = Act::Image {
        hwc: [1, 1, c],
        channels_first: true,
    };
    let kind = if average {
        LayerKind::GlobalAvgPool2D { keepdims: true }
    } else {
        LayerKind::GlobalMaxPool2D { keepdims: true }
    };
    w.stack.push(None, kind, true, Vec::new());
    Ok(())
}

/// Elu: the `elu` activation where alpha is Keras's default, else an ELU
/// layer.
fn elu(w: &mut Walk, node: &Node) -> Result<(), String> {
    let alpha = decimal(node.float("alpha", 1.0)?);
    if alpha == Activation::ELU_ALPHA {
        return w.activation(node, Activation::Elu);
    }
    if alpha <= 0.0 {
        return Err(format!("has alpha {alpha}; cnnc's ELU takes an alpha above 0"));
    }
    w.stack.push(None, LayerKind::Elu { alpha }, true, Vec::new());
    Ok(())
}

fn selu(w: &mut Walk, node: &Node) -> Result<(), String> {
    let alpha = node.float("alpha", SELU_ALPHA as f32)?;
    let gamma = node.float("gamma", SELU_SCALE as f32)?;
    if alpha != SELU_ALPHA as f32 || gamma != SELU_SCALE as f32 {
        return Err(format!(
            "has alpha {alpha} and gamma {gamma}; Keras's selu, and cnnc's, has {} and {}",
            SELU_ALPHA as f32, SELU_SCALE as f32
        ));
    }
    w.activation(node, Activation::Selu)
}

/// LeakyRelu: the `leaky_relu` activation at Keras's slope (0.2), else a
/// LeakyReLU layer (PyTorch's default slope is 0.01).
fn leaky_relu(w: &mut Walk, node: &Node) -> Result<(), String> {
    let negative_slope = decimal(node.float("alpha", 0.01)?);
    if negative_slope == Activation::LEAKY_RELU_SLOPE {
        return w.activation(node, Activation::LeakyRelu);
    }
    if negative_slope < 0.0 {
        return Err(format!("has a negative slope of {negative_slope}; cnnc's is 0 or more"));
    }
    w.stack
        .push(None, LayerKind::LeakyRelu { negative_slope }, true, Vec::new());
    Ok(())
}

fn gelu(w: &mut Walk, node: &Node) -> Result<(), String> {
    match node.string("approximate")?.as_str() {
        "" | "none" => w.activation(node, Activation::Gelu),
        other => Err(format!(
            "approximates with `{other}`; cnnc's gelu is the exact one, Keras's default"
        )),
    }
}

fn gemm(w: &mut Walk, node: &Node) -> Result<(), String> {
    let (len, chw) = w.vector()?;
    if node.input(0) != Some(w.current.as_str()) {
        return Err("multiplies a weight by the layer's input, where cnnc multiplies the input by a weight".into());
    }
    if node.int("transA", 0)? != 0 {
        return Err("transposes its input (transA=1)".into());
    }
    let b = w.weight(node, 1, "weight")?.ok_or("has no weight")?;
    let kernel = match (node.int("transB", 0)?, b.shape()) {
        (0, [_, _]) => b,
        (_, [_, _]) => b.reversed_axes(),
        (_, shape) => return Err(format!("has a weight of shape {shape:?}, not a matrix")),
    };
    let alpha = node.float("alpha", 1.0)?;
    let beta = node.float("beta", 1.0)?;
    let kernel = if alpha == 1.0 { kernel } else { kernel * alpha };
    let bias = match w.weight(node, 2, "bias")? {
        Some(c) => Some(bias(c, kernel.shape()[1])? * beta),
        None => None,
    };
    dense(w, len, chw, kernel, bias)
}

fn mat_mul(w: &mut Walk, node: &Node) -> Result<(), String> {
    let (len, chw) = w.vector()?;
    if node.input(0) != Some(w.current.as_str()) {
        return Err("multiplies a weight by the layer's input, where cnnc multiplies the input by a weight".into());
    }
    let kernel = w.weight(node, 1, "weight")?.ok_or("has no weight")?;
    if kernel.ndim() != 2 {
        return Err(format!("has a weight of shape {:?}, not a matrix", kernel.shape()));
    }
    dense(w, len, chw, kernel, None)
}

/// A bias for `units` outputs: `[units]`, `[1, units]`, or one value for all.
fn bias(c: ArrayD<f32>, units: usize) -> Result<ArrayD<f32>, String> {
    match c.shape() {
        [n] | [1, n] if *n == units => Ok(c.into_shape_clone(IxDyn(&[units])).unwrap_or_default()),
        [] | [1] | [1, 1] => Ok(ArrayD::from_elem(
            IxDyn(&[units]),
            c.iter().next().copied().unwrap_or(0.0),
        )),
        shape => Err(format!("has a bias of shape {shape:?} for {units} outputs")),
    }
}

fn dense(
    w: &mut Walk,
    len: usize,
    chw: Option<[usize; 3]>,
    kernel: ArrayD<f32>,
    bias: Option<ArrayD<f32>>,
) -> Result<(), String> {
    let &[rows, units] = kernel.shape() else {
        return Err("has a weight that is not a matrix".into());
    };
    if rows != len {
        return Err(format!("has a weight for {rows} inputs, but its input has {len}"));
    }
    let kernel = match chw {
        Some(chw) => kernel.select(Axis(0), &hwc_order(chw)),
        None => kernel,
    };
    let mut weights = vec![(Role::Kernel, kernel)];
    let use_bias = bias.is_some();
    weights.extend(bias.map(|b| (Role::Bias, b)));
    w.act = Act::Vector { len: units, chw: None };
    let kind = LayerKind::Dense(Dense {
        units,
        activation: Activation::Linear,
        use_bias,
        kernel_initializer: Init::GlorotUniform,
        bias_initializer: Init::Zeros,
        kernel_regularizer: None,
    });
    w.stack.push(None, kind, true, weights);
    Ok(())
}

/// The bias of the MatMul before: the only Add cnnc reads.
fn add(w: &mut Walk, node: &Node) -> Result<(), String> {
    let unbiased = w.last_op == "MatMul" && matches!(w.stack.last_mut(), Some((LayerKind::Dense(d), _)) if !d.use_bias);
    if !unbiased {
        return Err("adds something other than the bias of the MatMul right before it".into());
    }
    let (units, _) = w.vector()?;
    // Either operand may be the bias.
    let at = usize::from(node.input(0) == Some(w.current.as_str()));
    let b = bias(w.weight(node, at, "bias")?.ok_or("has no bias")?, units)?;
    if let Some((LayerKind::Dense(d), weights)) = w.stack.last_mut() {
        d.use_bias = true;
        weights.push((Role::Bias, b));
    }
    Ok(())
}

fn softmax(w: &mut Walk, node: &Node) -> Result<(), String> {
    let axis = node.int("axis", -1)?;
    let (rank, channel) = match w.act {
        Act::Vector { .. } => (2, 1),
        Act::Image { channels_first, .. } => (4, if channels_first { 1 } else { 3 }),
    };
    if axis.rem_euclid(rank) != channel || axis >= rank || axis < -rank {
        return Err(format!(
            "normalizes over axis {axis} of a {rank}-D value; cnnc's softmax normalizes over the channels (axis {channel})"
        ));
    }
    w.activation(node, Activation::Softmax)
}

fn flatten(w: &mut Walk, node: &Node) -> Result<(), String> {
    let axis = node.int("axis", 1)?;
    if axis != 1 {
        return Err(format!(
            "flattens from axis {axis}; cnnc flattens everything but the batch (axis 1)"
        ));
    }
    flattened(w, node)
}

/// The value flattened: a cnnc `flatten` of an image.
fn flattened(w: &mut Walk, node: &Node) -> Result<(), String> {
    // A global pooling and its flatten are one layer, without keepdims.
    if let Some((LayerKind::GlobalAvgPool2D { keepdims } | LayerKind::GlobalMaxPool2D { keepdims }, _)) =
        w.stack.last_mut()
        && *keepdims
        && let Act::Image { hwc: [1, 1, c], .. } = w.act
    {
        *keepdims = false;
        w.act = Act::Vector { len: c, chw: None };
        w.flattened_by = node.label();
        return Ok(());
    }
    if let Act::Image {
        hwc: [h, wd, c],
        channels_first,
    } = w.act
    {
        let len = features(w.act)?;
        let chw = (channels_first && c > 1 && h * wd > 1).then_some([c, h, wd]);
        w.act = Act::Vector { len, chw };
        w.flattened_by = node.label();
        w.stack.push(None, LayerKind::Flatten, true, Vec::new());
    }
    Ok(())
}

/// The values of one sample.
fn features(act: Act) -> Result<usize, String> {
    match act {
        Act::Image { hwc, .. } => hwc
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| "reads an image too large to flatten".to_string()),
        Act::Vector { len, .. } => Ok(len),
    }
}

/// A Reshape that flattens: to `[-1, features]` or `[N, -1]`, as the
/// dynamo exporter writes `nn.Flatten`.
fn reshape(w: &mut Walk, node: &Node) -> Result<(), String> {
    let name = node.input(1).ok_or("has no shape")?;
    let target = ints(w.tensor(name, "shape")?).map_err(|e| format!("its shape `{name}` {e}"))?;
    let features = features(w.act)? as i64;
    let copies_batch = node.int("allowzero", 0)? == 0;
    let flattens = match target[..] {
        [-1, f] => f == features,
        [0, f] if copies_batch => f == features || f == -1,
        _ => false,
    };
    if !flattens {
        return Err(format!(
            "reshapes to {target:?}; cnnc reads a Reshape only as a flatten, to [-1, {features}]"
        ));
    }
    flattened(w, node)
}

fn batch_norm(w: &mut Walk, node: &Node) -> Result<(), String> {
    if node.int("training_mode", 0)? != 0 {
        return Err("normalizes with the batch's statistics (training_mode=1); export the model in eval mode".into());
    }
    let (channels, chw) = match w.act {
        Act::Image {
            hwc,
            channels_first: true,
        } => (hwc[2], None),
        Act::Image { .. } => return Err("normalizes an NHWC image over its height, not its channels".into()),
        Act::Vector { len, chw } => (len, chw),
    };
    let mut weights = Vec::new();
    for (i, role) in [
        (1, Role::Gamma),
        (2, Role::Beta),
        (3, Role::MovingMean),
        (4, Role::MovingVariance),
    ] {
        let what = role.keras_name().replace('_', " ");
        let v = w.weight(node, i, &what)?.ok_or_else(|| format!("has no {what}"))?;
        if v.len() != channels {
            return Err(format!("has a {what} of {} values for {channels} channels", v.len()));
        }
        weights.push((role, v.into_shape_clone(IxDyn(&[channels])).unwrap_or_default()));
    }
    // Features of a flattened NCHW image, in cnnc's order.
    if let Some(order) = chw.map(hwc_order) {
        for (_, v) in &mut weights {
            *v = v.select(Axis(0), &order);
        }
    }
    let kind = LayerKind::BatchNorm(BatchNorm {
        momentum: decimal(node.float("momentum", 0.9)?),
        epsilon: decimal(node.float("epsilon", 1e-5)?),
        center: true,
        scale: true,
    });
    w.stack.push(None, kind, true, weights);
    Ok(())
}

fn dropout(w: &mut Walk, node: &Node) -> Result<(), String> {
    let rate = match node.input(1) {
        Some(name) => floats(w.tensor(name, "ratio")?)
            .ok()
            .and_then(|v| v.first().copied())
            .ok_or_else(|| format!("its ratio `{name}` is not a number"))?,
        None => 0.5,
    };
    if !(0.0..1.0).contains(&rate) {
        return Err(format!(
            "drops a fraction {rate} of its values; cnnc's rate is in [0, 1)"
        ));
    }
    if node.proto.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err("also returns its mask".into());
    }
    // Exact in f64 as the file's f32 wrote it: 0.25 stays 0.25.
    w.stack
        .push(None, LayerKind::Dropout { rate: f64::from(rate) }, true, Vec::new());
    Ok(())
}

/// A change of layout at the edges: the input to NCHW, or an image to NHWC
/// before a flatten or the output.
fn transpose(w: &mut Walk, node: &Node) -> Result<(), String> {
    let perm = node.ints("perm")?.unwrap_or_default();
    match (w.act, &perm[..]) {
        (Act::Vector { .. }, [0, 1]) => Ok(()),
        (
            Act::Image {
                hwc: [h, wd, c],
                channels_first: true,
            },
            [0, 3, 1, 2],
        ) if w.nodes_read == 0 => {
            // The graph reads NHWC, as cnnc does: its declared [N, H, W, C]
            // was taken for [N, C, H, W].
            w.input = vec![c, h, wd];
            w.nchw_input = false;
            w.act = Act::Image {
                hwc: [c, h, wd],
                channels_first: true,
            };
            Ok(())
        }
        (
            Act::Image {
                hwc,
                channels_first: true,
            },
            [0, 2, 3, 1],
        ) => {
            w.act = Act::Image {
                hwc,
                channels_first: false,
            };
            Ok(())
        }
        (
            Act::Image {
                hwc,
                channels_first: false,
            },
            [0, 3, 1, 2],
        ) => {
            w.act = Act::Image {
                hwc,
                channels_first: true,
            };
            Ok(())
        }
        _ => Err(format!(
            "permutes the axes by {perm:?}; cnnc reads a Transpose only as a change between NCHW and NHWC"
        )),
    }
}

/// For each feature of cnnc's flatten of a `chw` image (height, width,
/// channel order), the index of the same value in the ONNX graph's
/// (channel, height, width order).
fn hwc_order([c, h, w]: [usize; 3]) -> Vec<usize> {
    let mut order = Vec::with_capacity(c * h * w);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                order.push((ch * h + y) * w + x);
            }
        }
    }
    order
}

/// The f32 of an attribute as the decimal it was written from: PyTorch's
/// `eps=1e-5` is stored as the f32 nearest 1e-5, which the `.cnn` file
/// should say as `0.00001`, not `0.000009999999747378752`. cnnc computes in
/// f32, where the two are the same number.
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

fn sizes(shape: &[usize]) -> String {
    let s: Vec<String> = shape.iter().map(usize::to_string).collect();
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwc_order_reads_channels_last() {
        // 2 channels of 1x3: CHW indices c*3 + x; HWC walks x, then c.
        assert_eq!(hwc_order([2, 1, 3]), vec![0, 3, 1, 4, 2, 5]);
    }
}
