//! Interrupted runs, resumed: whatever step a run stops at, resuming it
//! gives the weights, optimizer state and metrics of an uninterrupted run
//! bit for bit, early stopping included. Through the library, with the stop
//! driven by a step count; and Ctrl-C through the binary.

mod common;

use cnnc::parse::ast::{Augment, FillMode, Flip, Interpolation, Optimizer};
use cnnc::runtime::checkpoint;
use cnnc::runtime::data::{self, Splits};
use cnnc::runtime::engine::Graphs;
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::metrics::{self, EpochMetrics};
use cnnc::runtime::train::{self, Ending, Report, Settings};
use cnnc::shape::Checked;
use common::{Scratch, checked};
use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

/// tests/training.rs's model, with dropout, whose masks a resumed epoch
/// must draw as the uninterrupted one did.
const SMALL: &str = "model small
input 28x28x1
flatten
dense 32 activation=relu
dropout 0.2
dense 10 activation=softmax
";

/// Steps per epoch: 8000 digits in batches of 64.
const STEPS: usize = 125;

struct Fixture {
    checked: Checked,
    splits: Splits,
    graphs: Graphs,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let checked = checked("small", SMALL);
        let splits = data::load("mnist10k", Path::new("."), &[28, 28, 1], 10, None, &Default::default()).unwrap();
        // Learning rates are fed at run time: one set of graphs serves all.
        let graphs = Graphs::new(&checked, &Optimizer::ADAM).unwrap();
        Fixture {
            checked,
            splits,
            graphs,
        }
    })
}

fn settings(out: &Path, epochs: usize) -> Settings {
    Settings {
        optimizer: Optimizer::ADAM,
        batch_size: 64,
        epochs,
        seed: 5,
        patience: None,
        augment: None,
        validation_split: None,
        out_dir: out.to_path_buf(),
        resume: false,
        force: false,
        initial: None,
    }
}

/// Trains with the compiled engine, stopping after `stop_after` steps of
/// this run if given; returns the report and what the run printed.
fn train(settings: &Settings, stop_after: Option<usize>) -> (Report, String) {
    let f = fixture();
    let mut engine = Compiled::new(f.graphs.clone());
    let steps = Cell::new(0);
    let stop = || {
        steps.set(steps.get() + 1);
        Some(steps.get()) == stop_after
    };
    let mut out = Vec::new();
    let report = train::train(&f.checked, &f.splits, settings, &f.graphs, &mut engine, &mut out, &stop)
        .unwrap_or_else(|e| panic!("{e}"));
    (report, String::from_utf8(out).unwrap())
}

fn resumed(settings: &Settings) -> Settings {
    Settings {
        resume: true,
        ..settings.clone()
    }
}

/// What a run leaves that must not depend on interrupts.
#[derive(Debug, PartialEq)]
struct Files {
    weights: Vec<u8>,
    checkpoint: Vec<u8>,
    /// The epochs' metrics but their timings.
    metrics: Vec<[Option<f64>; 4]>,
}

fn files(out: &Path) -> Files {
    let read = |name: &str| std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let timeless = |m: &EpochMetrics| [Some(m.loss), Some(m.accuracy), m.val_loss, m.val_accuracy];
    Files {
        weights: read("weights.safetensors"),
        checkpoint: read("checkpoint.safetensors"),
        metrics: metrics::read(&out.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(timeless)
            .collect(),
    }
}

/// Two epochs in one go, for the interrupted runs to match.
fn uninterrupted() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = Scratch::new("uninterrupted");
        let (report, _) = train(&settings(&dir, 2), None);
        assert_eq!(report.ending, Ending::Completed);
        files(&dir)
    })
}

#[test]
fn an_interrupt_at_the_first_step_resumes_exactly() {
    let dir = Scratch::new("first-step");
    let settings = settings(&dir, 2);
    let (report, out) = train(&settings, Some(1));
    assert_eq!(report.ending, Ending::Interrupted);
    assert!(out.contains("interrupted at step 1 of 125 of epoch 1"), "{out}");
    // Nothing was recorded: the resume must not need a metrics file.
    assert!(!dir.join("metrics.jsonl").exists());

    let (report, out) = train(&resumed(&settings), None);
    assert!(out.contains("resuming epoch 1 of 2 after step 1 of 125"), "{out}");
    assert!(!out.contains("starting over"), "{out}");
    assert_eq!(report.ending, Ending::Completed);
    assert_eq!(report.epochs.len(), 2);
    assert!(files(&dir) == *uninterrupted(), "the resumed run differs");

    let (report, out) = train(&resumed(&settings), None);
    assert!(
        out.contains("already trained 2 epochs (--epochs 2): nothing to train"),
        "{out}"
    );
    assert_eq!(report.epochs.len(), 2);
    assert!(
        files(&dir) == *uninterrupted(),
        "a run with nothing to train changed the files"
    );

    // Without --resume, a run is refused: the folder holds a finished run.
    let e = failure(&settings);
    assert!(
        e.starts_with(&format!("`{}` already holds a run trained for 2 epochs", dir.display())),
        "{e}"
    );
    assert!(
        e.contains("continue it with --resume (with a larger --epochs to train it further)"),
        "{e}"
    );
    assert!(e.contains("--out DIR, or replace it with --force"), "{e}");
    assert!(files(&dir) == *uninterrupted(), "a refused run changed the files");
    // With --force, it says it starts over, and does.
    let forced = Settings {
        force: true,
        ..settings.clone()
    };
    let (_, out) = train(&forced, Some(1));
    assert!(
        out.starts_with(&format!(
            "starting over in `{}`: its checkpoint is replaced at the first save",
            dir.display()
        )),
        "{out}"
    );
}

/// Interrupted within epoch 1, resumed, interrupted again within epoch 2,
/// and resumed: each resume continues the epoch where it stopped.
#[test]
fn interrupts_in_the_middle_of_epochs_resume_exactly() {
    let dir = Scratch::new("mid-epoch");
    let settings = settings(&dir, 2);
    let (_, out) = train(&settings, Some(40));
    assert!(out.contains("interrupted at step 40 of 125 of epoch 1"), "{out}");
    let (report, out) = train(&resumed(&settings), Some(STEPS - 40 + 37));
    assert!(out.contains("resuming epoch 1 of 2 after step 40"), "{out}");
    assert!(out.contains("epoch 1/2: loss"), "{out}");
    assert!(out.contains("interrupted at step 37 of 125 of epoch 2"), "{out}");
    assert_eq!(report.ending, Ending::Interrupted);
    let (report, out) = train(&resumed(&settings), None);
    assert!(out.contains("resuming epoch 2 of 2 after step 37"), "{out}");
    assert_eq!(report.ending, Ending::Completed);
    assert!(files(&dir) == *uninterrupted(), "the resumed run differs");
}

/// Augmented batches are drawn from the run's seed, epoch and step, so an
/// augmented run interrupted mid-epoch twice resumes to the files of the
/// uninterrupted augmented run, bit for bit; and augmentation does change
/// what the run learns.
#[test]
fn augmented_runs_resume_exactly() {
    let augmented = |out: &Path| Settings {
        augment: Some(Augment {
            flip: Some(Flip::Horizontal),
            rotation: Some(0.05),
            translation: Some([0.1, 0.1]),
            fill_mode: FillMode::Reflect,
            interpolation: Interpolation::Bilinear,
            fill_value: 0.0,
            span: Default::default(),
        }),
        ..settings(out, 2)
    };
    let reference = Scratch::new("augmented-reference");
    train(&augmented(&reference), None);
    let reference = files(&reference);
    assert!(reference != *uninterrupted(), "augmentation changed nothing");

    let dir = Scratch::new("augmented");
    let (_, out) = train(&augmented(&dir), Some(40));
    assert!(out.contains("interrupted at step 40 of 125 of epoch 1"), "{out}");
    let (_, out) = train(&resumed(&augmented(&dir)), Some(STEPS - 40 + 37));
    assert!(out.contains("interrupted at step 37 of 125 of epoch 2"), "{out}");
    let (report, _) = train(&resumed(&augmented(&dir)), None);
    assert_eq!(report.ending, Ending::Completed);
    assert!(files(&dir) == reference, "the resumed augmented run differs");
}

/// The error of a run of `checked` on `splits` that should fail.
fn failure_of(checked: &Checked, splits: &Splits, settings: &Settings) -> String {
    let graphs = Graphs::new(checked, &settings.optimizer).unwrap();
    let mut engine = Compiled::new(graphs.clone());
    let run = train::train(
        checked,
        splits,
        settings,
        &graphs,
        &mut engine,
        &mut Vec::new(),
        &|| false,
    );
    run.err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("the run succeeded"))
}

fn failure_on(splits: &Splits, settings: &Settings) -> String {
    failure_of(&fixture().checked, splits, settings)
}

fn failure(settings: &Settings) -> String {
    failure_on(&fixture().splits, settings)
}

#[test]
fn a_resume_needs_the_batch_size_and_seed_of_the_interrupted_epoch() {
    let dir = Scratch::new("other-batch");
    let settings = settings(&dir, 1);
    train(&settings, Some(3));
    let e = failure(&Settings {
        batch_size: 32,
        ..resumed(&settings)
    });
    assert!(
        e.contains("interrupted after step 3 of batches of 64 with seed 5"),
        "{e}"
    );
    assert!(e.contains("--batch 64 --seed 5"), "{e}");
}

#[test]
fn a_resume_with_another_optimizer_is_refused_with_the_fix() {
    let dir = Scratch::new("other-optimizer");
    let settings = settings(&dir, 1);
    train(&settings, Some(3));
    let e = failure(&Settings {
        optimizer: Optimizer::SGD,
        ..resumed(&settings)
    });
    assert!(e.contains("was trained with adam, not sgd"), "{e}");
    assert!(e.contains("`--optimizer adam`"), "{e}");
    insta::assert_snapshot!(e.replace(&dir.display().to_string(), "runs/small"));
}

/// Defect 9 of issue 9: `--resume` on other data continued silently.
#[test]
fn a_resume_on_other_data_is_refused_saying_what_changed() {
    let dir = Scratch::new("other-data");
    let settings = settings(&dir, 2);
    train(&settings, Some(STEPS + 3));
    let split = data::load(
        "mnist10k",
        Path::new("."),
        &[28, 28, 1],
        10,
        Some(0.2),
        &Default::default(),
    )
    .unwrap();
    let e = failure_on(
        &split,
        &Settings {
            validation_split: Some(0.2),
            ..resumed(&settings)
        },
    );
    assert!(e.contains("was trained on other data:"), "{e}");
    assert!(e.contains("- the validation split was none, now 0.2"), "{e}");
    assert!(e.contains("- the training data had 8000 samples, now 6400"), "{e}");
    assert!(e.contains("- the validation data had no samples, now 1600"), "{e}");
    assert!(!e.contains("the test"), "the test data is unchanged: {e}");
    insta::assert_snapshot!("other_split", e.replace(&dir.display().to_string(), "runs/small"));

    // The same counts, other samples: the first training image brightened.
    let mut other = fixture().splits.clone();
    other.train.inputs[0] = 1.0 - other.train.inputs[0];
    let e = failure_on(&other, &resumed(&settings));
    assert!(
        e.contains("- the training samples are not the same (the same count, 8000"),
        "{e}"
    );
    let mut renamed = fixture().splits.clone();
    renamed.classes[9] = "nine".into();
    let e = failure_on(&renamed, &resumed(&settings));
    assert!(
        e.contains("- the classes differ: label 9 is `9` in the checkpoint, `nine` in the data"),
        "{e}"
    );
    renamed.classes.push("ten".into());
    let e = failure_on(&renamed, &resumed(&settings));
    assert!(
        e.contains("the checkpoint has 10 (0, 1, 2, 3, 4, 5, 6, 7 and 2 more), the data 11 (0, 1"),
        "{e}"
    );
    insta::assert_snapshot!("other_classes", e.replace(&dir.display().to_string(), "runs/small"));
}

/// Layers changed in a way that keeps every weight's shape would resume
/// silently into another model.
#[test]
fn a_resume_with_other_layers_is_refused_naming_the_change() {
    let dir = Scratch::new("other-layers");
    let settings = settings(&dir, 2);
    train(&settings, Some(3));
    let tanh = checked(
        "small",
        &SMALL.replace("dense 32 activation=relu", "dense 32 activation=tanh"),
    );
    let e = failure_of(&tanh, &fixture().splits, &resumed(&settings));
    assert!(
        e.contains("was trained with other layers: `dense 32 activation=relu` is now `dense 32 activation=tanh`"),
        "{e}"
    );
    let more = checked("small", &format!("{SMALL}dense 10 activation=softmax\n"));
    let e = failure_of(&more, &fixture().splits, &resumed(&settings));
    assert!(e.contains("`dense 10 activation=softmax` is new"), "{e}");
}

#[test]
fn a_resume_without_a_checkpoint_says_what_is_missing_and_what_to_do() {
    let dir = Scratch::new("nothing");
    let out = dir.join("never-run");
    let e = failure(&resumed(&settings(&out, 1)));
    assert!(
        e.starts_with(&format!("nothing to resume in `{}`", out.display())),
        "{e}"
    );
    assert!(!out.exists(), "a failed resume made the run folder");
    insta::assert_snapshot!(e.replace(&out.display().to_string(), "runs/small"));
    assert!(e.contains("checkpoint.safetensors is missing"), "{e}");
    assert!(e.contains("help: start the run without --resume"), "{e}");
}

/// Sets `key` in the metadata of the weights file at `path`.
fn relabel(path: &Path, key: &str, value: &str) {
    let f = fixture();
    let n = f.checked.weights().count();
    let expected: Vec<(&str, &[usize])> = f.graphs.train.vars[..n]
        .iter()
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let mut loaded = checkpoint::load(path, &expected).unwrap();
    loaded.metadata.insert(key.into(), value.into());
    checkpoint::save(path, &loaded.tensors, &loaded.metadata).unwrap();
}

/// As a run killed between writing the checkpoint and the best weights
/// leaves them after a later epoch: refused, rather than early stopping
/// restoring the wrong epoch.
#[test]
fn a_resume_refuses_best_weights_of_another_epoch() {
    let dir = Scratch::new("torn");
    let settings = Settings {
        patience: Some(3),
        ..settings(&dir, 2)
    };
    train(&settings, Some(STEPS + 5));
    relabel(&dir.join("weights.best.safetensors"), "epoch", "2");
    let e = failure(&resumed(&settings));
    assert!(e.contains("weights.best.safetensors"), "{e}");
    assert!(e.contains("metadata `epoch` is `2`, expected `1`"), "{e}");
}

/// A kill between the checkpoint's commit and the weights' write leaves
/// the weights an epoch behind: the resume writes them again, even with
/// nothing left to train.
#[test]
fn a_resume_rewrites_weights_left_behind_the_checkpoint() {
    let dir = Scratch::new("behind");
    train(&settings(&dir, 1), None);
    let epoch_1 = std::fs::read(dir.join("weights.safetensors")).unwrap();
    train(&resumed(&settings(&dir, 2)), None);
    std::fs::write(dir.join("weights.safetensors"), epoch_1).unwrap();
    let (_, out) = train(&resumed(&settings(&dir, 2)), None);
    assert!(out.contains("nothing to train"), "{out}");
    assert!(files(&dir) == *uninterrupted(), "the weights were not written again");
}

/// With a learning rate high enough that val_loss rises again, early
/// stopping (patience 1) stops and restores the best epoch's weights, the
/// same whether the run was interrupted after the best epoch or resumed
/// right after it.
#[test]
fn early_stopping_carries_across_a_resume() {
    let settings = |out: &Path, epochs| Settings {
        optimizer: Optimizer::ADAM.with_learning_rate(0.03),
        patience: Some(1),
        ..self::settings(out, epochs)
    };
    let dir = Scratch::new("early-reference");
    let (report, _) = train(&settings(&dir, 6), None);
    let Ending::EarlyStopped { best_epoch } = report.ending else {
        panic!("the reference run no longer stops early: {:?}", report.ending);
    };
    let best = best_epoch as usize;
    assert!(
        best < report.epochs.len(),
        "the last epoch is the best: no restore to test"
    );
    let reference = files(&dir);

    // Interrupted in the epoch after the best: the best weights come from
    // weights.best.safetensors.
    let dir = Scratch::new("early-interrupted");
    let (_, out) = train(&settings(&dir, 6), Some(best * STEPS + 10));
    assert!(
        out.contains(&format!("interrupted at step 10 of 125 of epoch {}", best + 1)),
        "{out}"
    );
    let (report, out) = train(&resumed(&settings(&dir, 6)), None);
    assert_eq!(report.ending, Ending::EarlyStopped { best_epoch }, "{out}");
    assert!(
        out.contains(&format!("restored the best weights, from epoch {best}")),
        "{out}"
    );
    assert!(files(&dir) == reference, "the resumed run restored other weights");

    // Resumed after the best epoch itself: the best weights are the last
    // ones, even if a kill left no best file beside them.
    let dir = Scratch::new("early-resumed");
    train(&settings(&dir, best), None);
    std::fs::remove_file(dir.join("weights.best.safetensors")).unwrap();
    let (report, _) = train(&resumed(&settings(&dir, 6)), None);
    assert_eq!(report.ending, Ending::EarlyStopped { best_epoch });
    assert!(files(&dir) == reference, "the resumed run restored other weights");
    let best_file = std::fs::read(dir.join("weights.best.safetensors")).unwrap();

    // A run that stopped early has nothing left to train.
    let (report, out) = train(&resumed(&settings(&dir, 6)), None);
    assert_eq!(report.ending, Ending::EarlyStopped { best_epoch });
    assert!(
        out.contains("stopped early") && out.contains("nothing to train"),
        "{out}"
    );
    assert!(!out.contains("restored"), "{out}");
    assert!(files(&dir) == reference);
    assert!(std::fs::read(dir.join("weights.best.safetensors")).unwrap() == best_file);
}

/// Ctrl-C through the binary: the first stops after the step and saves,
/// a second exits at once; either way the exit code is 130. mnist_cnn in batches of 256 takes long
/// enough a step for both signals to land within it.
#[cfg(unix)]
mod ctrl_c {
    use super::common::{Scratch, stderr};
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Output, Stdio};
    use std::time::Duration;

    /// Starts `cnnc run` with batches of `batch` and sends it SIGINT `times`
    /// times once it trains.
    fn interrupt(out: &Scratch, batch: &str, extra: &[&str], times: usize) -> (Output, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .args([
                "run",
                "models/mnist_cnn.cnn",
                "--batch",
                batch,
                "--epochs",
                "1",
                "--out",
            ])
            .arg(out.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut printed = String::new();
        // Printed once the Ctrl-C handler is in place.
        while !printed.contains("training `") {
            assert!(
                lines.read_line(&mut printed).unwrap() > 0,
                "cnnc ended early: {printed}"
            );
        }
        for _ in 0..times {
            let pid = child.id().to_string();
            let kill = Command::new("kill").args(["-s", "INT", &pid]).status().unwrap();
            assert!(kill.success());
            // Signals sent together may arrive as one.
            std::thread::sleep(Duration::from_millis(30));
        }
        lines.read_to_string(&mut printed).unwrap();
        (child.wait_with_output().unwrap(), printed)
    }

    #[test]
    fn the_first_ctrl_c_saves_after_the_step_and_the_run_resumes() {
        let dir = Scratch::new("ctrl-c");
        let (output, printed) = interrupt(&dir, "256", &[], 1);
        assert_eq!(output.status.code(), Some(130), "{printed}{}", stderr(&output));
        assert!(printed.contains("interrupted at step 1 of 32 of epoch 1"), "{printed}");
        let (output, printed) = interrupt(&dir, "256", &["--resume"], 1);
        assert_eq!(output.status.code(), Some(130), "{printed}{}", stderr(&output));
        assert!(
            printed.contains("resuming epoch 1 of 1 after step 1 of 32"),
            "{printed}"
        );
        assert!(printed.contains("interrupted at step 2 of 32 of epoch 1"), "{printed}");
    }

    #[test]
    fn a_second_ctrl_c_exits_at_once() {
        let dir = Scratch::new("ctrl-c-twice");
        // Steps of 1,024 samples take far longer than the 30 ms between
        // the signals, even on a loaded machine, so the second one comes
        // while the first step still runs.
        let (output, printed) = interrupt(&dir, "1024", &[], 2);
        assert_eq!(output.status.code(), Some(130), "{printed}{}", stderr(&output));
        assert!(!printed.contains("interrupted at step"), "{printed}");
    }
}
