//! The one graph edit the passes share: make every user of a node use
//! another instead, then drop the node.

use crate::ir::{Graph, NodeId};
use petgraph::Direction;
use petgraph::visit::EdgeRef;

/// Redirects all uses of `old` (edges and outputs) to `new` and removes `old`.
pub fn replace(graph: &mut Graph, old: NodeId, new: NodeId) {
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
    for (_, n) in &mut graph.outputs {
        if *n == old {
            *n = new;
        }
    }
    graph.nodes.remove_node(old);
}
