//! Parsing and shape checking take time linear in the file: a model of
//! 20,000 layers is read and checked in well under the bound below even in
//! a debug build on a loaded machine, where a quadratic front end (each
//! statement counting its line from the start of the file, each layer name
//! compared with all earlier ones) took tens of seconds. The 100,000-layer
//! figure is `cargo bench --bench check_large`.

use std::time::{Duration, Instant};

const LAYERS: usize = 20_000;
const BOUND: Duration = Duration::from_secs(6);

fn deep_model(layers: usize) -> String {
    let mut s = String::from("input 4\n");
    for _ in 0..layers {
        s.push_str("dense 4 activation=relu\n");
    }
    s + "dense 1 activation=sigmoid\n"
}

#[test]
fn twenty_thousand_layers_check_in_linear_time() {
    let source = deep_model(LAYERS);
    let start = Instant::now();
    let model = cnnc::parse::parse("deep.cnn", &source).map_err(|d| d.render()).unwrap();
    let checked = cnnc::shape::check(model, "deep.cnn", &source)
        .map_err(|d| d.render())
        .unwrap();
    let summary = cnnc::summary::text(&checked, None);
    let took = start.elapsed();
    assert_eq!(checked.layers.len(), LAYERS + 1);
    assert!(summary.contains("dense_20000"), "the summary lists every layer");
    assert!(took < BOUND, "{LAYERS} layers took {took:?}, more than {BOUND:?}");
}
