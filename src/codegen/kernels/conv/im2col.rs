//! Convolution as one GEMM over gathered patches (im2col): which index
//! runs along the GEMM's rows and which along its contraction, how the
//! patch matrix is laid out so the gather copies contiguous runs, and the
//! code, tile by tile (a tile of patches stays in cache between the gather
//! writing it and the GEMM reading it). It computes any convolution.

use super::super::super::emit::Emitter;
use super::super::super::gemm::{self, Sizes};
use super::super::{Context, Lowering};
use super::Candidate;
use crate::ir::{Conv, Graph, NodeId, Shape};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Element strides of the output along (batch, y, x, feature).
    pub out_strides: [usize; 4],
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
    /// Groups, each one GEMM of the sizes above (which are one group's),
    /// and how far apart the groups start in the input, the kernel and the
    /// output, in elements.
    pub groups: usize,
    pub group_steps: [usize; 3],
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
        let groups = conv.feature_groups.max(conv.batch_groups).max(1);
        let (b, ci, co) = (
            l[conv.lhs.batch] / conv.batch_groups.max(1),
            l[conv.lhs.feature] / conv.feature_groups.max(1),
            r[conv.rhs.output] / groups,
        );
        let lhs_step = if conv.batch_groups > 1 {
            b * lhs_strides[0]
        } else {
            ci * lhs_strides[3]
        };
        let mut g = ConvGemm {
            b,
            h: l[conv.lhs.spatial[0]],
            w: l[conv.lhs.spatial[1]],
            ci,
            kh: r[conv.rhs.spatial[0]],
            kw: r[conv.rhs.spatial[1]],
            co,
            oh: o[conv.out.spatial[0]],
            ow: o[conv.out.spatial[1]],
            lhs_strides,
            rhs_strides,
            out_strides,
            rows: [Axis::B, Axis::Oy, Axis::Ox],
            row_stride: 0,
            co_stride: out_strides[3],
            ks: [Axis::Ky, Axis::Kx, Axis::Ci],
            b_direct: None,
            a_column_major: false,
            groups,
            group_steps: [lhs_step, co * rhs_strides[3], co * out_strides[3]],
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

    /// How the gather copies the input into the patch matrix.
    fn copies(&self, c: &Conv) -> Copies {
        // Loop order: A's memory order, the contiguous run innermost.
        let order: Vec<Axis> = if self.a_column_major {
            self.ks.iter().chain(&self.rows[..2]).copied().collect()
        } else {
            self.rows.iter().chain(&self.ks[..2]).copied().collect()
        };
        let run = if self.a_column_major { Axis::B } else { Axis::Ci };
        let [lb, _, lw, lc] = self.lhs_strides;
        let run_src_stride = if run == Axis::B { lb } else { lc };
        // The x index next to the run widens it when each step moves one
        // input pixel and the input keeps neighbouring pixels' runs back to
        // back: one copy then covers a row of taps (3 x 32 channels for a
        // 3x3 kernel).
        let x_step = |axis: Axis| match axis {
            Axis::Kx => c.rhs_dilation[1],
            Axis::Ox => c.strides[1],
            _ => 0,
        };
        let last = order[order.len() - 1];
        let wide = x_step(last) == 1 && c.lhs_dilation[1] == 1 && run_src_stride == 1 && lw == self.len(run);
        Copies {
            order,
            run,
            run_src_stride,
            wide,
        }
    }

    /// How many copies the gather makes, each with its loop and address
    /// arithmetic around it: one per run of elements, one per element
    /// where the run is strided in the input.
    pub fn copy_count(&self, c: &Conv) -> u64 {
        let copies = self.copies(c);
        let patches = (self.groups * self.m() * self.k()) as u64;
        if copies.run_src_stride != 1 {
            return patches;
        }
        let last = copies.order[copies.order.len() - 1];
        let width = if copies.wide { self.len(last) } else { 1 };
        patches / (self.len(copies.run) * width).max(1) as u64
    }

    /// Scratch elements: one tile of the im2col matrix, and the packed
    /// kernel.
    pub fn scratch(&self) -> (usize, usize) {
        let packed = if self.b_direct.is_some() { 0 } else { self.k() * self.co };
        let n = self.len(self.outer()).max(1);
        (self.m() * self.k() / n * self.tile(), packed)
    }
}

/// The gather's loops: its indices in A's memory order, the index its
/// contiguous runs follow and their stride in the input, and whether a run
/// also covers the neighbouring x index (see [`ConvGemm::copies`]).
struct Copies {
    order: Vec<Axis>,
    run: Axis,
    run_src_stride: usize,
    wide: bool,
}

/// The im2col algorithm, for any convolution.
pub struct Im2col;

/// Its name, as `--conv` takes it.
pub const NAME: &str = "gemm";

/// The cost of one copy of the gather beyond its bytes: its loop, address
/// arithmetic and bounds tests (on mnist_cnn's first layer, where each copy
/// moves 1 to 3 values, the gather takes about 10 ns a copy).
const COPY_SECONDS: f64 = 5e-9;

impl Im2col {
    fn lowering_of(g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Im2colGemm {
        let x = g.operands(out);
        Im2colGemm {
            out,
            lhs: x[0],
            rhs: x[1],
            conv: *conv,
            geo: ConvGemm::new(conv, &g[x[0]].shape, &g[x[1]].shape, &g[out].shape, batch),
        }
    }
}

impl super::Algorithm for Im2col {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan(&self, g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Option<Candidate> {
        let lowering = Im2col::lowering_of(g, out, conv, batch);
        // The GEMM's work, and the gather writing every patch and the GEMM
        // reading it back.
        let geo = &lowering.geo;
        let patches = (geo.groups * geo.m() * geo.k()) as u64;
        let gemm = [geo.m(), geo.k(), geo.co];
        let gather = super::seconds(0, 8 * patches) + geo.copy_count(conv) as f64 * COPY_SECONDS;
        Some(Candidate {
            cost: geo.groups as f64 * super::gemm_seconds(gemm, 0) + gather,
            lowering: Arc::new(lowering),
        })
    }
}

/// A convolution as the patches of its input (im2col) times its kernel.
#[derive(Debug)]
struct Im2colGemm {
    out: NodeId,
    lhs: NodeId,
    rhs: NodeId,
    conv: Conv,
    geo: ConvGemm,
}

impl Lowering for Im2colGemm {
    fn name(&self) -> String {
        "im2col + gemm".into()
    }

    fn scratch(&self) -> usize {
        let (a, b) = self.geo.scratch();
        a + b
    }

    fn flops(&self) -> u64 {
        2 * (self.geo.groups * self.geo.m() * self.geo.k() * self.geo.co) as u64
    }

    /// Group by group: packs the kernel if needed, then tile by tile,
    /// gathers the input's patches and multiplies.
    fn emit(&self, e: &mut Emitter, ctx: &Context, index: usize) {
        let bases = [
            ctx.address(e, self.lhs),
            ctx.address(e, self.rhs),
            ctx.address(e, self.out),
        ];
        let scratch = ctx.scratch(e, index);
        if self.geo.groups == 1 {
            return self.group(e, ctx, bases, scratch);
        }
        e.for_n(self.geo.groups, |e, g| {
            let at = [0, 1, 2].map(|i| {
                let skip = e.b.ins().imul_imm_s(g, self.geo.group_steps[i] as i64);
                e.element(bases[i], skip)
            });
            self.group(e, ctx, at, scratch);
        });
    }
}

impl Im2colGemm {
    /// One group's convolution: input, kernel and output start at `bases`.
    fn group(&self, e: &mut Emitter, ctx: &Context, [lhs_at, rhs_at, out_at]: [Value; 3], scratch: Value) {
        let (geo, c) = (&self.geo, &self.conv);
        let (a_len, _) = geo.scratch();
        let (b_at, b_strides) = match geo.b_direct {
            Some(strides) => (rhs_at, strides),
            None => {
                let packed = e.offset(scratch, a_len);
                pack_kernel(e, geo, c.flip, rhs_at, packed);
                (packed, (geo.co, 1))
            }
        };
        let (m, k) = (geo.m(), geo.k());
        let outer = geo.len(geo.outer());
        let tile = geo.tile();
        let c_strides = (geo.row_stride, geo.co_stride);
        e.for_n(outer.div_ceil(tile), |e, t| {
            let first = e.b.ins().imul_imm_s(t, tile as i64);
            let end = e.b.ins().iadd_imm_s(first, tile as i64);
            let limit = e.int(outer as i64);
            let end = e.b.ins().smin(end, limit);
            im2col(e, geo, c, lhs_at, scratch, (first, end));
            let count = e.b.ins().isub(end, first);
            let n = e.int(geo.co as i64);
            if geo.a_column_major {
                // A tile holds columns (contraction indices): accumulate.
                let k_tile = e.b.ins().imul_imm_s(count, (k / outer) as i64);
                let k_first = e.b.ins().imul_imm_s(first, (k / outer) as i64);
                let b_rows = e.b.ins().imul_imm_s(k_first, b_strides.0 as i64);
                let b_tile = e.element(b_at, b_rows);
                let size = Sizes {
                    m: e.int(m as i64),
                    k: k_tile,
                    n,
                };
                let accumulate = e.b.ins().icmp_imm_s(IntCC::NotEqual, t, 0);
                let accumulate = e.b.ins().uextend(types::I64, accumulate);
                gemm::call(
                    e,
                    ctx,
                    size,
                    (scratch, (1, m)),
                    (b_tile, b_strides),
                    (out_at, c_strides),
                    accumulate,
                );
            } else {
                // A tile holds rows (output pixels): its own rows of C.
                let m_tile = e.b.ins().imul_imm_s(count, (m / outer) as i64);
                let m_first = e.b.ins().imul_imm_s(first, (m / outer) as i64);
                let c_rows = e.b.ins().imul_imm_s(m_first, geo.row_stride as i64);
                let c_tile = e.element(out_at, c_rows);
                let size = Sizes {
                    m: m_tile,
                    k: e.int(k as i64),
                    n,
                };
                let no = e.int(0);
                gemm::call(
                    e,
                    ctx,
                    size,
                    (scratch, (k, 1)),
                    (b_at, b_strides),
                    (c_tile, c_strides),
                    no,
                );
            }
        });
    }
}

/// B[(ky, kx, ci), co] = kernel[ky', kx', ci, co], flipped where asked.
pub fn pack_kernel(e: &mut Emitter, geo: &ConvGemm, flip: bool, rhs: Value, packed: Value) {
    let [sky, skx, sci, sco] = geo.rhs_strides;
    e.for_n(geo.kh, |e, ky| {
        let fy = if flip {
            let last = e.int(geo.kh as i64 - 1);
            e.b.ins().isub(last, ky)
        } else {
            ky
        };
        e.for_n(geo.kw, |e, kx| {
            let fx = if flip {
                let last = e.int(geo.kw as i64 - 1);
                e.b.ins().isub(last, kx)
            } else {
                kx
            };
            let zero = e.int(0);
            let src = e.mul_add_index(zero, fy, sky);
            let src = e.mul_add_index(src, fx, skx);
            let row = e.b.ins().imul_imm_s(ky, geo.kw as i64);
            let row = e.b.ins().iadd(row, kx);
            e.for_n(geo.ci, |e, ci| {
                let s = e.mul_add_index(src, ci, sci);
                let r = e.b.ins().imul_imm_s(row, geo.ci as i64);
                let r = e.b.ins().iadd(r, ci);
                let dst = e.b.ins().imul_imm_s(r, geo.co as i64);
                e.for_n(geo.co, |e, co| {
                    let s = e.mul_add_index(s, co, sco);
                    let from = e.element(rhs, s);
                    let v = e.load(types::F32, from);
                    let d = e.b.ins().iadd(dst, co);
                    let to = e.element(packed, d);
                    e.store(v, to);
                });
            });
        });
    });
}

/// The im2col gather: A's rows are output pixels, its columns kernel taps,
/// each element the (dilated, padded) input under that tap; runs along the
/// contiguous axis are copied f32x4 at a time, or zeroed where the tap
/// falls in the padding.
fn im2col(e: &mut Emitter, geo: &ConvGemm, c: &Conv, lhs: Value, a: Value, (first, end): (Value, Value)) {
    let (m, k) = (geo.m(), geo.k());
    let Copies {
        order,
        run,
        run_src_stride,
        wide,
    } = geo.copies(c);
    // Element stride in A of each index.
    let mut a_stride: HashMap<Axis, usize> = HashMap::new();
    let (rows_scale, ks_scale) = if geo.a_column_major { (1, m) } else { (k, 1) };
    let mut s = rows_scale;
    for &r in geo.rows.iter().rev() {
        a_stride.insert(r, s);
        s *= geo.len(r);
    }
    let mut s = ks_scale;
    for &q in geo.ks.iter().rev() {
        a_stride.insert(q, s);
        s *= geo.len(q);
    }
    let run_len = geo.len(run);
    let [lb, lh, lw, lc] = geo.lhs_strides;
    let last = order[order.len() - 1];
    let loops = if wide { &order[..order.len() - 1] } else { &order[..] };
    let width = if wide { geo.len(last) } else { 1 };
    // Whether any tap can fall outside the input or between dilated rows.
    let extent = |n: usize, d: usize| (n as i64 - 1) * d as i64 + 1;
    let in_bounds = |axis: usize, out: usize, kernel: usize| {
        let lo = c.padding[axis].0;
        let max = (out as i64 - 1) * c.strides[axis] as i64 + (kernel as i64 - 1) * c.rhs_dilation[axis] as i64 - lo;
        lo <= 0 && max < extent([geo.h, geo.w][axis], c.lhs_dilation[axis]) && c.lhs_dilation[axis] == 1
    };
    let checked = !(in_bounds(0, geo.oh, geo.kh) && in_bounds(1, geo.ow, geo.kw));

    fn open(
        e: &mut Emitter,
        order: &[Axis],
        geo: &ConvGemm,
        index: &mut HashMap<Axis, Value>,
        body: &mut dyn FnMut(&mut Emitter, &HashMap<Axis, Value>),
    ) {
        match order.split_first() {
            None => body(e, index),
            Some((&axis, rest)) => e.for_n(geo.len(axis), |e, i| {
                index.insert(axis, i);
                open(e, rest, geo, index, body);
            }),
        }
    }
    // The outermost index runs over this tile only; the tile starts at A's
    // first element.
    let outer = order[0];
    let mut index = HashMap::new();
    e.for_range(first, end, 1, |e, i| {
        index.insert(outer, i);
        open(e, &loops[1..], geo, &mut index, &mut |e, idx| {
            let zero = e.int(0);
            let at = |axis: &Axis| if wide && *axis == last { zero } else { idx[axis] };
            // A's offset of this run, within the tile.
            let local = e.b.ins().isub(idx[&outer], first);
            let mut dst = e.mul_add_index(zero, local, a_stride[&outer]);
            for axis in &loops[1..] {
                dst = e.mul_add_index(dst, idx[axis], a_stride[axis]);
            }
            let to = e.element(a, dst);
            // The input coordinate under the (first) tap, in dilated and
            // padded space.
            let coordinate = |e: &mut Emitter, axis: usize, o: Axis, kk: Axis| {
                let y = e.b.ins().imul_imm_s(at(&o), c.strides[axis] as i64);
                let t = e.b.ins().imul_imm_s(at(&kk), c.rhs_dilation[axis] as i64);
                let y = e.b.ins().iadd(y, t);
                e.b.ins().iadd_imm_s(y, -c.padding[axis].0)
            };
            let y = coordinate(e, 0, Axis::Oy, Axis::Ky);
            let x = coordinate(e, 1, Axis::Ox, Axis::Kx);
            let fixed = if run == Axis::B { (Axis::Ci, lc) } else { (Axis::B, lb) };
            // The input's run at (y, x), copied to A at `to`, `count` runs wide.
            let copy = |e: &mut Emitter, y: Value, x: Value, to: Value, count: Value| {
                let (iy, ix) = if c.lhs_dilation == [1, 1] {
                    (y, x)
                } else {
                    (
                        e.b.ins().sdiv_imm_s(y, c.lhs_dilation[0] as i64),
                        e.b.ins().sdiv_imm_s(x, c.lhs_dilation[1] as i64),
                    )
                };
                let zero = e.int(0);
                let src = e.mul_add_index(zero, idx[&fixed.0], fixed.1);
                let src = e.mul_add_index(src, iy, lh);
                let src = e.mul_add_index(src, ix, lw);
                let from = e.element(lhs, src);
                if run_src_stride == 1 {
                    let n = e.b.ins().imul_imm_s(count, run_len as i64);
                    e.run(n, &[(from, 1), (to, 1)], |e, ty, p| {
                        let v = e.load(ty, p[0]);
                        e.store(v, p[1]);
                    });
                } else {
                    e.walk(run_len, &[(from, run_src_stride), (to, 1)], |e, ty, p| {
                        let v = e.load(ty, p[0]);
                        e.store(v, p[1]);
                    });
                }
            };
            let zeros = |e: &mut Emitter, to: Value, count: Value| {
                let n = e.b.ins().imul_imm_s(count, run_len as i64);
                e.run(n, &[(to, 1)], |e, ty, p| {
                    let z = e.float(ty, 0.0);
                    e.store(z, p[0]);
                });
            };
            let all = e.int(width as i64);
            if !checked {
                copy(e, y, x, to, all);
                return;
            }
            let valid = |e: &mut Emitter, v: Value, axis: usize| {
                let d = c.lhs_dilation[axis] as i64;
                let limit = extent([geo.h, geo.w][axis], c.lhs_dilation[axis]);
                let ge = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, v, 0);
                let lt = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, limit);
                let ok = e.b.ins().band(ge, lt);
                if d == 1 {
                    ok
                } else {
                    let r = e.b.ins().srem_imm_s(v, d);
                    let on_grid = e.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
                    e.b.ins().band(ok, on_grid)
                }
            };
            let vy = valid(e, y, 0);
            if wide {
                // Taps [lo, hi) of the row fall inside the input; pad the
                // rest with zeros.
                e.if_else(
                    vy,
                    |e| {
                        let zero = e.int(0);
                        let neg = e.b.ins().ineg(x);
                        let lo = e.b.ins().smax(neg, zero);
                        let lo = e.b.ins().smin(lo, all);
                        let w = e.int(geo.w as i64);
                        let room = e.b.ins().isub(w, x);
                        let hi = e.b.ins().smin(room, all);
                        let hi = e.b.ins().smax(hi, lo);
                        zeros(e, to, lo);
                        let start = e.b.ins().imul_imm_s(lo, run_len as i64);
                        let to_lo = e.element(to, start);
                        let x_lo = e.b.ins().iadd(x, lo);
                        let middle = e.b.ins().isub(hi, lo);
                        copy(e, y, x_lo, to_lo, middle);
                        let start = e.b.ins().imul_imm_s(hi, run_len as i64);
                        let to_hi = e.element(to, start);
                        let rest = e.b.ins().isub(all, hi);
                        zeros(e, to_hi, rest);
                    },
                    |e| zeros(e, to, all),
                );
            } else {
                let vx = valid(e, x, 1);
                let ok = e.b.ins().band(vy, vx);
                e.if_else(ok, |e| copy(e, y, x, to, all), |e| zeros(e, to, all));
            }
        });
    });
}
