//! The compiled engine's exp, log, tanh and sigmoid (inline polynomials,
//! f32x4 and scalar) against the standard library, over their input range.

use cnnc::codegen::{self, Buffers, Options};
use cnnc::ir::{Builder, Graph, Op, Origin, Output, Shape, Unary, VarDecl};
use cnnc::passes::fuse::fuse;

/// Applies `op` to `xs` with compiled code.
fn compiled(op: Unary, xs: &[f32]) -> Vec<f32> {
    let mut g = Graph::default();
    g.vars.push(VarDecl {
        name: "x".into(),
        shape: vec![xs.len()],
        trainable: false,
    });
    let mut b = Builder::new(&mut g, Origin::default());
    let x = b.shaped(Op::Var(0), &[], Shape::fixed(&[xs.len()])).unwrap();
    let y = b.unary(op, x).unwrap();
    g.outputs.push((Output::Prediction, y));
    let plan = codegen::plan_for(fuse(g), 1).unwrap();
    let mut routine = codegen::compile(plan, Options::default()).unwrap();
    let mut input = xs.to_vec();
    let mut out = vec![0.0f32; xs.len()];
    routine
        .run(Buffers {
            input: &[0.0],
            label: None,
            masks: &[],
            vars: &mut [&mut input],
            outputs: &mut [&mut out],
            hypers: [0.0; 2],
        })
        .unwrap();
    out
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
fn extremes_saturate_instead_of_overflowing() {
    let got = compiled(Unary::Exp, &[-1000.0, 1000.0, 0.0]);
    assert!(got[0] >= 0.0 && got[0] < 1e-37, "{got:?}");
    assert!(got[1].is_finite() && got[1] > 1e38, "{got:?}");
    assert_eq!(got[2], 1.0);
    let got = compiled(Unary::Sigmoid, &[-1000.0, 1000.0]);
    assert!(got[0] < 1e-37 && got[1] == 1.0, "{got:?}");
    let got = compiled(Unary::Tanh, &[-1000.0, 1000.0, 0.0]);
    assert_eq!(got, vec![-1.0, 1.0, 0.0]);
}
