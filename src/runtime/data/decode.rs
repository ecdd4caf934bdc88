//! Images into the model's input: decoded (format read from the content, so
//! a PNG named `.jpg` still loads), converted to grayscale or RGB by the
//! model's channel count, resized to its height and width, scaled to [0, 1].

use super::{DataError, Dataset, ModelIo};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, ImageReader, Luma, Pixel, Rgb32FImage};
use std::fs;
use std::io::{BufRead, Cursor, Seek};
use std::path::Path;
use std::thread;

/// The model's input image size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Size {
    height: u32,
    width: u32,
    channels: usize,
}

/// The model's input as an image size; `root` is the dataset, named in the
/// errors.
pub(super) fn size(root: &Path, model: ModelIo) -> Result<Size, DataError> {
    let Some([height, width, channels]) = model.image() else {
        return Err(DataError::new(
            root,
            format!(
                "image folders feed models whose input is an image, but the model's input is {}",
                model.input_text()
            ),
        )
        .help("write e.g. `input 64x64x3`, and `flatten` before the dense layers"));
    };
    if channels != 1 && channels != 3 {
        return Err(DataError::new(
            root,
            format!(
                "images are read as grayscale (1 channel) or RGB (3), but the model's input is {}",
                model.input_text()
            ),
        )
        .help(format!(
            "write `input {height}x{width}x1` or `input {height}x{width}x3`"
        )));
    }
    let side = |n: usize| {
        u32::try_from(n)
            .map_err(|_| DataError::new(root, format!("the model's input {} is too large", model.input_text())))
    };
    Ok(Size {
        height: side(height)?,
        width: side(width)?,
        channels,
    })
}

/// Decodes `samples` (image, label) in order, on all cores: JPEG decoding
/// dominates the load of a few thousand photos.
pub(super) fn dataset(samples: &[(&Path, usize)], size: Size, model: ModelIo) -> Result<Dataset, DataError> {
    let values = size.height as usize * size.width as usize * size.channels;
    if let Some(&(first, _)) = samples.first() {
        super::check_memory(first.parent().unwrap_or(first), samples.len(), values)?;
    }
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = samples.len().div_ceil(workers).max(1);
    let parts: Vec<Result<Vec<f32>, DataError>> = thread::scope(|s| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter().try_fold(Vec::new(), |mut all, (p, _)| {
                        all.extend(pixels(p, size)?);
                        Ok(all)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut inputs = Vec::new();
    for part in parts {
        inputs.extend(part?);
    }
    Ok(Dataset {
        shape: model.input.to_vec(),
        inputs,
        labels: samples.iter().map(|&(_, label)| label).collect(),
        outputs: model.outputs,
    })
}

/// The environment variable that sets the most pixels an image may have;
/// the default is `DEFAULT_MAX_PIXELS`.
pub const MAX_PIXELS_ENV: &str = "CNNC_MAX_IMAGE_PIXELS";
/// 64 megapixels: past any camera photo a CNN is trained on, and a decoded
/// 4-channel float image of it already takes 1 GiB.
pub const DEFAULT_MAX_PIXELS: u64 = 64 << 20;

fn max_pixels() -> u64 {
    std::env::var(MAX_PIXELS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_PIXELS)
}

/// One image file in H, W, C order, scaled to [0, 1]. The format is read
/// from the content, so a PNG named `.jpg` still loads.
fn pixels(path: &Path, size: Size) -> Result<Vec<f32>, DataError> {
    let fail = |what: String| DataError::new(path, what);
    if fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?.len() == 0 {
        return Err(fail("an empty file, not an image".into()));
    }
    let open = || ImageReader::open(path).and_then(|r| r.with_guessed_format());
    decode(open, path, size)
}

/// One encoded image held in memory (e.g. a request's body), as [`pixels`]
/// reads a file; `name` names it in errors.
pub(super) fn pixels_of(bytes: &[u8], name: &Path, size: Size) -> Result<Vec<f32>, DataError> {
    if bytes.is_empty() {
        return Err(DataError::new(name, "an empty file, not an image"));
    }
    decode(
        || ImageReader::new(Cursor::new(bytes)).with_guessed_format(),
        name,
        size,
    )
}

/// Decodes what `open` reads (opened twice: the header, then the pixels),
/// converted to the model's channels and resized to its input.
fn decode<R: BufRead + Seek>(
    open: impl Fn() -> std::io::Result<ImageReader<R>>,
    name: &Path,
    size: Size,
) -> Result<Vec<f32>, DataError> {
    let fail = |what: String| DataError::new(name, what);
    let open = || open().map_err(|e| fail(format!("cannot read: {e}")));
    // The header first: a small file can claim a huge image.
    let (width, height) = open()?
        .into_dimensions()
        .map_err(|e| fail(format!("not a readable image: {e}")))?;
    let limit = max_pixels();
    if u64::from(width) * u64::from(height) > limit {
        return Err(fail(format!(
            "a {width}x{height} image, more than the limit of {limit} pixels per image"
        ))
        .help(format!("to allow more, set {MAX_PIXELS_ENV} to a number of pixels")));
    }
    let image = open()?
        .decode()
        .map_err(|e| fail(format!("not a readable image: {e}")))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(fail(format!(
            "an empty image ({}x{} pixels)",
            image.width(),
            image.height()
        )));
    }
    let rgb = image.into_rgb32f();
    Ok(if size.channels == 1 {
        resize(luma(&rgb), size)
    } else {
        resize(rgb, size)
    })
}

/// Grayscale with the ITU-R 601 weights that PIL, libjpeg and
/// `tf.image.rgb_to_grayscale` use, so Keras users see the same values.
fn luma(rgb: &Rgb32FImage) -> ImageBuffer<Luma<f32>, Vec<f32>> {
    ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        Luma([0.299 * r + 0.587 * g + 0.114 * b])
    })
}

/// Bilinear (triangle) filtering, widened when shrinking so that every
/// source pixel counts, as PIL's bilinear resize does.
fn resize<P: Pixel<Subpixel = f32> + 'static>(image: ImageBuffer<P, Vec<f32>>, size: Size) -> Vec<f32> {
    if image.dimensions() == (size.width, size.height) {
        return image.into_raw();
    }
    imageops::resize(&image, size.width, size.height, FilterType::Triangle).into_raw()
}
