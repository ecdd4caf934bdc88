//! Careless and hostile flags and data headers are refused with a clear
//! message before any work: a NaN learning rate for `grad` as for `run`, an
//! empty `--data`, a seed past 2^64 - 1, an IDX header that promises more
//! data than the memory limit allows, an image whose header claims more
//! pixels than allowed.

use std::process::Output;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn cnnc(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(ROOT)
        .output()
        .expect("the cnnc binary runs")
}

fn refused(out: &Output, code: i32, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(says), "expected `{says}` in: {stderr}");
}

#[test]
fn float_flags_must_be_finite_and_in_range() {
    for lr in ["nan", "inf", "0", "1e39"] {
        let out = cnnc(
            &[
                "grad",
                "models/logistic.cnn",
                "--lr",
                lr,
                "--input",
                "0,0",
                "--label",
                "1",
            ],
            &[],
        );
        refused(&out, 2, &format!("`{lr}` is not a number greater than 0"));
    }
    let out = cnnc(
        &["grad", "models/logistic.cnn", "--input", "nan,0", "--label", "1"],
        &[],
    );
    refused(&out, 2, "`nan` is not a finite number");
}

#[test]
fn an_empty_data_path_is_refused() {
    let out = cnnc(
        &[
            "run",
            "models/logistic.cnn",
            "--data",
            "",
            "--out",
            "target/hostile-runs",
        ],
        &[],
    );
    refused(&out, 1, "the dataset path is empty");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

#[test]
fn a_seed_past_u64_is_refused_not_clamped() {
    let dir = temp_dir("seed");
    let model = dir.join("m.cnn");
    std::fs::write(
        &model,
        "input 2\ndense 1 activation=sigmoid\ntrain {\n  seed 18446744073709551616\n}\n",
    )
    .unwrap();
    let out = cnnc(&["check", &model.display().to_string()], &[]);
    refused(&out, 1, "at most 18446744073709551615");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_idx_header_past_the_memory_limit_is_refused_before_reading() {
    let dir = temp_dir("idx");
    let header = |magic: u32, dims: &[u32]| -> Vec<u8> {
        std::iter::once(magic)
            .chain(dims.iter().copied())
            .flat_map(u32::to_be_bytes)
            .collect()
    };
    // The header claims 2M images; only the header is there.
    std::fs::write(dir.join("train-images-idx3-ubyte"), header(2051, &[2_000_000, 28, 28])).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), header(2049, &[2_000_000])).unwrap();
    let data = dir.display().to_string();
    let out = cnnc(
        &[
            "run",
            "models/mnist_cnn.cnn",
            "--data",
            &data,
            "--out",
            "target/hostile-runs",
        ],
        &[("CNNC_MAX_DATA_BYTES", "1000000")],
    );
    refused(&out, 1, "more than the limit of 1000000");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CNNC_MAX_DATA_BYTES"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_image_past_the_pixel_limit_is_refused_from_its_header() {
    let dir = temp_dir("pixels");
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        image::GrayImage::new(20, 10)
            .save(dir.join(class).join("x.png"))
            .unwrap();
    }
    let model = dir.join("m.cnn");
    std::fs::write(&model, "input 8x8x1\nflatten\ndense 2 activation=softmax\n").unwrap();
    let data = dir.display().to_string();
    let out = cnnc(
        &[
            "run",
            &model.display().to_string(),
            "--data",
            &data,
            "--out",
            "target/hostile-runs",
        ],
        &[("CNNC_MAX_IMAGE_PIXELS", "100")],
    );
    refused(&out, 1, "a 20x10 image, more than the limit of 100 pixels per image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CNNC_MAX_IMAGE_PIXELS"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
