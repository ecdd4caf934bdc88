//! `cnnc import` of models that torch.onnx.export made of nn.Sequential
//! stacks (tests/fixtures/onnx, made by its make_fixtures.py): the `.cnn`
//! files they become, their parameter counts against PyTorch's, and
//! `cnnc predict` against PyTorch's outputs. Models cnnc cannot express,
//! and files that are not models, are refused with an error naming the
//! node and operator or the problem; none makes the importer panic.

mod common;

use cnnc::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_type, data_type, tensor_shape_proto, tensor_shape_proto::dimension::Value, type_proto,
};
use cnnc::onnx::tensor;
use cnnc::runtime::npy;
use common::{Scratch, checked_file, cnnc, stderr, stdout};
use ndarray::{ArrayD, IxDyn};
use prost::Message;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const FIXTURES: &str = "tests/fixtures/onnx";
const TOLERANCE: f32 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// `cnnc import FILE -o DIR/NAME.cnn`: the model and weights paths.
fn import(file: &Path, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let model = dir.join(format!("{name}.cnn"));
    let o = cnnc(&[
        "import",
        &file.display().to_string(),
        "-o",
        &model.display().to_string(),
    ]);
    assert!(o.status.success(), "import {}: {}", file.display(), stderr(&o));
    let weights = model.with_extension("safetensors");
    (model, weights)
}

/// NCHW to NHWC, for images; anything else as it is.
fn channels_last(a: ArrayD<f32>) -> ArrayD<f32> {
    match a.ndim() {
        4 => a.permuted_axes(IxDyn(&[0, 2, 3, 1])).as_standard_layout().into_owned(),
        _ => a,
    }
}

#[test]
fn torch_models_predict_as_in_pytorch() {
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("fixtures.json")).unwrap()).unwrap();
    let fixtures = table["fixtures"].as_object().unwrap();
    assert!(fixtures.len() >= 9, "fixtures.json lists {} fixtures", fixtures.len());
    let exporters: Vec<&str> = fixtures.values().filter_map(|f| f["exporter"].as_str()).collect();
    assert!(exporters.contains(&"legacy") && exporters.contains(&"dynamo"));
    let dir = Scratch::new("onnx-import");
    for (name, facts) in fixtures {
        let (model, weights) = import(&fixture(&format!("{name}.onnx")), &dir, name);
        insta::assert_snapshot!(
            format!("cnn_{name}"),
            std::fs::read_to_string(&model)
                .unwrap()
                .replace(&dir.display().to_string(), "DIR")
        );

        // Parameters: PyTorch's are cnnc's trainable ones; its batchnorm
        // running statistics are cnnc's non-trainable ones.
        let o = cnnc(&["check", &model.display().to_string(), "--format", "json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(
            summary["trainable_params"], facts["params"],
            "{name}: trainable parameters"
        );
        assert_eq!(
            summary["non_trainable_params"], facts["buffers"],
            "{name}: non-trainable parameters"
        );

        // Predictions: PyTorch's NCHW batch, as cnnc reads it.
        let torch_in = npy::read_f32(&fixture(&format!("{name}.input.npy"))).unwrap();
        let shape = checked_file(&model).model.input.shape;
        let input = if torch_in.shape()[1..] == shape[..] {
            torch_in
        } else {
            channels_last(torch_in)
        };
        assert_eq!(input.shape()[1..], shape[..], "{name}: input shape");
        let nhwc = dir.join(format!("{name}.nhwc.npy"));
        npy::write_f32(&nhwc, input.shape(), &input.iter().copied().collect::<Vec<_>>()).unwrap();
        let out = dir.join(format!("{name}.cnnc.npy"));
        let o = cnnc(&[
            "predict",
            &model.display().to_string(),
            "--weights",
            &weights.display().to_string(),
            &nhwc.display().to_string(),
            "--output",
            &out.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let ours = npy::read_f32(&out).unwrap();
        let theirs = channels_last(npy::read_f32(&fixture(&format!("{name}.output.npy"))).unwrap());
        assert_eq!(ours.shape(), theirs.shape(), "{name}: output shape");
        let diff = ours
            .iter()
            .zip(theirs.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{name}: max |cnnc - PyTorch| = {diff:.3e} over {} outputs", ours.len());
        assert!(diff <= TOLERANCE, "{name}: cnnc and PyTorch differ by {diff}");
    }
}

/// The error `cnnc import` gives for `file`, with the scratch folder's
/// path taken out.
fn refusal(file: &Path) -> String {
    let dir = Scratch::new("onnx-refused");
    let model = dir.join("m.cnn");
    let o = cnnc(&[
        "import",
        &file.display().to_string(),
        "-o",
        &model.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(!dir.join("m.cnn").exists(), "a refused model was written");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    err.replace(&dir.display().to_string(), "DIR")
}

#[test]
fn what_cnnc_cannot_express_is_refused_by_node_and_operator() {
    for name in [
        "unsupported_avgpool_padding",
        "unsupported_hardswish",
        "unsupported_padding",
    ] {
        insta::assert_snapshot!(name, refusal(&fixture(&format!("{name}.onnx"))));
    }
}

#[test]
fn files_that_are_not_models_are_refused() {
    let dir = Scratch::new("onnx-not-models");
    let cnn = std::fs::read(fixture("cnn.onnx")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"input 28x28x1\ndense 10\n".to_vec()),
        ("truncated", cnn[..cnn.len() / 2].to_vec()),
        ("zip_signature_only", b"PK\x03\x04 and no archive".to_vec()),
        ("hdf5", b"\x89HDF\r\n\x1a\n and then nothing".to_vec()),
    ];
    for (name, bytes) in cases {
        let file = dir.write(&format!("{name}.onnx"), &bytes);
        let shown = refusal(&file).replace(&dir.display().to_string(), "DIR");
        insta::assert_snapshot!(format!("not_a_model_{name}"), shown);
    }
    let missing = dir.join("absent.onnx");
    assert!(refusal(&missing).contains("no such file"));
}

/// A one-input graph of `nodes` on an input of `dims` (after the batch
/// axis), with `weights` as initializers, whose output is `output`.
fn graph(nodes: Vec<NodeProto>, weights: Vec<TensorProto>, dims: &[usize], output: &str, opset: i64) -> Vec<u8> {
    let value = |name: &str, dims: &[usize]| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: std::iter::once(Value::DimParam("N".into()))
                        .chain(dims.iter().map(|&d| Value::DimValue(d as i64)))
                        .map(|v| tensor_shape_proto::Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: weights,
            input: vec![value("x", dims)],
            output: vec![value(output, &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn node(op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![format!("{name}_out")],
        name: name.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: value,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A global pooling is one layer, kept 1x1 (`keepdims=true`) unless a
/// flatten follows, which it then takes in; the legacy exporter writes
/// `AdaptiveMaxPool2d(1)` as a MaxPool, so GlobalMaxPool is built here.
#[test]
fn global_pooling_and_its_flatten_are_one_layer() {
    let dir = Scratch::new("onnx-global");
    for (op, flatten, layer) in [
        ("GlobalMaxPool", true, "globalmaxpool2d\n"),
        ("GlobalMaxPool", false, "globalmaxpool2d keepdims=true\n"),
        ("GlobalAveragePool", true, "globalavgpool2d\n"),
    ] {
        let mut nodes = vec![node(op, "pool", &["x"], vec![])];
        if flatten {
            nodes.push(node("Flatten", "flat", &["pool_out"], vec![]));
        }
        let output = if flatten { "flat_out" } else { "pool_out" };
        let file = dir.write(
            &format!("{op}_{flatten}.onnx"),
            &graph(nodes, vec![], &[3, 4, 5], output, 17),
        );
        let (model, _) = import(&file, &dir, &format!("{op}_{flatten}"));
        let text = std::fs::read_to_string(&model).unwrap();
        assert!(text.ends_with(&format!("input 4x5x3\n{layer}")), "{text}");
    }
}

/// Graphs torch would not make of a Sequential, built here: each is
/// refused with the node, its operator and the reason.
#[test]
fn graphs_that_are_not_stacks_are_refused_precisely() {
    let w = |name: &str, dims: &[usize]| tensor(name, dims, &vec![0.5; dims.iter().product()]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "residual",
            graph(
                vec![
                    node("Gemm", "fc", &["x", "w", "b"], vec![]),
                    node("Relu", "relu", &["fc_out"], vec![]),
                    node("Add", "skip", &["relu_out", "x"], vec![]),
                ],
                vec![w("w", &[4, 4]), w("b", &[4])],
                &[4],
                "skip_out",
                17,
            ),
        ),
        (
            "old_opset",
            graph(vec![node("Relu", "relu", &["x"], vec![])], vec![], &[4], "relu_out", 11),
        ),
        (
            "flatten_output_in_channel_order",
            graph(
                vec![node("Flatten", "flat", &["x"], vec![])],
                vec![],
                &[2, 3, 3],
                "flat_out",
                17,
            ),
        ),
        (
            "reshape_not_a_flatten",
            graph(
                vec![node("Reshape", "reshape", &["x", "shape"], vec![])],
                vec![TensorProto {
                    name: "shape".into(),
                    dims: vec![3],
                    data_type: data_type::INT64,
                    int64_data: vec![-1, 6, 3],
                    ..Default::default()
                }],
                &[2, 3, 3],
                "reshape_out",
                17,
            ),
        ),
        (
            "transpose_of_width_and_height",
            graph(
                vec![node("Transpose", "t", &["x"], vec![ints("perm", &[0, 1, 3, 2])])],
                vec![],
                &[2, 3, 3],
                "t_out",
                17,
            ),
        ),
        (
            "dilated_conv",
            graph(
                vec![node("Conv", "conv", &["x", "k"], vec![ints("dilations", &[2, 2])])],
                vec![w("k", &[1, 2, 3, 3])],
                &[2, 9, 9],
                "conv_out",
                17,
            ),
        ),
        (
            "grouped_conv",
            graph(
                vec![node("Conv", "conv", &["x", "k"], vec![int("group", 2)])],
                vec![w("k", &[4, 2, 3, 3])],
                &[4, 9, 9],
                "conv_out",
                17,
            ),
        ),
        (
            "softmax_over_width",
            graph(
                vec![node("Softmax", "sm", &["x"], vec![])],
                vec![],
                &[2, 3, 3],
                "sm_out",
                17,
            ),
        ),
        (
            "weights_of_the_wrong_size",
            graph(
                vec![node("Gemm", "fc", &["x", "w"], vec![])],
                vec![TensorProto {
                    name: "w".into(),
                    dims: vec![4, 3],
                    data_type: data_type::FLOAT,
                    float_data: vec![1.0; 5],
                    ..Default::default()
                }],
                &[4],
                "fc_out",
                17,
            ),
        ),
        ("two_inputs", {
            let mut bytes = ModelProto::decode(graph(vec![], vec![], &[4], "x", 17).as_slice()).unwrap();
            let g = bytes.graph.as_mut().unwrap();
            let second = ValueInfoProto {
                name: "y".into(),
                ..g.input[0].clone()
            };
            g.input.push(second);
            bytes.encode_to_vec()
        }),
    ];
    let dir = Scratch::new("onnx-synthetic");
    for (name, bytes) in cases {
        let file = dir.write(&format!("{name}.onnx"), &bytes);
        let shown = refusal(&file).replace(&dir.display().to_string(), "DIR");
        insta::assert_snapshot!(format!("refused_{name}"), shown);
    }
}

/// SplitMix64, to pick mutations.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// Mutated fixtures (bytes flipped, cut, repeated, and protobuf varints
/// made huge) either import or give an error; none panics.
#[test]
fn malformed_onnx_never_panics() {
    let mut rng = Rng(0x0bad_f00d);
    let mut imported = 0;
    let mut refused = 0;
    for name in ["cnn", "batchnorm_dynamo", "strides_padding", "matmul_add", "nhwc_edges"] {
        let original = std::fs::read(fixture(&format!("{name}.onnx"))).unwrap();
        for _ in 0..120 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes[at] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)],
                    2 => bytes.truncate(at),
                    _ => {
                        let end = (at + 1 + rng.below(16)).min(bytes.len());
                        let copy = bytes[at..end].to_vec();
                        bytes.splice(at..at, copy);
                    }
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let result = catch_unwind(AssertUnwindSafe(|| {
                cnnc::onnx::import::import(&bytes)
                    .and_then(|i| cnnc::convert::finish(i.stack, i.input, &[], "m.cnn").map(|_| ()))
            }));
            match result {
                Ok(Ok(())) => imported += 1,
                Ok(Err(_)) => refused += 1,
                Err(_) => panic!("a mutant of {name}.onnx made the importer panic"),
            }
        }
    }
    println!("{imported} mutants imported, {refused} refused");
    assert!(refused > 100, "the mutations should break most files");
}
