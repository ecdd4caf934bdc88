//! Dead-code elimination: drop every node no output depends on.

use super::Pass;
use crate::ir::{Graph, IrError};

pub struct DeadCode;

impl Pass for DeadCode {
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut live = vec![false; graph.nodes.node_indices().map(|n| n.index() + 1).max().unwrap_or(0)];
        let mut stack: Vec<_> = graph.outputs.iter().map(|&(_, n)| n).collect();
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut live[n.index()], true) {
                stack.extend(graph.operands(n));
            }
        }
        let dead: Vec<_> = graph.nodes.node_indices().filter(|n| !live[n.index()]).collect();
        for &n in &dead {
            graph.nodes.remove_node(n);
        }
        Ok(!dead.is_empty())
    }
}
