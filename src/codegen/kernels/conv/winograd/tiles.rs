//! The Winograd convolution as it runs: the function generated code calls
//! (`cnnc_winograd`), the geometry it is given, how its scratch space is
//! laid out, and the work on each block of tiles.
//!
//! A convolution whose kernel is 3x3 (the forward pass, and the input
//! gradient, the same with the kernel flipped) runs in [`Role::Data`]: the
//! output is cut into m x m tiles; the kernel is transformed once per call
//! (`U`, α² matrices channels x features); then each block of tiles is
//! transformed (`V`, α² matrices tiles x channels), multiplied point by
//! point (`M = V . U`, α² GEMMs) and transformed back into the output.
//! A convolution whose output is 3x3 (the kernel's gradient, whose "kernel"
//! is the output gradient) runs in [`Role::Filter`]: its large kernel is
//! cut into m x m tiles, and each (tile, summed-over sample) pair gives an
//! input transform `V` (α² rows of output-batch values) and a gradient
//! transform `W` (α² rows of features); the α² GEMMs `V^T . W` sum over
//! the pairs, and one transform per (batch, feature) gives the 3x3 output.
//!
//! Blocks are sized to stay in the L2 cache between the transform writing
//! them and the GEMM reading them. They run on the machine's cores, each
//! worker with its own part of the scratch space (from the memory plan: no
//! allocation). Each output value is computed the same way whichever
//! worker takes its block, and the kernel gradient's sum over pairs runs
//! in a fixed number of segments added in a fixed order, so results do not
//! depend on the scheduling or on the number of workers.

use super::gemm::{Operand, gemm};
use super::matrices::{F2, F4, F6, Tiles, sandwich};
use crate::codegen::simd::{self, Isa, Kernel, MAX_LANES, Simd};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which convolution of a training step's three the geometry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A 3x3 kernel: the forward pass or the input gradient.
    Data,
    /// A 3x3 output: the kernel gradient.
    Filter,
}

/// A stride-1 convolution without dilation or groups:
/// `out[b, y, x, f] = Σ_(ky, kx, c) lhs[b, y + ky - pad_y, x + kx - pad_x, c]
/// . rhs[ky', kx', c, f]` (`ky' = kh - 1 - ky` when `flip`), each operand
/// given by its element strides along those axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub role: Role,
    /// The output tile's side m (Data) or the kernel tile's (Filter).
    pub m: usize,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub features: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub kernel_height: usize,
    pub kernel_width: usize,
    pub padding: [i64; 2],
    pub flip: bool,
    /// Strides of lhs (b, y, x, c), rhs (ky, kx, c, f) and out (b, y, x, f).
    pub lhs: [isize; 4],
    pub rhs: [isize; 4],
    pub out: [isize; 4],
    /// The vector width the code runs with: its instruction set's, the
    /// host's best (not part of the descriptor, so that the generated code
    /// and its memory plan are the same on every x86-64 machine).
    pub lanes: usize,
}

/// Workers a call's scratch space has room for, and its work is cut for:
/// a constant rather than the machine's core count, so that the memory
/// plan, the blocks and the order of every sum, hence the results bit for
/// bit, do not depend on the machine. This project's machines have 2
/// cores; a larger one runs a Winograd convolution on 4.
pub const WORKERS: usize = 4;

/// Words of the descriptor generated code passes.
pub const WORDS: usize = 28;

impl Geometry {
    /// The descriptor: what generated code stores for the call.
    pub fn words(&self) -> [i64; WORDS] {
        let mut w = [0i64; WORDS];
        let head = [
            match self.role {
                Role::Data => 0,
                Role::Filter => 1,
            },
            self.m,
            self.batch,
            self.height,
            self.width,
            self.channels,
            self.features,
            self.out_height,
            self.out_width,
            self.kernel_height,
            self.kernel_width,
            usize::from(self.flip),
            0,
            WORKERS,
        ];
        for (i, v) in head.iter().enumerate() {
            w[i] = *v as i64;
        }
        w[14] = self.padding[0];
        w[15] = self.padding[1];
        for (i, s) in self.lhs.iter().chain(&self.rhs).chain(&self.out).enumerate() {
            w[16 + i] = *s as i64;
        }
        w
    }

    fn from_words(w: &[i64; WORDS]) -> Geometry {
        let u = |i: usize| w[i] as usize;
        let strides = |at: usize| [0, 1, 2, 3].map(|i| w[at + i] as isize);
        Geometry {
            role: if w[0] == 0 { Role::Data } else { Role::Filter },
            m: u(1),
            batch: u(2),
            height: u(3),
            width: u(4),
            channels: u(5),
            features: u(6),
            out_height: u(7),
            out_width: u(8),
            kernel_height: u(9),
            kernel_width: u(10),
            flip: w[11] != 0,
            lanes: Isa::host().lanes(),
            padding: [w[14], w[15]],
            lhs: strides(16),
            rhs: strides(20),
            out: strides(24),
        }
    }

    /// α²: the points of the transforms.
    pub fn points(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// The rows of the transformed kernel and of the products: the feature
    /// axis padded to whole vectors of the widest instruction set, so that
    /// the layout does not depend on the host's.
    pub fn padded_features(&self) -> usize {
        self.features.next_multiple_of(MAX_LANES)
    }

    /// The vectors of the features the GEMMs compute, on `lanes` lanes.
    fn vectors(&self, lanes: usize) -> usize {
        self.features.div_ceil(lanes)
    }

    /// Tiles along y and x: of the output (Data) or of the kernel (Filter).
    pub fn tiles(&self) -> (usize, usize) {
        match self.role {
            Role::Data => (self.out_height.div_ceil(self.m), self.out_width.div_ceil(self.m)),
            Role::Filter => (self.kernel_height.div_ceil(self.m), self.kernel_width.div_ceil(self.m)),
        }
    }

    /// The GEMMs' rows and contractions: tiles, and channels (Data); batch,
    /// and tile-sample pairs (Filter).
    pub fn units(&self) -> usize {
        let (ty, tx) = self.tiles();
        match self.role {
            Role::Data => self.batch * ty * tx,
            Role::Filter => ty * tx * self.channels,
        }
    }
}

/// Floats of a block's transforms: about 1 MB, which stays in L2 beside
/// the transformed kernel.
const BLOCK_FLOATS: usize = 256 * 1024;

/// Segments the kernel gradient's sum is split into, so that several
/// workers share it; each holds α² x batch x features partial sums.
const SEGMENTS: usize = 8;

/// Floats all the segments' partial sums may take.
const PARTIAL_FLOATS: usize = 4 * 1024 * 1024;

/// Arena alignment of each part of the scratch space, in floats.
const ALIGN: usize = 16;

/// Where each part of a convolution's scratch space is, in floats from its
/// start, and how its work is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Units (tiles or pairs) per block, and blocks.
    pub block: usize,
    pub blocks: usize,
    /// Segments of the kernel gradient's sum (1 for Data).
    pub segments: usize,
    /// Floats of the shared part, at the start: the transformed kernel
    /// (Data) or the segments' partial sums (Filter).
    pub shared: usize,
    /// Where the workers' parts start, and each one's two transforms.
    pub worker: usize,
    pub first: usize,
    pub second: usize,
    /// Floats in all.
    pub total: usize,
}

fn aligned(n: usize) -> usize {
    n.next_multiple_of(ALIGN)
}

impl Layout {
    pub fn of(g: &Geometry) -> Layout {
        let (points, fp, units) = (g.points(), g.padded_features(), g.units());
        // The first transform's row: channels (Data) or batch (Filter).
        let rows = match g.role {
            Role::Data => g.channels,
            Role::Filter => g.batch,
        };
        let per_unit = points * (rows + fp);
        // Small enough for the cache, and for every worker to get blocks.
        let spread = match g.role {
            Role::Data => units.div_ceil(2 * WORKERS),
            Role::Filter => units.div_ceil(SEGMENTS),
        };
        let mut block = (BLOCK_FLOATS / per_unit).min(spread).max(1);
        if block > 6 {
            // Whole micro-tiles of the GEMM.
            block -= block % 6;
        }
        let blocks = units.div_ceil(block);
        let (segments, shared) = match g.role {
            Role::Data => (1, points * g.channels * fp),
            Role::Filter => {
                let partial = points * g.batch * fp;
                let most = (PARTIAL_FLOATS / partial).clamp(1, SEGMENTS);
                // As many blocks in each segment, none empty.
                let segments = blocks.div_ceil(blocks.div_ceil(most));
                (segments, segments * aligned(partial))
            }
        };
        let first = aligned(points * block * rows);
        let second = aligned(points * block * fp);
        let worker = aligned(shared);
        Layout {
            block,
            blocks,
            segments,
            shared,
            worker,
            first,
            second,
            total: worker + WORKERS * (first + second),
        }
    }
}

/// The convolution generated code calls: `descriptor` points at the
/// [`WORDS`] words of its [`Geometry`], `scratch` at [`Layout::total`]
/// floats.
///
/// # Safety
/// The pointers cover the extents the geometry gives them; the memory plan
/// guarantees it for every call the code generator emits.
pub unsafe extern "C" fn cnnc_winograd(
    descriptor: *const i64,
    lhs: *const f32,
    rhs: *const f32,
    out: *mut f32,
    scratch: *mut f32,
) {
    // SAFETY: generated code passes WORDS words.
    let g = Geometry::from_words(unsafe { &*descriptor.cast::<[i64; WORDS]>() });
    // SAFETY: the caller's.
    unsafe { convolve(g, lhs, rhs, out, scratch) }
}

/// The convolution `g` describes, with its instruction set's kernels.
///
/// # Safety
/// As for [`cnnc_winograd`].
unsafe fn convolve(g: Geometry, lhs: *const f32, rhs: *const f32, out: *mut f32, scratch: *mut f32) {
    let call = Call {
        g,
        layout: Layout::of(&g),
        lhs: Ptr(lhs.cast_mut()),
        rhs: Ptr(rhs.cast_mut()),
        out: Ptr(out),
        scratch: Ptr(scratch),
    };
    match g.m {
        2 => call.run::<F2, 4, 2>(),
        4 => call.run::<F4, 6, 4>(),
        _ => call.run::<F6, 8, 6>(),
    }
}

/// A pointer shared by the workers of one call.
#[derive(Clone, Copy, Debug)]
struct Ptr(*mut f32);

// SAFETY: the workers of a call write disjoint parts of the output and of
// the scratch space (each its own blocks, segments and worker area), and
// only read the rest.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    fn at(self, offset: usize) -> *mut f32 {
        // Offsets stay within the buffer: the layout sized it.
        self.0.wrapping_add(offset)
    }
}

/// One call: its geometry, layout and buffers.
#[derive(Clone, Copy)]
struct Call {
    g: Geometry,
    layout: Layout,
    lhs: Ptr,
    rhs: Ptr,
    out: Ptr,
    scratch: Ptr,
}

/// Runs `work(worker, item)` for every item in `0..items`, on up to
/// `workers` threads (the calling one included), each item once.
fn parallel(items: usize, work: impl Fn(usize, usize) + Sync) {
    let next = AtomicUsize::new(0);
    let drain = |worker: usize| {
        loop {
            let item = next.fetch_add(1, Ordering::Relaxed);
            if item >= items {
                break;
            }
            work(worker, item);
        }
    };
    let workers = WORKERS.min(items).min(rayon::current_num_threads()).max(1);
    if workers == 1 {
        return drain(0);
    }
    rayon::scope(|s| {
        for w in 1..workers {
            let drain = &drain;
            s.spawn(move |_| drain(w));
        }
        drain(0);
    });
}

impl Call {
    fn run<T: Tiles<A, M>, const A: usize, const M: usize>(self) {
        let layout = self.layout;
        let isa = Isa::of_lanes(self.g.lanes);
        match self.g.role {
            Role::Data => {
                simd::run(isa, KernelTransform::<T, A, M>(self, PhantomData));
                parallel(layout.blocks, |worker, block| {
                    simd::run(
                        isa,
                        DataBlock::<T, A, M> {
                            call: self,
                            worker,
                            block,
                            tiles: PhantomData,
                        },
                    );
                });
            }
            Role::Filter => {
                let per = layout.blocks.div_ceil(layout.segments);
                parallel(layout.segments, |worker, segment| {
                    for block in segment * per..((segment + 1) * per).min(layout.blocks) {
                        simd::run(
                            isa,
                            FilterBlock::<T, A, M> {
                                call: self,
                                worker,
                                block,
                                first: block == segment * per,
                                segment,
                                tiles: PhantomData,
                            },
                        );
                    }
                });
                simd::run(isa, FilterOutput::<T, A, M>(self, PhantomData));
            }
        }
    }

    /// The first float of `worker`'s two transforms.
    fn worker(&self, worker: usize) -> (*mut f32, *mut f32) {
        let l = &self.layout;
        let at = l.worker + worker * (l.first + l.second);
        (self.scratch.at(at), self.scratch.at(at + l.first))
    }

    /// The units of `block`: its first, and how many.
    fn span(&self, block: usize) -> (usize, usize) {
        let first = block * self.layout.block;
        (first, self.layout.block.min(self.g.units() - first))
    }
}

/// An α x α tile of vectors read at `at + i*row + j*col`, `lanes` lanes
/// `stride` apart, zero outside rows `rows` and columns `cols`.
///
/// # Safety
/// Every element read is inside the operand.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn read_tile<S: Simd, const A: usize>(
    s: S,
    at: *const f32,
    (row, col, stride): (isize, isize, isize),
    rows: (i64, i64),
    cols: (i64, i64),
    lanes: usize,
) -> [[S::V; A]; A] {
    let mut d = [[s.zero(); A]; A];
    for (i, line) in d.iter_mut().enumerate() {
        let i = i as i64;
        if i < rows.0 || i >= rows.1 {
            continue;
        }
        for (j, v) in line.iter_mut().enumerate() {
            let j = j as i64;
            if j >= cols.0 && j < cols.1 {
                // SAFETY: (i, j) is inside the operand.
                *v = unsafe { s.gather(at.wrapping_offset(i as isize * row + j as isize * col), stride, lanes) };
            }
        }
    }
    d
}

/// The input tile at `base` transformed (B^T d B) into V, for `count`
/// values (channels, or samples) `stride` apart, a vector at a time: point
/// `p` of value `k` at `v + p * step + k`. `inside` says which of the
/// tile's rows and columns are in the image; the rest are zero.
///
/// # Safety
/// The tile's in-bounds pixels are inside the operand, and V's points
/// inside the scratch space.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn transform_input<S: Simd, const A: usize>(
    s: S,
    bt: &[[f32; A]; A],
    base: *const f32,
    (row, col, stride): (isize, isize, isize),
    (rows, cols): ((i64, i64), (i64, i64)),
    count: usize,
    v: *mut f32,
    step: usize,
) {
    for k0 in (0..count).step_by(S::LANES) {
        let lanes = (count - k0).min(S::LANES);
        // SAFETY: the caller's.
        unsafe {
            let d = read_tile::<S, A>(
                s,
                base.wrapping_offset(k0 as isize * stride),
                (row, col, stride),
                rows,
                cols,
                lanes,
            );
            let t = sandwich(s, bt, bt, &d);
            write_points(s, &t, v.add(k0), step, lanes);
        }
    }
}

/// `[lo, hi)`: the offsets of a tile starting at `start` that fall inside
/// `0..len`, clamped to the tile.
fn inside(start: i64, len: usize, tile: usize) -> (i64, i64) {
    (
        (-start).clamp(0, tile as i64),
        (len as i64 - start).clamp(0, tile as i64),
    )
}

/// Stores the α² vectors of a transformed tile, point `p` at `at + p *
/// step`, `lanes` lanes.
///
/// # Safety
/// The stores are inside the scratch space.
#[inline(always)]
unsafe fn write_points<S: Simd, const A: usize>(s: S, t: &[[S::V; A]; A], at: *mut f32, step: usize, lanes: usize) {
    for (i, line) in t.iter().enumerate() {
        for (j, v) in line.iter().enumerate() {
            // SAFETY: the caller's.
            unsafe { s.store_part(at.add((i * A + j) * step), lanes, *v) };
        }
    }
}

/// U[p][c][f] = (G g G^T)[p] for every channel and feature.
struct KernelTransform<T, const A: usize, const M: usize>(Call, PhantomData<T>);

impl<T: Tiles<A, M>, const A: usize, const M: usize> Kernel for KernelTransform<T, A, M> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let call = &self.0;
        let (g, f) = (&call.g, &T::MATRICES);
        let fp = g.padded_features();
        let u = call.scratch.at(0);
        let [sy, sx, sc, sf] = g.rhs;
        let step = g.channels * fp;
        for c in 0..g.channels {
            for f0 in (0..g.features).step_by(S::LANES) {
                let lanes = (g.features - f0).min(S::LANES);
                let mut k = [[s.zero(); 3]; 3];
                for (ky, line) in k.iter_mut().enumerate() {
                    for (kx, v) in line.iter_mut().enumerate() {
                        let (y, x) = if g.flip { (2 - ky, 2 - kx) } else { (ky, kx) };
                        let at =
                            call.rhs.at(0).cast_const().wrapping_offset(
                                y as isize * sy + x as isize * sx + c as isize * sc + f0 as isize * sf,
                            );
                        // SAFETY: a kernel element, zero lanes past the features.
                        *v = unsafe { s.gather(at, sf, lanes) };
                    }
                }
                let t = sandwich(s, &f.g, &f.g, &k);
                // SAFETY: U's rows hold whole vectors of padded features.
                unsafe { write_points(s, &t, u.add(c * fp + f0), step, S::LANES) };
            }
        }
    }
}

/// One block of output tiles: input transform, GEMMs, output transform.
struct DataBlock<T, const A: usize, const M: usize> {
    call: Call,
    worker: usize,
    block: usize,
    tiles: PhantomData<T>,
}

impl<T: Tiles<A, M>, const A: usize, const M: usize> Kernel for DataBlock<T, A, M> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (call, f) = (&self.call, &T::MATRICES);
        let g = &call.g;
        let fp = g.padded_features();
        let (first, n) = call.span(self.block);
        let (v, mm) = call.worker(self.worker);
        let (ty, tx) = g.tiles();
        let block = call.layout.block;
        let [lb, ly, lx, lc] = g.lhs;
        let [ob, oy, ox, of] = g.out;
        let tile_of = |t: usize| (t / (ty * tx), (t / tx) % ty, t % tx);
        // V[p][t][c]: the block's input tiles, transformed.
        for t in 0..n {
            let (b, y, x) = tile_of(first + t);
            let y0 = (y * M) as i64 - g.padding[0];
            let x0 = (x * M) as i64 - g.padding[1];
            let base = call
                .lhs
                .at(0)
                .cast_const()
                .wrapping_offset(b as isize * lb + y0 as isize * ly + x0 as isize * lx);
            let rows = inside(y0, g.height, A);
            let cols = inside(x0, g.width, A);
            // SAFETY: the tile's in-bounds pixels, and V's rows.
            unsafe {
                transform_input::<S, A>(
                    s,
                    &f.bt,
                    base,
                    (ly, lx, lc),
                    (rows, cols),
                    g.channels,
                    v.add(t * g.channels),
                    block * g.channels,
                )
            };
        }
        // M[p] = V[p] . U[p].
        let u = call.scratch.at(0).cast_const();
        for p in 0..A * A {
            // SAFETY: the operands are this worker's V and M and the call's U.
            unsafe {
                gemm(
                    s,
                    (n, g.channels, g.vectors(S::LANES)),
                    v.add(p * block * g.channels),
                    (g.channels as isize, 1),
                    Operand {
                        at: u.add(p * g.channels * fp),
                        rows: fp as isize,
                    },
                    Operand {
                        at: mm.add(p * block * fp),
                        rows: fp as isize,
                    },
                    false,
                );
            }
        }
        // The output tiles: A^T M A, clipped at the output's edges.
        for t in 0..n {
            let (b, y, x) = tile_of(first + t);
            let (y0, x0) = (y * M, x * M);
            let rows = (g.out_height - y0).min(M);
            let cols = (g.out_width - x0).min(M);
            let base = call
                .out
                .at(0)
                .wrapping_offset(b as isize * ob + y0 as isize * oy + x0 as isize * ox);
            for f0 in (0..g.features).step_by(S::LANES) {
                let lanes = (g.features - f0).min(S::LANES);
                let mut prod = [[s.zero(); A]; A];
                for (i, line) in prod.iter_mut().enumerate() {
                    for (j, x) in line.iter_mut().enumerate() {
                        // SAFETY: M's rows hold whole vectors.
                        *x = unsafe { s.load(mm.add(((i * A + j) * block + t) * fp + f0)) };
                    }
                }
                let y = sandwich(s, &f.at, &f.at, &prod);
                for (i, line) in y.iter().enumerate().take(rows) {
                    for (j, v) in line.iter().enumerate().take(cols) {
                        let at = base.wrapping_offset(i as isize * oy + j as isize * ox + f0 as isize * of);
                        // SAFETY: an output pixel inside the output.
                        unsafe { s.scatter(at, of, lanes, *v) };
                    }
                }
            }
        }
    }
}

/// One block of (kernel tile, sample) pairs of the kernel gradient: the
/// input and gradient transforms, and their products summed into the
/// segment's partial sums.
struct FilterBlock<T, const A: usize, const M: usize> {
    call: Call,
    worker: usize,
    block: usize,
    /// The segment's first block, which starts its sums.
    first: bool,
    segment: usize,
    tiles: PhantomData<T>,
}

impl<T: Tiles<A, M>, const A: usize, const M: usize> Kernel for FilterBlock<T, A, M> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (call, f) = (&self.call, &T::MATRICES);
        let g = &call.g;
        let fp = g.padded_features();
        let (first, n) = call.span(self.block);
        let (v, w) = call.worker(self.worker);
        let (_, tx) = g.tiles();
        let block = call.layout.block;
        let [lb, ly, lx, lc] = g.lhs;
        let [ry, rx, rc, rf] = g.rhs;
        for t in 0..n {
            let pair = first + t;
            let (tile, c) = (pair / g.channels, pair % g.channels);
            let (y, x) = ((tile / tx) * M, (tile % tx) * M);
            // V[p][t][b]: the input under the kernel tile, transformed.
            let y0 = y as i64 - g.padding[0];
            let x0 = x as i64 - g.padding[1];
            let base = call
                .lhs
                .at(0)
                .cast_const()
                .wrapping_offset(c as isize * lc + y0 as isize * ly + x0 as isize * lx);
            let rows = inside(y0, g.height, A);
            let cols = inside(x0, g.width, A);
            // SAFETY: the tile's in-bounds pixels, and V's rows.
            unsafe {
                transform_input::<S, A>(
                    s,
                    &f.bt,
                    base,
                    (ly, lx, lb),
                    (rows, cols),
                    g.batch,
                    v.add(t * g.batch),
                    block * g.batch,
                )
            };
            // W[p][t][f]: the kernel tile (the output gradient), A e A^T.
            let base = call
                .rhs
                .at(0)
                .cast_const()
                .wrapping_offset(y as isize * ry + x as isize * rx + c as isize * rc);
            let rows = (0, (g.kernel_height - y).min(M) as i64);
            let cols = (0, (g.kernel_width - x).min(M) as i64);
            for f0 in (0..g.features).step_by(S::LANES) {
                let lanes = (g.features - f0).min(S::LANES);
                // SAFETY: the kernel tile's in-bounds elements, and W's rows.
                unsafe {
                    let e = read_tile::<S, M>(
                        s,
                        base.wrapping_offset(f0 as isize * rf),
                        (ry, rx, rf),
                        rows,
                        cols,
                        lanes,
                    );
                    let t_ = sandwich(s, &f.a, &f.a, &e);
                    write_points(s, &t_, w.add(t * fp + f0), block * fp, S::LANES);
                }
            }
        }
        // Partial[p] (+)= V[p]^T . W[p], summed over the block's pairs.
        let partial = call.scratch.at(self.segment * aligned(A * A * g.batch * fp));
        for p in 0..A * A {
            // SAFETY: this worker's V and W, and this segment's sums.
            unsafe {
                gemm(
                    s,
                    (g.batch, n, g.vectors(S::LANES)),
                    v.add(p * block * g.batch),
                    (1, g.batch as isize),
                    Operand {
                        at: w.add(p * block * fp).cast_const(),
                        rows: fp as isize,
                    },
                    Operand {
                        at: partial.add(p * g.batch * fp),
                        rows: fp as isize,
                    },
                    !self.first,
                );
            }
        }
    }
}

/// The kernel gradient from the segments' sums: G^T (Σ partial) G.
struct FilterOutput<T, const A: usize, const M: usize>(Call, PhantomData<T>);

impl<T: Tiles<A, M>, const A: usize, const M: usize> Kernel for FilterOutput<T, A, M> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (call, f) = (&self.0, &T::MATRICES);
        let g = &call.g;
        let fp = g.padded_features();
        let partial = aligned(A * A * g.batch * fp);
        let sums = call.scratch.at(0);
        let [ob, oy, ox, of] = g.out;
        for b in 0..g.batch {
            for f0 in (0..g.features).step_by(S::LANES) {
                let lanes = (g.features - f0).min(S::LANES);
                let mut prod = [[s.zero(); A]; A];
                for (i, line) in prod.iter_mut().enumerate() {
                    for (j, x) in line.iter_mut().enumerate() {
                        let at = ((i * A + j) * g.batch + b) * fp + f0;
                        // SAFETY: every segment's sums hold whole vectors.
                        unsafe {
                            let mut total = s.load(sums.add(at));
                            for segment in 1..call.layout.segments {
                                total = s.add(total, s.load(sums.add(segment * partial + at)));
                            }
                            *x = total;
                        }
                    }
                }
                let y = sandwich(s, &f.gt, &f.gt, &prod);
                let base = call.out.at(0).wrapping_offset(b as isize * ob + f0 as isize * of);
                for (i, line) in y.iter().enumerate() {
                    for (j, v) in line.iter().enumerate() {
                        // SAFETY: one of the 3x3 output's pixels.
                        unsafe { s.scatter(base.wrapping_offset(i as isize * oy + j as isize * ox), of, lanes, *v) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strides of a row-major tensor of `dims`, read along `axes`.
    fn strides(dims: &[usize], axes: [usize; 4]) -> [isize; 4] {
        let mut s = vec![1isize; dims.len()];
        for i in (0..dims.len() - 1).rev() {
            s[i] = s[i + 1] * dims[i + 1] as isize;
        }
        axes.map(|a| s[a])
    }

    /// The convolution by its definition, in f64.
    fn direct(g: &Geometry, lhs: &[f32], rhs: &[f32]) -> Vec<(isize, f64)> {
        let mut out = Vec::new();
        let at = |s: &[isize; 4], i: [usize; 4]| (0..4).map(|a| s[a] * i[a] as isize).sum::<isize>();
        for b in 0..g.batch {
            for y in 0..g.out_height {
                for x in 0..g.out_width {
                    for f in 0..g.features {
                        let mut sum = 0.0;
                        for ky in 0..g.kernel_height {
                            for kx in 0..g.kernel_width {
                                let iy = (y + ky) as i64 - g.padding[0];
                                let ix = (x + kx) as i64 - g.padding[1];
                                if iy < 0 || ix < 0 || iy >= g.height as i64 || ix >= g.width as i64 {
                                    continue;
                                }
                                let (ry, rx) = if g.flip {
                                    (g.kernel_height - 1 - ky, g.kernel_width - 1 - kx)
                                } else {
                                    (ky, kx)
                                };
                                for c in 0..g.channels {
                                    let l = lhs[at(&g.lhs, [b, iy as usize, ix as usize, c]) as usize] as f64;
                                    let r = rhs[at(&g.rhs, [ry, rx, c, f]) as usize] as f64;
                                    sum += l * r;
                                }
                            }
                        }
                        out.push((at(&g.out, [b, y, x, f]), sum));
                    }
                }
            }
        }
        out
    }

    /// Runs the call on buffers with guard values after them; returns the
    /// worst error relative to the output's largest value.
    fn worst_error(g: &Geometry, lhs_len: usize, rhs_len: usize, out_len: usize) -> f64 {
        const GUARD: usize = 64;
        let lhs: Vec<f32> = (0..lhs_len).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let rhs: Vec<f32> = (0..rhs_len)
            .map(|i| ((i * 104729 % 997) as f32 / 498.5) - 1.0)
            .collect();
        let mut out = vec![f32::NAN; out_len + GUARD];
        let mut scratch = vec![f32::NAN; Layout::of(g).total + GUARD];
        // SAFETY: the buffers have the geometry's extents.
        unsafe { convolve(*g, lhs.as_ptr(), rhs.as_ptr(), out.as_mut_ptr(), scratch.as_mut_ptr()) };
        assert!(
            out[out_len..].iter().all(|v| v.is_nan()),
            "{g:?}: wrote past the output"
        );
        let total = Layout::of(g).total;
        assert!(
            scratch[total..].iter().all(|v| v.is_nan()),
            "{g:?}: wrote past the scratch"
        );
        let want = direct(g, &lhs, &rhs);
        let scale = want.iter().fold(1e-6f64, |m, (_, v)| m.max(v.abs()));
        want.iter()
            .map(|&(i, v)| (out[i as usize] as f64 - v).abs() / scale)
            .fold(0.0, f64::max)
    }

    fn data(m: usize, lanes: usize, (b, h, w, c, f): (usize, usize, usize, usize, usize), pad: i64, flip: bool) -> f64 {
        let (oh, ow) = ((h as i64 + 2 * pad - 2) as usize, (w as i64 + 2 * pad - 2) as usize);
        // The input gradient's kernel layout (features before channels)
        // when flipped, as autodiff builds it.
        let (rhs_dims, rhs_axes) = if flip {
            ([3, 3, f, c], [0, 1, 3, 2])
        } else {
            ([3, 3, c, f], [0, 1, 2, 3])
        };
        let g = Geometry {
            role: Role::Data,
            m,
            batch: b,
            height: h,
            width: w,
            channels: c,
            features: f,
            out_height: oh,
            out_width: ow,
            kernel_height: 3,
            kernel_width: 3,
            padding: [pad, pad],
            flip,
            lhs: strides(&[b, h, w, c], [0, 1, 2, 3]),
            rhs: strides(&rhs_dims, rhs_axes),
            out: strides(&[b, oh, ow, f], [0, 1, 2, 3]),
            lanes,
        };
        worst_error(&g, b * h * w * c, 9 * c * f, b * oh * ow * f)
    }

    /// The kernel gradient of a 3x3 convolution over `x` [n, h, w, c]
    /// with `pad`, its output gradient [n, oh, ow, f].
    fn filter(m: usize, lanes: usize, (n, h, w, c, f): (usize, usize, usize, usize, usize), pad: i64) -> f64 {
        let (oh, ow) = ((h as i64 + 2 * pad - 2) as usize, (w as i64 + 2 * pad - 2) as usize);
        let g = Geometry {
            role: Role::Filter,
            m,
            batch: c,
            height: h,
            width: w,
            channels: n,
            features: f,
            out_height: 3,
            out_width: 3,
            kernel_height: oh,
            kernel_width: ow,
            padding: [pad, pad],
            flip: false,
            lhs: strides(&[n, h, w, c], [3, 1, 2, 0]),
            rhs: strides(&[n, oh, ow, f], [1, 2, 0, 3]),
            out: strides(&[3, 3, c, f], [2, 0, 1, 3]),
            lanes,
        };
        worst_error(&g, n * h * w * c, n * oh * ow * f, 9 * c * f)
    }

    /// Every tile size and instruction set, on sizes the tiles do and do
    /// not divide, channel counts below and above a vector, valid and same
    /// padding, flipped kernels: within F(6x6)'s rounding of the direct sum.
    #[test]
    fn every_role_against_the_direct_sums() {
        for lanes in [16, 8, 4] {
            for m in [2, 4, 6] {
                for (sizes, pad) in [((2, 9, 7, 3, 17), 1), ((1, 6, 6, 20, 5), 0), ((3, 5, 11, 8, 8), 1)] {
                    for flip in [false, true] {
                        let e = data(m, lanes, sizes, pad, flip);
                        assert!(
                            e < 1e-4,
                            "data F({m}) {lanes} lanes {sizes:?} pad {pad} flip {flip}: {e}"
                        );
                    }
                    let e = filter(m, lanes, sizes, pad);
                    assert!(e < 1e-4, "filter F({m}) {lanes} lanes {sizes:?} pad {pad}: {e}");
                }
            }
        }
    }
}
