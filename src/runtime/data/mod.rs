//! Training data: the bundled `mnist10k`, IDX files (MNIST's format) and
//! folders of images with one subfolder per class, loaded into memory in the
//! layout of the model's input. `load` is the one entry point.

pub mod augment;
mod dataset;
mod decode;
mod error;
mod folder;
mod idx;
mod select;

pub use dataset::{Batch, Dataset};
pub use decode::{DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV};
pub use error::DataError;
pub use select::Selection;

use crate::shape::dims;
use std::path::{Path, PathBuf};

/// The dataset that ships with cnnc, in `models/data/mnist10k`.
pub const BUNDLED: &str = "mnist10k";
/// Where the source tree keeps it, beside the models that train on it.
const SHIPPED_IN: &str = "models/data";

const SOURCES: &str = "`data` is `mnist10k`, a folder of IDX files (train-images-idx3-ubyte.gz and its kin) \
                       or a folder of images with one subfolder per class";

/// A dataset cut for training: `val` comes from the data's own validation
/// files or from `validation_split`, `test` from its test files.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    /// Class names by label: digits for IDX data, folder names for images.
    pub classes: Vec<String>,
}

/// Loads `source` for a model whose input (without the batch axis) is
/// `input_shape` and whose output has `outputs` units. `source` is
/// `mnist10k` or a folder, relative to `base` (the `.cnn` file's folder for
/// a training block, the current directory for a command-line flag).
/// `validation_split` moves the last fraction of the training samples, in
/// file order, to `val` (Keras's semantics; 0 means none). `selection`
/// keeps some classes and limits the training samples of each, after the
/// validation split.
pub fn load(
    source: &str,
    base: &Path,
    input_shape: &[usize],
    outputs: usize,
    validation_split: Option<f64>,
    selection: &Selection,
) -> Result<Splits, DataError> {
    let dir = locate(source, base)?;
    let split = validation_split.filter(|&f| f != 0.0);
    if let Some(f) = split.filter(|f| !(0.0..1.0).contains(f)) {
        return Err(DataError::new(dir, format!("validation_split {f} is not a fraction"))
            .help("the validation split is between 0 and 1, e.g. `validation_split 0.2`"));
    }
    let model = ModelIo {
        input: input_shape,
        outputs,
    };
    if idx::holds_idx(&dir) {
        idx::load(&dir, model, split, selection)
    } else {
        folder::load(&dir, model, split, selection)
    }
}

/// The folder `source` names: the bundled dataset is found from the current
/// directory (a fresh clone) or else from the source tree cnnc was built in
/// (`cargo run` from elsewhere).
fn locate(source: &str, base: &Path) -> Result<PathBuf, DataError> {
    if source == BUNDLED {
        let here = Path::new(SHIPPED_IN).join(BUNDLED);
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_IN).join(BUNDLED);
        return [here.clone(), shipped].into_iter().find(|p| p.is_dir()).ok_or_else(|| {
            DataError::new(here, "the bundled dataset `mnist10k` is missing").help(
                "it ships in cnnc's source tree as models/data/mnist10k; run cnnc from there or give the folder's path",
            )
        });
    }
    let path = base.join(source);
    if path.is_dir() {
        return Ok(path);
    }
    let what = if path.exists() {
        "a file, not a dataset folder"
    } else {
        "no such folder"
    };
    Err(DataError::new(path, what).help(SOURCES))
}

/// The model as the loaders see it.
#[derive(Clone, Copy, Debug)]
struct ModelIo<'a> {
    input: &'a [usize],
    outputs: usize,
}

impl ModelIo<'_> {
    /// Classes the output tells apart: one per unit, or two for a single
    /// (sigmoid) unit.
    fn classes(&self) -> usize {
        if self.outputs == 1 { 2 } else { self.outputs }
    }

    /// Height, width and channels when the input is an image (`HxW` is one
    /// channel).
    fn image(&self) -> Option<[usize; 3]> {
        match *self.input {
            [h, w] => Some([h, w, 1]),
            [h, w, c] => Some([h, w, c]),
            _ => None,
        }
    }

    /// The input as the `.cnn` file writes it.
    fn input_text(&self) -> String {
        dims(self.input)
    }
}

/// How many of `n` samples stay for training: Keras cuts at
/// floor(n * (1 - split)).
fn training_count(n: usize, split: f64) -> usize {
    (n as f64 * (1.0 - split)).floor() as usize
}

/// A split that leaves one side empty is a mistake, not a choice.
fn check_split(train: usize, val: usize, split: f64, file: &Path) -> Result<(), DataError> {
    if train > 0 && val > 0 {
        return Ok(());
    }
    Err(DataError::new(
        file,
        format!(
            "validation_split {split} of {} samples leaves {train} for training and {val} for validation",
            train + val
        ),
    )
    .help("choose a split that leaves samples on both sides, e.g. `validation_split 0.2`"))
}

/// Image files as one batch in the model's input layout (`cnnc predict`):
/// decoded, converted and resized exactly as training images are.
pub fn images(paths: &[PathBuf], input_shape: &[usize]) -> Result<ndarray::ArrayD<f32>, DataError> {
    let model = ModelIo {
        input: input_shape,
        outputs: 1,
    };
    let root = paths.first().map_or_else(PathBuf::new, PathBuf::clone);
    let size = decode::size(&root, model)?;
    let samples: Vec<(&Path, usize)> = paths.iter().map(|p| (p.as_path(), 0)).collect();
    let data = decode::dataset(&samples, size, model)?;
    let mut shape = vec![paths.len()];
    shape.extend(input_shape);
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data.inputs)
        .map_err(|e| DataError::new(root, format!("cannot form a batch: {e}")))
}

/// One encoded image (PNG or JPEG bytes, e.g. a request's body) as a batch
/// of one, decoded, converted and resized as image files are; `name` names
/// it in errors.
pub fn image(bytes: &[u8], name: &Path, input_shape: &[usize]) -> Result<ndarray::ArrayD<f32>, DataError> {
    let model = ModelIo {
        input: input_shape,
        outputs: 1,
    };
    let data = decode::pixels_of(bytes, name, decode::size(name, model)?)?;
    let mut shape = vec![1];
    shape.extend(input_shape);
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data)
        .map_err(|e| DataError::new(name, format!("cannot form a batch: {e}")))
}

/// The environment variable that sets the most memory a dataset may take,
/// in bytes; the default is `DEFAULT_MAX_DATA_BYTES`.
pub const MAX_DATA_ENV: &str = "CNNC_MAX_DATA_BYTES";
/// 4 GiB: MNIST's 70,000 images take 220 MB, so only a damaged or hostile
/// header (a small gzip claiming millions of images) comes near it.
pub const DEFAULT_MAX_DATA_BYTES: u64 = 4 << 30;

/// Refuses, before any data is read, a dataset of `samples` inputs of
/// `values` 32-bit floats each that would take more memory than allowed.
fn check_memory(path: &Path, samples: usize, values: usize) -> Result<(), DataError> {
    let limit = std::env::var(MAX_DATA_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_DATA_BYTES);
    let bytes = (samples as u64).saturating_mul(values as u64).saturating_mul(4);
    if bytes <= limit {
        return Ok(());
    }
    Err(DataError::new(
        path,
        format!(
            "{samples} samples of {values} values would take {bytes} bytes in memory, more than the limit of {limit}"
        ),
    )
    .help(format!("to allow more, set {MAX_DATA_ENV} to a number of bytes")))
}
