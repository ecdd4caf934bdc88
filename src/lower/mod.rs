//! Lowering: a checked model becomes a graph of primitive ops, in inference
//! mode (dropout off, batch normalization from moving statistics), in
//! evaluation mode (inference plus the loss, as Keras's `evaluate`) or in
//! training mode (dropout masks, batch statistics, the loss, and the moving
//! statistics' updates as outputs; a frozen batchnorm keeps to its moving
//! statistics).

use crate::ir::{
    Binary, Builder, Conv, Graph, IrError, NodeId, Op, Origin, Output, Pool, Shape, Unary, VarDecl, VarId, verify,
};
use crate::parse::ast::{Activation, Layer, LayerKind, Loss, Pool2D};
use crate::shape::{Checked, LayerInfo, Role, window};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Inference,
    Evaluation,
    Training,
}

/// The forward graph of a checked model. In evaluation and training modes it
/// also computes the loss against a `label` leaf.
pub fn lower(checked: &Checked, mode: Mode) -> Result<Graph, IrError> {
    lower_tapped(checked, mode, &[])
}

/// The inference graph that also returns the output of each layer in
/// `layers` (indices into the model's layers) as `Output::Layer`.
pub fn probe(checked: &Checked, layers: &[usize]) -> Result<Graph, IrError> {
    lower_tapped(checked, Mode::Inference, layers)
}

/// The inference graph and a class score to differentiate: the dot product
/// of the model's scores (the logits of a final softmax or sigmoid, else its
/// outputs) with a `label` leaf that selects the class, summed over the
/// batch. Saliency is its gradient with respect to the input.
pub fn class_score(checked: &Checked) -> Result<(Graph, NodeId), IrError> {
    let mut graph = lower(checked, Mode::Inference)?;
    let prediction = graph.output(Output::Prediction).ok_or_else(|| IrError {
        message: "the inference graph has no prediction".into(),
        origin: Origin::default(),
    })?;
    let origin = graph[prediction].origin.clone();
    let scores = match graph[prediction].op {
        Op::Softmax | Op::Unary(Unary::Sigmoid) => graph.operands(prediction)[0],
        _ => prediction,
    };
    let mut b = Builder::new(&mut graph, origin);
    let shape = b.shape(scores).clone();
    let selector = b.shaped(Op::Label, &[], shape.clone())?;
    let selected = b.binary(Binary::Mul, scores, selector)?;
    let sum = b.sum(selected, (0..shape.rank()).collect())?;
    let score = b.reshape(sum, Shape::scalar())?;
    Ok((graph, score))
}

fn lower_tapped(checked: &Checked, mode: Mode, taps: &[usize]) -> Result<Graph, IrError> {
    let mut graph = Graph {
        vars: checked
            .weights()
            .map(|w| VarDecl {
                name: w.name.clone(),
                shape: w.shape.clone(),
                trainable: w.trainable,
            })
            .collect(),
        ..Graph::default()
    };
    let input = &checked.model.input;
    let origin = Origin {
        what: "input".into(),
        line: input.line,
        span: input.span,
        ..Origin::default()
    };
    let weights = checked
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, info)| info.weights.iter().map(move |w| (i, w.role)))
        .enumerate()
        .map(|(var, key)| (key, var))
        .collect();
    let mut l = Lowering {
        b: Builder::new(&mut graph, origin),
        mode,
        weights,
        var_nodes: HashMap::new(),
        layer: 0,
        next_mask: 0,
        assigns: Vec::new(),
    };
    let mut x = l.b.shaped(Op::Input, &[], Shape::batch_of(&input.shape))?;
    let mut tapped = Vec::new();
    for (i, (layer, info)) in checked.model.layers.iter().zip(&checked.layers).enumerate() {
        l.layer = i;
        l.b.origin = Origin {
            what: layer.name.clone(),
            line: layer.line,
            span: layer.span,
            ..Origin::default()
        };
        x = l.layer(layer, info, x)?;
        if taps.contains(&i) {
            tapped.push((Output::Layer(i), x));
        }
    }
    let mut outputs = vec![(Output::Prediction, x)];
    outputs.append(&mut tapped);
    if mode != Mode::Inference {
        let train = checked.model.train.as_ref();
        l.b.origin = Origin {
            what: checked.loss().name().into(),
            span: train.and_then(|t| t.loss_span).unwrap_or_default(),
            ..Origin::default()
        };
        let loss = l.loss(checked.loss(), x)?;
        outputs.push((Output::Loss, l.penalties(checked, loss)?));
        outputs.append(&mut l.assigns);
    }
    graph.outputs = outputs;
    verify::verify(&graph)?;
    Ok(graph)
}

struct Lowering<'g> {
    b: Builder<'g>,
    mode: Mode,
    /// Each layer's weights by role (the layer's index in the model), as
    /// the shape checker declared them.
    weights: HashMap<(usize, Role), VarId>,
    /// The node of each variable read so far: one per variable, as
    /// autodiff gives each variable node its own gradient output.
    var_nodes: HashMap<VarId, NodeId>,
    /// The layer being lowered.
    layer: usize,
    next_mask: usize,
    assigns: Vec<(Output, NodeId)>,
}

impl Lowering<'_> {
    /// The current layer's weight for `role`.
    fn var(&mut self, role: Role) -> Result<NodeId, IrError> {
        let id = *self.weights.get(&(self.layer, role)).ok_or_else(|| IrError {
            message: format!("the layer has no {} weight", role.keras_name()),
            origin: self.b.origin.clone(),
        })?;
        if let Some(&node) = self.var_nodes.get(&id) {
            return Ok(node);
        }
        let shape = Shape::fixed(&self.b.graph.vars[id].shape);
        let node = self.b.shaped(Op::Var(id), &[], shape)?;
        self.var_nodes.insert(id, node);
        Ok(node)
    }

    fn layer(&mut self, layer: &Layer, info: &LayerInfo, x: NodeId) -> Result<NodeId, IrError> {
        match &layer.kind {
            LayerKind::Conv2D(c) => {
                let pad = |axis: usize| {
                    let (lo, hi) = window::padding(info.input[axis], c.kernel_size[axis], c.strides[axis], c.padding);
                    (lo as i64, hi as i64)
                };
                let kernel = self.var(Role::Kernel)?;
                let y = self
                    .b
                    .op(Op::Conv2d(Conv::forward(c.strides, [pad(0), pad(1)], 1)), &[x, kernel])?;
                let y = self.bias(y, c.use_bias)?;
                self.activation(c.activation, y)
            }
            LayerKind::Dense(d) => {
                let kernel = self.var(Role::Kernel)?;
                let y = self.b.op(
                    Op::MatMul {
                        transpose_a: false,
                        transpose_b: false,
                    },
                    &[x, kernel],
                )?;
                let y = self.bias(y, d.use_bias)?;
                self.activation(d.activation, y)
            }
            LayerKind::DepthwiseConv2D(c) => {
                let pad = |axis: usize| {
                    let (lo, hi) = window::padding(info.input[axis], c.kernel_size[axis], c.strides[axis], c.padding);
                    (lo as i64, hi as i64)
                };
                // Keras keeps the kernel (KH, KW, C, M); as one group per
                // channel it is (KH, KW, 1, C*M), the same values in order.
                let channels = info.input[2];
                let kernel = self.var(Role::Kernel)?;
                let [kh, kw] = c.kernel_size;
                let grouped = self.b.reshape(kernel, Shape::fixed(&[kh, kw, 1, info.output[2]]))?;
                let conv = Conv::forward(c.strides, [pad(0), pad(1)], channels);
                let y = self.b.op(Op::Conv2d(conv), &[x, grouped])?;
                let y = self.bias(y, c.use_bias)?;
                self.activation(c.activation, y)
            }
            LayerKind::MaxPool2D(p) => self.b.op(Op::MaxPool2d(pool(p, info)), &[x]),
            LayerKind::AvgPool2D(p) => self.b.op(Op::AvgPool2d(pool(p, info)), &[x]),
            LayerKind::GlobalAvgPool2D { .. } => {
                let sum = self.b.sum(x, vec![1, 2])?;
                let scale = self.b.constant(1.0 / (info.input[0] * info.input[1]) as f64)?;
                let mean = self.b.binary(Binary::Mul, sum, scale)?;
                self.b.reshape(mean, Shape::batch_of(&info.output))
            }
            LayerKind::GlobalMaxPool2D { .. } => {
                let whole = Pool {
                    window: [info.input[0], info.input[1]],
                    strides: [info.input[0], info.input[1]],
                    padding: [(0, 0); 2],
                };
                let max = self.b.op(Op::MaxPool2d(whole), &[x])?;
                self.b.reshape(max, Shape::batch_of(&info.output))
            }
            LayerKind::Flatten => self.b.reshape(x, Shape::batch_of(&info.output)),
            LayerKind::Dropout { rate } => {
                if self.mode != Mode::Training || *rate == 0.0 {
                    return Ok(x);
                }
                let index = self.next_mask;
                self.next_mask += 1;
                let mask = self
                    .b
                    .shaped(Op::DropoutMask { rate: *rate, index }, &[], self.b.shape(x).clone())?;
                self.b.binary(Binary::Mul, x, mask)
            }
            LayerKind::BatchNorm(bn) => {
                let gamma = if bn.scale { Some(self.var(Role::Gamma)?) } else { None };
                let beta = if bn.center { Some(self.var(Role::Beta)?) } else { None };
                let (moving_mean, moving_var) = (self.var(Role::MovingMean)?, self.var(Role::MovingVariance)?);
                let eps = self.b.constant(bn.epsilon)?;
                // A frozen batchnorm normalizes with its moving statistics and
                // leaves them be, in training too, as Keras 3's does.
                let (centered, var) = if self.mode == Mode::Training && layer.trainable {
                    let (centered, mean, var) = self.batch_moments(x)?;
                    self.moving_average(moving_mean, mean, bn.momentum)?;
                    self.moving_average(moving_var, var, bn.momentum)?;
                    (centered, var)
                } else {
                    (self.b.binary(Binary::Sub, x, moving_mean)?, moving_var)
                };
                let std = self.b.binary(Binary::Add, var, eps)?;
                let std = self.b.unary(Unary::Sqrt, std)?;
                let inv = self.b.unary(Unary::Recip, std)?;
                let mut y = self.b.binary(Binary::Mul, centered, inv)?;
                if let Some(gamma) = gamma {
                    y = self.b.binary(Binary::Mul, y, gamma)?;
                }
                if let Some(beta) = beta {
                    y = self.b.binary(Binary::Add, y, beta)?;
                }
                Ok(y)
            }
            LayerKind::Activation(a) => self.activation(*a, x),
            LayerKind::LeakyRelu { negative_slope } => self.b.unary(
                Unary::LeakyRelu {
                    negative_slope: *negative_slope,
                },
                x,
            ),
            LayerKind::Elu { alpha } => self.b.unary(Unary::Elu { alpha: *alpha }, x),
        }
    }

    fn bias(&mut self, y: NodeId, use_bias: bool) -> Result<NodeId, IrError> {
        if !use_bias {
            return Ok(y);
        }
        let bias = self.var(Role::Bias)?;
        self.b.binary(Binary::Add, y, bias)
    }

    fn activation(&mut self, a: Activation, x: NodeId) -> Result<NodeId, IrError> {
        match a {
            Activation::Linear => Ok(x),
            Activation::Relu => self.b.unary(Unary::Relu, x),
            Activation::Sigmoid => self.b.unary(Unary::Sigmoid, x),
            Activation::Tanh => self.b.unary(Unary::Tanh, x),
            Activation::Softmax => self.b.op(Op::Softmax, &[x]),
            Activation::Elu => self.b.unary(
                Unary::Elu {
                    alpha: Activation::ELU_ALPHA,
                },
                x,
            ),
            Activation::Selu => self.b.unary(Unary::Selu, x),
            Activation::LeakyRelu => self.b.unary(
                Unary::LeakyRelu {
                    negative_slope: Activation::LEAKY_RELU_SLOPE,
                },
                x,
            ),
            Activation::Gelu => self.b.unary(Unary::Gelu, x),
            Activation::Silu => self.b.unary(Unary::Silu, x),
            Activation::Softplus => self.b.unary(Unary::Softplus, x),
        }
    }

    /// `(x - mean, mean, variance)` over every axis but the channels, with
    /// Keras's biased variance.
    fn batch_moments(&mut self, x: NodeId) -> Result<(NodeId, NodeId, NodeId), IrError> {
        let shape = self.b.shape(x).clone();
        let axes: Vec<usize> = (0..shape.rank() - 1).collect();
        let (per_sample, _) = Shape(shape.0[1..shape.rank() - 1].to_vec()).count();
        let scale = self.b.per_batch(1.0 / per_sample as f64)?;
        let sum = self.b.sum(x, axes.clone())?;
        let mean = self.b.binary(Binary::Mul, sum, scale)?;
        let centered = self.b.binary(Binary::Sub, x, mean)?;
        let squares = self.b.binary(Binary::Mul, centered, centered)?;
        let sum = self.b.sum(squares, axes)?;
        let var = self.b.binary(Binary::Mul, sum, scale)?;
        Ok((centered, mean, var))
    }

    /// `moving = moving * momentum + batch * (1 - momentum)`.
    fn moving_average(&mut self, moving: NodeId, batch: NodeId, momentum: f64) -> Result<(), IrError> {
        let Op::Var(id) = self.b.graph[moving].op else {
            return Err(IrError {
                message: "moving statistic is not a variable".into(),
                origin: self.b.origin.clone(),
            });
        };
        let batch = self.b.reshape(batch, self.b.shape(moving).clone())?;
        let keep = self.b.constant(momentum)?;
        let take = self.b.constant(1.0 - momentum)?;
        let old = self.b.binary(Binary::Mul, moving, keep)?;
        let new = self.b.binary(Binary::Mul, batch, take)?;
        let updated = self.b.binary(Binary::Add, old, new)?;
        self.assigns.push((Output::Assign(id), updated));
        Ok(())
    }

    /// `loss` plus every trainable kernel's regularization penalty, which
    /// Keras 3 adds to the loss it minimizes and to the loss it reports, in
    /// training and in evaluation: `l1 * sum(|w|) + l2 * sum(w^2)`, with
    /// `|w|` as `max(w, -w)` (whose gradient at 0 is 1, as JAX's `abs`).
    fn penalties(&mut self, checked: &Checked, loss: NodeId) -> Result<NodeId, IrError> {
        let mut total = loss;
        for (i, layer) in checked.model.layers.iter().enumerate() {
            let Some(regularizer) = layer.kind.kernel_regularizer() else {
                continue;
            };
            let trainable = self
                .weights
                .get(&(i, Role::Kernel))
                .map(|&id| self.b.graph.vars[id].trainable);
            if trainable != Some(true) {
                continue;
            }
            self.layer = i;
            self.b.origin = Origin {
                what: format!("{}/kernel {}", layer.name, regularizer.text()),
                line: layer.line,
                span: layer.span,
                ..Origin::default()
            };
            let w = self.var(Role::Kernel)?;
            let axes: Vec<usize> = (0..self.b.shape(w).rank()).collect();
            for (factor, squared) in [(regularizer.l1(), false), (regularizer.l2(), true)] {
                if factor == 0.0 {
                    continue;
                }
                let size = if squared {
                    self.b.binary(Binary::Mul, w, w)?
                } else {
                    let negated = self.b.unary(Unary::Neg, w)?;
                    self.b.binary(Binary::Max, w, negated)?
                };
                let sum = self.b.sum(size, axes.clone())?;
                let sum = self.b.reshape(sum, Shape::scalar())?;
                let factor = self.b.constant(factor)?;
                let penalty = self.b.binary(Binary::Mul, sum, factor)?;
                total = self.b.binary(Binary::Add, total, penalty)?;
            }
        }
        Ok(total)
    }

    fn loss(&mut self, loss: Loss, prediction: NodeId) -> Result<NodeId, IrError> {
        let shape = self.b.shape(prediction).clone();
        let label = self.b.shaped(Op::Label, &[], shape.clone())?;
        let logits_of = |l: &Self, op: Op| {
            let g = &*l.b.graph;
            (g[prediction].op == op).then(|| g.operands(prediction)[0])
        };
        match loss {
            Loss::CategoricalCrossentropy | Loss::BinaryCrossentropy => {
                let (activation, fused) = match loss {
                    Loss::CategoricalCrossentropy => (Op::Softmax, Op::SoftmaxCrossEntropy),
                    _ => (Op::Unary(Unary::Sigmoid), Op::SigmoidCrossEntropy),
                };
                let logits = logits_of(self, activation).ok_or_else(|| IrError {
                    message: format!("{} needs the model to end in its activation", loss.name()),
                    origin: self.b.origin.clone(),
                })?;
                self.b.op(fused, &[logits, label])
            }
            Loss::MeanSquaredError => {
                let diff = self.b.binary(Binary::Sub, prediction, label)?;
                let squares = self.b.binary(Binary::Mul, diff, diff)?;
                let sum = self.b.sum(squares, (0..shape.rank()).collect())?;
                let (per_sample, _) = shape.count();
                let scale = self.b.per_batch(1.0 / per_sample as f64)?;
                let mean = self.b.binary(Binary::Mul, sum, scale)?;
                self.b.reshape(mean, Shape::scalar())
            }
        }
    }
}

/// A pooling layer's window, with Keras's padding of the layer's input.
fn pool(p: &Pool2D, info: &LayerInfo) -> Pool {
    let pad = |axis: usize| window::padding(info.input[axis], p.pool_size[axis], p.strides[axis], p.padding);
    Pool {
        window: p.pool_size,
        strides: p.strides,
        padding: [pad(0), pad(1)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{Feeds, run};
    use ndarray::{ArrayD, IxDyn};

    /// Predictions with each weight's values made from its name, so that a
    /// weight read in the wrong role changes the result.
    fn predict(checked: &Checked) -> ArrayD<f64> {
        let graph = lower(checked, Mode::Inference).unwrap();
        let vars: Vec<ArrayD<f64>> = graph
            .vars
            .iter()
            .map(|v| {
                let seed = v.name.bytes().map(f64::from).sum::<f64>();
                let mut i = 0.0;
                ArrayD::from_shape_simple_fn(IxDyn(&v.shape), || {
                    i += 1.0;
                    1.0 + ((seed + i) * 0.37).sin().abs()
                })
            })
            .collect();
        let input = ArrayD::from_shape_fn(IxDyn(&[1, 4, 4, 2]), |d| d[1] as f64 - d[2] as f64 * 0.5 + d[3] as f64);
        let feeds = Feeds {
            input: input.view(),
            label: None,
            vars: &vars,
            masks: &[],
            hyper: &|_| 0.0,
        };
        run(&graph, &feeds).unwrap().remove(0).1
    }

    #[test]
    fn weights_are_found_by_role_whatever_their_order() {
        let source = "input 4x4x2\nconv2d 3 2x2\nbatchnorm\nflatten\ndense 2\n";
        let model = crate::parse::parse("m.cnn", source).unwrap();
        let checked = crate::shape::check(model, "m.cnn", source).unwrap();
        let mut reordered = checked.clone();
        for layer in &mut reordered.layers {
            layer.weights.reverse();
        }
        assert_eq!(predict(&checked), predict(&reordered));
    }
}
