//! `cnnc predict` on `.npy` files that are missing, malformed or of the
//! wrong shape, on batches larger than one run of the compiled routine, and
//! on regression models.

mod common;

use cnnc::runtime::checkpoint::{self, Metadata, Tensor};
use cnnc::runtime::npy;
use common::{Scratch, cnnc, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const MODEL: &str = "models/do_the_math.cnn";
const WEIGHTS: &str = "tests/fixtures/keras/do_the_math_keras.safetensors";

fn predict(input: &Path, extra: &[&str]) -> Output {
    let input = input.display().to_string();
    let mut args = vec!["predict", MODEL, "--weights", WEIGHTS, &input];
    args.extend(extra);
    cnnc(&args)
}

/// Exit 1 with an error that names `file` and says `what`, not a panic.
fn refused(o: &Output, file: &Path, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stdout: {}\nstderr: {err}", stdout(o));
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with(&format!("error: {}: ", file.display())), "{err}");
    assert!(err.contains(what), "{what:?} not in {err}");
}

/// A `.npy` file with a handwritten header, as a crafted file would have.
fn raw(dir: &Scratch, name: &str, dict: &str, data: &[u8]) -> PathBuf {
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((dict.len() as u16 + 1).to_le_bytes());
    bytes.extend(dict.as_bytes());
    bytes.push(b'\n');
    bytes.extend(data);
    dir.write(name, &bytes)
}

#[test]
fn a_missing_npy_is_no_such_file() {
    let dir = Scratch::new("predict-missing");
    let path = dir.join("absent.npy");
    refused(&predict(&path, &[]), &path, "no such file");
}

#[test]
fn a_zero_dimensional_npy_is_refused_with_both_shapes() {
    let dir = Scratch::new("predict-scalar");
    let path = dir.join("scalar.npy");
    npy::write_f32(&path, &[], &[0.5]).unwrap();
    refused(
        &predict(&path, &[]),
        &path,
        "holds an array of shape (), the model reads (N, 28, 28, 1), or (28, 28, 1) for one sample",
    );
}

#[test]
fn an_npy_of_another_shape_is_refused_with_both_shapes() {
    let dir = Scratch::new("predict-shape");
    let path = dir.join("rows.npy");
    npy::write_f32(&path, &[5, 3], &[0.0; 15]).unwrap();
    refused(
        &predict(&path, &[]),
        &path,
        "holds an array of shape (5, 3), the model reads (N, 28, 28, 1)",
    );
}

#[test]
fn a_huge_claimed_shape_fails_fast_without_allocating() {
    let dir = Scratch::new("predict-huge");
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 28, 28, 1), }";
    let path = raw(&dir, "huge.npy", dict, &[0; 64]);
    let start = Instant::now();
    let o = predict(&path, &[]);
    refused(
        &o,
        &path,
        "truncated: its shape (100000000000, 28, 28, 1) needs 313600000000000 bytes",
    );
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}

#[test]
fn a_float64_npy_is_refused_with_the_fix() {
    let dir = Scratch::new("predict-f64");
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 28, 28, 1), }";
    let path = raw(&dir, "doubles.npy", dict, &[0; 8 * 784]);
    let o = predict(&path, &[]);
    refused(&o, &path, "holds float64 (descr '<f8'), cnnc reads float32");
    assert!(stderr(&o).contains("x.astype(\"float32\")"), "{}", stderr(&o));
}

/// 300 digits run as a batch of 256 and one of 44; each must get the
/// probabilities it gets alone.
#[test]
fn a_large_batch_is_predicted_in_chunks_as_one_by_one() {
    let dir = Scratch::new("predict-chunks");
    let splits = cnnc::runtime::data::load("mnist10k", Path::new("."), &[28, 28, 1], 10, None).unwrap();
    let indices: Vec<usize> = (0..300).collect();
    let inputs = splits.test.unwrap().batch(&indices).inputs;
    let all = dir.join("all.npy");
    npy::write_f32(&all, inputs.shape(), &inputs.iter().copied().collect::<Vec<_>>()).unwrap();
    let probs = dir.join("probs.npy");
    let o = predict(&all, &["--output", &probs.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().filter(|l| l.contains("all.npy[")).count(), 300);
    let together = npy::read_f32(&probs).unwrap();
    assert_eq!(together.shape(), &[300, 10]);

    // Either side of the chunk boundary, and the last sample.
    for i in [0, 255, 256, 299] {
        let one = dir.join(format!("one{i}.npy"));
        let sample: Vec<f32> = inputs.index_axis(ndarray::Axis(0), i).iter().copied().collect();
        npy::write_f32(&one, &[28, 28, 1], &sample).unwrap();
        let alone = dir.join(format!("probs{i}.npy"));
        let o = predict(&one, &["--output", &alone.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let alone = npy::read_f32(&alone).unwrap();
        assert_eq!(alone.shape(), &[1, 10]);
        for (j, (a, b)) in alone.iter().zip(together.index_axis(ndarray::Axis(0), i)).enumerate() {
            assert!(
                (a - b).abs() < 1e-6,
                "sample {i} class {j}: alone {a}, in the batch {b}"
            );
        }
    }
}

/// A dense regression model with fixed weights, saved under the names
/// `cnnc check` lists; `kernel(i, o)` gives the (in, out) kernel's values.
fn regression(dir: &Scratch, outputs: usize, kernel: impl Fn(usize, usize) -> f32) -> (String, String) {
    let source = format!("model reg\ninput 3\ndense {outputs}\ntrain {{\n  loss mean_squared_error\n}}\n");
    let model = dir.write("reg.cnn", source.as_bytes()).display().to_string();
    let o = cnnc(&["check", &model, "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tensors: Vec<Tensor> = summary["layers"][0]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let name = w["name"].as_str().unwrap().to_string();
            let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
            let data = match shape[..] {
                [ins, outs] => (0..ins * outs).map(|k| kernel(k / outs, k % outs)).collect(),
                _ => (0..shape[0]).map(|o| 0.1 * o as f32).collect(),
            };
            Tensor { name, shape, data }
        })
        .collect();
    let weights = dir.join("reg.safetensors");
    checkpoint::save(&weights, &tensors, &Metadata::new()).unwrap();
    (model, weights.display().to_string())
}

#[test]
fn a_regression_model_prints_its_output_values() {
    let dir = Scratch::new("predict-regression");
    // An identity kernel and bias 0.1 o: out[o] = x[o] + 0.1 o.
    let (model, weights) = regression(&dir, 2, |i, o| f32::from(u8::from(i == o)));
    let input = dir.join("x.npy");
    npy::write_f32(&input, &[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.5, 0.0]).unwrap();
    let out = dir.join("y.npy");
    let o = cnnc(&[
        "predict",
        &model,
        "--weights",
        &weights,
        &input.display().to_string(),
        "--output",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let x = input.display();
    let want = format!(
        "{x}[0]: [1.0000, 2.1000]\n{x}[1]: [-1.0000, 0.6000]\nwrote all outputs to {}\n",
        out.display()
    );
    assert_eq!(stdout(&o), want);
    let y = npy::read_f32(&out).unwrap();
    assert_eq!(y.shape(), &[2, 2]);
}

#[test]
fn a_regression_model_with_many_outputs_shows_the_first_ten() {
    let dir = Scratch::new("predict-wide");
    let (model, weights) = regression(&dir, 12, |_, _| 0.0);
    let input = dir.join("x.npy");
    npy::write_f32(&input, &[3], &[1.0, 2.0, 3.0]).unwrap();
    let out = dir.join("y.npy");
    let o = cnnc(&[
        "predict",
        &model,
        "--weights",
        &weights,
        &input.display().to_string(),
        "--output",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first_ten: Vec<String> = (0..10).map(|o| format!("{:.4}", 0.1 * o as f32)).collect();
    let want = format!("{}[0]: [{}, ...] (12 values)\n", input.display(), first_ten.join(", "));
    assert!(stdout(&o).starts_with(&want), "{}", stdout(&o));
    let y = npy::read_f32(&out).unwrap();
    assert_eq!(y.shape(), &[1, 12]);
    assert!((y[[0, 11]] - 1.1).abs() < 1e-6, "every value is written: {y}");
}

#[test]
fn weights_holding_nan_or_infinity_are_refused_naming_each_tensor() {
    let dir = Scratch::new("predict-nonfinite");
    let bytes = std::fs::read(WEIGHTS).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<Tensor> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| Tensor {
            name,
            shape: view.shape().to_vec(),
            data: view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    tensors[0].data[3] = f32::NAN;
    tensors[0].data[5] = f32::INFINITY;
    let poisoned = dir.path().join("poisoned.safetensors");
    checkpoint::save(&poisoned, &tensors, &Metadata::new()).unwrap();
    let poisoned = poisoned.display().to_string();
    let o = cnnc(&[
        "predict",
        MODEL,
        "--weights",
        &poisoned,
        "models/data/examples/digit_7.png",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let expected = format!("`{}` holds 2 NaN or infinite values", tensors[0].name);
    assert!(err.contains(&expected), "{expected:?} not in {err}");
}
