//! `cnnc check` on a 100,000-layer model: parse, shape check and summary,
//! which must stay linear in the file (the bound: under 2 s).
//! `cargo bench --bench check_large`; CI runs a 20,000-layer version
//! (tests/linear_check.rs).

use criterion::{Criterion, criterion_group, criterion_main};
use std::process::Command;
use std::time::Duration;

const LAYERS: usize = 100_000;

fn deep_model(layers: usize) -> String {
    let mut s = String::from("input 4\n");
    for _ in 0..layers {
        s.push_str("dense 4 activation=relu\n");
    }
    s + "dense 1 activation=sigmoid\n"
}

fn check_large(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("cnnc-check-large-{}.cnn", std::process::id()));
    std::fs::write(&path, deep_model(LAYERS)).unwrap_or_else(|e| panic!("writing the model: {e}"));
    let mut group = c.benchmark_group("check");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("100k_layers", |b| {
        b.iter(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
                .arg("check")
                .arg(&path)
                .output();
            let out = out.unwrap_or_else(|e| panic!("running cnnc: {e}"));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
    });
    group.finish();
    std::fs::remove_file(&path).ok();
}

criterion_group!(benches, check_large);
criterion_main!(benches);
