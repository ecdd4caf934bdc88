//! Fusion: the optimized graph becomes a short list of kernels. Chains of
//! elementwise ops become one expression evaluated in one loop (which the
//! memory plan lets overwrite, in place, the matmul or convolution result
//! it reads: bias, activation, dropout, batch-norm scale and shift); every
//! other op that computes is a kernel of its own, lowered by code
//! generation; softmax, its cross-entropy and the cross-entropy's gradient
//! become one row kernel; neighbouring loops over the same shape merge, so
//! an optimizer update reads the gradient and writes the weight and its
//! slots in one pass. Max pooling's gradient, where the windows tile the
//! input, takes in the elementwise work on either side of it (the dropout
//! mask of the gradient it reads, the ReLU mask of the gradient it writes).

use crate::ir::{Binary, Elementwise, Graph, Hyper, NodeId, Op, OpClass, Pool, Shape, Unary};
use std::collections::HashSet;

/// A scalar expression over the iteration space of a loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A materialized value, broadcast (NumPy rules) to the loop's shape.
    Load(NodeId),
    Const {
        value: f64,
        per_batch: bool,
    },
    Hyper(Hyper),
    Unary(Unary, Box<Expr>),
    Binary(Binary, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// The values the expression reads.
    pub fn loads(&self, out: &mut Vec<NodeId>) {
        match self {
            Expr::Load(n) => out.push(*n),
            Expr::Const { .. } | Expr::Hyper(_) => {}
            Expr::Unary(_, x) => x.loads(out),
            Expr::Binary(_, a, b) => {
                a.loads(out);
                b.loads(out);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// Elementwise: every output has `shape` and is its expression at each
    /// index.
    Map { shape: Shape, outputs: Vec<(NodeId, Expr)> },
    /// `out` is the sum of `expr` over `axes` of the iteration space `shape`.
    Reduce {
        shape: Shape,
        axes: Vec<usize>,
        out: NodeId,
        expr: Expr,
    },
    /// One node whose op has a kernel of its own ([`OpClass::Kernel`]):
    /// a matmul, convolution, pooling, softmax or cross-entropy.
    Node(NodeId),
    /// Row-wise: the mean loss, and where the graph wants them the
    /// probabilities and the fused gradient `(p - y) * scale`.
    SoftmaxCrossEntropy {
        loss: NodeId,
        z: NodeId,
        labels: NodeId,
        probs: Option<NodeId>,
        grad: Option<(NodeId, Expr)>,
    },
    /// Max pooling's gradient `grad` where the windows tile the pooled
    /// input `x` (each pixel in exactly one window): each window's pooled
    /// gradient `dy` (evaluated at the window) goes to its first maximum,
    /// zero to the rest, and `outputs` are evaluated at every pixel with
    /// `grad`'s value there in hand: `grad` itself, or the loop that read
    /// it (a ReLU's mask), which then never stores it.
    PoolGrad {
        grad: NodeId,
        x: NodeId,
        dy: Expr,
        outputs: Vec<(NodeId, Expr)>,
    },
}

impl Kernel {
    /// The values the kernel writes.
    pub fn outputs(&self) -> Vec<NodeId> {
        match self {
            Kernel::Map { outputs, .. } => outputs.iter().map(|(n, _)| *n).collect(),
            Kernel::Reduce { out, .. } => vec![*out],
            Kernel::Node(n) => vec![*n],
            Kernel::SoftmaxCrossEntropy { loss, probs, grad, .. } => {
                let mut v = vec![*loss];
                v.extend(*probs);
                v.extend(grad.as_ref().map(|(g, _)| *g));
                v
            }
            Kernel::PoolGrad { outputs, .. } => outputs.iter().map(|(n, _)| *n).collect(),
        }
    }

    /// The values the kernel reads.
    pub fn inputs(&self, g: &Graph) -> Vec<NodeId> {
        let mut v = Vec::new();
        match self {
            Kernel::Map { outputs, .. } => outputs.iter().for_each(|(_, e)| e.loads(&mut v)),
            Kernel::Reduce { expr, .. } => expr.loads(&mut v),
            Kernel::Node(n) => v = g.operands(*n),
            Kernel::SoftmaxCrossEntropy { z, labels, grad, .. } => {
                v.extend([*z, *labels]);
                if let Some((_, e)) = grad {
                    e.loads(&mut v);
                }
            }
            Kernel::PoolGrad {
                grad, x, dy, outputs, ..
            } => {
                v.push(*x);
                dy.loads(&mut v);
                outputs.iter().for_each(|(_, e)| e.loads(&mut v));
                // Computed inside the kernel, never read from memory.
                v.retain(|n| n != grad);
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// An optimized graph and the kernels that compute it.
#[derive(Clone, Debug)]
pub struct Program {
    pub graph: Graph,
    pub kernels: Vec<Kernel>,
}

/// Ops a loop computes per index, which fusion may inline into their user.
fn elementwise(op: &Op) -> bool {
    matches!(op.class(), OpClass::Elementwise(_))
}

/// Ops whose loop may evaluate an inlined operand: elementwise ops and sums.
fn loops(op: &Op) -> bool {
    matches!(op.class(), OpClass::Elementwise(_) | OpClass::Reduction { .. })
}

/// Constants and hyperparameters: scalars with no operands.
fn scalar_leaf(op: &Op) -> bool {
    matches!(
        op.class(),
        OpClass::Elementwise(Elementwise::Const { .. } | Elementwise::Hyper(_))
    )
}

/// Nodes that live in memory: everything but elementwise nodes folded into
/// their one user's expression.
fn materialized(g: &Graph) -> HashSet<NodeId> {
    let outputs: HashSet<NodeId> = g.outputs.iter().map(|(_, n)| *n).collect();
    g.nodes
        .node_indices()
        .filter(|&n| {
            let node = &g[n];
            if !elementwise(&node.op) || outputs.contains(&n) {
                return true;
            }
            let edges = g.nodes.edges_directed(n, petgraph::Direction::Outgoing).count();
            let users = g.users(n);
            let inlinable = match users.as_slice() {
                // Scalars (constants, hyperparameters) inline into any number
                // of elementwise users.
                _ if scalar_leaf(&node.op) => users.iter().all(|&u| loops(&g[u].op)),
                // The pooled gradient a tiling max pooling's gradient reads.
                [u] if tiling_pool_grad(g, *u).is_some() => edges == 1 && g.operands(*u)[1] == n,
                // One use, by a loop over the same shape: recomputing a
                // smaller tensor at every index of a larger loop would
                // multiply its work.
                [u] => {
                    edges == 1
                        && loops(&g[*u].op)
                        && (g[*u].shape == node.shape || matches!(g[*u].op.class(), OpClass::Reduction { .. }))
                }
                _ => false,
            };
            !inlinable
        })
        .collect()
}

/// The expression a loop evaluates for `n`: a load where `n` is stored.
/// Scalars without operands (constants, hyperparameters) are always
/// inlined.
fn expr(g: &Graph, n: NodeId, stored: &HashSet<NodeId>) -> Expr {
    if stored.contains(&n) && !scalar_leaf(&g[n].op) {
        Expr::Load(n)
    } else {
        root_expr(g, n, stored)
    }
}

/// The expression computing `n` from its operands, even where `n` itself is
/// stored: the loop that writes it.
fn root_expr(g: &Graph, n: NodeId, stored: &HashSet<NodeId>) -> Expr {
    let operand = |i: usize| Box::new(expr(g, g.operands(n)[i], stored));
    match g[n].op.class() {
        OpClass::Elementwise(e) => match e {
            Elementwise::Const { value, per_batch } => Expr::Const { value, per_batch },
            Elementwise::Hyper(h) => Expr::Hyper(h),
            Elementwise::Unary(u) => Expr::Unary(u, operand(0)),
            Elementwise::Binary(b) => Expr::Binary(b, operand(0), operand(1)),
            Elementwise::Broadcast => *operand(0),
        },
        OpClass::Leaf | OpClass::Reduction { .. } | OpClass::View | OpClass::Kernel => Expr::Load(n),
    }
}

/// Fuses an optimized graph into kernels, in an order that respects every
/// dependency.
pub fn fuse(graph: Graph) -> Program {
    let stored = materialized(&graph);
    let g = &graph;
    let mut kernels = Vec::new();
    let mut done: HashSet<NodeId> = HashSet::new();
    // Optimizer updates run as soon as their gradient is ready, while it is
    // still in cache and before its buffer is needed for something else.
    for n in g.schedule_by(|node| node.origin.phase != crate::ir::Phase::Update) {
        if done.contains(&n) || !stored.contains(&n) {
            continue;
        }
        let kernel = match g[n].op.class() {
            OpClass::Leaf | OpClass::View => continue,
            OpClass::Elementwise(_) => Kernel::Map {
                shape: g[n].shape.clone(),
                outputs: vec![(n, root_expr(g, n, &stored))],
            },
            OpClass::Reduction { axes } => {
                let x = g.operands(n)[0];
                Kernel::Reduce {
                    shape: g[x].shape.clone(),
                    axes,
                    out: n,
                    expr: expr(g, x, &stored),
                }
            }
            OpClass::Kernel => row_kernel(g, n, &stored, &mut done)
                .or_else(|| {
                    tiling_pool_grad(g, n).map(|_| Kernel::PoolGrad {
                        grad: n,
                        x: g.operands(n)[0],
                        dy: expr(g, g.operands(n)[1], &stored),
                        outputs: vec![(n, Expr::Load(n))],
                    })
                })
                .unwrap_or(Kernel::Node(n)),
        };
        kernels.push(kernel);
    }
    let kernels = merge_maps(g, kernels);
    let kernels = fold_pool_grads(g, kernels);
    Program { graph, kernels }
}

/// The largest pooling window whose gradient kernel is unrolled.
const MAX_WINDOW: usize = 64;

/// The pooling of `n` if `n` is a max pooling's gradient whose windows
/// tile its input: as wide apart as they are wide, unpadded, covering
/// every pixel.
pub fn tiling_pool_grad(g: &Graph, n: NodeId) -> Option<Pool> {
    let Op::MaxPool2dGrad(p) = g[n].op else { return None };
    let x = g[g.operands(n)[0]].shape.resolve(1);
    let tiles =
        (0..2).all(|a| p.strides[a] == p.window[a] && p.padding[a] == (0, 0) && x[1 + a].is_multiple_of(p.window[a]));
    (tiles && p.window[0] * p.window[1] <= MAX_WINDOW).then_some(p)
}

/// Folds the loop right after a tiling pooling gradient, when it is the
/// gradient's only reader (the ReLU mask of the layer before the pooling),
/// into the gradient's kernel: the gradient is then never stored.
fn fold_pool_grads(g: &Graph, kernels: Vec<Kernel>) -> Vec<Kernel> {
    let outputs: HashSet<NodeId> = g.outputs.iter().map(|(_, n)| *n).collect();
    let readers = |n: NodeId| kernels.iter().filter(|k| k.inputs(g).contains(&n)).count();
    let mut out: Vec<Kernel> = Vec::with_capacity(kernels.len());
    for k in kernels.iter().cloned() {
        if let (
            Some(Kernel::PoolGrad {
                grad, outputs: pooled, ..
            }),
            Kernel::Map { shape, outputs: map },
        ) = (out.last_mut(), &k)
            && *pooled == [(*grad, Expr::Load(*grad))]
            && g[*grad].shape == *shape
            && !outputs.contains(grad)
            && readers(*grad) == 1
            && k.inputs(g).contains(grad)
        {
            *pooled = map.clone();
            continue;
        }
        out.push(k);
    }
    out
}

/// The one row kernel of a softmax and the cross-entropy of its logits
/// (placed at the softmax), or of a cross-entropy alone; `None` for any
/// other node.
fn row_kernel(g: &Graph, n: NodeId, stored: &HashSet<NodeId>, done: &mut HashSet<NodeId>) -> Option<Kernel> {
    let (ce, probs) = if g[n].op == Op::Softmax {
        let logits = g.operands(n)[0];
        let ce = g
            .users(logits)
            .into_iter()
            .find(|&u| g[u].op == Op::SoftmaxCrossEntropy)?;
        done.insert(ce);
        (ce, Some(n))
    } else if g[n].op == Op::SoftmaxCrossEntropy {
        (n, None)
    } else {
        return None;
    };
    let ops = g.operands(ce);
    let (z, labels) = (ops[0], ops[1]);
    let grad = probs
        .and_then(|p| crate::autodiff::cross_entropy_gradient(g, p, labels))
        .filter(|d| !stored.contains(&d.difference));
    if let Some(d) = &grad {
        done.insert(d.gradient);
    }
    Some(Kernel::SoftmaxCrossEntropy {
        loss: ce,
        z,
        labels,
        probs,
        grad: grad.map(|d| (d.gradient, expr(g, d.scale, stored))),
    })
}

/// Merges each map into the map before it when both loop over the same
/// shape and the later one does not read, at another index, what the
/// earlier one writes (so the merged loop may compute both per index).
fn merge_maps(g: &Graph, kernels: Vec<Kernel>) -> Vec<Kernel> {
    let mut out: Vec<Kernel> = Vec::with_capacity(kernels.len());
    for k in kernels {
        if let (
            Some(Kernel::Map {
                shape: s0, outputs: o0, ..
            }),
            Kernel::Map { shape: s1, outputs: o1 },
        ) = (out.last_mut(), &k)
        {
            let written: Vec<NodeId> = o0.iter().map(|(n, _)| *n).collect();
            let same_index = o1.iter().all(|(_, e)| {
                let mut l = Vec::new();
                e.loads(&mut l);
                l.iter().all(|v| !written.contains(v) || g[*v].shape == *s1)
            });
            if s0 == s1 && same_index {
                o0.extend(o1.iter().cloned());
                continue;
            }
        }
        out.push(k);
    }
    out
}
