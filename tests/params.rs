//! Parameters: `param NAME = VALUE` declares one, `$NAME` uses it in any
//! value, `if=` switches a layer, and `--set NAME=VALUE` gives it a value
//! on every command that reads a model. A substituted model is the model
//! written out by hand; the command line's mistakes point into the command
//! line, and a value that does not fit where it is used points at its use
//! and says where it came from. (The file's own mistakes are in
//! `tests/bad/param_*.cnn`.) A run's folder names its parameters, and a
//! resumed run refuses other values.

mod common;

use cnnc::parse::params::CommandLine;
use cnnc::parse::{parse, parse_with, print};
use common::{Scratch, cnnc, squares, stderr, stdout};

const MODEL: &str = "# a homework model
model hw
param act = relu
param bn = true
param rate = 0.25
param epochs = 2
input 8x8x3
flatten
dense 16 activation=$act
batchnorm if=$bn
dropout $rate
dense 16 activation=$act
batchnorm if=$bn
dense 2 activation=softmax
train {
  epochs $epochs
  batch_size 4
}
";

fn with(sets: &[&str]) -> cnnc::parse::ast::Model {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let line = CommandLine::parse(&sets, &[]).unwrap_or_else(|d| panic!("{d}"));
    let overrides = line.variants().remove(0);
    parse_with("hw.cnn", MODEL, &overrides).unwrap_or_else(|d| panic!("{d}"))
}

#[test]
fn a_substituted_model_is_the_model_written_out() {
    let by_hand = "model hw
input 8x8x3
flatten
dense 16 activation=tanh
dropout 0.5
dense 16 activation=tanh
dense 2 activation=softmax
train {
  epochs 7
  batch_size 4
}
";
    let set = with(&["act=tanh", "bn=false", "rate=0.5", "epochs=7"]);
    let written = parse("hw.cnn", by_hand).unwrap();
    assert_eq!(print::model(&set), print::model(&written));
    assert_eq!(set.train.as_ref().unwrap().epochs, Some(7));
    // Without batchnorm, the other layers keep Keras's automatic names.
    let names: Vec<&str> = set.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["flatten", "dense", "dropout", "dense_1", "dense_2"]);
    let values: Vec<(&str, &str, bool)> = set
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str(), p.set.is_some()))
        .collect();
    assert_eq!(
        values,
        [
            ("act", "tanh", true),
            ("bn", "false", true),
            ("rate", "0.5", true),
            ("epochs", "7", true)
        ]
    );
    assert_eq!(set.variant(), "act=tanh,bn=false,rate=0.5,epochs=7");
}

#[test]
fn the_defaults_give_the_model_as_written() {
    let model = with(&[]);
    let names: Vec<&str> = model.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "flatten",
            "dense",
            "batch_normalization",
            "dropout",
            "dense_1",
            "batch_normalization_1",
            "dense_2"
        ]
    );
    assert!(model.params.iter().all(|p| p.set.is_none() && p.value == p.default));
    // Each `$name` is recorded where it is used, for the diagnostics.
    let uses: Vec<usize> = model.params.iter().map(|p| p.uses.len()).collect();
    assert_eq!(uses, [2, 2, 1, 1]);
}

#[test]
fn a_literal_switch_leaves_a_layer_out() {
    let on = parse("m.cnn", "input 4\ndense 3\ndense 2 activation=softmax\n").unwrap();
    let off = parse(
        "m.cnn",
        "input 4\ndense 3\nbatchnorm if=false\ndropout 0.5 if=false\ndense 2 activation=softmax\n",
    )
    .unwrap();
    assert_eq!(print::model(&on), print::model(&off));
}

#[test]
fn lists_strings_and_sizes_are_values_like_any_other() {
    let source = "param k = [1, 2]\nparam size = 2x2\nparam data = \"digits/\"\ninput 4x4x1\n\
                  maxpool2d $size\nflatten\ndense 1 kernel_initializer=$k\ntrain {\n  data $data\n}\n";
    let model = parse("m.cnn", source).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(model.train.as_ref().unwrap().data.as_deref(), Some("digits/"));
    let text = print::model(&model).unwrap();
    assert!(text.contains("maxpool2d 2x2\n"), "{text}");
    assert!(text.contains("kernel_initializer=[1, 2]"), "{text}");
}

/// The model file of the command-line tests, written to `dir`.
fn model_file(dir: &Scratch) -> String {
    dir.write("hw.cnn", MODEL.as_bytes()).display().to_string()
}

/// What `cnnc check` says on stderr, with the scratch folder's path
/// replaced, so that snapshots do not depend on it.
fn check_error(dir: &Scratch, args: &[&str]) -> String {
    let model = model_file(dir);
    let mut all = vec!["check", model.as_str()];
    all.extend(args);
    let out = cnnc(&all);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
    assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
    stderr(&out).replace(&dir.display().to_string(), "DIR")
}

#[test]
fn check_shows_the_parameters_and_which_the_command_line_set() {
    let dir = Scratch::new("params-check");
    let out = cnnc(&["check", &model_file(&dir), "--set", "act=tanh", "--set", "bn=false"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
    let out = cnnc(&["check", &model_file(&dir), "--set", "rate=0", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["params"][2],
        serde_json::json!({"name": "rate", "value": "0", "default": "0.25", "set": true})
    );
    assert_eq!(json["params"][0]["set"], false);
}

#[test]
fn a_set_name_the_model_does_not_declare_is_refused_with_the_closest() {
    let dir = Scratch::new("params-unknown");
    insta::assert_snapshot!(check_error(&dir, &["--set", "act=tanh", "--set", "bnn=false"]));
}

#[test]
fn a_set_value_that_does_not_fit_points_at_its_use() {
    let dir = Scratch::new("params-fit");
    insta::assert_snapshot!(check_error(&dir, &["--set", "act=sigmoidd", "--set", "rate=1.5"]));
}

#[test]
fn a_set_value_that_is_not_a_value_is_a_syntax_error_in_the_command_line() {
    let dir = Scratch::new("params-syntax");
    insta::assert_snapshot!(check_error(&dir, &["--set", "rate=0.5.5"]));
}

#[test]
fn a_set_without_a_value_or_twice_is_refused() {
    let dir = Scratch::new("params-form");
    insta::assert_snapshot!(check_error(
        &dir,
        &["--set", "act", "--set", "bn=", "--set", "rate=0.1", "--set", "rate=0.2"]
    ));
}

#[test]
fn a_set_for_a_model_without_parameters_says_how_to_declare_one() {
    let out = cnnc(&["check", "models/do_the_math.cnn", "--set", "act=tanh"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(stderr(&out));
}

/// Every command that reads a model file takes `--set` (import reads ONNX
/// and Keras files, not models).
#[test]
fn every_command_that_reads_a_model_takes_set() {
    let commands: [&[&str]; 15] = [
        &["check"],
        &["ir"],
        &["grad"],
        &["gradcheck"],
        &["run"],
        &["compare"],
        &["eval"],
        &["predict"],
        &["show", "filters"],
        &["show", "maps"],
        &["show", "saliency"],
        &["serve"],
        &["bench"],
        &["build"],
        &["export"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = cnnc(&args);
        assert!(out.status.success(), "{command:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("--set <NAME=VALUE>"),
            "{command:?} takes no --set"
        );
    }
    // And uses it: the IR of a variant has its activation.
    let dir = Scratch::new("params-ir");
    let out = cnnc(&["ir", &model_file(&dir), "--stage", "inference", "--set", "act=tanh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("tanh("), "{}", stdout(&out));
    assert!(!stdout(&out).contains("relu"), "{}", stdout(&out));
}

/// Two classes of coloured squares, 8x8 RGB: a run of a few steps.
fn squares_data(dir: &Scratch) -> String {
    for (split, n) in [("train", 12), ("test", 4)] {
        squares(&dir.join("data").join(split).join("red"), n, [230, 20, 20], 1);
        squares(&dir.join("data").join(split).join("blue"), n, [20, 20, 230], 2);
    }
    dir.join("data").display().to_string()
}

#[test]
fn a_run_folder_names_the_parameters_and_a_resume_refuses_other_values() {
    let dir = Scratch::new("params-run");
    let model = model_file(&dir);
    let data = squares_data(&dir);
    let runs = dir.join("runs").display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            model.as_str(),
            "--data",
            data.as_str(),
            "--out",
            runs.as_str(),
            "--epochs",
            "1",
        ];
        args.extend(extra);
        cnnc(&args)
    };
    let out = run(&["--set", "act=tanh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let folder = dir.join("runs/hw/act=tanh,bn=true,rate=0.25,epochs=2");
    assert!(folder.join("weights.safetensors").is_file(), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with(
            "training `hw` (act=tanh, bn=true, rate=0.25, epochs=2) on 24 samples (2 classes) with \
             categorical_crossentropy, 1 epochs"
        ),
        "{}",
        stdout(&out)
    );
    // The checkpoint records the values: another one is refused, with the
    // flag that resumes the run.
    std::fs::rename(&folder, dir.join("runs/hw/elsewhere")).unwrap();
    std::fs::rename(
        dir.join("runs/hw/elsewhere"),
        dir.join("runs/hw/act=relu,bn=true,rate=0.25,epochs=2"),
    )
    .unwrap();
    let out = run(&["--resume"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out).replace(&dir.display().to_string(), "DIR");
    insta::assert_snapshot!(err);
    // The folder is the variant's: the tanh one is gone.
    let out = run(&["--resume", "--set", "act=tanh"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("nothing to resume"), "{}", stderr(&out));
}
