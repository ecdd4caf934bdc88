//! `cnnc eval FILE --weights W`: loss, accuracy and confusion matrix of
//! trained weights on the dataset's test split.

use super::common::{DataArgs, Failure, Format, SetArgs, Trained, dataset, engine, in_model, load, trained};
use crate::runtime::{data, train};
use crate::summary::pad;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Weights to evaluate (safetensors with Keras names).
    #[arg(long)]
    weights: PathBuf,
    /// Samples per batch.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    data: DataArgs,
}

pub fn run(args: EvalArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let Trained {
        graphs,
        mut state,
        classes,
        ..
    } = trained(&checked, &args.weights, false)?;
    let selection = data::Selection {
        classes: args.data.classes.clone(),
        ..Default::default()
    };
    let splits = dataset(&checked, &args.file, args.data.data.as_deref(), None, &selection)?;
    // Labels are indices: the same index in other data may be another
    // class, and its score would be meaningless. Weights from elsewhere
    // that record no classes are taken as they are.
    if !classes.is_empty() && classes != splits.classes {
        return Err(Failure::new(format!(
            "the weights were trained on other classes than the test data's: {}\n  = help: evaluate on data with \
             the classes the weights were trained on",
            train::class_changes(
                (&classes, &format!("`{}`", args.weights.display())),
                (&splits.classes, "the data")
            )
        )));
    }
    let Some(test) = &splits.test else {
        return Err(Failure::new(
            "the dataset has no test split\n  = help: an image dataset keeps its test images in a test/ folder",
        ));
    };
    let mut engine = engine(args.data.engine, &args.data.conv, &graphs);
    let e = train::evaluate(&checked, engine.as_mut(), &mut state, test, args.batch as usize)
        .map_err(in_model(&checked))?;
    Ok(match args.format {
        Format::Json => format!(
            "{:#}\n",
            json!({ "loss": e.loss, "accuracy": if e.accuracy.is_nan() { None } else { Some(e.accuracy) }, "n": e.n, "confusion": e.confusion })
        ),
        Format::Text => {
            let mut out = format!("test: loss {:.4}", e.loss);
            if !e.accuracy.is_nan() {
                out += &format!(" - accuracy {:.4}", e.accuracy);
            }
            out += &format!(
                " ({} samples)\n\nconfusion matrix (rows: true class, columns: predicted)\n",
                e.n
            );
            out += &confusion_table(&e.confusion, &splits.classes);
            out
        }
    })
}

fn confusion_table(confusion: &[Vec<u64>], classes: &[String]) -> String {
    let name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    let label_width = (0..confusion.len()).map(|i| name(i).chars().count()).max().unwrap_or(1);
    let cell = confusion
        .iter()
        .flatten()
        .map(|c| c.to_string().len())
        .chain((0..confusion.len()).map(|i| name(i).chars().count()))
        .max()
        .unwrap_or(1);
    let mut out = pad("", label_width, false);
    for i in 0..confusion.len() {
        out += &format!(" {}", pad(&name(i), cell, true));
    }
    out.push('\n');
    for (i, row) in confusion.iter().enumerate() {
        out += &pad(&name(i), label_width, true);
        for c in row {
            out += &format!(" {}", pad(&c.to_string(), cell, true));
        }
        out.push('\n');
    }
    out
}
