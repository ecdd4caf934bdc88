//! Per-epoch training metrics, kept as JSON lines: one object per epoch with
//! the fields `epoch, loss, accuracy, val_loss, val_accuracy, seconds,
//! samples_per_sec`, `null` where a run has no validation data.
//!
//! JSON has no NaN: a diverged loss is written as `null` and read back as
//! NaN (or as no value, for the validation fields).

use super::checkpoint::{FileError, write_atomic};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Counted from 1, as Keras prints it: the first epoch is epoch 1.
    pub epoch: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Wall time of the epoch, validation included.
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds: f64,
    /// Training samples per second of training time.
    #[serde(deserialize_with = "nan_if_null")]
    pub samples_per_sec: f64,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The metrics file of a run. Each recorded epoch rewrites the whole file
/// atomically, so a run killed at any moment leaves a valid file.
#[derive(Clone, Debug)]
pub struct MetricsLog {
    path: PathBuf,
    epochs: Vec<EpochMetrics>,
}

#[derive(Debug)]
pub enum MetricsError {
    File(FileError),
    /// `line` and `column` count from 1.
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl MetricsLog {
    /// A new run's log. Nothing is written before the first epoch is
    /// recorded; then a file already at `path` is replaced.
    pub fn create(path: impl Into<PathBuf>) -> MetricsLog {
        MetricsLog {
            path: path.into(),
            epochs: Vec::new(),
        }
    }

    /// The log of a run resumed after epoch `epoch`: the epochs already in
    /// the file up to that one. Later epochs were recorded after the
    /// checkpoint being resumed, and will be run, and recorded, again.
    pub fn resume(path: impl Into<PathBuf>, epoch: u64) -> Result<MetricsLog, MetricsError> {
        let path = path.into();
        let mut epochs = match read(&path) {
            // A run interrupted in its first epoch has recorded nothing.
            Err(MetricsError::File(e)) if epoch == 0 && e.source.kind() == io::ErrorKind::NotFound => Vec::new(),
            read => read?,
        };
        epochs.retain(|m| m.epoch <= epoch);
        Ok(MetricsLog { path, epochs })
    }

    /// Adds an epoch and rewrites the file.
    pub fn record(&mut self, metrics: EpochMetrics) -> Result<(), FileError> {
        self.epochs.push(metrics);
        write_atomic(
            &self.path,
            &to_json_lines(&self.epochs).map_err(|e| self.error(e.into()))?,
        )
    }

    pub fn epochs(&self) -> &[EpochMetrics] {
        &self.epochs
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: io::Error) -> FileError {
        FileError {
            path: self.path.clone(),
            writing: true,
            source,
        }
    }
}

fn to_json_lines(epochs: &[EpochMetrics]) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    for m in epochs {
        serde_json::to_writer(&mut out, m)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Reads a metrics file written by [`MetricsLog`]; blank lines are skipped.
pub fn read(path: &Path) -> Result<Vec<EpochMetrics>, MetricsError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        MetricsError::File(FileError {
            path: path.to_path_buf(),
            writing: false,
            source,
        })
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                // serde_json ends its message with its own position, which
                // counts lines within the one line it was given.
                let message = e.to_string();
                let position = format!(" at line {} column {}", e.line(), e.column());
                MetricsError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    column: e.column(),
                    message: message.strip_suffix(&position).unwrap_or(&message).to_string(),
                }
            })
        })
        .collect()
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::File(e) => e.fmt(f),
            MetricsError::Parse {
                path,
                line,
                column,
                message,
            } => write!(
                f,
                "{}:{line}:{column}: {message}\n  = help: each line of a metrics file is one epoch's metrics",
                path.display()
            ),
        }
    }
}

impl std::error::Error for MetricsError {}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("cnnc-metrics-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_run_interrupted_in_its_first_epoch_resumes_without_a_file() {
        let dir = Scratch::new("first");
        let log = MetricsLog::resume(dir.0.join("metrics.jsonl"), 0).unwrap();
        assert!(log.epochs().is_empty());
    }

    /// A resumed run reads the file and writes it again: a value that came
    /// back 1 ulp off would make its metrics differ from an uninterrupted
    /// run's.
    #[test]
    fn values_read_back_exactly() {
        let dir = Scratch::new("exact");
        let path = dir.0.join("metrics.jsonl");
        let mut log = MetricsLog::create(&path);
        log.record(EpochMetrics {
            epoch: 1,
            // Parsed to its neighbour by serde_json without `float_roundtrip`.
            loss: 0.21291890726713458,
            accuracy: 0.9856906946328695,
            val_loss: Some(0.9259338926496359),
            val_accuracy: Some(0.44166130716816643),
            seconds: 0.9726104788033849,
            samples_per_sec: 0.41952481325285884,
        })
        .unwrap();
        assert_eq!(read(&path).unwrap(), log.epochs());
    }
}
