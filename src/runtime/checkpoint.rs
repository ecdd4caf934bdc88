//! Weights as safetensors files, and the atomic write
//! that every file a training run leaves behind goes through.
//!
//! Tensors carry Keras names (`conv2d/kernel`, `dense_1/bias`,
//! `batch_normalization/moving_mean`) in Keras layouts (HWIO conv kernels,
//! dense kernels (in, out)), so a file exported from Keras under those names
//! loads here unchanged, and ours load there.
//!
//! What a training run needs to resume is one such file too, its
//! checkpoint (see `train::resume`), so that one rename commits it.

use crate::diag::closest;
use crate::runtime::file;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `__metadata__` of a safetensors file: free-form strings.
pub type Metadata = BTreeMap<String, String>;

/// One named f32 tensor, its values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What a weights file held that the model asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// In the order the model asked for them.
    pub tensors: Vec<Tensor>,
    pub metadata: Metadata,
}

/// A file we could not read or write, named as the user gave it.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub writing: bool,
    pub source: io::Error,
}

#[derive(Debug)]
pub enum CheckpointError {
    File(FileError),
    /// The bytes are not a safetensors file.
    NotSafetensors {
        path: PathBuf,
        reason: String,
    },
    /// The tensors given to `save` cannot form a file.
    Invalid {
        path: PathBuf,
        reason: String,
    },
    /// A safetensors file that does not fit the model: every problem found.
    Mismatch {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// `similar` is a tensor of the file whose name is a plausible typo.
    Missing { name: String, similar: Option<String> },
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A dtype we cannot convert to f32.
    Dtype { name: String, dtype: String },
    /// In the file but not in the model.
    Unexpected { name: String },
    /// Values that are NaN or infinite, in a model's weights: training from
    /// them, or predicting with them, gives NaN everywhere with no hint of
    /// why. (The file format itself carries any value, bit for bit.)
    NonFinite { name: String, count: usize },
    /// `found` is `None` when the key is absent.
    Metadata {
        key: String,
        found: Option<String>,
        expected: String,
    },
}

/// Writes `bytes` to `path` so that, whenever the process dies, `path` holds
/// either its previous contents or all of `bytes`.
///
/// The bytes go to a temporary file in the same directory (a rename is
/// atomic only within one file system), are fsynced, and renamed over
/// `path`; then the directory is fsynced so the rename itself survives a
/// power cut. The temporary name is unique to the process and the write
/// ([`temp_path`]), so two writers never share one; a writer killed
/// mid-write leaves its temporary file, which [`remove_stale_temps`] clears.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let fail = |source| FileError {
        path: path.to_path_buf(),
        writing: true,
        source,
    };
    let (dir, name) = split(path).map_err(fail)?;
    let temp = temp_path(dir, name);
    let written = write_synced(&temp, bytes).and_then(|()| {
        pause_before_rename(name);
        fs::rename(&temp, path)
    });
    if let Err(e) = written {
        // Best effort: the write already failed, and that is the error to report.
        let _ = fs::remove_file(&temp);
        return Err(fail(e));
    }
    sync_dir(dir).map_err(fail)
}

/// The directory and file name of `path`.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file name"));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// `.<name>.<pid>-<n>.tmp` in `dir`: unique among live processes and among
/// the writes of this one.
pub fn temp_path(dir: &Path, name: &OsStr) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut temp = temp_prefix(name);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    temp.push(format!("{}-{n}.tmp", std::process::id()));
    dir.join(temp)
}

fn temp_prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    prefix
}

/// Removes the temporary files that writers of `path` killed mid-write
/// left. Only for a caller that knows no other process is writing `path`
/// (a training run holding its folder's lock).
pub fn remove_stale_temps(path: &Path) -> Result<(), FileError> {
    let fail = |source| FileError {
        path: path.to_path_buf(),
        writing: true,
        source,
    };
    let (dir, name) = split(path).map_err(fail)?;
    let prefix = temp_prefix(name);
    let prefix = prefix.as_encoded_bytes();
    for entry in fs::read_dir(dir).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let file = entry.file_name();
        let file = file.as_encoded_bytes();
        if file.starts_with(prefix) && file.ends_with(b".tmp") {
            fs::remove_file(entry.path()).map_err(fail)?;
        }
    }
    Ok(())
}

/// A test hook, and the only place that reads `CNNC_TEST_PAUSE_BEFORE_RENAME`:
/// set to a number of milliseconds, every atomic write announces itself on
/// stderr and waits that long between writing its temporary file and
/// renaming it, so that tests can kill a run inside a checkpoint's commit.
fn pause_before_rename(name: &OsStr) {
    let Some(ms) = std::env::var_os("CNNC_TEST_PAUSE_BEFORE_RENAME") else {
        return;
    };
    let ms = ms.to_str().and_then(|ms| ms.parse().ok()).unwrap_or(0);
    eprintln!("test hook: renaming {} in {ms} ms", name.to_string_lossy());
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// Other systems cannot open a directory as a file to sync it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Saves `tensors` and `metadata` to `path` as safetensors, atomically.
pub fn save(path: &Path, tensors: &[Tensor], metadata: &Metadata) -> Result<(), CheckpointError> {
    let bytes = encode(tensors, metadata).map_err(|reason| CheckpointError::Invalid {
        path: path.to_path_buf(),
        reason,
    })?;
    write_atomic(path, &bytes).map_err(CheckpointError::File)
}

// The header is written here rather than by `safetensors::serialize`, which
// takes the metadata as a HashMap: its key order, and so the file's bytes,
// would change from run to run, and identical runs should give identical files.
fn encode(tensors: &[Tensor], metadata: &Metadata) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&Tensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(format!("two tensors are named `{}`", pair[0].name));
    }
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0;
    for t in &sorted {
        if t.name == "__metadata__" {
            return Err("a tensor cannot be named `__metadata__`".into());
        }
        if t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) != Some(t.data.len()) {
            return Err(format!(
                "`{}` has shape {:?} but {} values",
                t.name,
                t.shape,
                t.data.len()
            ));
        }
        let end = offset + 4 * t.data.len();
        let info = serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]});
        header.insert(t.name.clone(), info);
        offset = end;
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    // The format pads the header with spaces so the data starts 8-aligned.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + text.len() + offset);
    bytes.extend((text.len() as u64).to_le_bytes());
    bytes.extend(text);
    for t in sorted {
        bytes.extend(t.data.iter().flat_map(|x| x.to_le_bytes()));
    }
    Ok(bytes)
}

/// Loads the tensors a model expects, `(name, shape)`, in that order. F64,
/// F16 and BF16 tensors (as exported from mixed-precision Keras models)
/// are converted to f32. Any missing, misshapen, unconvertible or extra
/// tensor is an error that lists them all.
pub fn load(path: &Path, expected: &[(&str, &[usize])]) -> Result<Checkpoint, CheckpointError> {
    let (checkpoint, problems) = inspect(path, expected)?;
    mismatch(path, problems)?;
    Ok(checkpoint)
}

/// As [`load`], but what is wrong with the tensors is returned beside
/// what fits, for a caller that checks the metadata first: only a file
/// that cannot be read at all is an error.
pub fn inspect(path: &Path, expected: &[(&str, &[usize])]) -> Result<(Checkpoint, Vec<Problem>), CheckpointError> {
    let (tensors, metadata, problems) = read(path, expected)?;
    Ok((Checkpoint { tensors, metadata }, problems))
}

pub fn mismatch(path: &Path, problems: Vec<Problem>) -> Result<(), CheckpointError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(CheckpointError::Mismatch {
        path: path.to_path_buf(),
        problems,
    })
}

type Contents = (Vec<Tensor>, Metadata, Vec<Problem>);

/// The expected tensors the file holds, its metadata, and what is wrong
/// with its tensors; only a file that cannot be read at all is an error.
fn read(path: &Path, expected: &[(&str, &[usize])]) -> Result<Contents, CheckpointError> {
    let bytes = file::read_bounded(path, "a safetensors file", size_limit(expected)).map_err(|source| {
        CheckpointError::File(FileError {
            path: path.to_path_buf(),
            writing: false,
            source,
        })
    })?;
    let foreign = |reason: String| CheckpointError::NotSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(format) = keras_format(&bytes) {
        return Err(foreign(format.into()));
    }
    let foreign = |e: SafeTensorError| {
        foreign(match e {
            SafeTensorError::HeaderTooSmall => "it is shorter than a safetensors header".into(),
            // The first 8 bytes of anything else read as an absurd length.
            SafeTensorError::HeaderTooLarge => "its first 8 bytes are not the length of a safetensors header".into(),
            SafeTensorError::InvalidHeaderLength => "it ends inside its header: was it cut short?".into(),
            other => other.to_string(),
        })
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(foreign)?;
    let file = SafeTensors::deserialize(&bytes).map_err(foreign)?;

    let wanted: HashSet<&str> = expected.iter().map(|&(name, _)| name).collect();
    let names = file.names();
    let prefix = model_prefix(&names, &wanted);
    let mut extra: Vec<&str> = names
        .iter()
        .map(|n| prefix.map_or(*n, |p| &n[p.len() + 1..]))
        .filter(|n| !wanted.contains(n))
        .collect();
    extra.sort_unstable();
    let mut suggested = HashSet::new();
    let mut problems = Vec::new();
    let mut tensors = Vec::with_capacity(expected.len());
    for &(name, shape) in expected {
        let stored = prefix.map_or_else(|| name.to_string(), |p| format!("{p}/{name}"));
        let Ok(view) = file.tensor(&stored) else {
            let similar = closest(name, extra.iter().copied());
            suggested.extend(similar);
            problems.push(Problem::Missing {
                name: name.into(),
                similar: similar.map(String::from),
            });
            continue;
        };
        let fits = view.shape() == shape;
        if !fits {
            problems.push(Problem::Shape {
                name: name.into(),
                found: view.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        match to_f32(view.dtype(), view.data()) {
            Some(data) if fits => tensors.push(Tensor {
                name: name.into(),
                shape: shape.to_vec(),
                data,
            }),
            Some(_) => {}
            None => problems.push(Problem::Dtype {
                name: name.into(),
                dtype: view.dtype().to_string(),
            }),
        }
    }
    // A suggested name is already reported as the likely typo of a missing one.
    let unexpected = extra.into_iter().filter(|n| !suggested.contains(n));
    problems.extend(unexpected.map(|n| Problem::Unexpected { name: n.into() }));
    let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok((tensors, metadata, problems))
}

/// The most bytes a file holding `expected` may have: every value as f64
/// (read and converted), three times over (a checkpoint keeps up to two
/// optimizer slots beside each weight), and 64 MiB of header. A file past
/// it, or a device such as /dev/zero, is refused before it is read.
fn size_limit(expected: &[(&str, &[usize])]) -> u64 {
    let values: u64 = expected
        .iter()
        .map(|(_, shape)| shape.iter().map(|&d| d as u64).product::<u64>())
        .sum();
    values.saturating_mul(8 * 3).saturating_add(64 << 20)
}

/// The model name Keras 3 puts before every variable's path
/// (`sequential/conv2d/kernel`, `v.path` of `model.weights`), if every
/// tensor of the file has one and the same, and none is named as the model
/// names its own: such a file is read without the prefix.
fn model_prefix<'a>(names: &[&'a str], wanted: &HashSet<&str>) -> Option<&'a str> {
    let (prefix, _) = names.first()?.split_once('/')?;
    let under = |n: &str| {
        n.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest.contains('/'))
    };
    let ours = names.iter().any(|n| wanted.contains(n));
    (!ours && names.iter().all(|n| under(n))).then_some(prefix)
}

/// What a file Keras wrote is, by its first bytes: users will try them.
fn keras_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        Some("it is HDF5, as Keras's .h5 and .weights.h5 files are")
    } else if bytes.starts_with(b"PK\x03\x04") {
        Some("it is a zip archive, as Keras's .keras files are")
    } else {
        None
    }
}

/// Little-endian values of a float dtype as f32; `None` for other dtypes.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes.as_chunks().0.iter().map(|b| f32::from_le_bytes(*b)).collect(),
        Dtype::F64 => bytes
            .as_chunks()
            .0
            .iter()
            .map(|b| f64::from_le_bytes(*b) as f32)
            .collect(),
        Dtype::F16 => bytes
            .as_chunks()
            .0
            .iter()
            .map(|b| f16_to_f32(u16::from_le_bytes(*b)))
            .collect(),
        Dtype::BF16 => bytes
            .as_chunks()
            .0
            .iter()
            .map(|b| bf16_to_f32(u16::from_le_bytes(*b)))
            .collect(),
        _ => return None,
    })
}

/// IEEE binary16 to f32, exactly: every f16 is an f32.
fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exponent = u32::from(bits >> 10) & 0x1f;
    let mantissa = u32::from(bits & 0x3ff);
    match exponent {
        0 => {
            // Subnormal: mantissa * 2^-24, exact in f32.
            let magnitude = mantissa as f32 * f32::from_bits(0x3380_0000);
            f32::from_bits(sign | magnitude.to_bits())
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | mantissa << 13),
        _ => f32::from_bits(sign | (exponent + 127 - 15) << 23 | mantissa << 13),
    }
}

/// bfloat16 is the top half of an f32.
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match (self.writing, self.source.kind()) {
            (false, io::ErrorKind::NotFound) => write!(f, "no such file `{path}`"),
            (false, _) => write!(f, "cannot read `{path}`: {}", self.source),
            (true, _) => write!(f, "cannot write `{path}`: {}", self.source),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::File(e) => e.fmt(f),
            CheckpointError::NotSafetensors { path, reason } => write!(
                f,
                "`{}` is not a safetensors file ({reason})\n  = help: save the weights with safetensors, each \
                 tensor named as Keras names it (`conv2d/kernel`, `dense/bias`)",
                path.display()
            ),
            CheckpointError::Invalid { path, reason } => write!(f, "cannot save `{}`: {reason}", path.display()),
            CheckpointError::Mismatch { path, problems } => {
                write!(f, "`{}` does not fit the model:", path.display())?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                if problems.iter().any(|p| matches!(p, Problem::Unexpected { .. })) {
                    write!(
                        f,
                        "\n  = help: tensors the model lacks mean the file was saved from another model"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { name, similar: None } => write!(f, "`{name}` is missing"),
            Problem::Missing {
                name,
                similar: Some(similar),
            } => write!(f, "`{name}` is missing (did you mean `{similar}`?)"),
            Problem::Shape { name, found, expected } => {
                write!(
                    f,
                    "`{name}` has shape {found:?} in the file, the model needs {expected:?}"
                )
            }
            Problem::Dtype { name, dtype } => {
                write!(f, "`{name}` holds {dtype} values; cnnc reads F32, F64, F16 and BF16")
            }
            Problem::Unexpected { name } => write!(f, "`{name}` is in the file but not in the model"),
            Problem::NonFinite { name, count } => {
                write!(
                    f,
                    "`{name}` holds {count} NaN or infinite values: the run that wrote it diverged"
                )
            }
            Problem::Metadata {
                key,
                found: None,
                expected,
            } => write!(f, "metadata `{key}` is missing, expected {expected}"),
            Problem::Metadata {
                key,
                found: Some(found),
                expected,
            } => write!(f, "metadata `{key}` is `{found}`, expected {expected}"),
        }
    }
}
