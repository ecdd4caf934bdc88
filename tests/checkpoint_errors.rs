//! A weights file that does not fit the model, or is no weights file at all,
//! is an error naming the file and every tensor that is wrong.

mod common;

use cnnc::runtime::checkpoint::{CheckpointError, Metadata, Problem, Tensor, load, save};
use common::Scratch;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::{Path, PathBuf};

fn zeros(name: &str, shape: &[usize]) -> Tensor {
    Tensor {
        name: name.into(),
        shape: shape.into(),
        data: vec![0.0; shape.iter().product()],
    }
}

fn saved(dir: &Path, tensors: &[Tensor]) -> PathBuf {
    let path = dir.join("mnist_cnn.safetensors");
    save(&path, tensors, &Metadata::new()).unwrap();
    path
}

fn problems(result: Result<impl std::fmt::Debug, CheckpointError>) -> (Vec<Problem>, String) {
    match result {
        Err(e @ CheckpointError::Mismatch { .. }) => {
            let message = e.to_string();
            let CheckpointError::Mismatch { problems, .. } = e else {
                unreachable!()
            };
            (problems, message)
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

const MODEL: [(&str, &[usize]); 4] = [
    ("conv2d/kernel", &[3, 3, 1, 32]),
    ("conv2d/bias", &[32]),
    ("dense/kernel", &[800, 128]),
    ("dense/bias", &[128]),
];

#[test]
fn a_shape_mismatch_names_both_shapes() {
    let dir = Scratch::new("shape");
    let mut tensors: Vec<Tensor> = MODEL.iter().map(|(n, s)| zeros(n, s)).collect();
    tensors[2] = zeros("dense/kernel", &[4608, 128]);
    let path = saved(&dir, &tensors);
    let (found, message) = problems(load(&path, &MODEL));
    assert_eq!(
        found,
        [Problem::Shape {
            name: "dense/kernel".into(),
            found: vec![4608, 128],
            expected: vec![800, 128]
        }]
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("`dense/kernel` has shape [4608, 128] in the file, the model needs [800, 128]"),
        "{message}"
    );
}

#[test]
fn a_missing_tensor_suggests_a_similar_name_and_every_problem_is_listed() {
    let dir = Scratch::new("missing");
    let path = saved(
        &dir,
        &[
            zeros("conv2d/kernel", &[3, 3, 1, 16]),
            zeros("conv2d/bais", &[32]),
            zeros("dense/kernel", &[800, 128]),
            zeros("dense_7/kernel", &[5, 5]),
        ],
    );
    let (found, message) = problems(load(&path, &MODEL));
    assert_eq!(
        found,
        [
            Problem::Shape {
                name: "conv2d/kernel".into(),
                found: vec![3, 3, 1, 16],
                expected: vec![3, 3, 1, 32]
            },
            Problem::Missing {
                name: "conv2d/bias".into(),
                similar: Some("conv2d/bais".into())
            },
            Problem::Missing {
                name: "dense/bias".into(),
                similar: None
            },
            Problem::Unexpected {
                name: "dense_7/kernel".into()
            },
        ]
    );
    for line in [
        "`conv2d/bias` is missing (did you mean `conv2d/bais`?)",
        "`dense/bias` is missing",
        "`dense_7/kernel` is in the file but not in the model",
        "help: tensors the model lacks mean the file was saved from another model",
    ] {
        assert!(message.contains(line), "{line} not in:\n{message}");
    }
    assert!(
        message.starts_with(&format!("`{}` does not fit the model:", path.display())),
        "{message}"
    );
}

#[test]
fn extra_tensors_alone_are_an_error() {
    let dir = Scratch::new("extra");
    let mut tensors: Vec<Tensor> = MODEL.iter().map(|(n, s)| zeros(n, s)).collect();
    tensors.push(zeros("dense_1/kernel", &[128, 10]));
    tensors.push(zeros("dense_1/bias", &[10]));
    let path = saved(&dir, &tensors);
    let (found, _) = problems(load(&path, &MODEL));
    let names = ["dense_1/bias", "dense_1/kernel"];
    assert_eq!(found, names.map(|n| Problem::Unexpected { name: n.into() }));
}

#[test]
fn an_integer_tensor_is_named_with_its_dtype() {
    let dir = Scratch::new("dtype");
    let path = dir.join("ints.safetensors");
    let bytes = vec![0u8; 32 * 8];
    let view = TensorView::new(Dtype::I64, vec![32], &bytes).unwrap();
    std::fs::write(&path, safetensors::serialize([("conv2d/bias", view)], None).unwrap()).unwrap();
    let (found, message) = problems(load(&path, &[("conv2d/bias", &[32])]));
    assert_eq!(
        found,
        [Problem::Dtype {
            name: "conv2d/bias".into(),
            dtype: "I64".into()
        }]
    );
    assert!(message.contains("`conv2d/bias` holds I64 values"), "{message}");
    assert!(message.contains("ints.safetensors"), "{message}");
}

fn not_safetensors(path: &Path) -> String {
    match load(path, &MODEL) {
        Err(e @ CheckpointError::NotSafetensors { .. }) => e.to_string(),
        other => panic!("expected not-safetensors, got {other:?}"),
    }
}

#[test]
fn garbage_empty_and_foreign_files_are_not_safetensors() {
    let dir = Scratch::new("garbage");
    let length = "its first 8 bytes are not the length of a safetensors header";
    let cases: [(&str, &[u8], &str); 5] = [
        ("empty.safetensors", b"", "it is shorter than a safetensors header"),
        (
            "model.bin",
            b"\0\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
            length,
        ),
        ("text.safetensors", b"conv2d/kernel = [1, 2, 3]\n", length),
        (
            "cut.safetensors",
            b"\x10\0\0\0\0\0\0\0{\"a\": {\"dtype\"",
            "it ends inside its header",
        ),
        (
            "json.safetensors",
            b"\x08\0\0\0\0\0\0\0not json",
            "invalid JSON in header",
        ),
    ];
    for (name, bytes, why) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let message = not_safetensors(&path);
        assert!(
            message.contains(&format!("`{}` is not a safetensors file", path.display())),
            "{message}"
        );
        assert!(message.contains(why), "{why} not in:\n{message}");
    }
}

#[test]
fn keras_own_formats_are_recognised() {
    let dir = Scratch::new("keras-formats");
    let cases: [(&str, &[u8], &str); 2] = [
        ("model.weights.h5", b"\x89HDF\r\n\x1a\n\0\0\0\0", "it is HDF5"),
        ("model.keras", b"PK\x03\x04\x14\0\0\0", "it is a zip archive"),
    ];
    for (name, bytes, why) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let message = not_safetensors(&path);
        assert!(message.contains(why) && message.contains(name), "{message}");
    }
}

#[test]
fn a_file_cut_short_is_not_safetensors() {
    let dir = Scratch::new("cut");
    let path = saved(&dir, &[zeros("dense/bias", &[128])]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    let message = not_safetensors(&path);
    assert!(message.contains("mnist_cnn.safetensors"), "{message}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = Scratch::new("nofile");
    let path = dir.join("nope.safetensors");
    let e = load(&path, &MODEL).unwrap_err();
    assert!(matches!(e, CheckpointError::File(_)), "{e:?}");
    assert_eq!(e.to_string(), format!("no such file `{}`", path.display()));
}

#[test]
fn tensors_that_cannot_form_a_file_are_refused_before_writing() {
    let dir = Scratch::new("invalid");
    let path = dir.join("w.safetensors");
    let mut short = zeros("dense/kernel", &[2, 3]);
    short.data.pop();
    let cases = [
        (vec![short], "`dense/kernel` has shape [2, 3] but 5 values"),
        (vec![zeros("a", &[1]), zeros("a", &[2])], "two tensors are named `a`"),
        (vec![zeros("__metadata__", &[1])], "`__metadata__`"),
    ];
    for (tensors, why) in cases {
        let e = save(&path, &tensors, &Metadata::new()).unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, CheckpointError::Invalid { .. }), "{e:?}");
        assert!(message.contains(why) && message.contains("w.safetensors"), "{message}");
        assert!(!path.exists());
    }
}

#[test]
fn a_device_or_a_file_far_larger_than_the_model_is_refused_before_reading() {
    let e = load(Path::new("/dev/zero"), &MODEL).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let dir = Scratch::new("huge");
    let path = dir.join("huge.safetensors");
    // Sparse: the length is what counts, not the blocks.
    std::fs::File::create(&path).unwrap().set_len(1 << 30).unwrap();
    let e = load(&path, &MODEL).unwrap_err().to_string();
    assert!(e.contains("bytes, more than the"), "{e}");
}
