//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cnnc::shape::Checked;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `.cnn` files of `models/`, sorted.
pub fn models() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("models")
        .expect("models/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .collect();
    files.sort();
    files
}

pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses and checks a model given as text.
pub fn checked(name: &str, source: &str) -> Checked {
    let model = cnnc::parse::parse(name, source).unwrap_or_else(|d| panic!("{d}"));
    cnnc::shape::check(model, name, source).unwrap_or_else(|d| panic!("{d}"))
}

pub fn checked_file(path: &Path) -> Checked {
    let source = std::fs::read_to_string(path).expect("readable model");
    checked(&path.display().to_string(), &source)
}

/// Runs the cnnc binary from the repository root.
pub fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .output()
        .expect("cnnc runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
