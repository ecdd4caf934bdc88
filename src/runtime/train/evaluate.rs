//! Loss, accuracy and the confusion matrix of a model over a whole split.

use super::State;
use crate::parse::ast::Loss;
use crate::runtime::Error;
use crate::runtime::data::Dataset;
use crate::runtime::engine::{Engine, Step};
use crate::shape::Checked;
use ndarray::ArrayD;

/// Loss and accuracy over a whole split.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    /// NaN for a regression loss, which has no accuracy.
    pub accuracy: f64,
    pub n: usize,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Predicted classes: the arg-max of each row, or the sigmoid threshold at
/// 0.5 for a single unit.
pub fn classes_of(prediction: &ArrayD<f32>) -> Vec<usize> {
    let width = prediction.shape().last().copied().unwrap_or(1);
    let flat: Vec<f32> = prediction.iter().copied().collect();
    flat.chunks(width.max(1))
        .map(|row| match row {
            [p] => usize::from(*p > 0.5),
            _ => {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                    )
                    .0
            }
        })
        .collect()
}

pub fn has_accuracy(checked: &Checked) -> bool {
    checked.loss() != Loss::MeanSquaredError
}

/// Evaluates `data` in batches: loss, accuracy and confusion matrix.
pub fn evaluate(
    checked: &Checked,
    engine: &mut dyn Engine,
    state: &mut State,
    data: &Dataset,
    batch_size: usize,
) -> Result<Evaluation, Error> {
    let classes = data.outputs.max(2);
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut loss, mut n) = (0.0f64, 0usize);
    let order: Vec<usize> = (0..data.len()).collect();
    for chunk in order.chunks(batch_size.max(1)) {
        let batch = data.batch(chunk);
        let out = engine.evaluate(
            &mut state.values[..state.weights],
            &Step::plain(batch.inputs.view(), Some(batch.targets.view())),
        )?;
        loss += f64::from(out.loss) * chunk.len() as f64;
        n += chunk.len();
        for (&i, p) in chunk.iter().zip(classes_of(&out.prediction)) {
            if let Some(row) = confusion.get_mut(data.labels[i]) {
                row[p.min(classes - 1)] += 1;
            }
        }
    }
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let accuracy = if has_accuracy(checked) {
        correct as f64 / n.max(1) as f64
    } else {
        f64::NAN
    };
    Ok(Evaluation {
        loss: loss / n.max(1) as f64,
        accuracy,
        n,
        confusion,
    })
}
