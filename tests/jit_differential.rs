//! The compiled engine against the interpreter: forward outputs, every
//! layer's output, loss, every parameter gradient, a whole training step and
//! (against the interpreter in f64) the input's gradient agree on every model
//! in `models/` and on a few hundred random models (random stacks of the
//! language's layers and activations with random shapes, strides, paddings
//! and batch sizes, 1 included), and every convolution algorithm does on
//! random models of the convolutions it computes. Debug builds also check
//! every memory plan's invariants (`plan::verify`, run by `codegen::plan_for`).

mod common;

use cnnc::codegen::{self, ConvPolicy, Options};
use cnnc::interp::Feeds;
use cnnc::ir::{Builder, Conv, Hyper, NodeId, Op, Output, Pool};
use cnnc::parse::ast::Optimizer;
use cnnc::runtime::engine::{Engine, Graphs, Interpreter, Kind, Step};
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::rng::Rng;
use cnnc::runtime::{dropout_masks, gradcheck::random_batch, initial_weights};
use cnnc::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

/// `|a - b| <= 1e-4 * scale + floor` elementwise, `scale` the larger of the
/// two tensors' magnitudes: relative agreement, with an absolute floor for
/// values that are zero up to f32 rounding (a bias before batch
/// normalization has an exactly-zero gradient, computed as rounding noise
/// of the gradients it is summed from: `gradient_floor`).
fn agree(what: &str, jit: &ArrayD<f32>, interp: &ArrayD<f32>, floor: f32) -> Result<(), String> {
    if jit.shape() != interp.shape() {
        return Err(format!("{what}: shapes {:?} and {:?}", jit.shape(), interp.shape()));
    }
    let scale = jit.iter().chain(interp.iter()).fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = jit.iter().zip(interp).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    if worst <= 1e-4 * scale + floor {
        Ok(())
    } else {
        Err(format!("{what}: differs by {worst} at scale {scale}"))
    }
}

/// The absolute floor of values that are zero up to f32 rounding.
const FLOOR: f32 = 1e-5;

/// The floor of a routine's gradients: an exactly-zero gradient is
/// computed as a sum of the terms the others are made of, and rounds in
/// proportion to them (a 1x1 convolution of one filter before batch
/// normalization, with gradients of 0.6 beside it, gives 2e-5 for its
/// bias's zero, in f32).
fn gradient_floor(outputs: &[(Output, ArrayD<f32>)]) -> f32 {
    let largest = outputs
        .iter()
        .filter(|(o, _)| matches!(o, Output::Grad(_)))
        .flat_map(|(_, v)| v.iter())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    FLOOR * largest.max(1.0)
}

/// The input's gradient (saliency) against the interpreter in f64. One
/// ReLU or pooling tie that rounds the other way deep in the network moves
/// the gradient of a whole receptive field of pixels, where a weight's
/// gradient, a sum over the batch and the image, barely moves: on celeb8
/// the f32 interpreter's gradient is 2.6e-3 (L2) from f64's for that
/// reason, while every layer's output agrees to 4e-7. The compiled engine
/// is compared with f64 instead, in the L2 norm: `|a - b| <= 1e-4 |b|`,
/// or, where a tie decides, no further from f64 than twice the f32
/// interpreter is (on celeb8 the two engines' GEMMs sum in different orders,
/// and whichever rounds a tie the other way lands 2.6e-3 away).
fn saliency_agrees(
    checked: &Checked,
    graphs: &Graphs,
    batch: usize,
    seed: u64,
    options: Options,
) -> Result<(), String> {
    let name = &checked.model.name;
    let (x, y) = random_batch(checked, batch, &mut Rng::new(seed));
    let exact = initial_weights::<f64>(checked, seed);
    let feeds = Feeds {
        input: x.view(),
        label: Some(y.view()),
        vars: &exact,
        masks: &[],
        hyper: &|_| 0.0,
    };
    let reference = cnnc::interp::run(&graphs.saliency, &feeds).map_err(|e| format!("{name}: {e}"))?;
    let reference = reference
        .into_iter()
        .find(|(o, _)| *o == Output::InputGrad)
        .ok_or(format!("{name}: no input gradient"))?
        .1;
    let mut weights = initial_weights::<f32>(checked, seed);
    let (xf, yf) = (x.mapv(|v| v as f32), y.mapv(|v| v as f32));
    let jit = Compiled::with_options(graphs.clone(), options)
        .saliency(&mut weights, xf.view(), yf.view())
        .map_err(|e| format!("{name}: {e}"))?;
    if jit.shape() != reference.shape() {
        return Err(format!(
            "{name} saliency: shapes {:?} and {:?}",
            jit.shape(),
            reference.shape()
        ));
    }
    let distance = |a: &ArrayD<f32>| {
        a.iter()
            .zip(&reference)
            .map(|(a, b)| (f64::from(*a) - b).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let error = distance(&jit);
    let scale = reference.iter().map(|v| v * v).sum::<f64>().sqrt();
    let single = Feeds {
        input: xf.view(),
        label: Some(yf.view()),
        vars: &initial_weights::<f32>(checked, seed),
        masks: &[],
        hyper: &|_| 0.0,
    };
    let interpreted = cnnc::interp::run(&graphs.saliency, &single)
        .map_err(|e| format!("{name}: {e}"))?
        .into_iter()
        .find(|(o, _)| *o == Output::InputGrad)
        .ok_or(format!("{name}: no input gradient in f32"))?
        .1;
    if error <= (1e-4 * scale).max(2.0 * distance(&interpreted)) + 1e-7 {
        Ok(())
    } else {
        Err(format!("{name} saliency: differs by {error} (L2) at scale {scale}"))
    }
}

fn hyper(h: Hyper) -> f64 {
    match h {
        Hyper::LearningRate => 0.01,
        Hyper::AdamStepSize => 0.001,
    }
}

/// Runs the backward, training-step and prediction graphs on both
/// engines from the same state and batch and compares every output and
/// every updated variable; the compiled engine's convolutions as `conv`
/// says.
fn compare(checked: &Checked, batch: usize, seed: u64, conv: ConvPolicy) -> Result<(), String> {
    let name = &checked.model.name;
    let optimizer = checked
        .model
        .train
        .as_ref()
        .and_then(|t| t.optimizer)
        .unwrap_or(Optimizer::ADAM);
    let every_layer: Vec<usize> = (0..checked.model.layers.len()).collect();
    let graphs = Graphs::new(checked, &optimizer)
        .and_then(|g| g.probing(checked, &every_layer))
        .map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed);
    let (x, y) = random_batch(checked, batch, &mut rng);
    let (x, y) = (x.mapv(|v| v as f32), y.mapv(|v| v as f32));
    let masks = dropout_masks::<f32>(&graphs.train, batch, &mut rng);
    let mut state = initial_weights::<f32>(checked, seed);
    let weights = state.len();
    state.extend(
        graphs.train.vars[weights..]
            .iter()
            .map(|v| ArrayD::from_shape_simple_fn(ndarray::IxDyn(&v.shape), || rng.uniform() as f32 * 0.01)),
    );
    let step = Step {
        inputs: x.view(),
        targets: Some(y.view()),
        masks: &masks,
        hyper: &hyper,
    };
    let options = Options {
        conv,
        ..Options::default()
    };
    let mut jit = Compiled::with_options(graphs.clone(), options);
    let mut reference = Interpreter::new(graphs.clone());
    for kind in [Kind::Backward, Kind::Predict, Kind::Probe, Kind::Train] {
        let vars = if kind == Kind::Train { state.len() } else { weights };
        let (mut a, mut b) = (state[..vars].to_vec(), state[..vars].to_vec());
        let out_a = jit.run(kind, &mut a, &step).map_err(|e| format!("{name}: {e}"))?;
        let out_b = reference.run(kind, &mut b, &step).map_err(|e| format!("{name}: {e}"))?;
        let kinds = |o: &[(Output, ArrayD<f32>)]| o.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        if kinds(&out_a) != kinds(&out_b) {
            return Err(format!(
                "{name} {kind:?}: outputs {:?} and {:?}",
                kinds(&out_a),
                kinds(&out_b)
            ));
        }
        let gradients = gradient_floor(&out_b);
        // Where the two f32 engines disagree, the exact answer decides: an
        // ill-conditioned output (batch normalization over a batch of 3,
        // its variance near 0) may round apart in either, and the compiled
        // engine passes if it is no further from f64 than twice the
        // interpreter is.
        let as_close_to_f64 = |failure: String,
                               kind: Kind,
                               vars: &[ArrayD<f32>],
                               step: &Step,
                               output: Output,
                               jit: &ArrayD<f32>,
                               interp: &ArrayD<f32>|
         -> Result<(), String> {
            let wide = |a: &ArrayD<f32>| a.mapv(f64::from);
            let vars: Vec<ArrayD<f64>> = vars.iter().map(wide).collect();
            let masks: Vec<ArrayD<f64>> = step.masks.iter().map(wide).collect();
            let (input, target) = (
                wide(&step.inputs.to_owned()),
                step.targets.as_ref().map(|t| wide(&t.to_owned())),
            );
            let feeds = Feeds {
                input: input.view(),
                label: target.as_ref().map(|t| t.view()),
                vars: &vars,
                masks: &masks,
                hyper: &hyper,
            };
            let exact = cnnc::interp::run(graphs.graph(kind), &feeds)
                .map_err(|e| format!("{name}: {e}"))?
                .into_iter()
                .find(|(o, _)| *o == output)
                .ok_or(failure.clone())?
                .1;
            let off = |a: &ArrayD<f32>| {
                a.iter()
                    .zip(&exact)
                    .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()))
            };
            if off(jit) <= 2.0 * off(interp) + f64::from(FLOOR) * 1e-2 {
                Ok(())
            } else {
                Err(format!(
                    "{failure}; from f64: {} (interpreter {})",
                    off(jit),
                    off(interp)
                ))
            }
        };
        for ((o, va), (_, vb)) in out_a.iter().zip(&out_b) {
            let (what, floor) = match o {
                Output::Grad(v) => (
                    format!("{name} {kind:?} grad {}", graphs.train.vars[*v].name),
                    gradients,
                ),
                _ => (format!("{name} {kind:?} {o:?}"), FLOOR),
            };
            agree(&what, va, vb, floor).or_else(|e| as_close_to_f64(e, kind, &state[..vars], &step, *o, va, vb))?;
        }
        for (i, (va, vb)) in a.iter().zip(&b).enumerate() {
            agree(
                &format!("{name} {kind:?} updated {}", graphs.train.vars[i].name),
                va,
                vb,
                FLOOR,
            )?;
        }
    }
    saliency_agrees(checked, &graphs, batch, seed, options)
}

#[test]
fn every_model_in_models() {
    for path in common::models() {
        let checked = common::checked_file(&path);
        for batch in [1, 3] {
            compare(&checked, batch, 11, ConvPolicy::default()).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// A layer's kernel regularizer, if any, as its argument.
const REGULARIZERS: [&str; 4] = [
    "",
    " kernel_regularizer=l2(0.01)",
    " kernel_regularizer=l1(0.01)",
    " kernel_regularizer=l1_l2(l1=0.01, l2=0.02)",
];

/// A random valid model: conv blocks (convolutions or depthwise ones,
/// every activation inline or as a layer, max or average pooling) while
/// the image lasts, then a flatten or a global pooling, dense layers and a
/// head for one of the three losses, kernels regularized or not, trained by
/// one of the optimizers. Some are large enough that loops split across
/// cores.
fn random_model() -> impl Strategy<Value = String> {
    let activation = prop::sample::select(vec![
        "relu",
        "sigmoid",
        "tanh",
        "linear",
        "elu",
        "selu",
        "leaky_relu",
        "gelu",
        "swish",
        "softplus",
    ]);
    let conv = (
        (1usize..4, (1usize..4, 1usize..4), (1usize..3, 1usize..3)),
        (any::<bool>(), activation.clone(), any::<bool>(), any::<bool>()),
        (
            0usize..4,
            any::<bool>(),
            prop::option::of(1usize..3),
            0usize..REGULARIZERS.len(),
        ),
        prop::option::of((
            (1usize..4, 1usize..3),
            (1usize..3, 1usize..3),
            any::<bool>(),
            any::<bool>(),
        )),
        prop::option::of(0.1f64..0.6),
    );
    let dense = (
        1usize..6,
        activation.clone(),
        any::<bool>(),
        any::<bool>(),
        0usize..REGULARIZERS.len(),
    );
    let optimizer = prop::sample::select(vec![
        "adam",
        "sgd learning_rate=0.05",
        "sgd learning_rate=0.05 momentum=0.9",
        "sgd learning_rate=0.05 momentum=0.9 nesterov=true",
        "rmsprop",
        "rmsprop learning_rate=0.01 rho=0.8 momentum=0.5",
        "rmsprop learning_rate=0.01 momentum=0.9 centered=true",
    ]);
    (
        (2usize..10, 2usize..10, 1usize..4, any::<bool>()),
        prop::collection::vec(conv, 0..4),
        (0usize..3, any::<bool>()),
        prop::collection::vec(dense, 0..3),
        (0usize..3, 2usize..5),
        optimizer,
    )
        .prop_map(|((h, w, c, large), convs, (to_vector, keep), denses, (head, classes), optimizer)| {
            // Large inputs make maps of more than 32K elements at small batches.
            let (h, w) = if large { (h * 6, w * 6) } else { (h, w) };
            let mut m = format!("input {h}x{w}x{c}\n");
            for ((filters, (kh, kw), (sh, sw)), (same, act, bn, bias), (separate, frozen, depthwise, reg), pool, drop) in
                convs
            {
                let padding = if same { "same" } else { "valid" };
                let inline = if separate == 0 { act } else { "linear" };
                let layer = match depthwise {
                    Some(multiplier) => format!("depthwiseconv2d {kh}x{kw} depth_multiplier={multiplier}"),
                    None => format!("conv2d {filters} {kh}x{kw}"),
                };
                m += &format!(
                    "{layer} strides={sh}x{sw} padding={padding} activation={inline} use_bias={bias} trainable={}{}\n",
                    !frozen,
                    // Keras's DepthwiseConv2D has no kernel_regularizer.
                    if depthwise.is_some() { "" } else { REGULARIZERS[reg] }
                );
                if bn {
                    m += "batchnorm\n";
                }
                match separate {
                    1 => m += &format!("activation {act}\n"),
                    2 => m += &format!("leakyrelu {:.2}\n", 0.05 * filters as f64),
                    3 => m += &format!("elu alpha={:.2}\n", 0.4 * filters as f64),
                    _ => {}
                }
                if let Some(((ph, pw), (qh, qw), same, average)) = pool {
                    let padding = if same { "same" } else { "valid" };
                    let kind = if average { "avgpool2d" } else { "maxpool2d" };
                    m += &format!("{kind} {ph}x{pw} strides={qh}x{qw} padding={padding}\n");
                }
                if let Some(rate) = drop {
                    m += &format!("dropout {rate:.2}\n");
                }
            }
            m += match (to_vector, keep) {
                (0, _) => "flatten\n",
                (1, false) => "globalavgpool2d\n",
                (1, true) => "globalavgpool2d keepdims=true\nflatten\n",
                (_, false) => "globalmaxpool2d\n",
                (_, true) => "globalmaxpool2d keepdims=true\nflatten\n",
            };
            for (units, act, bn, bias, reg) in denses {
                m += &format!("dense {units} activation={act} use_bias={bias}{}\n", REGULARIZERS[reg]);
                if bn {
                    m += "batchnorm center=false\n";
                }
            }
            let (head, loss) = match head {
                0 => (format!("dense {classes} activation=softmax\n"), "categorical_crossentropy"),
                1 => ("dense 1 activation=sigmoid\n".to_string(), "binary_crossentropy"),
                _ => (format!("dense {classes}\n"), "mean_squared_error"),
            };
            m + &head + &format!("train {{\n  loss {loss}\n  optimizer {optimizer}\n}}\n")
        })
}

proptest! {
    #![proptest_config(Config {
        cases: 250,
        rng_seed: RngSeed::Fixed(20261129),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    #[test]
    fn random_models(source in random_model(), batch in 1usize..5, seed in 0u64..1000) {
        // Random stacks may shrink an image below a kernel: those models
        // are rightly refused by `check`, and skipped here.
        let Ok(model) = cnnc::parse::parse("random.cnn", &source) else { return Ok(()) };
        let Ok(checked) = cnnc::shape::check(model, "random.cnn", &source) else { return Ok(()) };
        let auto = ConvPolicy::default();
        prop_assert!(compare(&checked, batch, seed, auto).is_ok(), "{source}\n{:?}", compare(&checked, batch, seed, auto));
    }
}

/// A random model of the convolutions every algorithm computes: 3x3
/// kernels at stride 1 (whose input gradients are 3x3 convolutions too,
/// and whose kernel gradients have 3x3 outputs), `same` and `valid`, on
/// images of odd and even sides that tiles of 2, 4 and 6 do and do not
/// divide, with channel counts below, at and above a vector's lanes.
fn convolutions_model() -> impl Strategy<Value = String> {
    let conv = (
        1usize..21,
        any::<bool>(),
        prop::sample::select(vec!["relu", "tanh", "linear"]),
    );
    (
        (3usize..15, 3usize..15, 1usize..20),
        prop::collection::vec(conv, 1..4),
        any::<bool>(),
    )
        .prop_map(|((h, w, c), convs, pool)| {
            let mut m = format!("input {h}x{w}x{c}\n");
            let (mut h, mut w) = (h, w);
            for (filters, same, act) in convs {
                if !same && (h < 3 || w < 3) {
                    continue;
                }
                if !same {
                    (h, w) = (h - 2, w - 2);
                }
                let padding = if same { "same" } else { "valid" };
                m += &format!("conv2d {filters} 3x3 padding={padding} activation={act}\n");
            }
            if pool && h >= 2 && w >= 2 {
                m += "maxpool2d 2x2\n";
            }
            m + "flatten\ndense 3 activation=softmax\n"
        })
}

proptest! {
    #![proptest_config(Config {
        cases: 16,
        rng_seed: RngSeed::Fixed(20260611),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    #[test]
    fn every_convolution_algorithm(source in convolutions_model(), batch in 1usize..5, seed in 0u64..1000) {
        let model = cnnc::parse::parse("convolutions.cnn", &source).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let checked = cnnc::shape::check(model, "convolutions.cnn", &source).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        for name in codegen::conv_algorithms() {
            let policy = ConvPolicy::named(name).expect("an algorithm's name");
            let result = compare(&checked, batch, seed, policy);
            prop_assert!(result.is_ok(), "--conv {name}, batch {batch}:\n{source}\n{result:?}");
        }
    }
}

/// A random first layer and what follows it: an image of 1 or 3 channels
/// through a convolution of up to 70 filters (past the direct kernels'
/// 32-channel register tile, and leaving vectors and single channels
/// over), kernels from 1x1 to 5x5, strides and padding; then perhaps a 1x1
/// convolution (a GEMM reading its input in place), a pooling whose windows
/// may or may not tile its input, and a head.
fn random_first_layer() -> impl Strategy<Value = String> {
    (
        (3usize..14, 3usize..14, prop::sample::select(vec![1usize, 3])),
        (1usize..71, (1usize..6, 1usize..6), (1usize..3, 1usize..3), any::<bool>()),
        (prop::option::of(1usize..8), any::<bool>()),
    )
        .prop_map(|((h, w, c), (filters, (kh, kw), (sh, sw), same), (pointwise, pool))| {
            let padding = if same { "same" } else { "valid" };
            let mut m = format!(
                "input {h}x{w}x{c}\nconv2d {filters} {kh}x{kw} strides={sh}x{sw} padding={padding} activation=relu\n"
            );
            if let Some(f) = pointwise {
                m += &format!("conv2d {} 1x1 activation=relu\n", 5 * f);
            }
            if pool {
                m += "maxpool2d 2x2\n";
            }
            m + "flatten\ndense 3 activation=softmax\ntrain {\n  loss categorical_crossentropy\n  optimizer sgd learning_rate=0.05\n}\n"
        })
}

proptest! {
    #![proptest_config(Config {
        cases: 40,
        rng_seed: RngSeed::Fixed(20261130),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    #[test]
    fn random_first_layers(source in random_first_layer(), batch in 1usize..6, seed in 0u64..1000) {
        let Ok(model) = cnnc::parse::parse("random.cnn", &source) else { return Ok(()) };
        let Ok(checked) = cnnc::shape::check(model, "random.cnn", &source) else { return Ok(()) };
        let auto = ConvPolicy::default();
        prop_assert!(compare(&checked, batch, seed, auto).is_ok(), "{source}\n{:?}", compare(&checked, batch, seed, auto));
    }
}

/// `loss = sum(op(vars) * probe)` with its gradients, run by the compiled
/// engine and the interpreter from the same values: every output agrees.
/// Returns how each kernel was computed.
fn compare_op(name: &str, shapes: &[&[usize]], op: impl Fn(&mut Builder, &[NodeId]) -> NodeId) -> Vec<String> {
    let mut g = common::probed(name, shapes, op);
    cnnc::autodiff::differentiate(&mut g).unwrap();
    let mut rng = Rng::new(5);
    let vars: Vec<ArrayD<f32>> = g
        .vars
        .iter()
        .map(|v| ArrayD::from_shape_simple_fn(IxDyn(&v.shape), || rng.uniform() as f32 - 0.5))
        .collect();
    let input = ArrayD::<f32>::zeros(IxDyn(&[1]));
    let feeds = Feeds {
        input: input.view(),
        label: None,
        vars: &vars,
        masks: &[],
        hyper: &hyper,
    };
    let reference = cnnc::interp::run(&g, &feeds).unwrap();
    let mut optimized = g.clone();
    cnnc::passes::optimize(&mut optimized).unwrap();
    let plan = codegen::plan_for(cnnc::fuse::fuse(optimized), 1, Default::default()).unwrap();
    let lowerings = plan.lowerings.iter().map(|l| l.name()).collect();
    let mut routine = codegen::compile(plan, codegen::Options::default()).unwrap();
    let mut state = vars.clone();
    let mut vars_mut: Vec<&mut [f32]> = state.iter_mut().map(|v| v.as_slice_mut().unwrap()).collect();
    let mut outputs: Vec<ArrayD<f32>> = reference.iter().map(|(_, v)| ArrayD::zeros(v.raw_dim())).collect();
    let mut outs: Vec<&mut [f32]> = outputs.iter_mut().map(|o| o.as_slice_mut().unwrap()).collect();
    routine
        .run(codegen::Buffers {
            input: input.as_slice().unwrap(),
            label: None,
            masks: &[],
            vars: &mut vars_mut,
            outputs: &mut outs,
            hypers: [0.0; 2],
        })
        .unwrap();
    for ((o, want), got) in reference.iter().zip(&outputs) {
        agree(&format!("{name} {o:?}"), got, want, FLOOR).unwrap_or_else(|e| panic!("{e}"));
    }
    lowerings
}

/// The convolutions the direct kernels and the in-place GEMM compute, each
/// with its gradients, at the edges of their tiles: channel counts that
/// leave a partial register tile and single channels (37, 6), rows that
/// leave a partial pixel tile, padding, strides (the weight gradient's
/// dilated taps), a 5x5 kernel, 1x1 kernels, and sizes large enough to be
/// split across the cores (lines of the output; partial sums of the weight
/// gradient, added in a fixed order).
#[test]
fn direct_and_in_place_convolutions() {
    type Case<'a> = (&'a [usize], &'a [usize], [usize; 2], [(i64, i64); 2], &'a [&'a str]);
    let cases: [Case; 6] = [
        (
            &[2, 9, 11, 1],
            &[3, 3, 1, 37],
            [1, 1],
            [(0, 0); 2],
            &["direct", "direct reduction"],
        ),
        (
            &[3, 10, 10, 3],
            &[3, 3, 3, 6],
            [2, 1],
            [(1, 1); 2],
            &["direct", "direct reduction"],
        ),
        (
            &[1, 12, 12, 2],
            &[5, 5, 2, 4],
            [1, 1],
            [(2, 2), (2, 1)],
            &["direct", "direct reduction"],
        ),
        (&[2, 6, 7, 32], &[1, 1, 32, 16], [1, 1], [(0, 0); 2], &["gemm"]),
        (&[32, 8, 8, 16], &[8, 8, 16, 24], [1, 1], [(0, 0); 2], &["gemm"]),
        (
            &[8, 28, 28, 1],
            &[3, 3, 1, 32],
            [1, 1],
            [(0, 0); 2],
            &["direct", "direct reduction"],
        ),
    ];
    for (x, k, strides, padding, algorithms) in cases {
        let how = compare_op(&format!("conv {x:?} by {k:?}"), &[x, k], |b, v| {
            b.op(Op::Conv2d(Conv::forward(strides, padding, 1)), &[v[0], v[1]])
                .unwrap()
        });
        for a in algorithms {
            assert!(how.iter().any(|h| h == a), "{x:?} by {k:?}: no {a} in {how:?}");
        }
        // `--conv gemm`: im2col + GEMM for the convolution and both
        // gradients, none of the others.
        let mut g = common::probed("gemm", &[x, k], |b, v| {
            b.op(Op::Conv2d(Conv::forward(strides, padding, 1)), &[v[0], v[1]])
                .unwrap()
        });
        cnnc::autodiff::differentiate(&mut g).unwrap();
        cnnc::passes::optimize(&mut g).unwrap();
        let plan = codegen::plan_for(cnnc::fuse::fuse(g), 1, ConvPolicy::GEMM).unwrap();
        let gemm: Vec<String> = plan.lowerings.iter().map(|l| l.name()).collect();
        assert_eq!(
            gemm.iter().filter(|h| *h == "im2col + gemm").count(),
            3,
            "{x:?} by {k:?} under --conv gemm: {gemm:?}"
        );
        assert!(
            !gemm.iter().any(|h| h.starts_with("direct") || h == "gemm"),
            "{x:?} by {k:?} under --conv gemm: {gemm:?}"
        );
    }
}

#[test]
fn grouped_convolutions_and_transposes() {
    for (c, groups, outputs) in [(3, 3, 3), (8, 8, 16), (4, 2, 6)] {
        for (strides, padding) in [([1, 1], [(1, 1), (1, 1)]), ([2, 1], [(0, 1), (0, 0)])] {
            compare_op(
                &format!("conv {c} channels in {groups} groups to {outputs}"),
                &[&[3, 7, 6, c], &[3, 2, c / groups, outputs]],
                |b, x| {
                    b.op(Op::Conv2d(Conv::forward(strides, padding, groups)), &[x[0], x[1]])
                        .unwrap()
                },
            );
        }
    }
    compare_op("transpose", &[&[3, 5, 7, 2]], |b, x| {
        b.op(Op::Transpose { perm: vec![0, 3, 1, 2] }, &[x[0]]).unwrap()
    });
}

/// The worst relative L2 error, over the loss and every weight's gradient,
/// of the compiled engine's backward pass (convolutions as `conv` says)
/// against the interpreter's in f64, on the same weights, batch and
/// dropout masks.
fn backward_error(checked: &Checked, batch: usize, seed: u64, conv: ConvPolicy) -> f64 {
    let graphs = Graphs::of_model(checked).expect("graphs");
    let mut rng = Rng::new(seed);
    let (x, y) = random_batch(checked, batch, &mut rng);
    let masks = dropout_masks::<f32>(&graphs.backward, batch, &mut rng);
    let exact_masks: Vec<ArrayD<f64>> = masks.iter().map(|m| m.mapv(f64::from)).collect();
    let exact = initial_weights::<f64>(checked, seed);
    let feeds = Feeds {
        input: x.view(),
        label: Some(y.view()),
        vars: &exact,
        masks: &exact_masks,
        hyper: &|_| 0.0,
    };
    let reference = cnnc::interp::run(&graphs.backward, &feeds).expect("the interpreter runs");
    let mut weights = initial_weights::<f32>(checked, seed);
    let (xf, yf) = (x.mapv(|v| v as f32), y.mapv(|v| v as f32));
    let step = Step {
        inputs: xf.view(),
        targets: Some(yf.view()),
        masks: &masks,
        hyper: &hyper,
    };
    let options = Options {
        conv,
        ..Options::default()
    };
    let outputs = Compiled::with_options(graphs.clone(), options)
        .run(Kind::Backward, &mut weights, &step)
        .expect("the compiled engine runs");
    let mut worst = 0.0f64;
    for (o, a) in &outputs {
        let b = &reference
            .iter()
            .find(|(p, _)| p == o)
            .expect("the interpreter has every output")
            .1;
        let error = a
            .iter()
            .zip(b)
            .map(|(a, b)| (f64::from(*a) - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale = b.iter().map(|v| v * v).sum::<f64>().sqrt();
        // A bias before batch normalization has a zero gradient, which
        // f32 computes as rounding noise: no relative error to speak of.
        if scale > 1e-6 {
            worst = worst.max(error / scale);
        }
    }
    worst
}

/// Winograd's rounding error against GEMM's, both against f64, on the
/// gradients of mnist_cnn (the figures the README quotes:
/// `cargo test --test jit_differential winograd_error -- --nocapture`).
/// Winograd's transforms add error; it must stay within a small multiple of
/// f32's, and under the differential tests' 1e-4.
#[test]
fn winograd_error_against_f64() {
    for model in ["mnist_cnn"] {
        let checked = common::checked_file(std::path::Path::new(&format!("models/{model}.cnn")));
        let gemm = backward_error(&checked, 8, 5, ConvPolicy::GEMM);
        eprintln!("{model}: im2col + gemm {gemm:.2e}");
        for name in codegen::conv_algorithms()
            .into_iter()
            .filter(|n| n.starts_with("winograd"))
        {
            let policy = ConvPolicy::named(name).expect("an algorithm's name");
            let winograd = backward_error(&checked, 8, 5, policy);
            eprintln!("{model}: {name} {winograd:.2e} ({:.1}x gemm's)", winograd / gemm);
            assert!(winograd < 1e-4, "{model} {name}: {winograd:.2e}");
        }
        assert!(gemm < 1e-5, "{model} gemm: {gemm:.2e}");
    }
}

#[test]
fn average_pooling_and_its_gradient() {
    for (input, window, strides, padding) in [
        ([6, 6], [2, 2], [2, 2], [(0, 0), (0, 0)]),
        ([7, 7], [3, 3], [2, 2], [(1, 1), (1, 1)]),
        ([5, 8], [3, 2], [1, 3], [(1, 1), (0, 1)]),
    ] {
        let pool = Pool {
            window,
            strides,
            padding,
        };
        // 5 channels: a vector of four and a scalar tail.
        compare_op(
            &format!("avgpool {input:?} {window:?}"),
            &[&[3, input[0], input[1], 5]],
            |b, x| b.op(Op::AvgPool2d(pool), &[x[0]]).unwrap(),
        );
    }
}
