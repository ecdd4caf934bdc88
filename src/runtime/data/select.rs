//! Choosing the samples to load (`--classes`, `--per-class`), the same for
//! IDX files and image folders: a subset of the classes, relabelled 0, 1,
//! ... in the order given, so that a model's head has one unit per chosen
//! class; and at most so many training samples of each class, drawn with a
//! seed so that a run and its comparisons see the same ones.

use super::{DataError, Dataset};
use crate::diag::closest;
use crate::runtime::purpose;
use crate::runtime::rng::Rng;
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    /// The classes to keep, by name (a digit for IDX data, a folder's name
    /// for images); empty for all of them.
    pub classes: Vec<String>,
    /// At most this many training samples of each class (validation and
    /// test samples are all kept).
    pub per_class: Option<usize>,
    /// Draws the samples `per_class` keeps.
    pub seed: u64,
}

impl Selection {
    /// The new label of each of the data's classes, `names` in label order:
    /// its place in `classes`, or `None` if left out.
    pub(super) fn labels(&self, names: &[String], dir: &Path) -> Result<Vec<Option<usize>>, DataError> {
        if self.classes.is_empty() {
            return Ok((0..names.len()).map(Some).collect());
        }
        let mut labels = vec![None; names.len()];
        for (label, name) in self.classes.iter().enumerate() {
            let Some(old) = names.iter().position(|n| n == name) else {
                let near = closest(name, names.iter().map(String::as_str));
                let help = match near {
                    Some(near) => format!("did you mean `{near}`? "),
                    None => String::new(),
                };
                let shown: Vec<&str> = names.iter().map(String::as_str).take(20).collect();
                return Err(
                    DataError::new(dir, format!("--classes names `{name}`, a class the data does not have"))
                        .help(format!("{help}its classes: {}", shown.join(", "))),
                );
            };
            if labels[old].is_some() {
                return Err(DataError::new(dir, format!("--classes names `{name}` twice"))
                    .help("name each class once, in the order of the model's outputs"));
            }
            labels[old] = Some(label);
        }
        Ok(labels)
    }

    /// The class names the selection leaves, by new label; `names` if it
    /// keeps them all.
    pub(super) fn names(&self, names: Vec<String>) -> Vec<String> {
        if self.classes.is_empty() {
            names
        } else {
            self.classes.clone()
        }
    }

    /// A draw of the training samples each class keeps.
    pub(super) fn draw(&self) -> Draw {
        Draw {
            limit: self.per_class,
            rng: Rng::stream(self.seed, purpose::SELECT),
        }
    }
}

/// `data` with at most `per_class` samples of each label.
pub(super) fn per_class(selection: &Selection, data: Dataset) -> Dataset {
    if selection.per_class.is_none() {
        return data;
    }
    let mut draw = selection.draw();
    let labels = data.labels.iter().max().map_or(0, |&l| l + 1);
    let mut kept = Vec::new();
    for label in 0..labels {
        let of_label: Vec<usize> = (0..data.len()).filter(|&i| data.labels[i] == label).collect();
        kept.extend(draw.keep(of_label.len()).into_iter().map(|i| of_label[i]));
    }
    kept.sort_unstable();
    data.subset(&kept)
}

/// The samples kept of each class in turn, classes taken in label order.
pub(super) struct Draw {
    limit: Option<usize>,
    rng: Rng,
}

impl Draw {
    /// Which of a class's `n` samples are kept, in their order.
    pub(super) fn keep(&mut self, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let Some(limit) = self.limit.filter(|&l| l < n) else {
            return all;
        };
        self.rng.shuffle(&mut all);
        all.truncate(limit);
        all.sort_unstable();
        all
    }
}
