//! The metrics file: one JSON object per epoch with fixed field names,
//! rewritten whole after each epoch, and read back for `--resume`.

mod common;

use cnnc::runtime::metrics::{EpochMetrics, MetricsError, MetricsLog, read};
use common::Scratch;

fn epoch(epoch: u64, validation: bool) -> EpochMetrics {
    let e = epoch as f64;
    EpochMetrics {
        epoch,
        loss: 1.0 / e,
        accuracy: 1.0 - 0.5 / e,
        val_loss: validation.then_some(1.1 / e),
        val_accuracy: validation.then_some(0.9 - 0.5 / e),
        seconds: 12.25,
        samples_per_sec: 4321.5,
    }
}

#[test]
fn each_line_has_exactly_the_documented_fields_in_order() {
    let dir = Scratch::new("metrics-fields");
    let path = dir.join("metrics.jsonl");
    let mut log = MetricsLog::create(&path);
    log.record(epoch(1, true)).unwrap();
    log.record(epoch(2, false)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(text.ends_with('\n'));
    let fields = [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
        "samples_per_sec",
    ];
    for line in &lines {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        assert_eq!(object.keys().collect::<Vec<_>>().len(), fields.len(), "{line}");
        let order: Vec<usize> = fields
            .iter()
            .map(|f| line.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(order.is_sorted(), "fields out of order: {line}");
    }
    assert_eq!(
        lines[1],
        r#"{"epoch":2,"loss":0.5,"accuracy":0.75,"val_loss":null,"val_accuracy":null,"seconds":12.25,"samples_per_sec":4321.5}"#
    );
}

#[test]
fn metrics_round_trip() {
    let dir = Scratch::new("metrics-roundtrip");
    let path = dir.join("metrics.jsonl");
    let mut log = MetricsLog::create(&path);
    let written: Vec<EpochMetrics> = (1..=5).map(|e| epoch(e, e % 2 == 1)).collect();
    for m in &written {
        log.record(m.clone()).unwrap();
        // After every epoch the file on disk is complete and valid.
        assert_eq!(read(&path).unwrap(), log.epochs());
    }
    assert_eq!(read(&path).unwrap(), written);
}

#[test]
fn a_diverged_loss_is_null_in_the_file_and_nan_when_read() {
    let dir = Scratch::new("metrics-nan");
    let path = dir.join("metrics.jsonl");
    let mut log = MetricsLog::create(&path);
    let mut diverged = epoch(1, true);
    diverged.loss = f64::NAN;
    log.record(diverged).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"loss\":null"));
    let back = read(&path).unwrap();
    assert!(back[0].loss.is_nan());
    assert_eq!(back[0].accuracy, 0.5);
}

#[test]
fn resuming_keeps_the_epochs_up_to_the_checkpoint_and_continues() {
    let dir = Scratch::new("metrics-resume");
    let path = dir.join("metrics.jsonl");
    let mut log = MetricsLog::create(&path);
    for e in 1..=4 {
        log.record(epoch(e, true)).unwrap();
    }
    // The weights were last saved after epoch 3; epoch 4 will be run again.
    let mut resumed = MetricsLog::resume(&path, 3).unwrap();
    assert_eq!(resumed.epochs(), &log.epochs()[..3]);
    resumed.record(epoch(4, false)).unwrap();
    let back = read(&path).unwrap();
    assert_eq!(back.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(back[3].val_loss, None);
}

#[test]
fn a_bad_line_is_reported_with_its_position() {
    let dir = Scratch::new("metrics-bad");
    let path = dir.join("metrics.jsonl");
    let good = serde_json::to_string(&epoch(1, false)).unwrap();
    std::fs::write(&path, format!("{good}\n\n{{\"epoch\":2,\"accuracy\":0.5}}\n")).unwrap();
    let e = read(&path).unwrap_err();
    assert!(matches!(e, MetricsError::Parse { line: 3, .. }), "{e:?}");
    let message = e.to_string();
    assert!(message.starts_with(&format!("{}:3:", path.display())), "{message}");
    assert!(message.contains("missing field `loss`"), "{message}");
    assert!(!message.contains("at line 1"), "{message}");
}

#[test]
fn resuming_without_a_metrics_file_names_it() {
    let dir = Scratch::new("metrics-missing");
    let path = dir.join("metrics.jsonl");
    let e = MetricsLog::resume(&path, 2).unwrap_err();
    assert_eq!(e.to_string(), format!("no such file `{}`", path.display()));
}

#[test]
fn a_failed_write_names_the_file_and_keeps_the_epoch_for_the_next_write() {
    let dir = Scratch::new("metrics-fail");
    let path = dir.join("gone/metrics.jsonl");
    let mut log = MetricsLog::create(&path);
    let e = log.record(epoch(1, false)).unwrap_err();
    assert!(e.to_string().contains(&format!("`{}`", path.display())), "{e}");
    std::fs::create_dir(dir.join("gone")).unwrap();
    log.record(epoch(2, false)).unwrap();
    assert_eq!(read(&path).unwrap().len(), 2);
}
