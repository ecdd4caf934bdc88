//! The learning-curve PNG: a valid image of the documented size, with a
//! curve for training and, when there is validation data, one for it.

mod common;

use cnnc::runtime::metrics::EpochMetrics;
use cnnc::runtime::plot::{HEIGHT, PlotError, WIDTH, write_learning_curves};
use common::Scratch;
use image::RgbImage;
use std::path::Path;

fn run(epochs: u64, validation: bool) -> Vec<EpochMetrics> {
    (1..=epochs)
        .map(|epoch| {
            let e = epoch as f64;
            EpochMetrics {
                epoch,
                loss: 0.05 + 1.2 / e,
                accuracy: 0.99 - 0.5 / (e + 1.0),
                val_loss: validation.then_some(0.1 + 1.0 / e + 0.004 * e),
                val_accuracy: validation.then_some(0.97 - 0.5 / (e + 1.0)),
                seconds: 10.0,
                samples_per_sec: 3000.0,
            }
        })
        .collect()
}

fn drawn(path: &Path) -> RgbImage {
    let bytes = std::fs::read(path).unwrap();
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()))
        .to_rgb8()
}

/// Pixels close to one of the curve colours.
fn pixels_near(image: &RgbImage, [r, g, b]: [u8; 3]) -> usize {
    image
        .pixels()
        .filter(|p| p.0.iter().zip([r, g, b]).all(|(&a, b)| a.abs_diff(b) < 24))
        .count()
}

const TRAINING: [u8; 3] = [31, 119, 180];
const VALIDATION: [u8; 3] = [255, 127, 14];

fn check(epochs: u64, validation: bool) {
    let dir = Scratch::new(&format!("plot-{epochs}-{validation}"));
    let path = dir.join("curves.png");
    write_learning_curves(&path, "mnist_cnn", &run(epochs, validation)).unwrap();
    let image = drawn(&path);
    assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
    let (training, validated) = (pixels_near(&image, TRAINING), pixels_near(&image, VALIDATION));
    // The legend's sample line is about 40 pixels; each epoch adds a dot
    // and a stretch of line.
    let curve = 40 + 15 * epochs as usize;
    assert!(training > curve, "no training curve: {training} pixels");
    if validation {
        assert!(validated > curve, "no validation curve: {validated} pixels");
    } else {
        assert_eq!(validated, 0, "a validation curve without validation data");
    }
    // Text is drawn with the bundled font: the title row is not blank.
    let dark_in_title = (0..WIDTH)
        .flat_map(|x| (0..40).map(move |y| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0.iter().all(|&c| c < 100))
        .count();
    assert!(dark_in_title > 50, "no title text");
}

#[test]
fn one_epoch_with_validation() {
    check(1, true);
}

#[test]
fn one_epoch_without_validation() {
    check(1, false);
}

#[test]
fn thirty_epochs_with_validation() {
    check(30, true);
}

#[test]
fn thirty_epochs_without_validation() {
    check(30, false);
}

#[test]
fn a_diverged_run_still_plots() {
    let dir = Scratch::new("plot-nan");
    let path = dir.join("curves.png");
    let mut epochs = run(5, true);
    epochs[3].loss = f64::NAN;
    epochs[4].loss = f64::INFINITY;
    write_learning_curves(&path, "mnist_cnn", &epochs).unwrap();
    assert_eq!(drawn(&path).dimensions(), (WIDTH, HEIGHT));
}

#[test]
fn an_unwritable_path_is_named() {
    let dir = Scratch::new("plot-nodir");
    let path = dir.join("missing/curves.png");
    let e = write_learning_curves(&path, "m", &run(2, false)).unwrap_err();
    assert!(matches!(e, PlotError::File(_)), "{e:?}");
    assert!(e.to_string().contains(&format!("`{}`", path.display())), "{e}");
}

/// The green dashed line of the best epoch (lowest val_loss), in both
/// panels: the mean column of its pixels in the left panel.
fn best_column(epochs: &[EpochMetrics]) -> Option<f64> {
    let dir = Scratch::new("plot-best");
    let path = dir.join("curves.png");
    write_learning_curves(&path, "m", epochs).unwrap();
    let image = drawn(&path);
    let [r, g, b] = [44u8, 160, 44];
    let columns: Vec<u32> = image
        .enumerate_pixels()
        .filter(|(x, _, p)| *x < WIDTH / 2 && p.0.iter().zip([r, g, b]).all(|(&a, b)| a.abs_diff(b) < 24))
        .map(|(x, _, _)| x)
        .collect();
    (columns.len() > 40).then(|| columns.iter().map(|&x| f64::from(x)).sum::<f64>() / columns.len() as f64)
}

#[test]
fn the_best_epoch_is_marked_where_the_validation_loss_is_lowest() {
    let with_best_at = |best: u64| {
        let mut epochs = run(10, true);
        for m in &mut epochs {
            m.val_loss = Some(0.5 + 0.05 * (m.epoch as f64 - best as f64).abs());
        }
        epochs
    };
    let early = best_column(&with_best_at(3)).expect("no best-epoch line");
    let late = best_column(&with_best_at(8)).expect("no best-epoch line");
    // Epochs 0 to 11 span the panel's plotting area: five epochs apart is
    // well over a fifth of the panel.
    assert!(late - early > f64::from(WIDTH / 2) / 5.0, "{early} then {late}");
    assert_eq!(cnnc::runtime::plot::best_epoch(&with_best_at(8)), Some(8));
    assert_eq!(
        best_column(&run(10, false)),
        None,
        "a best epoch without validation data"
    );
}
