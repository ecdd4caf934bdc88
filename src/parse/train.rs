//! The `train { ... }` block: how `cnnc run` trains the model when no flag
//! says otherwise.

use super::args::{self, Args};
use super::ast::{Augment, FillMode, Flip, Interpolation, Loss, Optimizer, Train};
use super::syntax::{Statement, Value, ValueKind};
use crate::diag::Diagnostic;

/// The settings of a training block.
pub const SETTINGS: [&str; 10] = [
    "data",
    "loss",
    "optimizer",
    "batch_size",
    "batch",
    "epochs",
    "seed",
    "validation_split",
    "patience",
    "augment",
];

/// The arguments of `augment`: Keras's random image layers and their
/// shared settings.
const AUGMENT_ARGS: [&str; 6] = [
    "flip",
    "rotation",
    "translation",
    "fill_mode",
    "interpolation",
    "fill_value",
];

const OPTIMIZERS: [(&str, Optimizer); 3] = [
    ("sgd", Optimizer::SGD),
    ("adam", Optimizer::ADAM),
    ("rmsprop", Optimizer::RMSPROP),
];

/// Each optimizer's own arguments, besides `learning_rate`.
const OPTIMIZER_ARGS: [(&str, &[&str]); 3] = [
    ("sgd", &["momentum", "nesterov"]),
    ("adam", &["beta_1", "beta_2", "epsilon"]),
    ("rmsprop", &["rho", "momentum", "epsilon", "centered"]),
];

/// Settings Keras users look for in the training block that cnnc takes
/// elsewhere, and where.
const MOVED_SETTINGS: [(&str, &str); 13] = [
    (
        "learning_rate",
        "it is an argument of the optimizer: `optimizer adam learning_rate=0.001`",
    ),
    (
        "lr",
        "it is an argument of the optimizer: `optimizer adam learning_rate=0.001`",
    ),
    ("momentum", "it is an argument of sgd: `optimizer sgd momentum=0.9`"),
    (
        "nesterov",
        "it is an argument of sgd: `optimizer sgd momentum=0.9 nesterov=true`",
    ),
    ("beta_1", "it is an argument of adam: `optimizer adam beta_1=0.9`"),
    ("beta_2", "it is an argument of adam: `optimizer adam beta_2=0.999`"),
    ("epsilon", "it is an argument of adam: `optimizer adam epsilon=1e-7`"),
    ("rho", "it is an argument of rmsprop: `optimizer rmsprop rho=0.9`"),
    (
        "centered",
        "it is an argument of rmsprop: `optimizer rmsprop centered=true`",
    ),
    ("flip", "it is an argument of augment: `augment flip=horizontal`"),
    ("rotation", "it is an argument of augment: `augment rotation=0.05`"),
    ("translation", "it is an argument of augment: `augment translation=0.1`"),
    ("metrics", "cnnc reports loss and accuracy on its own"),
];

/// Keras's short names and other spellings of the losses cnnc has.
const LOSS_ALIASES: [(&str, &str); 6] = [
    ("mse", "mean_squared_error"),
    ("MSE", "mean_squared_error"),
    ("crossentropy", "categorical_crossentropy"),
    ("bce", "binary_crossentropy"),
    ("cce", "categorical_crossentropy"),
    ("sparse_categorical_crossentropy", "categorical_crossentropy"),
];

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
                let (name, keys) = optimizer_keywords(s, errors);
                Args::bind_as(s, name, &["optimizer"], &keys)
            }
            "augment" => Args::bind(s, &[], &AUGMENT_ARGS),
            "" => {
                let e = Diagnostic::error(s.keyword.span, format!("unknown training setting `{key}`"))
                    .label("unknown setting")
                    .note(format!("the training block sets {}", SETTINGS.join(", ")));
                errors.push(match MOVED_SETTINGS.iter().find(|(k, _)| *k == key) {
                    Some((_, help)) => e.help(*help),
                    None => e.did_you_mean(key, SETTINGS),
                });
                continue;
            }
            _ => Args::bind(s, &one, &one),
        };
        let help = format!("write e.g. `{}`", example(canonical));
        match canonical {
            "data" => train.data = a.require("data", &help, |v| args::text(v, "data")),
            "loss" => {
                train.loss = a.require("loss", &help, |v| {
                    args::choice(v, "loss", &Loss::ALL).map_err(|e| match &v.kind {
                        ValueKind::Name(n) => match LOSS_ALIASES.iter().find(|(alias, _)| alias == n) {
                            Some((_, loss)) if n.starts_with("sparse") => e.help(format!(
                                "cnnc's labels are one-hot, so the sparse form is not needed: use `loss {loss}`"
                            )),
                            Some((_, loss)) => e.help(format!("cnnc spells it out: `loss {loss}`")),
                            None => e,
                        },
                        _ => e,
                    })
                });
                train.loss_span = a.span_of("loss");
            }
            "optimizer" => train.optimizer = optimizer(&mut a, &help),
            "batch_size" => train.batch_size = a.require("batch_size", &help, |v| args::count(v, "the batch size")),
            "epochs" => train.epochs = a.require("epochs", &help, |v| args::count(v, "epochs")),
            "seed" => train.seed = a.require("seed", &help, |v| args::natural(v, "the seed")),
            "validation_split" => {
                train.validation_split = a.require("validation_split", &help, |v| {
                    args::number_in(v, "the validation split", 0.0, 1.0, false).map_err(|e| {
                        e.help("it is the fraction of the data held out to validate on, e.g. `validation_split 0.1`")
                    })
                })
            }
            "augment" => train.augment = augment(&mut a, s, &help),
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
        "augment" => "augment flip=horizontal rotation=0.05 translation=0.1",
        _ => "patience 3",
    }
}

/// The name the optimizer statement goes by in errors, and the keyword
/// arguments of the optimizer it names (all of them when it names none we
/// know, so the unknown name is the one error). An argument that belongs to
/// the other optimizer is reported here, with where it belongs.
fn optimizer_keywords(s: &Statement, errors: &mut Vec<Diagnostic>) -> (&'static str, Vec<&'static str>) {
    let name = s.args.iter().find(|a| a.key.is_none()).map(|a| &a.value.kind);
    let known = OPTIMIZER_ARGS
        .iter()
        .find(|(n, _)| matches!(name, Some(ValueKind::Name(x)) if x == n));
    let mut keys = vec!["learning_rate"];
    let Some(&(chosen, own)) = known else {
        for key in OPTIMIZER_ARGS.iter().flat_map(|(_, a)| a.iter()) {
            if !keys.contains(key) {
                keys.push(key);
            }
        }
        return ("optimizer", keys);
    };
    keys.extend(own);
    let takes = keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    let mut foreign: Vec<&'static str> = Vec::new();
    for key in OPTIMIZER_ARGS.iter().flat_map(|(_, theirs)| theirs.iter().copied()) {
        if !keys.contains(&key) && !foreign.contains(&key) {
            foreign.push(key);
        }
    }
    for key in foreign {
        let owners: Vec<&str> = OPTIMIZER_ARGS
            .iter()
            .filter(|(_, theirs)| theirs.contains(&key))
            .map(|(n, _)| *n)
            .collect();
        let given: Vec<_> = s
            .args
            .iter()
            .filter_map(|a| a.key.as_ref())
            .filter(|k| k.text == key)
            .collect();
        for word in &given {
            let owned_by = owners
                .iter()
                .map(|o| format!("`{o}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            let use_one = owners
                .iter()
                .map(|o| format!("`optimizer {o}`"))
                .collect::<Vec<_>>()
                .join(" or ");
            errors.push(
                Diagnostic::error(word.span, format!("`{chosen}` has no argument `{key}`"))
                    .label(format!("an argument of {owned_by}"))
                    .note(format!("`{chosen}` takes {takes}"))
                    .help(format!("use {use_one} for `{key}`, or remove it")),
            );
        }
        if !given.is_empty() {
            // Reported above; binding it keeps it from being reported
            // again as unknown.
            keys.push(key);
        }
    }
    (chosen, keys)
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
        Optimizer::Rmsprop {
            rho,
            momentum,
            epsilon,
            centered,
            ..
        } => {
            let rho = a.or("rho", rho, |v| args::number_in(v, "rho", 0.0, 1.0, false));
            let momentum = a.or("momentum", momentum, |v| {
                args::number_in(v, "momentum", 0.0, 1.0, false)
            });
            let epsilon = a.or("epsilon", epsilon, |v| args::positive(v, "epsilon"));
            let centered = a.or("centered", centered, |v| args::boolean(v, "centered"));
            Some(Optimizer::Rmsprop {
                learning_rate: lr?,
                rho: rho?,
                momentum: momentum?,
                epsilon: epsilon?,
                centered: centered?,
            })
        }
    }
}

fn augment(a: &mut Args, s: &Statement, help: &str) -> Option<Augment> {
    let factor = |v: &Value, what: &str| args::number_in(v, what, 0.0, 1.0, true);
    let flip = a.or("flip", None, |v| args::choice(v, "flip", &Flip::ALL).map(Some));
    let rotation = a.or("rotation", None, |v| {
        factor(v, "rotation")
            .map(Some)
            .map_err(|e| e.help("it is a fraction of a full turn, as Keras's RandomRotation takes it: 0.05 is up to 18 degrees either way"))
    });
    let translation = a.or("translation", None, |v| match &v.kind {
        ValueKind::List(items) if items.len() == 2 => Ok(Some([
            factor(&items[0], "translation")?,
            factor(&items[1], "translation")?,
        ])),
        ValueKind::List(_) => Err(Diagnostic::error(v.span, "`translation` takes one factor or two")
            .label("expected a number or [height, width]")
            .help("write `translation=0.1` for both axes, or `translation=[0.1, 0.2]` for height and width")),
        _ => factor(v, "translation").map(|f| Some([f, f])),
    });
    let fill_mode = a.or("fill_mode", FillMode::Reflect, |v| {
        args::choice(v, "fill_mode", &FillMode::ALL)
    });
    let interpolation = a.or("interpolation", Interpolation::Bilinear, |v| {
        args::choice(v, "interpolation", &Interpolation::ALL)
    });
    let fill_value = a.or("fill_value", 0.0, |v| {
        args::number_in(v, "fill_value", f64::NEG_INFINITY, f64::INFINITY, false)
    });
    let augment = Augment {
        flip: flip?,
        rotation: rotation?,
        translation: translation?,
        fill_mode: fill_mode?,
        interpolation: interpolation?,
        fill_value: fill_value?,
        span: s.keyword.span,
    };
    if augment.flip.is_none() && augment.rotation.is_none() && augment.translation.is_none() {
        a.errors.push(
            Diagnostic::error(s.keyword.span, "`augment` changes nothing")
                .label("no flip, rotation or translation")
                .help(help.to_string()),
        );
        return None;
    }
    Some(augment)
}
