//! Each graph pass and fusion alone: a small graph in, the graph (or the
//! kernels) out, as the IR dump prints them.

use cnnc::autodiff::{cross_entropy_gradient, differentiate};
use cnnc::codegen::{self, print::fused};
use cnnc::fuse::{Kernel, fuse};
use cnnc::ir::print::text;
use cnnc::ir::{Binary, Builder, Graph, NodeId, Op, Origin, Output, Shape, Unary, VarDecl};
use cnnc::passes::cse::CommonSubexpressions;
use cnnc::passes::dce::DeadCode;
use cnnc::passes::fold::ConstantFolding;
use cnnc::passes::simplify::Simplify;
use cnnc::passes::{Pass, optimize};

/// A graph of one variable `x` of `shape` and what `body` builds on it,
/// whose result is the prediction.
fn graph(shape: &[usize], body: impl FnOnce(&mut Builder, NodeId) -> NodeId) -> Graph {
    let mut g = Graph::default();
    g.vars.push(VarDecl {
        name: "x".into(),
        shape: shape.to_vec(),
        trainable: true,
    });
    let mut b = Builder::new(&mut g, Origin::default());
    let x = b.shaped(Op::Var(0), &[], Shape::fixed(shape)).unwrap();
    let y = body(&mut b, x);
    g.outputs.push((Output::Prediction, y));
    g
}

/// Runs `pass` once, then dead-code elimination to drop what it replaced.
fn after(pass: &dyn Pass, mut g: Graph) -> (bool, String) {
    let changed = pass.run(&mut g).unwrap();
    DeadCode.run(&mut g).unwrap();
    (changed, text(&g))
}

#[test]
fn folding_computes_constants_with_the_ops_own_meaning() {
    let g = graph(&[2], |b, x| {
        let nan = b.constant(f64::NAN).unwrap();
        // ReLU keeps NaN, as the engines do; max(NaN, 0) would make it 0.
        let relu = b.unary(Unary::Relu, nan).unwrap();
        let zero = b.constant(0.0).unwrap();
        let one = b.unary(Unary::Exp, zero).unwrap();
        let sum = b.binary(Binary::Add, relu, one).unwrap();
        b.binary(Binary::Mul, x, sum).unwrap()
    });
    let (changed, out) = after(&ConstantFolding, g);
    assert!(changed);
    insta::assert_snapshot!(out, @r"
    var %x : [2] trainable
    %0 = const NaN : []
    %1 = mul(%x, %0) : [2]
    return prediction=%1
    ");
}

#[test]
fn folding_keeps_one_factor_of_the_batch_size() {
    let g = graph(&[2], |b, x| {
        let n = b.per_batch(3.0).unwrap();
        let two = b.constant(2.0).unwrap();
        let scaled = b.binary(Binary::Mul, n, two).unwrap();
        // 1/N divided by 1/N would need N^-2: not folded.
        let ratio = b.binary(Binary::Div, scaled, n).unwrap();
        b.binary(Binary::Mul, x, ratio).unwrap()
    });
    let (_, out) = after(&ConstantFolding, g);
    insta::assert_snapshot!(out, @r"
    var %x : [2] trainable
    %0 = const 3/N : []
    %1 = const 6/N : []
    %2 = div(%1, %0) : []
    %3 = mul(%x, %2) : [2]
    return prediction=%3
    ");
}

#[test]
fn simplification_removes_identities() {
    let g = graph(&[2, 3], |b, x| {
        let one = b.constant(1.0).unwrap();
        let zero = b.constant(0.0).unwrap();
        let a = b.binary(Binary::Mul, x, one).unwrap();
        let a = b.binary(Binary::Add, zero, a).unwrap();
        let a = b.unary(Unary::Neg, a).unwrap();
        let a = b.unary(Unary::Neg, a).unwrap();
        let flat = b.reshape(a, Shape::fixed(&[6])).unwrap();
        b.reshape(flat, Shape::fixed(&[3, 2])).unwrap()
    });
    let mut g = g;
    for _ in 0..4 {
        Simplify.run(&mut g).unwrap();
    }
    DeadCode.run(&mut g).unwrap();
    insta::assert_snapshot!(text(&g), @r"
    var %x : [2, 3] trainable
    %0 = reshape(%x) : [3,2]
    return prediction=%0
    ");
}

#[test]
fn simplification_keeps_broadcasting_identities() {
    // x * 1 where the 1 widens x is not x.
    let g = graph(&[3], |b, x| {
        let one = b.shaped(Op::Var(0), &[], Shape::fixed(&[3])).unwrap();
        let ones = b.constant(1.0).unwrap();
        let wide = b.broadcast(ones, Shape::fixed(&[2, 3])).unwrap();
        let y = b.binary(Binary::Mul, x, wide).unwrap();
        b.binary(Binary::Add, y, one).unwrap()
    });
    let (changed, _) = after(&Simplify, g);
    assert!(!changed);
}

#[test]
fn cse_merges_equal_nodes_and_keeps_different_ones() {
    let g = graph(&[4], |b, x| {
        let a = b.unary(Unary::Exp, x).unwrap();
        let a2 = b.unary(Unary::Exp, x).unwrap();
        let t = b.unary(Unary::Tanh, x).unwrap();
        let s = b.binary(Binary::Add, a, a2).unwrap();
        b.binary(Binary::Mul, s, t).unwrap()
    });
    let (changed, out) = after(&CommonSubexpressions, g);
    assert!(changed);
    insta::assert_snapshot!(out, @r"
    var %x : [4] trainable
    %0 = exp(%x) : [4]
    %1 = tanh(%x) : [4]
    %2 = add(%0, %0) : [4]
    %3 = mul(%2, %1) : [4]
    return prediction=%3
    ");
}

#[test]
fn dce_drops_what_no_output_needs() {
    let mut g = graph(&[4], |b, x| {
        b.unary(Unary::Exp, x).unwrap();
        b.unary(Unary::Tanh, x).unwrap()
    });
    assert!(DeadCode.run(&mut g).unwrap());
    assert!(!DeadCode.run(&mut g).unwrap());
    assert_eq!(g.nodes.node_count(), 2);
}

/// The kernels of an optimized graph, as `cnnc ir --stage fused` prints
/// them for batch 2.
fn kernels(mut g: Graph) -> String {
    optimize(&mut g).unwrap();
    fused(&codegen::plan_for(fuse(g), 2, Default::default()).unwrap())
}

#[test]
fn fusion_makes_one_loop_of_an_elementwise_chain() {
    let g = graph(&[8, 3], |b, x| {
        let e = b.unary(Unary::Exp, x).unwrap();
        let half = b.constant(0.5).unwrap();
        let h = b.binary(Binary::Mul, e, half).unwrap();
        b.unary(Unary::Tanh, h).unwrap()
    });
    insta::assert_snapshot!(kernels(g), @r"
    kernel 0: loop [8,3]: %3 = tanh(mul(exp(%x), 0.5))
          [%3 -> output prediction]
    arena for batch 2: 0.0 KB (1 kernels, 1 variables)
    ");
}

#[test]
fn fusion_stores_values_used_twice_and_sums_over_inlined_loops() {
    let g = graph(&[8, 3], |b, x| {
        let e = b.unary(Unary::Exp, x).unwrap();
        let s = b.sum(e, vec![0]).unwrap();
        let t = b.binary(Binary::Mul, e, s).unwrap();
        b.binary(Binary::Add, t, e).unwrap()
    });
    insta::assert_snapshot!(kernels(g), @r"
    kernel 0: loop [8,3]: %0 = exp(%x)
          [%0 -> arena+0]
    kernel 1: reduce [8,3] axes=[0]: %1 = sum(%0)
          [%1 -> arena+128]
    kernel 2: loop [8,3]: %3 = add(mul(%0, %1), %0)
          [%3 -> output prediction]
    arena for batch 2: 0.2 KB (3 kernels, 1 variables)
    ");
}

#[test]
fn fusion_puts_softmax_its_cross_entropy_and_the_gradient_in_one_row_kernel() {
    let mut g = graph(&[4, 3], |b, x| b.op(Op::Softmax, &[x]).unwrap());
    let logits = g.operands(g.outputs[0].1)[0];
    let mut b = Builder::new(&mut g, Origin::default());
    let labels = b.shaped(Op::Label, &[], Shape::fixed(&[4, 3])).unwrap();
    let loss = b.op(Op::SoftmaxCrossEntropy, &[logits, labels]).unwrap();
    g.outputs.push((Output::Loss, loss));
    differentiate(&mut g).unwrap();
    let probs = g.outputs[0].1;
    // The gradient the rule emits is the one fusion looks for.
    let found = cross_entropy_gradient(&g, probs, labels).expect("the rule's gradient is found");
    assert!(
        g.outputs
            .iter()
            .any(|&(o, n)| o == Output::Grad(0) && n == found.gradient)
    );
    let program = {
        let mut g = g.clone();
        optimize(&mut g).unwrap();
        fuse(g)
    };
    assert!(matches!(
        program.kernels.as_slice(),
        [Kernel::SoftmaxCrossEntropy {
            probs: Some(_),
            grad: Some(_),
            ..
        }]
    ));
    insta::assert_snapshot!(kernels(g), @r"
    kernel 0: rows %2 = softmax_cross_entropy(%x, %1) : [], %0 = softmax, %5 = (softmax - labels) * 0.25
          [%2 -> output loss, %0 -> output prediction, %5 -> output grad(x)]
    arena for batch 2: 0.0 KB (1 kernels, 1 variables)
    ");
}

#[test]
fn fusion_merges_loops_over_one_shape() {
    let mut g = graph(&[5], |b, x| b.unary(Unary::Exp, x).unwrap());
    let x = g.operands(g.outputs[0].1)[0];
    let mut b = Builder::new(&mut g, Origin::default());
    let t = b.unary(Unary::Tanh, x).unwrap();
    g.outputs.push((Output::Grad(0), t));
    insta::assert_snapshot!(kernels(g), @r"
    kernel 0: loop [5]: %0 = exp(%x); %1 = tanh(%x)
          [%0 -> output prediction, %1 -> output grad(x)]
    arena for batch 2: 0.0 KB (1 kernels, 1 variables)
    ");
}
