//! Transfer learning: `cnnc run --init` (partial loading, mismatched shapes,
//! Keras 3's `sequential/` prefix), `--freeze` and `--freeze-until`
//! (frozen weights and batchnorm statistics bit for bit, no optimizer
//! slots, no weight gradients), and the first step from given weights
//! against Keras 3's (tests/fixtures/keras/make_transfer.py).

mod common;

use cnnc::ir::Output;
use cnnc::parse::ast::Optimizer;
use cnnc::runtime::checkpoint::{self, Tensor};
use cnnc::runtime::engine::{Engine, Graphs, Interpreter, Step};
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::train::{self, Start};
use cnnc::runtime::{initial_weights, optim};
use common::{Scratch, checked, cnnc, stderr, stdout};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

/// The model of make_transfer.py: its first convolution and batchnorm frozen.
const KERAS_MODEL: &str = "input 6x6x2
conv2d 3 3x3 activation=relu name=base trainable=false
batchnorm name=base_bn trainable=false
conv2d 4 2x2 activation=tanh
flatten
dense 5 use_bias=false
batchnorm momentum=0.9
activation tanh
dense 3 activation=softmax name=head
";

fn fixture(name: &str) -> PathBuf {
    Path::new("tests/fixtures/keras").join(name)
}

/// The tensors `expected` of a file that may hold others too.
fn tensors(path: &Path, expected: &[(&str, &[usize])]) -> Vec<Tensor> {
    let (found, problems) = checkpoint::inspect(path, expected).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.tensors.len(), expected.len(), "{problems:?}");
    found.tensors
}

/// One step of the Keras model from the fixture's weights, on the
/// fixture's batch; every weight afterwards, by name, as loaded with --init.
/// Each weight: its name, its value after the step, Keras's, and how far it moved.
fn keras_step(
    optimizer: &Optimizer,
    engine: fn(Graphs) -> Box<dyn Engine>,
) -> Vec<(String, ArrayD<f32>, Vec<f32>, f32)> {
    let checked = checked("transfer.cnn", KERAS_MODEL);
    let graphs = Graphs::new(&checked, optimizer).unwrap();
    let fresh = initial_weights::<f32>(&checked, 0);
    let weights = fresh.len();
    let initial = train::initial_from(&fixture("transfer_step.initial.safetensors"), &graphs, fresh, false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        initial.starts.iter().all(|s| *s == Start::Loaded),
        "{:?}",
        initial.starts
    );
    assert!(initial.ignored.is_empty(), "{:?}", initial.ignored);
    let mut state = initial.values.clone();
    state.extend(
        graphs.train.vars[weights..]
            .iter()
            .map(|v| ArrayD::zeros(IxDyn(&v.shape))),
    );
    let batch = tensors(
        &fixture("transfer_step.batch.safetensors"),
        &[("x", &[4, 6, 6, 2]), ("y", &[4, 3])],
    );
    let [x, y] = [&batch[0], &batch[1]].map(|t| ArrayD::from_shape_vec(IxDyn(&t.shape), t.data.clone()).unwrap());
    let hyper = |h| optim::hyper(optimizer, 0, h);
    let step = Step {
        inputs: x.view(),
        targets: Some(y.view()),
        masks: &[],
        hyper: &hyper,
    };
    let mut engine = engine(graphs.clone());
    engine.train_step(&mut state, &step).unwrap();
    let shapes: Vec<(&str, &[usize])> = graphs.train.vars[..weights]
        .iter()
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let keras_file = format!("transfer_step.{}.safetensors", optimizer.name());
    let keras = tensors(&fixture(&keras_file), &shapes);
    keras
        .into_iter()
        .zip(state)
        .zip(initial.values)
        .map(|((k, ours), before)| {
            let moved = ours
                .iter()
                .zip(&before)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            (k.name, ours, k.data, moved)
        })
        .collect()
}

fn jit(g: Graphs) -> Box<dyn Engine> {
    Box::new(Compiled::new(g))
}

fn interp(g: Graphs) -> Box<dyn Engine> {
    Box::new(Interpreter::new(g))
}

fn assert_matches_keras(optimizer: Optimizer) {
    let initial = fixture("transfer_step.initial.safetensors");
    for engine in [jit as fn(Graphs) -> Box<dyn Engine>, interp] {
        for (name, ours, keras, moved) in keras_step(&optimizer, engine) {
            let diff = ours
                .iter()
                .zip(&keras)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-5, "`{name}` differs from Keras's by {diff}");
            // A step that moved nothing would match trivially.
            if name.starts_with("head") || name.starts_with("batch_normalization") {
                assert!(moved > 1e-3, "`{name}` moved by {moved} only");
            }
            if name.starts_with("base") {
                // Frozen: the very bits it started from, moving statistics too.
                let before = tensors(&initial, &[(name.as_str(), ours.shape())]);
                assert!(
                    ours.iter()
                        .map(|v| v.to_bits())
                        .eq(before[0].data.iter().map(|v| v.to_bits())),
                    "frozen `{name}` changed"
                );
            }
        }
    }
}

#[test]
fn the_first_sgd_step_from_given_weights_is_keras_s() {
    assert_matches_keras(Optimizer::SGD.with_learning_rate(0.1));
}

#[test]
fn the_first_adam_step_from_given_weights_is_keras_s() {
    assert_matches_keras(Optimizer::ADAM.with_learning_rate(0.01));
}

/// Keras 3 freezes the same part: no slots, no gradients, no updates.
#[test]
fn frozen_weights_have_no_optimizer_slots_and_no_updates() {
    let checked = checked("transfer.cnn", KERAS_MODEL);
    let graphs = Graphs::new(&checked, &Optimizer::ADAM).unwrap();
    let vars = &graphs.train.vars;
    let slots: Vec<&str> = vars
        .iter()
        .filter(|v| v.name.matches('/').count() == 2)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        slots,
        [
            "conv2d/kernel/momentum",
            "conv2d/kernel/velocity",
            "conv2d/bias/momentum",
            "conv2d/bias/velocity",
            "dense/kernel/momentum",
            "dense/kernel/velocity",
            "batch_normalization/gamma/momentum",
            "batch_normalization/gamma/velocity",
            "batch_normalization/beta/momentum",
            "batch_normalization/beta/velocity",
            "head/kernel/momentum",
            "head/kernel/velocity",
            "head/bias/momentum",
            "head/bias/velocity",
        ]
    );
    for graph in [&graphs.train, &graphs.backward] {
        for &(output, _) in &graph.outputs {
            let (Output::Assign(v) | Output::Grad(v)) = output else {
                continue;
            };
            assert!(
                !vars[v].name.starts_with("base"),
                "{output:?} of frozen `{}`",
                vars[v].name
            );
        }
    }
}

/// A small digit model; `head` units in its last layer.
fn digits(dir: &Path, name: &str, head: usize) -> PathBuf {
    let path = dir.join(format!("{name}.cnn"));
    let text = format!(
        "model {name}\ninput 28x28x1\nconv2d 4 3x3 activation=relu\nmaxpool2d 4x4\nbatchnorm\nflatten\n\
         dense 8 activation=relu\ndense {head} activation=softmax\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> String {
    let o = cnnc(args);
    assert!(o.status.success(), "cnnc {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn weights_of(path: &Path, names: &[(&str, &[usize])]) -> Vec<Vec<u32>> {
    tensors(path, names)
        .into_iter()
        .map(|t| t.data.iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Digits 0-4 train a base; digits 5-9 start from it with a new head, its
/// convolution and batchnorm frozen.
#[test]
fn a_run_starts_from_another_model_s_weights_and_keeps_the_frozen_ones() {
    let dir = Scratch::new("transfer");
    let out = dir.path().display().to_string();
    let base = digits(dir.path(), "base", 10);
    let small = ["--data", "mnist10k", "--epochs", "1", "--per-class", "4", "--out", &out];
    run(&[&["run", base.to_str().unwrap(), "--classes", "0,1,2,3,4"], &small[..]].concat());
    let base_weights = dir.path().join("base/weights.safetensors");
    let init = base_weights.to_str().unwrap();
    let target = digits(dir.path(), "target", 5);
    let target = target.to_str().unwrap();
    let classes = ["--classes", "5,6,7,8,9"];

    // A name match with another shape: an error naming both, unless skipped.
    let o = cnnc(&[&["run", target, "--init", init], &classes[..], &small[..]].concat());
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("`dense_1/kernel` has shape [8, 10] in the file, the model needs [8, 5]"),
        "{e}"
    );
    assert!(
        e.contains("`dense_1/bias` has shape [10] in the file, the model needs [5]"),
        "{e}"
    );
    assert!(e.contains("--skip-mismatch"), "{e}");

    let freeze = [
        "--freeze",
        "conv2d,batch_normalization",
        "--skip-mismatch",
        "--init",
        init,
    ];
    let said = run(&[&["run", target], &freeze[..], &classes[..], &small[..]].concat());
    for line in [
        "  conv2d         loaded\n",
        "  batch_normalization loaded\n",
        "  dense          loaded\n",
        "  dense_1        fresh; kernel: [8, 10] in the file, [8, 5] here: skipped; bias: [10] in the file, [5] here: skipped\n",
    ] {
        assert!(said.contains(line), "{line:?} not in:\n{said}");
    }
    assert!(said.contains("on 20 samples (5 classes)"), "{said}");
    let frozen: [(&str, &[usize]); 6] = [
        ("conv2d/kernel", &[3, 3, 1, 4]),
        ("conv2d/bias", &[4]),
        ("batch_normalization/gamma", &[4]),
        ("batch_normalization/beta", &[4]),
        ("batch_normalization/moving_mean", &[4]),
        ("batch_normalization/moving_variance", &[4]),
    ];
    let trained = dir.path().join("target/weights.safetensors");
    assert_eq!(weights_of(&trained, &frozen), weights_of(&base_weights, &frozen));
    let dense: [(&str, &[usize]); 1] = [("dense/kernel", &[144, 8])];
    assert_ne!(weights_of(&trained, &dense), weights_of(&base_weights, &dense));

    // The checkpoint holds Adam's slots of the trained weights only.
    let bytes = std::fs::read(dir.path().join("target/checkpoint.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut slots: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| n.matches('/').count() == 2)
        .map(String::from)
        .collect();
    slots.sort();
    assert_eq!(
        slots,
        [
            "dense/bias/momentum",
            "dense/bias/velocity",
            "dense/kernel/momentum",
            "dense/kernel/velocity",
            "dense_1/bias/momentum",
            "dense_1/bias/velocity",
            "dense_1/kernel/momentum",
            "dense_1/kernel/velocity",
        ]
    );
}

#[test]
fn a_file_of_another_model_s_layers_loads_what_fits() {
    let dir = Scratch::new("transfer-partial");
    let model = dir.path().join("partial.cnn");
    // The Keras fixture's layers up to its head, then a head of its own.
    let text = KERAS_MODEL.replace(
        "dense 3 activation=softmax name=head",
        "dense 2 activation=softmax name=mine",
    );
    std::fs::write(&model, text).unwrap();
    let init = fixture("transfer_step.initial.safetensors");
    let data = dir.path().join("data");
    // No data needed past the weights: an empty folder stops the run there.
    std::fs::create_dir_all(&data).unwrap();
    let o = cnnc(&[
        "run",
        model.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let said = stdout(&o);
    assert!(said.contains("  base           loaded\n"), "{said}");
    assert!(said.contains("  base_bn        loaded\n"), "{said}");
    assert!(said.contains("  mine           fresh: not in the file\n"), "{said}");
    assert!(said.contains("note: ignored 2 tensors"), "{said}");
    assert!(said.contains("`head/bias`, `head/kernel`"), "{said}");
}

#[test]
fn init_with_resume_a_file_that_does_not_fit_and_unknown_layers_are_refused() {
    let o = cnnc(&["run", "models/mnist_cnn.cnn", "--init", "w.safetensors", "--resume"]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("--init and --resume cannot be used together"), "{e}");
    // A file of another model altogether, its shapes skipped: nothing fits,
    // which is no start.
    let other = fixture("transfer_step.initial.safetensors");
    let o = cnnc(&[
        "run",
        "models/mnist_cnn.cnn",
        "--init",
        other.to_str().unwrap(),
        "--skip-mismatch",
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("no tensor of `tests/fixtures/keras/transfer_step.initial.safetensors` fits the model"),
        "{e}"
    );
    let o = cnnc(&["check", "models/mnist_cnn.cnn", "--freeze", "conv2d,dens"]);
    let e = stderr(&o);
    assert!(
        e.contains("the model has no layer `dens`\n  = help: did you mean `dense`?"),
        "{e}"
    );
    let o = cnnc(&["check", "models/mnist_cnn.cnn", "--freeze-until", "dropout"]);
    let summary = stdout(&o);
    // conv2d (320) and conv2d_1 (9,248) frozen; the dense layers train.
    assert!(summary.contains("Trainable params: 591,242"), "{summary}");
    assert!(summary.contains("Non-trainable params: 9,568"), "{summary}");
}

/// `cnnc bench --profile`: the frozen convolutions' weight gradients and
/// updates are not among the kernels of the training step.
#[test]
fn bench_profile_computes_no_gradient_of_frozen_weights() {
    let profile = |freeze: &[&str]| {
        let args = [
            "bench",
            "models/mnist_cnn.cnn",
            "--jit-only",
            "--profile",
            "--steps",
            "1",
            "--batch",
            "2",
        ];
        run(&[&args[..], freeze].concat())
    };
    let all = profile(&[]);
    let frozen = profile(&["--freeze-until", "max_pooling2d"]);
    for slot in [
        "%conv2d/kernel/momentum",
        "%conv2d_1/kernel/momentum",
        "%conv2d_1/bias/momentum",
    ] {
        assert!(all.contains(slot), "{slot} not in:\n{all}");
        assert!(!frozen.contains(slot), "{slot} in:\n{frozen}");
    }
    assert!(all.contains("maxpool2d_grad"), "{all}");
    // Nothing before the frozen pooling needs a gradient, not even its input's.
    assert!(!frozen.contains("maxpool2d_grad"), "{frozen}");
    assert!(frozen.contains("%dense/kernel/momentum"), "{frozen}");
}
