//! The gradient rules, one per primitive, all in this one table: given a
//! node and the gradient of the loss with respect to its output, the
//! gradient with respect to each operand that needs one.

use super::Error;
use crate::ir::op::{SELU_ALPHA, SELU_SCALE};
use crate::ir::{Binary, Builder, Conv, Graph, IrError, KernelLayout, Layout, NodeId, Op, Shape, Unary};

type Grads = Vec<Option<NodeId>>;

/// Vector-Jacobian product of `node` for output gradient `g`. `wanted[i]`
/// says whether operand `i` needs its gradient.
pub fn vjp(b: &mut Builder, node: NodeId, g: NodeId, wanted: &[bool]) -> Result<Grads, Error> {
    let op = b.graph[node].op.clone();
    let xs = b.graph.operands(node);
    let y = node;
    let want = |i: usize| wanted.get(i).copied().unwrap_or(false);
    let grads = match op {
        Op::Input | Op::Label | Op::Var(_) | Op::Const { .. } | Op::DropoutMask { .. } | Op::Hyper(_) => vec![],
        Op::Unary(u) => {
            let x = xs[0];
            let dx = match u {
                Unary::Neg => b.unary(Unary::Neg, g)?,
                Unary::Exp => b.binary(Binary::Mul, g, y)?,
                Unary::Log => b.binary(Binary::Div, g, x)?,
                Unary::Sqrt => {
                    let half = b.constant(0.5)?;
                    let t = b.binary(Binary::Mul, g, half)?;
                    b.binary(Binary::Div, t, y)?
                }
                Unary::Recip => {
                    let yy = b.binary(Binary::Mul, y, y)?;
                    let t = b.binary(Binary::Mul, g, yy)?;
                    b.unary(Unary::Neg, t)?
                }
                // Where the output is positive, so is the input: the mask
                // reads the output, which the next layer keeps anyway.
                Unary::Relu => {
                    let zero = b.constant(0.0)?;
                    let on = b.binary(Binary::Greater, y, zero)?;
                    b.binary(Binary::Mul, g, on)?
                }
                Unary::Sigmoid => {
                    let one = b.constant(1.0)?;
                    let rest = b.binary(Binary::Sub, one, y)?;
                    let slope = b.binary(Binary::Mul, y, rest)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                Unary::Tanh => {
                    let one = b.constant(1.0)?;
                    let yy = b.binary(Binary::Mul, y, y)?;
                    let slope = b.binary(Binary::Sub, one, yy)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                // 1 above 0, alpha e^x = y + alpha below. With alpha > 0 the
                // output has the input's sign, and the mask reads it.
                Unary::Elu { alpha } => {
                    let sign_of = if alpha > 0.0 { y } else { x };
                    let below = b.constant(alpha)?;
                    let below = b.binary(Binary::Add, y, below)?;
                    let slope = piecewise(b, sign_of, 1.0, below)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                Unary::Selu => {
                    let below = b.constant(SELU_SCALE * SELU_ALPHA)?;
                    let below = b.binary(Binary::Add, y, below)?;
                    let slope = piecewise(b, y, SELU_SCALE, below)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                // 1 from 0 up (as JAX's `where(x >= 0, ...)` differentiates),
                // the slope below; a positive slope keeps the input's sign.
                Unary::LeakyRelu { negative_slope } => {
                    let sign_of = if negative_slope > 0.0 { y } else { x };
                    let zero = b.constant(0.0)?;
                    let below = b.binary(Binary::Greater, zero, sign_of)?;
                    let one = b.constant(1.0)?;
                    let above = b.binary(Binary::Sub, one, below)?;
                    let slope = b.constant(negative_slope)?;
                    let below = b.binary(Binary::Mul, below, slope)?;
                    let slope = b.binary(Binary::Add, above, below)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                // Φ(x) + x φ(x).
                Unary::Gelu => {
                    let scale = b.constant(std::f64::consts::FRAC_1_SQRT_2)?;
                    let t = b.binary(Binary::Mul, x, scale)?;
                    let e = b.unary(Unary::Erf, t)?;
                    let half = b.constant(0.5)?;
                    let he = b.binary(Binary::Mul, e, half)?;
                    let cdf = b.binary(Binary::Add, he, half)?;
                    let density = normal_density(b, x, -0.5, 1.0 / (2.0 * std::f64::consts::PI).sqrt())?;
                    let xd = b.binary(Binary::Mul, x, density)?;
                    let slope = b.binary(Binary::Add, cdf, xd)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                Unary::Erf => {
                    let slope = normal_density(b, x, -1.0, std::f64::consts::FRAC_2_SQRT_PI)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                // s + y (1 - s), s = sigmoid(x).
                Unary::Silu => {
                    let s = b.unary(Unary::Sigmoid, x)?;
                    let one = b.constant(1.0)?;
                    let rest = b.binary(Binary::Sub, one, s)?;
                    let t = b.binary(Binary::Mul, y, rest)?;
                    let slope = b.binary(Binary::Add, s, t)?;
                    b.binary(Binary::Mul, g, slope)?
                }
                Unary::Softplus => {
                    let slope = b.unary(Unary::Sigmoid, x)?;
                    b.binary(Binary::Mul, g, slope)?
                }
            };
            vec![Some(dx)]
        }
        Op::Binary(op) => {
            let (l, r) = (xs[0], xs[1]);
            let (dl, dr) = match op {
                Binary::Add => (Some(g), Some(g)),
                Binary::Sub => (Some(g), want(1).then(|| b.unary(Unary::Neg, g)).transpose()?),
                Binary::Mul => (
                    want(0).then(|| b.binary(Binary::Mul, g, r)).transpose()?,
                    want(1).then(|| b.binary(Binary::Mul, g, l)).transpose()?,
                ),
                Binary::Div => {
                    let dl = b.binary(Binary::Div, g, r)?;
                    // d(l/r)/dr = -(l/r)/r
                    let dr = if want(1) {
                        let t = b.binary(Binary::Mul, dl, y)?;
                        Some(b.unary(Unary::Neg, t)?)
                    } else {
                        None
                    };
                    (Some(dl), dr)
                }
                Binary::Max => {
                    // Ties go to the left operand.
                    let right_wins = b.binary(Binary::Greater, r, l)?;
                    let one = b.constant(1.0)?;
                    let left_wins = b.binary(Binary::Sub, one, right_wins)?;
                    (
                        Some(b.binary(Binary::Mul, g, left_wins)?),
                        Some(b.binary(Binary::Mul, g, right_wins)?),
                    )
                }
                // A step function: its derivative is zero wherever it exists.
                Binary::Greater => (None, None),
            };
            let dl = dl.map(|d| unbroadcast(b, d, l)).transpose()?;
            let dr = dr.map(|d| unbroadcast(b, d, r)).transpose()?;
            vec![dl, dr]
        }
        Op::Sum { .. } => {
            let shape = b.shape(xs[0]).clone();
            vec![Some(b.broadcast(g, shape)?)]
        }
        Op::Broadcast => vec![Some(unbroadcast(b, g, xs[0])?)],
        Op::Reshape => {
            let shape = b.shape(xs[0]).clone();
            vec![Some(b.reshape(g, shape)?)]
        }
        Op::Transpose { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (d, &a) in perm.iter().enumerate() {
                inverse[a] = d;
            }
            vec![Some(b.op(Op::Transpose { perm: inverse }, &[g])?)]
        }
        Op::MatMul {
            transpose_a: ta,
            transpose_b: tb,
        } => {
            let (a, m) = (xs[0], xs[1]);
            let mm = |b: &mut Builder, transpose_a, transpose_b, x, y| {
                b.op(
                    Op::MatMul {
                        transpose_a,
                        transpose_b,
                    },
                    &[x, y],
                )
            };
            // C = op(A) op(B): dA = g op(B)^T (transposed back if A was),
            // dB = op(A)^T g (likewise).
            let da = want(0)
                .then(|| {
                    if ta {
                        mm(b, tb, true, m, g)
                    } else {
                        mm(b, false, !tb, g, m)
                    }
                })
                .transpose()?;
            let db = want(1)
                .then(|| {
                    if tb {
                        mm(b, true, ta, g, a)
                    } else {
                        mm(b, !ta, false, a, g)
                    }
                })
                .transpose()?;
            vec![da, db]
        }
        Op::Conv2d(c) => {
            if !c.is_forward() {
                return Err(no_rule(b, node, "conv2d with general dimension numbers"));
            }
            let (x, k) = (xs[0], xs[1]);
            let sizes = |b: &Builder, n: NodeId| b.shape(n).0.clone();
            let (xd, kd, yd) = (sizes(b, x), sizes(b, k), sizes(b, y));
            let len = |d: crate::ir::Dim| d.resolve(0) as i64;
            let mut dx_pad = [(0, 0); 2];
            let mut dk_pad = [(0, 0); 2];
            for axis in 0..2 {
                let (input, kernel, out) = (len(xd[axis + 1]), len(kd[axis]), len(yd[axis + 1]));
                let s = c.strides[axis] as i64;
                let lo = c.padding[axis].0;
                // The input gradient: the flipped kernel slid over the output
                // gradient dilated by the stride.
                dx_pad[axis] = (kernel - 1 - lo, input - 1 - (out - 1) * s + lo);
                // The kernel gradient: the input correlated with the output
                // gradient, whose taps sit `stride` apart.
                dk_pad[axis] = (lo, kernel + (out - 1) * s - input - lo);
            }
            let groups = c.feature_groups;
            let dx = want(0)
                .then(|| {
                    let (kernel, rhs) = regrouped(b, k, groups)?;
                    let conv = Conv {
                        strides: [1, 1],
                        padding: dx_pad,
                        lhs_dilation: c.strides,
                        rhs_dilation: [1, 1],
                        flip: true,
                        lhs: Layout::NHWC,
                        rhs,
                        out: Layout::NHWC,
                        feature_groups: groups,
                        batch_groups: 1,
                    };
                    b.op(Op::Conv2d(conv), &[g, kernel])
                })
                .transpose()?;
            // The input's channels play the batch, its samples the features
            // summed over; a grouped convolution's channel groups become
            // batch groups.
            let dk = want(1)
                .then(|| {
                    let conv = Conv {
                        strides: [1, 1],
                        padding: dk_pad,
                        lhs_dilation: [1, 1],
                        rhs_dilation: c.strides,
                        flip: false,
                        lhs: Layout {
                            batch: 3,
                            spatial: [1, 2],
                            feature: 0,
                        },
                        rhs: KernelLayout {
                            spatial: [1, 2],
                            input: 0,
                            output: 3,
                        },
                        out: Layout {
                            batch: 2,
                            spatial: [0, 1],
                            feature: 3,
                        },
                        feature_groups: 1,
                        batch_groups: groups,
                    };
                    b.op(Op::Conv2d(conv), &[x, g])
                })
                .transpose()?;
            vec![dx, dk]
        }
        Op::MaxPool2d(p) => vec![Some(b.op(Op::MaxPool2dGrad(p), &[xs[0], g])?)],
        Op::AvgPool2d(p) => {
            let shape = b.shape(xs[0]).clone();
            vec![Some(b.shaped(Op::AvgPool2dGrad(p), &[g], shape)?)]
        }
        // Linear, and the adjoint of the average: the average again.
        Op::AvgPool2dGrad(p) => vec![Some(b.op(Op::AvgPool2d(p), &[g])?)],
        Op::Softmax => {
            // dx = y * (g - sum(g * y))
            let last = b.shape(y).rank() - 1;
            let gy = b.binary(Binary::Mul, g, y)?;
            let s = b.sum(gy, vec![last])?;
            let t = b.binary(Binary::Sub, g, s)?;
            vec![Some(b.binary(Binary::Mul, y, t)?)]
        }
        Op::SoftmaxCrossEntropy | Op::SigmoidCrossEntropy => {
            if want(1) {
                return Err(no_rule(b, node, "the labels of a cross-entropy"));
            }
            let (z, labels) = (xs[0], xs[1]);
            // The mean runs over every row (softmax) or every element
            // (sigmoid); rows are counted from the shape, `N` included.
            let shape = b.shape(z).clone();
            let (activation, averaged) = match op {
                Op::SoftmaxCrossEntropy => (Op::Softmax, Shape(shape.0[..shape.rank() - 1].to_vec())),
                _ => (Op::Unary(Unary::Sigmoid), shape),
            };
            // Fused: (p - y) / count.
            let p = existing_user(b, z, &activation).map_or_else(|| b.op(activation, &[z]), Ok)?;
            let scale = match averaged.count() {
                (per, true) => b.per_batch(1.0 / per as f64)?,
                (per, false) => b.constant(1.0 / per as f64)?,
            };
            let scale = b.binary(Binary::Mul, g, scale)?;
            let diff = b.binary(Binary::Sub, p, labels)?;
            vec![Some(b.binary(Binary::Mul, diff, scale)?), None]
        }
        Op::MaxPool2dGrad(_) => return Err(no_rule(b, node, "maxpool2d_grad")),
    };
    Ok(grads)
}

/// `above` where `sign_of` is positive, `below` (a node) elsewhere, as a
/// 0/1 mask selects them, so that each side is exact.
fn piecewise(b: &mut Builder, sign_of: NodeId, above: f64, below: NodeId) -> Result<NodeId, IrError> {
    let zero = b.constant(0.0)?;
    let on = b.binary(Binary::Greater, sign_of, zero)?;
    let one = b.constant(1.0)?;
    let off = b.binary(Binary::Sub, one, on)?;
    let above = b.constant(above)?;
    let above = b.binary(Binary::Mul, on, above)?;
    let below = b.binary(Binary::Mul, off, below)?;
    b.binary(Binary::Add, above, below)
}

/// `scale e^(k x^2)`: the normal density and erf's derivative.
fn normal_density(b: &mut Builder, x: NodeId, k: f64, scale: f64) -> Result<NodeId, IrError> {
    let xx = b.binary(Binary::Mul, x, x)?;
    let k = b.constant(k)?;
    let t = b.binary(Binary::Mul, xx, k)?;
    let e = b.unary(Unary::Exp, t)?;
    let scale = b.constant(scale)?;
    b.binary(Binary::Mul, e, scale)
}

/// The kernel that carries the output gradient back to the input: the
/// forward kernel `[KH, KW, I, G*J]` (I inputs and J outputs per group) as
/// `[KH, KW, J, G*I]`, and the layout to read it with. Without groups,
/// swapping the layout's input and output axes is enough; with one channel
/// each way per group (depthwise) the kernel is its own regrouping.
fn regrouped(b: &mut Builder, k: NodeId, groups: usize) -> Result<(NodeId, KernelLayout), IrError> {
    let swapped = KernelLayout {
        spatial: [0, 1],
        input: 3,
        output: 2,
    };
    let d = b.shape(k).0.clone();
    let size = |i: usize| d[i].resolve(0);
    let (kh, kw, i, j) = (size(0), size(1), size(2), size(3) / groups.max(1));
    if groups == 1 {
        return Ok((k, swapped));
    }
    if i == 1 && j == 1 {
        return Ok((k, KernelLayout::HWIO));
    }
    let split = b.reshape(k, Shape::fixed(&[kh, kw, i, groups, j]))?;
    let moved = b.op(
        Op::Transpose {
            perm: vec![0, 1, 4, 3, 2],
        },
        &[split],
    )?;
    Ok((
        b.reshape(moved, Shape::fixed(&[kh, kw, j, groups * i]))?,
        KernelLayout::HWIO,
    ))
}

/// The cross-entropy rule's gradient `(p - labels) * scale`, as the rule
/// above emits it, found in a graph: fusion computes it in the
/// cross-entropy's row kernel. Kept beside the rule so that the two change
/// together; a test differentiates a model and finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyGradient {
    /// `p - labels`.
    pub difference: NodeId,
    /// The gradient itself.
    pub gradient: NodeId,
    /// The scalar factor: the incoming gradient over the row count.
    pub scale: NodeId,
}

pub fn cross_entropy_gradient(g: &Graph, probs: NodeId, labels: NodeId) -> Option<CrossEntropyGradient> {
    g.users(probs).into_iter().find_map(|difference| {
        let is_difference = g[difference].op == Op::Binary(Binary::Sub) && g.operands(difference) == [probs, labels];
        let [gradient] = g.users(difference)[..] else {
            return None;
        };
        let scale = *g.operands(gradient).iter().find(|&&o| o != difference)?;
        (is_difference && g[gradient].op == Op::Binary(Binary::Mul) && g[scale].shape.rank() == 0).then_some(
            CrossEntropyGradient {
                difference,
                gradient,
                scale,
            },
        )
    })
}

fn no_rule(b: &Builder, node: NodeId, what: &str) -> Error {
    Error::NoRule {
        op: what.to_string(),
        origin: b.graph[node].origin.clone(),
    }
}

/// The forward pass may already compute `op(x)` (the softmax before a
/// cross-entropy): reuse it rather than compute it twice.
fn existing_user(b: &Builder, x: NodeId, op: &Op) -> Option<NodeId> {
    b.graph.users(x).into_iter().find(|&u| &b.graph[u].op == op)
}

/// Sums a gradient over the axes its operand was broadcast along, so it has
/// the operand's shape.
fn unbroadcast(b: &mut Builder, grad: NodeId, operand: NodeId) -> Result<NodeId, Error> {
    let target = b.shape(operand).clone();
    let shape = b.shape(grad).clone();
    if shape == target {
        return Ok(grad);
    }
    let lead = shape.rank() - target.rank();
    let axes: Vec<usize> = (0..shape.rank())
        .filter(|&i| i < lead || (target.0[i - lead] == crate::ir::Dim::Size(1) && shape.0[i] != target.0[i - lead]))
        .collect();
    let summed = if axes.is_empty() { grad } else { b.sum(grad, axes)? };
    Ok(b.reshape(summed, Shape(target.0))?)
}
