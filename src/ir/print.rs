//! IR dumps: a text form with one node a line, and Graphviz dot.

use super::op::attributes;
use super::{Graph, NodeId, Op, Output, Phase};
use std::collections::HashMap;
use std::fmt::Write;

/// Dump names: variables by their Keras name, other nodes numbered in
/// schedule order.
pub fn names(g: &Graph) -> (Vec<NodeId>, HashMap<NodeId, String>) {
    let order = g.schedule();
    let mut names = HashMap::new();
    let mut next = 0;
    for &n in &order {
        let name = match g[n].op {
            Op::Var(v) => format!("%{}", g.vars[v].name),
            _ => {
                next += 1;
                format!("%{}", next - 1)
            }
        };
        names.insert(n, name);
    }
    (order, names)
}

pub fn output_name(g: &Graph, o: Output) -> String {
    match o {
        Output::Prediction => "prediction".into(),
        Output::Loss => "loss".into(),
        Output::Grad(v) => format!("grad({})", g.vars[v].name),
        Output::Assign(v) => format!("assign({})", g.vars[v].name),
        Output::Layer(i) => format!("layer({i})"),
        Output::InputGrad => "grad(input)".into(),
    }
}

/// `%12 = conv2d(%3, %conv2d/kernel) strides=1 padding=valid : [N,26,26,32]  # conv2d, line 4`
pub fn text(g: &Graph) -> String {
    let (order, names) = names(g);
    let mut out = String::new();
    for (i, v) in g.vars.iter().enumerate() {
        let used = order.iter().any(|&n| g[n].op == Op::Var(i));
        if used {
            let kind = if v.trainable { "trainable" } else { "state" };
            let _ = writeln!(out, "var %{} : {:?} {kind}", v.name, v.shape);
        }
    }
    for &n in &order {
        let node = &g[n];
        if let Op::Var(_) = node.op {
            continue;
        }
        let args: Vec<&str> = g.operands(n).iter().map(|a| names[a].as_str()).collect();
        let mut line = format!("{} = {}", names[&n], node.op.name());
        if !args.is_empty() {
            line += &format!("({})", args.join(", "));
        }
        let attrs = attributes(&node.op);
        if !attrs.is_empty() {
            line += " ";
            line += &attrs;
        }
        line += &format!(" : {}", node.shape);
        let o = &node.origin;
        if !o.what.is_empty() {
            let phase = match o.phase {
                Phase::Forward => "",
                Phase::Backward => " grad",
                Phase::Update => " update",
            };
            if o.line > 0 {
                line += &format!("  # {}{phase}, line {}", o.what, o.line);
            } else {
                line += &format!("  # {}{phase}", o.what);
            }
        }
        out += &line;
        out.push('\n');
    }
    let outs: Vec<String> = g
        .outputs
        .iter()
        .map(|(o, n)| format!("{}={}", output_name(g, *o), names[n]))
        .collect();
    let _ = writeln!(out, "return {}", outs.join(", "));
    out
}

/// Graphviz dot: forward nodes white, backward grey, updates blue.
pub fn dot(g: &Graph, title: &str) -> String {
    let (order, names) = names(g);
    let mut out = format!("digraph \"{title}\" {{\n  node [shape=box fontname=\"monospace\" fontsize=10];\n");
    for &n in &order {
        let node = &g[n];
        let attrs = attributes(&node.op);
        let label = match node.op {
            Op::Var(_) => format!("{}\\n{}", names[&n], node.shape),
            _ if attrs.is_empty() => format!("{} {}\\n{}", names[&n], node.op.name(), node.shape),
            _ => format!("{} {}\\n{} {}", names[&n], node.op.name(), attrs, node.shape),
        };
        let fill = match node.origin.phase {
            Phase::Forward => "white",
            Phase::Backward => "grey90",
            Phase::Update => "lightblue",
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\" style=filled fillcolor={fill}];",
            n.index(),
            label.replace('"', "'")
        );
    }
    for &n in &order {
        for (i, a) in g.operands(n).iter().enumerate() {
            let _ = writeln!(out, "  n{} -> n{} [label=\"{i}\"];", a.index(), n.index());
        }
    }
    for (o, n) in &g.outputs {
        let name = output_name(g, *o);
        let _ = writeln!(out, "  \"{name}\" [shape=plaintext];\n  n{} -> \"{name}\";", n.index());
    }
    out.push_str("}\n");
    out
}
