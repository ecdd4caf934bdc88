//! The IR verifier: every node's shape follows from its operands by its op's
//! rule, operands are numbered 0..arity, the graph is acyclic, and outputs
//! and variables agree. A failure is a bug in cnnc, reported as an
//! [`IrError`].

use super::{DType, Graph, IrError, Op, Output, Shape};

pub fn verify(g: &Graph) -> Result<(), IrError> {
    let order = g.schedule();
    let fail = |n: super::NodeId, message: String| IrError {
        message,
        origin: g[n].origin.clone(),
    };
    if order.len() != g.nodes.node_count() {
        let n = g.nodes.node_indices().find(|n| !order.contains(n)).unwrap_or_default();
        return Err(fail(n, "the graph has a cycle".into()));
    }
    for &n in &order {
        let node = &g[n];
        let operands = g.operands(n);
        let shapes: Vec<&Shape> = operands.iter().map(|&a| &g[a].shape).collect();
        let positions: Vec<usize> = {
            let mut p: Vec<usize> = g
                .nodes
                .edges_directed(n, petgraph::Direction::Incoming)
                .map(|e| *e.weight())
                .collect();
            p.sort_unstable();
            p
        };
        if positions != (0..node.op.arity()).collect::<Vec<_>>() {
            return Err(fail(n, format!("{} has operand slots {positions:?}", node.op.name())));
        }
        let inferred = node
            .op
            .infer(&shapes, &node.shape)
            .map_err(|m| fail(n, format!("{}: {m}", node.op.name())))?;
        if inferred != node.shape {
            return Err(fail(
                n,
                format!(
                    "{} is recorded as {} but its rule gives {inferred}",
                    node.op.name(),
                    node.shape
                ),
            ));
        }
        if node.dtype != DType::F32 || operands.iter().any(|&a| g[a].dtype != node.dtype) {
            return Err(fail(n, format!("{} mixes dtypes", node.op.name())));
        }
        if let Op::Var(v) = node.op {
            let Some(decl) = g.vars.get(v) else {
                return Err(fail(n, format!("variable #{v} is not declared")));
            };
            if node.shape != Shape::fixed(&decl.shape) {
                return Err(fail(
                    n,
                    format!("variable {} used with shape {}", decl.name, node.shape),
                ));
            }
        }
    }
    for &(o, n) in &g.outputs {
        if !g.nodes.contains_node(n) {
            return Err(IrError {
                message: format!("output {o:?} names a removed node"),
                origin: Default::default(),
            });
        }
        let want = match o {
            Output::Loss => Some(Shape::scalar()),
            Output::Grad(v) | Output::Assign(v) => g.vars.get(v).map(|d| Shape::fixed(&d.shape)),
            Output::Prediction | Output::Layer(_) => Some(g[n].shape.clone()),
            Output::InputGrad => g
                .nodes
                .node_weights()
                .find(|x| x.op == Op::Input)
                .map(|x| x.shape.clone()),
        };
        if want.as_ref() != Some(&g[n].shape) {
            return Err(fail(n, format!("output {o:?} has shape {}", g[n].shape)));
        }
        // A second gradient or update of one variable would be applied
        // instead of the first, not with it.
        if g.outputs.iter().filter(|(other, _)| *other == o).count() > 1 {
            return Err(fail(n, format!("output {o:?} is given twice")));
        }
    }
    Ok(())
}
