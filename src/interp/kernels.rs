//! The interpreter's compute kernels, written for clarity: convolution as
//! explicit padding, im2col and one matrix product.

use super::{Error, Float};
use crate::ir::{Conv, Pool};
use ndarray::{Array2, Array4, ArrayD, Axis, Ix2, Ix4, IxDyn};

pub fn matmul<T: Float>(a: &ArrayD<T>, b: &ArrayD<T>, ta: bool, tb: bool) -> Result<ArrayD<T>, Error> {
    let (a, b) = (two(a)?, two(b)?);
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    Ok(a.dot(&b).into_dyn())
}

fn two<T: Float>(x: &ArrayD<T>) -> Result<ndarray::ArrayView2<'_, T>, Error> {
    x.view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error(format!("matmul operand of shape {:?} is not 2-D", x.shape())))
}

fn four<T: Float>(x: &ArrayD<T>) -> Result<ndarray::ArrayView4<'_, T>, Error> {
    x.view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| Error(format!("expected a 4-D tensor, got {:?}", x.shape())))
}

/// The general convolution of [`Conv`], by definition: bring both operands to
/// canonical layouts; then for each group, its slice of the input (features,
/// or samples for batch groups) and of the kernel's outputs convolved on
/// their own.
pub fn conv2d<T: Float>(lhs: &ArrayD<T>, rhs: &ArrayD<T>, c: &Conv, out_shape: &[usize]) -> Result<ArrayD<T>, Error> {
    // Canonical views: input [B, H, W, C], kernel [KH, KW, I, O].
    let x = four(lhs)?.permuted_axes([c.lhs.batch, c.lhs.spatial[0], c.lhs.spatial[1], c.lhs.feature]);
    let mut k = four(rhs)?.permuted_axes([c.rhs.spatial[0], c.rhs.spatial[1], c.rhs.input, c.rhs.output]);
    if c.flip {
        k.invert_axis(Axis(0));
        k.invert_axis(Axis(1));
    }
    let mut canonical_out = [0usize; 4];
    canonical_out[0] = out_shape[c.out.batch];
    canonical_out[1] = out_shape[c.out.spatial[0]];
    canonical_out[2] = out_shape[c.out.spatial[1]];
    canonical_out[3] = out_shape[c.out.feature];
    let groups = c.feature_groups.max(c.batch_groups).max(1);
    let co = k.dim().3 / groups;
    let mut out = Array4::<T>::zeros(canonical_out);
    for g in 0..groups {
        let x_g = if c.batch_groups > 1 {
            let per = x.dim().0 / groups;
            x.slice(ndarray::s![g * per..(g + 1) * per, .., .., ..])
        } else {
            let per = x.dim().3 / groups;
            x.slice(ndarray::s![.., .., .., g * per..(g + 1) * per])
        };
        let k_g = k.slice(ndarray::s![.., .., .., g * co..(g + 1) * co]);
        let y = dense_conv(x_g, k_g, c, canonical_out)?;
        out.slice_mut(ndarray::s![.., .., .., g * co..(g + 1) * co]).assign(&y);
    }
    // Back to the requested output layout.
    let mut perm = [0usize; 4];
    perm[c.out.batch] = 0;
    perm[c.out.spatial[0]] = 1;
    perm[c.out.spatial[1]] = 2;
    perm[c.out.feature] = 3;
    Ok(out.permuted_axes(perm).as_standard_layout().into_owned().into_dyn())
}

/// One group's convolution in canonical layouts: dilate and pad the input,
/// unfold its patches, multiply.
fn dense_conv<T: Float>(
    x: ndarray::ArrayView4<T>,
    k: ndarray::ArrayView4<T>,
    c: &Conv,
    [_, oh, ow, _]: [usize; 4],
) -> Result<Array4<T>, Error> {
    let (b, h, w, ci) = x.dim();
    let (kh, kw, _, co) = k.dim();

    // Dilate then pad (negative padding crops).
    let len = |n: usize, axis: usize| {
        let (lo, hi) = c.padding[axis];
        (n as i64 - 1) * c.lhs_dilation[axis] as i64 + 1 + lo + hi
    };
    let (ph, pw) = (len(h, 0).max(0) as usize, len(w, 1).max(0) as usize);
    let mut padded = Array4::<T>::zeros((b, ph, pw, ci));
    for i in 0..h {
        let pi = c.padding[0].0 + (i * c.lhs_dilation[0]) as i64;
        if pi < 0 || pi >= ph as i64 {
            continue;
        }
        for j in 0..w {
            let pj = c.padding[1].0 + (j * c.lhs_dilation[1]) as i64;
            if pj < 0 || pj >= pw as i64 {
                continue;
            }
            for n in 0..b {
                for f in 0..ci {
                    padded[[n, pi as usize, pj as usize, f]] = x[[n, i, j, f]];
                }
            }
        }
    }

    // im2col: one row per output pixel, one column per (ky, kx, c) tap.
    let taps = kh * kw * ci;
    let mut cols = Array2::<T>::zeros((b * oh * ow, taps));
    for n in 0..b {
        for y in 0..oh {
            for xo in 0..ow {
                let mut row = cols.row_mut((n * oh + y) * ow + xo);
                for ky in 0..kh {
                    let py = y * c.strides[0] + ky * c.rhs_dilation[0];
                    for kx in 0..kw {
                        let px = xo * c.strides[1] + kx * c.rhs_dilation[1];
                        for f in 0..ci {
                            row[(ky * kw + kx) * ci + f] = padded[[n, py, px, f]];
                        }
                    }
                }
            }
        }
    }
    let kmat = k
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((taps, co))
        .map_err(|e| Error(format!("conv2d kernel: {e}")))?;
    cols.dot(&kmat)
        .into_shape_with_order((b, oh, ow, co))
        .map_err(|e| Error(format!("conv2d output: {e}")))
}

/// The window positions of output pixel `o` along one axis that fall inside
/// the input (padding never wins).
fn window(o: usize, p: &Pool, axis: usize, n: usize) -> impl Iterator<Item = usize> {
    let start = (o * p.strides[axis]) as i64 - p.padding[axis].0 as i64;
    (start..start + p.window[axis] as i64).filter_map(move |i| (i >= 0 && (i as usize) < n).then_some(i as usize))
}

/// Where each pooling window's first maximum is, visiting rows then
/// columns (the window's first cell if nothing beats minus infinity).
fn argmax<T: Float>(x: &ndarray::ArrayView4<T>, p: &Pool, n: usize, y: usize, xo: usize, c: usize) -> (usize, usize) {
    let (_, h, w, _) = x.dim();
    let mut cells = window(y, p, 0, h).flat_map(|i| window(xo, p, 1, w).map(move |j| (i, j)));
    let mut best = cells.next().unwrap_or((0, 0));
    let mut best_value = T::neg_infinity();
    for (i, j) in std::iter::once(best).chain(cells) {
        let v = x[[n, i, j, c]];
        if v > best_value {
            best = (i, j);
            best_value = v;
        }
    }
    best
}

/// A window's maximum: NaN if the window holds one, as the compiled code
/// computes it.
fn window_max<T: Float>(x: &ndarray::ArrayView4<T>, p: &Pool, n: usize, y: usize, xo: usize, c: usize) -> T {
    let (_, h, w, _) = x.dim();
    window(y, p, 0, h)
        .flat_map(|i| window(xo, p, 1, w).map(move |j| (i, j)))
        .fold(T::neg_infinity(), |m, (i, j)| {
            let v = x[[n, i, j, c]];
            if v.is_nan() || m.is_nan() { T::nan() } else { m.max(v) }
        })
}

pub fn maxpool<T: Float>(x: &ArrayD<T>, p: &Pool, out_shape: &[usize]) -> ArrayD<T> {
    let Ok(x) = x.view().into_dimensionality::<Ix4>() else {
        return ArrayD::zeros(IxDyn(out_shape));
    };
    let mut out = ArrayD::zeros(IxDyn(out_shape));
    for n in 0..out_shape[0] {
        for y in 0..out_shape[1] {
            for xo in 0..out_shape[2] {
                for c in 0..out_shape[3] {
                    out[[n, y, xo, c]] = window_max(&x, p, n, y, xo, c);
                }
            }
        }
    }
    out
}

pub fn maxpool_grad<T: Float>(x: &ArrayD<T>, dy: &ArrayD<T>, p: &Pool) -> ArrayD<T> {
    let mut dx = ArrayD::zeros(x.raw_dim());
    let (Ok(xv), Ok(dyv)) = (
        x.view().into_dimensionality::<Ix4>(),
        dy.view().into_dimensionality::<Ix4>(),
    ) else {
        return dx;
    };
    let (b, oh, ow, ch) = dyv.dim();
    for n in 0..b {
        for y in 0..oh {
            for xo in 0..ow {
                for c in 0..ch {
                    let (i, j) = argmax(&xv, p, n, y, xo, c);
                    dx[[n, i, j, c]] += dyv[[n, y, xo, c]];
                }
            }
        }
    }
    dx
}

/// Each window's mean over its cells inside the input: padding is not
/// counted, as Keras's `same` average pooling.
pub fn avgpool<T: Float>(x: &ArrayD<T>, p: &Pool, out_shape: &[usize]) -> ArrayD<T> {
    let mut out = ArrayD::zeros(IxDyn(out_shape));
    let Ok(x) = x.view().into_dimensionality::<Ix4>() else {
        return out;
    };
    let (_, h, w, _) = x.dim();
    for n in 0..out_shape[0] {
        for y in 0..out_shape[1] {
            for xo in 0..out_shape[2] {
                let cells: Vec<(usize, usize)> = window(y, p, 0, h)
                    .flat_map(|i| window(xo, p, 1, w).map(move |j| (i, j)))
                    .collect();
                let count = T::from_usize(cells.len()).unwrap_or_else(T::one);
                for c in 0..out_shape[3] {
                    let sum = cells.iter().fold(T::zero(), |s, &(i, j)| s + x[[n, i, j, c]]);
                    out[[n, y, xo, c]] = sum / count;
                }
            }
        }
    }
    out
}

/// Each window's gradient shared evenly by the cells it averaged.
pub fn avgpool_grad<T: Float>(dy: &ArrayD<T>, p: &Pool, in_shape: &[usize]) -> ArrayD<T> {
    let mut dx = ArrayD::zeros(IxDyn(in_shape));
    let Ok(dyv) = dy.view().into_dimensionality::<Ix4>() else {
        return dx;
    };
    let (b, oh, ow, ch) = dyv.dim();
    for n in 0..b {
        for y in 0..oh {
            for xo in 0..ow {
                let cells: Vec<(usize, usize)> = window(y, p, 0, in_shape[1])
                    .flat_map(|i| window(xo, p, 1, in_shape[2]).map(move |j| (i, j)))
                    .collect();
                let count = T::from_usize(cells.len()).unwrap_or_else(T::one);
                for c in 0..ch {
                    let share = dyv[[n, y, xo, c]] / count;
                    for &(i, j) in &cells {
                        dx[[n, i, j, c]] += share;
                    }
                }
            }
        }
    }
    dx
}

/// log(sum(exp(z))) over the last axis, shifted by the maximum for
/// stability.
pub fn logsumexp<T: Float>(z: &ArrayD<T>) -> ArrayD<T> {
    let last = Axis(z.ndim() - 1);
    let max = z.fold_axis(last, T::neg_infinity(), |&m, &v| m.max(v));
    let sum = (z - &max.clone().insert_axis(last)).mapv(T::exp).sum_axis(last);
    max + sum.mapv(T::ln)
}

pub fn softmax<T: Float>(z: &ArrayD<T>) -> ArrayD<T> {
    let last = Axis(z.ndim() - 1);
    let lse = logsumexp(z).insert_axis(last);
    (z - &lse).mapv(T::exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::rng::Rng;

    fn random(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.uniform() - 0.5)
    }

    #[test]
    fn grouped_convolution_is_each_group_convolved_alone() {
        let mut rng = Rng::new(3);
        let (x, k) = (random(&[2, 5, 6, 4], &mut rng), random(&[3, 2, 2, 6], &mut rng));
        let grouped = Conv::forward([1, 2], [(1, 1), (0, 1)], 2);
        let plain = Conv::forward([1, 2], [(1, 1), (0, 1)], 1);
        let out = conv2d(&x, &k, &grouped, &[2, 5, 3, 6]).unwrap();
        for g in 0..2 {
            let xg = x.slice(ndarray::s![.., .., .., 2 * g..2 * g + 2]).to_owned().into_dyn();
            let kg = k.slice(ndarray::s![.., .., .., 3 * g..3 * g + 3]).to_owned().into_dyn();
            let alone = conv2d(&xg, &kg, &plain, &[2, 5, 3, 3]).unwrap();
            let part = out.slice(ndarray::s![.., .., .., 3 * g..3 * g + 3]);
            assert!(part.iter().zip(&alone).all(|(a, b)| (a - b).abs() < 1e-12));
        }
    }

    #[test]
    fn depthwise_convolution_by_its_formula() {
        let mut rng = Rng::new(4);
        let (x, k) = (random(&[1, 4, 4, 3], &mut rng), random(&[2, 2, 1, 3], &mut rng));
        let out = conv2d(&x, &k, &Conv::forward([1, 1], [(0, 0), (0, 0)], 3), &[1, 3, 3, 3]).unwrap();
        for (y, xo, c) in positions() {
            let want: f64 = (0..2)
                .flat_map(|i| (0..2).map(move |j| (i, j)))
                .map(|(i, j)| x[[0, y + i, xo + j, c]] * k[[i, j, 0, c]])
                .sum();
            assert!((out[[0, y, xo, c]] - want).abs() < 1e-12);
        }
    }

    fn positions() -> impl Iterator<Item = (usize, usize, usize)> {
        (0..3).flat_map(|y| (0..3).flat_map(move |x| (0..3).map(move |c| (y, x, c))))
    }
}
