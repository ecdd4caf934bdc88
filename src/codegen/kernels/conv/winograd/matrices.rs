//! The transforms of Winograd's minimal filtering algorithm F(m, 3) (Lavin
//! and Gray, 2016), built from its interpolation points as Toom-Cook
//! builds them, and applied to tiles of vectors.
//!
//! `y = A^T [(G g) ⊙ (B^T d)]` computes the m outputs `y_i = Σ_k g_k d_(i+k)`
//! of a 3-tap filter `g` over `α = m + 2` inputs `d` with α multiplies: the
//! product of the polynomials evaluated at α points (the finite points `p_j`
//! and infinity), interpolated back. For the finite points:
//! `G[j][k] = p_j^k / f_j` with `f_j = Π_(l≠j) (p_j - p_l)`; `B^T[j]` holds
//! the coefficients of `Π_(l≠j) (x - p_l)`; `A^T[i][j] = p_j^i`. Infinity
//! takes the leading coefficients: `G[∞] = (0, 0, 1)`, `B^T[∞]` the
//! coefficients of `Π_l (x - p_l)`, `A^T[i][∞] = [i = m-1]`. In two
//! dimensions the transforms apply along both axes: `Y = A^T [(G g G^T) ⊙
//! (B^T d B)] A`.
//!
//! The same matrices give the kernel's gradient, a 3x3 output from an α x α
//! input tile and an m x m tile of the output's gradient `e`: by the
//! transposition principle (the algorithm's trilinear form read with the
//! roles of filter and output swapped), `dW = G^T [(A e A^T) ⊙ (B^T d B)] G`.

use crate::codegen::simd::Simd;

/// The matrices of F(m, 3), α = m + 2, as f32, and the transposes the
/// kernel's gradient uses.
#[derive(Debug)]
pub struct Matrices<const A: usize, const M: usize> {
    /// B^T, α x α: an input tile to its transform.
    pub bt: [[f32; A]; A],
    /// G, α x 3: a kernel to its transform.
    pub g: [[f32; 3]; A],
    /// A^T, m x α: a product back to an output tile.
    pub at: [[f32; A]; M],
    /// A, α x m: an output gradient tile to its transform.
    pub a: [[f32; M]; A],
    /// G^T, 3 x α: a product back to a kernel gradient.
    pub gt: [[f32; A]; 3],
}

/// F(m x m, 3x3) for one m: its matrices as constants, which the
/// transforms are compiled with (a matrix read through a pointer would
/// cost a compare per entry; a constant one costs an instruction per
/// nonzero entry).
pub trait Tiles<const A: usize, const M: usize>: Send + Sync + 'static {
    const MATRICES: Matrices<A, M>;
}

/// F(2x2,3x3), F(4x4,3x3) and F(6x6,3x3): the points of Lavin and Gray's
/// (and NNPACK's) algorithms.
pub struct F2;
pub struct F4;
pub struct F6;

impl Tiles<4, 2> for F2 {
    const MATRICES: Matrices<4, 2> = matrices(&[0.0, 1.0, -1.0]);
}

impl Tiles<6, 4> for F4 {
    const MATRICES: Matrices<6, 4> = matrices(&[0.0, 1.0, -1.0, 2.0, -2.0]);
}

impl Tiles<8, 6> for F6 {
    const MATRICES: Matrices<8, 6> = matrices(&[0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5]);
}

/// The matrices for the finite `points` (α - 1 of them) and infinity,
/// computed in f64 and rounded once.
pub const fn matrices<const A: usize, const M: usize>(points: &[f64]) -> Matrices<A, M> {
    assert!(points.len() == A - 1 && M + 2 == A);
    let n = A - 1;
    let mut bt = [[0.0f32; A]; A];
    let mut g = [[0.0f32; 3]; A];
    let mut at = [[0.0f32; A]; M];
    let mut j = 0;
    while j < n {
        // Π_(l≠j) (x - p_l), lowest power first, and f_j.
        let mut poly = [0.0f64; A];
        poly[0] = 1.0;
        let mut f = 1.0;
        let mut l = 0;
        while l < n {
            if l != j {
                poly = times_root(poly, points[l]);
                f *= points[j] - points[l];
            }
            l += 1;
        }
        let mut k = 0;
        while k < A {
            bt[j][k] = poly[k] as f32;
            k += 1;
        }
        let mut power = 1.0;
        let mut k = 0;
        while k < 3 {
            g[j][k] = (power / f) as f32;
            power *= points[j];
            k += 1;
        }
        let mut power = 1.0;
        let mut i = 0;
        while i < M {
            at[i][j] = power as f32;
            power *= points[j];
            i += 1;
        }
        j += 1;
    }
    // Infinity.
    let mut poly = [0.0f64; A];
    poly[0] = 1.0;
    let mut l = 0;
    while l < n {
        poly = times_root(poly, points[l]);
        l += 1;
    }
    let mut k = 0;
    while k < A {
        bt[n][k] = poly[k] as f32;
        k += 1;
    }
    g[n][2] = 1.0;
    at[M - 1][n] = 1.0;
    // The transposes.
    let mut a = [[0.0f32; M]; A];
    let mut gt = [[0.0f32; A]; 3];
    let mut j = 0;
    while j < A {
        let mut i = 0;
        while i < M {
            a[j][i] = at[i][j];
            i += 1;
        }
        let mut k = 0;
        while k < 3 {
            gt[k][j] = g[j][k];
            k += 1;
        }
        j += 1;
    }
    Matrices { bt, g, at, a, gt }
}

/// `poly * (x - root)`, coefficients lowest power first.
const fn times_root<const A: usize>(poly: [f64; A], root: f64) -> [f64; A] {
    let mut out = [0.0f64; A];
    let mut k = 0;
    while k < A {
        out[k] = -root * poly[k] + if k > 0 { poly[k - 1] } else { 0.0 };
        k += 1;
    }
    out
}

/// Runs `$body` with `$i` = 0, 1, ... up to 7, each below `$n`, unrolled:
/// with constant indices, the compiler reads each matrix entry as a
/// constant and keeps only the nonzero terms of a transform.
macro_rules! unroll {
    ($n:expr, |$i:ident| $body:block) => {{
        {
            let $i = 0;
            if $i < $n $body
        }
        {
            let $i = 1;
            if $i < $n $body
        }
        {
            let $i = 2;
            if $i < $n $body
        }
        {
            let $i = 3;
            if $i < $n $body
        }
        {
            let $i = 4;
            if $i < $n $body
        }
        {
            let $i = 5;
            if $i < $n $body
        }
        {
            let $i = 6;
            if $i < $n $body
        }
        {
            let $i = 7;
            if $i < $n $body
        }
    }};
}

/// `m . x` for a constant matrix `m` and a column of vectors `x`: only
/// the nonzero entries cost an instruction, ±1 an addition.
#[inline(always)]
pub fn apply<S: Simd, const R: usize, const C: usize>(s: S, m: &[[f32; C]; R], x: &[S::V; C]) -> [S::V; R] {
    assert!(R <= 8 && C <= 8);
    let mut out = [s.zero(); R];
    unroll!(R, |i| {
        let mut acc: Option<S::V> = None;
        unroll!(C, |j| {
            let c = m[i][j];
            if c != 0.0 {
                acc = Some(match acc {
                    None if c == 1.0 => x[j],
                    None => s.mul(s.splat(c), x[j]),
                    Some(a) if c == 1.0 => s.add(a, x[j]),
                    Some(a) if c == -1.0 => s.sub(a, x[j]),
                    Some(a) => s.mul_add(s.splat(c), x[j], a),
                });
            }
        });
        if let Some(a) = acc {
            out[i] = a;
        }
    });
    out
}

/// `l . x . r^T` for a tile `x` of vectors: the transform of a 2-D tile,
/// along its columns then along its rows.
#[inline(always)]
pub fn sandwich<S: Simd, const RO: usize, const RI: usize, const CO: usize, const CI: usize>(
    s: S,
    l: &[[f32; RI]; RO],
    r: &[[f32; CI]; CO],
    x: &[[S::V; CI]; RI],
) -> [[S::V; CO]; RO] {
    // Columns: t = l . x, one column of x at a time.
    let mut t = [[s.zero(); CI]; RO];
    unroll!(CI, |j| {
        let mut column = [s.zero(); RI];
        unroll!(RI, |i| {
            column[i] = x[i][j];
        });
        let c = apply(s, l, &column);
        unroll!(RO, |i| {
            t[i][j] = c[i];
        });
    });
    // Rows: y = t . r^T.
    let mut y = [[s.zero(); CO]; RO];
    unroll!(RO, |i| {
        y[i] = apply(s, r, &t[i]);
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::simd::Portable;

    #[test]
    fn lavin_and_grays_f4_matrices() {
        let f4 = F4::MATRICES;
        assert_eq!(f4.bt[0], [4.0, 0.0, -5.0, 0.0, 1.0, 0.0]);
        assert_eq!(f4.bt[3], [0.0, -2.0, -1.0, 2.0, 1.0, 0.0]);
        assert_eq!(f4.g[0], [0.25, 0.0, 0.0]);
        assert_eq!(f4.g[3], [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0]);
        assert_eq!(f4.at[3], [0.0, 1.0, -1.0, 8.0, -8.0, 1.0]);
        assert_eq!(
            F2::MATRICES.bt,
            [
                [-1.0, 0.0, 1.0, 0.0],
                [0.0, 1.0, 1.0, 0.0],
                [0.0, -1.0, 1.0, 0.0],
                [0.0, -1.0, 0.0, 1.0]
            ]
        );
    }

    /// The 1-D algorithm against the direct sums, and the transposed one
    /// for the gradient, for every tile size.
    fn one_dimension<const A: usize, const M: usize>(m: &Matrices<A, M>) {
        let s = Portable;
        let d: [f32; A] = std::array::from_fn(|i| (i as f32 * 0.37).sin());
        let g = [0.5f32, -1.25, 0.75];
        let e: [f32; M] = std::array::from_fn(|i| (i as f32 * 1.3).cos());
        let v = |x: f32| [x; 4];
        let gg = apply(s, &m.g, &g.map(v));
        let dd = apply(s, &m.bt, &d.map(v));
        let prod: [[f32; 4]; A] = std::array::from_fn(|j| s.mul(gg[j], dd[j]));
        let y = apply(s, &m.at, &prod);
        for i in 0..M {
            let want: f32 = (0..3).map(|k| g[k] * d[i + k]).sum();
            assert!(
                (y[i][0] - want).abs() < 1e-4,
                "F({M},3) output {i}: {} for {want}",
                y[i][0]
            );
        }
        let ee = apply(s, &m.a, &e.map(v));
        let prod: [[f32; 4]; A] = std::array::from_fn(|j| s.mul(ee[j], dd[j]));
        let dw = apply(s, &m.gt, &prod);
        for k in 0..3 {
            let want: f32 = (0..M).map(|i| e[i] * d[i + k]).sum();
            assert!(
                (dw[k][0] - want).abs() < 1e-4,
                "F({M},3) gradient {k}: {} for {want}",
                dw[k][0]
            );
        }
    }

    #[test]
    fn the_algorithms_compute_correlations() {
        one_dimension(&F2::MATRICES);
        one_dimension(&F4::MATRICES);
        one_dimension(&F6::MATRICES);
    }
}
