//! IDX loading: the bundled mnist10k (statistics computed independently with
//! Python's gzip module), raw and gzipped files told apart by content, every
//! error on small generated files, validation splits, batches and shuffles.

mod common;

use cnnc::runtime::data::{self, DataError, Splits};
use cnnc::runtime::purpose;
use cnnc::runtime::rng::Rng;
use common::{Scratch, assert_error};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::Path;

const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn mnist(input: &[usize], split: Option<f64>) -> Result<Splits, DataError> {
    data::load("mnist10k", Path::new("."), input, 10, split)
}

fn histogram(labels: &[usize]) -> Vec<usize> {
    let mut counts = vec![0; 10];
    for &l in labels {
        counts[l] += 1;
    }
    counts
}

/// Pixel bytes recovered from the [0, 1] floats.
fn byte_sum(values: &[f32]) -> u64 {
    values.iter().map(|&v| (v * 255.0).round() as u64).sum()
}

#[test]
fn bundled_mnist10k_loads_as_images() {
    let splits = mnist(&[28, 28, 1], None).unwrap();
    let (train, test) = (&splits.train, splits.test.as_ref().unwrap());
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert!(splits.val.is_none());
    assert_eq!(splits.classes, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(train.shape, [28, 28, 1]);
    assert_eq!(train.inputs.len(), 8000 * 784);
    assert_eq!(
        histogram(&train.labels),
        [801, 902, 793, 825, 784, 690, 812, 855, 755, 783]
    );
    assert_eq!(
        histogram(&test.labels),
        [200, 225, 198, 207, 196, 173, 202, 215, 189, 195]
    );
    assert_eq!(train.labels[..10], [6, 7, 2, 1, 4, 9, 7, 3, 0, 5]);
    assert_eq!(byte_sum(&train.inputs), 209_307_578);
    assert_eq!(byte_sum(&test.inputs), 52_839_022);
    assert_eq!(byte_sum(train.sample(0)), 28176);
    assert_eq!(byte_sum(test.sample(1999)), 32884);
    assert_eq!(train.sample(0)[14 * 28 + 14], 230.0 / 255.0);
    let (min, max) = train
        .inputs
        .iter()
        .fold((1.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((min, max), (0.0, 1.0));
}

#[test]
fn a_vector_input_takes_the_images_flattened() {
    let splits = mnist(&[784], None).unwrap();
    assert_eq!(splits.train.shape, [784]);
    assert_eq!(byte_sum(splits.train.sample(0)), 28176);
    let batch = splits.train.batch(&[0, 5]);
    assert_eq!(batch.inputs.shape(), [2, 784]);
    assert_eq!(batch.inputs.as_slice().unwrap()[784..], *splits.train.sample(5));
    assert_eq!(batch.targets.shape(), [2, 10]);
    let hot: Vec<usize> = batch
        .targets
        .rows()
        .into_iter()
        .map(|r| r.iter().position(|&t| t == 1.0).unwrap())
        .collect();
    assert_eq!(hot, [6, 9]);
    assert_eq!(batch.targets.sum(), 2.0);
}

#[test]
fn validation_split_takes_the_last_fraction_in_file_order() {
    let splits = mnist(&[28, 28, 1], Some(0.2)).unwrap();
    let val = splits.val.unwrap();
    assert_eq!((splits.train.len(), val.len()), (6400, 1600));
    assert_eq!(
        histogram(&val.labels),
        [164, 191, 152, 155, 170, 148, 160, 168, 123, 169]
    );
    assert_eq!(byte_sum(&val.inputs), 41_649_492);
    assert_eq!(splits.train.labels[..10], [6, 7, 2, 1, 4, 9, 7, 3, 0, 5]);
}

#[test]
fn raw_and_gzipped_files_are_told_apart_by_content_not_name() {
    let scratch = Scratch::new("idx-raw");
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data/mnist10k");
    for (i, name) in MNIST_FILES.iter().enumerate() {
        let gz = std::fs::read(bundled.join(format!("{name}.gz"))).unwrap();
        let mut raw = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
        // Train files: raw bytes under a .gz name; test files: gzip without.
        match i {
            0 | 1 => scratch.write(&format!("{name}.gz"), &raw),
            _ => scratch.write(name, &gz),
        };
    }
    let name = scratch.path().file_name().unwrap().to_str().unwrap();
    let copy = data::load(name, scratch.path().parent().unwrap(), &[28, 28, 1], 10, None).unwrap();
    assert_eq!(copy, mnist(&[28, 28, 1], None).unwrap());
}

/// An IDX header: magic, then each dimension, big-endian.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    bytes
}

fn images(count: u32, data: &[u8]) -> Vec<u8> {
    idx(2051, &[count, 2, 2], data)
}

fn labels(values: &[u8]) -> Vec<u8> {
    idx(2049, &[values.len() as u32], values)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Three 2x2 images with pixel values 0..12, labelled 0, 2, 1.
fn tiny() -> (Vec<u8>, Vec<u8>) {
    (images(3, &(0..12).collect::<Vec<u8>>()), labels(&[0, 2, 1]))
}

fn write_train(scratch: &Scratch, images: &[u8], labels: &[u8]) {
    scratch.write("train-images-idx3-ubyte", images);
    scratch.write("train-labels-idx1-ubyte", labels);
}

fn load_tiny(scratch: &Scratch, outputs: usize, split: Option<f64>) -> Result<Splits, DataError> {
    data::load(
        scratch.path().to_str().unwrap(),
        Path::new("."),
        &[2, 2, 1],
        outputs,
        split,
    )
}

#[test]
fn small_files_load_exactly() {
    let scratch = Scratch::new("idx-tiny");
    let (images, labels) = tiny();
    write_train(&scratch, &images, &labels);
    let splits = load_tiny(&scratch, 3, None).unwrap();
    assert!(splits.test.is_none(), "the test files are optional");
    assert_eq!(splits.train.labels, [0, 2, 1]);
    assert_eq!(
        splits.train.sample(2),
        [8.0 / 255.0, 9.0 / 255.0, 10.0 / 255.0, 11.0 / 255.0]
    );
    assert_eq!(splits.classes, ["0", "1", "2"]);
}

#[test]
fn a_single_output_unit_gets_the_label_itself() {
    let scratch = Scratch::new("idx-binary");
    write_train(&scratch, &images(3, &[0; 12]), &labels(&[0, 1, 1]));
    let splits = load_tiny(&scratch, 1, None).unwrap();
    let batch = splits.train.batch(&[2, 0, 1]);
    assert_eq!(batch.targets.shape(), [3, 1]);
    assert_eq!(batch.targets.as_slice().unwrap(), [1.0, 0.0, 1.0]);
    assert_eq!(splits.classes, ["0", "1"]);
}

#[test]
fn a_missing_file_is_named() {
    let scratch = Scratch::new("idx-missing");
    scratch.write("train-images-idx3-ubyte.gz", &gzip(&tiny().0));
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(&error, "train-labels-idx1-ubyte", "missing file");
    assert!(error.help.unwrap().contains("t10k-images-idx3-ubyte"));

    let scratch = Scratch::new("idx-missing-test");
    let (images, labels) = tiny();
    write_train(&scratch, &images, &labels);
    scratch.write("t10k-labels-idx1-ubyte", &labels);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(&error, "t10k-images-idx3-ubyte", "missing file");
}

#[test]
fn a_truncated_file_says_what_its_header_promised() {
    let scratch = Scratch::new("idx-truncated");
    let (images, labels) = tiny();
    write_train(&scratch, &images[..images.len() - 2], &labels);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(
        &error,
        "train-images-idx3-ubyte",
        "truncated: the header promises 3 images of 2x2 (12 bytes)",
    );
    assert!(error.message.contains("only 10 bytes"), "{error}");

    write_train(&scratch, &images[..6], &labels);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(&error, "train-images-idx3-ubyte", "ends inside its header");
}

#[test]
fn a_truncated_gzip_stream_is_named() {
    let scratch = Scratch::new("idx-truncated-gz");
    let (images, labels) = tiny();
    let gz = gzip(&images);
    scratch.write("train-images-idx3-ubyte", &gz[..gz.len() / 2]);
    scratch.write("train-labels-idx1-ubyte", &labels);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(&error, "train-images-idx3-ubyte", "truncated");
}

#[test]
fn extra_bytes_after_the_promised_data_are_an_error() {
    let scratch = Scratch::new("idx-long");
    let (mut images, labels) = tiny();
    images.push(0);
    write_train(&scratch, &images, &labels);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(&error, "train-images-idx3-ubyte", "longer than its header promises");
}

#[test]
fn an_absurd_header_is_caught_without_allocating() {
    let scratch = Scratch::new("idx-absurd");
    write_train(&scratch, &gzip(&images(u32::MAX, &[0; 12])), &labels(&[0; 3]));
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(
        &error,
        "train-labels-idx1-ubyte",
        "holds 3 labels for the 4294967295 images",
    );

    write_train(
        &scratch,
        &gzip(&images(u32::MAX, &[0; 12])),
        &idx(2049, &[u32::MAX], &[0; 3]),
    );
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    // Refused on the header's counts against the memory limit, before
    // reading any data.
    assert_error(
        &error,
        "train-images-idx3-ubyte",
        "4294967295 samples of 4 values would take 68719476720 bytes in memory",
    );
}

#[test]
fn a_wrong_magic_number_says_what_the_file_looks_like() {
    let scratch = Scratch::new("idx-magic");
    let (images, labels) = tiny();
    write_train(&scratch, &labels, &labels);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(
        &error,
        "train-images-idx3-ubyte",
        "expected 2051 (images), found 2049: this looks like a labels file",
    );

    write_train(&scratch, &images, &images);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(
        &error,
        "train-labels-idx1-ubyte",
        "expected 2049 (labels), found 2051: this looks like an images file",
    );

    write_train(&scratch, b"\x89PNG\r\n\x1a\n not idx", &labels);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(&error, "train-images-idx3-ubyte", "this is not an IDX file");
}

#[test]
fn image_and_label_counts_must_agree() {
    let scratch = Scratch::new("idx-counts");
    write_train(&scratch, &tiny().0, &labels(&[0, 1]));
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(
        &error,
        "train-labels-idx1-ubyte",
        "holds 2 labels for the 3 images of train-images-idx3-ubyte",
    );
}

#[test]
fn a_corrupt_gzip_stream_is_named() {
    let scratch = Scratch::new("idx-corrupt");
    let (images, labels) = tiny();
    let mut gz = gzip(&images);
    // The last 8 bytes are the CRC and length: break the checksum.
    let crc = gz.len() - 8;
    gz[crc] ^= 0xff;
    write_train(&scratch, &images, &gzip(&labels));
    scratch.write("train-images-idx3-ubyte", &gz);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(
        &error,
        "train-images-idx3-ubyte",
        "cannot decompress: corrupt gzip stream",
    );

    // A damaged deflate block, not just its checksum.
    let mut gz = gzip(&images);
    gz[12] ^= 0xff;
    gz[14] ^= 0x55;
    scratch.write("train-images-idx3-ubyte", &gz);
    let error = load_tiny(&scratch, 3, None).unwrap_err();
    assert_error(&error, "train-images-idx3-ubyte", "cannot decompress: corrupt");
}

#[test]
fn a_label_beyond_the_outputs_is_named() {
    let scratch = Scratch::new("idx-label");
    let (images, labels) = tiny();
    write_train(&scratch, &images, &labels);
    let error = load_tiny(&scratch, 2, None).unwrap_err();
    assert_error(
        &error,
        "train-labels-idx1-ubyte",
        "label 2 (sample 1) is out of range for the model's 2 output units",
    );
    assert!(error.help.unwrap().contains("dense 3 activation=softmax"));

    let error = load_tiny(&scratch, 1, None).unwrap_err();
    assert_error(&error, "train-labels-idx1-ubyte", "the model's 1 output unit");
}

#[test]
fn mnist_for_a_colour_model_says_what_the_data_is() {
    let error = mnist(&[64, 64, 3], None).unwrap_err();
    assert_error(
        &error,
        "train-images-idx3-ubyte.gz",
        "the images are 28x28 grayscale, but the model's input is 64x64x3",
    );
    assert!(
        error
            .to_string()
            .contains("\n  = help: IDX images are not resized: write `input 28x28x1`")
    );
    let error = mnist(&[28, 28, 3], None).unwrap_err();
    assert_error(&error, "train-images-idx3-ubyte.gz", "model's input is 28x28x3");
    assert!(mnist(&[28, 28], None).is_ok());
}

#[test]
fn validation_splits_must_leave_both_sides() {
    let scratch = Scratch::new("idx-split");
    let (images, labels) = tiny();
    write_train(&scratch, &images, &labels);
    let splits = load_tiny(&scratch, 3, Some(0.5)).unwrap();
    assert_eq!((splits.train.labels, splits.val.unwrap().labels), (vec![0], vec![2, 1]));
    let none = load_tiny(&scratch, 3, Some(0.0)).unwrap();
    assert!(none.val.is_none());
    let error = load_tiny(&scratch, 3, Some(0.9)).unwrap_err();
    assert_error(
        &error,
        scratch.path().to_str().unwrap(),
        "leaves 0 for training and 3 for validation",
    );
    let error = load_tiny(&scratch, 3, Some(1.5)).unwrap_err();
    assert_error(
        &error,
        scratch.path().to_str().unwrap(),
        "validation_split 1.5 is not a fraction",
    );
}

#[test]
fn sources_are_relative_to_the_base() {
    let scratch = Scratch::new("idx-base");
    let (images, labels) = tiny();
    scratch.write("digits/train-images-idx3-ubyte", &images);
    scratch.write("digits/train-labels-idx1-ubyte", &labels);
    let splits = data::load("digits", scratch.path(), &[4], 3, None).unwrap();
    assert_eq!(splits.train.shape, [4]);
    let error = data::load("digitz", scratch.path(), &[4], 3, None).unwrap_err();
    assert_error(&error, "digitz", "no such folder");
    assert!(error.help.unwrap().contains("mnist10k"));
    let error = data::load("digits/train-images-idx3-ubyte", scratch.path(), &[4], 3, None).unwrap_err();
    assert_error(&error, "train-images-idx3-ubyte", "a file, not a dataset folder");
}

#[test]
fn epoch_orders_are_permutations_fixed_by_the_seed() {
    let scratch = Scratch::new("idx-shuffle");
    let count = 50u8;
    let pixels: Vec<u8> = (0..count).flat_map(|i| [i; 4]).collect();
    write_train(
        &scratch,
        &images(u32::from(count), &pixels),
        &labels(&vec![0; usize::from(count)]),
    );
    let train = load_tiny(&scratch, 2, None).unwrap().train;
    let order = |seed| {
        let mut rng = Rng::stream(seed, purpose::SHUFFLE);
        (train.epoch_order(&mut rng), train.epoch_order(&mut rng))
    };
    let (first, second) = order(1);
    assert_eq!((first.clone(), second.clone()), order(1));
    assert_ne!(first, second, "each epoch gets a fresh order");
    assert_ne!(first, order(2).0);
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, (0..usize::from(count)).collect::<Vec<_>>());
    let batch = train.batch(&first[..3]);
    let expected: Vec<f32> = first[..3].iter().flat_map(|&i| [i as f32 / 255.0; 4]).collect();
    assert_eq!(batch.inputs.shape(), [3, 2, 2, 1]);
    assert_eq!(batch.inputs.as_slice().unwrap(), expected);
}
