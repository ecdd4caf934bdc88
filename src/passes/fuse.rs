//! Fusion: the optimized graph becomes a short list of kernels. Chains of
//! elementwise ops become one expression evaluated in one loop; an
//! elementwise chain that reads a matmul or convolution result right after
//! it is that kernel's epilogue (bias, activation, dropout, batch-norm
//! scale and shift), computed in place; softmax, its cross-entropy and the
//! cross-entropy's gradient become one row kernel; neighbouring loops over
//! the same shape merge, so an optimizer update reads the gradient and
//! writes the weight and its slots in one pass.

use crate::ir::{Binary, Conv, Graph, Hyper, NodeId, Op, Pool, Shape, Unary};
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
    /// index. `epilogue_of` names the matmul or convolution whose result the
    /// loop rewrites in place right after it.
    Map {
        shape: Shape,
        outputs: Vec<(NodeId, Expr)>,
        epilogue_of: Option<NodeId>,
    },
    /// `out` is the sum of `expr` over `axes` of the iteration space `shape`.
    Reduce {
        shape: Shape,
        axes: Vec<usize>,
        out: NodeId,
        expr: Expr,
    },
    MatMul {
        out: NodeId,
        a: NodeId,
        b: NodeId,
        transpose_a: bool,
        transpose_b: bool,
    },
    Conv {
        out: NodeId,
        lhs: NodeId,
        rhs: NodeId,
        conv: Conv,
    },
    MaxPool {
        out: NodeId,
        x: NodeId,
        pool: Pool,
    },
    MaxPoolGrad {
        out: NodeId,
        x: NodeId,
        dy: NodeId,
        pool: Pool,
    },
    Softmax {
        out: NodeId,
        z: NodeId,
    },
    /// Row-wise: the mean loss, and where the graph wants them the
    /// probabilities and the fused gradient `(p - y) * scale`.
    SoftmaxCrossEntropy {
        loss: NodeId,
        z: NodeId,
        labels: NodeId,
        probs: Option<NodeId>,
        grad: Option<(NodeId, Expr)>,
    },
    SigmoidCrossEntropy {
        loss: NodeId,
        z: NodeId,
        labels: NodeId,
    },
}

impl Kernel {
    /// The values the kernel writes.
    pub fn outputs(&self) -> Vec<NodeId> {
        match self {
            Kernel::Map { outputs, .. } => outputs.iter().map(|(n, _)| *n).collect(),
            Kernel::Reduce { out, .. }
            | Kernel::MatMul { out, .. }
            | Kernel::Conv { out, .. }
            | Kernel::MaxPool { out, .. }
            | Kernel::MaxPoolGrad { out, .. }
            | Kernel::Softmax { out, .. } => vec![*out],
            Kernel::SoftmaxCrossEntropy { loss, probs, grad, .. } => {
                let mut v = vec![*loss];
                v.extend(*probs);
                v.extend(grad.as_ref().map(|(g, _)| *g));
                v
            }
            Kernel::SigmoidCrossEntropy { loss, .. } => vec![*loss],
        }
    }

    /// The values the kernel reads.
    pub fn inputs(&self) -> Vec<NodeId> {
        let mut v = Vec::new();
        match self {
            Kernel::Map { outputs, .. } => outputs.iter().for_each(|(_, e)| e.loads(&mut v)),
            Kernel::Reduce { expr, .. } => expr.loads(&mut v),
            Kernel::MatMul { a, b, .. } => v.extend([*a, *b]),
            Kernel::Conv { lhs, rhs, .. } => v.extend([*lhs, *rhs]),
            Kernel::MaxPool { x, .. } => v.push(*x),
            Kernel::MaxPoolGrad { x, dy, .. } => v.extend([*x, *dy]),
            Kernel::Softmax { z, .. } => v.push(*z),
            Kernel::SoftmaxCrossEntropy { z, labels, grad, .. } => {
                v.extend([*z, *labels]);
                if let Some((_, e)) = grad {
                    e.loads(&mut v);
                }
            }
            Kernel::SigmoidCrossEntropy { z, labels, .. } => v.extend([*z, *labels]),
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
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Broadcast | Op::Const { .. } | Op::Hyper(_) => true,
        Op::Input
        | Op::Label
        | Op::Var(_)
        | Op::DropoutMask { .. }
        | Op::Sum { .. }
        | Op::Reshape
        | Op::MatMul { .. }
        | Op::Conv2d(_)
        | Op::MaxPool2d(_)
        | Op::MaxPool2dGrad(_)
        | Op::Softmax
        | Op::SoftmaxCrossEntropy
        | Op::SigmoidCrossEntropy => false,
    }
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
                _ if matches!(node.op, Op::Const { .. } | Op::Hyper(_)) => users
                    .iter()
                    .all(|&u| elementwise(&g[u].op) || matches!(g[u].op, Op::Sum { .. })),
                // One use, by a loop over the same shape: recomputing a
                // smaller tensor at every index of a larger loop would
                // multiply its work.
                [u] => {
                    edges == 1
                        && (elementwise(&g[*u].op) || matches!(g[*u].op, Op::Sum { .. }))
                        && match g[*u].op {
                            Op::Sum { .. } => true,
                            _ => g[*u].shape == node.shape,
                        }
                }
                _ => false,
            };
            !inlinable
        })
        .collect()
}

/// The expression a loop evaluates for `n`: a load where `n` is stored.
fn expr(g: &Graph, n: NodeId, stored: &HashSet<NodeId>) -> Expr {
    match g[n].op {
        Op::Const { .. } | Op::Hyper(_) => root_expr(g, n, stored),
        _ if stored.contains(&n) => Expr::Load(n),
        _ => root_expr(g, n, stored),
    }
}

/// The expression computing `n` from its operands, even where `n` itself is
/// stored: the loop that writes it.
fn root_expr(g: &Graph, n: NodeId, stored: &HashSet<NodeId>) -> Expr {
    match &g[n].op {
        Op::Const { value, per_batch } => Expr::Const {
            value: *value,
            per_batch: *per_batch,
        },
        Op::Hyper(h) => Expr::Hyper(*h),
        Op::Unary(u) => Expr::Unary(*u, Box::new(expr(g, g.operands(n)[0], stored))),
        Op::Binary(b) => {
            let ops = g.operands(n);
            Expr::Binary(*b, Box::new(expr(g, ops[0], stored)), Box::new(expr(g, ops[1], stored)))
        }
        // A broadcast is a load at broadcast indices: the loop does it.
        Op::Broadcast => expr(g, g.operands(n)[0], stored),
        // Everything else lives in memory.
        Op::Input
        | Op::Label
        | Op::Var(_)
        | Op::DropoutMask { .. }
        | Op::Sum { .. }
        | Op::Reshape
        | Op::MatMul { .. }
        | Op::Conv2d(_)
        | Op::MaxPool2d(_)
        | Op::MaxPool2dGrad(_)
        | Op::Softmax
        | Op::SoftmaxCrossEntropy
        | Op::SigmoidCrossEntropy => Expr::Load(n),
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
        let ops = g.operands(n);
        let kernel = match &g[n].op {
            Op::Input | Op::Label | Op::Var(_) | Op::DropoutMask { .. } | Op::Reshape => continue,
            Op::Unary(_) | Op::Binary(_) | Op::Broadcast | Op::Const { .. } | Op::Hyper(_) => Kernel::Map {
                shape: g[n].shape.clone(),
                outputs: vec![(n, root_expr(g, n, &stored))],
                epilogue_of: None,
            },
            Op::Sum { axes } => Kernel::Reduce {
                shape: g[ops[0]].shape.clone(),
                axes: axes.clone(),
                out: n,
                expr: expr(g, ops[0], &stored),
            },
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => Kernel::MatMul {
                out: n,
                a: ops[0],
                b: ops[1],
                transpose_a: *transpose_a,
                transpose_b: *transpose_b,
            },
            Op::Conv2d(c) => Kernel::Conv {
                out: n,
                lhs: ops[0],
                rhs: ops[1],
                conv: *c,
            },
            Op::MaxPool2d(p) => Kernel::MaxPool {
                out: n,
                x: ops[0],
                pool: *p,
            },
            Op::MaxPool2dGrad(p) => Kernel::MaxPoolGrad {
                out: n,
                x: ops[0],
                dy: ops[1],
                pool: *p,
            },
            Op::Softmax => {
                // A softmax whose logits feed a cross-entropy is computed by
                // the cross-entropy's kernel, placed here.
                let ce = g
                    .users(ops[0])
                    .into_iter()
                    .find(|&u| g[u].op == Op::SoftmaxCrossEntropy);
                match ce {
                    Some(ce) => {
                        done.insert(ce);
                        softmax_cross_entropy(g, ce, Some(n), &stored, &mut done)
                    }
                    None => Kernel::Softmax { out: n, z: ops[0] },
                }
            }
            Op::SoftmaxCrossEntropy => softmax_cross_entropy(g, n, None, &stored, &mut done),
            Op::SigmoidCrossEntropy => Kernel::SigmoidCrossEntropy {
                loss: n,
                z: ops[0],
                labels: ops[1],
            },
        };
        kernels.push(kernel);
    }
    let kernels = merge_maps(g, mark_epilogues(g, kernels));
    Program { graph, kernels }
}

/// The cross-entropy kernel, taking over the gradient `(p - y) * scale`
/// where the graph computes it.
fn softmax_cross_entropy(
    g: &Graph,
    ce: NodeId,
    probs: Option<NodeId>,
    stored: &HashSet<NodeId>,
    done: &mut HashSet<NodeId>,
) -> Kernel {
    let ops = g.operands(ce);
    let (z, labels) = (ops[0], ops[1]);
    let grad = probs.and_then(|p| {
        g.users(p).into_iter().find_map(|sub| {
            let sub_ops = g.operands(sub);
            let is_diff = g[sub].op == Op::Binary(Binary::Sub) && sub_ops == [p, labels] && !stored.contains(&sub);
            let mul = g.users(sub).into_iter().next()?;
            let mul_ops = g.operands(mul);
            let scale = *mul_ops.iter().find(|&&o| o != sub)?;
            (is_diff && g[mul].op == Op::Binary(Binary::Mul) && g[scale].shape.rank() == 0)
                .then(|| (mul, expr(g, scale, stored)))
        })
    });
    if let Some((mul, _)) = &grad {
        done.insert(*mul);
    }
    Kernel::SoftmaxCrossEntropy {
        loss: ce,
        z,
        labels,
        probs,
        grad,
    }
}

/// A map that reads the result of the matmul or convolution just before it,
/// which nothing else reads, rewrites that result in place: the epilogue.
fn mark_epilogues(g: &Graph, mut kernels: Vec<Kernel>) -> Vec<Kernel> {
    for i in 1..kernels.len() {
        let producer = match &kernels[i - 1] {
            Kernel::MatMul { out, .. } | Kernel::Conv { out, .. } => *out,
            _ => continue,
        };
        if let Kernel::Map {
            shape,
            outputs,
            epilogue_of,
        } = &mut kernels[i]
        {
            let sole_user = g.users(producer).len() == 1 && !g.outputs.iter().any(|(_, n)| *n == producer);
            let reads = outputs.iter().any(|(_, e)| {
                let mut l = Vec::new();
                e.loads(&mut l);
                l.contains(&producer)
            });
            if sole_user && reads && g[producer].shape == *shape && outputs.len() == 1 {
                *epilogue_of = Some(producer);
            }
        }
    }
    kernels
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
            Kernel::Map {
                shape: s1,
                outputs: o1,
                epilogue_of: None,
            },
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
