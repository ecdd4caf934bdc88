//! `cnnc check` takes time linear in the file: a model of 20,000 layers is
//! read, checked and summarized in well under the bound below even in a
//! debug build on a loaded machine, where a quadratic front end (each
//! statement counting its line from the start of the file, each layer name
//! compared with all earlier ones) took tens of seconds. The 100,000-layer
//! figure is `cargo bench --bench check_large`.

use std::process::Command;
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
    let dir = std::env::temp_dir().join(format!("cnnc-linear-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("deep.cnn");
    std::fs::write(&path, deep_model(LAYERS)).unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let took = start.elapsed();
    std::fs::remove_dir_all(&dir).ok();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(summary.contains("dense_20000"), "the summary lists every layer");
    assert!(
        summary.contains("Compiled arena: not planned past 2,000 layers"),
        "the summary says why it has no arena: {}",
        summary.lines().last().unwrap_or_default()
    );
    assert!(took < BOUND, "{LAYERS} layers took {took:?}, more than {BOUND:?}");
}
