//! The results of a comparison (`cnnc compare`): each variant's runs, one
//! per seed, summed up over the seeds as mean ± standard deviation, and
//! shown as a table, in text or markdown, or as JSON.

use super::metrics::EpochMetrics;
use crate::shape::group;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Every variant of a comparison, in the order they ran.
pub struct Comparison {
    /// The columns that tell the variants apart: `model` when several
    /// models are compared, then each parameter of the grid.
    pub columns: Vec<String>,
    pub variants: Vec<Variant>,
}

pub struct Variant {
    /// The variant's value in each of `Comparison::columns`.
    pub cells: Vec<String>,
    pub model: String,
    /// Every parameter of the model and its value.
    pub params: Vec<(String, String)>,
    /// The model's weights, trainable or not.
    pub weights: u64,
    /// False for a regression, which has a loss and no accuracy.
    pub accuracy: bool,
    pub runs: Vec<Run>,
}

/// One run: a seed of a variant.
pub struct Run {
    pub seed: u64,
    pub folder: PathBuf,
    pub epochs: Vec<EpochMetrics>,
    /// Loss and accuracy on the test split, if the data has one.
    pub test: Option<(f64, f64)>,
}

impl Run {
    /// The epoch of the best validation accuracy (the first, if several
    /// tie) and that accuracy.
    pub fn best_val_accuracy(&self) -> Option<(u64, f64)> {
        self.best(|m| m.val_accuracy, |a, b| a > b)
    }

    /// The epoch of the lowest validation loss and that loss.
    pub fn best_val_loss(&self) -> Option<(u64, f64)> {
        self.best(|m| m.val_loss, |a, b| a < b)
    }

    fn best(
        &self,
        value: impl Fn(&EpochMetrics) -> Option<f64>,
        better: impl Fn(f64, f64) -> bool,
    ) -> Option<(u64, f64)> {
        self.epochs
            .iter()
            .filter_map(|m| value(m).filter(|v| v.is_finite()).map(|v| (m.epoch, v)))
            .fold(None, |best, (e, v)| match best {
                Some((_, b)) if !better(v, b) => best,
                _ => Some((e, v)),
            })
    }

    /// Training and validation time of all its epochs.
    pub fn seconds(&self) -> f64 {
        self.epochs.iter().map(|m| m.seconds).filter(|s| s.is_finite()).sum()
    }
}

/// Mean and sample standard deviation (n - 1) of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let values: Vec<f64> = values.into_iter().collect();
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = match n {
            1 => 0.0,
            _ => (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt(),
        };
        Some(Stat { mean, sd, n })
    }

    /// `97.12 ± 0.21` with `scale` 100 and 2 decimals; the mean alone for
    /// a single run.
    fn show(&self, scale: f64, decimals: usize) -> String {
        match self.n {
            1 => format!("{:.decimals$}", self.mean * scale),
            _ => format!("{:.decimals$} ± {:.decimals$}", self.mean * scale, self.sd * scale),
        }
    }

    fn json(&self) -> Value {
        json!({"mean": self.mean, "sd": self.sd, "n": self.n})
    }
}

impl Variant {
    fn test_accuracy(&self) -> Option<Stat> {
        Stat::of(self.runs.iter().filter_map(|r| r.test).map(|(_, a)| a))
    }

    fn test_loss(&self) -> Option<Stat> {
        Stat::of(self.runs.iter().filter_map(|r| r.test).map(|(l, _)| l))
    }

    fn best_val_accuracy(&self) -> Option<Stat> {
        Stat::of(self.runs.iter().filter_map(Run::best_val_accuracy).map(|(_, a)| a))
    }

    fn best_val_loss(&self) -> Option<Stat> {
        Stat::of(self.runs.iter().filter_map(Run::best_val_loss).map(|(_, l)| l))
    }

    fn epochs(&self) -> Option<Stat> {
        Stat::of(self.runs.iter().map(|r| r.epochs.len() as f64))
    }

    fn seconds(&self) -> Option<Stat> {
        Stat::of(self.runs.iter().map(Run::seconds))
    }
}

/// A variant's name in a comparison's output: its cells, `act=relu,
/// bn=true` (the model's name bare), or the model's name when no column
/// tells the variants apart.
pub fn label(columns: &[String], cells: &[String], model: &str) -> String {
    if columns.is_empty() || cells.is_empty() {
        return model.to_string();
    }
    let named = columns
        .iter()
        .zip(cells)
        .map(|(c, v)| if c == "model" { v.clone() } else { format!("{c}={v}") });
    named.collect::<Vec<_>>().join(", ")
}

/// A duration as a table shows it: `8.1 s`, `2 min 05 s`.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let whole = seconds.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

impl Comparison {
    /// Whether every variant has an accuracy; a regression among them puts
    /// the comparison in terms of loss.
    fn accuracy(&self) -> bool {
        self.variants.iter().all(|v| v.accuracy)
    }

    /// The header and one row of cells per variant.
    fn rows(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header = match self.columns.is_empty() {
            true => vec!["model".to_string()],
            false => self.columns.clone(),
        };
        let accuracy = self.accuracy();
        header.extend(
            match accuracy {
                true => ["test accuracy %", "best val_accuracy %"],
                false => ["test loss", "best val_loss"],
            }
            .map(String::from),
        );
        header.extend(["epochs", "time per run", "params"].map(String::from));
        let missing = || "-".to_string();
        let rows = self
            .variants
            .iter()
            .map(|v| {
                let mut row = match self.columns.is_empty() {
                    true => vec![v.model.clone()],
                    false => v.cells.clone(),
                };
                let (test, best) = match accuracy {
                    true => (v.test_accuracy(), v.best_val_accuracy()),
                    false => (v.test_loss(), v.best_val_loss()),
                };
                let (scale, decimals) = if accuracy { (100.0, 2) } else { (1.0, 4) };
                row.push(test.map_or_else(missing, |s| s.show(scale, decimals)));
                row.push(best.map_or_else(missing, |s| s.show(scale, decimals)));
                row.push(v.epochs().map_or_else(missing, |s| match s.sd {
                    0.0 => format!("{}", s.mean),
                    _ => format!("{:.1}", s.mean),
                }));
                row.push(v.seconds().map_or_else(missing, |s| duration(s.mean)));
                row.push(group(v.weights));
                row
            })
            .collect();
        (header, rows)
    }

    /// The table in columns aligned with spaces, numbers to the right.
    pub fn text(&self) -> String {
        let (header, rows) = self.rows();
        let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let labels = header.len() - 5;
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| crate::summary::pad(c, width[i], i >= labels))
                .collect();
            cells.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = line(&header);
        out += &(width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ") + "\n");
        for row in &rows {
            out += &line(row);
        }
        out
    }

    /// The table in markdown, numbers aligned to the right.
    pub fn markdown(&self) -> String {
        let (header, rows) = self.rows();
        let labels = header.len() - 5;
        let cells = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = cells(&header);
        let rule: Vec<String> = (0..header.len())
            .map(|i| if i >= labels { "---:" } else { "---" }.to_string())
            .collect();
        out += &format!("|{}|\n", rule.join("|"));
        for row in &rows {
            out += &cells(row);
        }
        out
    }

    /// Everything the table shows, and every run behind it.
    pub fn json(&self) -> Value {
        let stat = |s: Option<Stat>| s.map_or(Value::Null, |s| s.json());
        let variants: Vec<Value> = self
            .variants
            .iter()
            .map(|v| {
                let runs: Vec<Value> = v
                    .runs
                    .iter()
                    .map(|r| {
                        let best_acc = r.best_val_accuracy();
                        let best_loss = r.best_val_loss();
                        json!({
                            "seed": r.seed,
                            "folder": r.folder.display().to_string(),
                            "epochs": r.epochs.len(),
                            "seconds": r.seconds(),
                            "test_loss": r.test.map(|t| t.0),
                            "test_accuracy": r.test.map(|t| t.1).filter(|a| a.is_finite()),
                            "best_val_accuracy": best_acc.map(|b| b.1),
                            "best_val_accuracy_epoch": best_acc.map(|b| b.0),
                            "best_val_loss": best_loss.map(|b| b.1),
                            "best_val_loss_epoch": best_loss.map(|b| b.0),
                        })
                    })
                    .collect();
                let cells: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(&v.cells)
                    .map(|(c, v)| (c.clone(), json!(v)))
                    .collect();
                let params: serde_json::Map<String, Value> =
                    v.params.iter().map(|(n, value)| (n.clone(), json!(value))).collect();
                json!({
                    "model": v.model,
                    "variant": cells,
                    "params": params,
                    "weights": v.weights,
                    "test_loss": stat(v.test_loss()),
                    "test_accuracy": stat(if v.accuracy { v.test_accuracy() } else { None }),
                    "best_val_loss": stat(v.best_val_loss()),
                    "best_val_accuracy": stat(if v.accuracy { v.best_val_accuracy() } else { None }),
                    "epochs": stat(v.epochs()),
                    "seconds": stat(v.seconds()),
                    "runs": runs,
                })
            })
            .collect();
        json!({ "columns": self.columns, "variants": variants })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_deviation_is_the_sample_one() {
        let s = Stat::of([0.96, 0.97, 0.98]).unwrap();
        assert!((s.mean - 0.97).abs() < 1e-12);
        assert!((s.sd - 0.01).abs() < 1e-12, "{}", s.sd);
        assert_eq!(s.show(100.0, 2), "97.00 ± 1.00");
        assert_eq!(Stat::of([0.5]).unwrap().show(100.0, 2), "50.00");
        assert_eq!(Stat::of([]), None);
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(duration(8.06), "8.1 s");
        assert_eq!(duration(125.4), "2 min 05 s");
    }
}
