//! The compiled engine's elementwise ops, f32x4 and scalar, against their
//! one definition (`ir/scalar.rs`): the polynomials for exp, log, tanh,
//! sigmoid, erf and the activations made of them (elu's e^x - 1, selu,
//! gelu, silu, softplus) to a few ulps over their input range, and every op
//! exactly at NaN, the infinities and signed zeros.

use cnnc::codegen::{self, Buffers, Options};
use cnnc::fuse::fuse;
use cnnc::ir::{Binary, Builder, Graph, Op, Origin, Output, Shape, Unary, VarDecl};

/// Runs `op` on `operands` (each of the same length) with compiled code.
fn compiled_op(op: Op, operands: &[&[f32]]) -> Vec<f32> {
    let n = operands[0].len();
    let mut g = Graph::default();
    for i in 0..operands.len() {
        g.vars.push(VarDecl {
            name: format!("x{i}"),
            shape: vec![n],
            trainable: false,
        });
    }
    let mut b = Builder::new(&mut g, Origin::default());
    let xs: Vec<_> = (0..operands.len())
        .map(|i| b.shaped(Op::Var(i), &[], Shape::fixed(&[n])).unwrap())
        .collect();
    let y = b.op(op, &xs).unwrap();
    g.outputs.push((Output::Prediction, y));
    let plan = codegen::plan_for(fuse(g), 1, Default::default()).unwrap();
    let mut routine = codegen::compile(plan, Options::default()).unwrap();
    let mut inputs: Vec<Vec<f32>> = operands.iter().map(|x| x.to_vec()).collect();
    let mut vars: Vec<&mut [f32]> = inputs.iter_mut().map(|v| v.as_mut_slice()).collect();
    let mut out = vec![0.0f32; n];
    routine
        .run(Buffers {
            input: &[0.0],
            label: None,
            masks: &[],
            vars: &mut vars,
            outputs: &mut [&mut out],
            hypers: [0.0; 2],
        })
        .unwrap();
    out
}

fn compiled(op: Unary, xs: &[f32]) -> Vec<f32> {
    compiled_op(Op::Unary(op), &[xs])
}

/// Evenly spread points over [lo, hi]: an odd count, so the scalar tail of
/// the vector loop is used too, and enough that the loop is split across
/// cores.
fn points(lo: f64, hi: f64) -> Vec<f32> {
    let n = 40_001;
    (0..n)
        .map(|i| (lo + (hi - lo) * i as f64 / (n - 1) as f64) as f32)
        .collect()
}

/// Worst error relative to max(|exact|, `floor`), against f64.
fn worst(op: Unary, xs: &[f32], exact: impl Fn(f64) -> f64, floor: f64) -> (f64, f32) {
    let got = compiled(op, xs);
    xs.iter()
        .zip(got)
        .map(|(&x, g)| {
            let e = exact(f64::from(x));
            ((f64::from(g) - e).abs() / e.abs().max(floor), x)
        })
        .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
}

#[test]
fn exp_within_a_few_ulps() {
    // f32 ulp is 2^-23 = 1.2e-7 relative.
    let (err, at) = worst(Unary::Exp, &points(-87.0, 88.0), f64::exp, 0.0);
    assert!(err < 4e-7, "exp: relative error {err} at {at}");
}

#[test]
fn log_within_a_few_ulps() {
    let xs: Vec<f32> = points(-36.0, 36.0)
        .iter()
        .map(|&e| (f64::from(e)).exp() as f32)
        .collect();
    let (err, at) = worst(Unary::Log, &xs, f64::ln, 1e-6);
    assert!(err < 4e-7, "log: relative error {err} at {at}");
    let (err, at) = worst(Unary::Log, &points(0.5, 2.0), f64::ln, 1e-7);
    assert!(err < 2e-6, "log near 1: error {err} at {at}");
}

#[test]
fn tanh_and_sigmoid_within_a_few_ulps() {
    let (err, at) = worst(Unary::Tanh, &points(-20.0, 20.0), f64::tanh, 1e-30);
    assert!(err < 5e-7, "tanh: relative error {err} at {at}");
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    // Below -87 the result underflows towards f32's smallest normals.
    let (err, at) = worst(Unary::Sigmoid, &points(-80.0, 80.0), sigmoid, 0.0);
    assert!(err < 5e-7, "sigmoid: relative error {err} at {at}");
}

#[test]
fn erf_and_gelu_within_a_few_ulps() {
    // Across the switch from erf's odd polynomial to erfc at 1, and erfc's
    // from its middle polynomial to its far one at 4.
    let (err, at) = worst(Unary::Erf, &points(-6.0, 6.0), libm::erf, 1e-30);
    println!("erf: worst relative error {err:.2e} at {at}");
    assert!(err < 4e-7, "erf: relative error {err} at {at}");
    // Both tails without cancelling: e^-(x^2/2) to the smallest normals.
    let gelu = |x: f64| x * libm::erfc(-x / std::f64::consts::SQRT_2) / 2.0;
    let (err, at) = worst(Unary::Gelu, &points(-13.0, 13.0), gelu, 1e-30);
    println!("gelu: worst relative error {err:.2e} at {at}");
    assert!(err < 8e-7, "gelu: relative error {err} at {at}");
}

#[test]
fn elu_selu_silu_and_softplus_within_a_few_ulps() {
    // e^x - 1 keeps its digits near 0, where e^x alone would cancel.
    let xs = points(-20.0, 3.0);
    let elu = |alpha: f64| move |x: f64| if x > 0.0 { x } else { alpha * x.exp_m1() };
    let (err, at) = worst(Unary::Elu { alpha: 1.0 }, &xs, elu(1.0), 1e-30);
    println!("elu: worst relative error {err:.2e} at {at}");
    assert!(err < 4e-7, "elu: relative error {err} at {at}");
    let near_zero = points(-1e-3, 1e-3);
    let (err, at) = worst(Unary::Elu { alpha: 0.5 }, &near_zero, elu(0.5), 1e-30);
    println!("elu near 0: worst relative error {err:.2e} at {at}");
    assert!(err < 4e-7, "elu near 0: relative error {err} at {at}");
    let selu = |x: f64| 1.050_700_987_355_480_5 * elu(1.673_263_242_354_377_3)(x);
    let (err, at) = worst(Unary::Selu, &xs, selu, 1e-30);
    println!("selu: worst relative error {err:.2e} at {at}");
    assert!(err < 5e-7, "selu: relative error {err} at {at}");
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let (err, at) = worst(Unary::Silu, &points(-80.0, 80.0), silu, 1e-30);
    println!("silu: worst relative error {err:.2e} at {at}");
    assert!(err < 6e-7, "silu: relative error {err} at {at}");
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let (err, at) = worst(Unary::Softplus, &points(-80.0, 80.0), softplus, 1e-30);
    println!("softplus: worst relative error {err:.2e} at {at}");
    assert!(err < 6e-7, "softplus: relative error {err} at {at}");
}

/// The values where the ops' definitions have edges: NaN, the infinities,
/// signed zeros, subnormals, the largest floats, and where the polynomials'
/// ranges end (exp's clamps and the edge of the normals, tanh's switch from
/// its polynomial at 0.625, log's halving of the mantissa at sqrt(1/2),
/// erf's switches at 1 and 4, gelu's at sqrt 2 and its bound at 15, e^x -
/// 1's clamps at -87 and 88).
const SPECIAL: [f32; 53] = [
    4.0,
    -4.0,
    std::f32::consts::SQRT_2,
    -std::f32::consts::SQRT_2,
    15.0,
    -15.0,
    -17.5,
    -87.0,
    88.5,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-40,
    -1e-40,
    1.4e-45,
    -1.4e-45,
    1.0,
    -1.0,
    0.5,
    2.0,
    f32::MAX,
    -f32::MAX,
    1e30,
    -1e30,
    0.625,
    -0.625,
    0.624_999_94,
    -0.624_999_94,
    20.0,
    -20.0,
    -87.33,
    -87.34,
    88.0,
    88.37,
    88.72,
    88.73,
    89.0,
    -103.0,
    -103.97,
    -104.0,
    -105.0,
    std::f32::consts::FRAC_1_SQRT_2,
    std::f32::consts::FRAC_1_SQRT_2 - f32::EPSILON,
    9.0,
    -9.0,
    1e-20,
    -1e-20,
    3.0e38,
    1e-38,
];

/// Whether compiled code's `got` agrees with the definition's `want`: the
/// same NaN, infinity or signed zero, else within `ulps` units in the last
/// place and `floor` (where results round into the subnormals).
fn agrees(want: f32, got: f32, (ulps, floor): (f32, f32)) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() || ulps == 0.0 {
        return want == got && want.is_sign_negative() == got.is_sign_negative();
    }
    if want == 0.0 && got == 0.0 {
        return want.is_sign_negative() == got.is_sign_negative();
    }
    let tolerance = ulps * f32::EPSILON * want.abs() + floor;
    (want - got).abs() <= tolerance
}

/// Two of the smallest subnormal: where results round into the
/// subnormals, they may land a step apart.
const SUBNORMAL_STEPS: f32 = 2.0 * 1.4e-45;

/// Ulps each op may differ by, and by how much near zero: exact for IEEE
/// operations, a few ulps for the polynomials.
fn tolerance(op: Unary) -> (f32, f32) {
    // Below -87, x sigmoid(x) is |x| times a subnormal sigmoid: its
    // rounding steps, and those of e^-x overflowing, grow |x|-fold.
    let floor = if op == Unary::Silu {
        f32::MIN_POSITIVE
    } else {
        SUBNORMAL_STEPS
    };
    (ulps(op), floor)
}

fn ulps(op: Unary) -> f32 {
    match op {
        Unary::Neg | Unary::Sqrt | Unary::Recip | Unary::Relu => 0.0,
        // The slope's product rounds once in f32, once from f64.
        Unary::LeakyRelu { .. } => 1.0,
        Unary::Exp
        | Unary::Log
        | Unary::Sigmoid
        | Unary::Tanh
        | Unary::Elu { .. }
        | Unary::Selu
        | Unary::Gelu
        | Unary::Erf
        | Unary::Silu
        | Unary::Softplus => 4.0,
    }
}

/// `xs` laid out twice: each value four times over, which the f32x4 loop
/// computes, and in threes, which only the scalar tail does.
fn both_paths(xs: &[f32], mut f: impl FnMut(&[&[f32]]) -> Vec<f32>, operands: &[Vec<f32>]) -> Vec<(usize, f32)> {
    let mut got = Vec::new();
    let vector: Vec<Vec<f32>> = operands
        .iter()
        .map(|o| o.iter().flat_map(|&v| [v; 4]).collect())
        .collect();
    let refs: Vec<&[f32]> = vector.iter().map(Vec::as_slice).collect();
    got.extend(f(&refs).into_iter().enumerate().map(|(i, v)| (i / 4, v)));
    for start in (0..xs.len()).step_by(3) {
        let end = (start + 3).min(xs.len());
        let tail: Vec<&[f32]> = operands.iter().map(|o| &o[start..end]).collect();
        got.extend(f(&tail).into_iter().enumerate().map(|(i, v)| (start + i, v)));
    }
    got
}

#[test]
fn unary_ops_agree_with_their_definition_at_special_values() {
    for &op in Unary::ALL {
        let xs = SPECIAL.to_vec();
        for (i, got) in both_paths(&xs, |o| compiled(op, o[0]), std::slice::from_ref(&xs)) {
            let want = op.apply(f64::from(xs[i])) as f32;
            assert!(
                agrees(want, got, tolerance(op)),
                "{op:?}({:e}): compiled {got:e}, definition {want:e}",
                xs[i]
            );
        }
    }
}

#[test]
fn binary_ops_agree_with_their_definition_at_special_values() {
    let values = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        1e-40,
        f32::MAX,
        2.5,
    ];
    let (a, b): (Vec<f32>, Vec<f32>) = values.iter().flat_map(|&x| values.iter().map(move |&y| (x, y))).unzip();
    for &op in Binary::ALL {
        let got = both_paths(&a, |o| compiled_op(Op::Binary(op), o), &[a.clone(), b.clone()]);
        for (i, got) in got {
            let want = op.apply(f64::from(a[i]), f64::from(b[i])) as f32;
            assert!(
                agrees(want, got, (0.0, SUBNORMAL_STEPS)),
                "{op:?}({:e}, {:e}): compiled {got:e}, definition {want:e}",
                a[i],
                b[i]
            );
        }
    }
}
