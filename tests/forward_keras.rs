//! Forward semantics equal Keras's: a convolution with `same` padding and an
//! even kernel (the odd pixel goes bottom/right), a strided max-pool with
//! `same` padding (padding never wins), and flatten-then-dense in H, W, C
//! order; every activation on a range of inputs, and every layer of
//! `models/layer_tour.cnn` (depthwise convolutions, average pooling with
//! `same` padding, whose padded cells are not counted, global pooling, the
//! activation layers), in the interpreter and in compiled code. The
//! expected numbers come from Keras 3.15 (JAX) runs of the same models with
//! the same weights, not from cnnc: the first model's are below, the others'
//! in `tests/fixtures/keras` (made by its `make_layers.py`):
//!
//! ```python
//! m = keras.Sequential([keras.Input((5, 5, 2)),
//!     keras.layers.Conv2D(3, (2, 2), padding="same"),
//!     keras.layers.MaxPooling2D((3, 3), strides=2, padding="same"),
//!     keras.layers.Flatten(), keras.layers.Dense(2)])
//! # weights and input: round(sin(1.7 i + k) * 0.9, 3), as listed below
//! ```

mod common;

use cnnc::interp::{self, Feeds};
use cnnc::ir::{Hyper, Output, Phase};
use cnnc::lower::{Mode, lower};
use cnnc::parse::ast::Optimizer;
use cnnc::runtime::engine::{Engine, Graphs, Interpreter};
use cnnc::runtime::jit::Compiled;
use cnnc::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

const MODEL: &str = "
input 5x5x2
conv2d 3 2x2 padding=same kernel_initializer=[0.802, 0.301, -0.88, -0.075, 0.899, -0.157, -0.859, 0.378, 0.761, -0.574, -0.613, 0.732, 0.424, -0.842, -0.208, 0.895, -0.023, -0.889, 0.252, 0.824, -0.465, -0.704, 0.646, 0.538] bias_initializer=[0.818, -0.477, -0.695]
maxpool2d 3x3 strides=2 padding=same
flatten
dense 2 kernel_initializer=[0.58, 0.608, -0.736, -0.418, 0.844, 0.201, -0.896, 0.03, 0.888, -0.259, -0.821, 0.471, 0.7, -0.651, -0.532, 0.788, 0.329, -0.873, -0.104, 0.9, -0.128, -0.867, 0.351, 0.776, -0.551, -0.634, 0.715, 0.45, -0.831, -0.236, 0.892, 0.006, -0.893, 0.224, 0.836, -0.439, -0.722, 0.625, 0.561, -0.77, -0.363, 0.863, 0.14, -0.9, 0.091, 0.876, -0.317, -0.794, 0.522, 0.66, -0.692, -0.482, 0.816, 0.271] bias_initializer=[0.09, 0.876]
";

const INPUT: [f32; 50] = [
    0.266, 0.818, -0.477, -0.695, 0.656, 0.526, -0.792, -0.322, 0.875, 0.097, -0.9, 0.135, 0.865, -0.358, -0.773,
    0.557, 0.629, -0.719, -0.444, 0.834, 0.229, -0.893, 0.001, 0.892, -0.231, -0.833, 0.445, 0.718, -0.63, -0.556,
    0.774, 0.356, -0.865, -0.133, 0.9, -0.099, -0.874, 0.324, 0.791, -0.528, -0.655, 0.697, 0.475, -0.819, -0.264,
    0.887, 0.036, -0.896, 0.195, 0.846,
];

const KERAS_CONV: [f64; 75] = [
    1.9878921,
    1.820364,
    -2.456887,
    -0.918431,
    -2.3170779,
    1.5155761,
    3.0052652,
    0.78321707,
    -3.2069738,
    -1.6761699,
    -1.0737541,
    1.9529042,
    2.070649,
    0.22824395,
    -2.129303,
    -1.781323,
    0.32466608,
    1.69769,
    3.2098532,
    -1.9219319,
    -2.714458,
    -1.2081368,
    1.513748,
    0.818096,
    2.3430171,
    -2.8826258,
    -1.6000731,
    -0.36537796,
    0.6823701,
    0.19010603,
    1.0782139,
    -3.2158699,
    -0.24941897,
    1.2391741,
    2.1575549,
    -1.7950759,
    -0.25452298,
    -2.833717,
    0.98481506,
    2.471802,
    1.444267,
    -2.8438709,
    0.21726406,
    -1.8203521,
    0.25155598,
    3.273796,
    0.22838193,
    -3.3325229,
    -1.8046098,
    -0.48169196,
    1.9287701,
    3.4338,
    -1.17135,
    -3.1318219,
    -1.616745,
    0.87135601,
    1.392236,
    2.331832,
    -0.89722896,
    -2.100838,
    0.30249602,
    0.634045,
    -0.46606201,
    0.97801304,
    -1.713829,
    -0.53603697,
    1.0231271,
    0.803805,
    -1.2304151,
    0.26096302,
    -1.716556,
    0.18165904,
    0.91093999,
    0.34224898,
    -0.99942195,
];

const KERAS_POOL: [f64; 27] = [
    3.2098532, 1.820364, 1.69769, 3.2098532, 1.513748, 1.9529042, 2.3430171, 0.6823701, 1.9529042, 3.273796, 2.1575549,
    1.9287701, 3.4338, 2.1575549, 1.9287701, 2.471802, 1.444267, 1.392236, 3.273796, 0.634045, 1.9287701, 3.4338,
    0.87135601, 1.9287701, 2.331832, 0.87135601, 1.392236,
];

const KERAS_DENSE: [f64; 2] = [0.007204406, 1.838055];

#[test]
fn conv_pool_flatten_dense_match_keras() {
    let checked = common::checked("keras_forward", MODEL);
    let graph = lower(&checked, Mode::Inference).unwrap();
    let vars = cnnc::runtime::initial_weights::<f32>(&checked, 0);
    let input = ArrayD::from_shape_vec(IxDyn(&[1, 5, 5, 2]), INPUT.to_vec()).unwrap();
    // Expose each layer's last node as an output, to compare layer by layer.
    let mut g = graph.clone();
    let order = g.schedule();
    let layer_out = |name: &str| {
        *order
            .iter()
            .rev()
            .find(|&&n| g[n].origin.what == name && g[n].origin.phase == Phase::Forward)
            .unwrap()
    };
    let (conv, pool) = (layer_out("conv2d"), layer_out("max_pooling2d"));
    g.outputs.push((Output::Grad(0), conv));
    g.outputs.push((Output::Grad(1), pool));
    let hyper = |_: Hyper| 0.0;
    let out = interp::run(
        &g,
        &Feeds {
            input: input.view(),
            label: None,
            vars: &vars,
            masks: &[],
            hyper: &hyper,
        },
    )
    .unwrap();
    let close = |what: &str, got: &ArrayD<f32>, want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let g = f64::from(*g);
            assert!(
                (g - w).abs() <= 2e-5 * w.abs().max(1.0),
                "{what}[{i}]: cnnc {g}, Keras {w}"
            );
        }
    };
    close("conv2d", &out[1].1, &KERAS_CONV);
    close("max_pooling2d", &out[2].1, &KERAS_POOL);
    close("dense", &out[0].1, &KERAS_DENSE);
}

/// The float32 tensors of a safetensors fixture, by name.
fn fixture(name: &str) -> HashMap<String, ArrayD<f32>> {
    let bytes = std::fs::read(format!("tests/fixtures/keras/{name}")).expect("the fixture");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (
                name,
                ArrayD::from_shape_vec(IxDyn(view.shape()), values).expect("shape"),
            )
        })
        .collect()
}

/// Within 1e-5 of Keras's value (relative above 1).
fn matches_keras(what: &str, got: &ArrayD<f32>, keras: &ArrayD<f32>) {
    assert_eq!(got.shape(), keras.shape(), "{what}");
    for (i, (g, k)) in got.iter().zip(keras).enumerate() {
        assert!(
            (g - k).abs() <= 1e-5 * k.abs().max(1.0),
            "{what}[{i}]: cnnc {g}, Keras {k}"
        );
    }
}

/// Every layer's output, by layer index, from the interpreter and from
/// compiled code.
fn every_layer(checked: &Checked, weights: &[ArrayD<f32>], input: &ArrayD<f32>) -> [Vec<(usize, ArrayD<f32>)>; 2] {
    let layers: Vec<usize> = (0..checked.model.layers.len()).collect();
    let graphs = Graphs::new(checked, &Optimizer::ADAM)
        .and_then(|g| g.probing(checked, &layers))
        .unwrap();
    let mut state = weights.to_vec();
    let interpreted = Interpreter::new(graphs.clone())
        .probe(&mut state, input.view())
        .unwrap();
    let compiled = Compiled::new(graphs).probe(&mut state, input.view()).unwrap();
    [interpreted.layers, compiled.layers]
}

#[test]
fn every_activation_matches_keras_over_its_range() {
    let keras = fixture("activations.safetensors");
    let x = &keras["x"];
    let n = x.len();
    let input = x.clone().into_shape_with_order(IxDyn(&[1, n])).unwrap();
    let cases = [
        ("activation elu", "activation/elu"),
        ("activation selu", "activation/selu"),
        ("activation leaky_relu", "activation/leaky_relu"),
        ("activation gelu", "activation/gelu"),
        ("activation silu", "activation/silu"),
        ("activation swish", "activation/swish"),
        ("activation softplus", "activation/softplus"),
        ("leakyrelu", "layer/LeakyReLU"),
        ("leakyrelu 0.1", "layer/LeakyReLU_0.1"),
        ("elu", "layer/ELU"),
        ("elu alpha=0.5", "layer/ELU_0.5"),
    ];
    for (layer, name) in cases {
        let checked = common::checked("activation", &format!("input {n}\n{layer}\n"));
        let want = keras[name].clone().into_shape_with_order(IxDyn(&[1, n])).unwrap();
        for (engine, outputs) in ["interpreter", "compiled"]
            .iter()
            .zip(every_layer(&checked, &[], &input))
        {
            matches_keras(&format!("{layer} ({engine})"), &outputs[0].1, &want);
        }
    }
}

#[test]
fn every_layer_of_the_layer_tour_matches_keras() {
    let keras = fixture("layer_tour.layers.safetensors");
    let checked = common::checked_file(std::path::Path::new("models/layer_tour.cnn"));
    // Keras 3 names variables by path, the model's name first.
    let weights: Vec<ArrayD<f32>> = checked
        .weights()
        .map(|w| keras[&format!("layer_tour/{}", w.name)].clone())
        .collect();
    for (engine, outputs) in ["interpreter", "compiled"]
        .iter()
        .zip(every_layer(&checked, &weights, &keras["input"]))
    {
        assert_eq!(outputs.len(), checked.model.layers.len());
        for (i, out) in outputs {
            let name = &checked.model.layers[i].name;
            matches_keras(&format!("{name} ({engine})"), &out, &keras[&format!("output/{name}")]);
        }
    }
}
