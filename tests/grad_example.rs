//! The course's backpropagation worked example, through `cnnc grad`:
//! logistic regression, x = (1, 2), y = 1, w = (1, 2), b = -5, learning
//! rate 0.5.

mod common;

use common::{cnnc, stderr, stdout};

const ARGS: [&str; 8] = [
    "grad",
    "models/logistic.cnn",
    "--input",
    "1,2",
    "--label",
    "1",
    "--lr",
    "0.5",
];

#[test]
fn worked_example_text() {
    let out = cnnc(&ARGS);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
}

#[test]
fn worked_example_json_has_the_course_numbers() {
    let mut args = ARGS.to_vec();
    args.extend(["--format", "json"]);
    let out = cnnc(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let p = &v["params"];
    // z = 1*1 + 2*2 - 5 = 0, p = 0.5, dL/dz = p - y = -0.5.
    assert!((v["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6);
    assert_eq!(p["dense/kernel"]["grad"], serde_json::json!([[-0.5], [-1.0]]));
    assert_eq!(p["dense/bias"]["grad"], serde_json::json!([-0.5]));
    assert_eq!(p["dense/kernel"]["updated"], serde_json::json!([[1.25], [2.5]]));
    assert_eq!(p["dense/bias"]["updated"], serde_json::json!([-4.75]));
    insta::assert_snapshot!(stdout(&out));
}

#[test]
fn example_file_can_replace_weights() {
    let dir = std::env::temp_dir().join(format!("cnnc-grad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("example.json");
    // Zero weights: z = 0 for any input, so the gradient is -(x, 1)/2.
    std::fs::write(
        &file,
        r#"{"input": [3, -1], "label": [1], "weights": {"dense/kernel": [[0], [0]], "dense/bias": [0]}}"#,
    )
    .unwrap();
    let out = cnnc(&[
        "grad",
        "models/logistic.cnn",
        "--example",
        file.to_str().unwrap(),
        "--format",
        "json",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"]["dense/kernel"]["grad"], serde_json::json!([[-1.5], [0.5]]));
    assert_eq!(v["params"]["dense/bias"]["grad"], serde_json::json!([-0.5]));
}

#[test]
fn bad_examples_are_errors_not_panics() {
    for (args, needle) in [
        (vec!["--input", "1,2,3", "--label", "1"], "2 values"),
        (vec!["--input", "1,2"], "--label"),
        (vec!["--input", "1,x", "--label", "1"], "invalid"),
    ] {
        let mut all = vec!["grad", "models/logistic.cnn"];
        all.extend(args);
        let out = cnnc(&all);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    }
    let out = cnnc(&["grad", "models/mnist_cnn.cnn", "--input", "0", "--label", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let out = cnnc(&[
        "grad",
        "models/keras_intro.cnn",
        "--input",
        &vec!["0.5"; 784].join(","),
        "--label",
        "12",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a class"), "{}", stderr(&out));
}
