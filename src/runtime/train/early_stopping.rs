//! Keras's `EarlyStopping(monitor="val_loss", patience=p,
//! restore_best_weights=True)`.

use ndarray::ArrayD;

/// Stops once `patience` epochs in a row bring no lower validation loss,
/// keeping the best epoch's weights.
pub struct EarlyStopping {
    pub patience: usize,
    /// The epoch of the lowest validation loss so far.
    pub best: Option<Best>,
}

/// An epoch's validation loss and the weights it ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct Best {
    pub epoch: u64,
    pub val_loss: f64,
    pub weights: Vec<ArrayD<f32>>,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> EarlyStopping {
        EarlyStopping { patience, best: None }
    }

    /// Records an epoch's validation loss; true when training should stop.
    pub fn update(&mut self, epoch: u64, val_loss: f64, weights: &[ArrayD<f32>]) -> bool {
        if self.best.as_ref().is_some_and(|b| val_loss >= b.val_loss) {
            return self.exhausted(epoch);
        }
        self.best = Some(Best {
            epoch,
            val_loss,
            weights: weights.to_vec(),
        });
        false
    }

    /// Whether the epochs up to `epoch` have used up the patience.
    pub fn exhausted(&self, epoch: u64) -> bool {
        self.best_epoch()
            .is_some_and(|e| epoch.saturating_sub(e) >= self.patience as u64)
    }

    pub fn best_epoch(&self) -> Option<u64> {
        self.best.as_ref().map(|b| b.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn weights(v: f32) -> Vec<ArrayD<f32>> {
        vec![ArrayD::from_elem(IxDyn(&[2]), v)]
    }

    #[test]
    fn early_stopping_waits_patience_epochs_and_keeps_the_best() {
        let mut stop = EarlyStopping::new(2);
        assert!(!stop.update(1, 0.9, &weights(1.0)));
        assert!(!stop.update(2, 0.5, &weights(2.0)));
        // Not lower (equal counts as no improvement, as in Keras).
        assert!(!stop.update(3, 0.5, &weights(3.0)));
        assert!(stop.update(4, 0.7, &weights(4.0)), "two epochs without improvement");
        let best = stop.best.as_ref().unwrap();
        assert_eq!((best.epoch, best.val_loss), (2, 0.5));
        assert_eq!(best.weights[0][[0]], 2.0);
    }

    #[test]
    fn an_improvement_resets_the_wait() {
        let mut stop = EarlyStopping::new(2);
        assert!(!stop.update(1, 1.0, &weights(1.0)));
        assert!(!stop.update(2, 1.1, &weights(2.0)));
        assert!(!stop.update(3, 0.8, &weights(3.0)));
        assert!(!stop.update(4, 0.9, &weights(4.0)));
        assert!(stop.update(5, 0.85, &weights(5.0)));
        assert_eq!(stop.best_epoch(), Some(3));
    }

    #[test]
    fn patience_is_used_up_counting_from_the_best_epoch() {
        let mut stop = EarlyStopping::new(2);
        assert!(!stop.exhausted(4), "no best epoch yet");
        stop.update(3, 0.5, &weights(3.0));
        assert!(!stop.exhausted(4));
        assert!(stop.exhausted(5));
    }
}
