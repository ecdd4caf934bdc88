//! IDX files, the format MNIST ships in: a big-endian header (a magic number,
//! then one u32 per dimension) and unsigned bytes. Gzipped or raw files are
//! told apart by gzip's magic bytes, not by their names, so the full MNIST
//! download reads as it comes, compressed or not.

use super::{DataError, Dataset, ModelIo, Splits, check_split, training_count};
use crate::parse::args::MAX_SIZE;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Unsigned bytes in 3 dimensions [n, rows, cols].
const IMAGES: u32 = 2051;
/// Unsigned bytes in 1 dimension [n].
const LABELS: u32 = 2049;
const GZIP: [u8; 2] = [0x1f, 0x8b];

/// Images and labels files, as MNIST names them.
struct Files {
    images: &'static str,
    labels: &'static str,
}

const TRAIN: Files = Files {
    images: "train-images-idx3-ubyte",
    labels: "train-labels-idx1-ubyte",
};
const TEST: Files = Files {
    images: "t10k-images-idx3-ubyte",
    labels: "t10k-labels-idx1-ubyte",
};

const LAYOUT: &str = "an IDX dataset folder holds train-images-idx3-ubyte and train-labels-idx1-ubyte, \
                      and for a test set t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each raw or gzipped (.gz)";

/// Any one MNIST file name marks the folder as IDX data, so that a missing
/// partner is reported as missing rather than as a strange image folder.
pub(super) fn holds_idx(dir: &Path) -> bool {
    [TRAIN, TEST]
        .iter()
        .any(|f| find(dir, f.images).is_some() || find(dir, f.labels).is_some())
}

/// The test files are optional, as a pair.
pub(super) fn load(dir: &Path, model: ModelIo, split: Option<f64>) -> Result<Splits, DataError> {
    let mut train = pair(dir, &TRAIN, model)?;
    let has_test = find(dir, TEST.images).is_some() || find(dir, TEST.labels).is_some();
    let test = if has_test { Some(pair(dir, &TEST, model)?) } else { None };
    let val = match split {
        Some(split) => {
            let keep = training_count(train.len(), split);
            check_split(keep, train.len().saturating_sub(keep), split, dir)?;
            Some(train.split_off(keep))
        }
        None => None,
    };
    Ok(Splits {
        train,
        val,
        test,
        classes: (0..model.classes()).map(|c| c.to_string()).collect(),
    })
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

fn require(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    find(dir, stem).ok_or_else(|| {
        DataError::new(dir.join(stem), format!("missing file (neither {stem} nor {stem}.gz)")).help(LAYOUT)
    })
}

/// Reads both headers before any data, so that mismatches cost nothing.
fn pair(dir: &Path, files: &Files, model: ModelIo) -> Result<Dataset, DataError> {
    let images = Idx::open(&require(dir, files.images)?, IMAGES)?;
    let &[count, rows, cols] = images.dims.as_slice() else {
        return Err(images.error("an images file has 3 dimensions"));
    };
    if count == 0 {
        return Err(images.error("holds no images"));
    }
    let fits = match *model.input {
        [n] => n == rows * cols,
        [h, w] | [h, w, 1] => (h, w) == (rows, cols),
        _ => false,
    };
    if !fits {
        let error = images.error(format!(
            "the images are {rows}x{cols} grayscale, but the model's input is {}",
            model.input_text()
        ));
        // No suggestion a model could not take: a damaged header's sizes.
        let pixels = (rows as u64).saturating_mul(cols as u64);
        return Err(if pixels <= MAX_SIZE {
            error.help(format!(
                "IDX images are not resized: write `input {rows}x{cols}x1`, or `input {pixels}` to take them flattened"
            ))
        } else {
            error.help(format!(
                "the header's sizes are past what a model takes ({MAX_SIZE} values): is the file damaged?"
            ))
        });
    }
    let labels = Idx::open(&require(dir, files.labels)?, LABELS)?;
    if labels.dims != [count] {
        let found = labels.dims.first().copied().unwrap_or(0);
        let name = images.path.file_name().map_or(images.path.clone(), PathBuf::from);
        return Err(labels.error(format!(
            "holds {found} labels for the {count} images of {}",
            name.display()
        )));
    }
    super::check_memory(&images.path, count, rows * cols)?;
    let labels_path = labels.path.clone();
    let pixels = images.data()?;
    let labels = labels.data()?;
    check_labels(&labels, &labels_path, model)?;
    Ok(Dataset {
        shape: model.input.to_vec(),
        inputs: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: labels.iter().map(|&l| usize::from(l)).collect(),
        outputs: model.outputs,
    })
}

fn check_labels(labels: &[u8], path: &Path, model: ModelIo) -> Result<(), DataError> {
    let classes = model.classes();
    let Some((sample, &label)) = labels.iter().enumerate().find(|&(_, &l)| usize::from(l) >= classes) else {
        return Ok(());
    };
    let largest = labels.iter().max().map_or(0, |&l| usize::from(l));
    let help = if model.outputs == 1 {
        format!(
            "a single output unit takes labels 0 and 1; for {} classes end the model with `dense {} activation=softmax`",
            largest + 1,
            largest + 1
        )
    } else {
        format!(
            "labels count from 0, so labels up to {largest} need a last layer of {} units, e.g. `dense {} activation=softmax`",
            largest + 1,
            largest + 1
        )
    };
    let units = if model.outputs == 1 { "unit" } else { "units" };
    Err(DataError::new(
        path,
        format!(
            "label {label} (sample {sample}) is out of range for the model's {} output {units}",
            model.outputs
        ),
    )
    .help(help))
}

/// An IDX file whose header has been read and checked.
struct Idx {
    path: PathBuf,
    gzip: bool,
    reader: Box<dyn Read>,
    dims: Vec<usize>,
}

impl Idx {
    fn open(path: &Path, magic: u32) -> Result<Idx, DataError> {
        let mut buffered =
            BufReader::new(File::open(path).map_err(|e| DataError::new(path, format!("cannot open: {e}")))?);
        let head = buffered
            .fill_buf()
            .map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
        let gzip = head.starts_with(&GZIP);
        let reader: Box<dyn Read> = if gzip {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut idx = Idx {
            path: path.to_path_buf(),
            gzip,
            reader,
            dims: Vec::new(),
        };
        let found = idx.header_u32()?;
        if found != magic {
            // A damaged gzip stream may still inflate to garbage: its
            // checksum, at the end, is the better diagnosis.
            if gzip && let Err(e) = io::copy(&mut idx.reader, &mut io::sink()) {
                return Err(idx.read_error(e, "truncated: the compressed stream ends early"));
            }
            return Err(idx.error(format!(
                "wrong magic number: expected {magic} ({}), found {found}: {}",
                kind(magic),
                looks_like(found)
            )));
        }
        // The magic's low byte is the number of dimensions.
        for _ in 0..magic & 0xff {
            let d = idx.header_u32()?;
            idx.dims.push(d as usize);
        }
        Ok(idx)
    }

    fn header_u32(&mut self) -> Result<u32, DataError> {
        let mut bytes = [0; 4];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|e| self.read_error(e, "truncated: the file ends inside its header"))?;
        Ok(u32::from_be_bytes(bytes))
    }

    /// The data after the header, exactly as long as the header promises.
    /// Reading grows the buffer with the data actually there, so an absurd
    /// header cannot make us allocate.
    fn data(mut self) -> Result<Vec<u8>, DataError> {
        let promised = self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
        let mut data = Vec::new();
        let read = (&mut self.reader)
            .take(promised.saturating_add(1))
            .read_to_end(&mut data);
        read.map_err(|e| self.read_error(e, "truncated: the compressed stream ends early"))?;
        let what = format!("{} ({promised} bytes)", dims(&self.dims));
        match (data.len() as u64).cmp(&promised) {
            std::cmp::Ordering::Equal => Ok(data),
            std::cmp::Ordering::Less => Err(self.error(format!(
                "truncated: the header promises {what}, but only {} bytes follow it",
                data.len()
            ))),
            std::cmp::Ordering::Greater => {
                Err(self.error(format!("longer than its header promises: {what}, then more bytes")))
            }
        }
    }

    fn read_error(&self, e: io::Error, eof: &str) -> DataError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.error(eof)
        } else if self.gzip {
            self.error(format!("cannot decompress: {e}"))
        } else {
            self.error(format!("cannot read: {e}"))
        }
    }

    fn error(&self, message: impl Into<String>) -> DataError {
        DataError::new(&self.path, message)
    }
}

fn dims(shape: &[usize]) -> String {
    let [count, sample @ ..] = shape else {
        return String::new();
    };
    match sample {
        [] => format!("{count} labels"),
        _ => format!("{count} images of {}", super::dims(sample)),
    }
}

fn kind(magic: u32) -> &'static str {
    if magic == IMAGES { "images" } else { "labels" }
}

fn looks_like(found: u32) -> &'static str {
    match found {
        IMAGES => "this looks like an images file",
        LABELS => "this looks like a labels file",
        // Every IDX magic starts with two zero bytes.
        _ if found >> 16 == 0 => "an IDX file, but not of unsigned-byte images or labels",
        _ => "this is not an IDX file",
    }
}
