//! Every gradient rule against central differences in f64: each primitive
//! alone, fed by trainable variables, under a random linear probe so that
//! every output element matters differently.

mod common;

use cnnc::interp::Feeds;
use cnnc::ir::{Binary, Builder, Conv, Graph, Hyper, NodeId, Op, Origin, Output, Pool, Shape, Unary, VarDecl, verify};
use cnnc::runtime::gradcheck::{F64, TOLERANCE, check_graph};
use cnnc::runtime::rng::Rng;
use ndarray::{ArrayD, IxDyn};

/// Builds `loss = sum(op(vars) * probe)`, differentiates it and checks
/// every element of every variable. `positive` keeps variables in
/// [0.5, 1.5) for log, sqrt and recip.
fn check(name: &str, shapes: &[&[usize]], positive: bool, op: impl Fn(&mut Builder, &[NodeId]) -> NodeId) {
    let mut g = common::probed(name, shapes, op);
    // The gradient check differentiates the loss alone.
    g.outputs.retain(|(o, _)| *o == Output::Loss);
    verify::verify(&g).unwrap();
    let forward = g.clone();
    cnnc::autodiff::differentiate(&mut g).unwrap_or_else(|e| panic!("{name}: {e}"));

    let mut rng = Rng::new(7);
    let vars: Vec<ArrayD<f64>> = forward
        .vars
        .iter()
        .map(|v| {
            ArrayD::from_shape_simple_fn(IxDyn(&v.shape), || {
                if positive {
                    0.5 + rng.uniform()
                } else {
                    2.0 * rng.uniform() - 1.0
                }
            })
        })
        .collect();
    let input = ArrayD::<f64>::zeros(IxDyn(&[2]));
    let hyper = |_: Hyper| 0.0;
    let feeds = Feeds {
        input: input.view(),
        label: None,
        vars: &vars,
        masks: &[],
        hyper: &hyper,
    };
    let analytic = cnnc::interp::run(&g, &feeds).unwrap();
    let report = check_graph(&forward, &analytic, &feeds, (usize::MAX, F64), &mut rng).unwrap();
    let expected: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    assert_eq!(report.samples.len(), expected, "{name}: every element is checked");
    let worst = report.worst().unwrap();
    assert!(worst.error <= TOLERANCE, "{name}: {worst:?}");
}

#[test]
fn unary_rules() {
    for &u in Unary::ALL {
        // Log, sqrt and recip are checked where they are smooth.
        let positive = matches!(u, Unary::Log | Unary::Sqrt | Unary::Recip);
        check(&format!("{u:?}"), &[&[3, 4]], positive, |b, x| {
            b.unary(u, x[0]).unwrap()
        });
    }
}

#[test]
fn binary_rules_with_broadcasting() {
    for &op in Binary::ALL {
        let positive = op == Binary::Div;
        check(&format!("{op:?}"), &[&[2, 3], &[2, 3]], positive, |b, x| {
            b.binary(op, x[0], x[1]).unwrap()
        });
        // A bias-like operand broadcast over rows, and a scalar-like one.
        check(&format!("{op:?} broadcast"), &[&[2, 3, 4], &[4]], positive, |b, x| {
            b.binary(op, x[0], x[1]).unwrap()
        });
        check(&format!("{op:?} keepdims"), &[&[1, 3], &[2, 1]], positive, |b, x| {
            b.binary(op, x[0], x[1]).unwrap()
        });
    }
}

#[test]
fn reductions_and_movement() {
    check("sum", &[&[2, 3, 4]], false, |b, x| b.sum(x[0], vec![0, 2]).unwrap());
    check("broadcast", &[&[1, 3]], false, |b, x| {
        b.broadcast(x[0], Shape::fixed(&[4, 3])).unwrap()
    });
    check("reshape", &[&[2, 3, 4]], false, |b, x| {
        b.reshape(x[0], Shape::fixed(&[6, 4])).unwrap()
    });
    check("transpose", &[&[2, 3, 4]], false, |b, x| {
        b.op(Op::Transpose { perm: vec![2, 0, 1] }, &[x[0]]).unwrap()
    });
}

#[test]
fn matmul_in_every_transpose() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
        let m: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
        check(&format!("matmul {ta} {tb}"), &[a, m], false, |b, x| {
            b.op(
                Op::MatMul {
                    transpose_a: ta,
                    transpose_b: tb,
                },
                &[x[0], x[1]],
            )
            .unwrap()
        });
    }
}

/// Input HxW, kernel HxW, strides, padding (low, high) per axis.
type ConvCase = ([usize; 2], [usize; 2], [usize; 2], [(i64, i64); 2]);

#[test]
fn conv2d_strides_paddings_and_kernels() {
    let cases: [ConvCase; 7] = [
        ([5, 5], [3, 3], [1, 1], [(0, 0), (0, 0)]), // valid, odd
        ([5, 5], [3, 3], [1, 1], [(1, 1), (1, 1)]), // same, odd
        ([6, 6], [2, 2], [1, 1], [(0, 1), (0, 1)]), // same, even: odd pixel bottom/right
        ([7, 6], [3, 3], [2, 2], [(1, 1), (0, 1)]), // strided same
        ([8, 8], [3, 3], [2, 2], [(0, 0), (0, 0)]), // strided valid leaving a row unused
        ([7, 5], [5, 3], [1, 2], [(0, 0), (1, 1)]), // non-square kernel and strides
        ([6, 7], [4, 2], [3, 1], [(1, 2), (0, 1)]), // even kernel, stride 3
    ];
    for (input, kernel, strides, padding) in cases {
        let name = format!("conv {input:?} {kernel:?} {strides:?} {padding:?}");
        check(
            &name,
            &[&[2, input[0], input[1], 3], &[kernel[0], kernel[1], 3, 2]],
            false,
            |b, x| {
                b.op(Op::Conv2d(Conv::forward(strides, padding, 1)), &[x[0], x[1]])
                    .unwrap()
            },
        );
    }
}

#[test]
fn grouped_conv2d() {
    // (channels, groups, outputs): depthwise, depthwise with a multiplier
    // of 2, and two groups of two channels each making three outputs.
    for (c, groups, outputs) in [(3, 3, 3), (3, 3, 6), (4, 2, 6)] {
        for (strides, padding) in [([1, 1], [(1, 1), (1, 1)]), ([2, 1], [(0, 1), (0, 0)])] {
            let name = format!("conv {c} channels in {groups} groups to {outputs}, {strides:?} {padding:?}");
            check(&name, &[&[2, 5, 6, c], &[3, 2, c / groups, outputs]], false, |b, x| {
                b.op(Op::Conv2d(Conv::forward(strides, padding, groups)), &[x[0], x[1]])
                    .unwrap()
            });
        }
    }
}

#[test]
fn maxpool_windows() {
    for (input, window, strides, padding) in [
        ([4, 4], [2, 2], [2, 2], [(0, 0), (0, 0)]),
        ([5, 5], [2, 2], [2, 2], [(0, 1), (0, 1)]), // same: padding never wins
        ([5, 6], [3, 2], [1, 2], [(1, 1), (0, 0)]), // non-square, stride != window
        ([6, 5], [2, 3], [3, 1], [(0, 0), (1, 1)]),
    ] {
        let pool = Pool {
            window,
            strides,
            padding,
        };
        check(
            &format!("maxpool {input:?} {window:?} {strides:?}"),
            &[&[2, input[0], input[1], 3]],
            false,
            |b, x| b.op(Op::MaxPool2d(pool), &[x[0]]).unwrap(),
        );
    }
}

#[test]
fn avgpool_windows_and_their_adjoint() {
    for (input, window, strides, padding) in [
        ([4, 4], [2, 2], [2, 2], [(0, 0), (0, 0)]),
        ([5, 5], [2, 2], [2, 2], [(0, 1), (0, 1)]), // same: padding not counted
        ([7, 7], [3, 3], [2, 2], [(1, 1), (1, 1)]), // same, border windows of 4 and 6 cells
        ([5, 6], [3, 2], [1, 2], [(1, 1), (0, 0)]),
    ] {
        let pool = Pool {
            window,
            strides,
            padding,
        };
        let x = [2, input[0], input[1], 3];
        check(
            &format!("avgpool {input:?} {window:?} {strides:?}"),
            &[&x],
            false,
            |b, v| b.op(Op::AvgPool2d(pool), &[v[0]]).unwrap(),
        );
        // The gradient's own rule, from a pooled-shape variable.
        let pooled = Op::AvgPool2d(pool)
            .infer(&[&Shape::fixed(&x)], &Shape::scalar())
            .unwrap();
        let pooled: Vec<usize> = pooled.resolve(0);
        check(
            &format!("avgpool2d_grad {input:?} {window:?} {strides:?}"),
            &[&pooled],
            false,
            |b, v| b.shaped(Op::AvgPool2dGrad(pool), &[v[0]], Shape::fixed(&x)).unwrap(),
        );
    }
}

#[test]
fn softmax_and_fused_losses() {
    check("softmax", &[&[3, 5]], false, |b, x| b.op(Op::Softmax, &[x[0]]).unwrap());
    // Soft labels, constant: rows of the softmax's sum to 1.
    for (fused, label) in [(Op::SoftmaxCrossEntropy, 0.25), (Op::SigmoidCrossEntropy, 0.7)] {
        check(&format!("{fused:?}"), &[&[3, 4]], false, |b, x| {
            let c = b.constant(label).unwrap();
            let labels = b.broadcast(c, Shape::fixed(&[3, 4])).unwrap();
            let loss = b.op(fused.clone(), &[x[0], labels]).unwrap();
            b.reshape(loss, Shape::fixed(&[1])).unwrap()
        });
    }
}

#[test]
fn an_op_without_a_rule_is_an_error_naming_it_and_its_layer() {
    let mut g = Graph::default();
    g.vars.push(VarDecl {
        name: "w".into(),
        shape: vec![1, 4, 4, 1],
        trainable: true,
    });
    let origin = Origin {
        what: "max_pooling2d".into(),
        line: 9,
        ..Origin::default()
    };
    let mut b = Builder::new(&mut g, origin);
    let w = b.shaped(Op::Var(0), &[], Shape::fixed(&[1, 4, 4, 1])).unwrap();
    let pool = Pool {
        window: [2, 2],
        strides: [2, 2],
        padding: [(0, 0); 2],
    };
    let dy = b.op(Op::MaxPool2d(pool), &[w]).unwrap();
    let dx = b.op(Op::MaxPool2dGrad(pool), &[w, dy]).unwrap();
    let s = b.sum(dx, vec![0, 1, 2, 3]).unwrap();
    let loss = b.reshape(s, Shape::scalar()).unwrap();
    g.outputs = vec![(Output::Loss, loss)];
    let err = cnnc::autodiff::differentiate(&mut g).expect_err("no second-order rule");
    let text = err.to_string();
    assert!(
        text.contains("maxpool2d_grad") && text.contains("max_pooling2d") && text.contains("line 9"),
        "{text}"
    );
}

/// A wrong gradient fails the check, naming the variable and its error.
#[test]
fn a_wrong_gradient_is_caught() {
    let mut g = Graph::default();
    g.vars.push(VarDecl {
        name: "w".into(),
        shape: vec![3],
        trainable: true,
    });
    let mut b = Builder::new(&mut g, Origin::default());
    let w = b.shaped(Op::Var(0), &[], Shape::fixed(&[3])).unwrap();
    let y = b.unary(Unary::Tanh, w).unwrap();
    let s = b.sum(y, vec![0]).unwrap();
    let loss = b.reshape(s, Shape::scalar()).unwrap();
    g.outputs = vec![(Output::Loss, loss)];
    let forward = g.clone();
    cnnc::autodiff::differentiate(&mut g).unwrap();
    let vars = vec![ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.3, -0.2, 0.9]).unwrap()];
    let input = ArrayD::<f64>::zeros(IxDyn(&[1]));
    let hyper = |_: Hyper| 0.0;
    let feeds = Feeds {
        input: input.view(),
        label: None,
        vars: &vars,
        masks: &[],
        hyper: &hyper,
    };
    let mut analytic = cnnc::interp::run(&g, &feeds).unwrap();
    for (o, v) in &mut analytic {
        if let Output::Grad(_) = o {
            v[[1]] *= 1.01;
        }
    }
    let report = check_graph(&forward, &analytic, &feeds, (usize::MAX, F64), &mut Rng::new(1)).unwrap();
    assert!(!report.passed());
    let worst = report.worst().unwrap();
    assert_eq!((worst.var.as_str(), worst.index.as_slice()), ("w", &[1][..]));
    assert!(worst.error > 5e-3, "{worst:?}");
}
