//! The error of a run whose loss stopped being a number: where, what was
//! kept, what the weights were like when the run started, and what to try.

use super::{Files, Settings, State};
use crate::ir::VarDecl;
use crate::runtime::Error;
use crate::runtime::optim::compact;

/// What the weights were when this run (or its resumption) began: a loss
/// that is not finite before any update, or from weights already not
/// finite, has another cause than the learning rate.
pub struct Start {
    /// The weights that held NaN or infinite values, and how many.
    not_finite: Vec<(String, usize)>,
    iterations: u64,
}

impl Start {
    pub fn of(state: &State, vars: &[VarDecl]) -> Start {
        let not_finite = state.values[..state.weights]
            .iter()
            .zip(vars)
            .filter_map(|(value, var)| {
                let count = value.iter().filter(|x| !x.is_finite()).count();
                (count > 0).then(|| (var.name.clone(), count))
            })
            .collect();
        Start {
            not_finite,
            iterations: state.iterations,
        }
    }
}

/// `saved` is the epochs and further steps of the weights on disk;
/// `iterations` the updates made before the step whose loss diverged.
pub struct Divergence<'a> {
    pub loss: f32,
    pub epoch: u64,
    pub step: usize,
    pub iterations: u64,
    pub saved: Option<(u64, usize)>,
    pub start: &'a Start,
}

pub fn diverged(d: Divergence, settings: &Settings, files: &Files) -> Error {
    let path = files.weights.display();
    let kept = match d.saved {
        None => "no epoch had completed, so no weights were saved".to_string(),
        Some((done, 0)) => format!("the weights of epoch {done}, the last good ones, are in {path}"),
        Some((done, steps)) => format!(
            "the weights of epoch {} up to step {steps}, the last good ones, are in {path}",
            done + 1
        ),
    };
    let (cause, help) = if !d.start.not_finite.is_empty() {
        let which: Vec<String> = d
            .start
            .not_finite
            .iter()
            .map(|(name, n)| format!("{name} ({n} values)"))
            .collect();
        (
            format!(
                "the weights were not finite when training started: {}",
                which.join(", ")
            ),
            "give those layers finite initial values (an initializer's scale near float32's limit overflows)"
                .to_string(),
        )
    } else if d.iterations == d.start.iterations {
        (
            "the weights were finite when training started, and this was the first step: the loss of the \
             first batch, before any update, was not finite, so the learning rate is not the cause"
                .to_string(),
            "look for initial values so large that the forward pass overflows float32, or for inputs that \
             are not finite"
                .to_string(),
        )
    } else {
        (
            format!(
                "the weights were finite when training started; {} updates were made before this step",
                d.iterations - d.start.iterations
            ),
            format!(
                "try a lower learning rate, e.g. `--lr {}`",
                compact(settings.optimizer.learning_rate() / 10.0)
            ),
        )
    };
    Error::Message(format!(
        "the loss became {} at epoch {}, step {}: training diverged\n  = note: {kept}\n  = note: {cause}\n  = help: {help}",
        d.loss, d.epoch, d.step
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::train::Progress;
    use ndarray::ArrayD;

    #[test]
    fn the_start_names_each_weight_that_is_not_finite() {
        let var = |name: &str| VarDecl {
            name: name.into(),
            shape: vec![3],
            trainable: true,
        };
        let values = vec![
            ArrayD::from_shape_vec(vec![3], vec![1.0, f32::NAN, f32::INFINITY]).unwrap(),
            ArrayD::from_shape_vec(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
            // An optimizer slot: not one of the model's weights.
            ArrayD::from_shape_vec(vec![3], vec![f32::NAN; 3]).unwrap(),
        ];
        let state = State {
            values,
            weights: 2,
            iterations: 7,
            epoch: 0,
            progress: Progress::default(),
        };
        let start = Start::of(
            &state,
            &[var("dense/kernel"), var("dense/bias"), var("dense/kernel/momentum")],
        );
        assert_eq!(start.not_finite, vec![("dense/kernel".to_string(), 2)]);
        assert_eq!(start.iterations, 7);
    }
}
