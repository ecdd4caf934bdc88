//! The optimizers update weights as Keras 3 does, step for step: checked
//! against Keras's update rules written out here, on a one-weight model
//! whose gradient is known in closed form.

mod common;

use cnnc::ir::Hyper;
use cnnc::parse::ast::Optimizer;
use cnnc::runtime::engine::{Engine, Graphs, Interpreter, Kind, Step};
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::optim;
use ndarray::{ArrayD, IxDyn};

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
    let (mut m, mut v) = (0.0, 0.0);
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
fn sgd_momentum_nesterov_and_adam_follow_keras() {
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
