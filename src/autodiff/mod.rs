//! Symbolic reverse-mode differentiation: appends to a forward graph the
//! graph of d loss / d var for every trainable variable, derived from the
//! rules in `rules.rs`, then removes what no output needs.

mod rules;

pub use rules::{CrossEntropyGradient, cross_entropy_gradient};

use crate::diag::Diagnostic;
use crate::ir::{Binary, Builder, Graph, IrError, NodeId, Op, Origin, Output, Phase, Shape};
use crate::passes::{Pass, dce::DeadCode};
use std::collections::HashMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// An op on the path from a weight to the loss has no gradient rule.
    NoRule {
        op: String,
        origin: Origin,
    },
    Ir(IrError),
}

impl From<IrError> for Error {
    fn from(e: IrError) -> Error {
        Error::Ir(e)
    }
}

impl Error {
    /// The error at the layer it comes from, for rendering with its line.
    pub fn diagnostic(&self) -> Diagnostic {
        match self {
            Error::NoRule { op, origin } => Diagnostic::error(
                origin.span,
                format!("cannot differentiate `{op}`: it has no gradient rule"),
            )
            .label(format!("`{}` computes `{op}`", origin.what)),
            Error::Ir(e) => e.diagnostic(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoRule { op, origin } => write!(
                f,
                "cannot differentiate `{op}` (in `{}`, line {}): it has no gradient rule",
                origin.what, origin.line
            ),
            Error::Ir(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

/// Appends the backward graph: a `Grad(var)` output for every trainable
/// variable. The graph must have a `Loss` output.
pub fn differentiate(graph: &mut Graph) -> Result<(), Error> {
    let loss = graph.output(Output::Loss).ok_or_else(|| IrError {
        message: "differentiate needs a loss output".into(),
        origin: Origin::default(),
    })?;
    let trainable = |g: &Graph, op: &Op| matches!(*op, Op::Var(v) if g.vars[v].trainable);
    let (order, adjoint) = adjoints(graph, loss, trainable)?;
    let mut b = Builder::new(graph, backward_origin(graph, loss));
    let vars: Vec<(usize, NodeId)> = order
        .iter()
        .filter_map(|&n| match b.graph[n].op {
            Op::Var(v) if b.graph.vars[v].trainable => Some((v, n)),
            _ => None,
        })
        .collect();
    for (v, n) in vars {
        let grad = match adjoint.get(&n) {
            Some(&g) => g,
            // The variable does not reach the loss: its gradient is zero.
            None => b.zeros(Shape::fixed(&b.graph.vars[v].shape.clone()))?,
        };
        b.graph.outputs.push((Output::Grad(v), grad));
    }
    DeadCode.run(graph)?;
    crate::ir::verify::verify(graph)?;
    Ok(())
}

/// Appends the gradient of the scalar `score` with respect to the input as
/// an `InputGrad` output (saliency); weights are held constant.
pub fn differentiate_input(graph: &mut Graph, score: NodeId) -> Result<(), Error> {
    let (order, adjoint) = adjoints(graph, score, |_, op| *op == Op::Input)?;
    let input = order.iter().copied().find(|&n| graph[n].op == Op::Input);
    let input = input.ok_or_else(|| IrError {
        message: "the graph has no input".into(),
        origin: Origin::default(),
    })?;
    let grad = match adjoint.get(&input) {
        Some(&g) => g,
        None => {
            let shape = graph[input].shape.clone();
            Builder::new(graph, backward_origin(graph, score)).zeros(shape)?
        }
    };
    graph.outputs.push((Output::InputGrad, grad));
    DeadCode.run(graph)?;
    crate::ir::verify::verify(graph)?;
    Ok(())
}

fn backward_origin(graph: &Graph, of: NodeId) -> Origin {
    Origin {
        phase: Phase::Backward,
        ..graph[of].origin.clone()
    }
}

/// The graph's nodes in schedule order, and the adjoint d `of` / d node of
/// every node on a path from a leaf that `source` accepts to `of`, built
/// from the rules.
fn adjoints(
    graph: &mut Graph,
    of: NodeId,
    source: impl Fn(&Graph, &Op) -> bool,
) -> Result<(Vec<NodeId>, HashMap<NodeId, NodeId>), Error> {
    let order = graph.schedule();
    let needs = needs_gradient(graph, &order, of, source);
    let mut adjoint: HashMap<NodeId, NodeId> = HashMap::new();
    let mut b = Builder::new(graph, backward_origin(graph, of));
    adjoint.insert(of, b.constant(1.0)?);

    for &n in order.iter().rev() {
        let Some(&g) = adjoint.get(&n) else { continue };
        if !needs[n.index()] {
            continue;
        }
        let operands = b.graph.operands(n);
        let wanted: Vec<bool> = operands.iter().map(|a| needs[a.index()]).collect();
        if !wanted.contains(&true) {
            continue;
        }
        b.origin = backward_origin(b.graph, n);
        let grads = rules::vjp(&mut b, n, g, &wanted)?;
        for (&a, d) in operands.iter().zip(grads) {
            let Some(d) = d.filter(|_| needs[a.index()]) else {
                continue;
            };
            let total = match adjoint.get(&a) {
                Some(&earlier) => b.binary(Binary::Add, earlier, d)?,
                None => d,
            };
            adjoint.insert(a, total);
        }
    }
    Ok((order, adjoint))
}

/// Nodes on a path from a source leaf to `loss`: exactly those whose
/// gradient is needed.
fn needs_gradient(graph: &Graph, order: &[NodeId], loss: NodeId, source: impl Fn(&Graph, &Op) -> bool) -> Vec<bool> {
    let bound = order.iter().map(|n| n.index() + 1).max().unwrap_or(0);
    let mut from_var = vec![false; bound];
    for &n in order {
        from_var[n.index()] = match graph[n].op {
            _ if source(graph, &graph[n].op) => true,
            Op::Var(_) | Op::Input => false,
            // A step function: no gradient flows through it.
            Op::Binary(Binary::Greater) => false,
            _ => graph.operands(n).iter().any(|a| from_var[a.index()]),
        };
    }
    let mut to_loss = vec![false; bound];
    to_loss[loss.index()] = true;
    for &n in order.iter().rev() {
        if to_loss[n.index()] {
            for a in graph.operands(n) {
                to_loss[a.index()] = true;
            }
        }
    }
    (0..bound).map(|i| from_var[i] && to_loss[i]).collect()
}
