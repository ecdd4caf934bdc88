//! The `train { ... }` block: how `cnnc run` trains the model when no flag
//! says otherwise.

use super::args::{self, Args};
use super::ast::{Loss, Optimizer, Train};
use super::syntax::{Statement, ValueKind};
use crate::diag::Diagnostic;

/// The settings of a training block.
pub const SETTINGS: [&str; 9] = [
    "data",
    "loss",
    "optimizer",
    "batch_size",
    "batch",
    "epochs",
    "seed",
    "validation_split",
    "patience",
];

const OPTIMIZERS: [(&str, Optimizer); 2] = [("sgd", Optimizer::SGD), ("adam", Optimizer::ADAM)];

pub fn build(block: &Statement, body: &[Statement], errors: &mut Vec<Diagnostic>) -> Train {
    let mut train = Train {
        span: block.span,
        ..Train::default()
    };
    let mut seen: Vec<&Statement> = Vec::new();
    for s in body {
        let key = s.keyword.text.as_str();
        let canonical: &'static str = match SETTINGS.iter().find(|k| **k == key) {
            Some(&"batch") => "batch_size",
            Some(k) => k,
            None => "",
        };
        if let Some(first) = seen.iter().find(|f| {
            let k = f.keyword.text.as_str();
            k == canonical || (k == "batch" && canonical == "batch_size")
        }) {
            errors.push(
                Diagnostic::error(s.keyword.span, format!("`{key}` is set twice in the training block"))
                    .label("second setting")
                    .related(first.keyword.span, "first setting")
                    .help("remove one of them"),
            );
            continue;
        }
        seen.push(s);
        if s.block.is_some() {
            errors.push(Diagnostic::error(s.keyword.span, "blocks cannot be nested").label("nested block"));
            continue;
        }
        let one = [canonical];
        let mut a = match canonical {
            "optimizer" => {
                let keys = optimizer_keywords(s);
                Args::bind(s, &["optimizer"], &keys)
            }
            "" => {
                errors.push(
                    Diagnostic::error(s.keyword.span, format!("unknown training setting `{key}`"))
                        .label("unknown setting")
                        .did_you_mean(key, SETTINGS)
                        .note(format!("the training block sets {}", SETTINGS.join(", "))),
                );
                continue;
            }
            _ => Args::bind(s, &one, &one),
        };
        let help = format!("write e.g. `{}`", example(canonical));
        match canonical {
            "data" => train.data = a.require("data", &help, |v| args::text(v, "data")),
            "loss" => {
                train.loss = a.require("loss", &help, |v| args::choice(v, "loss", &Loss::ALL));
                train.loss_span = a.span_of("loss");
            }
            "optimizer" => train.optimizer = optimizer(&mut a, &help),
            "batch_size" => train.batch_size = a.require("batch_size", &help, |v| args::count(v, "the batch size")),
            "epochs" => train.epochs = a.require("epochs", &help, |v| args::count(v, "epochs")),
            "seed" => train.seed = a.require("seed", &help, |v| args::natural(v, "the seed")),
            "validation_split" => {
                train.validation_split = a.require("validation_split", &help, |v| {
                    args::number_in(v, "the validation split", 0.0, 1.0, false)
                })
            }
            _ => train.patience = a.require("patience", &help, |v| args::count(v, "patience")),
        }
        errors.append(&mut a.errors);
    }
    train
}

fn example(setting: &str) -> &'static str {
    match setting {
        "data" => "data mnist10k",
        "loss" => "loss categorical_crossentropy",
        "optimizer" => "optimizer adam learning_rate=0.001",
        "batch_size" => "batch_size 32",
        "epochs" => "epochs 5",
        "seed" => "seed 1",
        "validation_split" => "validation_split 0.1",
        _ => "patience 3",
    }
}

/// The keyword arguments of the optimizer the statement names (all of them
/// when it names none we know, so the unknown name is the one error).
fn optimizer_keywords(s: &Statement) -> Vec<&'static str> {
    let name = s.args.iter().find(|a| a.key.is_none()).map(|a| &a.value.kind);
    let mut keys = vec!["optimizer", "learning_rate"];
    let sgd = ["momentum", "nesterov"];
    let adam = ["beta_1", "beta_2", "epsilon"];
    match name {
        Some(ValueKind::Name(n)) if n == "sgd" => keys.extend(sgd),
        Some(ValueKind::Name(n)) if n == "adam" => keys.extend(adam),
        _ => keys.extend(sgd.iter().chain(&adam)),
    }
    keys
}

fn optimizer(a: &mut Args, help: &str) -> Option<Optimizer> {
    let base = a.require("optimizer", help, |v| args::choice(v, "optimizer", &OPTIMIZERS))?;
    let lr = a.or("learning_rate", base.learning_rate(), |v| {
        args::positive(v, "learning_rate")
    });
    match base {
        Optimizer::Sgd { momentum, nesterov, .. } => {
            let momentum = a.or("momentum", momentum, |v| {
                args::number_in(v, "momentum", 0.0, 1.0, false)
            });
            let nesterov = a.or("nesterov", nesterov, |v| args::boolean(v, "nesterov"));
            Some(Optimizer::Sgd {
                learning_rate: lr?,
                momentum: momentum?,
                nesterov: nesterov?,
            })
        }
        Optimizer::Adam {
            beta_1,
            beta_2,
            epsilon,
            ..
        } => {
            let beta_1 = a.or("beta_1", beta_1, |v| args::number_in(v, "beta_1", 0.0, 1.0, false));
            let beta_2 = a.or("beta_2", beta_2, |v| args::number_in(v, "beta_2", 0.0, 1.0, false));
            let epsilon = a.or("epsilon", epsilon, |v| args::positive(v, "epsilon"));
            Some(Optimizer::Adam {
                learning_rate: lr?,
                beta_1: beta_1?,
                beta_2: beta_2?,
                epsilon: epsilon?,
            })
        }
    }
}
