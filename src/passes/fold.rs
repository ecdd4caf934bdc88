//! Constant folding: elementwise ops on scalar constants become constants.
//! A constant may carry one factor 1/N (the batch size is known only when
//! the graph runs), so products and quotients fold when at most one side
//! does.

use super::{Pass, rewrite::Rewriter};
use crate::ir::{Binary, Graph, IrError, Op, Unary};

pub struct ConstantFolding;

fn constant(op: &Op) -> Option<(f64, bool)> {
    match op {
        Op::Const { value, per_batch } => Some((*value, *per_batch)),
        _ => None,
    }
}

fn fold(op: &Op, args: &[(f64, bool)]) -> Option<(f64, bool)> {
    match (op, args) {
        (Op::Unary(u), [(x, false)]) => Some((u.apply(*x), false)),
        (Op::Unary(Unary::Neg), [(x, true)]) => Some((-x, true)),
        (Op::Binary(Binary::Mul), [(a, pa), (b, pb)]) if !(*pa && *pb) => Some((a * b, *pa || *pb)),
        (Op::Binary(Binary::Div), [(a, pa), (b, false)]) => Some((a / b, *pa)),
        (Op::Binary(b), [(x, false), (y, false)]) => Some((b.apply(*x, *y), false)),
        _ => None,
    }
}

impl Pass for ConstantFolding {
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        let mut rewriter = Rewriter::new(graph);
        for n in graph.schedule() {
            let node = &graph[n];
            if !matches!(node.op, Op::Unary(_) | Op::Binary(_)) || node.shape.rank() != 0 {
                continue;
            }
            let args: Option<Vec<(f64, bool)>> = graph.operands(n).iter().map(|&a| constant(&graph[a].op)).collect();
            let Some((value, per_batch)) = args.and_then(|a| fold(&node.op, &a)) else {
                continue;
            };
            let mut folded = graph[n].clone();
            folded.op = Op::Const { value, per_batch };
            let c = graph.nodes.add_node(folded);
            rewriter.replace(graph, n, c);
            changed = true;
        }
        Ok(changed)
    }
}
