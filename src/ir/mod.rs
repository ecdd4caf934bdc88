//! The intermediate representation: a petgraph graph of primitive tensor ops
//! ([`Op`]), each node with its static shape, dtype and the layer it came
//! from. Edges run from operand to user; an edge's weight is the operand's
//! position.

pub mod builder;
pub mod op;
pub mod print;
mod scalar;
pub mod shape;
pub mod verify;

pub use builder::Builder;
pub use op::{Binary, Conv, Elementwise, Hyper, KernelLayout, Layout, Op, OpClass, Pool, Unary, VarId};
pub use shape::{Dim, Shape};

use crate::diag::{Diagnostic, Span};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use std::fmt;

pub type NodeId = NodeIndex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub shape: Shape,
    pub dtype: DType,
    pub origin: Origin,
}

/// Where a node comes from, so that any error deep in the graph can still
/// point at a line of the user's file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    /// The layer's name, or the loss / optimizer that made the node.
    pub what: String,
    pub line: usize,
    pub span: Span,
    pub phase: Phase,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Phase {
    #[default]
    Forward,
    Backward,
    Update,
}

/// A named tensor that lives across steps.
#[derive(Clone, Debug, PartialEq)]
pub struct VarDecl {
    /// Keras's name: `conv2d/kernel`, `batch_normalization/moving_mean`, or
    /// an optimizer slot `conv2d/kernel/m`.
    pub name: String,
    pub shape: Vec<usize>,
    /// Receives a gradient.
    pub trainable: bool,
}

/// What the caller of a graph gets back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The model's output (probabilities for a softmax model).
    Prediction,
    /// The mean loss over the batch.
    Loss,
    /// d loss / d var.
    Grad(VarId),
    /// The variable's value for the next step.
    Assign(VarId),
    /// The output of the model's layer at this index, for looking inside.
    Layer(usize),
    /// d score / d input: how much each input value moves a class's score.
    InputGrad,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: StableDiGraph<Node, usize>,
    pub vars: Vec<VarDecl>,
    pub outputs: Vec<(Output, NodeId)>,
}

/// An IR that breaks its own invariants: a bug in cnnc, never the user's.
#[derive(Clone, Debug, PartialEq)]
pub struct IrError {
    pub message: String,
    pub origin: Origin,
}

const BUG: &str = "this is a bug in cnnc, not in your model; please report it with the model file";

impl IrError {
    /// The error at the layer whose IR broke, for rendering with its line.
    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic::error(self.origin.span, format!("internal compiler error: {}", self.message))
            .label(format!("in the IR built for `{}`", self.origin.what))
            .note(BUG)
    }
}

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "internal compiler error: {} (in IR for `{}`, line {})\n  = note: {BUG}",
            self.message, self.origin.what, self.origin.line
        )
    }
}

impl std::error::Error for IrError {}

impl std::ops::Index<NodeId> for Graph {
    type Output = Node;
    fn index(&self, n: NodeId) -> &Node {
        &self.nodes[n]
    }
}

impl Graph {
    /// Appends a node after checking its operands with the op's shape rule.
    /// `declared` is the shape of leaves, broadcasts, reshapes and
    /// average-pooling gradients.
    pub fn add(&mut self, op: Op, operands: &[NodeId], declared: Shape, origin: &Origin) -> Result<NodeId, IrError> {
        let shapes: Vec<&Shape> = operands.iter().map(|&n| &self.nodes[n].shape).collect();
        let shape = op.infer(&shapes, &declared).map_err(|message| IrError {
            message: format!("{}: {message}", op.name()),
            origin: origin.clone(),
        })?;
        let id = self.nodes.add_node(Node {
            op,
            shape,
            dtype: DType::F32,
            origin: origin.clone(),
        });
        for (i, &x) in operands.iter().enumerate() {
            self.nodes.add_edge(x, id, i);
        }
        Ok(id)
    }

    /// The node's operands, in order.
    pub fn operands(&self, n: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> = self
            .nodes
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, s)| s).collect()
    }

    /// The nodes that use `n`, each once.
    pub fn users(&self, n: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self.nodes.neighbors_directed(n, Direction::Outgoing).collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Nodes in an order where operands come before users, ties broken by
    /// creation order so dumps are stable.
    pub fn schedule(&self) -> Vec<NodeId> {
        self.schedule_by(|_| ())
    }

    /// A topological order that, among the nodes ready at each point, takes
    /// the one with the smallest `priority`, then the oldest.
    pub fn schedule_by<P: Ord>(&self, priority: impl Fn(&Node) -> P) -> Vec<NodeId> {
        use std::cmp::Reverse;
        let mut pending: Vec<usize> = vec![0; self.nodes.node_bound()];
        let mut ready = std::collections::BinaryHeap::new();
        for n in self.nodes.node_indices() {
            pending[n.index()] = self.nodes.edges_directed(n, Direction::Incoming).count();
            if pending[n.index()] == 0 {
                ready.push(Reverse((priority(&self.nodes[n]), n)));
            }
        }
        let mut order = Vec::with_capacity(self.nodes.node_count());
        while let Some(Reverse((_, n))) = ready.pop() {
            order.push(n);
            for e in self.nodes.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                pending[t.index()] -= 1;
                if pending[t.index()] == 0 {
                    ready.push(Reverse((priority(&self.nodes[t]), t)));
                }
            }
        }
        order
    }

    pub fn output(&self, which: Output) -> Option<NodeId> {
        self.outputs.iter().find(|(o, _)| *o == which).map(|(_, n)| *n)
    }

    /// Number of dropout masks the runtime must supply.
    pub fn mask_count(&self) -> usize {
        self.nodes
            .node_weights()
            .filter_map(|n| match n.op {
                Op::DropoutMask { index, .. } => Some(index + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    pub fn var_id(&self, name: &str) -> Option<VarId> {
        self.vars.iter().position(|v| v.name == name)
    }
}
