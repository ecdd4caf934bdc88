//! The readers of cnnc's file formats take paths (they check that a file is
//! regular and how large it is before reading it), so each input is
//! written to a file in a folder of this process's own.

use std::path::PathBuf;
use std::sync::OnceLock;

/// `name` in this process's scratch folder, holding `data`.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cnnc-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        dir
    });
    let path = dir.join(name);
    std::fs::write(&path, data).expect("the input is written");
    path
}
