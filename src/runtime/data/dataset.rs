//! Samples in memory, in the model's input layout, and the batches and epoch
//! orders cut from them.

use crate::runtime::rng::Rng;
use ndarray::{ArrayD, IxDyn};

#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// One sample's shape, the model's input shape: `[28, 28, 1]` or `[784]`.
    pub shape: Vec<usize>,
    /// The samples back to back, each in H, W, C order, scaled to [0, 1].
    pub inputs: Vec<f32>,
    /// Each sample's class index.
    pub labels: Vec<usize>,
    /// Units of the model's output, the width of a target row.
    pub outputs: usize,
}

/// A batch in the layout the model reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `[n, ...shape]`, NHWC for images.
    pub inputs: ArrayD<f32>,
    /// `[n, outputs]`: one-hot rows, or the label itself (0 or 1) when the
    /// model has a single output unit (binary cross-entropy).
    pub targets: ArrayD<f32>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn sample(&self, index: usize) -> &[f32] {
        let n = self.sample_len();
        &self.inputs[index * n..(index + 1) * n]
    }

    /// Gathers the samples at `indices` (e.g. a chunk of `epoch_order`) into
    /// contiguous buffers.
    pub fn batch(&self, indices: &[usize]) -> Batch {
        let mut shape = vec![indices.len()];
        shape.extend(&self.shape);
        let mut inputs = ArrayD::zeros(IxDyn(&shape));
        let gathered = indices.iter().flat_map(|&i| self.sample(i));
        for (to, from) in inputs.iter_mut().zip(gathered) {
            *to = *from;
        }
        let targets = ArrayD::from_shape_fn(IxDyn(&[indices.len(), self.outputs]), |at| {
            self.target(indices[at[0]], at[1])
        });
        Batch { inputs, targets }
    }

    fn target(&self, sample: usize, unit: usize) -> f32 {
        let label = self.labels[sample];
        let on = if self.outputs == 1 { label == 1 } else { label == unit };
        f32::from(u8::from(on))
    }

    /// A fresh random order of all samples, for one epoch. The caller owns
    /// the stream (`purpose::SHUFFLE`), so a seed fixes every epoch's order.
    pub fn epoch_order(&self, rng: &mut Rng) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        rng.shuffle(&mut order);
        order
    }

    /// The samples at `indices`, in that order.
    pub(super) fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            shape: self.shape.clone(),
            inputs: indices.iter().flat_map(|&i| self.sample(i)).copied().collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            outputs: self.outputs,
        }
    }

    /// Moves the samples from `at` on into a new dataset.
    pub(super) fn split_off(&mut self, at: usize) -> Dataset {
        Dataset {
            shape: self.shape.clone(),
            inputs: self.inputs.split_off(at * self.sample_len()),
            labels: self.labels.split_off(at),
            outputs: self.outputs,
        }
    }
}
