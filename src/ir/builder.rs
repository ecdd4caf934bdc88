//! A small builder over [`Graph`], in the manner of cranelift-frontend's:
//! it remembers where the nodes it makes come from and checks each one with
//! its shape rule.

use super::{Binary, Graph, IrError, NodeId, Op, Origin, Shape, Unary};

pub struct Builder<'g> {
    pub graph: &'g mut Graph,
    pub origin: Origin,
}

impl<'g> Builder<'g> {
    pub fn new(graph: &'g mut Graph, origin: Origin) -> Builder<'g> {
        Builder { graph, origin }
    }

    /// A node whose shape follows from its operands.
    pub fn op(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId, IrError> {
        self.graph.add(op, operands, Shape::scalar(), &self.origin)
    }

    /// A leaf, broadcast or reshape, whose shape is given.
    pub fn shaped(&mut self, op: Op, operands: &[NodeId], shape: Shape) -> Result<NodeId, IrError> {
        self.graph.add(op, operands, shape, &self.origin)
    }

    pub fn unary(&mut self, u: Unary, x: NodeId) -> Result<NodeId, IrError> {
        self.op(Op::Unary(u), &[x])
    }

    pub fn binary(&mut self, b: Binary, x: NodeId, y: NodeId) -> Result<NodeId, IrError> {
        self.op(Op::Binary(b), &[x, y])
    }

    pub fn constant(&mut self, value: f64) -> Result<NodeId, IrError> {
        self.op(
            Op::Const {
                value,
                per_batch: false,
            },
            &[],
        )
    }

    /// `value / N`.
    pub fn per_batch(&mut self, value: f64) -> Result<NodeId, IrError> {
        self.op(Op::Const { value, per_batch: true }, &[])
    }

    pub fn sum(&mut self, x: NodeId, axes: Vec<usize>) -> Result<NodeId, IrError> {
        self.op(Op::Sum { axes }, &[x])
    }

    pub fn reshape(&mut self, x: NodeId, shape: Shape) -> Result<NodeId, IrError> {
        if self.graph[x].shape == shape {
            return Ok(x);
        }
        self.shaped(Op::Reshape, &[x], shape)
    }

    pub fn broadcast(&mut self, x: NodeId, shape: Shape) -> Result<NodeId, IrError> {
        if self.graph[x].shape == shape {
            return Ok(x);
        }
        self.shaped(Op::Broadcast, &[x], shape)
    }

    /// A zero of `shape`: the gradient of what does not reach the loss.
    pub fn zeros(&mut self, shape: Shape) -> Result<NodeId, IrError> {
        let zero = self.constant(0.0)?;
        self.broadcast(zero, shape)
    }

    pub fn shape(&self, x: NodeId) -> &Shape {
        &self.graph[x].shape
    }
}
