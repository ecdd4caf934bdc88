//! `write_atomic` replaces a file whole or not at all, leaves no temporary
//! file behind, and names the path it could not write.

mod common;

use cnnc::runtime::checkpoint::write_atomic;
use common::Scratch;
use std::path::Path;

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_file_is_written_and_no_temporary_file_remains() {
    let dir = Scratch::new("atomic-new");
    let path = dir.join("metrics.jsonl");
    write_atomic(&path, b"{\"epoch\": 1}\n").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"epoch\": 1}\n");
    assert_eq!(listing(&dir), ["metrics.jsonl"]);
}

#[test]
fn an_existing_file_is_replaced_whole() {
    let dir = Scratch::new("atomic-replace");
    let path = dir.join("w.safetensors");
    std::fs::write(&path, vec![7u8; 10_000]).unwrap();
    write_atomic(&path, b"short").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
    assert_eq!(listing(&dir), ["w.safetensors"]);
}

#[test]
fn a_stale_temporary_file_from_a_killed_run_is_reused() {
    let dir = Scratch::new("atomic-stale");
    let path = dir.join("curves.png");
    std::fs::write(dir.join(".curves.png.tmp"), vec![1u8; 4096]).unwrap();
    write_atomic(&path, b"png").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"png");
    assert_eq!(listing(&dir), ["curves.png"]);
}

#[test]
fn a_missing_directory_is_an_error_naming_the_path() {
    let dir = Scratch::new("atomic-nodir");
    let path = dir.join("no/such/dir/w.safetensors");
    let e = write_atomic(&path, b"x").unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("cannot write `{}`: ", path.display())),
        "{message}"
    );
    assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn when_the_temporary_file_cannot_be_made_the_old_file_is_untouched() {
    let dir = Scratch::new("atomic-blocked");
    let path = dir.join("w.safetensors");
    std::fs::write(&path, b"previous epoch").unwrap();
    // A directory where the temporary file must go makes creating it fail,
    // even for root, whom a read-only directory would not stop.
    std::fs::create_dir(dir.join(".w.safetensors.tmp")).unwrap();
    let e = write_atomic(&path, b"next epoch").unwrap_err();
    assert!(e.to_string().contains(&format!("`{}`", path.display())), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"previous epoch");
}

#[test]
fn when_the_rename_fails_the_target_is_untouched_and_the_temporary_file_removed() {
    let dir = Scratch::new("atomic-rename");
    // A non-empty directory cannot be replaced by a file.
    let path = dir.join("w.safetensors");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("inside"), b"keep").unwrap();
    let e = write_atomic(&path, b"new").unwrap_err();
    assert!(e.to_string().contains(&format!("`{}`", path.display())), "{e}");
    assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"keep");
    assert_eq!(listing(&dir), ["w.safetensors"]);
}

#[test]
fn a_path_without_a_file_name_is_refused() {
    let e = write_atomic(Path::new(".."), b"x").unwrap_err();
    assert!(e.to_string().starts_with("cannot write `..`"), "{e}");
}
