//! The closed set of primitive operations and the one shape rule of each.
//! Every stage matches on [`Op`] exhaustively, so a new op makes the compiler
//! list every place that must learn it.

use super::shape::{Dim, Shape};
use crate::shape::window;
use std::fmt;

/// Index of a variable (weight, moving statistic, optimizer slot) in
/// [`super::Graph::vars`].
pub type VarId = usize;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The batch of samples, `[N, ...]`.
    Input,
    /// The batch of targets: one-hot rows for softmax, 0/1 for sigmoid.
    Label,
    Var(VarId),
    /// A scalar; divided by the batch size when `per_batch` (the `1/N` of
    /// means over the batch).
    Const {
        value: f64,
        per_batch: bool,
    },
    /// Inverted dropout's random mask: each element 0 or `1/(1-rate)`, drawn
    /// by the runtime each step (so every engine sees the same mask).
    DropoutMask {
        rate: f64,
        index: usize,
    },
    /// A scalar the runtime sets each step (learning rate, Adam's step size).
    Hyper(Hyper),
    Unary(Unary),
    Binary(Binary),
    /// Sum over `axes`, keeping them with size 1.
    Sum {
        axes: Vec<usize>,
    },
    /// The operand stretched to this node's shape (NumPy broadcasting).
    Broadcast,
    /// Same elements, this node's shape (row-major, Keras flatten order).
    Reshape,
    /// Axes permuted: output axis `d` is operand axis `perm[d]`.
    Transpose {
        perm: Vec<usize>,
    },
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    Conv2d(Conv),
    MaxPool2d(Pool),
    /// `(x, dy) -> dx`: each window's gradient goes to its first maximum.
    MaxPool2dGrad(Pool),
    /// Each window's mean over the cells inside the input.
    AvgPool2d(Pool),
    /// `dy -> dx` of an input of this node's shape: each window's gradient
    /// spread evenly over the cells it averaged.
    AvgPool2dGrad(Pool),
    /// Over the last axis.
    Softmax,
    /// `(logits, one-hot labels) -> mean cross-entropy of softmax(logits)`.
    SoftmaxCrossEntropy,
    /// `(logits, 0/1 labels) -> mean binary cross-entropy of sigmoid(logits)`.
    SigmoidCrossEntropy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hyper {
    LearningRate,
    /// Adam's bias-corrected step size `lr * sqrt(1 - b2^t) / (1 - b1^t)`.
    AdamStepSize,
}

/// An enum of elementwise ops with `ALL`, every variant in order, written
/// once: the tests walk every op through it. A variant with a parameter
/// names it with the value `ALL` holds it at: `Elu { alpha: f64 = 0.7 }`.
macro_rules! elementwise_ops {
    ($(#[$doc:meta])* $name:ident {
        $($(#[$vdoc:meta])* $variant:ident $({ $field:ident: $ty:ty = $example:expr })?,)*
    }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum $name {
            $($(#[$vdoc])* $variant $({ $field: $ty })?,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant $({ $field: $example })?,)*];
        }
    };
}

elementwise_ops!(Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Recip,
    Relu,
    Sigmoid,
    Tanh,
    /// `x` above 0, `alpha (e^x - 1)` elsewhere.
    Elu { alpha: f64 = 0.7 },
    /// Keras's `selu`: `SELU_SCALE * elu(x)` with alpha `SELU_ALPHA`.
    Selu,
    /// `x` from 0 up, `negative_slope x` below.
    LeakyRelu { negative_slope: f64 = 0.3 },
    /// `x Φ(x)`, with the normal distribution's exact Φ (Keras's
    /// `gelu(approximate=False)`).
    Gelu,
    /// The error function, for gelu's gradient.
    Erf,
    /// `x sigmoid(x)`, Keras's `silu` (and `swish`).
    Silu,
    /// `log(1 + e^x)`.
    Softplus,
});

elementwise_ops!(Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    /// 1 where `a > b`, else 0.
    Greater,
});

/// Keras's `selu` constants (Klambauer et al., 2017).
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// Axis positions of (batch, height, width, feature) in a 4-D tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    pub batch: usize,
    pub spatial: [usize; 2],
    pub feature: usize,
}

/// Axis positions of (height, width, input feature, output feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelLayout {
    pub spatial: [usize; 2],
    pub input: usize,
    pub output: usize,
}

impl Layout {
    pub const NHWC: Layout = Layout {
        batch: 0,
        spatial: [1, 2],
        feature: 3,
    };
}

impl KernelLayout {
    pub const HWIO: KernelLayout = KernelLayout {
        spatial: [0, 1],
        input: 2,
        output: 3,
    };
}

/// A general 2-D convolution (XLA's ConvGeneralDilated): dimension numbers
/// let its gradients be convolutions too, with no transposes.
///
/// `out[b, y, x, f] = sum over ky, kx, c of
///     lhs'[b, y*stride + ky*rhs_dilation, x*stride + kx*rhs_dilation, c] * rhs[ky', kx', c, f]`
/// where `lhs'` is the input dilated by `lhs_dilation` then padded (negative
/// padding crops) and `ky' = KH-1-ky` when `flip`.
///
/// With `feature_groups` G (XLA's feature_group_count), the input features
/// and the output features split into G groups, and group `g` of the output
/// reads only group `g` of the input: the kernel's input axis holds one
/// group's features. G is the channel count for a depthwise convolution.
/// With `batch_groups` G (XLA's batch_group_count), the input's batch splits
/// into G groups and output feature group `g` sums over batch group `g`
/// only, so the output's batch is one group's: the kernel gradient of a
/// grouped convolution. At most one of the two exceeds 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv {
    pub strides: [usize; 2],
    pub padding: [(i64, i64); 2],
    pub lhs_dilation: [usize; 2],
    pub rhs_dilation: [usize; 2],
    pub flip: bool,
    pub lhs: Layout,
    pub rhs: KernelLayout,
    pub out: Layout,
    pub feature_groups: usize,
    pub batch_groups: usize,
}

impl Conv {
    /// The convolution a Keras Conv2D layer computes (`groups` 1), or a
    /// DepthwiseConv2D (`groups` the channel count).
    pub fn forward(strides: [usize; 2], padding: [(i64, i64); 2], groups: usize) -> Conv {
        Conv {
            strides,
            padding,
            lhs_dilation: [1, 1],
            rhs_dilation: [1, 1],
            flip: false,
            lhs: Layout::NHWC,
            rhs: KernelLayout::HWIO,
            out: Layout::NHWC,
            feature_groups: groups,
            batch_groups: 1,
        }
    }

    pub fn is_forward(&self) -> bool {
        self.lhs_dilation == [1, 1]
            && self.rhs_dilation == [1, 1]
            && !self.flip
            && self.lhs == Layout::NHWC
            && self.rhs == KernelLayout::HWIO
            && self.out == Layout::NHWC
            && self.batch_groups == 1
    }
}

/// A pooling window over NHWC: padding cells never win a maximum and are
/// not counted in an average, as Keras's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool {
    pub window: [usize; 2],
    pub strides: [usize; 2],
    pub padding: [(usize, usize); 2],
}

impl Pool {
    pub fn output_len(&self, input: usize, axis: usize) -> Option<usize> {
        let (lo, hi) = self.padding[axis];
        window::output_len(
            input,
            (lo as i64, hi as i64),
            1,
            self.window[axis],
            1,
            self.strides[axis],
        )
    }
}

/// What kind of computation an op is, which decides how fusion treats it.
#[derive(Clone, Debug, PartialEq)]
pub enum OpClass {
    /// Data a routine is given: the batch, the labels, variables, masks.
    Leaf,
    /// Computed at each index by a loop, and inlined into its user's loop.
    Elementwise(Elementwise),
    /// A sum over axes: a loop that reduces.
    Reduction { axes: Vec<usize> },
    /// The same data in another shape, which costs nothing.
    View,
    /// A kernel of its own, lowered by code generation.
    Kernel,
}

/// The elementwise ops, as a loop's expression computes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Elementwise {
    Const {
        value: f64,
        per_batch: bool,
    },
    Hyper(Hyper),
    Unary(Unary),
    Binary(Binary),
    /// A load at broadcast indices.
    Broadcast,
}

impl Op {
    pub fn class(&self) -> OpClass {
        match self {
            Op::Input | Op::Label | Op::Var(_) | Op::DropoutMask { .. } => OpClass::Leaf,
            Op::Const { value, per_batch } => OpClass::Elementwise(Elementwise::Const {
                value: *value,
                per_batch: *per_batch,
            }),
            Op::Hyper(h) => OpClass::Elementwise(Elementwise::Hyper(*h)),
            Op::Unary(u) => OpClass::Elementwise(Elementwise::Unary(*u)),
            Op::Binary(b) => OpClass::Elementwise(Elementwise::Binary(*b)),
            Op::Broadcast => OpClass::Elementwise(Elementwise::Broadcast),
            Op::Sum { axes } => OpClass::Reduction { axes: axes.clone() },
            Op::Reshape => OpClass::View,
            Op::Transpose { .. }
            | Op::MatMul { .. }
            | Op::Conv2d(_)
            | Op::MaxPool2d(_)
            | Op::MaxPool2dGrad(_)
            | Op::AvgPool2d(_)
            | Op::AvgPool2dGrad(_)
            | Op::Softmax
            | Op::SoftmaxCrossEntropy
            | Op::SigmoidCrossEntropy => OpClass::Kernel,
        }
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input | Op::Label | Op::Var(_) | Op::Const { .. } | Op::DropoutMask { .. } | Op::Hyper(_) => 0,
            Op::Unary(_)
            | Op::Sum { .. }
            | Op::Broadcast
            | Op::Reshape
            | Op::Transpose { .. }
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::AvgPool2dGrad(_)
            | Op::Softmax => 1,
            Op::Binary(_)
            | Op::MatMul { .. }
            | Op::Conv2d(_)
            | Op::MaxPool2dGrad(_)
            | Op::SoftmaxCrossEntropy
            | Op::SigmoidCrossEntropy => 2,
        }
    }

    /// The op's name in IR dumps.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Label => "label",
            Op::Var(_) => "var",
            Op::Const { .. } => "const",
            Op::DropoutMask { .. } => "dropout_mask",
            Op::Hyper(_) => "hyper",
            Op::Unary(u) => match u {
                Unary::Neg => "neg",
                Unary::Exp => "exp",
                Unary::Log => "log",
                Unary::Sqrt => "sqrt",
                Unary::Recip => "recip",
                Unary::Relu => "relu",
                Unary::Sigmoid => "sigmoid",
                Unary::Tanh => "tanh",
                Unary::Elu { .. } => "elu",
                Unary::Selu => "selu",
                Unary::LeakyRelu { .. } => "leaky_relu",
                Unary::Gelu => "gelu",
                Unary::Erf => "erf",
                Unary::Silu => "silu",
                Unary::Softplus => "softplus",
            },
            Op::Binary(b) => match b {
                Binary::Add => "add",
                Binary::Sub => "sub",
                Binary::Mul => "mul",
                Binary::Div => "div",
                Binary::Max => "max",
                Binary::Greater => "greater",
            },
            Op::Sum { .. } => "sum",
            Op::Broadcast => "broadcast",
            Op::Reshape => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::MatMul { .. } => "matmul",
            Op::Conv2d(_) => "conv2d",
            Op::MaxPool2d(_) => "maxpool2d",
            Op::MaxPool2dGrad(_) => "maxpool2d_grad",
            Op::AvgPool2d(_) => "avgpool2d",
            Op::AvgPool2dGrad(_) => "avgpool2d_grad",
            Op::Softmax => "softmax",
            Op::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Op::SigmoidCrossEntropy => "sigmoid_cross_entropy",
        }
    }

    /// The shape rule: the output shape for these operand shapes, or why
    /// they do not fit. Leaves (and ops whose output shape is a parameter:
    /// broadcast, reshape, avgpool2d_grad) check a `declared` shape instead.
    pub fn infer(&self, operands: &[&Shape], declared: &Shape) -> Result<Shape, String> {
        if operands.len() != self.arity() {
            return Err(format!("takes {} operands, got {}", self.arity(), operands.len()));
        }
        let fixed4 = |s: &Shape, what: &str| {
            if s.rank() == 4 {
                Ok(())
            } else {
                Err(format!("{what} must be 4-D, got {s}"))
            }
        };
        match self {
            Op::Input | Op::Label | Op::Var(_) | Op::DropoutMask { .. } => Ok(declared.clone()),
            Op::Const { .. } | Op::Hyper(_) => Ok(Shape::scalar()),
            Op::Unary(_) => Ok(operands[0].clone()),
            Op::Binary(_) => operands[0]
                .broadcast(operands[1])
                .ok_or_else(|| format!("cannot broadcast {} with {}", operands[0], operands[1])),
            Op::Sum { axes } => {
                let mut dims = operands[0].0.clone();
                for &a in axes {
                    *dims
                        .get_mut(a)
                        .ok_or_else(|| format!("axis {a} out of range for {}", operands[0]))? = Dim::Size(1);
                }
                Ok(Shape(dims))
            }
            Op::Broadcast => match operands[0].broadcast(declared) {
                Some(s) if &s == declared => Ok(s),
                _ => Err(format!("cannot broadcast {} to {declared}", operands[0])),
            },
            Op::Reshape => {
                if operands[0].count() == declared.count() {
                    Ok(declared.clone())
                } else {
                    Err(format!("cannot reshape {} to {declared}", operands[0]))
                }
            }
            Op::Transpose { perm } => {
                let x = operands[0];
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..x.rank()).collect::<Vec<_>>() {
                    return Err(format!("transpose {perm:?} is not a permutation of the axes of {x}"));
                }
                Ok(Shape(perm.iter().map(|&a| x.0[a]).collect()))
            }
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => {
                let (a, b) = (operands[0], operands[1]);
                if a.rank() != 2 || b.rank() != 2 {
                    return Err(format!("matmul needs 2-D operands, got {a} and {b}"));
                }
                let (m, ka) = if *transpose_a {
                    (a.0[1], a.0[0])
                } else {
                    (a.0[0], a.0[1])
                };
                let (kb, n) = if *transpose_b {
                    (b.0[1], b.0[0])
                } else {
                    (b.0[0], b.0[1])
                };
                if ka != kb {
                    return Err(format!("matmul contracts {a} with {b}: inner sizes differ"));
                }
                Ok(Shape(vec![m, n]))
            }
            Op::Conv2d(c) => {
                let (x, k) = (operands[0], operands[1]);
                fixed4(x, "conv2d input")?;
                fixed4(k, "conv2d kernel")?;
                let (fg, bg) = (c.feature_groups, c.batch_groups);
                if fg == 0 || bg == 0 || (fg > 1 && bg > 1) {
                    return Err(format!("conv2d with {fg} feature groups and {bg} batch groups"));
                }
                // The features a kernel gradient sums over are the batch.
                let grouped_in = match (x.0[c.lhs.feature], k.0[c.rhs.input]) {
                    (f, i) if fg == 1 => f == i,
                    (Dim::Size(f), Dim::Size(i)) => f == i * fg,
                    _ => false,
                };
                if !grouped_in {
                    return Err(format!(
                        "conv2d input {x} and kernel {k} disagree on input features ({fg} groups)"
                    ));
                }
                if !matches!(k.0[c.rhs.output], Dim::Size(o) if o % (fg * bg) == 0) {
                    return Err(format!("conv2d kernel {k} does not split into {} groups", fg * bg));
                }
                let batch = match x.0[c.lhs.batch] {
                    Dim::Size(b) if b % bg == 0 => Dim::Size(b / bg),
                    b if bg == 1 => b,
                    _ => return Err(format!("conv2d input {x}: its batch does not split into {bg} groups")),
                };
                let mut out = vec![Dim::Size(0); 4];
                out[c.out.batch] = batch;
                out[c.out.feature] = k.0[c.rhs.output];
                for axis in 0..2 {
                    let (Dim::Size(n), Dim::Size(w)) = (x.0[c.lhs.spatial[axis]], k.0[c.rhs.spatial[axis]]) else {
                        return Err("conv2d spatial axes cannot be the batch".to_string());
                    };
                    let len = window::output_len(
                        n,
                        c.padding[axis],
                        c.lhs_dilation[axis],
                        w,
                        c.rhs_dilation[axis],
                        c.strides[axis],
                    )
                    .ok_or_else(|| format!("conv2d kernel {k} does not fit input {x}"))?;
                    out[c.out.spatial[axis]] = Dim::Size(len);
                }
                Ok(Shape(out))
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                let x = operands[0];
                fixed4(x, "pooling input")?;
                let mut out = x.0.clone();
                for axis in 0..2 {
                    let Dim::Size(n) = x.0[axis + 1] else {
                        return Err("pooling spatial axes cannot be the batch".to_string());
                    };
                    out[axis + 1] = Dim::Size(
                        p.output_len(n, axis)
                            .ok_or_else(|| format!("pool window does not fit input {x}"))?,
                    );
                }
                Ok(Shape(out))
            }
            Op::MaxPool2dGrad(p) => {
                let pooled = Op::MaxPool2d(*p).infer(&operands[..1], declared)?;
                if &pooled != operands[1] {
                    return Err(format!("gradient {} does not match pooled shape {pooled}", operands[1]));
                }
                Ok(operands[0].clone())
            }
            Op::AvgPool2dGrad(p) => {
                let pooled = Op::AvgPool2d(*p).infer(&[declared], declared)?;
                if &pooled != operands[0] {
                    return Err(format!("gradient {} does not match pooled shape {pooled}", operands[0]));
                }
                Ok(declared.clone())
            }
            Op::Softmax => Ok(operands[0].clone()),
            Op::SoftmaxCrossEntropy | Op::SigmoidCrossEntropy => {
                if operands[0] != operands[1] {
                    return Err(format!("logits {} and labels {} differ", operands[0], operands[1]));
                }
                Ok(Shape::scalar())
            }
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = ['?'; 4];
        s[self.batch] = 'N';
        s[self.spatial[0]] = 'H';
        s[self.spatial[1]] = 'W';
        s[self.feature] = 'C';
        f.write_str(&s.iter().collect::<String>())
    }
}

impl fmt::Display for KernelLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = ['?'; 4];
        s[self.spatial[0]] = 'H';
        s[self.spatial[1]] = 'W';
        s[self.input] = 'I';
        s[self.output] = 'O';
        f.write_str(&s.iter().collect::<String>())
    }
}

fn pair<T: fmt::Display + PartialEq>(v: [T; 2]) -> String {
    if v[0] == v[1] {
        format!("{}", v[0])
    } else {
        format!("{}x{}", v[0], v[1])
    }
}

/// The attributes of an op as IR dumps print them: `strides=1 padding=valid`.
pub fn attributes(op: &Op) -> String {
    match op {
        // Shown at the f32 precision the engines compute in.
        Op::Const { value, per_batch } => {
            let v = *value as f32;
            if *per_batch { format!("{v}/N") } else { format!("{v}") }
        }
        Op::DropoutMask { rate, index } => format!("rate={rate} #{index}"),
        Op::Hyper(h) => match h {
            Hyper::LearningRate => "learning_rate".into(),
            Hyper::AdamStepSize => "adam_step_size".into(),
        },
        Op::Sum { axes } => format!("axes={axes:?}"),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let mut s = Vec::new();
            if *transpose_a {
                s.push("transpose_a");
            }
            if *transpose_b {
                s.push("transpose_b");
            }
            s.join(" ")
        }
        Op::Conv2d(c) => {
            let mut s = format!("strides={}", pair(c.strides));
            let pad = |p: (i64, i64)| {
                if p.0 == p.1 {
                    format!("{}", p.0)
                } else {
                    format!("{}:{}", p.0, p.1)
                }
            };
            if c.padding == [(0, 0); 2] {
                s += " padding=valid";
            } else {
                s += &format!(" padding={},{}", pad(c.padding[0]), pad(c.padding[1]));
            }
            if c.lhs_dilation != [1, 1] {
                s += &format!(" lhs_dilation={}", pair(c.lhs_dilation));
            }
            if c.rhs_dilation != [1, 1] {
                s += &format!(" rhs_dilation={}", pair(c.rhs_dilation));
            }
            if c.flip {
                s += " flip";
            }
            if c.feature_groups > 1 {
                s += &format!(" feature_groups={}", c.feature_groups);
            }
            if c.batch_groups > 1 {
                s += &format!(" batch_groups={}", c.batch_groups);
            }
            if !c.is_forward() {
                s += &format!(" dims={},{}->{}", c.lhs, c.rhs, c.out);
            }
            s
        }
        Op::Transpose { perm } => format!("perm={perm:?}"),
        Op::MaxPool2d(p) | Op::MaxPool2dGrad(p) | Op::AvgPool2d(p) | Op::AvgPool2dGrad(p) => {
            let mut s = format!("pool={} strides={}", pair(p.window), pair(p.strides));
            if p.padding != [(0, 0); 2] {
                s += &format!(
                    " padding={}:{},{}:{}",
                    p.padding[0].0, p.padding[0].1, p.padding[1].0, p.padding[1].1
                );
            }
            s
        }
        Op::Unary(u) => match u {
            Unary::Elu { alpha } => format!("alpha={alpha}"),
            Unary::LeakyRelu { negative_slope } => format!("negative_slope={negative_slope}"),
            Unary::Neg
            | Unary::Exp
            | Unary::Log
            | Unary::Sqrt
            | Unary::Recip
            | Unary::Relu
            | Unary::Sigmoid
            | Unary::Tanh
            | Unary::Selu
            | Unary::Gelu
            | Unary::Erf
            | Unary::Silu
            | Unary::Softplus => String::new(),
        },
        Op::Input
        | Op::Label
        | Op::Var(_)
        | Op::Binary(_)
        | Op::Broadcast
        | Op::Reshape
        | Op::Softmax
        | Op::SoftmaxCrossEntropy
        | Op::SigmoidCrossEntropy => String::new(),
    }
}
