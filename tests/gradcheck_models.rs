//! Finite-difference gradient checks of whole models: every model in
//! `models/`, and variants that cover the convolution and pooling cases the
//! seed models do not (strides 2, `same` with even kernels, non-square
//! windows, pool strides unlike the pool, frozen layers, every loss,
//! kernel regularizers).

mod common;

use cnnc::runtime::gradcheck::{TOLERANCE, check_model};
use common::{checked, checked_file, models, stem};

fn assert_passes(name: &str, c: &cnnc::shape::Checked, per_var: usize, seeds: &[u64]) {
    for &seed in seeds {
        let report = check_model::<cnnc::runtime::jit::Compiled>(c, seed, 3, per_var, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let worst = report.worst().unwrap_or_else(|| panic!("{name}: nothing checked"));
        assert!(worst.error <= TOLERANCE, "{name} seed {seed}: {worst:?}\n{report}");
    }
}

#[test]
fn every_model_in_models() {
    for path in models() {
        let name = stem(&path);
        let model = checked_file(&path);
        // A model of designed, frozen filters (edges) has no weight to
        // differentiate; its input's gradient is checked in jit_differential.
        if model.weights().all(|w| !w.trainable) {
            continue;
        }
        // celeb8 is large for an interpreter in f64: fewer elements, one
        // seed; layer_tour has 19 weights: fewer elements of each.
        let (per_var, seeds): (usize, &[u64]) = match name.as_str() {
            "celeb8" => (2, &[1]),
            "layer_tour" => (3, &[1, 2]),
            _ => (8, &[1, 2]),
        };
        assert_passes(&name, &model, per_var, seeds);
    }
}

const STRIDES_AND_PADDINGS: &str = "
input 12x11x2
conv2d 3 3x3 strides=2 padding=same activation=tanh    # 6x6: stride 2, same, odd kernel
conv2d 4 2x2 padding=same                              # even kernel, odd pixel bottom/right
batchnorm
activation sigmoid
conv2d 3 5x3 strides=1x2                               # non-square kernel and strides: 2x2
maxpool2d 3x2 strides=1x2 padding=same                 # non-square pool, strides unlike it
dropout 0.3
flatten
dense 5 activation=tanh
dense 3 activation=softmax
";

const CROPPED_STRIDE_BINARY: &str = "
input 8x8x1
conv2d 2 3x3 strides=2 activation=relu   # row and column 7 are never read
conv2d 2 2x2 activation=tanh             # even kernel, valid
maxpool2d 2x2 strides=1
flatten
dense 1 activation=sigmoid
train {
  loss binary_crossentropy
}
";

const FROZEN_EDGE_FILTER_MSE: &str = "
input 7x7x1
conv2d 1 3x3 padding=same use_bias=false trainable=false kernel_initializer=[0, -1, 0, -1, 5, -1, 0, -1, 0]
conv2d 2 3x3 activation=relu
maxpool2d 2x2 padding=same
flatten
dense 4 activation=relu
batchnorm center=false momentum=0.9
dense 2
train {
  loss mean_squared_error
}
";

/// Every kind of kernel regularizer, large enough that its penalty weighs
/// in the gradient, and one on a frozen layer (which Keras leaves out).
const REGULARIZED: &str = "
input 6x6x2
conv2d 2 3x3 activation=tanh kernel_regularizer=l2(0.3) trainable=false
conv2d 3 2x2 activation=tanh kernel_regularizer=l1(0.2)
flatten
dense 4 activation=tanh kernel_regularizer=l1_l2(l1=0.1, l2=0.4)
dense 3 activation=softmax kernel_regularizer=l2
";

#[test]
fn convolution_and_pooling_variants() {
    for (name, source) in [
        ("strides_and_paddings", STRIDES_AND_PADDINGS),
        ("cropped_stride_binary", CROPPED_STRIDE_BINARY),
        ("frozen_edge_filter_mse", FROZEN_EDGE_FILTER_MSE),
        ("regularized", REGULARIZED),
    ] {
        assert_passes(name, &checked(name, source), 10, &[1, 2]);
    }
}

#[test]
fn frozen_layers_get_no_gradient_and_the_input_none() {
    let c = checked("frozen", FROZEN_EDGE_FILTER_MSE);
    let mut graph = cnnc::lower::lower(&c, cnnc::lower::Mode::Training).unwrap();
    cnnc::autodiff::differentiate(&mut graph).unwrap();
    let grads: Vec<&str> = graph
        .outputs
        .iter()
        .filter_map(|(o, _)| match o {
            cnnc::ir::Output::Grad(v) => Some(graph.vars[*v].name.as_str()),
            _ => None,
        })
        .collect();
    assert!(!grads.contains(&"conv2d/kernel"), "{grads:?}");
    assert!(grads.contains(&"conv2d_1/kernel"), "{grads:?}");
    // Nothing in the backward graph has the shape of the input batch: its
    // gradient is never computed, not even through the frozen layer.
    let input = cnnc::ir::Shape::batch_of(&[7, 7, 1]);
    let backward_input_shaped = graph
        .nodes
        .node_weights()
        .filter(|n| n.origin.phase == cnnc::ir::Phase::Backward && n.shape == input)
        .count();
    assert_eq!(backward_input_shaped, 0);
}

/// The compiled engine's gradients (f32) against the same f64 central
/// differences, as `cnnc gradcheck` (whose default engine it is) runs them.
#[test]
fn every_model_with_the_compiled_engine() {
    for path in models() {
        let name = stem(&path);
        let c = checked_file(&path);
        let graphs = cnnc::runtime::engine::Graphs::new(&c, &cnnc::parse::ast::Optimizer::ADAM).unwrap();
        let mut engine = cnnc::runtime::jit::Compiled::new(graphs);
        let per_var = match name.as_str() {
            "celeb8" => 2,
            "layer_tour" => 3,
            _ => 8,
        };
        let report = check_model(&c, 1, 3, per_var, Some(&mut engine)).unwrap();
        assert_eq!(report.precision, cnnc::runtime::gradcheck::F32);
        assert!(report.passed(), "{name}: {:?}\n{report}", report.worst());
    }
}

#[test]
fn the_cli_reports_each_weight_and_passes() {
    let out = common::cnnc(&["gradcheck", "models/keras_intro.cnn", "--engine", "interp"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains("conv2d/kernel") && text.contains("dense/bias") && text.starts_with("gradient check"));
    assert!(text.contains("ok: worst:"), "{text}");
}
