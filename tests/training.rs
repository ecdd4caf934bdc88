//! `cnnc run`, `eval` and `predict` end to end, on the bundled digits with a
//! model small enough for CI; the full mnist_cnn run is a documented
//! command, not a test.

mod common;

use cnnc::runtime::npy;
use common::{Scratch, cnnc, squares, stderr, stdout};
use std::path::Path;

/// A dense digit classifier: a few seconds an epoch on the interpreter.
const SMALL: &str = "model small
input 28x28x1
flatten
dense 32 activation=relu
dropout 0.2
dense 10 activation=softmax
train {
  optimizer adam
  batch_size 64
  epochs 1
  seed 5
}
";

fn write_model(dir: &Scratch, text: &str) -> String {
    dir.write("small.cnn", text.as_bytes()).display().to_string()
}

/// A path inside the scratch folder, as a string argument.
fn at(dir: &Scratch, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

fn run(args: &[&str]) -> std::process::Output {
    let out = cnnc(args);
    assert!(
        out.status.success(),
        "cnnc {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

fn metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_small_model_learns_the_digits() {
    let dir = Scratch::new("learn");
    let model = write_model(&dir, SMALL);
    let out = run(&["run", &model, "--epochs", "2", "--out", &at(&dir, "runs")]);
    let text = stdout(&out);
    assert!(text.contains("epoch 2/2: loss"), "{text}");
    let m = metrics(&dir.path().join("runs/small/metrics.jsonl"));
    assert_eq!(m.len(), 2);
    let fields: Vec<&String> = m[0].as_object().unwrap().keys().collect();
    for f in [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
        "samples_per_sec",
    ] {
        assert!(fields.iter().any(|k| *k == f), "metrics lack {f}: {fields:?}");
    }
    let (l1, l2) = (m[0]["loss"].as_f64().unwrap(), m[1]["loss"].as_f64().unwrap());
    assert!(l2 < l1, "the loss falls: {l1} then {l2}");
    // Ten classes: chance is 0.1.
    let acc = m[1]["val_accuracy"].as_f64().unwrap();
    assert!(acc > 0.85, "validation accuracy {acc}");
    assert!(text.contains("test: loss"), "{text}");
    let png = std::fs::read(dir.path().join("runs/small/learning_curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // eval on the saved weights reproduces the run's test accuracy.
    let weights = at(&dir, "runs/small/weights.safetensors");
    let e = run(&["eval", &model, "--weights", &weights, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(v["n"], 2000);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 2000);
    let diagonal: u64 = (0..10).map(|i| confusion[i][i]).sum();
    assert!((diagonal as f64 / 2000.0 - v["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    let test_line = format!("accuracy {:.4}", v["accuracy"].as_f64().unwrap());
    assert!(text.contains(&test_line), "run printed {text}, eval says {test_line}");

    // predict: a .npy batch, probabilities out.
    let npy = at(&dir, "batch.npy");
    npy::write_f32(Path::new(&npy), &[3, 28, 28, 1], &[0.0; 3 * 784]).unwrap();
    let probs = at(&dir, "probs.npy");
    let p = run(&["predict", &model, "--weights", &weights, &npy, "--output", &probs]);
    assert_eq!(
        stdout(&p).lines().filter(|l| l.contains("batch.npy[")).count(),
        3,
        "{}",
        stdout(&p)
    );
    let probs = npy::read_f32(Path::new(&probs)).unwrap();
    assert_eq!(probs.shape(), &[3, 10]);
    for row in probs.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn same_seed_same_weights_bit_for_bit_and_resume_continues_exactly() {
    let dir = Scratch::new("repro");
    let model = write_model(&dir, SMALL);
    run(&["run", &model, "--epochs", "2", "--out", &at(&dir, "a")]);
    run(&["run", &model, "--epochs", "2", "--out", &at(&dir, "b")]);
    let a = std::fs::read(dir.path().join("a/small/weights.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("b/small/weights.safetensors")).unwrap();
    assert!(a == b, "two runs with one seed differ");
    // One epoch, then resume for the second: the same as two in one go.
    run(&["run", &model, "--epochs", "1", "--out", &at(&dir, "c")]);
    let r = run(&["run", &model, "--epochs", "2", "--out", &at(&dir, "c"), "--resume"]);
    assert!(stdout(&r).contains("resuming after epoch 1"), "{}", stdout(&r));
    let c = std::fs::read(dir.path().join("c/small/weights.safetensors")).unwrap();
    assert!(a == c, "a resumed run differs from an uninterrupted one");
    assert_eq!(metrics(&dir.path().join("c/small/metrics.jsonl")).len(), 2);
    // A different seed gives different weights.
    run(&["run", &model, "--epochs", "1", "--seed", "6", "--out", &at(&dir, "d")]);
    let d = std::fs::read(dir.path().join("d/small/weights.safetensors")).unwrap();
    assert!(c != d);
}

#[test]
fn a_diverging_loss_stops_with_advice_and_keeps_the_last_good_checkpoint() {
    let dir = Scratch::new("nan");
    let model = write_model(&dir, SMALL);
    run(&["run", &model, "--epochs", "1", "--out", &at(&dir, "runs")]);
    let weights = dir.path().join("runs/small/weights.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let out = cnnc(&[
        "run",
        &model,
        "--epochs",
        "3",
        "--resume",
        "--lr",
        "1e30",
        "--out",
        &at(&dir, "runs"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("epoch 2, step"), "{err}");
    assert!(err.contains("lower learning rate, e.g. `--lr 1e29`"), "{err}");
    assert!(
        std::fs::read(&weights).unwrap() == before,
        "the last good checkpoint was overwritten"
    );
}

#[test]
fn bad_data_and_weights_are_errors_naming_the_file() {
    let dir = Scratch::new("bad");
    let model = write_model(&dir, SMALL);
    let out = cnnc(&["run", &model, "--data", &at(&dir, "no-such-folder")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-folder"), "{}", stderr(&out));
    // Weights of another model.
    let out = cnnc(&[
        "eval",
        &model,
        "--weights",
        "tests/fixtures/keras/do_the_math_keras.safetensors",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("dense/kernel"), "{}", stderr(&out));
    // A model with no dataset and not a digit model.
    let out = cnnc(&["run", "models/logistic.cnn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("names no dataset"), "{}", stderr(&out));
    // Flags are validated by clap: exit 2.
    for bad in [["--lr", "-1"], ["--epochs", "0"], ["--validation-split", "1.5"]] {
        let out = cnnc(&["run", &model, bad[0], bad[1]]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

/// Weights trained in Keras load into cnnc with Keras's names and layouts
/// (HWIO kernels, (in, out) dense kernels, H-W-C flatten order) and give
/// Keras's predictions. Fixture: a Keras 3.15 (JAX) model of do_the_math's
/// architecture, exported with `safetensors.numpy.save_file` under
/// `variable.path` minus the model's name; the expected probabilities are
/// Keras's `predict` on the first four test digits.
#[test]
fn keras_weights_predict_as_in_keras() {
    const KERAS: [[f32; 10]; 4] = [
        [
            0.0898066, 0.1122113, 0.0962197, 0.1497871, 0.0869186, 0.0959794, 0.0941542, 0.0875856, 0.0999759,
            0.0873616,
        ],
        [
            0.1224606, 0.0685902, 0.1384315, 0.1608478, 0.0714442, 0.0843020, 0.0770349, 0.0734837, 0.1356714,
            0.0677336,
        ],
        [
            0.0904063, 0.1253839, 0.0915806, 0.1315334, 0.0832801, 0.0990686, 0.0878109, 0.0945765, 0.1089504,
            0.0874094,
        ],
        [
            0.1232123, 0.0766049, 0.0850145, 0.1170501, 0.1256159, 0.1263739, 0.0678322, 0.0998983, 0.10397, 0.0744281,
        ],
    ];
    let dir = Scratch::new("keras");
    let splits = cnnc::runtime::data::load("mnist10k", Path::new("."), &[28, 28, 1], 10, None).unwrap();
    let test = splits.test.unwrap();
    let batch = test.batch(&[0, 1, 2, 3]);
    let npy = at(&dir, "digits.npy");
    let inputs: Vec<f32> = batch.inputs.iter().copied().collect();
    npy::write_f32(Path::new(&npy), batch.inputs.shape(), &inputs).unwrap();
    let probs = at(&dir, "probs.npy");
    run(&[
        "predict",
        "models/do_the_math.cnn",
        "--weights",
        "tests/fixtures/keras/do_the_math_keras.safetensors",
        &npy,
        "--output",
        &probs,
    ]);
    let got = npy::read_f32(Path::new(&probs)).unwrap();
    for (i, row) in KERAS.iter().enumerate() {
        for (j, want) in row.iter().enumerate() {
            let g = got[[i, j]];
            assert!((g - want).abs() < 2e-6, "sample {i} class {j}: cnnc {g}, Keras {want}");
        }
    }
}

/// The course's homework shape: an image folder with train/, val/ and
/// test/ holding one folder per class; predictions are named by class.
#[test]
fn an_image_folder_trains_and_predicts_by_class_name() {
    let dir = Scratch::new("folder");
    for (split, n) in [("train", 24), ("val", 6), ("test", 6)] {
        squares(
            &dir.path().join("colours").join(split).join("red"),
            n,
            [230, 20, 20],
            n as u64,
        );
        squares(
            &dir.path().join("colours").join(split).join("blue"),
            n,
            [20, 20, 230],
            100 + n as u64,
        );
    }
    let model = dir.write(
        "colours.cnn",
        b"input 8x8x3
conv2d 4 3x3 padding=same activation=relu
maxpool2d
flatten
dense 2 activation=softmax
train {
  data \"colours\"
  optimizer adam learning_rate=0.01
  batch_size 4
  epochs 6
  patience 2
}
",
    );
    let model = model.display().to_string();
    let out = run(&["run", &model, "--out", &at(&dir, "runs")]);
    let text = stdout(&out);
    assert!(text.contains("(2 classes)"), "{text}");
    let test: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("test: "))
        .and_then(|l| l.split("accuracy ").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {text}"));
    assert!(test >= 0.9, "{text}");
    let weights = at(&dir, "runs/colours/weights.safetensors");
    let red = at(&dir, "colours/test/red/0.png");
    let p = run(&["predict", &model, "--weights", &weights, &red, "--top", "1"]);
    assert!(stdout(&p).starts_with(&format!("{red}: red ")), "{}", stdout(&p));
}

/// Training gives the same result, within float tolerance, on either
/// engine.
#[test]
fn both_engines_train_alike() {
    let dir = Scratch::new("engines");
    let model = write_model(&dir, SMALL);
    for engine in ["jit", "interp"] {
        run(&["run", &model, "--engine", engine, "--out", &at(&dir, engine)]);
    }
    let (jit, interp) = (
        metrics(&dir.path().join("jit/small/metrics.jsonl")),
        metrics(&dir.path().join("interp/small/metrics.jsonl")),
    );
    for key in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        let (a, b) = (jit[0][key].as_f64().unwrap(), interp[0][key].as_f64().unwrap());
        assert!((a - b).abs() <= 2e-3 * b.abs().max(0.1), "{key}: jit {a}, interp {b}");
    }
}
