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
        Optimizer::Rmsprop { momentum, centered, .. } => match (*momentum > 0.0, centered) {
            (false, false) => &["velocity"],
            (true, false) => &["velocity", "momentum"],
            (false, true) => &["velocity", "average_gradient"],
            (true, true) => &["velocity", "momentum", "average_gradient"],
        },
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
        (Hyper::AdamStepSize, Optimizer::Sgd { .. } | Optimizer::Rmsprop { .. }) => 0.0,
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
    let mut var_nodes: Vec<Option<NodeId>> = vec![None; graph.vars.len()];
    for n in graph.nodes.node_indices() {
        if let Op::Var(v) = graph[n].op {
            var_nodes[v] = Some(n);
        }
    }
    let origin = Origin {
        what: optimizer.name().into(),
        phase: Phase::Update,
        ..Origin::default()
    };
    let mut b = Builder::new(graph, origin);
    let lr = b.op(Op::Hyper(Hyper::LearningRate), &[])?;
    let step_size = match optimizer {
        Optimizer::Adam { .. } => Some(b.op(Op::Hyper(Hyper::AdamStepSize), &[])?),
        Optimizer::Sgd { .. } | Optimizer::Rmsprop { .. } => None,
    };
    for (v, g) in grads {
        let Some(w) = var_nodes.get(v).copied().flatten() else {
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
            Optimizer::Rmsprop {
                rho,
                momentum,
                epsilon,
                centered,
                ..
            } => {
                // v = rho v + (1 - rho) g^2; centered: a = rho a + (1 - rho) g,
                // denominator v - a^2 + epsilon, else v + epsilon;
                // increment = lr g / sqrt(denominator);
                // momentum: m = momentum m + increment, w -= m; else w -= increment
                let (v_id, vel) = slot(&mut b, "velocity")?;
                let momentum_slot = if momentum > 0.0 {
                    Some(slot(&mut b, "momentum")?)
                } else {
                    None
                };
                let g2 = b.binary(Binary::Mul, g, g)?;
                let v_new = decaying(&mut b, vel, g2, rho)?;
                b.graph.outputs.push((Output::Assign(v_id), v_new));
                let eps = b.constant(epsilon)?;
                let denom = if centered {
                    let (a_id, avg) = slot(&mut b, "average_gradient")?;
                    let a_new = decaying(&mut b, avg, g, rho)?;
                    b.graph.outputs.push((Output::Assign(a_id), a_new));
                    let a2 = b.binary(Binary::Mul, a_new, a_new)?;
                    let spread = b.binary(Binary::Sub, v_new, a2)?;
                    b.binary(Binary::Add, spread, eps)?
                } else {
                    b.binary(Binary::Add, v_new, eps)?
                };
                let root = b.unary(Unary::Sqrt, denom)?;
                let increment = b.binary(Binary::Div, lr_g, root)?;
                let step = match momentum_slot {
                    Some((m_id, m)) => {
                        let mu = b.constant(momentum)?;
                        let kept = b.binary(Binary::Mul, m, mu)?;
                        let m_new = b.binary(Binary::Add, kept, increment)?;
                        b.graph.outputs.push((Output::Assign(m_id), m_new));
                        m_new
                    }
                    None => increment,
                };
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

/// `rho * s + (1 - rho) * x`, RMSprop's running averages as Keras writes them.
fn decaying(b: &mut Builder, s: NodeId, x: NodeId, rho: f64) -> Result<NodeId, IrError> {
    let keep = b.constant(rho)?;
    let take = b.constant(1.0 - rho)?;
    let kept = b.binary(Binary::Mul, s, keep)?;
    let taken = b.binary(Binary::Mul, x, take)?;
    b.binary(Binary::Add, kept, taken)
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
