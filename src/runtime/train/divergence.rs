//! The error of a run whose loss stopped being a number: where, what was
//! kept, and what to try.

use super::{Files, Settings};
use crate::runtime::Error;
use crate::runtime::optim::compact;

/// `saved` is the epochs and further steps of the weights on disk.
pub fn diverged(
    loss: f32,
    epoch: u64,
    step: usize,
    settings: &Settings,
    files: &Files,
    saved: Option<(u64, usize)>,
) -> Error {
    let lr = settings.optimizer.learning_rate();
    let path = files.weights.display();
    let kept = match saved {
        None => "no epoch had completed, so no weights were saved".to_string(),
        Some((done, 0)) => format!("the weights of epoch {done}, the last good ones, are in {path}"),
        Some((done, steps)) => format!(
            "the weights of epoch {} up to step {steps}, the last good ones, are in {path}",
            done + 1
        ),
    };
    Error::Message(format!(
        "the loss became {loss} at epoch {epoch}, step {step}: training diverged\n  = note: {kept}\n  = help: \
         try a lower learning rate, e.g. `--lr {}`",
        compact(lr / 10.0)
    ))
}
