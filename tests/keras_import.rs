//! Keras 3 files in cnnc: `cnnc import` of a `.keras` archive
//! (tests/fixtures/keras, made by its make_archives.py), its parameter
//! counts and predictions against Keras's own; weights saved from Keras 3
//! under its variable paths (`sequential/conv2d/kernel`); and archives cnnc
//! must refuse, none of which makes it panic.

mod common;

use cnnc::runtime::checkpoint::{self, Metadata, Tensor};
use cnnc::runtime::npy;
use common::{Scratch, cnnc, stderr, stdout};
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const FIXTURES: &str = "tests/fixtures/keras";
const TOLERANCE: f32 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn max_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (npy::read_f32(a).unwrap(), npy::read_f32(b).unwrap());
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn predict(model: &Path, weights: &Path, input: &str, out: &Path) {
    let o = cnnc(&[
        "predict",
        &model.display().to_string(),
        "--weights",
        &weights.display().to_string(),
        &fixture(input).display().to_string(),
        "--output",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_keras_archive_predicts_as_in_keras() {
    let dir = Scratch::new("keras-import");
    let model = dir.join("small_cnn.cnn");
    let weights = dir.join("w.safetensors");
    let o = cnnc(&[
        "import",
        &fixture("small_cnn.keras").display().to_string(),
        "-o",
        &model.display().to_string(),
        "--weights-out",
        &weights.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    insta::assert_snapshot!(
        "small_cnn",
        std::fs::read_to_string(&model)
            .unwrap()
            .replace(&dir.display().to_string(), "DIR")
    );

    let keras: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("small_cnn.json")).unwrap()).unwrap();
    let o = cnnc(&["check", &model.display().to_string(), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for count in ["trainable_params", "non_trainable_params"] {
        assert_eq!(summary[count], keras[count], "{count}");
    }

    let out = dir.join("out.npy");
    predict(&model, &weights, "small_cnn.input.npy", &out);
    let diff = max_diff(&out, &fixture("small_cnn.output.npy"));
    println!("max |cnnc - Keras| = {diff:.3e}");
    assert!(diff <= TOLERANCE, "cnnc and Keras differ by {diff}");

    // The weights as Keras 3 saves them by variable path, with the model's
    // name first: the same predictions.
    let keras3 = dir.join("keras3.npy");
    predict(
        &model,
        &fixture("small_cnn.keras3.safetensors"),
        "small_cnn.input.npy",
        &keras3,
    );
    assert_eq!(max_diff(&out, &keras3), 0.0);
}

/// Every layer and activation beyond the seed models (made by
/// make_layers.py): the `.cnn` file of models/layer_tour.cnn, its summary,
/// and Keras's predictions.
#[test]
fn the_layer_tour_imports_as_its_cnn_file_and_predicts_as_in_keras() {
    let dir = Scratch::new("keras-import-tour");
    let model = dir.join("layer_tour.cnn");
    let weights = dir.join("w.safetensors");
    let o = cnnc(&[
        "import",
        &fixture("layer_tour.keras").display().to_string(),
        "-o",
        &model.display().to_string(),
        "--weights-out",
        &weights.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The importer writes the model file's layers (in its own words:
    // `strides=2x2`, `silu` for `swish`).
    let layers = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let model = cnnc::parse::parse("m.cnn", &text).unwrap_or_else(|d| panic!("{d}"));
        let layers: Vec<_> = model
            .layers
            .into_iter()
            .map(|l| (l.name, l.kind, l.trainable))
            .collect();
        (model.input.shape, layers)
    };
    assert_eq!(layers(&model), layers(Path::new("models/layer_tour.cnn")));

    let o = cnnc(&["check", &model.display().to_string(), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let keras: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("layer_tour.json")).unwrap()).unwrap();
    assert_eq!(
        ours["layers"].as_array().map(Vec::len),
        keras["layers"].as_array().map(Vec::len)
    );
    for (o, k) in ours["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(keras["layers"].as_array().unwrap())
    {
        for key in ["name", "type", "output_shape", "params"] {
            assert_eq!(o[key], k[key], "{key} of {}", k["name"]);
        }
    }

    let out = dir.join("out.npy");
    predict(&model, &weights, "layer_tour.input.npy", &out);
    let diff = max_diff(&out, &fixture("layer_tour.output.npy"));
    println!("max |cnnc - Keras| = {diff:.3e}");
    assert!(diff <= TOLERANCE, "cnnc and Keras differ by {diff}");
}

fn tensor(name: &str) -> Tensor {
    Tensor {
        name: name.into(),
        shape: vec![2],
        data: vec![1.0, 2.0],
    }
}

#[test]
fn a_model_name_before_every_weight_is_read_through_and_only_then() {
    let dir = Scratch::new("keras-prefix");
    let expected: [(&str, &[usize]); 2] = [("dense/kernel", &[2]), ("dense/bias", &[2])];
    let load = |names: &[&str]| {
        let path = dir.join("w.safetensors");
        let tensors: Vec<Tensor> = names.iter().map(|n| tensor(n)).collect();
        checkpoint::save(&path, &tensors, &Metadata::new()).unwrap();
        checkpoint::load(&path, &expected)
            .map(|c| c.tensors.len())
            .map_err(|e| e.to_string())
    };
    assert_eq!(load(&["my_model/dense/kernel", "my_model/dense/bias"]), Ok(2));
    // Two models' prefixes, or a prefix beside the model's own names, are
    // not one model's file.
    let mixed = load(&["a/dense/kernel", "b/dense/bias"]).unwrap_err();
    assert!(mixed.contains("`dense/kernel` is missing"), "{mixed}");
    let beside = load(&["dense/kernel", "x/dense/bias"]).unwrap_err();
    assert!(beside.contains("`dense/bias` is missing"), "{beside}");
}

/// The error `cnnc import` gives for `file`.
fn refusal(file: &Path, dir: &Path) -> String {
    let model = dir.join("m.cnn");
    let o = cnnc(&[
        "import",
        &file.display().to_string(),
        "-o",
        &model.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(!model.exists(), "a refused model was written");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    err.replace(&dir.display().to_string(), "DIR")
}

/// An archive's members: names and bytes.
type Members = Vec<(String, Vec<u8>)>;

/// The archive's members, by name.
fn members(path: &Path) -> Members {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut file = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            (file.name().to_string(), bytes)
        })
        .collect()
}

/// An archive of `members`, stored as Keras stores them.
fn archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in members {
        zip.start_file(name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn what_cnnc_cannot_express_is_refused_by_layer_and_class() {
    let dir = Scratch::new("keras-refused");
    for name in ["unsupported_upsampling", "functional"] {
        insta::assert_snapshot!(name, refusal(&fixture(&format!("{name}.keras")), &dir));
    }
    let original = members(&fixture("small_cnn.keras"));
    let edited = |member: &str, edit: &dyn Fn(&str) -> String| -> Members {
        original
            .iter()
            .map(|(n, b)| {
                let b = if n == member {
                    edit(&String::from_utf8_lossy(b)).into_bytes()
                } else {
                    b.clone()
                };
                (n.clone(), b)
            })
            .collect()
    };
    let cases: Vec<(&str, Members)> = vec![
        (
            "unknown_activation",
            edited("config.json", &|c| c.replacen("\"tanh\"", "\"hard_sigmoid\"", 1)),
        ),
        (
            "channels_first",
            edited("config.json", &|c| c.replacen("channels_last", "channels_first", 1)),
        ),
        (
            "config_not_json",
            edited("config.json", &|c| c[..c.len() / 2].to_string()),
        ),
        (
            "weights_not_hdf5",
            edited("model.weights.h5", &|_| "not HDF5".to_string()),
        ),
        (
            "no_weights",
            original
                .iter()
                .filter(|(n, _)| n != "model.weights.h5")
                .cloned()
                .collect(),
        ),
    ];
    for (name, members) in cases {
        let file = dir.join(format!("{name}.keras"));
        std::fs::write(&file, archive(&members)).unwrap();
        insta::assert_snapshot!(name, refusal(&file, &dir));
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

/// Archives whose config has values swapped for others (numbers for
/// strings, negatives, nulls, huge sizes) and whose weights file has bytes
/// flipped either import or give an error; none panics.
#[test]
fn malformed_archives_never_panic() {
    let original = members(&fixture("small_cnn.keras"));
    let values = [
        "null",
        "-1",
        "0",
        "1e300",
        "4294967297",
        "\"same\"",
        "[]",
        "[3]",
        "{}",
        "true",
        "\"x\"",
        "[9, 9]",
    ];
    let mut rng = Rng(0x6b65_7261);
    let (mut imported, mut refused) = (0, 0);
    for round in 0..300 {
        let mutated: Members = original
            .iter()
            .map(|(name, bytes)| {
                let mut bytes = bytes.clone();
                if name == "config.json" && round % 3 != 0 {
                    // Replace the value after a random `": `.
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let colons: Vec<usize> = text.match_indices("\": ").map(|(i, _)| i + 3).collect();
                    let at = colons[rng.below(colons.len())];
                    let end = text[at..].find([',', '}']).map_or(text.len(), |e| at + e);
                    let value = values[rng.below(values.len())];
                    bytes = format!("{}{value}{}", &text[..at], &text[end..]).into_bytes();
                } else if name == "model.weights.h5" && round % 3 == 0 {
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(bytes.len());
                        bytes[at] ^= 1 << rng.below(8);
                    }
                }
                (name.clone(), bytes)
            })
            .collect();
        let bytes = archive(&mutated);
        let result = catch_unwind(AssertUnwindSafe(|| {
            cnnc::keras::import(&bytes).and_then(|i| cnnc::convert::finish(i.stack, i.input, &[], "m.cnn").map(|_| ()))
        }));
        match result {
            Ok(Ok(())) => imported += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("mutant {round} of small_cnn.keras made the importer panic"),
        }
    }
    println!("{imported} mutants imported, {refused} refused");
    assert!(refused > 100, "the mutations should break most archives");
}
