//! `cnnc export` checked in a real runtime: every model of `models/`, with
//! random weights and random batchnorm moving statistics, is exported and
//! run in onnxruntime (through Python), and its outputs are compared with
//! `cnnc predict`'s on the same batch; so is a model trained in Keras,
//! imported, whose onnxruntime outputs are compared with Keras's own. Also
//! the exported graphs' structure, as snapshots.
//!
//! The Python interpreter is `$CNNC_PYTHON`, else the venv `.ci/run`
//! makes (`$HOME/.cache/cnnc/venv`). Without onnxruntime the test fails
//! and says how to install it.

mod common;

use cnnc::onnx::proto::{ModelProto, attribute_type};
use cnnc::runtime::checkpoint::{self, Metadata};
use cnnc::runtime::npy;
use common::{Rng, Scratch, checked_file, cnnc, models, random_weights, stderr, stdout, stem};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOLERANCE: f32 = 1e-5;
const KERAS_ARCHIVE: &str = "tests/fixtures/keras/small_cnn.keras";
const KERAS_INPUT: &str = "tests/fixtures/keras/small_cnn.input.npy";
const KERAS_OUTPUT: &str = "tests/fixtures/keras/small_cnn.output.npy";
const BATCH: usize = 3;

/// The interpreter with onnxruntime: `$CNNC_PYTHON`, else `.ci/run`'s venv.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CNNC_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/cnnc/venv/bin/python")
}

/// Layers and settings the bundled models do not show: strides with
/// `same` padding and even kernels (the odd pixel at the bottom and
/// right), strided `same` pooling, non-square windows, a model that ends
/// in an image (softmax over its channels), batchnorm without scale or
/// center and on a matrix input, layers without bias, frozen layers.
const EDGES: [(&str, &str); 4] = [
    (
        "strided_same",
        "input 13x10x2\n\
         conv2d 4 4x2 strides=2x3 padding=same activation=tanh\n\
         maxpool2d 3x2 strides=2x1 padding=same\n\
         conv2d 3 2x2 padding=same use_bias=false\n\
         batchnorm center=false\n\
         activation softmax\n",
    ),
    (
        "matrix_input",
        "input 6x5\nbatchnorm scale=false epsilon=0.01\nflatten\ndense 7 activation=relu use_bias=false\ndropout 0.5\ndense 3 activation=sigmoid trainable=false\n",
    ),
    (
        "pool_first",
        "input 9x9x3\nmaxpool2d 2x2 padding=same\nbatchnorm\nconv2d 5 1x1 strides=2\nflatten\nbatchnorm\ndense 4 activation=softmax\n",
    ),
    (
        "image_out",
        "input 8x6x2\nconv2d 3 3x3 strides=2 padding=same activation=relu\n",
    ),
];

#[test]
fn every_model_runs_in_onnxruntime_as_in_cnnc() {
    let dir = Scratch::new("onnx-export");
    let mut rng = Rng(15);
    let mut runs = Vec::new();
    let edges = EDGES
        .iter()
        .map(|(name, text)| dir.write(&format!("{name}.cnn"), text.as_bytes()));
    // And a model trained in Keras, through `cnnc import`, on Keras's inputs.
    let keras = dir.join("keras_small_cnn.cnn");
    let o = cnnc(&["import", KERAS_ARCHIVE, "-o", &keras.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for model in models().into_iter().chain(edges).chain([keras.clone()]) {
        let name = stem(&model);
        let (weights, input) = if model == keras {
            (keras.with_extension("safetensors"), PathBuf::from(KERAS_INPUT))
        } else {
            let weights = dir.join(format!("{name}.safetensors"));
            checkpoint::save(&weights, &random_weights(&model, &mut rng), &Metadata::new()).unwrap();
            let shape = checked_file(&model).model.input.shape;
            let mut batch = vec![BATCH];
            batch.extend(&shape);
            let values: Vec<f32> = (0..batch.iter().product::<usize>()).map(|_| rng.uniform()).collect();
            let input = dir.join(format!("{name}.input.npy"));
            npy::write_f32(&input, &batch, &values).unwrap();
            (weights, input)
        };

        let onnx = dir.join(format!("{name}.onnx"));
        let cnnc_out = dir.join(format!("{name}.cnnc.npy"));
        let ort_out = dir.join(format!("{name}.ort.npy"));
        let path = |p: &Path| p.display().to_string();
        let model_path = path(&model);
        let o = cnnc(&["export", &model_path, "--weights", &path(&weights), "-o", &path(&onnx)]);
        assert!(o.status.success(), "export {name}: {}", stderr(&o));
        let o = cnnc(&[
            "predict",
            &model_path,
            "--weights",
            &path(&weights),
            &path(&input),
            "--output",
            &path(&cnnc_out),
        ]);
        assert!(o.status.success(), "predict {name}: {}", stderr(&o));
        runs.push((name, onnx, input, cnnc_out, ort_out));
    }

    let python = python();
    let mut command = Command::new(&python);
    command.arg("tests/fixtures/onnx/run_onnxruntime.py");
    for (_, onnx, input, _, ort_out) in &runs {
        command.args([onnx, input, ort_out]);
    }
    let install = format!(
        "this test runs the exported models in onnxruntime, through Python.\n\
         Make a venv with it, e.g.\n    python3 -m venv ~/.cache/cnnc/venv && ~/.cache/cnnc/venv/bin/pip install onnxruntime numpy onnx\n\
         or point CNNC_PYTHON at an interpreter that has onnxruntime and numpy (tried: {})",
        python.display()
    );
    let o = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run Python ({e}): {install}"));
    assert!(o.status.success(), "onnxruntime failed:\n{}\n{install}", stderr(&o));
    println!("{}", stdout(&o).trim());

    for (name, _, _, cnnc_out, ort_out) in &runs {
        let ours = npy::read_f32(cnnc_out).unwrap();
        let theirs = npy::read_f32(ort_out).unwrap();
        if *name == "keras_small_cnn" {
            let keras = npy::read_f32(Path::new(KERAS_OUTPUT)).unwrap();
            let diff = keras
                .iter()
                .zip(theirs.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!("{name}: max |Keras - onnxruntime| = {diff:.3e}");
            assert!(diff <= TOLERANCE, "Keras and onnxruntime differ by {diff}");
        }
        assert_eq!(ours.shape(), theirs.shape(), "{name}: output shapes differ");
        let diff = ours
            .iter()
            .zip(theirs.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{name}: max |cnnc - onnxruntime| = {diff:.3e} over {} outputs",
            ours.len()
        );
        assert!(diff <= TOLERANCE, "{name}: cnnc and onnxruntime differ by {diff}");
        // A constant output would agree for any weights.
        let spread = ours.iter().fold(f32::MIN, |m, &x| m.max(x)) - ours.iter().fold(f32::MAX, |m, &x| m.min(x));
        assert!(
            spread > 1e-3,
            "{name}: the outputs hardly vary ({spread}), so the comparison shows little"
        );
    }
}

/// The graph as lines a reviewer can read: each node's operator, inputs,
/// outputs and attributes, then the initializers' shapes.
fn describe(model: &ModelProto) -> String {
    let graph = model.graph.as_ref().unwrap();
    let mut out = format!(
        "opset {:?}, ir_version {}\n",
        model.opset_import.iter().map(|o| o.version).collect::<Vec<_>>(),
        model.ir_version
    );
    let value = |v: &cnnc::onnx::proto::ValueInfoProto| {
        use cnnc::onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
        let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return format!("{} (not a tensor)", v.name);
        };
        let dims: Vec<String> = t
            .shape
            .iter()
            .flat_map(|s| &s.dim)
            .map(|d| match &d.value {
                Some(Value::DimValue(n)) => n.to_string(),
                Some(Value::DimParam(p)) => p.clone(),
                None => "?".into(),
            })
            .collect();
        format!(
            "{} {} [{}]",
            v.name,
            cnnc::onnx::type_name(t.elem_type),
            dims.join(", ")
        )
    };
    for i in &graph.input {
        out += &format!("input {}\n", value(i));
    }
    for node in &graph.node {
        let attributes: Vec<String> = node
            .attribute
            .iter()
            .map(|a| match a.r#type {
                attribute_type::INTS => format!("{}={:?}", a.name, a.ints),
                attribute_type::INT => format!("{}={}", a.name, a.i),
                attribute_type::FLOAT => format!("{}={}", a.name, a.f),
                other => format!("{}: type {other}", a.name),
            })
            .collect();
        let line = format!(
            "{} {}({}) -> {} {}",
            node.name,
            node.op_type,
            node.input.join(", "),
            node.output.join(", "),
            attributes.join(" ")
        );
        out += line.trim_end();
        out += "\n";
    }
    for i in &graph.output {
        out += &format!("output {}\n", value(i));
    }
    for t in &graph.initializer {
        out += &format!("initializer {} {:?}\n", t.name, t.dims);
    }
    out
}

#[test]
fn exported_graphs_transpose_at_the_edges_only() {
    let dir = Scratch::new("onnx-graphs");
    for name in ["celeb8", "fcnn_homework", "logistic"] {
        let onnx = dir.join(format!("{name}.onnx"));
        let o = cnnc(&[
            "export",
            &format!("models/{name}.cnn"),
            "-o",
            &onnx.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("initial weights (seed 0)"), "{}", stdout(&o));
        let model = ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
        insta::assert_snapshot!(format!("graph_{name}"), describe(&model));
    }
}

#[test]
fn weights_of_another_model_are_refused() {
    let dir = Scratch::new("onnx-wrong-weights");
    let out = dir.join("m.onnx");
    let o = cnnc(&[
        "export",
        "models/mnist_cnn.cnn",
        "--weights",
        "tests/fixtures/keras/do_the_math_keras.safetensors",
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not fit the model"), "{}", stderr(&o));
    assert!(!out.exists());
}
