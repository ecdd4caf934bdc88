//! `write_atomic` replaces a file whole or not at all, leaves no temporary
//! file behind, never shares one with another writer, and names the path it
//! could not write.

mod common;

use cnnc::runtime::checkpoint::{remove_stale_temps, temp_path, write_atomic};
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
fn stale_temporary_files_of_a_path_are_removed_and_nothing_else() {
    let dir = Scratch::new("atomic-stale");
    let path = dir.join("curves.png");
    // As writers killed mid-write leave them.
    std::fs::write(dir.join(".curves.png.4242-0.tmp"), vec![1u8; 4096]).unwrap();
    std::fs::write(dir.join(".curves.png.77-3.tmp"), b"").unwrap();
    std::fs::write(dir.join(".other.png.77-3.tmp"), b"").unwrap();
    write_atomic(&path, b"png").unwrap();
    remove_stale_temps(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"png");
    assert_eq!(listing(&dir), [".other.png.77-3.tmp", "curves.png"]);
}

/// Defect 8 of issue 9: two writers of one file shared a fixed temporary
/// name, and one could rename the other's half-written file.
#[test]
fn concurrent_writers_never_share_a_temporary_file() {
    let dir = Scratch::new("atomic-concurrent");
    let path = dir.join("w.safetensors");
    let contents: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 256 * 1024]).collect();
    std::thread::scope(|s| {
        for bytes in &contents {
            let (path, contents) = (&path, &contents);
            s.spawn(move || {
                for _ in 0..20 {
                    write_atomic(path, bytes).unwrap();
                    let now = std::fs::read(path).unwrap();
                    assert!(contents.contains(&now), "a reader saw a mixed or partial file");
                }
            });
        }
    });
    assert_eq!(listing(&dir), ["w.safetensors"]);
    assert_ne!(
        temp_path(&dir, "w".as_ref()),
        temp_path(&dir, "w".as_ref()),
        "two writes got one temporary name"
    );
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
    // A file name so long that its temporary file's name is too long for
    // the file system (255 bytes) makes creating it fail, even for root,
    // whom a read-only directory would not stop.
    let path = dir.join(format!("{}.safetensors", "w".repeat(240)));
    std::fs::write(&path, b"previous epoch").unwrap();
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
