//! Looking inside a model: the probe routine's layer outputs through
//! `cnnc predict --layer`, the saliency routine (the gradient of a class's
//! score with respect to the input) on both engines, and weights files
//! with extra tensors (`--allow-extra`).

mod common;

use cnnc::parse::ast::Optimizer;
use cnnc::runtime::checkpoint::{self, Metadata, Tensor};
use cnnc::runtime::engine::{Engine, Graphs, Interpreter};
use cnnc::runtime::initial_weights;
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::npy;
use cnnc::shape::Checked;
use common::{Scratch, checked, stderr, stdout};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn engines(graphs: &Graphs) -> Vec<(&'static str, Box<dyn Engine>)> {
    vec![
        ("jit", Box::new(Compiled::new(graphs.clone()))),
        ("interp", Box::new(Interpreter::new(graphs.clone()))),
    ]
}

fn one_hot(rows: usize, classes: usize, class: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[rows, classes]), |d| f32::from(u8::from(d[1] == class)))
}

/// A linear model's score is `x . kernel[:, k] + bias[k]`: its saliency is
/// the kernel's column k, whatever the input, and a softmax on top changes
/// nothing (the score is the logit).
#[test]
fn the_saliency_of_a_linear_model_is_its_weights() {
    let kernel = [0.5f32, -1.0, 2.0, 0.25, -3.0, 1.5, 0.0, 4.0, -0.75, 1.0, 0.125, -2.0];
    let literal: Vec<String> = kernel.iter().map(f32::to_string).collect();
    for head in ["", " activation=softmax"] {
        let source = format!(
            "input 2x2x1\nflatten\ndense 3{head} kernel_initializer=[{}] bias_initializer=[1, 2, 3]\n",
            literal.join(", ")
        );
        let model = checked("linear.cnn", &source);
        let graphs = Graphs::new(&model, &Optimizer::ADAM).unwrap();
        let mut weights = initial_weights::<f32>(&model, 0);
        let inputs = ArrayD::from_shape_fn(IxDyn(&[2, 2, 2, 1]), |d| (d[0] * 4 + d[1] * 2 + d[2]) as f32 - 3.5);
        for (engine_name, mut engine) in engines(&graphs) {
            for class in 0..3 {
                let grad = engine
                    .saliency(&mut weights, inputs.view(), one_hot(2, 3, class).view())
                    .unwrap();
                assert_eq!(grad.shape(), &[2, 2, 2, 1]);
                for (i, g) in grad.iter().enumerate() {
                    let want = kernel[(i % 4) * 3 + class];
                    assert!(
                        (g - want).abs() < 1e-6,
                        "{engine_name}{head}: class {class}, value {i}: {g} against {want}"
                    );
                }
            }
        }
    }
}

/// A network's saliency is its score's gradient: against central
/// differences of the score, in f64, through convolution (strided, `same`),
/// ReLU, max pooling, batch normalization and dense layers, for each class.
#[test]
fn saliency_is_the_gradient_of_the_score_by_finite_differences() {
    use cnnc::interp::{Feeds, run};
    use cnnc::ir::Output;
    let source = "input 6x5x2\nconv2d 3 3x3 strides=2 padding=same activation=tanh\nconv2d 4 2x2 padding=same activation=relu\nbatchnorm\nmaxpool2d 2x2 padding=same\nflatten\ndense 3\n";
    let model = checked("deep.cnn", source);
    let graphs = Graphs::new(&model, &Optimizer::ADAM).unwrap();
    let weights = initial_weights::<f64>(&model, 3);
    let x = ArrayD::from_shape_fn(IxDyn(&[1, 6, 5, 2]), |d| {
        ((d[1] * 5 + d[2]) as f64 * 0.7 + d[3] as f64).sin()
    });
    let outputs = |graph, x: &ArrayD<f64>, label: Option<&ArrayD<f64>>| {
        let feeds = Feeds {
            input: x.view(),
            label: label.map(|l| l.view()),
            vars: &weights,
            masks: &[],
            hyper: &|_| 0.0,
        };
        run(graph, &feeds).unwrap()
    };
    for class in 0..3 {
        let selector = ArrayD::from_shape_fn(IxDyn(&[1, 3]), |d| f64::from(u8::from(d[1] == class)));
        let grad = outputs(&graphs.saliency, &x, Some(&selector))
            .into_iter()
            .find(|(o, _)| *o == Output::InputGrad)
            .unwrap()
            .1;
        assert!(
            grad.iter().any(|g| g.abs() > 1e-3),
            "class {class}: no gradient reaches the input"
        );
        let score = |x: &ArrayD<f64>| outputs(&graphs.predict, x, None)[0].1[[0, class]];
        let h = 1e-6;
        for i in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up.as_slice_mut().unwrap()[i] += h;
            down.as_slice_mut().unwrap()[i] -= h;
            let numeric = (score(&up) - score(&down)) / (2.0 * h);
            let analytic = grad.as_slice().unwrap()[i];
            assert!(
                (numeric - analytic).abs() <= 1e-6 * numeric.abs().max(1e-2),
                "class {class}, input {i}: {analytic} against {numeric}"
            );
        }
    }
}

/// Saves the model's initial weights (its literal values) as a weights
/// file, with `extra` tensors besides.
fn save_weights(model: &Checked, path: &Path, extra: &[Tensor]) {
    let mut tensors: Vec<Tensor> = model
        .weights()
        .zip(initial_weights::<f32>(model, 0))
        .map(|(w, v)| Tensor {
            name: w.name.clone(),
            shape: w.shape.clone(),
            data: v.iter().copied().collect(),
        })
        .collect();
    tensors.extend(extra.iter().cloned());
    checkpoint::save(path, &tensors, &Metadata::new()).unwrap();
}

const EDGES: &str = "input 4x4x1\n\
    conv2d 1 2x2 use_bias=false activation=relu kernel_initializer=[-1, 1, -1, 1]\n\
    flatten\n\
    dense 2 activation=softmax kernel_initializer=[1, -1, 0, 0, 1, -1, 0, 0, 1, -1, 0, 0, 1, -1, 0, 0, 1, -1]\n";

struct Fixture {
    dir: Scratch,
    weights: PathBuf,
    image: PathBuf,
}

/// The edge model, its weights, and a 4x4 image dark on the left half and
/// bright on the right.
fn fixture(name: &str, extra: &[Tensor]) -> Fixture {
    let dir = Scratch::new(name);
    dir.write("edges.cnn", EDGES.as_bytes());
    let weights = dir.join("edges.safetensors");
    save_weights(&checked("edges.cnn", EDGES), &weights, extra);
    let image = dir.join("step.npy");
    let pixels: Vec<f32> = (0..16).map(|i| f32::from(u8::from(i % 4 >= 2))).collect();
    npy::write_f32(&image, &[4, 4, 1], &pixels).unwrap();
    Fixture { dir, weights, image }
}

/// `cnnc predict` run in the fixture's folder, where `--layer` writes.
fn predict(f: &Fixture, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .current_dir(f.dir.path())
        .args(["predict", "edges.cnn", "--weights"])
        .arg(&f.weights)
        .arg(&f.image)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn predict_writes_the_outputs_of_chosen_layers() {
    let f = fixture("probe-layer", &[]);
    for engine in ["jit", "interp"] {
        let o = predict(
            &f,
            &[
                "--layer", "conv2d", "--layer", "dense", "--output", "p.npy", "--engine", engine,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains("wrote the outputs of `conv2d`, (1, 3, 3, 1), to conv2d.npy\n"),
            "{out}"
        );
        assert!(
            out.contains("wrote the outputs of `dense`, (1, 2), to dense.npy\n"),
            "{out}"
        );
        // The vertical edge between columns 1 and 2, seen by both rows of
        // the kernel, and nothing elsewhere.
        let map = npy::read_f32(&f.dir.join("conv2d.npy")).unwrap();
        let want: Vec<f32> = (0..9).map(|i| if i % 3 == 1 { 2.0 } else { 0.0 }).collect();
        assert_eq!(map.iter().copied().collect::<Vec<_>>(), want, "{engine}");
        // The last layer's outputs are the prediction.
        let dense = npy::read_f32(&f.dir.join("dense.npy")).unwrap();
        let probabilities = npy::read_f32(&f.dir.join("p.npy")).unwrap();
        assert_eq!(dense, probabilities, "{engine}");
    }
}

#[test]
fn an_unknown_layer_is_refused_with_the_closest_name() {
    let f = fixture("probe-unknown", &[]);
    let o = predict(&f, &["--layer", "conv2"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: the model has no layer `conv2`\n  = help: did you mean `conv2d`? (its layers: conv2d, flatten, dense)\n"
    );
    assert!(!f.dir.join("conv2.npy").exists());
}

#[test]
fn extra_tensors_are_ignored_when_allowed_and_listed() {
    let head = Tensor {
        name: "dense_9/kernel".into(),
        shape: vec![2],
        data: vec![1.0, 2.0],
    };
    let exact = fixture("probe-exact", &[]);
    let larger = fixture("probe-extra", &[head]);
    let o = predict(&larger, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("`dense_9/kernel` is in the file but not in the model"),
        "{err}"
    );

    let o = predict(&larger, &["--allow-extra"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let note = format!(
        "note: ignored 1 tensor of {} that the model lacks: `dense_9/kernel`\n",
        larger.weights.display()
    );
    assert!(out.starts_with(&note), "{out}");
    // The same prediction as from the file that holds only the model's.
    let same = stdout(&predict(&exact, &[]));
    let strip = |s: &str, f: &Fixture| s.replace(&f.image.display().to_string(), "IMAGE");
    assert_eq!(strip(&out[note.len()..], &larger), strip(&same, &exact));
}
