//! Checkpoints of a run, and loading them back to continue, mid-epoch too.
//!
//! A checkpoint is one file, `checkpoint.safetensors`: the weights and the
//! optimizer's slots (named `<weight>/<slot>`, Keras 3's slot names), and in
//! its metadata the step count, the seed, how far an interrupted epoch got,
//! the best epoch, the model's layers and the data's fingerprint. One file
//! because one rename replaces it: a kill at any moment leaves the previous
//! checkpoint or the new one, never weights of one step beside optimizer
//! state of another, with no manifest or second rename to get right.
//! `weights.safetensors`, the weights as users and other tools read them,
//! is written after it from the same state, and written again by a resume
//! in case a kill came in between.

use super::early_stopping::{Best, EarlyStopping};
use super::fingerprint::Fingerprint;
use super::{Files, Progress, Settings, State};
use crate::runtime::Error;
use crate::runtime::checkpoint::{self, CheckpointError, Metadata, Problem, Tensor};
use crate::runtime::engine::Graphs;
use crate::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use std::path::Path;
use std::str::FromStr;

/// The `format` of a checkpoint's metadata; weights files say `cnnc`.
pub(super) const CHECKPOINT: &str = "cnnc-checkpoint";

/// A run's model, settings, files and data: what saving and resuming need
/// besides the state.
pub struct Run<'a> {
    pub checked: &'a Checked,
    pub settings: &'a Settings,
    pub graphs: &'a Graphs,
    pub files: Files,
    pub classes: &'a [String],
    pub data: Fingerprint,
}

impl Run<'_> {
    /// `values` as the tensors of the training routine's variables from
    /// `first` on.
    fn tensors(&self, first: usize, values: &[ArrayD<f32>]) -> Vec<Tensor> {
        self.graphs.train.vars[first..]
            .iter()
            .zip(values)
            .map(|(var, value)| Tensor {
                name: var.name.clone(),
                shape: var.shape.clone(),
                data: value.iter().copied().collect(),
            })
            .collect()
    }

    /// What every weights file of the run says about itself.
    fn metadata(&self, epoch: u64) -> Metadata {
        let mut metadata = Metadata::from([
            ("format".into(), "cnnc".into()),
            ("model".into(), self.checked.model.name.clone()),
            ("epoch".into(), epoch.to_string()),
            // `cnnc predict` names its answers with these, `cnnc eval`
            // checks its test data against them.
            ("classes".into(), serde_json::json!(self.classes).to_string()),
        ]);
        let params = self.params();
        if !params.is_empty() {
            metadata.insert("params".into(), serde_json::json!(params).to_string());
        }
        metadata
    }

    /// The model's parameters and their values, in the file's order.
    fn params(&self) -> Vec<(String, String)> {
        let params = &self.checked.model.params;
        params.iter().map(|p| (p.name.clone(), p.value.clone())).collect()
    }

    /// Commits the checkpoint, then writes the weights from it.
    pub fn save(&self, state: &State, stopping: Option<&EarlyStopping>) -> Result<(), Error> {
        let mut metadata = self.metadata(state.epoch);
        let mut put = |key: &str, value: String| {
            metadata.insert(key.into(), value);
        };
        put("format", CHECKPOINT.into());
        put("optimizer", self.settings.optimizer.name().into());
        put("iterations", state.iterations.to_string());
        put("seed", self.settings.seed.to_string());
        put("data", self.data.to_json());
        put("layers", self.layers());
        let progress = &state.progress;
        if progress.step > 0 {
            put("step", progress.step.to_string());
            put("loss_sum", progress.loss_sum.to_string());
            put("seen", progress.seen.to_string());
            put("correct", progress.correct.to_string());
            put("seconds", progress.seconds.to_string());
            // Steps of another batch size would be other samples.
            put("batch_size", self.settings.batch_size.to_string());
        }
        if let Some(best) = stopping.and_then(|s| s.best.as_ref()) {
            put("best_epoch", best.epoch.to_string());
            put("best_val_loss", best.val_loss.to_string());
        }
        checkpoint::save(&self.files.checkpoint, &self.tensors(0, &state.values), &metadata)?;
        self.publish(&state.values[..state.weights], state.epoch)
    }

    /// The model's input and layers as `.cnn` text, arguments spelled out
    /// as the printer does: what a resumed run must be of. (Empty for a
    /// model name the language cannot print, left unchecked.)
    fn layers(&self) -> String {
        crate::parse::print::model(&self.checked.model).unwrap_or_default()
    }

    /// Writes `weights.safetensors`: the model's weights alone.
    fn publish(&self, weights: &[ArrayD<f32>], epoch: u64) -> Result<(), Error> {
        checkpoint::save(&self.files.weights, &self.tensors(0, weights), &self.metadata(epoch))?;
        Ok(())
    }

    pub fn save_best(&self, best: &Best) -> Result<(), Error> {
        checkpoint::save(
            &self.files.best,
            &self.tensors(0, &best.weights),
            &self.metadata(best.epoch),
        )?;
        Ok(())
    }

    /// Loads the checkpoint into `state`, and its best epoch into
    /// `stopping`, once it is known to be this run's: the same optimizer
    /// and the same data.
    pub fn resume(&self, state: &mut State, stopping: Option<&mut EarlyStopping>) -> Result<(), Error> {
        let path = &self.files.checkpoint;
        let expected: Vec<(&str, &[usize])> = self
            .graphs
            .train
            .vars
            .iter()
            .map(|v| (v.name.as_str(), v.shape.as_slice()))
            .collect();
        let (found, problems) = checkpoint::inspect(path, &expected)?;
        let fields = Fields {
            path,
            metadata: &found.metadata,
        };
        fields.expect("format", CHECKPOINT, "a checkpoint written by `cnnc run`")?;
        let optimizer = self.settings.optimizer.name();
        let trained_with = fields.text("optimizer", "the optimizer's name")?;
        if trained_with != optimizer {
            return Err(Error::Message(format!(
                "the run in `{}` was trained with {trained_with}, not {optimizer}\n  = help: resume it with \
                 `--optimizer {trained_with}`",
                self.settings.out_dir.display()
            )));
        }
        // Before the layers: a parameter's value explains a changed layer,
        // and names the flag that fixes it. (Checkpoints of models without
        // parameters have none.)
        let params = match fields.metadata.get("params") {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| metadata_error(path, "params", Some(text.clone()), format!("parameters as JSON ({e})")))?,
            None => Vec::new(),
        };
        if let Some(change) = params_change(&params, &self.params()) {
            return Err(Error::Message(format!(
                "the run in `{}` was trained with {change}",
                self.settings.out_dir.display()
            )));
        }
        let layers = fields.text("layers", "the model's layers")?;
        if let Some(change) = first_change(layers, &self.layers()) {
            return Err(Error::Message(format!(
                "the run in `{}` was trained with other layers: {change}\n  = help: resume with the model the \
                 run started with, or start a new run without --resume",
                self.settings.out_dir.display()
            )));
        }
        let data = fields.text("data", "the data's fingerprint")?;
        let trained_on = Fingerprint::from_json(data)
            .map_err(|e| metadata_error(path, "data", Some(data.into()), format!("the data's fingerprint ({e})")))?;
        let changes = trained_on.changes(&self.data);
        if !changes.is_empty() {
            return Err(Error::Message(format!(
                "the run in `{}` was trained on other data:\n{}\n  = help: resume with the data and validation \
                 split it started with, or start a new run without --resume",
                self.settings.out_dir.display(),
                changes
                    .iter()
                    .map(|c| format!("  - {c}\n"))
                    .collect::<String>()
                    .trim_end()
            )));
        }
        checkpoint::mismatch(path, problems)?;
        for (tensor, value) in found.tensors.into_iter().zip(&mut state.values) {
            *value = ArrayD::from_shape_vec(IxDyn(&tensor.shape), tensor.data)
                .map_err(|e| Error::Message(format!("`{}`: {e}", path.display())))?;
        }
        let epoch = fields.require("epoch")?;
        state.iterations = fields.require("iterations")?;
        state.epoch = epoch;
        // A kill between the commit and this file's write left it behind.
        self.publish(&state.values[..state.weights], epoch)?;
        if let Some(step) = fields.get("step")? {
            let batch_size: usize = fields.require("batch_size")?;
            let seed: u64 = fields.require("seed")?;
            let settings = self.settings;
            if (batch_size, seed) != (settings.batch_size, settings.seed) {
                return Err(Error::Message(format!(
                    "epoch {} was interrupted after step {step} of batches of {batch_size} with seed {seed}: only \
                     the same batch size and seed continue it\n  = help: pass `--batch {batch_size} --seed {seed}`",
                    epoch + 1,
                )));
            }
            state.progress = Progress {
                step,
                loss_sum: fields.require("loss_sum")?,
                seen: fields.require("seen")?,
                correct: fields.require("correct")?,
                seconds: fields.require("seconds")?,
            };
        }
        let (Some(stopping), Some(best_epoch)) = (stopping, fields.get("best_epoch")?) else {
            return Ok(());
        };
        let val_loss = fields.require("best_val_loss")?;
        // The best file is written after the checkpoint, so a run killed in
        // between leaves it a best epoch behind; the weights then are the
        // best ones, and the best file is written again.
        if best_epoch == epoch && state.progress.step == 0 {
            let best = Best {
                epoch,
                val_loss,
                weights: state.values[..state.weights].to_vec(),
            };
            self.save_best(&best)?;
            stopping.best = Some(best);
            return Ok(());
        }
        let best = load_weights(&self.files.best, self.graphs, state.weights)?;
        if best.epoch != best_epoch {
            return Err(metadata_error(
                &self.files.best,
                "epoch",
                Some(best.epoch.to_string()),
                format!("`{best_epoch}`, the best epoch of `{}`", path.display()),
            ));
        }
        stopping.best = Some(Best {
            epoch: best_epoch,
            val_loss,
            weights: best.values,
        });
        Ok(())
    }
}

/// How the parameters of a run differ from the model's now, and what fixes
/// it; `None` when they are the same.
fn params_change(then: &[(String, String)], now: &[(String, String)]) -> Option<String> {
    if then == now {
        return None;
    }
    let show = |params: &[&(String, String)]| match params {
        [] => "no parameters".to_string(),
        _ => params
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let same_names = then.len() == now.len() && then.iter().zip(now).all(|(a, b)| a.0 == b.0);
    if !same_names {
        let (then, now): (Vec<_>, Vec<_>) = (then.iter().collect(), now.iter().collect());
        return Some(format!(
            "{}, not {}\n  = help: resume it with the model file the run started with, or start a new run without \
             --resume",
            show(&then),
            show(&now)
        ));
    }
    let (then, now): (Vec<_>, Vec<_>) = then.iter().zip(now).filter(|(a, b)| a.1 != b.1).unzip();
    let sets: Vec<String> = then.iter().map(|(n, v)| format!("--set {n}={v}")).collect();
    Some(format!(
        "{}, not {}\n  = help: resume it with `{}`",
        show(&then),
        show(&now),
        sets.join(" ")
    ))
}

/// The first line that differs between two texts, in words.
fn first_change(then: &str, now: &str) -> Option<String> {
    let (mut a, mut b) = (then.lines(), now.lines());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => return Some(format!("`{x}` is now `{y}`")),
            (Some(x), None) => return Some(format!("`{x}` is gone")),
            (None, Some(y)) => return Some(format!("`{y}` is new")),
        }
    }
}

/// The fields a training run wrote into the metadata of its checkpoint.
struct Fields<'a> {
    path: &'a Path,
    metadata: &'a Metadata,
}

impl Fields<'_> {
    fn get<T: FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        self.metadata
            .get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| metadata_error(self.path, key, Some(v.clone()), "a number".into()))
            })
            .transpose()
    }

    fn require<T: FromStr>(&self, key: &str) -> Result<T, Error> {
        self.get(key)?
            .ok_or_else(|| metadata_error(self.path, key, None, "a number".into()))
    }

    fn text(&self, key: &str, meaning: &str) -> Result<&str, Error> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| metadata_error(self.path, key, None, meaning.into()))
    }

    fn expect(&self, key: &str, value: &str, meaning: &str) -> Result<(), Error> {
        let found = self.metadata.get(key);
        if found.is_some_and(|v| v == value) {
            return Ok(());
        }
        Err(metadata_error(
            self.path,
            key,
            found.cloned(),
            format!("`{value}`, {meaning}"),
        ))
    }
}

fn metadata_error(path: &Path, key: &str, found: Option<String>, expected: String) -> Error {
    Error::Checkpoint(CheckpointError::Mismatch {
        path: path.to_path_buf(),
        problems: vec![Problem::Metadata {
            key: key.into(),
            found,
            expected,
        }],
    })
}

/// Loads the model's weights from a safetensors file, in `State` order: a
/// weights file, or a run's checkpoint, whose optimizer slots are skipped.
pub fn load_weights(path: &Path, graphs: &Graphs, weights: usize) -> Result<Loaded, Error> {
    load_some_weights(path, graphs, weights, false)
}

/// Loads the model's weights as [`load_weights`] does; with `allow_extra`,
/// tensors of the file the model lacks are ignored and listed in `ignored`.
pub fn load_some_weights(path: &Path, graphs: &Graphs, weights: usize, allow_extra: bool) -> Result<Loaded, Error> {
    let expected: Vec<(&str, &[usize])> = graphs.train.vars[..weights]
        .iter()
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let (loaded, mut problems) = checkpoint::inspect(path, &expected)?;
    // A run's checkpoint holds optimizer slots beside the weights: they are
    // skipped, not reported as extra.
    let is_checkpoint = loaded.metadata.get("format").is_some_and(|f| f == CHECKPOINT);
    let mut ignored = Vec::new();
    if is_checkpoint || allow_extra {
        problems.retain(|p| {
            let Problem::Unexpected { name } = p else { return true };
            if !is_checkpoint {
                ignored.push(name.clone());
            }
            false
        });
    }
    ignored.sort();
    problems.extend(non_finite(&loaded.tensors));
    checkpoint::mismatch(path, problems)?;
    let epoch = loaded.metadata.get("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
    let classes = loaded
        .metadata
        .get("classes")
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    let values = loaded
        .tensors
        .into_iter()
        .map(|t| ArrayD::from_shape_vec(IxDyn(&t.shape), t.data))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Message(format!("`{}`: {e}", path.display())))?;
    Ok(Loaded {
        values,
        epoch,
        classes,
        ignored,
    })
}

/// Weights with NaN or infinite values, which would make every output NaN.
pub(super) fn non_finite(tensors: &[Tensor]) -> impl Iterator<Item = Problem> + '_ {
    tensors.iter().filter_map(|t| {
        let count = t.data.iter().filter(|v| !v.is_finite()).count();
        (count > 0).then(|| Problem::NonFinite {
            name: t.name.clone(),
            count,
        })
    })
}

/// A run a folder holds: how far its checkpoint got.
pub struct Held {
    /// Epochs completed; `None` if the checkpoint cannot be read.
    pub epoch: Option<u64>,
    /// Steps of the next epoch, if it was interrupted within it.
    pub step: Option<usize>,
}

/// The run in `files`' folder, if it holds a checkpoint.
pub fn held(files: &Files, graphs: &Graphs) -> Option<Held> {
    if !files.checkpoint.is_file() {
        return None;
    }
    let expected: Vec<(&str, &[usize])> = graphs
        .train
        .vars
        .iter()
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let metadata = checkpoint::inspect(&files.checkpoint, &expected).map(|(found, _)| found.metadata);
    let number = |key: &str| metadata.as_ref().ok()?.get(key)?.parse().ok();
    Some(Held {
        epoch: number("epoch"),
        step: number("step").map(|s: u64| s as usize),
    })
}

/// The error of a new run in a folder that holds one: what it holds, and
/// the ways on.
pub fn already_held(dir: &Path, held: &Held) -> Error {
    let (what, further) = match (held.epoch, held.step) {
        (Some(epoch), Some(step)) => (
            format!("a run interrupted in epoch {} after step {step}", epoch + 1),
            "",
        ),
        (Some(epoch), None) => (
            format!("a run trained for {epoch} epoch{}", if epoch == 1 { "" } else { "s" }),
            " (with a larger --epochs to train it further)",
        ),
        (None, _) => ("a run's checkpoint".to_string(), ""),
    };
    Error::Message(format!(
        "`{}` already holds {what}\n  = help: continue it with --resume{further}, write this run elsewhere with \
         --out DIR, or replace it with --force",
        dir.display()
    ))
}

/// The error of `--resume` in a folder without a checkpoint (a run that
/// never finished an epoch or was stopped, or no run at all).
pub fn nothing_to_resume(dir: &Path, files: &Files) -> Error {
    Error::Message(format!(
        "nothing to resume in `{}`: it has no checkpoint ({} is missing)\n  = note: a run saves one after every \
         epoch and when Ctrl-C stops it\n  = help: start the run without --resume",
        dir.display(),
        files
            .checkpoint
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ))
}

/// Weights read from a file, with what cnnc stored beside them.
pub struct Loaded {
    pub values: Vec<ArrayD<f32>>,
    /// Epochs the weights were trained for (0 if unknown).
    pub epoch: u64,
    /// Class names by label, if the file records them.
    pub classes: Vec<String>,
    /// Tensors of the file that the model does not have, when allowed.
    pub ignored: Vec<String>,
}
