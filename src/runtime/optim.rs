//! Optimizers as graph rewrites: each `Grad(var)` output of a differentiated
//! graph becomes the update of `var` and of its slots, so a whole training
//! step (forward, backward, update) is one graph that any engine runs.
//! The update rules are Keras 3's, step for step.

use crate::ir::{Binary, Builder, Graph, Hyper, IrError, NodeId, Op, Origin, Output, Phase, Shape, Unary, VarDecl};
use crate::parse::ast::Optimizer;

/// Names of an optimizer's per-weight slots, as Keras 3 names them.
pub fn slots(optimizer: &Optimizer) -> &'static [&'static str] {
    match optimizer {
        Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
        Optimizer::Sgd { .. } => &["momentum"],
        Optimizer::Adam { .. } => &["momentum", "velocity"],
    }
}

/// The per-step scalars of a step with `iterations` steps done before it:
/// the learning rate, and Adam's bias-corrected step size
/// `lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)` with `t = iterations + 1`.
pub fn hyper(optimizer: &Optimizer, iterations: u64, h: Hyper) -> f64 {
    match (h, optimizer) {
        (Hyper::LearningRate, o) => o.learning_rate(),
        (
            Hyper::AdamStepSize,
            Optimizer::Adam {
                learning_rate,
                beta_1,
                beta_2,
                ..
            },
        ) => {
            let t = (iterations + 1) as i32;
            learning_rate * (1.0 - beta_2.powi(t)).sqrt() / (1.0 - beta_1.powi(t))
        }
        (Hyper::AdamStepSize, Optimizer::Sgd { .. }) => 0.0,
    }
}

/// A hyperparameter as a person writes it, to at most 3 significant
/// digits: `0.001`, `3.5e-7`, `1e29`.
pub fn compact(x: f64) -> String {
    // Rounding through decimal digits: `1e30 / 10` is 1.0000000000000001e29.
    let x: f64 = format!("{x:.2e}").parse().unwrap_or(x);
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Replaces every `Grad(var)` output by `Assign` outputs of the updated
/// variable and its optimizer slots (new variables `name/slot`, declared
/// after the model's own).
pub fn append_update(graph: &mut Graph, optimizer: &Optimizer) -> Result<(), IrError> {
    let grads: Vec<(usize, NodeId)> = graph
        .outputs
        .iter()
        .filter_map(|&(o, n)| match o {
            Output::Grad(v) => Some((v, n)),
            _ => None,
        })
        .collect();
    graph.outputs.retain(|(o, _)| !matches!(o, Output::Grad(_)));
    let var_nodes: Vec<(usize, NodeId)> = graph
        .nodes
        .node_indices()
        .filter_map(|n| match graph[n].op {
            Op::Var(v) => Some((v, n)),
            _ => None,
        })
        .collect();
    let origin = Origin {
        what: optimizer.name().into(),
        phase: Phase::Update,
        ..Origin::default()
    };
    let mut b = Builder::new(graph, origin);
    let lr = b.op(Op::Hyper(Hyper::LearningRate), &[])?;
    let step_size = match optimizer {
        Optimizer::Adam { .. } => Some(b.op(Op::Hyper(Hyper::AdamStepSize), &[])?),
        Optimizer::Sgd { .. } => None,
    };
    for (v, g) in grads {
        let Some(&(_, w)) = var_nodes.iter().find(|(id, _)| *id == v) else {
            continue;
        };
        let decl = b.graph.vars[v].clone();
        let slot = |b: &mut Builder, name: &str| -> Result<(usize, NodeId), IrError> {
            let id = b.graph.vars.len();
            b.graph.vars.push(VarDecl {
                name: format!("{}/{name}", decl.name),
                shape: decl.shape.clone(),
                trainable: false,
            });
            Ok((id, b.shaped(Op::Var(id), &[], Shape::fixed(&decl.shape))?))
        };
        let lr_g = b.binary(Binary::Mul, g, lr)?;
        let updated = match *optimizer {
            Optimizer::Sgd { momentum: 0.0, .. } => b.binary(Binary::Sub, w, lr_g)?,
            Optimizer::Sgd { momentum, nesterov, .. } => {
                // m = momentum * m - lr * g; w += m (nesterov: w += momentum * m - lr * g)
                let (m_id, m) = slot(&mut b, "momentum")?;
                let mu = b.constant(momentum)?;
                let kept = b.binary(Binary::Mul, m, mu)?;
                let m_new = b.binary(Binary::Sub, kept, lr_g)?;
                b.graph.outputs.push((Output::Assign(m_id), m_new));
                let step = if nesterov {
                    let ahead = b.binary(Binary::Mul, m_new, mu)?;
                    b.binary(Binary::Sub, ahead, lr_g)?
                } else {
                    m_new
                };
                b.binary(Binary::Add, w, step)?
            }
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon,
                ..
            } => {
                // m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
                // w -= step_size * m / (sqrt(v) + epsilon)
                let (m_id, m) = slot(&mut b, "momentum")?;
                let (v_id, vel) = slot(&mut b, "velocity")?;
                let m_new = moving_toward(&mut b, m, g, 1.0 - beta_1)?;
                let g2 = b.binary(Binary::Mul, g, g)?;
                let v_new = moving_toward(&mut b, vel, g2, 1.0 - beta_2)?;
                b.graph.outputs.push((Output::Assign(m_id), m_new));
                b.graph.outputs.push((Output::Assign(v_id), v_new));
                let eps = b.constant(epsilon)?;
                let root = b.unary(Unary::Sqrt, v_new)?;
                let denom = b.binary(Binary::Add, root, eps)?;
                let ratio = b.binary(Binary::Div, m_new, denom)?;
                let alpha = step_size.ok_or_else(|| IrError {
                    message: "adam without a step size".into(),
                    origin: b.origin.clone(),
                })?;
                let step = b.binary(Binary::Mul, ratio, alpha)?;
                b.binary(Binary::Sub, w, step)?
            }
        };
        b.graph.outputs.push((Output::Assign(v), updated));
    }
    crate::passes::Pass::run(&crate::passes::dce::DeadCode, graph)?;
    crate::ir::verify::verify(graph)
}

/// `s + (x - s) * rate`, Keras's `assign_add((x - s) * rate)`.
fn moving_toward(b: &mut Builder, s: NodeId, x: NodeId, rate: f64) -> Result<NodeId, IrError> {
    let diff = b.binary(Binary::Sub, x, s)?;
    let r = b.constant(rate)?;
    let scaled = b.binary(Binary::Mul, diff, r)?;
    b.binary(Binary::Add, s, scaled)
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn hyperparameters_print_with_at_most_three_significant_digits() {
        for (x, shown) in [
            (1e30 / 10.0, "1e29"),
            (0.0001, "0.0001"),
            (3.5e-7, "3.5e-7"),
            (0.001, "0.001"),
            (1.23456, "1.23"),
            (0.0001 / 10.0, "1e-5"),
            (999_999.0, "1e6"),
            (0.0, "0"),
        ] {
            assert_eq!(compact(x), shown, "{x:e}");
        }
    }
}
