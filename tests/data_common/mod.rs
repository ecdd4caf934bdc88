//! Shared by the data tests: a scratch folder that cleans up after itself,
//! and the check that an error names its file.

use cnnc::runtime::data::DataError;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh folder, unique per process and call, so parallel tests and
    /// concurrent runs never share one.
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "cnnc-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` at `relative`, creating its folders.
    pub fn write(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The rendered error names `file` (a path ending) and says `what`.
pub fn assert_error(error: &DataError, file: &str, what: &str) {
    let shown = error.to_string();
    let first = shown.lines().next().unwrap_or_default();
    let named = first
        .strip_prefix("error: ")
        .and_then(|rest| rest.split(": ").next())
        .unwrap_or_default();
    assert!(named.ends_with(file), "error does not name {file}:\n{shown}");
    assert!(shown.contains(what), "error does not say {what:?}:\n{shown}");
}
