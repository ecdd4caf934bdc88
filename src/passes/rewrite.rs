//! The one graph edit the passes share: make every user of a node use
//! another instead, then drop the node.

use crate::ir::{Graph, NodeId};
use petgraph::Direction;
use petgraph::visit::EdgeRef;
use std::collections::HashMap;

/// Replaces nodes during one pass over a graph. It indexes the graph's
/// outputs once, so that a replacement costs the node's uses, not a scan of
/// every output (a training graph has one per variable).
pub struct Rewriter {
    outputs: HashMap<NodeId, Vec<usize>>,
}

impl Rewriter {
    pub fn new(graph: &Graph) -> Rewriter {
        let mut outputs: HashMap<NodeId, Vec<usize>> = HashMap::new();
        for (i, &(_, n)) in graph.outputs.iter().enumerate() {
            outputs.entry(n).or_default().push(i);
        }
        Rewriter { outputs }
    }

    /// Redirects all uses of `old` (edges and outputs) to `new` and removes `old`.
    pub fn replace(&mut self, graph: &mut Graph, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        let uses: Vec<(NodeId, usize)> = graph
            .nodes
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        for (user, slot) in uses {
            graph.nodes.add_edge(new, user, slot);
        }
        if let Some(slots) = self.outputs.remove(&old) {
            for &i in &slots {
                graph.outputs[i].1 = new;
            }
            self.outputs.entry(new).or_default().extend(slots);
        }
        graph.nodes.remove_node(old);
    }
}
