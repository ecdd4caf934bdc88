//! `cnnc compare` on a tiny model and dataset (8x8 squares of two colours):
//! every variant of the grid with every seed, each in its own run folder;
//! a table whose numbers are those of the runs' own files and of `cnnc
//! eval` on their weights; a picture with a colour per variant; a second
//! invocation that reuses every finished run; and one killed halfway that
//! continues where it stopped and ends as an uninterrupted one.

mod common;

use common::{Scratch, cnnc, squares, stderr, stdout};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MODEL: &str = "model tiny
param act = relu
param units = 8
input 8x8x3
flatten
dense $units activation=$act
dense 2 activation=softmax
train {
  batch_size 4
  epochs 2
}
";

struct Setup {
    dir: Scratch,
    model: String,
    data: String,
}

fn setup(name: &str) -> Setup {
    let dir = Scratch::new(name);
    let model = dir.write("tiny.cnn", MODEL.as_bytes()).display().to_string();
    for (split, n) in [("train", 12), ("val", 4), ("test", 6)] {
        squares(&dir.join("data").join(split).join("red"), n, [200, 60, 40], 1);
        squares(&dir.join("data").join(split).join("blue"), n, [40, 60, 200], 2);
    }
    let data = dir.join("data").display().to_string();
    Setup { dir, model, data }
}

impl Setup {
    fn out(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn args<'a>(&'a self, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "compare",
            self.model.as_str(),
            "--data",
            self.data.as_str(),
            "--out",
            out,
        ];
        args.extend(extra);
        args
    }
}

const GRID: [&str; 6] = ["--grid", "act=relu,tanh", "--grid", "units=4,8", "--seeds", "2"];

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Numbers masked, so that a snapshot holds the table's shape.
fn masked(text: &str) -> String {
    let mut out = String::new();
    let mut number = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (number && c == '.') {
            if !number {
                out.push('N');
            }
            number = true;
        } else {
            number = false;
            out.push(c);
        }
    }
    out
}

fn stat(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    (mean, sd)
}

#[test]
fn a_grid_trains_every_variant_with_every_seed_and_tabulates_the_runs() {
    let s = setup("compare-grid");
    let out_dir = s.out("cmp");
    let out_arg = out_dir.display().to_string();
    let out = cnnc(&s.args(&out_arg, &GRID));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.starts_with(&format!("comparing 4 variants x 2 seeds = 8 runs in {out_arg}\n")),
        "{printed}"
    );
    // The first grid varies slowest, the seeds fastest.
    let order: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| &l[..l.find(':').unwrap()])
        .collect();
    assert_eq!(
        order,
        [
            "[1/8] act=relu, units=4, seed 1",
            "[2/8] act=relu, units=4, seed 2",
            "[3/8] act=relu, units=8, seed 1",
            "[4/8] act=relu, units=8, seed 2",
            "[5/8] act=tanh, units=4, seed 1",
            "[6/8] act=tanh, units=4, seed 2",
            "[7/8] act=tanh, units=8, seed 1",
            "[8/8] act=tanh, units=8, seed 2",
        ]
    );

    let table = json(&out_dir.join("tiny-by-act-units.json"));
    assert_eq!(table["columns"], serde_json::json!(["act", "units"]));
    let variants = table["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 4);
    for (variant, (act, units)) in variants
        .iter()
        .zip([("relu", 4), ("relu", 8), ("tanh", 4), ("tanh", 8)])
    {
        assert_eq!(
            variant["variant"],
            serde_json::json!({"act": act, "units": units.to_string()})
        );
        assert_eq!(variant["weights"], 8 * 8 * 3 * units + units + units * 2 + 2);
        let runs = variant["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let mut tests = Vec::new();
        let mut bests = Vec::new();
        for (run, seed) in runs.iter().zip([1, 2]) {
            let folder = out_dir.join(format!("tiny/act={act},units={units},seed={seed}"));
            assert_eq!(run["folder"], folder.display().to_string());
            // The best validation accuracy is the run's own metrics'.
            let metrics = std::fs::read_to_string(folder.join("metrics.jsonl")).unwrap();
            let best = metrics
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["val_accuracy"]
                        .as_f64()
                        .unwrap()
                })
                .fold(f64::MIN, f64::max);
            assert_eq!(run["best_val_accuracy"].as_f64(), Some(best));
            assert_eq!(run["epochs"], 2);
            // The test accuracy is what `cnnc eval` finds with its weights.
            let weights = folder.join("weights.safetensors").display().to_string();
            let set = [format!("act={act}"), format!("units={units}")];
            let eval = cnnc(&[
                "eval",
                &s.model,
                "--set",
                &set[0],
                "--set",
                &set[1],
                "--weights",
                &weights,
                "--data",
                &s.data,
                "--format",
                "json",
            ]);
            assert!(eval.status.success(), "{}", stderr(&eval));
            let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();
            assert_eq!(run["test_accuracy"], eval["accuracy"], "{}", folder.display());
            tests.push(run["test_accuracy"].as_f64().unwrap());
            bests.push(best);
        }
        // Mean and sample standard deviation over the seeds.
        for (key, values) in [("test_accuracy", &tests), ("best_val_accuracy", &bests)] {
            let (mean, sd) = stat(values);
            assert!((variant[key]["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{key}");
            assert!((variant[key]["sd"].as_f64().unwrap() - sd).abs() < 1e-12, "{key}");
            assert_eq!(variant[key]["n"], 2);
        }
    }

    // The printed table and the markdown say the same, cell for cell.
    let markdown = std::fs::read_to_string(out_dir.join("tiny-by-act-units.md")).unwrap();
    for row in markdown.lines().skip(2) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let line = printed
            .lines()
            .find(|l| l.starts_with(&format!("{}  ", cells[0])) && l.contains(&format!(" {} ", cells[1])))
            .unwrap_or_else(|| panic!("no printed row for {row}"));
        let mut rest = line;
        for cell in &cells {
            let at = rest.find(cell).unwrap_or_else(|| panic!("`{cell}` not in `{line}`"));
            rest = &rest[at + cell.len()..];
        }
    }
    insta::assert_snapshot!(masked(&markdown));

    // One colour per variant in the picture.
    let picture = image::open(out_dir.join("tiny-by-act-units.png")).unwrap().to_rgb8();
    assert_eq!(
        picture.dimensions(),
        (cnnc::runtime::plot::WIDTH, cnnc::runtime::plot::HEIGHT)
    );
    for i in 0..4 {
        let c = cnnc::runtime::plot::colour(i);
        let near = picture
            .pixels()
            .filter(|p| p.0.iter().zip([c.0, c.1, c.2]).all(|(&a, b)| a.abs_diff(b) < 16))
            .count();
        assert!(near > 100, "variant {i}: {near} pixels of its colour");
    }

    // Given again, every run is reused, and the results are the same.
    let again = cnnc(&s.args(&out_arg, &GRID));
    assert!(again.status.success(), "{}", stderr(&again));
    let reused = stdout(&again).lines().filter(|l| l.ends_with("(reused)")).count();
    assert_eq!(reused, 8, "{}", stdout(&again));
    assert_eq!(json(&out_dir.join("tiny-by-act-units.json")), table);
}

#[test]
fn killed_halfway_the_same_command_continues_where_it_stopped() {
    let s = setup("compare-killed");
    let grid = ["--grid", "act=relu,tanh", "--seeds", "2", "--epochs", "3"];
    let reference = s.out("reference").display().to_string();
    let out = cnnc(&s.args(&reference, &grid));
    assert!(out.status.success(), "{}", stderr(&out));

    let killed = s.out("killed").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(s.args(&killed, &grid))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the third run has started: two are finished.
    let mut pipe = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8];
    while !String::from_utf8_lossy(&seen).contains("[3/4]") {
        assert_eq!(
            pipe.read(&mut byte).unwrap(),
            1,
            "ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let out = cnnc(&s.args(&killed, &grid));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with('['))
        .map(String::from)
        .collect();
    assert!(
        lines[0].ends_with("(reused)") && lines[1].ends_with("(reused)"),
        "{lines:?}"
    );
    assert!(!lines[3].ends_with("(reused)"), "{lines:?}");
    // Everything but the folders and the times is the uninterrupted run's.
    let timeless = |path: PathBuf| {
        let text = std::fs::read_to_string(path).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        for variant in v["variants"].as_array_mut().unwrap() {
            variant["seconds"] = Value::Null;
            for run in variant["runs"].as_array_mut().unwrap() {
                run["seconds"] = Value::Null;
                run["folder"] = Value::Null;
            }
        }
        v
    };
    assert_eq!(
        timeless(s.out("killed").join("tiny-by-act.json")),
        timeless(s.out("reference").join("tiny-by-act.json"))
    );
}

#[test]
fn several_files_are_compared_side_by_side() {
    let s = setup("compare-files");
    let other = s
        .dir
        .write("wide.cnn", MODEL.replace("model tiny", "model wide").as_bytes());
    let out_dir = s.out("cmp").display().to_string();
    let other = other.display().to_string();
    let out = cnnc(&[
        "compare", &s.model, &other, "--set", "units=16", "--seeds", "1", "--data", &s.data, "--out", &out_dir,
        "--format", "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // With `--format json`, stdout is the JSON alone.
    let table: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(table["columns"], serde_json::json!(["model"]));
    let models: Vec<&str> = table["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["tiny", "wide"]);
    assert_eq!(table["variants"][1]["params"]["units"], "16");
    assert!(s.out("cmp").join("tiny-wide.png").is_file());
    assert!(
        s.out("cmp")
            .join("wide/act=relu,units=16,seed=1/weights.safetensors")
            .is_file()
    );
}

#[test]
fn a_grid_value_that_does_not_fit_is_refused_before_any_run_trains() {
    let s = setup("compare-bad");
    let out_dir = s.out("cmp");
    let out_arg = out_dir.display().to_string();
    let out = cnnc(&s.args(&out_arg, &["--grid", "act=relu,sigmoidd"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(!out_dir.exists(), "a run started");
    insta::assert_snapshot!(stderr(&out).replace(&s.dir.display().to_string(), "DIR"));
    let out = cnnc(&s.args(&out_arg, &["--grid", "act=relu,tanh", "--grid", "actt=1,2"]));
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(stderr(&out).replace(&s.dir.display().to_string(), "DIR"));
}

/// A run folder as `cnnc run` leaves it, as far as its curves go.
fn run_folder(dir: &Scratch, name: &str, val_accuracy: [f64; 2]) -> String {
    let lines: Vec<String> = val_accuracy
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                r#"{{"epoch":{},"loss":0.5,"accuracy":0.9,"val_loss":{},"val_accuracy":{a},"seconds":1.5,"samples_per_sec":100.0}}"#,
                i + 1,
                1.0 - a
            )
        })
        .collect();
    dir.write(&format!("{name}/metrics.jsonl"), lines.join("\n").as_bytes());
    dir.join(name).display().to_string()
}

#[test]
fn run_folders_are_drawn_together_without_training() {
    let s = setup("compare-folders");
    let a = run_folder(&s.dir, "transfer", [0.5, 0.8]);
    let b = run_folder(&s.dir, "scratch", [0.7, 0.6]);
    let out_dir = s.out("cmp").display().to_string();
    let out = cnnc(&["compare", &a, &b, "--out", &out_dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out).replace(&s.dir.display().to_string(), "DIR");
    assert_eq!(
        printed,
        "DIR/transfer: best val_accuracy 0.8000 (epoch 2), 2 epochs in 3.0 s\n\
         DIR/scratch: best val_accuracy 0.7000 (epoch 1), 2 epochs in 3.0 s\n\
         wrote DIR/cmp/transfer-vs-scratch.png\n"
    );
    let png = printed.lines().last().unwrap().trim_start_matches("wrote ");
    let picture = image::open(png.replace("DIR", &s.dir.display().to_string()))
        .unwrap()
        .to_rgb8();
    for i in 0..2 {
        let c = cnnc::runtime::plot::colour(i);
        let near = picture
            .pixels()
            .filter(|p| p.0.iter().zip([c.0, c.1, c.2]).all(|(&a, b)| a.abs_diff(b) < 16))
            .count();
        assert!(near > 100, "run {i}: {near} pixels of its colour");
    }

    // A run in two stages, `head+finetune`, is one curve whose epochs count
    // on: the best epoch of the second stage is the joined run's fourth.
    let head = run_folder(&s.dir, "head", [0.5, 0.6]);
    let finetune = run_folder(&s.dir, "finetune", [0.65, 0.9]);
    let joined = format!("{head}+{finetune}");
    let out = cnnc(&["compare", &joined, &b, "--out", &out_dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out).replace(&s.dir.display().to_string(), "DIR");
    assert_eq!(
        printed,
        "DIR/head+DIR/finetune: best val_accuracy 0.9000 (epoch 4), 4 epochs in 6.0 s\n\
         DIR/scratch: best val_accuracy 0.7000 (epoch 1), 2 epochs in 3.0 s\n\
         wrote DIR/cmp/head+finetune-vs-scratch.png\n"
    );

    // Folders and model files are not mixed.
    let out = cnnc(&["compare", &a, &s.model, "--out", &out_dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("compare model files (which it trains) or run folders"),
        "{}",
        stderr(&out)
    );
}
