//! Training that explains itself: the start line names the loss, a
//! regression says it has no accuracy, a run without validation data says
//! so. (The best epoch on the curves: `tests/metrics_plot.rs`; batchnorm's
//! lagging moving statistics: `runtime::train::hints`; a folder that holds
//! a run: `tests/run_folder.rs`.)

mod common;

use common::{Scratch, cnnc, squares, stderr, stdout};

/// Two classes of squares; with a test split or only training images.
fn data(dir: &Scratch, test: bool) -> String {
    let root = dir.join("data");
    for split in if test { vec!["train/", "test/"] } else { vec![""] } {
        squares(&root.join(format!("{split}red")), 8, [230, 20, 20], 1);
        squares(&root.join(format!("{split}blue")), 8, [20, 20, 230], 2);
    }
    root.display().to_string()
}

fn run(dir: &Scratch, model: &str, test: bool) -> String {
    let file = dir.write("m.cnn", model.as_bytes()).display().to_string();
    let out = cnnc(&[
        "run",
        &file,
        "--data",
        &data(dir, test),
        "--out",
        &dir.join("runs").display().to_string(),
        "--epochs",
        "1",
        "--batch",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn the_start_line_names_the_loss() {
    let dir = Scratch::new("explain-loss");
    let out = run(&dir, "input 8x8x3\nflatten\ndense 2 activation=softmax\n", true);
    assert!(
        out.starts_with("training `m` on 16 samples (2 classes) with categorical_crossentropy, 1 epochs of batch 4"),
        "{out}"
    );
    assert!(out.contains("validating on the test split"), "{out}");
}

#[test]
fn a_regression_says_it_has_no_accuracy() {
    let dir = Scratch::new("explain-regression");
    let out = run(&dir, "input 8x8x3\nflatten\ndense 2\n", true);
    assert!(
        out.starts_with(
            "training `m` on 16 samples (2 classes) with mean_squared_error, no accuracy (the output has no \
             softmax or sigmoid: a regression)"
        ),
        "{out}"
    );
    let epoch = out.lines().find(|l| l.starts_with("epoch 1/1")).unwrap();
    assert!(!epoch.contains("accuracy"), "{epoch}");
    let dir = Scratch::new("explain-regression-block");
    let model = "input 8x8x3\nflatten\ndense 2 activation=softmax\ntrain {\n  loss mean_squared_error\n}\n";
    let out = run(&dir, model, true);
    assert!(
        out.contains("with mean_squared_error, no accuracy (the training block's loss is a regression's)"),
        "{out}"
    );
}

#[test]
fn a_run_without_validation_data_says_so() {
    let dir = Scratch::new("explain-no-validation");
    let out = run(&dir, "input 8x8x3\nflatten\ndense 2 activation=softmax\n", false);
    insta::assert_snapshot!(out.lines().nth(1).unwrap_or_default());
    let epoch = out.lines().find(|l| l.starts_with("epoch 1/1")).unwrap();
    assert!(!epoch.contains("val_"), "{epoch}");
}
