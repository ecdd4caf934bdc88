//! The training loop: Keras's `fit` with what Keras leaves to the user —
//! progress, a metrics file, learning curves, checkpoints every epoch,
//! early stopping, resuming (mid-epoch too), and stopping cleanly when asked
//! to (Ctrl-C) or when the loss is no longer a number.

use super::checkpoint::{self, CheckpointError, Metadata, OptimizerState, Problem, Tensor};
use super::data::{Dataset, Splits};
use super::engine::{Engine, Graphs, Step};
use super::metrics::{EpochMetrics, MetricsLog};
use super::rng::Rng;
use super::{Error, dropout_masks, initial_weights, optim, purpose};
use crate::parse::ast::{Loss, Optimizer};
use crate::shape::Checked;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{ArrayD, IxDyn};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// Everything a run needs beyond the model, resolved from the training
/// block, the flags and the defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    pub optimizer: Optimizer,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    pub patience: Option<usize>,
    /// Where weights, optimizer state, metrics and the plot go.
    pub out_dir: PathBuf,
    pub resume: bool,
}

/// The files a run writes, inside `Settings::out_dir`.
pub struct Files {
    pub weights: PathBuf,
    /// The best epoch's weights, kept for early stopping while later epochs
    /// overwrite `weights`.
    pub best: PathBuf,
    pub metrics: PathBuf,
    pub plot: PathBuf,
}

impl Files {
    pub fn new(out_dir: &Path) -> Files {
        Files {
            weights: out_dir.join("weights.safetensors"),
            best: out_dir.join("weights.best.safetensors"),
            metrics: out_dir.join("metrics.jsonl"),
            plot: out_dir.join("learning_curves.png"),
        }
    }
}

/// The model's variables: its weights (and moving statistics), then the
/// optimizer's slots, in the training routine's order.
pub struct State {
    pub values: Vec<ArrayD<f32>>,
    /// How many of `values` are the model's own weights.
    pub weights: usize,
    pub iterations: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// How far the next epoch has got: nowhere, unless it was interrupted.
    pub progress: Progress,
}

/// How far an epoch has got. An interrupted epoch saves it with the
/// weights, so that the resumed run continues the epoch at its next step
/// and reports metrics over the whole of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// The training loss summed over the samples seen.
    pub loss_sum: f64,
    /// Samples seen, and how many of them were classified correctly.
    pub seen: usize,
    pub correct: usize,
    /// Training time, validation aside.
    pub seconds: f64,
}

impl State {
    pub fn new(checked: &Checked, graphs: &Graphs, seed: u64) -> State {
        let mut values = initial_weights::<f32>(checked, seed);
        let weights = values.len();
        values.extend(
            graphs.train.vars[weights..]
                .iter()
                .map(|v| ArrayD::zeros(IxDyn(&v.shape))),
        );
        State {
            values,
            weights,
            iterations: 0,
            epoch: 0,
            progress: Progress::default(),
        }
    }
}

/// Loss and accuracy over a whole split.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    /// NaN for a regression loss, which has no accuracy.
    pub accuracy: f64,
    pub n: usize,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Predicted classes: the arg-max of each row, or the sigmoid threshold at
/// 0.5 for a single unit.
pub fn classes_of(prediction: &ArrayD<f32>) -> Vec<usize> {
    let width = prediction.shape().last().copied().unwrap_or(1);
    let flat: Vec<f32> = prediction.iter().copied().collect();
    flat.chunks(width.max(1))
        .map(|row| match row {
            [p] => usize::from(*p > 0.5),
            _ => {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                    )
                    .0
            }
        })
        .collect()
}

fn has_accuracy(checked: &Checked) -> bool {
    checked.loss() != Loss::MeanSquaredError
}

/// Evaluates `data` in batches: loss, accuracy and confusion matrix.
pub fn evaluate(
    checked: &Checked,
    engine: &mut dyn Engine,
    state: &mut State,
    data: &Dataset,
    batch_size: usize,
) -> Result<Evaluation, Error> {
    let classes = data.outputs.max(2);
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut loss, mut n) = (0.0f64, 0usize);
    let order: Vec<usize> = (0..data.len()).collect();
    for chunk in order.chunks(batch_size.max(1)) {
        let batch = data.batch(chunk);
        let out = engine.evaluate(
            &mut state.values[..state.weights],
            &Step::plain(batch.inputs.view(), Some(batch.targets.view())),
        )?;
        loss += f64::from(out.loss) * chunk.len() as f64;
        n += chunk.len();
        for (&i, p) in chunk.iter().zip(classes_of(&out.prediction)) {
            if let Some(row) = confusion.get_mut(data.labels[i]) {
                row[p.min(classes - 1)] += 1;
            }
        }
    }
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let accuracy = if has_accuracy(checked) {
        correct as f64 / n.max(1) as f64
    } else {
        f64::NAN
    };
    Ok(Evaluation {
        loss: loss / n.max(1) as f64,
        accuracy,
        n,
        confusion,
    })
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    Completed,
    /// Early stopping: no better validation loss for `patience` epochs.
    EarlyStopped {
        best_epoch: u64,
    },
    /// Stopped when asked to, after a step, and saved.
    Interrupted,
}

pub struct Report {
    pub ending: Ending,
    pub test: Option<Evaluation>,
    pub epochs: Vec<EpochMetrics>,
}

/// Trains `checked` on `splits` with `engine`, writing to `out` one line per
/// epoch and to `Settings::out_dir` the checkpoints, metrics and plot.
/// `stop` is asked after every step whether to save and stop there.
pub fn train(
    checked: &Checked,
    splits: &Splits,
    settings: &Settings,
    graphs: &Graphs,
    engine: &mut dyn Engine,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<Report, Error> {
    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|e| Error::Message(format!("cannot create `{}`: {e}", settings.out_dir.display())))?;
    let run = Run {
        checked,
        settings,
        graphs,
        files: Files::new(&settings.out_dir),
        classes: &splits.classes,
    };
    let train = &splits.train;
    let steps = train.len().div_ceil(settings.batch_size);
    let mut state = State::new(checked, graphs, settings.seed);
    let mut stopping = settings.patience.map(EarlyStopping::new);
    let mut log = MetricsLog::create(&run.files.metrics);
    let mut ending = Ending::Completed;
    // The epoch and step of the weights on disk, named if the loss diverges.
    let mut saved = None;
    if settings.resume {
        run.resume(&mut state, stopping.as_mut())?;
        log = MetricsLog::resume(&run.files.metrics, state.epoch)?;
        saved = Some((state.epoch, state.progress.step));
        let stopped_early = stopping
            .as_ref()
            .filter(|s| s.exhausted(state.epoch))
            .and_then(EarlyStopping::best_epoch);
        if let Some(best_epoch) = stopped_early {
            let _ = writeln!(
                out,
                "the run stopped early after epoch {}, val_loss not having improved since epoch {best_epoch}: \
                 nothing to train; raise --patience to continue",
                state.epoch
            );
            ending = Ending::EarlyStopped { best_epoch };
        } else if state.epoch >= settings.epochs as u64 {
            let _ = writeln!(
                out,
                "the run has already trained {} epochs (--epochs {}): nothing to train; raise --epochs to continue",
                state.epoch, settings.epochs
            );
        } else if state.progress.step > 0 {
            let _ = writeln!(
                out,
                "resuming epoch {} of {} after step {} of {steps}",
                state.epoch + 1,
                settings.epochs,
                state.progress.step
            );
        } else {
            let _ = writeln!(out, "resuming after epoch {} of {}", state.epoch, settings.epochs);
        }
    }
    let val = splits.val.as_ref().or(splits.test.as_ref());
    if splits.val.is_none() && splits.test.is_some() {
        let _ = writeln!(
            out,
            "validating on the test split (the data has no val/ folder and no validation_split)"
        );
    }
    while ending == Ending::Completed && state.epoch < settings.epochs as u64 {
        let epoch = state.epoch + 1;
        let started = Instant::now();
        let mut done = std::mem::take(&mut state.progress);
        let earlier = done.seconds;
        let bar = progress_bar(epoch, settings.epochs, steps);
        bar.set_position(done.step as u64);
        // The steps done before an interrupt took no time in this run.
        bar.reset_eta();
        let mut shuffle = Rng::stream(settings.seed.wrapping_add(epoch), purpose::SHUFFLE);
        let mut dropout = Rng::stream(settings.seed.wrapping_add(epoch), purpose::DROPOUT);
        let order = train.epoch_order(&mut shuffle);
        let mut batches = order.chunks(settings.batch_size);
        // Draws the masks of the steps done before an interrupt again, and
        // drops them, so that the rest of the epoch gets the masks it would
        // have got without the interrupt.
        for chunk in batches.by_ref().take(done.step) {
            dropout_masks::<f32>(&graphs.train, chunk.len(), &mut dropout);
        }
        let mut interrupted = false;
        for chunk in batches {
            let batch = train.batch(chunk);
            let masks = dropout_masks::<f32>(&graphs.train, chunk.len(), &mut dropout);
            let iterations = state.iterations;
            let hyper = |h| optim::hyper(&settings.optimizer, iterations, h);
            let outcome = engine.train_step(
                &mut state.values,
                &Step {
                    inputs: batch.inputs.view(),
                    targets: Some(batch.targets.view()),
                    masks: &masks,
                    hyper: &hyper,
                },
            )?;
            if !outcome.loss.is_finite() {
                bar.abandon();
                return Err(diverged(
                    outcome.loss,
                    epoch,
                    done.step + 1,
                    settings,
                    &run.files,
                    saved,
                ));
            }
            state.iterations += 1;
            done.step += 1;
            done.loss_sum += f64::from(outcome.loss) * chunk.len() as f64;
            done.seen += chunk.len();
            done.correct += chunk
                .iter()
                .zip(classes_of(&outcome.prediction))
                .filter(|&(&i, p)| train.labels[i] == p)
                .count();
            done.seconds = earlier + started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.4}  accuracy {:.4}  {:.0} samples/s",
                done.loss_sum / done.seen as f64,
                done.correct as f64 / done.seen as f64,
                done.seen as f64 / done.seconds.max(1e-9)
            ));
            bar.inc(1);
            if stop() {
                interrupted = true;
                break;
            }
        }
        bar.finish_and_clear();
        if interrupted {
            let step = done.step;
            state.progress = done;
            run.save(&state, stopping.as_ref())?;
            let _ = writeln!(
                out,
                "interrupted at step {step} of {steps} of epoch {epoch}: saved to {} (--resume continues at the next step)",
                run.files.weights.display()
            );
            ending = Ending::Interrupted;
            break;
        }
        let validation = val
            .map(|v| evaluate(checked, engine, &mut state, v, settings.batch_size))
            .transpose()?;
        state.epoch = epoch;
        let accuracy = if has_accuracy(checked) {
            done.correct as f64 / done.seen.max(1) as f64
        } else {
            f64::NAN
        };
        let metrics = EpochMetrics {
            epoch,
            loss: done.loss_sum / done.seen.max(1) as f64,
            accuracy,
            val_loss: validation.as_ref().map(|v| v.loss),
            val_accuracy: validation.as_ref().map(|v| v.accuracy),
            seconds: earlier + started.elapsed().as_secs_f64(),
            samples_per_sec: done.seen as f64 / done.seconds.max(1e-9),
        };
        let _ = writeln!(out, "{}", epoch_line(&metrics, settings.epochs));
        let stop_early = match (&mut stopping, &validation) {
            (Some(s), Some(v)) => s.update(epoch, v.loss, &state.values[..state.weights]),
            _ => false,
        };
        log.record(metrics)?;
        super::plot::write_learning_curves(&run.files.plot, &checked.model.name, log.epochs())?;
        run.save(&state, stopping.as_ref())?;
        saved = Some((epoch, 0));
        // After the weights, which record the best epoch: see `Run::resume`.
        if let Some(best) = stopping
            .as_ref()
            .and_then(|s| s.best.as_ref())
            .filter(|b| b.epoch == epoch)
        {
            run.save_best(best)?;
        }
        if stop_early && let Some(s) = &stopping {
            let best_epoch = s.best_epoch().unwrap_or(epoch);
            let _ = writeln!(
                out,
                "early stopping: val_loss has not improved for {} epochs since epoch {best_epoch}",
                s.patience
            );
            ending = Ending::EarlyStopped { best_epoch };
        }
    }
    // Compared rather than assumed: a resumed run may find them restored.
    if ending != Ending::Interrupted
        && let Some(best) = stopping.as_ref().and_then(|s| s.best.as_ref())
        && state.values[..state.weights] != best.weights[..]
    {
        state.values[..state.weights].clone_from_slice(&best.weights);
        run.save(&state, stopping.as_ref())?;
        let _ = writeln!(out, "restored the best weights, from epoch {}", best.epoch);
    }
    let test = match (&splits.test, &ending) {
        (Some(t), Ending::Completed | Ending::EarlyStopped { .. }) => {
            Some(evaluate(checked, engine, &mut state, t, settings.batch_size)?)
        }
        _ => None,
    };
    Ok(Report {
        ending,
        test,
        epochs: log.epochs().to_vec(),
    })
}

/// Keras's `EarlyStopping(monitor="val_loss", patience=p,
/// restore_best_weights=True)`: stop once `patience` epochs in a row bring
/// no lower validation loss, keeping the best epoch's weights.
pub struct EarlyStopping {
    pub patience: usize,
    /// The epoch of the lowest validation loss so far.
    pub best: Option<Best>,
}

/// An epoch's validation loss and the weights it ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct Best {
    pub epoch: u64,
    pub val_loss: f64,
    pub weights: Vec<ArrayD<f32>>,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> EarlyStopping {
        EarlyStopping { patience, best: None }
    }

    /// Records an epoch's validation loss; true when training should stop.
    pub fn update(&mut self, epoch: u64, val_loss: f64, weights: &[ArrayD<f32>]) -> bool {
        if self.best.as_ref().is_some_and(|b| val_loss >= b.val_loss) {
            return self.exhausted(epoch);
        }
        self.best = Some(Best {
            epoch,
            val_loss,
            weights: weights.to_vec(),
        });
        false
    }

    /// Whether the epochs up to `epoch` have used up the patience.
    pub fn exhausted(&self, epoch: u64) -> bool {
        self.best_epoch()
            .is_some_and(|e| epoch.saturating_sub(e) >= self.patience as u64)
    }

    pub fn best_epoch(&self) -> Option<u64> {
        self.best.as_ref().map(|b| b.epoch)
    }
}

fn progress_bar(epoch: u64, epochs: usize, steps: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len}  {msg}  ETA {eta}")
        .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let mut s = format!("epoch {}/{epochs}: loss {:.4}", m.epoch, m.loss);
    if !m.accuracy.is_nan() {
        s += &format!(" - accuracy {:.4}", m.accuracy);
    }
    if let Some(v) = m.val_loss {
        s += &format!(" - val_loss {v:.4}");
    }
    if let Some(v) = m.val_accuracy.filter(|v| !v.is_nan()) {
        s += &format!(" - val_accuracy {v:.4}");
    }
    s + &format!(" ({:.1} s, {:.0} samples/s)", m.seconds, m.samples_per_sec)
}

/// `saved` is the epochs and further steps of the weights on disk.
fn diverged(
    loss: f32,
    epoch: u64,
    step: usize,
    settings: &Settings,
    files: &Files,
    saved: Option<(u64, usize)>,
) -> Error {
    let lr = settings.optimizer.learning_rate();
    let path = files.weights.display();
    let kept = match saved {
        None => "no epoch had completed, so no weights were saved".to_string(),
        Some((done, 0)) => format!("the weights of epoch {done}, the last good ones, are in {path}"),
        Some((done, steps)) => format!(
            "the weights of epoch {} up to step {steps}, the last good ones, are in {path}",
            done + 1
        ),
    };
    Error::Message(format!(
        "the loss became {loss} at epoch {epoch}, step {step}: training diverged\n  = note: {kept}\n  = help: \
         try a lower learning rate, e.g. `--lr {}`",
        compact(lr / 10.0)
    ))
}

/// A hyperparameter as a person writes it, to at most 3 significant
/// digits: `0.001`, `3.5e-7`, `1e29`.
pub fn compact(x: f64) -> String {
    // Rounding through decimal digits: `1e30 / 10` is 1.0000000000000001e29.
    let x: f64 = format!("{x:.2e}").parse().unwrap_or(x);
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A run's model, settings and files: what saving and resuming need
/// besides the state.
struct Run<'a> {
    checked: &'a Checked,
    settings: &'a Settings,
    graphs: &'a Graphs,
    files: Files,
    classes: &'a [String],
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
    fn save(&self, state: &State, stopping: Option<&EarlyStopping>) -> Result<(), Error> {
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

    fn save_best(&self, best: &Best) -> Result<(), Error> {
        checkpoint::save(
            &self.files.best,
            &self.tensors(0, &best.weights),
            &self.metadata(best.epoch),
        )?;
        Ok(())
    }

    /// Loads the last checkpoint into `state`, and its best epoch into
    /// `stopping`.
    fn resume(&self, state: &mut State, stopping: Option<&mut EarlyStopping>) -> Result<(), Error> {
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
    let expected: Vec<(&str, &[usize])> = graphs.train.vars[..weights]
        .iter()
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let loaded = checkpoint::load(path, &expected)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(v: f32) -> Vec<ArrayD<f32>> {
        vec![ArrayD::from_elem(IxDyn(&[2]), v)]
    }

    #[test]
    fn early_stopping_waits_patience_epochs_and_keeps_the_best() {
        let mut stop = EarlyStopping::new(2);
        assert!(!stop.update(1, 0.9, &weights(1.0)));
        assert!(!stop.update(2, 0.5, &weights(2.0)));
        // Not lower (equal counts as no improvement, as in Keras).
        assert!(!stop.update(3, 0.5, &weights(3.0)));
        assert!(stop.update(4, 0.7, &weights(4.0)), "two epochs without improvement");
        let best = stop.best.as_ref().unwrap();
        assert_eq!((best.epoch, best.val_loss), (2, 0.5));
        assert_eq!(best.weights[0][[0]], 2.0);
    }

    #[test]
    fn an_improvement_resets_the_wait() {
        let mut stop = EarlyStopping::new(2);
        assert!(!stop.update(1, 1.0, &weights(1.0)));
        assert!(!stop.update(2, 1.1, &weights(2.0)));
        assert!(!stop.update(3, 0.8, &weights(3.0)));
        assert!(!stop.update(4, 0.9, &weights(4.0)));
        assert!(stop.update(5, 0.85, &weights(5.0)));
        assert_eq!(stop.best_epoch(), Some(3));
    }

    #[test]
    fn patience_is_used_up_counting_from_the_best_epoch() {
        let mut stop = EarlyStopping::new(2);
        assert!(!stop.exhausted(4), "no best epoch yet");
        stop.update(3, 0.5, &weights(3.0));
        assert!(!stop.exhausted(4));
        assert!(stop.exhausted(5));
    }

    #[test]
    fn hyperparameters_print_with_at_most_three_significant_digits() {
        for (x, shown) in [
            (1e30 / 10.0, "1e29"),
            (0.0001, "0.0001"),
            (3.5e-7, "3.5e-7"),
            (0.001, "0.001"),
            (1.23456, "1.23"),
            (0.0001 / 10.0, "1e-5"),
            (999_999.0, "1e6"),
            (0.0, "0"),
        ] {
            assert_eq!(compact(x), shown, "{x:e}");
        }
    }
}
