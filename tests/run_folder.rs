//! The run folder through the binary: one run at a time, a folder that
//! cannot be written refused before training, `eval` on classes other than
//! the weights', and the exit codes. Unix: permissions and users.
#![cfg(unix)]

mod common;

use common::{Scratch, cnnc, squares, stderr, stdout};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// A dense digit classifier on the bundled digits: a fraction of a second
/// an epoch.
const SMALL: &[u8] = b"model small
input 28x28x1
flatten
dense 16 activation=relu
dense 10 activation=softmax
train {
  batch_size 64
  epochs 1
}
";

fn arg(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Defect 8 of issue 9: a second run into a busy folder is refused, naming
/// it, and leaves the first one's files alone.
#[test]
fn a_second_run_into_a_locked_folder_is_refused_naming_it() {
    let dir = Scratch::new("locked");
    let model = arg(&dir.write("small.cnn", SMALL));
    let runs = arg(&dir.join("runs"));
    let folder = dir.join("runs/small");
    std::fs::create_dir_all(&folder).unwrap();
    // Held as a running cnnc holds it.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(folder.join("run.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let out = cnnc(&["run", &model, "--out", &runs]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: another cnnc run is writing to `{}`", folder.display())),
        "{err}"
    );
    assert!(err.contains("another folder with --out"), "{err}");
    insta::assert_snapshot!(err.replace(&dir.display().to_string(), "DIR"));
    assert!(!stdout(&out).contains("epoch 1/1:"), "{}", stdout(&out));
    assert!(!folder.join("weights.safetensors").exists());
    // Released, as when the first run ends, however it ends.
    drop(lock);
    let out = cnnc(&["run", &model, "--out", &runs]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue 12: a run into a folder that holds a run is refused, naming what
/// it holds and the ways on: `--resume`, another `--out`, `--force`.
#[test]
fn a_run_into_a_folder_holding_a_run_is_refused_with_the_ways_on() {
    let dir = Scratch::new("held");
    let model = arg(&dir.write("small.cnn", SMALL));
    let runs = arg(&dir.join("runs"));
    let first = cnnc(&["run", &model, "--out", &runs]);
    assert!(first.status.success(), "{}", stderr(&first));
    let weights = std::fs::read(dir.join("runs/small/weights.safetensors")).unwrap();
    let out = cnnc(&["run", &model, "--out", &runs]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    insta::assert_snapshot!(stderr(&out).replace(&dir.display().to_string(), "DIR"));
    assert!(!stdout(&out).contains("epoch 1/1:"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read(dir.join("runs/small/weights.safetensors")).unwrap(),
        weights
    );
    let out = cnnc(&["run", &model, "--out", &runs, "--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to train"), "{}", stdout(&out));
    let out = cnnc(&["run", &model, "--out", &runs, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("starting over in"), "{}", stdout(&out));
    assert!(stdout(&out).contains("epoch 1/1:"), "{}", stdout(&out));
}

/// Two real runs into one folder: the one that starts second is refused
/// while the first, slowed by the test hook, is still writing.
#[test]
fn two_runs_at_once_into_one_folder_one_is_refused() {
    let dir = Scratch::new("two-runs");
    let model = arg(&dir.write("small.cnn", SMALL));
    let runs = arg(&dir.join("runs"));
    let mut first = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["run", &model, "--epochs", "2", "--out", &runs])
        .env("CNNC_TEST_PAUSE_BEFORE_RENAME", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The hook speaks once the first run writes, long after it took the lock.
    let mut hook = std::io::BufReader::new(first.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut hook, &mut line).unwrap();
    assert!(line.starts_with("test hook: renaming"), "{line}");
    let second = cnnc(&["run", &model, "--out", &runs]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another cnnc run is writing to"),
        "{}",
        stderr(&second)
    );
    std::io::Read::read_to_string(&mut hook, &mut line).unwrap();
    assert!(first.wait().unwrap().success(), "{line}");
    let metrics = std::fs::read_to_string(dir.join("runs/small/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "the first run lost its results");
}

/// A run folder that cannot be written is found before the first epoch,
/// not after it. As root, whom permissions do not stop, cnnc runs as the
/// user `nobody`.
#[test]
fn an_unwritable_run_folder_is_refused_before_training() {
    let dir = Scratch::new("read-only");
    let model = arg(&dir.write("small.cnn", SMALL));
    let folder = dir.join("runs/small");
    std::fs::create_dir_all(&folder).unwrap();
    // A lock file anyone may open, as an earlier run may have left it:
    // only creating the run's files can fail.
    File::create(folder.join("run.lock")).unwrap();
    let chmod = |path: &std::path::Path, mode| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    chmod(&folder.join("run.lock"), 0o666).unwrap();
    chmod(&folder, 0o555).unwrap();
    let privileged = File::create(folder.join("probe")).is_ok();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cnnc"));
    command.args(["run", &model, "--out", &arg(&dir.join("runs"))]);
    if privileged {
        command.uid(65534).gid(65534);
    }
    let out = command.output().unwrap();
    chmod(&folder, 0o755).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: cannot write to the run folder `{}`: Permission denied",
            folder.display()
        )),
        "{err}"
    );
    assert!(!stdout(&out).contains("epoch 1/1:"), "trained first: {}", stdout(&out));
    insta::assert_snapshot!(err.replace(&dir.display().to_string(), "DIR"));
}

/// Issue 9: a `cat, dog, zebra` test folder scored 100 % against a
/// `cat, dog, eel` model. Labels are indices, so cnnc refuses.
#[test]
fn eval_refuses_test_classes_other_than_the_weights() {
    let dir = Scratch::new("eval-classes");
    for (split, n) in [("train", 8), ("test", 4)] {
        squares(&dir.join("trained").join(split).join("cat"), n, [230, 20, 20], 1);
        squares(&dir.join("trained").join(split).join("dog"), n, [20, 20, 230], 2);
        squares(&dir.join("other").join(split).join("cat"), n, [230, 20, 20], 3);
        squares(&dir.join("other").join(split).join("zebra"), n, [20, 20, 230], 4);
    }
    let model = arg(&dir.write(
        "pets.cnn",
        b"input 8x8x3\nflatten\ndense 2 activation=softmax\ntrain {\n  data \"trained\"\n  epochs 1\n}\n",
    ));
    let out = cnnc(&["run", &model, "--out", &arg(&dir.join("runs"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let weights = dir.join("runs/pets/weights.safetensors");
    let eval = |data: &str| cnnc(&["eval", &model, "--weights", &arg(&weights), "--data", data]);
    let same = eval(&arg(&dir.join("trained")));
    assert!(same.status.success(), "{}", stderr(&same));
    // The checkpoint holds the same weights, beside the optimizer's slots.
    let checkpoint = dir.join("runs/pets/checkpoint.safetensors");
    let from_checkpoint = cnnc(&[
        "eval",
        &model,
        "--weights",
        &arg(&checkpoint),
        "--data",
        &arg(&dir.join("trained")),
    ]);
    assert!(from_checkpoint.status.success(), "{}", stderr(&from_checkpoint));
    assert_eq!(stdout(&from_checkpoint), stdout(&same));
    let other = eval(&arg(&dir.join("other")));
    assert_eq!(other.status.code(), Some(1), "{}", stdout(&other));
    let err = stderr(&other);
    assert!(
        err.contains("label 1 is `dog` in `") && err.contains("`, `zebra` in the data"),
        "{err}"
    );
    assert!(err.contains(&arg(&weights)), "{err}");
    insta::assert_snapshot!(err.replace(&dir.display().to_string(), "DIR"));
}

/// The exit codes are part of the interface: `--help` lists them.
#[test]
fn the_help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["run", "--help"], &["compare", "--help"]] {
        let out = cnnc(args);
        assert!(out.status.success());
        let help = stdout(&out);
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(
            help.contains(
                "130  `cnnc run` or `cnnc compare` interrupted (Ctrl-C): the run is saved; `--resume` continues it\n       \
                 (`compare` continues when given again)"
            ),
            "{help}"
        );
    }
}
