//! Data augmentation: Keras 3's RandomFlip, RandomRotation and
//! RandomTranslation. A flipped image is the image mirrored, pixel for
//! pixel; rotations and shifts move a lone pixel where they should, and
//! equal Keras 3's own layers for given angles and shifts with every fill
//! mode and interpolation (tests/fixtures/keras/make_augment.py); the same
//! seed draws the same batches. `tests/resume.rs` and `tests/kill.rs`
//! resume augmented runs bit for bit.

use cnnc::parse::ast::{Augment, FillMode, Flip, Interpolation};
use cnnc::runtime::checkpoint;
use cnnc::runtime::data::augment::{self, Transform};
use cnnc::runtime::purpose;
use cnnc::runtime::rng::Rng;
use ndarray::{ArrayD, IxDyn};
use std::path::Path;

fn settings() -> Augment {
    Augment {
        flip: None,
        rotation: None,
        translation: None,
        fill_mode: FillMode::Reflect,
        interpolation: Interpolation::Bilinear,
        fill_value: 0.0,
        span: Default::default(),
    }
}

/// A batch whose every value is distinct: `[n, h, w, c]`.
fn numbered(shape: &[usize]) -> ArrayD<f32> {
    let mut i = 0.0;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        i += 1.0;
        i
    })
}

#[test]
fn a_flipped_image_is_the_image_mirrored_pixel_for_pixel() {
    let (h, w, c) = (5, 6, 3);
    let input = numbered(&[2, h, w, c]);
    for (flip, mirror) in [
        (Flip::Horizontal, [false, true]),
        (Flip::Vertical, [true, false]),
        (Flip::HorizontalAndVertical, [true, true]),
    ] {
        let augment = Augment {
            flip: Some(flip),
            ..settings()
        };
        let mut batch = input.clone();
        let flips = [true, false].map(|flip| Transform {
            flip,
            ..Transform::default()
        });
        augment::apply(&augment, &mut batch, &flips);
        for y in 0..h {
            for x in 0..w {
                let from_y = if mirror[0] { h - 1 - y } else { y };
                let from_x = if mirror[1] { w - 1 - x } else { x };
                for ch in 0..c {
                    assert_eq!(
                        batch[[0, y, x, ch]],
                        input[[0, from_y, from_x, ch]],
                        "{flip:?} at ({y}, {x}, {ch})"
                    );
                    assert_eq!(batch[[1, y, x, ch]], input[[1, y, x, ch]], "{flip:?} unflipped");
                }
            }
        }
    }
}

/// A 7x7 image, dark but for one pixel at row 1, column 2.
fn lone_pixel() -> ArrayD<f32> {
    let mut image = ArrayD::zeros(IxDyn(&[1, 7, 7, 1]));
    image[[0, 1, 2, 0]] = 1.0;
    image
}

fn lit(image: &ArrayD<f32>) -> Vec<(usize, usize, f32)> {
    let mut lit = Vec::new();
    for y in 0..7 {
        for x in 0..7 {
            let v = image[[0, y, x, 0]];
            if v.abs() > 1e-6 {
                lit.push((y, x, v));
            }
        }
    }
    lit
}

#[test]
fn shifts_move_a_pixel_down_and_right_by_whole_pixels() {
    for interpolation in [Interpolation::Bilinear, Interpolation::Nearest] {
        let augment = Augment {
            translation: Some([0.5, 0.5]),
            fill_mode: FillMode::Constant,
            interpolation,
            ..settings()
        };
        let mut image = lone_pixel();
        let shift = Transform {
            shift: [2.0, 3.0],
            ..Transform::default()
        };
        augment::apply(&augment, &mut image, &[shift]);
        assert_eq!(lit(&image), [(3, 5, 1.0)], "{interpolation:?}");
    }
    // Half a pixel to the left, bilinear: the pixel is shared with its
    // left neighbour.
    let augment = Augment {
        translation: Some([0.5, 0.5]),
        fill_mode: FillMode::Constant,
        ..settings()
    };
    let mut image = lone_pixel();
    let shift = Transform {
        shift: [0.0, -0.5],
        ..Transform::default()
    };
    augment::apply(&augment, &mut image, &[shift]);
    assert_eq!(lit(&image), [(1, 1, 0.5), (1, 2, 0.5)]);
}

#[test]
fn a_quarter_turn_moves_a_pixel_counter_clockwise_about_the_centre() {
    let augment = Augment {
        rotation: Some(0.25),
        fill_mode: FillMode::Constant,
        interpolation: Interpolation::Nearest,
        ..settings()
    };
    // From 2 rows above and 1 column left of the centre (3, 3) to 2
    // columns left of it and 1 row below: a quarter turn counter-clockwise
    // as the image is seen.
    for (degrees, at) in [(90.0, (4, 1)), (-90.0, (2, 5)), (180.0, (5, 4))] {
        let mut image = lone_pixel();
        let turn = Transform {
            degrees,
            ..Transform::default()
        };
        augment::apply(&augment, &mut image, &[turn]);
        assert_eq!(lit(&image), [(at.0, at.1, 1.0)], "{degrees} degrees");
    }
}

/// Each of make_augment.py's cases: Keras's output for a given angle or
/// shift, with each fill mode (constant filling 0.5) and interpolation.
#[test]
fn rotations_and_shifts_equal_keras_s_layers() {
    let path = Path::new("tests/fixtures/keras/augment.safetensors");
    let (h, w, c) = (6, 9, 2);
    let mut expected: Vec<(String, Augment, Transform)> = Vec::new();
    for (fill_mode, fill) in [
        ("reflect", FillMode::Reflect),
        ("wrap", FillMode::Wrap),
        ("constant", FillMode::Constant),
        ("nearest", FillMode::Nearest),
    ] {
        for (interpolation, resampling) in [
            ("bilinear", Interpolation::Bilinear),
            ("nearest", Interpolation::Nearest),
        ] {
            let base = Augment {
                fill_mode: fill,
                interpolation: resampling,
                fill_value: 0.5,
                ..settings()
            };
            for turn in ["0.07", "-0.3"] {
                let fraction: f64 = turn.parse().unwrap();
                let augment = Augment {
                    rotation: Some(fraction.abs()),
                    ..base
                };
                let t = Transform {
                    degrees: fraction * 360.0,
                    ..Transform::default()
                };
                expected.push((format!("rotation/{turn}/{fill_mode}/{interpolation}"), augment, t));
            }
            for (height, width) in [("0.3", "-0.2"), ("-0.9", "0.7")] {
                let [fh, fw]: [f64; 2] = [height.parse().unwrap(), width.parse().unwrap()];
                let augment = Augment {
                    translation: Some([fh.abs(), fw.abs()]),
                    ..base
                };
                let t = Transform {
                    shift: [fh * h as f64, fw * w as f64],
                    ..Transform::default()
                };
                expected.push((
                    format!("translation/{height},{width}/{fill_mode}/{interpolation}"),
                    augment,
                    t,
                ));
            }
        }
    }
    let mut names: Vec<(&str, &[usize])> = vec![("image", &[6, 9, 2])];
    names.extend(expected.iter().map(|(n, ..)| (n.as_str(), &[6usize, 9, 2][..])));
    let (found, problems) = checkpoint::inspect(path, &names).unwrap_or_else(|e| panic!("{e}"));
    assert!(problems.is_empty(), "{problems:?}");
    let image = ArrayD::from_shape_vec(IxDyn(&[1, h, w, c]), found.tensors[0].data.clone()).unwrap();
    for ((name, augment, t), keras) in expected.iter().zip(&found.tensors[1..]) {
        let mut ours = image.clone();
        augment::apply(augment, &mut ours, &[*t]);
        let worst = ours
            .iter()
            .zip(&keras.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: differs from Keras's by {worst}");
        let moved = ours
            .iter()
            .zip(image.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(moved > 0.1, "{name}: the image hardly changed");
    }
}

#[test]
fn a_seed_draws_the_same_batches_and_draws_within_the_factors() {
    let augment = Augment {
        flip: Some(Flip::Horizontal),
        rotation: Some(0.1),
        translation: Some([0.2, 0.1]),
        ..settings()
    };
    let (h, w) = (8, 10);
    let input = numbered(&[64, h, w, 1]);
    let batch = |seed: u64| {
        let mut rng = Rng::stream(seed, purpose::AUGMENT);
        let transforms = augment::draw(&augment, 64, &mut rng);
        let mut batch = input.clone();
        augment::apply(&augment, &mut batch, &transforms);
        (transforms, batch)
    };
    let (transforms, first) = batch(7);
    let (again, second) = batch(7);
    assert_eq!(transforms, again);
    assert!(
        first.iter().zip(&second).all(|(a, b)| a.to_bits() == b.to_bits()),
        "the same seed gave other batches"
    );
    let (other, third) = batch(8);
    assert_ne!(transforms, other);
    assert_ne!(first, third);
    let flips = transforms.iter().filter(|t| t.flip).count();
    assert!((16..=48).contains(&flips), "{flips} of 64 flipped");
    for t in &transforms {
        assert!(t.degrees.abs() <= 36.0, "{t:?}");
        assert!(
            t.shift[0].abs() <= 0.2 * h as f64 && t.shift[1].abs() <= 0.1 * w as f64,
            "{t:?}"
        );
    }
    let widest = transforms.iter().map(|t| t.degrees.abs()).fold(0.0, f64::max);
    assert!(widest > 25.0, "angles reach only {widest} degrees");
}
