//! `cnnc grad FILE`: one example through the model, its loss, every weight's
//! gradient and its value after one SGD step. The course's backpropagation
//! exercises, checked by the compiler.

use super::common::{ConvArgs, EngineKind, Failure, Format, SetArgs, engine, finite, graphs, in_model, load, positive};
use crate::ir::{Hyper, Output};
use crate::parse::ast::{Loss, Optimizer};
use crate::runtime::engine::{Kind, Step};
use crate::runtime::{self, rng::Rng};
use crate::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GradArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// The example's input values, comma-separated (row-major HxWxC).
    #[arg(long, allow_hyphen_values = true, value_delimiter = ',', conflicts_with = "example", value_parser = finite)]
    input: Option<Vec<f64>>,
    /// The label: a class index for a softmax model, the target value(s)
    /// otherwise, comma-separated.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ',', conflicts_with = "example", value_parser = finite)]
    label: Option<Vec<f64>>,
    /// A JSON file `{"input": [...], "label": ..., "weights": {"dense/kernel": [...]}}`;
    /// the weights it lists replace the initial ones.
    #[arg(long)]
    example: Option<PathBuf>,
    /// Learning rate of the SGD step (default: the training block's, else 0.01).
    #[arg(long, value_parser = positive)]
    lr: Option<f64>,
    /// Seed for initial weights and dropout masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[arg(long, value_enum, default_value_t = EngineKind::Jit)]
    engine: EngineKind,
    #[command(flatten)]
    conv: ConvArgs,
}

struct Example {
    input: Vec<f64>,
    label: Vec<f64>,
    weights: Vec<(String, Vec<f64>)>,
}

pub fn run(args: GradArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let example = read_example(&args)?;
    let graphs = graphs(&checked)?;
    let graph = &graphs.backward;
    let mut vars = runtime::initial_weights::<f32>(&checked, args.seed);
    for (name, values) in &example.weights {
        let id = graph.var_id(name).ok_or_else(|| {
            let names = graph.vars.iter().map(|v| v.name.as_str());
            let hint = crate::diag::closest(name, names).map(|n| format!(" (did you mean `{n}`?)"));
            Failure::new(format!("the model has no weight `{name}`{}", hint.unwrap_or_default()))
        })?;
        if values.len() != vars[id].len() {
            return Err(Failure::new(format!(
                "weight `{name}` has shape {:?} ({} values), the example gives {}",
                graph.vars[id].shape,
                vars[id].len(),
                values.len()
            )));
        }
        vars[id] = ArrayD::from_shape_vec(IxDyn(&graph.vars[id].shape), values.iter().map(|&v| v as f32).collect())
            .map_err(|e| Failure::new(format!("weight `{name}`: {e}")))?;
    }
    let input = batch_of_one(&checked.model.input.shape, &example.input, "input")?;
    let label = batch_of_one(
        checked.output_shape(),
        &label_values(&checked, &example.label)?,
        "label",
    )?;
    let masks = runtime::dropout_masks::<f32>(graph, 1, &mut Rng::stream(args.seed, runtime::purpose::DROPOUT));
    let no_hyper = |_: Hyper| 0.0;
    let step = Step {
        inputs: input.view(),
        targets: Some(label.view()),
        masks: &masks,
        hyper: &no_hyper,
    };
    let mut state = vars.clone();
    let outputs = engine(args.engine, &args.conv, &graphs)
        .run(Kind::Backward, &mut state, &step)
        .map_err(in_model(&checked))?;

    let lr = args
        .lr
        .unwrap_or_else(|| match checked.model.train.as_ref().and_then(|t| t.optimizer) {
            Some(o @ Optimizer::Sgd { .. }) => o.learning_rate(),
            _ => Optimizer::SGD.learning_rate(),
        });
    let loss = outputs
        .iter()
        .find(|(o, _)| *o == Output::Loss)
        .and_then(|(_, v)| v.iter().next().copied())
        .unwrap_or(f32::NAN);
    let grads: Vec<(usize, &ArrayD<f32>)> = outputs
        .iter()
        .filter_map(|(o, v)| match o {
            Output::Grad(id) => Some((*id, v)),
            _ => None,
        })
        .collect();
    let params: Vec<Param> = grads
        .iter()
        .map(|&(id, grad)| Param {
            name: graph.vars[id].name.clone(),
            shape: graph.vars[id].shape.clone(),
            value: vars[id].clone(),
            grad: grad.clone(),
            updated: &vars[id] - &(grad * lr as f32),
        })
        .collect();
    Ok(match args.format {
        Format::Text => text(&checked, loss, lr, &params),
        Format::Json => format!("{:#}\n", json(loss, lr, &params)),
    })
}

struct Param {
    name: String,
    shape: Vec<usize>,
    value: ArrayD<f32>,
    grad: ArrayD<f32>,
    updated: ArrayD<f32>,
}

/// The example from the flags or from its JSON file.
fn read_example(args: &GradArgs) -> Result<Example, Failure> {
    if let Some(path) = &args.example {
        let name = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| Failure::new(format!("cannot read `{name}`: {e}")))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Failure::new(format!("`{name}` is not valid JSON: {e}")))?;
        let numbers = |key: &str| -> Result<Vec<f64>, Failure> {
            let mut out = Vec::new();
            flatten(&v[key], &mut out).map_err(|e| Failure::new(format!("`{name}`: `{key}` {e}")))?;
            Ok(out)
        };
        let mut weights = Vec::new();
        if let Some(map) = v.get("weights").and_then(Value::as_object) {
            for (k, w) in map {
                let mut values = Vec::new();
                flatten(w, &mut values).map_err(|e| Failure::new(format!("`{name}`: weight `{k}` {e}")))?;
                weights.push((k.clone(), values));
            }
        }
        return Ok(Example {
            input: numbers("input")?,
            label: numbers("label")?,
            weights,
        });
    }
    match (&args.input, &args.label) {
        (Some(input), Some(label)) => Ok(Example {
            input: input.clone(),
            label: label.clone(),
            weights: Vec::new(),
        }),
        _ => Err(Failure::new(
            "give the example with `--input V,V,... --label L` or `--example FILE.json`",
        )),
    }
}

fn flatten(v: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("holds a number out of range")?);
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Null => Err("is missing".into()),
        _ => Err("must be a number or a list of numbers".into()),
    }
}

/// A softmax model's label may be a class index, expanded to one-hot.
fn label_values(checked: &Checked, label: &[f64]) -> Result<Vec<f64>, Failure> {
    let classes = checked.output_shape().iter().product::<usize>();
    match label {
        [class] if checked.loss() == Loss::CategoricalCrossentropy && classes > 1 => {
            if class.fract() != 0.0 || *class < 0.0 || *class as usize >= classes {
                return Err(Failure::new(format!(
                    "label {class} is not a class of this model (0 to {})",
                    classes - 1
                )));
            }
            let mut one_hot = vec![0.0; classes];
            one_hot[*class as usize] = 1.0;
            Ok(one_hot)
        }
        // Cross-entropy targets are probabilities.
        _ if checked.loss() != Loss::MeanSquaredError && label.iter().any(|&y| !(0.0..=1.0).contains(&y)) => {
            Err(Failure::new(format!(
                "the label {label:?} is not a probability: {} compares the model's output with targets in [0, 1]",
                checked.loss().name()
            )))
        }
        _ => Ok(label.to_vec()),
    }
}

fn batch_of_one(shape: &[usize], values: &[f64], what: &str) -> Result<ArrayD<f32>, Failure> {
    let want: usize = shape.iter().product();
    if values.len() != want {
        return Err(Failure::new(format!(
            "the model's {what} has shape {shape:?} ({want} values), the example gives {}",
            values.len()
        )));
    }
    let mut dims = vec![1];
    dims.extend(shape);
    ArrayD::from_shape_vec(IxDyn(&dims), values.iter().map(|&v| v as f32).collect())
        .map_err(|e| Failure::new(format!("{what}: {e}")))
}

/// At most this many values of a tensor in the text form; JSON has all.
const SHOWN: usize = 8;

fn row(values: &ArrayD<f32>) -> String {
    let mut s: Vec<String> = values.iter().take(SHOWN).map(|v| format!("{v}")).collect();
    if values.len() > SHOWN {
        s.push(format!("... ({} values)", values.len()));
    }
    s.join("  ")
}

fn text(checked: &Checked, loss: f32, lr: f64, params: &[Param]) -> String {
    let mut out = format!("loss {loss} ({})\n", checked.loss().name());
    out += &format!("sgd step with learning rate {lr}\n");
    for p in params {
        out += &format!("\n{} {:?}\n", p.name, p.shape);
        out += &format!("  value    {}\n", row(&p.value));
        out += &format!("  grad     {}\n", row(&p.grad));
        out += &format!("  updated  {}\n", row(&p.updated));
    }
    out
}

fn nested(a: &ArrayD<f32>) -> Value {
    fn go(values: &[f32], shape: &[usize]) -> Value {
        match shape {
            [] => json!(values.first().copied().unwrap_or(f32::NAN)),
            [_] => json!(values),
            [n, rest @ ..] => {
                let step = values.len() / n.max(&1);
                Value::Array(values.chunks(step.max(1)).map(|c| go(c, rest)).collect())
            }
        }
    }
    let flat: Vec<f32> = a.iter().copied().collect();
    go(&flat, a.shape())
}

fn json(loss: f32, lr: f64, params: &[Param]) -> Value {
    let mut map = serde_json::Map::new();
    for p in params {
        map.insert(
            p.name.clone(),
            json!({ "shape": p.shape, "value": nested(&p.value), "grad": nested(&p.grad), "updated": nested(&p.updated) }),
        );
    }
    json!({ "loss": loss, "learning_rate": lr, "params": map })
}
