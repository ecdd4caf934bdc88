//! `cnnc ir --stage fused`: the kernels of a fused program, what each
//! computes and how, and, for a batch size, where the memory plan puts its
//! values.

use super::plan::{Plan, Storage};
use crate::fuse::{Expr, Kernel};
use crate::ir::op::attributes;
use crate::ir::print::{names, output_name};
use crate::ir::{Graph, Hyper, NodeId, Op};
use std::collections::HashMap;
use std::fmt::Write;

fn expr(x: &Expr, names: &HashMap<NodeId, String>) -> String {
    match x {
        Expr::Load(n) => names[n].clone(),
        Expr::Const { value, per_batch } => {
            let v = *value as f32;
            if *per_batch { format!("{v}/N") } else { format!("{v}") }
        }
        Expr::Hyper(Hyper::LearningRate) => "learning_rate".into(),
        Expr::Hyper(Hyper::AdamStepSize) => "adam_step_size".into(),
        // A parameter follows the operand: `elu(%4, alpha=0.5)`.
        Expr::Unary(u, a) => {
            let op = Op::Unary(*u);
            match attributes(&op) {
                attrs if attrs.is_empty() => format!("{}({})", op.name(), expr(a, names)),
                attrs => format!("{}({}, {attrs})", op.name(), expr(a, names)),
            }
        }
        Expr::Binary(b, l, r) => format!(
            "{}({}, {})",
            crate::ir::Op::Binary(*b).name(),
            expr(l, names),
            expr(r, names)
        ),
    }
}

/// A kernel's one-line summary: how it is computed (`how`, its lowering's
/// name) and what it computes.
pub fn kernel_line(g: &Graph, k: &Kernel, how: &str, names: &HashMap<NodeId, String>) -> String {
    let node = |n: &NodeId| {
        let attrs = attributes(&g[*n].op);
        let args: Vec<&str> = g.operands(*n).iter().map(|a| names[a].as_str()).collect();
        let mut s = format!("{} = {}({})", names[n], g[*n].op.name(), args.join(", "));
        if !attrs.is_empty() {
            s += " ";
            s += &attrs;
        }
        s + &format!(" : {}", g[*n].shape)
    };
    match k {
        Kernel::Map { shape, outputs } => {
            let outs: Vec<String> = outputs
                .iter()
                .map(|(n, x)| format!("{} = {}", names[n], expr(x, names)))
                .collect();
            format!("{how} {shape}: {}", outs.join("; "))
        }
        Kernel::Reduce {
            shape,
            axes,
            out,
            expr: x,
        } => {
            format!("{how} {shape} axes={axes:?}: {} = sum({})", names[out], expr(x, names))
        }
        Kernel::Node(n) => format!("{how} {}", node(n)),
        Kernel::SoftmaxCrossEntropy { loss, probs, grad, .. } => {
            let mut s = format!("{how} {}", node(loss));
            if let Some(p) = probs {
                s += &format!(", {} = softmax", names[p]);
            }
            if let Some((gr, scale)) = grad {
                s += &format!(", {} = (softmax - labels) * {}", names[gr], expr(scale, names));
            }
            s
        }
        Kernel::PoolGrad {
            grad, x, dy, outputs, ..
        } => {
            let attrs = attributes(&g[*grad].op);
            let mut s = format!(
                "{how} {} = {}({}, {}) {attrs} : {}",
                names[grad],
                g[*grad].op.name(),
                names[x],
                expr(dy, names),
                g[*grad].shape
            );
            for (n, x) in outputs.iter().filter(|(n, _)| n != grad) {
                s += &format!("; {} = {}", names[n], expr(x, names));
            }
            s
        }
    }
}

fn storage(g: &Graph, s: Storage) -> String {
    match s {
        Storage::Arena { offset } => format!("arena+{}", offset * 4),
        Storage::Var(v) => format!("var {} (in place)", g.vars[v].name),
        Storage::Input => "input".into(),
        Storage::Label => "label".into(),
        Storage::Mask(i) => format!("mask #{i}"),
        Storage::Output(i) => format!("output {}", output_name(g, g.outputs[i].0)),
    }
}

/// A planned program's kernels, how each is computed, and where each
/// result lives.
pub fn fused(plan: &Plan) -> String {
    let program = &plan.program;
    let g = &program.graph;
    let (_, names) = names(g);
    let mut out = String::new();
    for (i, (k, lowering)) in program.kernels.iter().zip(&plan.lowerings).enumerate() {
        let _ = write!(out, "kernel {i}: {}", kernel_line(g, k, &lowering.name(), &names));
        let homes: Vec<String> = k
            .outputs()
            .iter()
            .filter_map(|n| {
                plan.buffers
                    .get(n)
                    .map(|b| format!("{} -> {}", names[n], storage(g, b.storage)))
            })
            .collect();
        let _ = write!(out, "\n      [{}]", homes.join(", "));
        if let Some((offset, len)) = plan.scratch[i] {
            let _ = write!(out, " scratch arena+{} ({} KB)", offset * 4, len * 4 / 1024);
        }
        out.push('\n');
    }
    for (n, to) in &plan.copies {
        let _ = writeln!(out, "copy {} -> {}", names[n], storage(g, *to));
    }
    let leaves = g
        .nodes
        .node_indices()
        .filter(|&n| matches!(g[n].op, Op::Var(_)))
        .count();
    let _ = writeln!(
        out,
        "arena for batch {}: {:.1} KB ({} kernels, {} variables)",
        plan.batch,
        plan.arena_bytes() as f64 / 1024.0,
        program.kernels.len(),
        leaves
    );
    out
}
