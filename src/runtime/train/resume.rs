//! Checkpoints of a run: saving the weights with what a resumed run needs
//! in their metadata and the optimizer state beside them, and loading them
//! back to continue, mid-epoch too.

use super::early_stopping::{Best, EarlyStopping};
use super::{Files, Progress, Settings, State};
use crate::runtime::Error;
use crate::runtime::checkpoint::{self, CheckpointError, Metadata, OptimizerState, Problem, Tensor};
use crate::runtime::engine::Graphs;
use crate::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use std::path::Path;
use std::str::FromStr;

/// A run's model, settings and files: what saving and resuming need
/// besides the state.
pub struct Run<'a> {
    pub checked: &'a Checked,
    pub settings: &'a Settings,
    pub graphs: &'a Graphs,
    pub files: Files,
    pub classes: &'a [String],
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
        Metadata::from([
            ("format".into(), "cnnc".into()),
            ("model".into(), self.checked.model.name.clone()),
            ("epoch".into(), epoch.to_string()),
            // `cnnc predict` names its answers with these.
            ("classes".into(), serde_json::json!(self.classes).to_string()),
        ])
    }

    /// Writes the weights (Keras names and layouts), with what a resumed
    /// run needs in their metadata, and beside them the optimizer state,
    /// each atomically.
    pub fn save(&self, state: &State, stopping: Option<&EarlyStopping>) -> Result<(), Error> {
        let mut metadata = self.metadata(state.epoch);
        let mut put = |key: &str, value: String| {
            metadata.insert(key.into(), value);
        };
        // A run killed between this write and the optimizer state's leaves
        // the two from different steps: resuming compares them.
        put("iterations", state.iterations.to_string());
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
        let weights = state.weights;
        checkpoint::save(
            &self.files.weights,
            &self.tensors(0, &state.values[..weights]),
            &metadata,
        )?;
        checkpoint::save_optimizer(
            &self.files.weights,
            &OptimizerState {
                optimizer: self.settings.optimizer.name().into(),
                iterations: state.iterations,
                epoch: state.epoch,
                seed: self.settings.seed,
                slots: self.tensors(weights, &state.values[weights..]),
            },
        )?;
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

    /// Loads the last checkpoint into `state`, and its best epoch into
    /// `stopping`.
    pub fn resume(&self, state: &mut State, stopping: Option<&mut EarlyStopping>) -> Result<(), Error> {
        let path = &self.files.weights;
        let Loaded {
            values,
            epoch,
            metadata,
            ..
        } = load_weights(path, self.graphs, state.weights)?;
        state.values[..state.weights].clone_from_slice(&values);
        let slots: Vec<(&str, &[usize])> = self.graphs.train.vars[state.weights..]
            .iter()
            .map(|v| (v.name.as_str(), v.shape.as_slice()))
            .collect();
        let opt = checkpoint::load_optimizer(path, self.settings.optimizer.name(), epoch, &slots)?;
        let fields = Fields {
            path,
            metadata: &metadata,
        };
        if let Some(iterations) = fields.get::<u64>("iterations")?
            && iterations != opt.iterations
        {
            return Err(metadata_error(
                &checkpoint::optimizer_path(path),
                "iterations",
                Some(opt.iterations.to_string()),
                format!("`{iterations}`, the iterations of the weights"),
            ));
        }
        for (slot, value) in opt.slots.into_iter().zip(&mut state.values[state.weights..]) {
            *value = ArrayD::from_shape_vec(IxDyn(&slot.shape), slot.data)
                .map_err(|e| Error::Message(format!("optimizer state: {e}")))?;
        }
        state.iterations = opt.iterations;
        state.epoch = epoch;
        if let Some(step) = fields.get("step")? {
            let batch_size: usize = fields.require("batch_size")?;
            let settings = self.settings;
            if (batch_size, opt.seed) != (settings.batch_size, settings.seed) {
                return Err(Error::Message(format!(
                    "epoch {} was interrupted after step {step} of batches of {batch_size} with seed {}: only \
                     the same batch size and seed continue it\n  = help: pass `--batch {batch_size} --seed {}`",
                    epoch + 1,
                    opt.seed,
                    opt.seed
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
        // The best file is written after the weights, so a run killed in
        // between leaves it a best epoch behind; the weights then are the
        // best ones, and the best file is written again.
        if best_epoch == epoch && state.progress.step == 0 {
            let best = Best {
                epoch,
                val_loss,
                weights: values,
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

/// The numbers a training run wrote into the metadata of a weights file.
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

/// Loads the model's weights from a safetensors file, in `State` order.
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
    let (loaded, ignored) = if allow_extra {
        checkpoint::load_ignoring_extra(path, &expected)?
    } else {
        (checkpoint::load(path, &expected)?, Vec::new())
    };
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
        metadata: loaded.metadata,
        ignored,
    })
}

/// Weights read from a file, with what cnnc stored beside them.
pub struct Loaded {
    pub values: Vec<ArrayD<f32>>,
    /// Epochs the weights were trained for (0 if unknown).
    pub epoch: u64,
    /// Class names by label, if the file records them.
    pub classes: Vec<String>,
    /// All of it, for resuming a run.
    pub metadata: Metadata,
    /// Tensors of the file that the model does not have, when allowed.
    pub ignored: Vec<String>,
}
