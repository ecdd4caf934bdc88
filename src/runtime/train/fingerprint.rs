//! What a run was trained on, recorded in its checkpoint so that a resumed
//! run continues only on the same data.
//!
//! Each split is summed up by its sample count and a CRC-32 of its decoded
//! samples and labels, in order. That catches what a hash of file names and
//! sizes would (a file added, removed, renamed or replaced changes the
//! samples or their order) and edits that keep a file's size, and it does
//! not depend on where the folder is: moving a dataset does not stop a
//! resume, changing it does.

use crate::runtime::data::{Dataset, Splits};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub classes: Vec<String>,
    /// `None` for none (or 0).
    pub validation_split: Option<f64>,
    pub train: Part,
    pub val: Option<Part>,
    pub test: Option<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub samples: usize,
    pub crc32: u32,
}

impl Part {
    fn of(data: &Dataset) -> Part {
        let mut crc = crc32fast::Hasher::new();
        for &label in &data.labels {
            crc.update(&(label as u64).to_le_bytes());
        }
        // A sample at a time: its bytes, not the whole dataset's, in memory.
        let mut bytes = Vec::with_capacity(4 * data.sample_len());
        for i in 0..data.len() {
            bytes.clear();
            bytes.extend(data.sample(i).iter().flat_map(|x| x.to_le_bytes()));
            crc.update(&bytes);
        }
        Part {
            samples: data.len(),
            crc32: crc.finalize(),
        }
    }
}

impl Fingerprint {
    pub fn of(splits: &Splits, validation_split: Option<f64>) -> Fingerprint {
        Fingerprint {
            classes: splits.classes.clone(),
            validation_split: validation_split.filter(|&f| f != 0.0),
            train: Part::of(&splits.train),
            val: splits.val.as_ref().map(Part::of),
            test: splits.test.as_ref().map(Part::of),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::json!(self).to_string()
    }

    pub fn from_json(text: &str) -> Result<Fingerprint, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// What differs in `now`, the data of the resumed run, in words.
    pub fn changes(&self, now: &Fingerprint) -> Vec<String> {
        let mut changes = Vec::new();
        if self.classes != now.classes {
            changes.push(format!(
                "the classes differ: {}",
                class_changes((&self.classes, "the checkpoint"), (&now.classes, "the data"))
            ));
        }
        if self.validation_split != now.validation_split {
            let split = |s: Option<f64>| s.map_or_else(|| "none".to_string(), |f| f.to_string());
            changes.push(format!(
                "the validation split was {}, now {}",
                split(self.validation_split),
                split(now.validation_split)
            ));
        }
        let parts = [
            ("training", Some(self.train), Some(now.train)),
            ("validation", self.val, now.val),
            ("test", self.test, now.test),
        ];
        let count = |p: Option<Part>| p.map_or_else(|| "no".to_string(), |p| p.samples.to_string());
        for (name, then, now) in parts {
            match (then, now) {
                (Some(a), Some(b)) if a.samples == b.samples && a.crc32 != b.crc32 => changes.push(format!(
                    "the {name} samples are not the same (the same count, {}, but other images, labels or order)",
                    a.samples
                )),
                (a, b) if a.map(|p| p.samples) != b.map(|p| p.samples) => {
                    changes.push(format!("the {name} data had {} samples, now {}", count(a), count(b)))
                }
                _ => {}
            }
        }
        changes
    }
}

/// How two lists of class names, each with the name of where it comes
/// from, differ: by label where they have as many, else both lists, cut
/// short where long.
pub fn class_changes((a, in_a): (&[String], &str), (b, in_b): (&[String], &str)) -> String {
    const SHOWN: usize = 8;
    if a.len() != b.len() {
        let list = |c: &[String]| {
            let mut shown = c.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if c.len() > SHOWN {
                shown += &format!(" and {} more", c.len() - SHOWN);
            }
            shown
        };
        return format!("{in_a} has {} ({}), {in_b} {} ({})", a.len(), list(a), b.len(), list(b));
    }
    let differ: Vec<String> = a
        .iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(label, (x, y))| format!("label {label} is `{x}` in {in_a}, `{y}` in {in_b}"))
        .collect();
    let mut text = differ.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if differ.len() > 3 {
        text += &format!("; {} more labels differ", differ.len() - 3);
    }
    text
}
