//! Data augmentation of training batches: Keras 3's RandomFlip,
//! RandomRotation and RandomTranslation, with their meanings and defaults,
//! resampling as Keras's `affine_transform` does on its JAX backend
//! (`jax.scipy.ndimage.map_coordinates`: bilinear or nearest, and its
//! fill modes). The random draws come from a stream the caller owns
//! (`purpose::AUGMENT`), a fixed number per image, so that a seed fixes
//! every batch and a resumed epoch can draw past the steps it skips.

use crate::parse::ast::{Augment, FillMode, Flip, Interpolation};
use crate::runtime::rng::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

/// What happens to one image: the draws of each enabled layer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Transform {
    pub flip: bool,
    /// Counter-clockwise, in degrees, as Keras's RandomRotation draws it.
    pub degrees: f64,
    /// Down and right, in pixels (Keras's `height_translate` and
    /// `width_translate`).
    pub shift: [f64; 2],
}

/// The transforms of `n` images, drawn in a fixed order per image: the
/// flip's coin, the angle, the vertical then the horizontal shift, each
/// only if its layer is enabled.
pub fn draw(augment: &Augment, n: usize, rng: &mut Rng) -> Vec<Transform> {
    let between = |rng: &mut Rng, factor: f64| -factor + 2.0 * factor * rng.uniform();
    (0..n)
        .map(|_| {
            let mut t = Transform::default();
            if augment.flip.is_some() {
                // RandomFlip: flip where a uniform draw is at most 0.5.
                t.flip = rng.uniform() <= 0.5;
            }
            if let Some(factor) = augment.rotation {
                t.degrees = between(rng, factor) * 360.0;
            }
            if let Some([height, width]) = augment.translation {
                t.shift = [between(rng, height), between(rng, width)];
            }
            t
        })
        .collect()
}

/// Applies `transforms[i]` to image `i` of `inputs` (`[n, h, w, c]`, or
/// `[n, h, w]` for one channel): the flip, then the rotation, then the
/// shift, each layer only if `augment` enables it.
pub fn apply(augment: &Augment, inputs: &mut ArrayD<f32>, transforms: &[Transform]) {
    let shape = inputs.shape().to_vec();
    let (h, w, c) = match shape[1..] {
        [h, w] => (h, w, 1),
        [h, w, c] => (h, w, c),
        _ => return,
    };
    let Some(data) = inputs.as_slice_mut() else {
        return;
    };
    let size = h * w * c;
    if size == 0 {
        return;
    }
    let image = Image { h, w, c };
    // Images are independent: the cores share them, each with its own
    // copy of the image being resampled.
    data.par_chunks_exact_mut(size).zip(transforms).for_each_init(
        || vec![0.0f32; size],
        |scratch, (pixels, t)| {
            if let (Some(flip), true) = (augment.flip, t.flip) {
                image.flip(pixels, flip);
            }
            let mut resample = |affine: Affine| {
                scratch.copy_from_slice(pixels);
                image.resample(scratch, pixels, affine, augment);
            };
            if augment.rotation.is_some() {
                resample(Affine::rotation(t.degrees, h, w));
            }
            if augment.translation.is_some() {
                resample(Affine::translation(t.shift));
            }
        },
    );
}

#[derive(Clone, Copy)]
struct Image {
    h: usize,
    w: usize,
    c: usize,
}

/// Keras's transform `[a0, a1, a2, b0, b1, b2]`: output pixel `(x, y)`
/// reads the input at column `a0 x + a1 y + a2`, row `b0 x + b1 y + b2`.
#[derive(Clone, Copy, Debug)]
struct Affine([f64; 6]);

impl Affine {
    /// RandomRotation's matrix: about the image's centre
    /// (`(w - 1) / 2, (h - 1) / 2`).
    fn rotation(degrees: f64, h: usize, w: usize) -> Affine {
        let theta = degrees.to_radians();
        let (sin, cos) = theta.sin_cos();
        let (cx, cy) = (0.5 * (w as f64 - 1.0), 0.5 * (h as f64 - 1.0));
        Affine([cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos])
    }

    /// RandomTranslation's matrix: the content moves `[down, right]`.
    fn translation([down, right]: [f64; 2]) -> Affine {
        Affine([1.0, 0.0, -right, 0.0, 1.0, -down])
    }
}

impl Image {
    fn flip(&self, pixels: &mut [f32], flip: Flip) {
        let (horizontal, vertical) = match flip {
            Flip::Horizontal => (true, false),
            Flip::Vertical => (false, true),
            Flip::HorizontalAndVertical => (true, true),
        };
        let row = self.w * self.c;
        if horizontal {
            for line in pixels.chunks_exact_mut(row) {
                for x in 0..self.w / 2 {
                    for ch in 0..self.c {
                        line.swap(x * self.c + ch, (self.w - 1 - x) * self.c + ch);
                    }
                }
            }
        }
        if vertical {
            for y in 0..self.h / 2 {
                let (top, bottom) = pixels.split_at_mut((self.h - 1 - y) * row);
                top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
            }
        }
    }

    /// `to[y, x] = from` sampled where `affine` maps `(x, y)`.
    fn resample(&self, from: &[f32], to: &mut [f32], Affine([a0, a1, a2, b0, b1, b2]): Affine, augment: &Augment) {
        let Image { h, w, c } = *self;
        let mode = augment.fill_mode;
        let fill = augment.fill_value;
        // Where pixel (r, q) starts in `from`, or `None` for the fill value.
        let at = |r: Option<usize>, q: Option<usize>| Some((r? * w + q?) * c);
        let offset = |r: i64, q: i64| at(fixed(r, h, mode), fixed(q, w, mode));
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f64, y as f64);
                let row = b0 * xf + b1 * yf + b2;
                let col = a0 * xf + a1 * yf + a2;
                let out = &mut to[(y * w + x) * c..][..c];
                match augment.interpolation {
                    // Halves round away from zero, as JAX's nearest does.
                    Interpolation::Nearest => match offset(row.round() as i64, col.round() as i64) {
                        Some(at) => out.copy_from_slice(&from[at..at + c]),
                        None => out.fill(fill as f32),
                    },
                    Interpolation::Bilinear => {
                        let (r, q) = (row.floor(), col.floor());
                        let (down, right) = (row - r, col - q);
                        let (r, q) = (r as i64, q as i64);
                        let (top, bottom) = (fixed(r, h, mode), fixed(r + 1, h, mode));
                        let (left, right_of) = (fixed(q, w, mode), fixed(q + 1, w, mode));
                        let taps = [
                            (at(top, left), (1.0 - down) * (1.0 - right)),
                            (at(top, right_of), (1.0 - down) * right),
                            (at(bottom, left), down * (1.0 - right)),
                            (at(bottom, right_of), down * right),
                        ];
                        for (ch, value) in out.iter_mut().enumerate() {
                            let mut sum = 0.0;
                            for &(at, weight) in &taps {
                                sum += weight * at.map_or(fill, |at| f64::from(from[at + ch]));
                            }
                            *value = sum as f32;
                        }
                    }
                }
            }
        }
    }
}

/// Where index `i` of an axis of `size` reads, or `None` for the fill
/// value: JAX's index fixers (`reflect` is `dcba|abcd|dcba`), past the
/// in-range indices that read themselves in every mode.
fn fixed(i: i64, size: usize, mode: FillMode) -> Option<usize> {
    let n = size as i64;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    let index = match mode {
        FillMode::Constant => return None,
        FillMode::Nearest => i.clamp(0, n - 1),
        FillMode::Wrap => i.rem_euclid(n),
        FillMode::Reflect => {
            // A triangular wave over the half-pixel grid.
            let (j, m) = (2 * i + 1, 2 * n + 1);
            let s = m - 1;
            let mirrored = ((j + s).rem_euclid(2 * s) - s).abs();
            (mirrored - 1).div_euclid(2)
        }
    };
    Some(index as usize)
}

#[cfg(test)]
mod tests {
    use super::fixed;
    use crate::parse::ast::FillMode;

    #[test]
    fn fill_modes_read_past_the_edges_as_keras_documents_them() {
        // Keras's docs, for `abcd`: reflect `dcba|abcd|dcba`, wrap
        // `abcd|abcd|abcd`, nearest `aaaa|abcd|dddd`.
        let read = |mode| (-4..8).map(|i| fixed(i, 4, mode)).collect::<Vec<_>>();
        let some = |v: &[usize]| v.iter().map(|&i| Some(i)).collect::<Vec<_>>();
        assert_eq!(read(FillMode::Reflect), some(&[3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]));
        assert_eq!(read(FillMode::Wrap), some(&[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]));
        assert_eq!(read(FillMode::Nearest), some(&[0, 0, 0, 0, 0, 1, 2, 3, 3, 3, 3, 3]));
        let constant = read(FillMode::Constant);
        assert_eq!(constant[4..8], some(&[0, 1, 2, 3]));
        assert!(constant[..4].iter().chain(&constant[8..]).all(Option::is_none));
    }
}
