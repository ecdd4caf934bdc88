//! Image folders, one subfolder per class, as Keras's
//! `image_dataset_from_directory` reads them: class names are the subfolder
//! names in sorted order; PNG and JPEG images of any size are resized to the
//! model's input and given its channel count.
//!
//! A folder holds either `train/` (and optionally `val/`, `test/`), each with
//! the same class folders, or the class folders themselves. Hidden files
//! (`.DS_Store`) are skipped; any other file in a class folder that is not a
//! `.png`, `.jpg` or `.jpeg` is an error rather than silently dropped, so a
//! dataset never quietly shrinks. Loose files beside the class folders
//! (a README) are ignored, loose images are an error.

use super::decode::{self, Size};
use super::select::Selection;
use super::{DataError, Dataset, ModelIo, Splits, check_split, training_count};
use std::fs;
use std::path::{Path, PathBuf};

const SPLITS: [&str; 3] = ["train", "val", "test"];
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
const LAYOUT: &str = "an image dataset holds one folder per class, named after the class, each with .png or .jpg \
                      images (or train/, val/ and test/ folders, each holding the same class folders)";

#[derive(Clone, Debug)]
struct Class {
    name: String,
    images: Vec<PathBuf>,
}

pub(super) fn load(
    root: &Path,
    model: ModelIo,
    split: Option<f64>,
    selection: &Selection,
) -> Result<Splits, DataError> {
    let size = decode::size(root, model)?;
    let entries = listing(root)?;
    let parts = if entries.iter().any(|e| e.is_dir && SPLITS.contains(&e.name.as_str())) {
        split_layout(root, &entries, split)?
    } else {
        let mut train = classes(root, entries)?;
        let val = split.map(|s| validation(&mut train, s, root)).transpose()?;
        Parts {
            train_dir: root.to_path_buf(),
            train,
            val,
            test: None,
        }
    };
    let parts = select(parts, selection)?;
    check_outputs(&parts.train_dir, &parts.train, model)?;
    Ok(Splits {
        train: decode(&parts.train, size, model)?,
        val: parts.val.map(|v| decode(&v, size, model)).transpose()?,
        test: parts.test.map(|t| decode(&t, size, model)).transpose()?,
        classes: parts.train.into_iter().map(|c| c.name).collect(),
    })
}

/// The images of each split, by class, before decoding.
struct Parts {
    /// Where the training classes were found, for errors about them.
    train_dir: PathBuf,
    train: Vec<Class>,
    val: Option<Vec<Class>>,
    test: Option<Vec<Class>>,
}

fn split_layout(root: &Path, entries: &[Entry], split: Option<f64>) -> Result<Parts, DataError> {
    if let Some(other) = entries.iter().find(|e| e.is_dir && !SPLITS.contains(&e.name.as_str())) {
        return Err(DataError::new(&other.path, "a folder beside train/, val/ and test/").help(LAYOUT));
    }
    no_stray_image(entries)?;
    let part = |name: &str| {
        entries
            .iter()
            .find(|e| e.is_dir && e.name == name)
            .map(|e| e.path.clone())
    };
    let train_dir = part("train").ok_or_else(|| {
        DataError::new(
            root.join("train"),
            "missing folder: the dataset has val/ or test/ but no train/",
        )
        .help(LAYOUT)
    })?;
    let mut train = classes(&train_dir, listing(&train_dir)?)?;
    let val = match (part("val"), split) {
        (Some(dir), Some(_)) => {
            return Err(
                DataError::new(dir, "validation_split is set, but the dataset has its own val/ folder")
                    .help("remove `validation_split` to validate on val/, or remove val/ to split train/"),
            );
        }
        (Some(dir), None) => Some(same_classes(&train, &dir)?),
        (None, Some(s)) => Some(validation(&mut train, s, &train_dir)?),
        (None, None) => None,
    };
    let test = part("test").map(|dir| same_classes(&train, &dir)).transpose()?;
    Ok(Parts {
        train_dir,
        train,
        val,
        test,
    })
}

/// The selected classes of every split, in the selection's order, and at
/// most `per_class` training images of each.
fn select(parts: Parts, selection: &Selection) -> Result<Parts, DataError> {
    let names: Vec<String> = parts.train.iter().map(|c| c.name.clone()).collect();
    let labels = selection.labels(&names, &parts.train_dir)?;
    let chosen = |classes: Vec<Class>| {
        let mut kept: Vec<(usize, Class)> = classes
            .into_iter()
            .zip(&labels)
            .filter_map(|(c, label)| label.map(|l| (l, c)))
            .collect();
        kept.sort_by_key(|&(l, _)| l);
        kept.into_iter().map(|(_, c)| c).collect::<Vec<_>>()
    };
    let mut draw = selection.draw();
    let train = chosen(parts.train)
        .into_iter()
        .map(|c| Class {
            images: draw
                .keep(c.images.len())
                .into_iter()
                .map(|i| c.images[i].clone())
                .collect(),
            name: c.name,
        })
        .collect();
    Ok(Parts {
        train_dir: parts.train_dir,
        train,
        val: parts.val.map(chosen),
        test: parts.test.map(chosen),
    })
}

/// Other loose files (a README) are no part of the data; a loose image
/// surely meant to be.
fn no_stray_image(entries: &[Entry]) -> Result<(), DataError> {
    match entries.iter().find(|e| !e.is_dir && is_image(&e.name)) {
        Some(stray) => Err(DataError::new(&stray.path, "an image outside any class folder")
            .help("move it into the folder of its class")),
        None => Ok(()),
    }
}

/// The class folders of `dir`, which must be those of train/.
fn same_classes(train: &[Class], dir: &Path) -> Result<Vec<Class>, DataError> {
    let classes = classes(dir, listing(dir)?)?;
    let help = "val/ and test/ hold the same class folders as train/";
    if let Some(extra) = classes.iter().find(|c| !train.iter().any(|t| t.name == c.name)) {
        return Err(DataError::new(dir.join(&extra.name), "a class that train/ does not have").help(help));
    }
    if let Some(missing) = train.iter().find(|t| !classes.iter().any(|c| c.name == t.name)) {
        return Err(DataError::new(dir, format!("no class folder `{}`, which train/ has", missing.name)).help(help));
    }
    Ok(classes)
}

/// Keras's `validation_split` per class: the last fraction of each class's
/// images, in sorted order. Images are sorted by class, so cutting the whole
/// list would leave whole classes out of training.
fn validation(train: &mut [Class], split: f64, dir: &Path) -> Result<Vec<Class>, DataError> {
    let val: Vec<Class> = train
        .iter_mut()
        .map(|c| Class {
            name: c.name.clone(),
            images: c.images.split_off(training_count(c.images.len(), split)),
        })
        .collect();
    check_split(count(train), count(&val), split, dir)?;
    Ok(val)
}

fn count(classes: &[Class]) -> usize {
    classes.iter().map(|c| c.images.len()).sum()
}

fn check_outputs(dir: &Path, classes: &[Class], model: ModelIo) -> Result<(), DataError> {
    let n = classes.len();
    if n == model.classes() {
        return Ok(());
    }
    let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
    if n == 1 {
        return Err(DataError::new(
            dir,
            format!("only one class folder ({}): a classifier needs two or more", names[0]),
        )
        .help(LAYOUT));
    }
    let units = if model.outputs == 1 { "unit" } else { "units" };
    let help = if n == 2 {
        "end the model with `dense 2 activation=softmax`, or `dense 1 activation=sigmoid`".to_string()
    } else {
        format!("end the model with one unit per class: `dense {n} activation=softmax`")
    };
    Err(DataError::new(
        dir,
        format!(
            "{n} class folders ({}), but the model has {} output {units}",
            names.join(", "),
            model.outputs
        ),
    )
    .help(help))
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    path: PathBuf,
    is_dir: bool,
}

/// The visible entries of `dir`, sorted by name.
fn listing(dir: &Path) -> Result<Vec<Entry>, DataError> {
    let unreadable = |e: std::io::Error| DataError::new(dir, format!("cannot read the folder: {e}"));
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with('.') {
            entries.push(Entry {
                is_dir: path.is_dir(),
                name,
                path,
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn classes(dir: &Path, entries: Vec<Entry>) -> Result<Vec<Class>, DataError> {
    no_stray_image(&entries)?;
    let mut classes = Vec::new();
    for entry in entries.into_iter().filter(|e| e.is_dir) {
        classes.push(Class {
            images: images(&entry.path)?,
            name: entry.name,
        });
    }
    if classes.is_empty() {
        return Err(DataError::new(dir, "no class folders").help(LAYOUT));
    }
    Ok(classes)
}

fn images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut images = Vec::new();
    for entry in listing(dir)? {
        if entry.is_dir {
            return Err(DataError::new(entry.path, "a folder inside a class folder")
                .help("a class folder holds its images directly"));
        }
        if !is_image(&entry.name) {
            return Err(DataError::new(entry.path, "not a PNG or JPEG image").help(
                "cnnc reads .png, .jpg and .jpeg files; move other files out of the class folders \
                 (hidden files such as .DS_Store are skipped)",
            ));
        }
        images.push(entry.path);
    }
    if images.is_empty() {
        return Err(DataError::new(dir, "empty class folder: no images").help(LAYOUT));
    }
    Ok(images)
}

fn is_image(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn decode(classes: &[Class], size: Size, model: ModelIo) -> Result<Dataset, DataError> {
    let samples: Vec<(&Path, usize)> = classes
        .iter()
        .enumerate()
        .flat_map(|(label, c)| c.images.iter().map(move |p| (p.as_path(), label)))
        .collect();
    decode::dataset(&samples, size, model)
}
