//! `cnnc bench` says what it measured on: machines of the project's kind
//! differ in CPU and vector width, and a time means little without them.

mod common;

use common::{cnnc, stderr, stdout};

#[test]
fn bench_names_the_cpu_and_the_vector_width() {
    let o = cnnc(&["bench", "models/logistic.cnn", "--jit-only", "--steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let machine = out.lines().nth(1).unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(model) = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")) {
        let model = model
            .trim_start_matches([' ', '\t', ':'])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(machine.starts_with(&format!("on {model}, ")), "{machine}");
    }
    #[cfg(target_arch = "x86_64")]
    {
        let lanes = if std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512 (16 f32 lanes)"
        } else if std::arch::is_x86_feature_detected!("avx2") {
            "(8 f32 lanes)"
        } else {
            "(4 f32 lanes)"
        };
        assert!(machine.contains("GEMM: ") && machine.contains(lanes), "{machine}");
    }
}

/// The side-by-side comparison with PyTorch (benches/peers) reads this.
#[test]
fn bench_json_gives_the_machine_the_times_and_the_flops() {
    let o = cnnc(&[
        "bench",
        "models/mnist_cnn.cnn",
        "--jit-only",
        "--steps",
        "1",
        "--batch",
        "2",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(report["model"], "mnist_cnn");
    assert_eq!(report["batch"], 2);
    assert!(
        report["machine"]["f32_lanes"].as_u64().is_some_and(|l| l >= 4),
        "{report}"
    );
    assert!(
        report["machine"]["cpu"].as_str().is_some_and(|c| !c.is_empty()),
        "{report}"
    );
    let jit = &report["engines"]["jit"];
    let step = jit["train_step_seconds"].as_f64().expect("a step time");
    assert!(step > 0.0);
    assert_eq!(jit["train_samples_per_second"].as_f64(), Some(2.0 / step));
    assert!(report["engines"].get("interp").is_none(), "--jit-only runs one engine");
    // 2 samples of mnist_cnn's forward pass: 2 x 12.19 MFLOP of matmuls and convolutions.
    let forward = report["flops"]["inference"].as_f64().expect("FLOPs");
    assert!(
        (forward - 2.0 * 12_188_416.0).abs() < 2.0 * 12_188_416.0 * 0.01,
        "{forward}"
    );
    assert!(report["compile_seconds"]["train"].as_f64().is_some_and(|s| s > 0.0));
}

#[test]
fn a_profile_is_text_only() {
    let o = cnnc(&["bench", "models/logistic.cnn", "--profile", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("'--profile' cannot be used with '--format"),
        "{}",
        stderr(&o)
    );
}
