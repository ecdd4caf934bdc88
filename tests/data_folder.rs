//! Image folders: classes from sorted subfolder names, PNG and JPEG of any
//! size resized to the model's input, grayscale or RGB, both layouts, and
//! every error naming its file.

mod common;

use cnnc::runtime::data::{self, DataError, Dataset, Splits};
use common::{Scratch, assert_error};
use image::{ImageFormat, Rgb, RgbImage};
use std::io::Cursor;
use std::path::Path;

fn encode(width: u32, height: u32, colour: [u8; 3], format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    RgbImage::from_pixel(width, height, Rgb(colour))
        .write_to(&mut bytes, format)
        .unwrap();
    bytes.into_inner()
}

fn png(width: u32, height: u32, colour: [u8; 3]) -> Vec<u8> {
    encode(width, height, colour, ImageFormat::Png)
}

fn jpeg(width: u32, height: u32, colour: [u8; 3]) -> Vec<u8> {
    encode(width, height, colour, ImageFormat::Jpeg)
}

fn grey(value: u8) -> Vec<u8> {
    png(5, 4, [value; 3])
}

fn load(scratch: &Scratch, input: &[usize], outputs: usize, split: Option<f64>) -> Result<Splits, DataError> {
    data::load(
        scratch.path().to_str().unwrap(),
        Path::new("."),
        input,
        outputs,
        split,
        &Default::default(),
    )
}

/// Every value of every sample of class `label` is within `tolerance` of
/// `expected` (one value per channel).
fn assert_solid(set: &Dataset, label: usize, expected: &[f32], tolerance: f32) {
    let channels = expected.len();
    for i in (0..set.len()).filter(|&i| set.labels[i] == label) {
        for (k, &v) in set.sample(i).iter().enumerate() {
            let want = expected[k % channels];
            assert!((v - want).abs() <= tolerance, "sample {i} value {k}: {v} vs {want}");
        }
    }
}

/// Two classes, written out of order: PNGs of 10x7 and JPEGs of 30x20.
fn two_classes(scratch: &Scratch, root: &str, images: usize) {
    for i in 0..images {
        scratch.write(&format!("{root}red/{i}.png"), &png(10, 7, [200, 100, 50]));
        scratch.write(&format!("{root}blue/{i}.JPG"), &jpeg(30, 20, [20, 40, 220]));
    }
}

#[test]
fn images_of_any_size_are_resized_to_rgb_input() {
    let scratch = Scratch::new("folder-rgb");
    two_classes(&scratch, "", 3);
    let splits = load(&scratch, &[8, 6, 3], 2, None).unwrap();
    assert_eq!(splits.classes, ["blue", "red"]);
    let train = &splits.train;
    assert_eq!((train.len(), train.shape.as_slice()), (6, [8, 6, 3].as_slice()));
    assert_eq!(train.inputs.len(), 6 * 8 * 6 * 3);
    assert_eq!(train.labels, [0, 0, 0, 1, 1, 1]);
    assert_solid(train, 1, &[200.0 / 255.0, 100.0 / 255.0, 50.0 / 255.0], 1e-6);
    // JPEG is lossy: a solid colour comes back within a few levels.
    assert_solid(train, 0, &[20.0 / 255.0, 40.0 / 255.0, 220.0 / 255.0], 4.0 / 255.0);
    assert!(splits.val.is_none() && splits.test.is_none());
}

#[test]
fn grayscale_input_takes_the_luma() {
    let scratch = Scratch::new("folder-grey");
    two_classes(&scratch, "", 2);
    let splits = load(&scratch, &[4, 4, 1], 2, None).unwrap();
    assert_eq!(splits.train.shape, [4, 4, 1]);
    assert_eq!(splits.train.inputs.len(), 4 * 16);
    // ITU-R 601, as PIL and libjpeg compute it.
    let red = (0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0) / 255.0;
    assert_solid(&splits.train, 1, &[red], 1e-5);
    let blue = (0.299 * 20.0 + 0.587 * 40.0 + 0.114 * 220.0) / 255.0;
    assert_solid(&splits.train, 0, &[blue], 4.0 / 255.0);
    let flat = load(&scratch, &[4, 4], 2, None).unwrap();
    assert_eq!(flat.train.inputs, splits.train.inputs);
}

#[test]
fn resizing_filters_rather_than_picks_pixels() {
    let scratch = Scratch::new("folder-filter");
    // Left half black, right half white: a 2-pixel-wide result averages.
    let mut image = RgbImage::new(4, 2);
    for (x, _, p) in image.enumerate_pixels_mut() {
        *p = Rgb([if x < 2 { 0 } else { 255 }; 3]);
    }
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    scratch.write("a/x.png", bytes.get_ref());
    scratch.write("b/y.png", &grey(0));
    let splits = load(&scratch, &[1, 1, 1], 2, None).unwrap();
    assert!(
        (splits.train.sample(0)[0] - 0.5).abs() < 1e-6,
        "{:?}",
        splits.train.sample(0)
    );
}

#[test]
fn root_layout_splits_the_last_fraction_of_each_class() {
    let scratch = Scratch::new("folder-split");
    for i in 0..5u8 {
        scratch.write(&format!("a/{i}.png"), &grey(10 + i));
        scratch.write(&format!("b/{i}.png"), &grey(100 + i));
    }
    let splits = load(&scratch, &[2, 2, 1], 2, Some(0.4)).unwrap();
    let first = |set: &Dataset| -> Vec<u8> {
        (0..set.len())
            .map(|i| (set.sample(i)[0] * 255.0).round() as u8)
            .collect()
    };
    assert_eq!(first(&splits.train), [10, 11, 12, 100, 101, 102]);
    let val = splits.val.unwrap();
    assert_eq!(first(&val), [13, 14, 103, 104]);
    assert_eq!(val.labels, [0, 0, 1, 1]);
    let error = load(&scratch, &[2, 2, 1], 2, Some(0.9)).unwrap_err();
    assert_error(
        &error,
        scratch.path().to_str().unwrap(),
        "leaves 0 for training and 10 for validation",
    );
}

#[test]
fn train_val_test_folders_hold_the_same_classes() {
    let scratch = Scratch::new("folder-parts");
    two_classes(&scratch, "train/", 4);
    two_classes(&scratch, "val/", 2);
    two_classes(&scratch, "test/", 1);
    scratch.write("README.md", b"a dataset");
    scratch.write("train/.DS_Store", b"\0");
    scratch.write("train/red/.DS_Store", b"\0");
    let splits = load(&scratch, &[8, 8, 3], 2, None).unwrap();
    assert_eq!(splits.classes, ["blue", "red"]);
    let sizes = (
        splits.train.len(),
        splits.val.as_ref().unwrap().len(),
        splits.test.as_ref().unwrap().len(),
    );
    assert_eq!(sizes, (8, 4, 2));
    assert_eq!(splits.test.unwrap().labels, [0, 1]);

    let error = load(&scratch, &[8, 8, 3], 2, Some(0.2)).unwrap_err();
    assert_error(
        &error,
        "val",
        "validation_split is set, but the dataset has its own val/ folder",
    );

    scratch.write("test/green/0.png", &grey(0));
    let error = load(&scratch, &[8, 8, 3], 2, None).unwrap_err();
    assert_error(&error, "test/green", "a class that train/ does not have");

    std::fs::remove_dir_all(scratch.path().join("test")).unwrap();
    std::fs::remove_dir_all(scratch.path().join("val/blue")).unwrap();
    let error = load(&scratch, &[8, 8, 3], 2, None).unwrap_err();
    assert_error(&error, "val", "no class folder `blue`, which train/ has");

    std::fs::remove_dir_all(scratch.path().join("val")).unwrap();
    let splits = load(&scratch, &[8, 8, 3], 2, Some(0.25)).unwrap();
    assert_eq!(
        (splits.train.len(), splits.val.unwrap().len()),
        (6, 2),
        "train/ alone is split"
    );

    scratch.write("stray.jpg", &jpeg(2, 2, [0, 0, 0]));
    let error = load(&scratch, &[8, 8, 3], 2, None).unwrap_err();
    assert_error(&error, "stray.jpg", "an image outside any class folder");
    std::fs::remove_file(scratch.path().join("stray.jpg")).unwrap();

    scratch.write("extra/red/0.png", &grey(0));
    let error = load(&scratch, &[8, 8, 3], 2, None).unwrap_err();
    assert_error(&error, "extra", "a folder beside train/, val/ and test/");

    std::fs::remove_dir_all(scratch.path().join("extra")).unwrap();
    std::fs::rename(scratch.path().join("train"), scratch.path().join("test")).unwrap();
    let error = load(&scratch, &[8, 8, 3], 2, None).unwrap_err();
    assert_error(&error, "train", "no train/");
}

#[test]
fn the_class_count_must_match_the_outputs() {
    let scratch = Scratch::new("folder-outputs");
    two_classes(&scratch, "", 1);
    let error = load(&scratch, &[4, 4, 3], 8, None).unwrap_err();
    assert_error(
        &error,
        scratch.path().to_str().unwrap(),
        "2 class folders (blue, red), but the model has 8 output units",
    );
    assert!(error.help.unwrap().contains("dense 1 activation=sigmoid"));
    std::fs::remove_dir_all(scratch.path().join("blue")).unwrap();
    let error = load(&scratch, &[4, 4, 3], 2, None).unwrap_err();
    assert_error(&error, scratch.path().to_str().unwrap(), "only one class folder (red)");
    two_classes(&scratch, "", 1);
    let binary = load(&scratch, &[4, 4, 3], 1, None).unwrap();
    assert_eq!(binary.train.batch(&[0, 1]).targets.as_slice().unwrap(), [0.0, 1.0]);
}

#[test]
fn bad_files_are_named() {
    let scratch = Scratch::new("folder-bad");
    two_classes(&scratch, "", 1);
    let check = |file: &str, what: &str| {
        let error = load(&scratch, &[4, 4, 3], 2, None).unwrap_err();
        assert_error(&error, file, what);
    };
    scratch.write("red/notes.txt", b"hello");
    check("red/notes.txt", "not a PNG or JPEG image");
    std::fs::remove_file(scratch.path().join("red/notes.txt")).unwrap();

    scratch.write("red/broken.png", b"\x89PNG\r\n\x1a\nnot really");
    check("red/broken.png", "not a readable image");
    scratch.write("red/broken.png", b"");
    check("red/broken.png", "an empty file, not an image");
    std::fs::remove_file(scratch.path().join("red/broken.png")).unwrap();

    scratch.write("red/deeper/0.png", &grey(0));
    check("red/deeper", "a folder inside a class folder");
    std::fs::remove_dir_all(scratch.path().join("red/deeper")).unwrap();

    scratch.write("stray.png", &grey(0));
    check("stray.png", "an image outside any class folder");
    std::fs::remove_file(scratch.path().join("stray.png")).unwrap();

    std::fs::create_dir(scratch.path().join("green")).unwrap();
    scratch.write("green/.DS_Store", b"\0");
    check("green", "empty class folder");
}

#[test]
fn a_folder_without_classes_is_named() {
    let scratch = Scratch::new("folder-none");
    scratch.write("README.md", b"nothing here");
    let error = load(&scratch, &[4, 4, 3], 2, None).unwrap_err();
    assert_error(&error, scratch.path().to_str().unwrap(), "no class folders");
    assert!(
        error
            .to_string()
            .contains("\n  = help: an image dataset holds one folder per class")
    );
}

#[test]
fn the_format_is_read_from_the_content() {
    let scratch = Scratch::new("folder-content");
    scratch.write("a/really-a-jpeg.png", &jpeg(3, 3, [0, 0, 0]));
    scratch.write("b/really-a-png.jpg", &png(3, 3, [255, 255, 255]));
    let splits = load(&scratch, &[3, 3, 3], 2, None).unwrap();
    assert_solid(&splits.train, 1, &[1.0], 0.0);
}

#[test]
fn the_model_input_must_be_an_image() {
    let scratch = Scratch::new("folder-input");
    two_classes(&scratch, "", 1);
    let error = load(&scratch, &[48], 2, None).unwrap_err();
    assert_error(&error, scratch.path().to_str().unwrap(), "the model's input is 48");
    let error = load(&scratch, &[4, 4, 2], 2, None).unwrap_err();
    assert_error(
        &error,
        scratch.path().to_str().unwrap(),
        "grayscale (1 channel) or RGB (3)",
    );
}

/// `--classes` keeps the named folders, labelled in the order given, in
/// every split; `--per-class` keeps a seeded draw of each class's
/// training images, in their order.
#[test]
fn classes_are_chosen_and_relabelled_and_training_images_limited() {
    let scratch = Scratch::new("folder-select");
    for (class, value) in [("ant", 10), ("bee", 120), ("cat", 240)] {
        for i in 0..6 {
            // Each image its own shade, so that the draw can be read back.
            scratch.write(&format!("train/{class}/{i}.png"), &grey(value + i));
        }
        scratch.write(&format!("test/{class}/0.png"), &grey(value));
    }
    let select = |classes: &[&str], per_class, seed| {
        let selection = data::Selection {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            per_class,
            seed,
        };
        data::load(
            scratch.path().to_str().unwrap(),
            Path::new("."),
            &[4, 5, 1],
            2,
            None,
            &selection,
        )
    };
    let splits = select(&["cat", "ant"], Some(4), 1).unwrap();
    assert_eq!(splits.classes, ["cat", "ant"]);
    let train = &splits.train;
    assert_eq!(train.labels, [0, 0, 0, 0, 1, 1, 1, 1]);
    let shades: Vec<u8> = (0..train.len())
        .map(|i| (train.sample(i)[0] * 255.0).round() as u8)
        .collect();
    assert!(shades[..4].iter().all(|s| (240..246).contains(s)), "{shades:?}");
    assert!(shades[4..].iter().all(|s| (10..16).contains(s)), "{shades:?}");
    assert!(shades[..4].is_sorted() && shades[4..].is_sorted(), "{shades:?}");
    let test = splits.test.as_ref().unwrap();
    assert_eq!(test.labels, [0, 1]);
    assert_eq!((test.sample(0)[0] * 255.0).round(), 240.0);
    assert_eq!(
        select(&["cat", "ant"], Some(4), 1).unwrap(),
        splits,
        "not deterministic"
    );
    let other = (2..20).map(|seed| select(&["cat", "ant"], Some(4), seed).unwrap());
    assert!(
        other.into_iter().any(|s| s.train != splits.train),
        "the seed draws nothing else"
    );

    let error = select(&["cat", "dgo"], None, 0).unwrap_err();
    assert_error(&error, "train", "--classes names `dgo`, a class the data does not have");
    assert!(
        error
            .help
            .as_deref()
            .unwrap_or_default()
            .contains("its classes: ant, bee, cat"),
        "{error}"
    );
    // Three classes for two outputs: the model's head must fit the choice.
    assert!(select(&["ant", "bee", "cat"], None, 0).is_err());
}
