//! The compiled engine against the reference interpreter on the seed
//! models: inference and a whole training step (forward, backward, Adam
//! update) at batch 1, 32 and 128, and the time to compile each model's
//! graphs. `cargo bench --bench compiled_vs_interpreted`; for a quick
//! side-by-side table with GFLOP/s and a per-kernel profile, `cnnc bench`.

use cnnc::codegen::Options;
use cnnc::ir::Hyper;
use cnnc::parse::ast::Optimizer;
use cnnc::runtime::engine::{Engine, Graphs, Interpreter, Kind, Step};
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::rng::Rng;
use cnnc::runtime::{dropout_masks, gradcheck::random_batch, initial_weights};
use cnnc::shape::Checked;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ndarray::ArrayD;
use std::hint::black_box;
use std::time::Duration;

const MODELS: [&str; 6] = [
    "logistic",
    "keras_intro",
    "do_the_math",
    "mnist_cnn",
    "fcnn_homework",
    "celeb8",
];

fn checked(name: &str) -> Checked {
    let path = format!("models/{name}.cnn");
    let source = std::fs::read_to_string(&path).expect("the seed models are in models/");
    let model = cnnc::parse::parse(&path, &source).expect("seed models parse");
    cnnc::shape::check(model, &path, &source).expect("seed models check")
}

struct Setup {
    graphs: Graphs,
    state: Vec<ArrayD<f32>>,
    weights: usize,
    input: ArrayD<f32>,
    label: ArrayD<f32>,
    masks: Vec<ArrayD<f32>>,
}

fn setup(checked: &Checked, batch: usize) -> Setup {
    let graphs = Graphs::new(checked, &Optimizer::ADAM).expect("graphs");
    let mut rng = Rng::new(1);
    let (x, y) = random_batch(checked, batch, &mut rng);
    let mut state = initial_weights::<f32>(checked, 0);
    let weights = state.len();
    state.extend(
        graphs.train.vars[weights..]
            .iter()
            .map(|v| ArrayD::zeros(ndarray::IxDyn(&v.shape))),
    );
    Setup {
        masks: dropout_masks(&graphs.train, batch, &mut rng),
        graphs,
        state,
        weights,
        input: x.mapv(|v| v as f32),
        label: y.mapv(|v| v as f32),
    }
}

fn hyper(_: Hyper) -> f64 {
    1e-4
}

fn steps(c: &mut Criterion) {
    for name in MODELS {
        let checked = checked(name);
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for batch in [1, 32, 128] {
            let s = setup(&checked, batch);
            let step = Step {
                inputs: s.input.view(),
                targets: Some(s.label.view()),
                masks: &s.masks,
                hyper: &hyper,
            };
            let engines: [(&str, Box<dyn Engine>); 2] = [
                ("jit", Box::new(Compiled::new(s.graphs.clone()))),
                ("interp", Box::new(Interpreter::new(s.graphs.clone()))),
            ];
            for (engine_name, mut engine) in engines {
                let mut state = s.state.clone();
                group.bench_function(BenchmarkId::new(format!("train_step/{engine_name}"), batch), |b| {
                    b.iter(|| black_box(engine.run(Kind::Train, &mut state, &step).expect("runs")))
                });
                let mut weights = s.state[..s.weights].to_vec();
                group.bench_function(BenchmarkId::new(format!("forward/{engine_name}"), batch), |b| {
                    b.iter(|| black_box(engine.run(Kind::Predict, &mut weights, &step).expect("runs")))
                });
            }
        }
        group.finish();
    }
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for name in MODELS {
        let graphs = Graphs::new(&checked(name), &Optimizer::ADAM).expect("graphs");
        // Both graphs a training run needs, from the optimized graph to
        // native code.
        group.bench_function(name, |b| {
            b.iter(|| {
                for kind in [Kind::Train, Kind::Predict] {
                    black_box(Compiled::compile(&graphs, kind, 32, Options::default()).expect("compiles"));
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Reports as text; the HTML plots need system fonts the project does
    // not assume.
    config = Criterion::default().without_plots();
    targets = compile, steps
}
criterion_main!(benches);
