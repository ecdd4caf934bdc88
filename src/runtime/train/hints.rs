//! What a run says when its numbers would puzzle someone new to them.

use crate::parse::ast::LayerKind;
use crate::runtime::metrics::EpochMetrics;
use crate::shape::Checked;

/// How far below the training accuracy the validation accuracy must be
/// for the batchnorm hint: a gap no honest overfitting opens in a few
/// epochs.
const GAP: f64 = 0.1;

/// The share of its starting values (mean 0, variance 1) a moving
/// statistic may still hold for the hint: past it, the lag is no longer
/// the likely cause.
const STILL_LAGGING: f64 = 0.01;

/// Batchnorm normalizes validation data with its moving statistics, which
/// start at mean 0 and variance 1 and move towards the batches' by only
/// `1 - momentum` per step (Keras: 0.99). Early in a run they still lag the
/// statistics the network trains with, and the validation accuracy falls
/// far below the training accuracy although the network learned well;
/// Keras users meet this and take it for overfitting. The hint, when the
/// epoch just done looks like that, with `iterations` steps taken.
pub fn batchnorm_lag(checked: &Checked, iterations: u64, epoch: &EpochMetrics) -> Option<String> {
    // Frozen layers use their moving statistics in training too: no gap.
    let momentum = checked
        .model
        .layers
        .iter()
        .filter(|l| l.trainable)
        .filter_map(|l| match &l.kind {
            LayerKind::BatchNorm(b) => Some(b.momentum),
            _ => None,
        })
        .reduce(f64::max)?;
    let val_accuracy = epoch.val_accuracy.filter(|a| a.is_finite())?;
    let gap = epoch.accuracy - val_accuracy;
    if !gap.is_finite() || gap <= GAP {
        return None;
    }
    let left = momentum.powf(iterations as f64);
    if left <= STILL_LAGGING {
        return None;
    }
    let catch_up = (STILL_LAGGING.ln() / momentum.ln()).ceil();
    Some(format!(
        "note: val_accuracy {val_accuracy:.4} is far below accuracy {:.4}, and with batchnorm this early that is \
         likely not overfitting: validation normalizes with the moving statistics, which follow the batches' only \
         slowly (momentum {momentum}: after {iterations} steps they still hold {:.0} % of their starting mean 0 and \
         variance 1). The gap closes as they catch up, in about {catch_up} steps; `batchnorm momentum=0.9` makes \
         them catch up ten times sooner",
        epoch.accuracy,
        100.0 * left
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(source: &str) -> Checked {
        let model = crate::parse::parse("m.cnn", source).unwrap_or_else(|d| panic!("{d}"));
        crate::shape::check(model, "m.cnn", source).unwrap_or_else(|d| panic!("{d}"))
    }

    fn epoch(accuracy: f64, val_accuracy: Option<f64>) -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            loss: 0.5,
            accuracy,
            val_loss: val_accuracy.map(|_| 1.0),
            val_accuracy,
            seconds: 1.0,
            samples_per_sec: 100.0,
        }
    }

    const WITH: &str = "input 4\ndense 8\nbatchnorm\ndense 2 activation=softmax\n";

    #[test]
    fn a_far_lower_validation_accuracy_early_with_batchnorm_is_explained() {
        let hint = batchnorm_lag(&checked(WITH), 125, &epoch(0.93, Some(0.41))).expect("a hint");
        assert!(
            hint.contains("val_accuracy 0.4100 is far below accuracy 0.9300"),
            "{hint}"
        );
        // 0.99^125 = 0.285.
        assert!(
            hint.contains("momentum 0.99: after 125 steps they still hold 28 %"),
            "{hint}"
        );
        assert!(hint.contains("in about 459 steps"), "{hint}");
    }

    #[test]
    fn no_hint_when_it_would_not_explain_the_numbers() {
        let with = checked(WITH);
        // A small gap, a late epoch, no validation.
        assert_eq!(batchnorm_lag(&with, 125, &epoch(0.93, Some(0.88))), None);
        assert_eq!(batchnorm_lag(&with, 500, &epoch(0.93, Some(0.41))), None);
        assert_eq!(batchnorm_lag(&with, 125, &epoch(0.93, None)), None);
        // No batchnorm, or a frozen one.
        let without = checked("input 4\ndense 8\ndense 2 activation=softmax\n");
        assert_eq!(batchnorm_lag(&without, 125, &epoch(0.93, Some(0.41))), None);
        let frozen = checked("input 4\ndense 8\nbatchnorm trainable=false\ndense 2 activation=softmax\n");
        assert_eq!(batchnorm_lag(&frozen, 125, &epoch(0.93, Some(0.41))), None);
        // A faster momentum has caught up by then.
        let fast = checked("input 4\ndense 8\nbatchnorm momentum=0.9\ndense 2 activation=softmax\n");
        assert_eq!(batchnorm_lag(&fast, 125, &epoch(0.93, Some(0.41))), None);
    }
}
