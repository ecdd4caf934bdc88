//! The front end on a 100,000-layer model: parse, shape check and summary,
//! which must stay linear in the file (the bound: under 2 s).
//! `cargo bench --bench check_large`; CI runs a 20,000-layer version
//! (tests/linear_check.rs).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
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
    let source = deep_model(LAYERS);
    let mut group = c.benchmark_group("check");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("100k_layers", |b| {
        b.iter(|| {
            let model = cnnc::parse::parse("deep.cnn", black_box(&source)).map_err(|d| d.render());
            let checked = model.and_then(|m| cnnc::shape::check(m, "deep.cnn", &source).map_err(|d| d.render()));
            let checked = checked.unwrap_or_else(|e| panic!("the deep model checks: {e}"));
            black_box(cnnc::summary::text(&checked, None))
        })
    });
    group.finish();
}

criterion_group!(benches, check_large);
criterion_main!(benches);
