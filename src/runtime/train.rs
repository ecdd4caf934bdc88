//! The training loop: Keras's `fit` with what Keras leaves to the user —
//! progress, a metrics file, learning curves, checkpoints every epoch,
//! early stopping, resuming, and stopping cleanly on Ctrl-C or a loss that
//! is no longer a number.

use super::checkpoint::{self, OptimizerState, Tensor};
use super::data::{Dataset, Splits};
use super::engine::{Engine, Routines, Step};
use super::metrics::{EpochMetrics, MetricsLog};
use super::rng::Rng;
use super::{Error, dropout_masks, initial_weights, optim, purpose};
use crate::parse::ast::{Loss, Optimizer};
use crate::shape::Checked;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{ArrayD, IxDyn};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
    pub metrics: PathBuf,
    pub plot: PathBuf,
}

impl Files {
    pub fn new(out_dir: &Path) -> Files {
        Files {
            weights: out_dir.join("weights.safetensors"),
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
}

impl State {
    pub fn new(checked: &Checked, routines: &Routines, seed: u64) -> State {
        let mut values = initial_weights::<f32>(checked, seed);
        let weights = values.len();
        values.extend(
            routines.train.vars[weights..]
                .iter()
                .map(|v| ArrayD::zeros(IxDyn(&v.shape))),
        );
        State {
            values,
            weights,
            iterations: 0,
            epoch: 0,
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
    /// Ctrl-C: stopped after a step and saved.
    Interrupted,
}

pub struct Report {
    pub ending: Ending,
    pub test: Option<Evaluation>,
    pub epochs: Vec<EpochMetrics>,
}

/// Trains `checked` on `splits` with `engine`, writing to `out` one line per
/// epoch and to `Settings::out_dir` the checkpoints, metrics and plot.
pub fn train(
    checked: &Checked,
    splits: &Splits,
    settings: &Settings,
    routines: &Routines,
    engine: &mut dyn Engine,
    out: &mut dyn Write,
    interrupted: &AtomicBool,
) -> Result<Report, Error> {
    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|e| Error::Message(format!("cannot create `{}`: {e}", settings.out_dir.display())))?;
    let files = Files::new(&settings.out_dir);
    let mut state = State::new(checked, routines, settings.seed);
    let mut log = MetricsLog::create(&files.metrics);
    if settings.resume {
        resume(routines, settings, &files, &mut state)?;
        log = MetricsLog::resume(&files.metrics, state.epoch)?;
        if state.epoch >= settings.epochs as u64 {
            let _ = writeln!(
                out,
                "the run has already trained {} epochs (--epochs {}): nothing to train; raise --epochs to continue",
                state.epoch, settings.epochs
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
    let mut stopping = settings.patience.map(EarlyStopping::new);
    let mut ending = Ending::Completed;
    let train = &splits.train;
    let steps = train.len().div_ceil(settings.batch_size);
    while state.epoch < settings.epochs as u64 {
        let epoch = state.epoch + 1;
        let started = Instant::now();
        let bar = progress_bar(epoch, settings.epochs, steps);
        let mut shuffle = Rng::stream(settings.seed.wrapping_add(epoch), purpose::SHUFFLE);
        let mut dropout = Rng::stream(settings.seed.wrapping_add(epoch), purpose::DROPOUT);
        let order = train.epoch_order(&mut shuffle);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (step, chunk) in order.chunks(settings.batch_size).enumerate() {
            let batch = train.batch(chunk);
            let masks = dropout_masks::<f32>(&routines.train, chunk.len(), &mut dropout);
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
                return Err(diverged(outcome.loss, epoch, step + 1, settings, &files, state.epoch));
            }
            state.iterations += 1;
            loss_sum += f64::from(outcome.loss) * chunk.len() as f64;
            seen += chunk.len();
            correct += chunk
                .iter()
                .zip(classes_of(&outcome.prediction))
                .filter(|&(&i, p)| train.labels[i] == p)
                .count();
            let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4}  accuracy {:.4}  {:.0} samples/s",
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                rate
            ));
            bar.inc(1);
            if interrupted.load(Ordering::Relaxed) {
                break;
            }
        }
        bar.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();
        if interrupted.load(Ordering::Relaxed) {
            // The epoch is incomplete: save the weights, count it as not done.
            save(checked, settings, &files, &state, routines, &splits.classes)?;
            let _ = writeln!(
                out,
                "interrupted during epoch {epoch}: weights saved to {} (--resume repeats epoch {epoch})",
                files.weights.display()
            );
            ending = Ending::Interrupted;
            break;
        }
        let validation = val
            .map(|v| evaluate(checked, engine, &mut state, v, settings.batch_size))
            .transpose()?;
        state.epoch = epoch;
        let accuracy = if has_accuracy(checked) {
            correct as f64 / seen.max(1) as f64
        } else {
            f64::NAN
        };
        let metrics = EpochMetrics {
            epoch,
            loss: loss_sum / seen.max(1) as f64,
            accuracy,
            val_loss: validation.as_ref().map(|v| v.loss),
            val_accuracy: validation.as_ref().map(|v| v.accuracy),
            seconds: started.elapsed().as_secs_f64(),
            samples_per_sec: seen as f64 / train_seconds.max(1e-9),
        };
        let _ = writeln!(out, "{}", epoch_line(&metrics, settings.epochs));
        log.record(metrics)?;
        super::plot::write_learning_curves(&files.plot, &checked.model.name, log.epochs())?;
        save(checked, settings, &files, &state, routines, &splits.classes)?;

        if let (Some(stop), Some(v)) = (&mut stopping, &validation)
            && stop.update(epoch, v.loss, &state.values[..state.weights])
        {
            let best_epoch = stop.best_epoch().unwrap_or(epoch);
            let _ = writeln!(
                out,
                "early stopping: val_loss has not improved for {} epochs since epoch {best_epoch}",
                stop.patience
            );
            ending = Ending::EarlyStopped { best_epoch };
            break;
        }
    }
    if let Some((best_epoch, weights)) = stopping.as_ref().and_then(EarlyStopping::best)
        && best_epoch != state.epoch
        && ending != Ending::Interrupted
    {
        state.values[..state.weights].clone_from_slice(weights);
        save(checked, settings, &files, &state, routines, &splits.classes)?;
        let _ = writeln!(out, "restored the best weights, from epoch {best_epoch}");
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
    best: Option<(f64, u64, Vec<ArrayD<f32>>)>,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> EarlyStopping {
        EarlyStopping { patience, best: None }
    }

    /// Records an epoch's validation loss; true when training should stop.
    pub fn update(&mut self, epoch: u64, val_loss: f64, weights: &[ArrayD<f32>]) -> bool {
        match &self.best {
            Some((loss, _, _)) if val_loss >= *loss => {
                self.best_epoch().is_some_and(|e| epoch - e >= self.patience as u64)
            }
            _ => {
                self.best = Some((val_loss, epoch, weights.to_vec()));
                false
            }
        }
    }

    pub fn best_epoch(&self) -> Option<u64> {
        self.best.as_ref().map(|b| b.1)
    }

    /// The best epoch and its weights.
    pub fn best(&self) -> Option<(u64, &[ArrayD<f32>])> {
        self.best.as_ref().map(|(_, e, w)| (*e, w.as_slice()))
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

fn diverged(loss: f32, epoch: u64, step: usize, settings: &Settings, files: &Files, done: u64) -> Error {
    let lr = settings.optimizer.learning_rate();
    let kept = if done > 0 {
        format!(
            "the weights of epoch {done}, the last good ones, are in {}",
            files.weights.display()
        )
    } else {
        "no epoch had completed, so no weights were saved".to_string()
    };
    Error::Message(format!(
        "the loss became {loss} at epoch {epoch}, step {step}: training diverged\n  = note: {kept}\n  = help: \
         try a lower learning rate, e.g. `--lr {}`",
        compact(lr / 10.0)
    ))
}

/// A hyperparameter as a person writes it: `0.001`, `1e-7`, `1e30`.
pub fn compact(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn optimizer_name(o: &Optimizer) -> &'static str {
    match o {
        Optimizer::Sgd { .. } => "sgd",
        Optimizer::Adam { .. } => "adam",
    }
}

/// Writes the weights (Keras names and layouts) and, beside them, the
/// optimizer state, each atomically.
pub fn save(
    checked: &Checked,
    settings: &Settings,
    files: &Files,
    state: &State,
    routines: &Routines,
    classes: &[String],
) -> Result<(), Error> {
    let tensors = |range: std::ops::Range<usize>| -> Vec<Tensor> {
        range
            .map(|i| Tensor {
                name: routines.train.vars[i].name.clone(),
                shape: routines.train.vars[i].shape.clone(),
                data: state.values[i].iter().copied().collect(),
            })
            .collect()
    };
    let metadata = [
        ("format".to_string(), "cnnc".to_string()),
        ("model".to_string(), checked.model.name.clone()),
        ("epoch".to_string(), state.epoch.to_string()),
        // `cnnc predict` names its answers with these.
        ("classes".to_string(), serde_json::json!(classes).to_string()),
    ]
    .into_iter()
    .collect();
    checkpoint::save(&files.weights, &tensors(0..state.weights), &metadata)?;
    checkpoint::save_optimizer(
        &files.weights,
        &OptimizerState {
            optimizer: optimizer_name(&settings.optimizer).into(),
            iterations: state.iterations,
            epoch: state.epoch,
            seed: settings.seed,
            slots: tensors(state.weights..state.values.len()),
        },
    )?;
    Ok(())
}

/// Loads the model's weights from a safetensors file, in `State` order.
pub fn load_weights(path: &Path, routines: &Routines, weights: usize) -> Result<Loaded, Error> {
    let expected: Vec<(&str, &[usize])> = routines.train.vars[..weights]
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
    Ok(Loaded { values, epoch, classes })
}

/// Weights read from a file, with what cnnc stored beside them.
pub struct Loaded {
    pub values: Vec<ArrayD<f32>>,
    /// Epochs the weights were trained for (0 if unknown).
    pub epoch: u64,
    /// Class names by label, if the file records them.
    pub classes: Vec<String>,
}

fn resume(routines: &Routines, settings: &Settings, files: &Files, state: &mut State) -> Result<(), Error> {
    let Loaded { values, epoch, .. } = load_weights(&files.weights, routines, state.weights)?;
    state.values[..state.weights].clone_from_slice(&values);
    let slots: Vec<(&str, &[usize])> = routines.train.vars[state.weights..]
        .iter()
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let opt = checkpoint::load_optimizer(&files.weights, optimizer_name(&settings.optimizer), epoch, &slots)?;
    for (slot, value) in opt.slots.into_iter().zip(&mut state.values[state.weights..]) {
        *value = ArrayD::from_shape_vec(IxDyn(&slot.shape), slot.data)
            .map_err(|e| Error::Message(format!("optimizer state: {e}")))?;
    }
    state.iterations = opt.iterations;
    state.epoch = epoch;
    Ok(())
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
        let (epoch, w) = stop.best().unwrap();
        assert_eq!(epoch, 2);
        assert_eq!(w[0][[0]], 2.0);
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
}
