//! The optimizers update weights as Keras 3 does, step for step: checked
//! against Keras's update rules written out here, on a one-weight model
//! whose gradient is known in closed form; and against Keras 3 itself, two
//! steps of a small CNN from given weights with RMSprop, Nesterov momentum
//! and kernel regularizers (tests/fixtures/keras/make_steps.py).

mod common;

use cnnc::ir::Hyper;
use cnnc::parse::ast::Optimizer;
use cnnc::runtime::checkpoint::{self, Tensor};
use cnnc::runtime::engine::{Engine, Graphs, Interpreter, Kind, Step};
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::{initial_weights, optim, train};
use ndarray::{ArrayD, IxDyn};
use std::path::Path;

/// `loss = (w x - y)^2`, so `dloss/dw = 2 x (w x - y)`.
const MODEL: &str = "input 1
dense 1 use_bias=false kernel_initializer=[0.5]
train {
  loss mean_squared_error
}
";
const X: f64 = 2.0;
const Y: f64 = 3.0;

fn grad(w: f64) -> f64 {
    2.0 * X * (w * X - Y)
}

/// Keras 3's update rules, in f64.
fn keras(optimizer: &Optimizer, steps: usize) -> f64 {
    let mut w = 0.5;
    let (mut m, mut v, mut a) = (0.0, 0.0, 0.0);
    for t in 1..=steps {
        let g = grad(w);
        match *optimizer {
            Optimizer::Sgd {
                learning_rate,
                momentum,
                nesterov,
            } => {
                m = momentum * m - learning_rate * g;
                w += if nesterov { momentum * m - learning_rate * g } else { m };
            }
            Optimizer::Adam {
                learning_rate,
                beta_1,
                beta_2,
                epsilon,
            } => {
                let alpha = learning_rate * (1.0 - beta_2.powi(t as i32)).sqrt() / (1.0 - beta_1.powi(t as i32));
                m += (g - m) * (1.0 - beta_1);
                v += (g * g - v) * (1.0 - beta_2);
                w -= alpha * m / (v.sqrt() + epsilon);
            }
            Optimizer::Rmsprop {
                learning_rate,
                rho,
                momentum,
                epsilon,
                centered,
            } => {
                v = rho * v + (1.0 - rho) * g * g;
                a = rho * a + (1.0 - rho) * g;
                let denominator = if centered { v - a * a + epsilon } else { v + epsilon };
                let increment = learning_rate * g / denominator.sqrt();
                m = momentum * m + increment;
                w -= if momentum > 0.0 { m } else { increment };
            }
        }
    }
    w
}

fn train(engine: &mut dyn Engine, graphs: &Graphs, optimizer: &Optimizer, steps: usize) -> f32 {
    let mut state: Vec<ArrayD<f32>> = graphs
        .train
        .vars
        .iter()
        .map(|v| ArrayD::zeros(IxDyn(&v.shape)))
        .collect();
    state[0] = ArrayD::from_elem(IxDyn(&[1, 1]), 0.5);
    let x = ArrayD::from_elem(IxDyn(&[1, 1]), X as f32);
    let y = ArrayD::from_elem(IxDyn(&[1, 1]), Y as f32);
    for iterations in 0..steps as u64 {
        let hyper = |h: Hyper| optim::hyper(optimizer, iterations, h);
        let step = Step {
            inputs: x.view(),
            targets: Some(y.view()),
            masks: &[],
            hyper: &hyper,
        };
        engine.run(Kind::Train, &mut state, &step).unwrap();
    }
    state[0][[0, 0]]
}

#[test]
fn sgd_momentum_nesterov_adam_and_rmsprop_follow_keras() {
    let checked = common::checked("one_weight", MODEL);
    for optimizer in [
        Optimizer::SGD,
        Optimizer::Sgd {
            learning_rate: 0.01,
            momentum: 0.9,
            nesterov: false,
        },
        Optimizer::Sgd {
            learning_rate: 0.01,
            momentum: 0.9,
            nesterov: true,
        },
        Optimizer::ADAM,
        Optimizer::Adam {
            learning_rate: 0.1,
            beta_1: 0.8,
            beta_2: 0.99,
            epsilon: 1e-3,
        },
        Optimizer::RMSPROP,
        Optimizer::Rmsprop {
            learning_rate: 0.01,
            rho: 0.8,
            momentum: 0.5,
            epsilon: 1e-3,
            centered: false,
        },
        Optimizer::Rmsprop {
            learning_rate: 0.01,
            rho: 0.8,
            momentum: 0.0,
            epsilon: 1e-6,
            centered: true,
        },
        Optimizer::Rmsprop {
            learning_rate: 0.01,
            rho: 0.7,
            momentum: 0.9,
            epsilon: 1e-6,
            centered: true,
        },
    ] {
        let graphs = Graphs::new(&checked, &optimizer).unwrap();
        let engines: [(&str, Box<dyn Engine>); 2] = [
            ("interp", Box::new(Interpreter::new(graphs.clone()))),
            ("jit", Box::new(Compiled::new(graphs.clone()))),
        ];
        for (name, mut engine) in engines {
            let w = train(engine.as_mut(), &graphs, &optimizer, 5);
            let want = keras(&optimizer, 5);
            assert!(
                (f64::from(w) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{optimizer:?} on {name}: {w}, Keras's rule gives {want}"
            );
        }
    }
}

/// make_steps.py's model; `{conv}`, `{dense}` and `{head}` are each layer's
/// further arguments.
const STEPS_MODEL: &str = "input 6x6x2
conv2d 3 3x3 activation=relu {conv}
maxpool2d 2x2
flatten
dense 5 activation=tanh {dense}
dense 3 activation=softmax {head}
";

fn steps_fixture(name: &str) -> std::path::PathBuf {
    Path::new("tests/fixtures/keras").join(format!("steps.{name}.safetensors"))
}

/// The tensors `expected` of a fixture file.
fn tensors(path: &Path, expected: &[(&str, &[usize])]) -> Vec<Tensor> {
    let (found, problems) = checkpoint::inspect(path, expected).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.tensors.len(), expected.len(), "{problems:?}");
    found.tensors
}

/// Two steps of make_steps.py's model on its batch, from its weights, on
/// both engines, against Keras's weights and reported losses afterwards.
fn two_steps_match_keras(case: &str, optimizer: Optimizer, regularized: bool) {
    let source = if regularized {
        STEPS_MODEL
            .replace("{conv}", "kernel_regularizer=l2(0.01)")
            .replace("{dense}", "kernel_regularizer=l1(0.01)")
            .replace("{head}", "kernel_regularizer=l1_l2(l1=0.003, l2=0.02)")
    } else {
        ["{conv}", "{dense}", "{head}"]
            .iter()
            .fold(STEPS_MODEL.to_string(), |s, k| s.replace(k, ""))
    };
    let checked = common::checked("steps.cnn", &source);
    let graphs = Graphs::new(&checked, &optimizer).unwrap();
    let fresh = initial_weights::<f32>(&checked, 0);
    let weights = fresh.len();
    let initial =
        train::initial_from(&steps_fixture("initial"), &graphs, fresh, false).unwrap_or_else(|e| panic!("{e}"));
    let batch = tensors(&steps_fixture("batch"), &[("x", &[4, 6, 6, 2]), ("y", &[4, 3])]);
    let [x, y] = [&batch[0], &batch[1]].map(|t| ArrayD::from_shape_vec(IxDyn(&t.shape), t.data.clone()).unwrap());
    let shapes: Vec<(&str, &[usize])> = graphs.train.vars[..weights]
        .iter()
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let keras_weights = tensors(&steps_fixture(case), &shapes);
    let (keras_losses, _) = checkpoint::inspect(&steps_fixture("losses"), &[(case, &[2])]).unwrap();
    let keras_loss = &keras_losses.tensors[0];
    let engines: [(&str, Box<dyn Engine>); 2] = [
        ("interp", Box::new(Interpreter::new(graphs.clone()))),
        ("jit", Box::new(Compiled::new(graphs.clone()))),
    ];
    for (engine_name, mut engine) in engines {
        let mut state = initial.values.clone();
        state.extend(
            graphs.train.vars[weights..]
                .iter()
                .map(|v| ArrayD::zeros(IxDyn(&v.shape))),
        );
        let mut losses = Vec::new();
        for iterations in 0..2 {
            let hyper = |h| optim::hyper(&optimizer, iterations, h);
            let step = Step {
                inputs: x.view(),
                targets: Some(y.view()),
                masks: &[],
                hyper: &hyper,
            };
            losses.push(engine.train_step(&mut state, &step).unwrap().loss);
        }
        for (k, (ours, before)) in keras_weights.iter().zip(state.iter().zip(&initial.values)) {
            let differs = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let ours = ours.as_slice().unwrap();
            let diff = differs(ours, &k.data);
            assert!(
                diff <= 1e-5,
                "{case} on {engine_name}: `{}` differs from Keras's by {diff}",
                k.name
            );
            // Steps that moved nothing would match trivially.
            let moved = differs(ours, before.as_slice().unwrap());
            assert!(
                moved > 1e-3,
                "{case} on {engine_name}: `{}` moved by {moved} only",
                k.name
            );
        }
        for (ours, theirs) in losses.iter().zip(&keras_loss.data) {
            assert!(
                (ours - theirs).abs() <= 1e-5,
                "{case} on {engine_name}: loss {ours}, Keras reported {theirs}"
            );
        }
    }
}

#[test]
fn rmsprop_with_keras_defaults_steps_as_keras_does() {
    two_steps_match_keras("rmsprop", Optimizer::RMSPROP, false);
}

#[test]
fn centered_rmsprop_with_momentum_steps_as_keras_does() {
    let optimizer = Optimizer::Rmsprop {
        learning_rate: 0.01,
        rho: 0.8,
        momentum: 0.5,
        epsilon: 1e-6,
        centered: true,
    };
    two_steps_match_keras("rmsprop_centered", optimizer, false);
}

#[test]
fn sgd_with_nesterov_momentum_steps_as_keras_does() {
    let optimizer = Optimizer::Sgd {
        learning_rate: 0.1,
        momentum: 0.9,
        nesterov: true,
    };
    two_steps_match_keras("nesterov", optimizer, false);
}

/// L2, L1 and L1L2 penalties in the gradient and in the reported loss.
#[test]
fn kernel_regularizers_step_and_report_the_loss_as_keras_does() {
    two_steps_match_keras("regularized", Optimizer::SGD.with_learning_rate(0.1), true);
}

/// Each optimizer's slots are the graph's variables after the weights,
/// named as Keras 3 names them, in the order `optim::slots` gives.
#[test]
fn optimizer_slots_have_keras_names() {
    let checked = common::checked("one_weight", MODEL);
    for optimizer in [
        Optimizer::SGD,
        Optimizer::ADAM,
        Optimizer::RMSPROP,
        Optimizer::Rmsprop {
            learning_rate: 0.01,
            rho: 0.9,
            momentum: 0.9,
            epsilon: 1e-7,
            centered: true,
        },
    ] {
        let graphs = Graphs::new(&checked, &optimizer).unwrap();
        let names: Vec<&str> = graphs.train.vars.iter().map(|v| v.name.as_str()).collect();
        let want: Vec<String> = std::iter::once("dense/kernel".to_string())
            .chain(optim::slots(&optimizer).iter().map(|s| format!("dense/kernel/{s}")))
            .collect();
        assert_eq!(names, want, "{optimizer:?}");
    }
    let centered = Optimizer::Rmsprop {
        learning_rate: 0.01,
        rho: 0.9,
        momentum: 0.9,
        epsilon: 1e-7,
        centered: true,
    };
    assert_eq!(optim::slots(&centered), ["velocity", "momentum", "average_gradient"]);
}
