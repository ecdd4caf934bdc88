//! `cnnc build`: every model of `models/` compiles ahead of time into an
//! object and a C header; two of them, with random weights, link with real
//! gcc into a C program whose outputs on a batch match `cnnc predict`'s;
//! `--target aarch64` writes an aarch64 object; bad flags and files are
//! refused with clear messages.

mod common;

use cnnc::runtime::checkpoint::{self, Metadata};
use cnnc::runtime::npy;
use common::{Rng, Scratch, checked_file, cnnc, models, random_weights, stderr, stdout, stem};
use std::path::Path;
use std::process::Command;

/// Agreement with `cnnc predict`, relative to the output's size (at least
/// 1): the C support's matrix product sums in another order than the
/// `gemm` crate the JIT calls.
const TOLERANCE: f32 = 1e-6;
const BATCH: usize = 3;

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn build(model: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build".to_string(), path(model), "-o".into(), path(dir)];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cnnc(&args)
}

/// The ELF header's machine field (e_machine, little-endian at byte 18).
fn elf_machine(object: &Path) -> u16 {
    let bytes = std::fs::read(object).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not an ELF file", object.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

#[test]
fn every_model_builds_an_object_and_a_header() {
    let dir = Scratch::new("aot-all");
    for model in models() {
        let name = stem(&model);
        let out = dir.path().join(&name);
        let o = build(&model, &out, &[]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let prefix = cnnc::codegen::c::identifier(&checked_file(&model).model.name);
        let header = std::fs::read_to_string(out.join(format!("{prefix}.h"))).unwrap();
        assert!(
            header.contains(&format!(
                "int {prefix}_predict(const float *input, size_t batch, float *output);"
            )),
            "{header}"
        );
        let host = if cfg!(target_arch = "aarch64") {
            EM_AARCH64
        } else {
            EM_X86_64
        };
        assert_eq!(elf_machine(&out.join(format!("{prefix}.o"))), host, "{name}");
        assert!(out.join("cnnc_support.c").is_file(), "{name}");
        assert!(stdout(&o).contains("link with: cc"), "{}", stdout(&o));
    }
}

#[test]
fn the_header_gives_shapes_return_codes_and_the_function() {
    let dir = Scratch::new("aot-header");
    let o = build(Path::new("models/mnist_cnn.cnn"), dir.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let header = std::fs::read_to_string(dir.path().join("mnist_cnn.h")).unwrap();
    insta::assert_snapshot!(header);
}

/// The C program of the test: reads a batch of raw floats, checks the
/// return codes of a NULL pointer and of batch 0, predicts, writes the
/// outputs as raw floats.
fn program(prefix: &str) -> String {
    let upper = prefix.to_ascii_uppercase();
    format!(
        r#"#include "{prefix}.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{{
    if (argc != 4) return 10;
    size_t batch = strtoul(argv[2], NULL, 10);
    float *in = malloc(batch * {upper}_INPUT_SIZE * sizeof(float));
    float *out = malloc(batch * {upper}_OUTPUT_SIZE * sizeof(float));
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(in, sizeof(float), batch * {upper}_INPUT_SIZE, f) != batch * {upper}_INPUT_SIZE) return 11;
    fclose(f);
    if ({prefix}_predict(NULL, batch, out) != {upper}_ERROR_NULL) return 12;
    if ({prefix}_predict(in, batch, NULL) != {upper}_ERROR_NULL) return 13;
    if ({prefix}_predict(in, 0, out) != {upper}_ERROR_BATCH) return 14;
    if ({prefix}_predict(in, (size_t)-1, out) != {upper}_ERROR_BATCH) return 15;
    if ({prefix}_predict(in, batch, out) != {upper}_OK) return 16;
    f = fopen(argv[3], "wb");
    if (!f || fwrite(out, sizeof(float), batch * {upper}_OUTPUT_SIZE, f) != batch * {upper}_OUTPUT_SIZE) return 17;
    fclose(f);
    return 0;
}}
"#
    )
}

/// gcc, or a failure that says how to install it.
fn gcc() -> Command {
    let found = Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "gcc is not installed: install it with `apt-get install gcc` (or your system's C compiler package)"
    );
    Command::new("gcc")
}

fn linked_program_matches_predict(model: &Path, seed: u64) {
    let name = stem(model);
    let dir = Scratch::new(&format!("aot-c-{name}"));
    let mut rng = Rng(seed);
    let weights = dir.path().join("weights.safetensors");
    checkpoint::save(&weights, &random_weights(model, &mut rng), &Metadata::new()).unwrap();
    let checked = checked_file(model);
    let mut shape = vec![BATCH];
    shape.extend(&checked.model.input.shape);
    let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.uniform()).collect();
    let input = dir.path().join("input.npy");
    npy::write_f32(&input, &shape, &values).unwrap();
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let raw_input = dir.write("input.f32", &raw);

    let built = dir.path().join("build");
    let o = build(model, &built, &["--weights", &path(&weights)]);
    assert!(o.status.success(), "build {name}: {}", stderr(&o));
    let prefix = cnnc::codegen::c::identifier(&checked.model.name);
    let main = dir.write("main.c", program(&prefix).as_bytes());
    let exe = dir.path().join("main");
    let o = gcc()
        .args(["-O2", "-std=c99", "-Wall", "-Werror", "-o", &path(&exe), &path(&main)])
        .arg(built.join(format!("{prefix}.o")))
        .arg(built.join(format!("{prefix}.c")))
        .arg(built.join("cnnc_support.c"))
        .arg(format!("-I{}", path(&built)))
        .arg("-lm")
        .output()
        .unwrap();
    assert!(o.status.success(), "gcc {name}: {}", stderr(&o));
    let raw_output = dir.path().join("output.f32");
    let o = Command::new(&exe)
        .args([path(&raw_input), BATCH.to_string(), path(&raw_output)])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "the C program of {name} failed: {}",
        stderr(&o)
    );
    let c_out: Vec<f32> = std::fs::read(&raw_output)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let expected = dir.path().join("predict.npy");
    let o = cnnc(&[
        "predict",
        &path(model),
        "--weights",
        &path(&weights),
        &path(&input),
        "--output",
        &path(&expected),
    ]);
    assert!(o.status.success(), "predict {name}: {}", stderr(&o));
    let expected = npy::read_f32(&expected).unwrap();
    let expected: Vec<f32> = expected.iter().copied().collect();
    assert_eq!(c_out.len(), expected.len(), "{name}");
    for (i, (c, jit)) in c_out.iter().zip(&expected).enumerate() {
        assert!(
            (c - jit).abs() <= TOLERANCE * jit.abs().max(1.0),
            "{name} output {i}: C {c}, cnnc predict {jit}"
        );
    }
}

#[test]
fn a_c_program_linked_with_gcc_predicts_as_cnnc_predict_does() {
    // A CNN (convolutions, pooling, a dense softmax head), and a model with
    // batch normalization and dropout.
    linked_program_matches_predict(Path::new("models/mnist_cnn.cnn"), 7);
    linked_program_matches_predict(Path::new("models/fcnn_homework.cnn"), 8);
}

#[test]
fn target_aarch64_writes_an_aarch64_object() {
    let dir = Scratch::new("aot-aarch64");
    let o = build(
        Path::new("models/mnist_cnn.cnn"),
        dir.path(),
        &["--target", "aarch64-unknown-linux-gnu"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(elf_machine(&dir.path().join("mnist_cnn.o")), EM_AARCH64);
    let o = build(
        Path::new("models/logistic.cnn"),
        dir.path(),
        &["--target", "x86_64-unknown-linux-gnu"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(elf_machine(&dir.path().join("logistic.o")), EM_X86_64);
}

/// Exit 1 with a message holding `what`, and no panic.
fn refused(o: &std::process::Output, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(what), "{what:?} not in {err}");
}

#[test]
fn bad_targets_folders_and_weights_are_refused() {
    let dir = Scratch::new("aot-errors");
    let model = Path::new("models/logistic.cnn");
    let out = dir.path().join("out");
    refused(
        &build(model, &out, &["--target", "not-a-triple"]),
        "`not-a-triple` is not a target triple",
    );
    refused(
        &build(model, &out, &["--target", "riscv64gc-unknown-linux-gnu"]),
        "cannot compile for `riscv64gc-unknown-linux-gnu`",
    );
    refused(
        &build(model, &out, &["--target", "i686-unknown-linux-gnu"]),
        "64-bit targets only",
    );
    let file = dir.write("a-file", b"not a folder");
    refused(&build(model, &file.join("sub"), &[]), "cannot create the folder");
    let missing = dir.path().join("absent.safetensors");
    refused(
        &build(model, &out, &["--weights", &path(&missing)]),
        "absent.safetensors",
    );
    let junk = dir.write("junk.safetensors", b"not safetensors at all");
    refused(&build(model, &out, &["--weights", &path(&junk)]), "junk.safetensors");
    assert!(!out.exists(), "a refused build wrote {}", out.display());
}
