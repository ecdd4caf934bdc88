//! The contraction at the heart of dense and convolution layers, done by a
//! tuned GEMM (the `gemm` crate, on the machine's cores) called from the
//! generated code through an imported symbol, as XLA's CPU backend calls
//! Eigen; and how a general convolution becomes one GEMM: which index runs
//! along rows, which along the contraction, and how its im2col matrix is
//! laid out so the gather copies contiguous runs.

use crate::ir::{Conv, NodeId, Shape};

type NodeIds = (NodeId, NodeId, NodeId);

/// `c = a . b` (or `c += a . b` when `accumulate` is not 0) for matrices
/// given by element strides: `a` is m x k, `b` is k x n, `c` is m x n. The
/// generated code calls it.
///
/// # Safety
/// The pointers must cover the strided extents of their matrices; the
/// memory plan guarantees it for every call the code generator emits.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cnnc_sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    accumulate: usize,
) {
    let accumulate = accumulate != 0;
    // SAFETY: the caller (generated code) passes buffers the memory plan
    // sized for exactly these extents. c = alpha c + 1 a b, alpha 0 or 1.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            csc,
            rsc,
            accumulate,
            a,
            csa,
            rsa,
            b,
            csb,
            rsb,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// One of the seven loop indices of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Output rows: batch, output y, output x.
    B,
    Oy,
    Ox,
    /// Contraction: kernel y, kernel x, input feature.
    Ky,
    Kx,
    Ci,
}

/// How a convolution runs as `C[rows, co] = A[rows, K] . B[K, co]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGemm {
    /// Sizes: batch, output height and width, kernel height and width,
    /// input and output features, input height and width.
    pub b: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    /// Element strides of the input along (batch, y, x, feature).
    pub lhs_strides: [usize; 4],
    /// Element strides of the kernel along (ky, kx, ci, co).
    pub rhs_strides: [usize; 4],
    /// Row indices, outermost first, and the output stride of the innermost.
    pub rows: [Axis; 3],
    pub row_stride: usize,
    /// Output stride along `co`.
    pub co_stride: usize,
    /// Contraction indices, outermost first.
    pub ks: [Axis; 3],
    /// The kernel used as B directly (strides of its K rows and co
    /// columns), or packed into scratch.
    pub b_direct: Option<(usize, usize)>,
    /// A is stored k-major (column-major) so the gather copies runs of the
    /// batch axis; otherwise row-major, copying runs of the feature axis.
    pub a_column_major: bool,
}

fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    strides
}

impl ConvGemm {
    pub fn new(conv: &Conv, lhs: &Shape, rhs: &Shape, out: &Shape, batch: usize) -> ConvGemm {
        let (l, r, o) = (lhs.resolve(batch), rhs.resolve(batch), out.resolve(batch));
        let (ls, rs, os) = (contiguous_strides(&l), contiguous_strides(&r), contiguous_strides(&o));
        let lay = |layout: [usize; 4], s: &[usize]| layout.map(|a| s[a]);
        let lhs_axes = [
            conv.lhs.batch,
            conv.lhs.spatial[0],
            conv.lhs.spatial[1],
            conv.lhs.feature,
        ];
        let rhs_axes = [
            conv.rhs.spatial[0],
            conv.rhs.spatial[1],
            conv.rhs.input,
            conv.rhs.output,
        ];
        let out_axes = [
            conv.out.batch,
            conv.out.spatial[0],
            conv.out.spatial[1],
            conv.out.feature,
        ];
        let lhs_strides = lay(lhs_axes, &ls);
        let rhs_strides = lay(rhs_axes, &rs);
        let out_strides = lay(out_axes, &os);
        let mut g = ConvGemm {
            b: l[conv.lhs.batch],
            h: l[conv.lhs.spatial[0]],
            w: l[conv.lhs.spatial[1]],
            ci: l[conv.lhs.feature],
            kh: r[conv.rhs.spatial[0]],
            kw: r[conv.rhs.spatial[1]],
            co: r[conv.rhs.output],
            oh: o[conv.out.spatial[0]],
            ow: o[conv.out.spatial[1]],
            lhs_strides,
            rhs_strides,
            rows: [Axis::B, Axis::Oy, Axis::Ox],
            row_stride: 0,
            co_stride: out_strides[3],
            ks: [Axis::Ky, Axis::Kx, Axis::Ci],
            b_direct: None,
            a_column_major: false,
        };
        // Rows in the order of the output's memory, so that one stride
        // walks them all.
        let mut rows = [
            (Axis::B, out_strides[0]),
            (Axis::Oy, out_strides[1]),
            (Axis::Ox, out_strides[2]),
        ];
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        g.rows = rows.map(|(a, _)| a);
        g.row_stride = rows[2].1;
        // The contraction in the kernel's memory order, if one stride walks
        // it; then the kernel is B as it is.
        let mut ks = [
            (Axis::Ky, rhs_strides[0]),
            (Axis::Kx, rhs_strides[1]),
            (Axis::Ci, rhs_strides[2]),
        ];
        ks.sort_by_key(|k| std::cmp::Reverse(k.1));
        let walks = |order: &[(Axis, usize); 3]| {
            (0..2).all(|i| order[i].1 == order[i + 1].1 * g.len(order[i + 1].0))
                || order.iter().all(|x| g.len(x.0) == 1)
        };
        if !conv.flip && walks(&ks) {
            g.ks = ks.map(|(a, _)| a);
            g.b_direct = Some((ks[2].1, rhs_strides[3]));
        }
        // The gather copies runs along the input's batch axis (A stored
        // k-major) when that axis is contiguous and innermost in the rows;
        // otherwise along its feature axis, which must then be innermost in
        // the contraction: pack the kernel to make it so.
        g.a_column_major = lhs_strides[0] == 1 && g.rows[2] == Axis::B && g.ks[2] != Axis::Ci;
        if !g.a_column_major && g.ks[2] != Axis::Ci {
            g.ks = [Axis::Ky, Axis::Kx, Axis::Ci];
            g.b_direct = None;
        }
        g
    }

    /// The GEMM of a convolution node's kernel in a graph: its operands
    /// and output `(lhs, rhs, out)`.
    pub fn of(conv: &Conv, graph: &crate::ir::Graph, (lhs, rhs, out): NodeIds, batch: usize) -> ConvGemm {
        ConvGemm::new(conv, &graph[lhs].shape, &graph[rhs].shape, &graph[out].shape, batch)
    }

    pub fn len(&self, a: Axis) -> usize {
        match a {
            Axis::B => self.b,
            Axis::Oy => self.oh,
            Axis::Ox => self.ow,
            Axis::Ky => self.kh,
            Axis::Kx => self.kw,
            Axis::Ci => self.ci,
        }
    }

    pub fn m(&self) -> usize {
        self.b * self.oh * self.ow
    }

    pub fn k(&self) -> usize {
        self.kh * self.kw * self.ci
    }

    /// The index the im2col matrix is built and multiplied in tiles of:
    /// the outermost in its memory order.
    pub fn outer(&self) -> Axis {
        if self.a_column_major { self.ks[0] } else { self.rows[0] }
    }

    /// Indices of `outer` per tile: tiles of about 8 MB, which stay in the
    /// last-level cache between the gather writing them and the GEMM reading
    /// them, yet are few enough that the GEMM's own packing and thread
    /// start-up are paid rarely (measured on mnist_cnn: 96K-element tiles
    /// cost 40 % more than 2M-element ones).
    pub fn tile(&self) -> usize {
        const TILE_ELEMENTS: usize = 2 * 1024 * 1024;
        let n = self.len(self.outer()).max(1);
        let unit = (self.m() * self.k() / n).max(1);
        (TILE_ELEMENTS / unit).clamp(1, n)
    }

    /// Scratch elements: one tile of the im2col matrix, and the packed
    /// kernel.
    pub fn scratch(&self) -> (usize, usize) {
        let packed = if self.b_direct.is_some() { 0 } else { self.k() * self.co };
        let n = self.len(self.outer()).max(1);
        (self.m() * self.k() / n * self.tile(), packed)
    }
}
