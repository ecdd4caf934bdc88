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
