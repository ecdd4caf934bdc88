//! What a run shows while it trains: a progress bar per epoch, and a line
//! per epoch done.

use super::Progress;
use crate::runtime::metrics::EpochMetrics;
use indicatif::{ProgressBar, ProgressStyle};

/// The bar of epoch `epoch`, at the step `done` has reached.
pub fn bar(epoch: u64, epochs: usize, steps: usize, done: &Progress) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len}  {msg}  ETA {eta}")
        .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar.set_position(done.step as u64);
    // The steps done before an interrupt took no time in this run.
    bar.reset_eta();
    bar
}

/// The running loss, accuracy and speed of the epoch so far.
pub fn show(bar: &ProgressBar, done: &Progress) {
    bar.set_message(format!(
        "loss {:.4}  accuracy {:.4}  {:.0} samples/s",
        done.loss_sum / done.seen as f64,
        done.correct as f64 / done.seen as f64,
        done.seen as f64 / done.seconds.max(1e-9)
    ));
    bar.inc(1);
}

pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let mut s = format!("epoch {}/{epochs}: loss {:.4}", m.epoch, m.loss);
    if !m.accuracy.is_nan() {
        s += &format!(" - accuracy {:.4}", m.accuracy);
    }
    if let Some(v) = m.val_loss {
        s += &format!(" - val_loss {v:.4}");
    }
    if let Some(v) = m.val_accuracy.filter(|v| !v.is_nan()) {
        s += &format!(" - val_accuracy {v:.4}");
    }
    s + &format!(" ({:.1} s, {:.0} samples/s)", m.seconds, m.samples_per_sec)
}
