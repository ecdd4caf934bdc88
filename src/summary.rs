//! `cnnc check`'s report: Keras's `model.summary()` table with the columns
//! Keras lacks (FLOPs, activation memory), and the same facts as JSON with
//! the field names of Keras's own summaries.

use crate::shape::{Checked, bytes, group, numel};
use serde_json::{Value, json};

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = std::iter::once("None".to_string())
        .chain(shape.iter().map(usize::to_string))
        .collect();
    format!("({})", dims.join(", "))
}

/// FLOPs with an SI suffix: `12.19 M`.
fn flops(n: u64) -> String {
    if n == 0 {
        return "0".to_string();
    }
    let mut x = n as f64;
    for unit in ["", " K", " M", " G"] {
        if x < 1000.0 {
            return if unit.is_empty() {
                format!("{n}")
            } else {
                format!("{x:.2}{unit}")
            };
        }
        x /= 1000.0;
    }
    format!("{x:.2} T")
}

struct Totals {
    params: u64,
    trainable: u64,
    flops: u64,
    activation_bytes: u64,
}

fn totals(c: &Checked) -> Totals {
    let params: u64 = c.weights().map(|w| w.numel()).sum();
    let trainable = c.weights().filter(|w| w.trainable).map(|w| w.numel()).sum();
    Totals {
        params,
        trainable,
        flops: c.layers.iter().map(|l| l.flops()).sum(),
        activation_bytes: c.layers.iter().map(|l| l.activation_bytes()).sum(),
    }
}

/// What the compiled engine's memory plans need: one arena per routine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arena {
    /// Inference at batch 1, in bytes.
    pub inference: usize,
    /// A training step at `batch`, in bytes.
    pub training: usize,
    pub batch: usize,
}

/// `cell` padded with spaces to `width` characters, on the left when
/// `right` aligns it. By hand, because `format!`'s widths stop at 65,535 and
/// a user's names (layers, classes) can be longer.
pub fn pad(cell: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
    if right { fill + cell } else { format!("{cell}{fill}") }
}

/// The summary table. Columns grow to fit: nothing is ever truncated.
pub fn text(c: &Checked, arena: Option<&Arena>) -> String {
    let header = ["Layer (type)", "Output Shape", "Param #", "FLOPs", "Activations"];
    let rows: Vec<[String; 5]> = c
        .model
        .layers
        .iter()
        .zip(&c.layers)
        .map(|(layer, info)| {
            [
                format!("{} ({})", layer.name, layer.kind.keras_class()),
                shape_text(&info.output),
                group(info.params()),
                flops(info.flops()),
                bytes(info.activation_bytes()),
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            // Text columns left, numbers right, as Keras aligns them.
            s.push_str(&format!(" {} ", pad(cell, width[i], i >= 2)));
        }
        s.trim_end().to_string() + "\n"
    };
    let rule = |ch: &str| ch.repeat(width.iter().map(|w| w + 2).sum()) + "\n";
    let mut out = format!("Model: \"{}\"\n", c.model.name);
    if !c.model.params.is_empty() {
        let params: Vec<String> = c
            .model
            .params
            .iter()
            .map(|p| match &p.set {
                Some(_) => format!("{}={} (--set; default {})", p.name, p.value, p.default),
                None => format!("{}={}", p.name, p.value),
            })
            .collect();
        out += &format!("Parameters: {}\n", params.join(", "));
    }
    out += &rule("_");
    out += &line(header);
    out += &rule("=");
    for (i, row) in rows.iter().enumerate() {
        out += &line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
        out += &rule(if i + 1 == rows.len() { "=" } else { "_" });
    }
    let t = totals(c);
    let nt = t.params - t.trainable;
    out += &format!(" Total params: {} ({})\n", group(t.params), bytes(4 * t.params));
    out += &format!(
        " Trainable params: {} ({})\n",
        group(t.trainable),
        bytes(4 * t.trainable)
    );
    out += &format!(" Non-trainable params: {} ({})\n", group(nt), bytes(4 * nt));
    out += &format!(" Forward FLOPs per sample: {}", group(t.flops));
    out += &match t.flops {
        0..1000 => "\n".to_string(),
        _ => format!(" ({})\n", flops(t.flops)),
    };
    out += &format!(
        " Activation memory per sample: {} (input {})\n",
        bytes(t.activation_bytes),
        bytes(4 * numel(&c.model.input.shape))
    );
    if let Some(a) = arena {
        out += &format!(
            " Compiled arena: inference {} (batch 1), training step {} (batch {})",
            bytes(a.inference as u64),
            bytes(a.training as u64),
            a.batch
        );
        if a.training > crate::codegen::MAX_ARENA_BYTES {
            out += &format!(
                ", over the {} limit: train with a smaller batch size",
                bytes(crate::codegen::MAX_ARENA_BYTES as u64)
            );
        }
        out.push('\n');
    }
    out
}

/// The summary as JSON: Keras's fields (`model, input_shape, layers: [{name,
/// type, output_shape, params}], total_params, trainable_params,
/// non_trainable_params`) plus cnnc's own.
pub fn json(c: &Checked, arena: Option<&Arena>) -> Value {
    let layers: Vec<Value> = c
        .model
        .layers
        .iter()
        .zip(&c.layers)
        .map(|(layer, info)| {
            let mut shape: Vec<Value> = vec![Value::Null];
            shape.extend(info.output.iter().map(|&d| json!(d)));
            json!({
                "name": layer.name,
                "type": layer.kind.keras_class(),
                "output_shape": shape,
                "params": info.params(),
                "trainable": layer.trainable,
                "weights": info.weights.iter().map(|w| json!({
                    "name": w.name, "shape": w.shape, "trainable": w.trainable,
                })).collect::<Vec<_>>(),
                "flops": info.flops(),
                "activation_bytes": info.activation_bytes(),
                "line": layer.line,
            })
        })
        .collect();
    let t = totals(c);
    json!({
        "model": c.model.name,
        "params": c.model.params.iter().map(|p| json!({
            "name": p.name, "value": p.value, "default": p.default, "set": p.set.is_some(),
        })).collect::<Vec<_>>(),
        "input_shape": c.model.input.shape,
        "layers": layers,
        "total_params": t.params,
        "trainable_params": t.trainable,
        "non_trainable_params": t.params - t.trainable,
        "param_bytes": 4 * t.params,
        "flops": t.flops,
        "activation_bytes": t.activation_bytes,
        "loss": c.loss().name(),
        "arena_bytes": arena.map(|a| json!({
            "inference": a.inference, "training_step": a.training, "training_batch": a.batch,
        })),
    })
}
