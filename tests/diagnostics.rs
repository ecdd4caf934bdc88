//! `cnnc check` on broken models: every file in `tests/bad` must be refused
//! with exit code 1, nothing on stdout, a `file:line:col` position and a
//! message whose exact text is pinned by a snapshot. And the exit codes of
//! the other ways `check` can end.

use std::path::Path;
use std::process::Output;

/// The root of the repository: commands run here so that paths in messages
/// (and so in snapshots) are relative, like `tests/bad/zero_units.cnn`.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn cnnc(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("the cnnc binary runs")
}

/// The names of the broken models, sorted so the run order is stable.
fn bad_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("tests/bad"))
        .expect("tests/bad exists")
        .map(|entry| {
            entry
                .expect("tests/bad is readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".cnn"))
        .collect();
    names.sort();
    names
}

/// Whether `text` holds `path:LINE:COL` with both numbers present.
fn has_position(text: &str, path: &str) -> bool {
    let prefix = format!("{path}:");
    text.match_indices(&prefix).any(|(at, _)| {
        let rest = &text[at + prefix.len()..];
        let (line, rest) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len()));
        let Some(rest) = rest.strip_prefix(':') else {
            return false;
        };
        !line.is_empty() && rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

#[test]
fn the_corpus_has_at_least_25_broken_models() {
    let n = bad_files().len();
    assert!(n >= 25, "tests/bad holds {n} .cnn files");
}

#[test]
fn every_broken_model_says_what_is_wrong_on_its_first_line() {
    for name in bad_files() {
        // Raw bytes: one file is deliberately not UTF-8.
        let bytes = std::fs::read(Path::new(ROOT).join("tests/bad").join(&name)).expect("readable");
        assert!(bytes.starts_with(b"# "), "{name} does not start with a `# ` comment");
    }
}

#[test]
fn every_broken_model_is_refused_with_a_located_message() {
    let mut settings = insta::Settings::clone_current();
    for name in bad_files() {
        let path = format!("tests/bad/{name}");
        let out = cnnc(&["check", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{path}: wrong exit code; stderr:\n{stderr}");
        assert!(
            out.stdout.is_empty(),
            "{path}: printed on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.starts_with("error"),
            "{path}: stderr does not start with an error:\n{stderr}"
        );
        assert!(
            has_position(&stderr, &path),
            "{path}: no `{path}:LINE:COL` in:\n{stderr}"
        );
        let bytes = std::fs::read(Path::new(ROOT).join(&path)).expect("readable");
        let first_line = String::from_utf8_lossy(bytes.split(|&b| b == b'\n').next().unwrap_or_default());
        settings.set_description(first_line.trim_start_matches("# ").to_string());
        let stem = name.trim_end_matches(".cnn").to_string();
        settings.bind(|| insta::assert_snapshot!(stem, stderr));
    }
}

#[test]
fn every_bundled_model_checks_with_exit_code_0() {
    let mut models: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("models"))
        .expect("models exists")
        .map(|entry| entry.expect("models is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .collect();
    models.sort();
    assert!(!models.is_empty(), "no models/*.cnn");
    for model in models {
        let path = format!("models/{}", model.file_name().unwrap_or_default().to_string_lossy());
        let out = cnnc(&["check", &path]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("Model: "),
            "{path}: no summary"
        );
    }
}

#[test]
fn a_missing_file_is_exit_code_1() {
    let out = cnnc(&["check", "tests/bad/no_such_model.cnn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tests/bad/no_such_model.cnn"), "{stderr}");
}

#[test]
fn a_directory_is_exit_code_1() {
    let out = cnnc(&["check", "tests/bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tests/bad"), "{stderr}");
}

#[test]
fn a_device_or_fifo_is_refused_without_reading_it() {
    let fifo = std::env::temp_dir().join(format!("cnnc-fifo-{}", std::process::id()));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo made {}", fifo.display());
    for path in ["/dev/zero".to_string(), fifo.display().to_string()] {
        let out = cnnc(&["check", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {stderr}");
        assert!(
            stderr.contains("not a regular file; a model file is needed"),
            "{path}: {stderr}"
        );
    }
    std::fs::remove_file(&fifo).expect("the fifo is removed");
}

#[test]
fn a_model_file_above_the_size_limit_is_refused() {
    let big = std::env::temp_dir().join(format!("cnnc-big-{}.cnn", std::process::id()));
    let file = std::fs::File::create(&big).expect("a temporary file");
    file.set_len(cnnc::parse::MAX_FILE + 1).expect("a sparse file");
    let out = cnnc(&["check", &big.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_file(&big).expect("the file is removed");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let limit = format!("more than the {} bytes a model file may have", cnnc::parse::MAX_FILE);
    assert!(stderr.contains(&limit), "{stderr}");
}

#[test]
fn an_unknown_flag_is_a_usage_error_with_exit_code_2() {
    let out = cnnc(&["check", "--no-such-flag", "models/mnist_cnn.cnn"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn a_missing_argument_is_a_usage_error_with_exit_code_2() {
    for args in [&["check"][..], &[][..]] {
        let out = cnnc(args);
        assert_eq!(out.status.code(), Some(2), "cnnc {args:?}");
        assert!(out.stdout.is_empty(), "cnnc {args:?}");
    }
}
