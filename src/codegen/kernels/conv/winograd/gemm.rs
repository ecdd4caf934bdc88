//! The GEMMs between Winograd's transforms: for each of the α² points, a
//! product of a block of transformed tiles with the transformed kernel.
//! They are small (a block's rows, the channels), many, and their operands
//! already sit in cache in usable layouts, so a register-blocked kernel
//! with no packing and no call overhead does them, rather than the GEMM
//! library, whose packing, thread dispatch and allocation per call would
//! cost as much as the arithmetic.

use crate::codegen::simd::Simd;

/// Rows of C a micro-tile keeps in registers (with two vectors of
/// columns: 12 accumulators, which fit AVX2's 16 registers).
const MR: usize = 6;

/// A matrix operand: its first element and (row, column) strides in
/// elements. B's and C's columns are contiguous, in whole vectors.
pub struct Operand<P> {
    pub at: P,
    pub rows: isize,
}

/// `C = A . B` (or `C += A . B` when `accumulate`) for an `m x k` matrix A
/// with any strides (its elements are broadcast one at a time), a `k x n`
/// matrix B and an `m x n` matrix C whose rows are contiguous, `n` a
/// multiple of the vector width (`vectors` of them).
///
/// # Safety
/// The operands cover their extents.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm<S: Simd>(
    s: S,
    (m, k, vectors): (usize, usize, usize),
    a: *const f32,
    (rsa, csa): (isize, isize),
    b: Operand<*const f32>,
    c: Operand<*mut f32>,
    accumulate: bool,
) {
    let mut row = 0;
    while row < m {
        let rows = (m - row).min(MR);
        let mut v = 0;
        while v < vectors {
            let wide = vectors - v >= 2;
            // SAFETY: the micro-tile lies inside the operands.
            unsafe {
                let at = a.offset(row as isize * rsa);
                let bt = b.at.add(v * S::LANES);
                let ct = c.at.offset(row as isize * c.rows).add(v * S::LANES);
                let args = (k, at, (rsa, csa), bt, b.rows, ct, c.rows, accumulate);
                match (rows, wide) {
                    (6, true) => tile::<S, 6, 2>(s, args),
                    (5, true) => tile::<S, 5, 2>(s, args),
                    (4, true) => tile::<S, 4, 2>(s, args),
                    (3, true) => tile::<S, 3, 2>(s, args),
                    (2, true) => tile::<S, 2, 2>(s, args),
                    (1, true) => tile::<S, 1, 2>(s, args),
                    (6, false) => tile::<S, 6, 1>(s, args),
                    (5, false) => tile::<S, 5, 1>(s, args),
                    (4, false) => tile::<S, 4, 1>(s, args),
                    (3, false) => tile::<S, 3, 1>(s, args),
                    (2, false) => tile::<S, 2, 1>(s, args),
                    _ => tile::<S, 1, 1>(s, args),
                }
            }
            v += if wide { 2 } else { 1 };
        }
        row += rows;
    }
}

type TileArgs = (
    usize,
    *const f32,
    (isize, isize),
    *const f32,
    isize,
    *mut f32,
    isize,
    bool,
);

/// One R x (V vectors) tile of C, summed over all of k in registers.
///
/// # Safety
/// As for [`gemm`].
#[inline(always)]
unsafe fn tile<S: Simd, const R: usize, const V: usize>(
    s: S,
    (k, a, (rsa, csa), b, rsb, c, rsc, accumulate): TileArgs,
) {
    let mut acc = [[s.zero(); V]; R];
    for p in 0..k {
        // SAFETY: rows p of B and column p of A's tile are in bounds.
        unsafe {
            let bp = b.offset(p as isize * rsb);
            let bv: [S::V; V] = std::array::from_fn(|j| s.load(bp.add(j * S::LANES)));
            let ap = a.offset(p as isize * csa);
            for (i, row) in acc.iter_mut().enumerate() {
                let x = s.splat(*ap.offset(i as isize * rsa));
                for (sum, bj) in row.iter_mut().zip(&bv) {
                    *sum = s.mul_add(x, *bj, *sum);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, sum) in row.iter().enumerate() {
            // SAFETY: C's tile is in bounds.
            unsafe {
                let p = c.offset(i as isize * rsc).add(j * S::LANES);
                let v = if accumulate { s.add(s.load(p), *sum) } else { *sum };
                s.store(p, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::simd::{self, Isa, Kernel};

    struct Case {
        m: usize,
        k: usize,
        vectors: usize,
        accumulate: bool,
    }

    impl Kernel for Case {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> Vec<f32> {
            let n = self.vectors * S::LANES;
            // A column-major (rows 1 apart), B and C row-major.
            let a: Vec<f32> = (0..self.m * self.k).map(|i| (i as f32 * 0.7).sin()).collect();
            let b: Vec<f32> = (0..self.k * n).map(|i| (i as f32 * 0.3).cos()).collect();
            let mut c: Vec<f32> = (0..self.m * n).map(|i| i as f32).collect();
            let before = c.clone();
            // SAFETY: the buffers are the operands' sizes.
            unsafe {
                gemm(
                    s,
                    (self.m, self.k, self.vectors),
                    a.as_ptr(),
                    (1, self.m as isize),
                    Operand {
                        at: b.as_ptr(),
                        rows: n as isize,
                    },
                    Operand {
                        at: c.as_mut_ptr(),
                        rows: n as isize,
                    },
                    self.accumulate,
                );
            }
            let mut worst = Vec::new();
            for i in 0..self.m {
                for j in 0..n {
                    let mut want: f32 = (0..self.k).map(|p| a[i + p * self.m] * b[p * n + j]).sum();
                    if self.accumulate {
                        want += before[i * n + j];
                    }
                    worst.push((c[i * n + j] - want).abs() / (1.0 + want.abs()));
                }
            }
            worst
        }
    }

    #[test]
    fn every_tile_shape_against_the_sums() {
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
            for (m, k, vectors, accumulate) in
                [(13, 7, 3, false), (6, 32, 2, true), (1, 1, 1, false), (17, 40, 5, true)]
            {
                let errors = simd::run(
                    isa,
                    Case {
                        m,
                        k,
                        vectors,
                        accumulate,
                    },
                );
                let worst = errors.iter().fold(0.0f32, |a, &b| a.max(b));
                assert!(worst < 1e-5, "{isa:?} {m}x{k}x{vectors} vectors: {worst}");
            }
        }
    }
}
