//! Weights survive a save and a load unchanged, and files
//! written the way Keras users export them load too.

mod common;

use cnnc::runtime::checkpoint::{Metadata, Tensor, load, save};
use common::Scratch;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

fn tensor(name: &str, shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor {
        name: name.into(),
        shape: shape.into(),
        data,
    }
}

/// A small conv net's weights, with values that a lossy path would change:
/// negative zero, a subnormal, a NaN with a payload, infinities.
fn weights() -> Vec<Tensor> {
    let ramp = |n: usize| (0..n).map(|i| (i as f32 * 0.37).sin() / 3.0).collect::<Vec<_>>();
    let mut kernel = ramp(36);
    kernel[..5].copy_from_slice(&[
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        -f32::MAX,
    ]);
    vec![
        tensor("conv2d/kernel", &[3, 3, 1, 4], kernel),
        tensor("conv2d/bias", &[4], ramp(4)),
        tensor("batch_normalization/moving_variance", &[4], vec![1.0; 4]),
        tensor("dense_1/kernel", &[16, 10], ramp(160)),
        tensor("dense_1/bias", &[10], ramp(10)),
        tensor("scalar", &[], vec![42.5]),
    ]
}

fn expected(tensors: &[Tensor]) -> Vec<(&str, &[usize])> {
    tensors.iter().map(|t| (t.name.as_str(), t.shape.as_slice())).collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data.iter().map(|x| x.to_bits()).collect()
}

fn metadata() -> Metadata {
    Metadata::from([
        ("format".into(), "cnnc".into()),
        ("model".into(), "mnist_cnn".into()),
        ("epoch".into(), "3".into()),
    ])
}

#[test]
fn weights_round_trip_bit_exact_in_the_order_asked() {
    let dir = Scratch::new("roundtrip");
    let path = dir.join("mnist_cnn.safetensors");
    let saved = weights();
    save(&path, &saved, &metadata()).unwrap();

    // Asked for in another order than saved: returned in the order asked.
    let mut asked = saved.clone();
    asked.reverse();
    let loaded = load(&path, &expected(&asked)).unwrap();
    assert_eq!(loaded.metadata, metadata());
    assert_eq!(loaded.tensors.len(), asked.len());
    for (got, want) in loaded.tensors.iter().zip(&asked) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.shape, want.shape);
        assert_eq!(bits(got), bits(want), "{}", want.name);
    }
}

#[test]
fn the_safetensors_crate_reads_our_files() {
    let dir = Scratch::new("crate-reads");
    let path = dir.join("w.safetensors");
    save(&path, &weights(), &metadata()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let want: HashMap<String, String> = metadata().into_iter().collect();
    assert_eq!(header.metadata().as_ref(), Some(&want));
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("dense_1/kernel").unwrap();
    assert_eq!(view.dtype(), Dtype::F32);
    assert_eq!(view.shape(), &[16, 10]);
    assert_eq!(&view.data()[4..8], &weights()[3].data[1].to_le_bytes());
}

#[test]
fn identical_saves_give_identical_bytes() {
    let dir = Scratch::new("deterministic");
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    let many_keys: Metadata = (0..20).map(|i| (format!("key{i}"), i.to_string())).collect();
    save(&a, &weights(), &many_keys).unwrap();
    let mut reordered = weights();
    reordered.rotate_left(2);
    save(&b, &reordered, &many_keys).unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

/// Writes a file the way `safetensors.numpy.save_file` does (it is this crate).
fn export(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| (*name, TensorView::new(*dtype, shape.clone(), bytes).unwrap()))
        .collect();
    let info = HashMap::from([("format".to_string(), "np".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(info)).unwrap()).unwrap();
}

fn le<const N: usize>(values: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
    values.into_iter().flatten().collect()
}

#[test]
fn exported_f32_f64_f16_and_bf16_tensors_load_as_f32() {
    let dir = Scratch::new("dtypes");
    let path = dir.join("keras_export.safetensors");
    let f16 = [0x3c00u16, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x0400];
    let bf16 = [0x3f80u16, 0xc040, 0x0000, 0xff80];
    export(
        &path,
        &[
            (
                "conv2d/kernel",
                Dtype::F32,
                vec![1, 1, 1, 2],
                le([1.5f32, -2.25].map(f32::to_le_bytes)),
            ),
            (
                "dense/kernel",
                Dtype::F64,
                vec![2, 2],
                le([0.1f64, -1e-3, 3.0, 1e300].map(f64::to_le_bytes)),
            ),
            ("dense/bias", Dtype::F16, vec![8], le(f16.map(u16::to_le_bytes))),
            (
                "batch_normalization/gamma",
                Dtype::BF16,
                vec![4],
                le(bf16.map(u16::to_le_bytes)),
            ),
        ],
    );
    let asked: [(&str, &[usize]); 4] = [
        ("conv2d/kernel", &[1, 1, 1, 2]),
        ("dense/kernel", &[2, 2]),
        ("dense/bias", &[8]),
        ("batch_normalization/gamma", &[4]),
    ];
    let loaded = load(&path, &asked).unwrap();
    assert_eq!(loaded.metadata.get("format").map(String::as_str), Some("np"));
    let data: Vec<&[f32]> = loaded.tensors.iter().map(|t| t.data.as_slice()).collect();
    assert_eq!(data[0], &[1.5, -2.25]);
    assert_eq!(data[1], &[0.1f64 as f32, -1e-3f64 as f32, 3.0, f32::INFINITY]);
    let smallest_subnormal = 2f32.powi(-24);
    assert_eq!(
        data[2],
        &[
            1.0,
            -2.0,
            0.5,
            65504.0,
            smallest_subnormal,
            -0.0,
            f32::INFINITY,
            2f32.powi(-14)
        ]
    );
    assert!(data[2][5].is_sign_negative());
    assert_eq!(data[3], &[1.0, -3.0, 0.0, f32::NEG_INFINITY]);
}

#[test]
fn f16_nan_stays_nan() {
    let dir = Scratch::new("f16-nan");
    let path = dir.join("nan.safetensors");
    export(
        &path,
        &[(
            "dense/bias",
            Dtype::F16,
            vec![2],
            le([0x7e00u16, 0xfc00].map(u16::to_le_bytes)),
        )],
    );
    let loaded = load(&path, &[("dense/bias", &[2])]).unwrap();
    assert!(loaded.tensors[0].data[0].is_nan());
    assert_eq!(loaded.tensors[0].data[1], f32::NEG_INFINITY);
}
