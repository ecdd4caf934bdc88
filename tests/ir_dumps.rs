//! `cnnc ir`: text and dot dumps of the forward and backward graphs of every
//! model, and agreement between the IR's shapes and `cnnc check`'s.

mod common;

use cnnc::ir::{Op, Phase};
use cnnc::lower::{Mode, lower};
use common::{checked_file, cnnc, models, stdout, stem};

#[test]
fn every_model_has_forward_and_backward_dumps() {
    for path in models() {
        let file = path.display().to_string();
        for stage in ["forward", "backward"] {
            for format in ["text", "dot"] {
                let out = cnnc(&["ir", &file, "--stage", stage, "--format", format]);
                assert!(out.status.success(), "{file} {stage}: {}", common::stderr(&out));
                insta::assert_snapshot!(format!("{}_{stage}_{format}", stem(&path)), stdout(&out));
            }
        }
    }
}

/// The later stages: every model's optimized graph and its fused kernels
/// with the memory plan at batch 32; Cranelift's IR of the smallest models.
#[test]
fn optimized_fused_and_clif_stages() {
    for path in models() {
        let file = path.display().to_string();
        for stage in ["optimized", "fused"] {
            let out = cnnc(&["ir", &file, "--stage", stage, "--batch", "32"]);
            assert!(out.status.success(), "{file} {stage}: {}", common::stderr(&out));
            insta::assert_snapshot!(format!("{}_{stage}", stem(&path)), stdout(&out));
        }
    }
    // The convolutions' algorithms, one forced where it applies.
    let out = cnnc(&[
        "ir",
        "models/mnist_cnn.cnn",
        "--stage",
        "fused",
        "--batch",
        "32",
        "--conv",
        "winograd4",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    insta::assert_snapshot!("mnist_cnn_fused_winograd4", stdout(&out));
    // `--conv gemm` computes every convolution by im2col + GEMM, where
    // `auto` gives the first layers of mnist_cnn and keras_intro (one
    // channel) direct kernels.
    for (model, auto) in [("mnist_cnn", "direct"), ("keras_intro", "direct")] {
        let algorithms = |conv: &str| -> Vec<String> {
            let out = cnnc(&[
                "ir",
                &format!("models/{model}.cnn"),
                "--stage",
                "fused",
                "--batch",
                "32",
                "--conv",
                conv,
            ]);
            assert!(out.status.success(), "{}", common::stderr(&out));
            stdout(&out)
                .lines()
                .filter(|l| l.contains(" = conv2d("))
                .map(|l| {
                    l.split(": ")
                        .nth(1)
                        .and_then(|a| a.split(" %").next())
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        };
        assert!(
            algorithms("auto").iter().any(|a| a == auto),
            "{model}: {:?}",
            algorithms("auto")
        );
        let gemm = algorithms("gemm");
        assert!(
            !gemm.is_empty() && gemm.iter().all(|a| a == "im2col + gemm"),
            "{model}: {gemm:?}"
        );
    }
    for (model, routine) in [
        ("logistic", "train"),
        ("logistic", "predict"),
        ("keras_intro", "predict"),
    ] {
        let file = format!("models/{model}.cnn");
        let out = cnnc(&["ir", &file, "--stage", "clif", "--routine", routine, "--batch", "1"]);
        assert!(out.status.success(), "{file} clif: {}", common::stderr(&out));
        insta::assert_snapshot!(format!("{model}_{routine}_clif"), stdout(&out));
    }
}

/// Every layer's last node in the IR has the shape `cnnc check` reports.
#[test]
fn ir_shapes_agree_with_check() {
    for path in models() {
        let checked = checked_file(&path);
        for mode in [Mode::Inference, Mode::Training] {
            let graph = lower(&checked, mode).expect("lowers");
            let order = graph.schedule();
            for (layer, info) in checked.model.layers.iter().zip(&checked.layers) {
                let last = order
                    .iter()
                    .rev()
                    .find(|&&n| graph[n].origin.what == layer.name && graph[n].origin.phase == Phase::Forward);
                let Some(&node) = last else {
                    // Only dropout at inference lowers to nothing.
                    assert!(mode == Mode::Inference, "{} has no nodes", layer.name);
                    continue;
                };
                assert_eq!(
                    graph[node].shape.resolve(7),
                    std::iter::once(7)
                        .chain(info.output.iter().copied())
                        .collect::<Vec<_>>(),
                    "{}: {} in {mode:?}",
                    stem(&path),
                    layer.name
                );
            }
        }
    }
}

#[test]
fn verifier_reports_a_broken_graph_as_a_compiler_bug() {
    let checked = checked_file(std::path::Path::new("models/mnist_cnn.cnn"));
    let mut graph = lower(&checked, Mode::Training).expect("lowers");
    let conv = graph
        .nodes
        .node_indices()
        .find(|&n| matches!(graph[n].op, Op::Conv2d(_)))
        .expect("a conv");
    graph.nodes[conv].shape = cnnc::ir::Shape::batch_of(&[25, 26, 32]);
    let err = cnnc::ir::verify::verify(&graph).expect_err("shape was corrupted");
    let text = err.to_string();
    assert!(text.contains("internal compiler error"), "{text}");
    assert!(text.contains("conv2d") && text.contains("line 6"), "{text}");
}

/// Kernel regularizers are nodes of the loss, on their layer's line, so
/// autodiff differentiates them with the rest; a frozen kernel has none.
#[test]
fn regularizers_are_part_of_the_loss() {
    let dir = common::Scratch::new("regularized-ir");
    let file = dir.write(
        "regularized.cnn",
        b"input 4x4x1
conv2d 2 3x3 kernel_regularizer=l2(0.01) trainable=false
flatten
dense 3 activation=relu kernel_regularizer=l1_l2(l1=0.001, l2=0.02)
dense 2 activation=softmax kernel_regularizer=l1
",
    );
    let out = cnnc(&["ir", file.to_str().unwrap(), "--stage", "forward"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    insta::assert_snapshot!("regularized_forward_text", stdout(&out));
    let graph = lower(&checked_file(&file), Mode::Evaluation).expect("lowers");
    let penalties: Vec<&str> = graph
        .nodes
        .node_weights()
        .filter(|n| n.op == Op::Sum { axes: vec![0, 1] })
        .map(|n| n.origin.what.as_str())
        .collect();
    assert_eq!(
        penalties,
        [
            "dense/kernel l1_l2(l1=0.001, l2=0.02)",
            "dense/kernel l1_l2(l1=0.001, l2=0.02)",
            "dense_1/kernel l1(0.01)"
        ]
    );
}
