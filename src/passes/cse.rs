//! Common-subexpression elimination: two nodes with the same op, operands
//! and shape compute the same value; keep the first.

use super::{Pass, rewrite::Rewriter};
use crate::ir::{Graph, IrError, NodeId};
use std::collections::HashMap;

pub struct CommonSubexpressions;

impl Pass for CommonSubexpressions {
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut seen: HashMap<String, NodeId> = HashMap::new();
        let mut changed = false;
        let mut rewriter = Rewriter::new(graph);
        for n in graph.schedule() {
            let node = &graph[n];
            // Ops hold floats, so they are keyed by their exact printed form.
            let key = format!("{:?}|{:?}|{}", node.op, graph.operands(n), node.shape);
            match seen.get(&key) {
                Some(&first) => {
                    rewriter.replace(graph, n, first);
                    changed = true;
                }
                None => {
                    seen.insert(key, n);
                }
            }
        }
        Ok(changed)
    }
}
