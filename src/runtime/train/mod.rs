//! The training loop: Keras's `fit` with what Keras leaves to the user —
//! progress, a metrics file, learning curves, checkpoints every epoch,
//! early stopping, resuming (mid-epoch too), and stopping cleanly when asked
//! to (Ctrl-C) or when the loss is no longer a number.

mod divergence;
mod early_stopping;
mod evaluate;
mod fingerprint;
mod folder;
mod hints;
mod progress;
mod resume;
mod transfer;

pub use early_stopping::{Best, EarlyStopping};
pub use evaluate::{Evaluation, classes_of, evaluate, has_accuracy};
pub use fingerprint::class_changes;
pub use progress::epoch_line;
pub use resume::{Held, Loaded, held, load_some_weights, load_weights};
pub use transfer::{Initial, Start, initial_from};

use super::data::{Dataset, Splits, augment};
use super::engine::{Engine, Graphs, Step};
use super::metrics::{EpochMetrics, MetricsLog};
use super::rng::Rng;
use super::{Error, dropout_masks, initial_weights, optim, purpose};
use crate::parse::ast::{Augment, Optimizer};
use crate::shape::Checked;
use fingerprint::Fingerprint;
use ndarray::{ArrayD, IxDyn};
use resume::Run;
use std::io::Write;
use std::path::{Path, PathBuf};
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
    /// Random flips, rotations and shifts of the training images.
    pub augment: Option<Augment>,
    /// The fraction of the training data the splits were cut with, if any:
    /// recorded with the data's fingerprint.
    pub validation_split: Option<f64>,
    /// The run folder: where the checkpoint, weights, metrics and the plot go.
    pub out_dir: PathBuf,
    pub resume: bool,
    /// Start over in a folder that holds a run, replacing it. Without it
    /// (or `resume`), such a folder is refused: its run is someone's work.
    pub force: bool,
    /// The weights to start from instead of the initializers, in `State`
    /// order (`--init`); a resumed run starts from its checkpoint instead.
    pub initial: Option<Vec<ArrayD<f32>>>,
}

/// The files a run writes, inside `Settings::out_dir`.
pub struct Files {
    /// All a resumed run needs, committed as one file: see `resume`.
    pub checkpoint: PathBuf,
    /// The weights alone, for `eval`, `predict`, `export` and Keras.
    pub weights: PathBuf,
    /// The best epoch's weights, kept for early stopping while later epochs
    /// overwrite `weights`.
    pub best: PathBuf,
    pub metrics: PathBuf,
    pub plot: PathBuf,
    /// Held locked while a run writes the folder.
    pub lock: PathBuf,
}

impl Files {
    pub fn new(out_dir: &Path) -> Files {
        Files {
            checkpoint: out_dir.join("checkpoint.safetensors"),
            weights: out_dir.join("weights.safetensors"),
            best: out_dir.join("weights.best.safetensors"),
            metrics: out_dir.join("metrics.jsonl"),
            plot: out_dir.join("learning_curves.png"),
            lock: out_dir.join("run.lock"),
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
    let files = Files::new(&settings.out_dir);
    // Before claiming the folder, so that a mistaken --resume leaves none.
    if settings.resume && !files.checkpoint.is_file() {
        return Err(resume::nothing_to_resume(&settings.out_dir, &files));
    }
    // Held to the end of the run, and released by the system whenever the
    // process ends.
    let _lock = folder::claim(&settings.out_dir, &files)?;
    // Under the lock: no other run can finish one here meanwhile.
    if !settings.resume
        && !settings.force
        && let Some(held) = resume::held(&files, graphs)
    {
        return Err(resume::already_held(&settings.out_dir, &held));
    }
    let run = Run {
        checked,
        settings,
        graphs,
        files,
        classes: &splits.classes,
        data: Fingerprint::of(splits, settings.validation_split),
    };
    let state = State::new(checked, graphs, settings.seed);
    let mut fit = Fit {
        steps: splits.train.len().div_ceil(settings.batch_size),
        start: divergence::Start::of(&state, &graphs.train.vars),
        state,
        stopping: settings.patience.map(EarlyStopping::new),
        log: MetricsLog::create(&run.files.metrics),
        saved: None,
        hinted: false,
        run,
        engine,
        out,
    };
    if let Some(initial) = &settings.initial {
        for (value, start) in fit.state.values.iter_mut().zip(initial) {
            value.clone_from(start);
        }
    }
    let mut ending = if settings.resume {
        fit.resume()?
    } else {
        if fit.run.files.checkpoint.is_file() {
            let dir = settings.out_dir.display();
            fit.say(format_args!(
                "starting over in `{dir}`: its checkpoint is replaced at the first save (--resume continues it instead)"
            ));
        }
        Ending::Completed
    };
    let val = splits.val.as_ref().or(splits.test.as_ref());
    if splits.val.is_none() && splits.test.is_some() {
        fit.say(format_args!(
            "validating on the test split (the data has no val/ folder and no validation_split)"
        ));
    }
    if val.is_none() {
        let patience = match settings.patience {
            Some(_) => "; early stopping, which watches val_loss, is off",
            None => "",
        };
        fit.say(format_args!(
            "no validation data: the data has no val/ or test/ folder and no validation_split, so only the training \
             loss and accuracy are measured{patience} (a validation_split of 0.1 in the training block, or \
             --validation-split 0.1, keeps a tenth of the training data aside to validate on)"
        ));
    }
    while ending == Ending::Completed && fit.state.epoch < settings.epochs as u64 {
        ending = fit.epoch(&splits.train, val, stop)?;
    }
    if ending != Ending::Interrupted {
        fit.restore_best()?;
    }
    let test = match (&splits.test, &ending) {
        (Some(t), Ending::Completed | Ending::EarlyStopped { .. }) => Some(fit.evaluate(t)?),
        _ => None,
    };
    Ok(Report {
        ending,
        test,
        epochs: fit.log.epochs().to_vec(),
    })
}

/// A run under way: its state and where it reports.
struct Fit<'a> {
    run: Run<'a>,
    engine: &'a mut dyn Engine,
    out: &'a mut dyn Write,
    steps: usize,
    state: State,
    stopping: Option<EarlyStopping>,
    log: MetricsLog,
    /// The epoch and step of the weights on disk, named if the loss diverges.
    saved: Option<(u64, usize)>,
    /// The weights as the run began, described if the loss diverges.
    start: divergence::Start,
    /// Whether the batchnorm hint was given: once a run is enough.
    hinted: bool,
}

impl Fit<'_> {
    fn say(&mut self, line: std::fmt::Arguments) {
        // The run's results are its files: a closed terminal must not stop it.
        let _ = writeln!(self.out, "{line}");
    }

    fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation, Error> {
        let batch_size = self.run.settings.batch_size;
        evaluate(self.run.checked, self.engine, &mut self.state, data, batch_size)
    }

    /// Loads the checkpoint, says where the run continues, and whether it
    /// has anything left to do.
    fn resume(&mut self) -> Result<Ending, Error> {
        self.run.resume(&mut self.state, self.stopping.as_mut())?;
        let (epoch, step) = (self.state.epoch, self.state.progress.step);
        self.log = MetricsLog::resume(&self.run.files.metrics, epoch)?;
        self.saved = Some((epoch, step));
        self.start = divergence::Start::of(&self.state, &self.run.graphs.train.vars);
        let epochs = self.run.settings.epochs;
        let stopped_early = self
            .stopping
            .as_ref()
            .filter(|s| s.exhausted(epoch))
            .and_then(EarlyStopping::best_epoch);
        if let Some(best_epoch) = stopped_early {
            self.say(format_args!(
                "the run stopped early after epoch {epoch}, val_loss not having improved since epoch {best_epoch}: \
                 nothing to train; raise --patience to continue"
            ));
            return Ok(Ending::EarlyStopped { best_epoch });
        }
        if epoch >= epochs as u64 {
            self.say(format_args!(
                "the run has already trained {epoch} epochs (--epochs {epochs}): nothing to train; raise --epochs to continue"
            ));
        } else if step > 0 {
            let steps = self.steps;
            self.say(format_args!(
                "resuming epoch {} of {epochs} after step {step} of {steps}",
                epoch + 1
            ));
        } else {
            self.say(format_args!("resuming after epoch {epoch} of {epochs}"));
        }
        Ok(Ending::Completed)
    }

    /// Trains the next epoch (or the rest of an interrupted one), then
    /// validates, records and saves it.
    fn epoch(&mut self, train: &Dataset, val: Option<&Dataset>, stop: &dyn Fn() -> bool) -> Result<Ending, Error> {
        let epoch = self.state.epoch + 1;
        let started = Instant::now();
        let mut done = std::mem::take(&mut self.state.progress);
        let earlier = done.seconds;
        let interrupted = self.steps_of(train, epoch, &mut done, stop)?;
        if interrupted {
            let step = done.step;
            self.state.progress = done;
            self.run.save(&self.state, self.stopping.as_ref())?;
            let (steps, path) = (self.steps, self.run.files.checkpoint.display().to_string());
            self.say(format_args!(
                "interrupted at step {step} of {steps} of epoch {epoch}: saved to {path} (--resume continues at the next step)"
            ));
            return Ok(Ending::Interrupted);
        }
        let validation = val.map(|v| self.evaluate(v)).transpose()?;
        self.state.epoch = epoch;
        let accuracy = if has_accuracy(self.run.checked) {
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
        let line = epoch_line(&metrics, self.run.settings.epochs);
        self.say(format_args!("{line}"));
        if !self.hinted
            && let Some(hint) = hints::batchnorm_lag(self.run.checked, self.state.iterations, &metrics)
        {
            self.hinted = true;
            self.say(format_args!("{hint}"));
        }
        let stop_early = match (&mut self.stopping, &validation) {
            (Some(s), Some(v)) => s.update(epoch, v.loss, &self.state.values[..self.state.weights]),
            _ => false,
        };
        self.log.record(metrics)?;
        crate::runtime::plot::write_learning_curves(
            &self.run.files.plot,
            &self.run.checked.model.title(),
            self.log.epochs(),
        )?;
        self.save_epoch(epoch)?;
        match &self.stopping {
            Some(s) if stop_early => {
                let best_epoch = s.best_epoch().unwrap_or(epoch);
                let patience = s.patience;
                self.say(format_args!(
                    "early stopping: val_loss has not improved for {patience} epochs since epoch {best_epoch}"
                ));
                Ok(Ending::EarlyStopped { best_epoch })
            }
            _ => Ok(Ending::Completed),
        }
    }

    /// The training steps of epoch `epoch` from `done.step` on; true if
    /// `stop` asked to stop before the end.
    fn steps_of(
        &mut self,
        train: &Dataset,
        epoch: u64,
        done: &mut Progress,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, Error> {
        let settings = self.run.settings;
        let train_graph = &self.run.graphs.train;
        let started = Instant::now();
        let earlier = done.seconds;
        let bar = progress::bar(epoch, settings.epochs, self.steps, done);
        let mut shuffle = Rng::stream(settings.seed.wrapping_add(epoch), purpose::SHUFFLE);
        let mut dropout = Rng::stream(settings.seed.wrapping_add(epoch), purpose::DROPOUT);
        let mut augmenting = Rng::stream(settings.seed.wrapping_add(epoch), purpose::AUGMENT);
        let order = train.epoch_order(&mut shuffle);
        let mut batches = order.chunks(settings.batch_size);
        // Draws the masks and augmentations of the steps done before an
        // interrupt again, and drops them, so that the rest of the epoch
        // gets those it would have got without the interrupt.
        for chunk in batches.by_ref().take(done.step) {
            dropout_masks::<f32>(train_graph, chunk.len(), &mut dropout);
            if let Some(a) = &settings.augment {
                augment::draw(a, chunk.len(), &mut augmenting);
            }
        }
        for chunk in batches {
            let mut batch = train.batch(chunk);
            if let Some(a) = &settings.augment {
                let transforms = augment::draw(a, chunk.len(), &mut augmenting);
                augment::apply(a, &mut batch.inputs, &transforms);
            }
            let masks = dropout_masks::<f32>(train_graph, chunk.len(), &mut dropout);
            let iterations = self.state.iterations;
            let hyper = |h| optim::hyper(&settings.optimizer, iterations, h);
            let outcome = self.engine.train_step(
                &mut self.state.values,
                &Step {
                    inputs: batch.inputs.view(),
                    targets: Some(batch.targets.view()),
                    masks: &masks,
                    hyper: &hyper,
                },
            )?;
            if !outcome.loss.is_finite() {
                bar.abandon();
                let divergence = divergence::Divergence {
                    loss: outcome.loss,
                    epoch,
                    step: done.step + 1,
                    iterations,
                    saved: self.saved,
                    start: &self.start,
                };
                return Err(divergence::diverged(divergence, settings, &self.run.files));
            }
            self.state.iterations += 1;
            done.step += 1;
            done.loss_sum += f64::from(outcome.loss) * chunk.len() as f64;
            done.seen += chunk.len();
            done.correct += chunk
                .iter()
                .zip(classes_of(&outcome.prediction))
                .filter(|&(&i, p)| train.labels[i] == p)
                .count();
            done.seconds = earlier + started.elapsed().as_secs_f64();
            progress::show(&bar, done);
            if stop() {
                bar.finish_and_clear();
                return Ok(true);
            }
        }
        bar.finish_and_clear();
        Ok(false)
    }

    /// Saves a completed epoch, and the best weights if it is the best.
    fn save_epoch(&mut self, epoch: u64) -> Result<(), Error> {
        self.run.save(&self.state, self.stopping.as_ref())?;
        self.saved = Some((epoch, 0));
        // After the weights, which record the best epoch: see `Run::resume`.
        if let Some(best) = self
            .stopping
            .as_ref()
            .and_then(|s| s.best.as_ref())
            .filter(|b| b.epoch == epoch)
        {
            self.run.save_best(best)?;
        }
        Ok(())
    }

    /// Early stopping's `restore_best_weights`, compared rather than
    /// assumed: a resumed run may find them restored.
    fn restore_best(&mut self) -> Result<(), Error> {
        let weights = self.state.weights;
        let Some(best) = self.stopping.as_ref().and_then(|s| s.best.as_ref()) else {
            return Ok(());
        };
        if self.state.values[..weights] == best.weights[..] {
            return Ok(());
        }
        self.state.values[..weights].clone_from_slice(&best.weights);
        let best_epoch = best.epoch;
        self.run.save(&self.state, self.stopping.as_ref())?;
        self.say(format_args!("restored the best weights, from epoch {best_epoch}"));
        Ok(())
    }
}
