//! Transfer learning on the command line: which layers to freeze
//! (`--freeze`, `--freeze-until`), and what a run started from another
//! model's weights (`--init`) says it loaded.

use super::common::{Failure, layer_index};
use crate::runtime::train::Start;
use crate::shape::{self, Checked};
use std::fmt::Write;
use std::path::Path;

/// Layers to freeze, in place of the model file's `trainable=`.
#[derive(clap::Args, Default)]
pub struct FreezeArgs {
    /// Freeze these layers (comma-separated names) and train every other
    /// one, whatever the model file's `trainable=` says
    #[arg(long, value_delimiter = ',', value_name = "LAYER,...")]
    pub freeze: Vec<String>,
    /// Freeze LAYER and every layer before it, and train the ones after it,
    /// whatever the model file's `trainable=` says
    #[arg(long, value_name = "LAYER")]
    pub freeze_until: Option<String>,
}

/// The model with its layers frozen as the flags say, checked again so
/// that its weights (and the summary's counts) follow; as the file has it
/// without the flags.
pub fn frozen(checked: Checked, args: &FreezeArgs) -> Result<Checked, Failure> {
    if args.freeze.is_empty() && args.freeze_until.is_none() {
        return Ok(checked);
    }
    let mut frozen = vec![false; checked.model.layers.len()];
    for name in &args.freeze {
        frozen[layer_index(&checked, name)?] = true;
    }
    if let Some(name) = &args.freeze_until {
        let last = layer_index(&checked, name)?;
        frozen[..=last].fill(true);
    }
    let mut model = checked.model;
    for (layer, frozen) in model.layers.iter_mut().zip(frozen) {
        layer.trainable = !frozen;
    }
    Ok(shape::check(model, &checked.file, &checked.source)?)
}

/// What a run started from `path` took from it, layer by layer: the lines
/// printed before training.
pub fn loaded_note(checked: &Checked, path: &Path, starts: &[Start]) -> String {
    let mut out = format!("initial weights from {}:\n", path.display());
    let mut starts = starts.iter();
    for (layer, info) in checked.model.layers.iter().zip(&checked.layers) {
        let of_layer: Vec<_> = info.weights.iter().zip(starts.by_ref()).collect();
        if of_layer.is_empty() {
            continue;
        }
        let loaded = of_layer.iter().filter(|(_, s)| **s == Start::Loaded).count();
        if of_layer.iter().all(|(_, s)| **s == Start::Fresh) {
            let _ = writeln!(out, "  {:<14} fresh: not in the file", layer.name);
            continue;
        }
        let mut how = match loaded {
            0 => "fresh".to_string(),
            n if n == of_layer.len() => "loaded".to_string(),
            _ => "partly loaded".to_string(),
        };
        for (weight, start) in of_layer {
            let role = weight.role.keras_name();
            match start {
                Start::Loaded => {}
                Start::Fresh => how += &format!("; {role}: not in the file"),
                Start::Skipped { found } => {
                    how += &format!("; {role}: {found:?} in the file, {:?} here: skipped", weight.shape);
                }
            }
        }
        let _ = writeln!(out, "  {:<14} {how}", layer.name);
    }
    out
}
