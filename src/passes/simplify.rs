//! Algebraic simplification: identities that leave a node equal to one of
//! its operands (x * 1, x + 0, x - 0, -(-x), reshape to the same shape) and
//! reshapes of reshapes.

use super::{Pass, rewrite::Rewriter};
use crate::ir::{Binary, Graph, IrError, NodeId, Op, Unary};

pub struct Simplify;

fn is_const(graph: &Graph, n: NodeId, v: f64) -> bool {
    graph[n].op
        == Op::Const {
            value: v,
            per_batch: false,
        }
}

/// The operand the node reduces to, if an identity applies.
fn identity(graph: &Graph, n: NodeId) -> Option<NodeId> {
    let ops = graph.operands(n);
    let same = |x: NodeId| graph[x].shape == graph[n].shape;
    match graph[n].op {
        Op::Binary(Binary::Mul) => {
            let (a, b) = (ops[0], ops[1]);
            if is_const(graph, b, 1.0) && same(a) {
                Some(a)
            } else if is_const(graph, a, 1.0) && same(b) {
                Some(b)
            } else {
                None
            }
        }
        Op::Binary(Binary::Add) => {
            let (a, b) = (ops[0], ops[1]);
            if is_const(graph, b, 0.0) && same(a) {
                Some(a)
            } else if is_const(graph, a, 0.0) && same(b) {
                Some(b)
            } else {
                None
            }
        }
        Op::Binary(Binary::Sub) | Op::Binary(Binary::Div) => {
            let unit = if graph[n].op == Op::Binary(Binary::Sub) {
                0.0
            } else {
                1.0
            };
            (is_const(graph, ops[1], unit) && same(ops[0])).then_some(ops[0])
        }
        Op::Unary(Unary::Neg) => match graph[ops[0]].op {
            Op::Unary(Unary::Neg) => Some(graph.operands(ops[0])[0]),
            _ => None,
        },
        Op::Reshape | Op::Broadcast => same(ops[0]).then_some(ops[0]),
        _ => None,
    }
}

impl Pass for Simplify {
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        let mut rewriter = Rewriter::new(graph);
        for n in graph.schedule() {
            if !graph.nodes.contains_node(n) {
                continue;
            }
            if let Some(x) = identity(graph, n) {
                rewriter.replace(graph, n, x);
                changed = true;
                continue;
            }
            // reshape(reshape(x)) = reshape(x)
            if graph[n].op == Op::Reshape {
                let inner = graph.operands(n)[0];
                if graph[inner].op == Op::Reshape {
                    let x = graph.operands(inner)[0];
                    let e = graph.nodes.find_edge(inner, n);
                    if let Some(e) = e {
                        graph.nodes.remove_edge(e);
                        graph.nodes.add_edge(x, n, 0);
                        changed = true;
                    }
                }
            }
        }
        Ok(changed)
    }
}
