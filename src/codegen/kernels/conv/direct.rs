//! Direct convolution, for the convolutions whose GEMM is badly shaped: no
//! patch matrix, no library call. A tile of the output, a few neighbouring
//! output pixels by up to 32 output channels, is summed in registers,
//! each input value broadcast against f32x4 vectors of kernel values
//! (register blocking over the output channels), then stored once.
//!
//! Two schedules, for the two shapes the GEMM does badly:
//! - `taps`: a short contraction (the first layer's 9 or 27 taps, where
//!   the GEMM's K is too short to pay for its packing). Every tap is
//!   unrolled with constant offsets; the output's lines (batch, row) are
//!   split across the cores.
//! - `reduction`: few outputs and a long contraction (the first layer's
//!   weight gradient: 9 rows by 32 channels, summed over every pixel of
//!   the batch, a GEMM with 9 rows). The tiles are sums held in memory,
//!   each brought into registers for a run of the contraction's innermost
//!   index; the contraction's outermost index (the batch) is split across
//!   the cores into a fixed number of partial sums, added in a fixed order,
//!   so the result does not depend on which thread ran what.
//!
//! Padding is a copy of the input into a zero-bordered buffer before the
//! loops, so that the loops themselves have no edges to test.

use super::super::super::emit::{Emitter, LANES, VECTOR, flags};
use super::super::{Context, Lowering, fill};
use super::Candidate;
use super::im2col::{ConvGemm, pack_kernel};
use crate::ir::{Conv, Graph, NodeId};
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use std::sync::Arc;

/// The longest contraction the `taps` schedule unrolls.
const MAX_TAPS: usize = 64;

/// The most output values (rows times channels) the `reduction` schedule
/// keeps partial sums of.
const MAX_REDUCED: usize = 64 * 64;

/// The largest kernel packed when its layout is not the one the loops
/// read (an input gradient's flipped kernel, say).
const MAX_PACKED: usize = 1 << 16;

/// Output channels per register tile: 8 f32x4 accumulators.
const TILE_VECTORS: usize = 8;

/// Work below which a kernel stays on one core: waking the pool costs
/// more than it saves (a few microseconds, about 100,000 FLOPs).
pub const SPLIT_FLOPS: u64 = 1 << 20;

/// One index of the loop nest: its length, and its element strides in the
/// input and in the kernel (a contraction index) or in the output (a row
/// index).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Index {
    len: usize,
    input: usize,
    other: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Schedule {
    Taps,
    /// Partial sums over `parts` ranges of the contraction's outermost index.
    Reduction {
        parts: usize,
    },
}

/// The input copied into a zero-bordered buffer: its dimensions in memory
/// order, and for each the range `[start, end)` copied and where that
/// range starts in the buffer.
#[derive(Clone, Debug, PartialEq)]
struct Padding {
    dims: [usize; 4],
    copied: [(usize, usize, usize); 4],
    padded: [usize; 4],
}

/// The algorithm.
pub struct Direct;

impl super::Algorithm for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn plan(&self, g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Option<Candidate> {
        let lowering = DirectConv::new(g, out, conv, batch)?;
        let cores = match lowering.split() {
            Some(_) => rayon::current_num_threads().max(1),
            None => 1,
        };
        // Generated f32x4 code runs at a fraction of the GEMM's peak per
        // core; the padding copy and the partial sums are memory traffic.
        let bytes = 8
            * (lowering
                .padding
                .as_ref()
                .map_or(0, |p| p.padded.iter().product::<usize>())
                + lowering.pack_len()
                + lowering.partials());
        Some(Candidate {
            cost: super::seconds(lowering.flops * super::GEMM_PER_DIRECT / cores as u64, bytes as u64),
            lowering: Arc::new(lowering),
        })
    }
}

/// A direct convolution, planned.
#[derive(Debug)]
struct DirectConv {
    out: NodeId,
    lhs: NodeId,
    rhs: NodeId,
    schedule: Schedule,
    /// Rows: batch, output y, output x (the tiles run along x).
    rows: [Index; 3],
    /// The contraction, outermost first (the kernel's memory order).
    taps: [Index; 3],
    co: usize,
    padding: Option<Padding>,
    /// Where the loops start reading the input (unpadded), in elements.
    start: usize,
    /// The kernel packed as [taps, co] (flipped where asked), if its
    /// layout is not one the loops read.
    pack: Option<(ConvGemm, bool)>,
    /// Lines (batch, row) split across the cores by the `taps` schedule.
    lines_split: bool,
    out_len: usize,
    flops: u64,
}

impl DirectConv {
    fn new(g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Option<DirectConv> {
        if conv.feature_groups > 1 || conv.batch_groups > 1 || conv.lhs_dilation != [1, 1] {
            return None;
        }
        let x = g.operands(out);
        let lhs_shape = g[x[0]].shape.resolve(batch);
        let geo = ConvGemm::new(conv, &g[x[0]].shape, &g[x[1]].shape, &g[out].shape, batch);
        if geo.out_strides[3] != 1 {
            return None;
        }
        let taps_len = geo.kh * geo.kw * geo.ci;
        let rows_len = geo.b * geo.oh * geo.ow;
        let contiguous_kernel = geo.rhs_strides[3] == 1 && !conv.flip;
        let schedule = if taps_len <= MAX_TAPS && (contiguous_kernel || taps_len * geo.co <= MAX_PACKED) {
            Schedule::Taps
        } else if rows_len * geo.co <= MAX_REDUCED && contiguous_kernel {
            Schedule::Reduction { parts: 1 }
        } else {
            return None;
        };
        let flops = 2 * (rows_len * taps_len * geo.co) as u64;

        // The input: read where it is, or copied with its borders.
        let spatial = conv.lhs.spatial;
        let dims: [usize; 4] = std::array::from_fn(|axis| lhs_shape[axis]);
        let mut padding = Padding {
            dims,
            copied: dims.map(|n| (0, n, 0)),
            padded: dims,
        };
        let mut copy = false;
        let mut start = 0;
        let lhs_memory_strides = strides(&padding.dims);
        for (i, &axis) in spatial.iter().enumerate() {
            let (out_len, kernel, stride, dilation) = (
                [geo.oh, geo.ow][i],
                [geo.kh, geo.kw][i],
                conv.strides[i],
                conv.rhs_dilation[i],
            );
            // The loops read padded coordinates [0, extent); input pixel y
            // sits at y + lo.
            let extent = (out_len - 1) * stride + (kernel - 1) * dilation + 1;
            let lo = conv.padding[i].0;
            let n = lhs_shape[axis] as i64;
            let first = (-lo).clamp(0, n);
            let end = (extent as i64 - lo).clamp(first, n);
            padding.copied[axis] = (first as usize, end as usize, (first + lo) as usize);
            padding.padded[axis] = extent;
            if lo > 0 || extent as i64 - lo > n {
                copy = true;
            }
            start += (-lo).max(0) as usize * lhs_memory_strides[axis];
        }
        let input_strides = if copy {
            start = 0;
            strides(&padding.padded)
        } else {
            lhs_memory_strides
        };
        let lay = |a: usize| input_strides[a];
        let (lb, ly, lx, lc) = (
            lay(conv.lhs.batch),
            lay(spatial[0]),
            lay(spatial[1]),
            lay(conv.lhs.feature),
        );
        let os = geo.out_strides;
        let pack = !contiguous_kernel;
        let rs = if pack {
            [geo.kw * geo.ci * geo.co, geo.ci * geo.co, geo.co, 1]
        } else {
            geo.rhs_strides
        };
        let rows = [
            Index {
                len: geo.b,
                input: lb,
                other: os[0],
            },
            Index {
                len: geo.oh,
                input: conv.strides[0] * ly,
                other: os[1],
            },
            Index {
                len: geo.ow,
                input: conv.strides[1] * lx,
                other: os[2],
            },
        ];
        let mut taps = [
            Index {
                len: geo.kh,
                input: conv.rhs_dilation[0] * ly,
                other: rs[0],
            },
            Index {
                len: geo.kw,
                input: conv.rhs_dilation[1] * lx,
                other: rs[1],
            },
            Index {
                len: geo.ci,
                input: lc,
                other: rs[2],
            },
        ];
        taps.sort_by_key(|t| std::cmp::Reverse(t.other));
        let threads = rayon::current_num_threads().max(1);
        let big = flops >= SPLIT_FLOPS && threads > 1;
        let schedule = match schedule {
            Schedule::Reduction { .. } if big => Schedule::Reduction {
                parts: threads.min(taps[0].len),
            },
            s => s,
        };
        Some(DirectConv {
            out,
            lhs: x[0],
            rhs: x[1],
            schedule,
            rows,
            taps,
            co: geo.co,
            padding: copy.then_some(padding),
            start,
            lines_split: schedule == Schedule::Taps && big && geo.b * geo.oh > 1,
            pack: pack.then_some((geo.clone(), conv.flip)),
            out_len: rows_len * geo.co,
            flops,
        })
    }

    fn pack_len(&self) -> usize {
        self.pack.as_ref().map_or(0, |(g, _)| g.k() * g.co)
    }

    /// Elements of the partial sums beyond the first, which the output holds.
    fn partials(&self) -> usize {
        match self.schedule {
            Schedule::Reduction { parts } if parts > 1 => parts * self.out_len,
            _ => 0,
        }
    }

    fn padded_len(&self) -> usize {
        self.padding.as_ref().map_or(0, |p| p.padded.iter().product())
    }

    /// Scratch: the padded input, the packed kernel, the partial sums.
    fn scratch_parts(&self, e: &mut Emitter, ctx: &Context, index: usize) -> (Value, Value, Value) {
        let base = ctx.scratch(e, index);
        let packed = e.offset(base, self.padded_len());
        let partials = e.offset(packed, self.pack_len());
        (base, packed, partials)
    }

    /// The addresses the loops read: the input (at its first tap) and the
    /// kernel.
    fn operands(&self, e: &mut Emitter, ctx: &Context, index: usize) -> (Value, Value) {
        let (padded, packed, _) = self.scratch_parts(e, ctx, index);
        let input = match self.padding {
            Some(_) => padded,
            None => {
                let at = ctx.address(e, self.lhs);
                e.offset(at, self.start)
            }
        };
        let kernel = match self.pack {
            Some(_) => packed,
            None => ctx.address(e, self.rhs),
        };
        (input, kernel)
    }

    /// The output channels in register tiles: (first channel, vectors,
    /// single channels) of each.
    fn column_tiles(&self) -> Vec<(usize, usize, usize)> {
        let vectors = self.co / LANES;
        let mut tiles: Vec<(usize, usize, usize)> = (0..vectors)
            .step_by(TILE_VECTORS)
            .map(|v| (v * LANES, TILE_VECTORS.min(vectors - v), 0))
            .collect();
        if !self.co.is_multiple_of(LANES) {
            tiles.push((vectors * LANES, 0, self.co % LANES));
        }
        tiles
    }

    /// Neighbouring output pixels per register tile, for a column tile of
    /// `vectors` f32x4 and `singles` channels: as many as keep the
    /// accumulators and the broadcast inputs within x86-64's 16 vector
    /// registers.
    fn pixels(&self, vectors: usize, singles: usize) -> usize {
        (13 / (vectors + singles + 1)).clamp(1, 6).min(self.rows[2].len)
    }

    /// Copies the input into the zero-bordered buffer.
    fn pad(&self, e: &mut Emitter, ctx: &Context, index: usize) {
        let Some(p) = &self.padding else { return };
        let (buffer, _, _) = self.scratch_parts(e, ctx, index);
        fill(e, buffer, self.padded_len(), 0.0);
        let from = ctx.address(e, self.lhs);
        let (src, dst) = (strides(&p.dims), strides(&p.padded));
        let (first, end, _) = p.copied[3];
        let count = e.int((end - first) as i64);
        let range =
            |e: &mut Emitter, (first, end, _): (usize, usize, usize), body: &mut dyn FnMut(&mut Emitter, Value)| {
                let (first, end) = (e.int(first as i64), e.int(end as i64));
                e.for_range(first, end, 1, body);
            };
        range(e, p.copied[0], &mut |e, i| {
            range(e, p.copied[1], &mut |e, j| {
                range(e, p.copied[2], &mut |e, k| {
                    let mut s = e.int(first as i64);
                    let mut d = e.int((p.copied[3].2) as i64);
                    for (axis, v) in [i, j, k].into_iter().enumerate() {
                        let shift =
                            e.b.ins()
                                .iadd_imm_s(v, p.copied[axis].2 as i64 - p.copied[axis].0 as i64);
                        s = e.mul_add_index(s, v, src[axis]);
                        d = e.mul_add_index(d, shift, dst[axis]);
                    }
                    let (s, d) = (e.element(from, s), e.element(buffer, d));
                    e.run(count, &[(s, 1), (d, 1)], |e, ty, q| {
                        let v = e.load(ty, q[0]);
                        e.store(v, q[1]);
                    });
                });
            });
        });
    }

    /// The `taps` schedule over lines [start, end) of the output, a line
    /// being one (batch, y) pair.
    fn lines(&self, e: &mut Emitter, ctx: &Context, index: usize, (start, end): (Value, Value)) {
        let (input, kernel) = self.operands(e, ctx, index);
        let out = ctx.address(e, self.out);
        let [_, y, x] = self.rows;
        e.for_range(start, end, 1, |e, line| {
            let (n, row) = if y.len == 1 {
                (line, e.int(0))
            } else {
                (
                    e.b.ins().udiv_imm_s(line, y.len as i64),
                    e.b.ins().urem_imm_s(line, y.len as i64),
                )
            };
            let (a, c) = self.row_starts(e, (n, row), (input, out));
            for (first, vectors, singles) in self.column_tiles() {
                let cols = Columns { vectors, singles };
                let (kernel, c) = (e.offset(kernel, first), e.offset(c, first));
                let mr = self.pixels(vectors, singles);
                let tiles = x.len / mr;
                let zero = e.int(0);
                let count = e.int(tiles as i64);
                let steps = [(a, (4 * mr * x.input) as i64), (c, (4 * mr * x.other) as i64)];
                let done = e.carry((zero, count, 1), &steps, |e, _, at| {
                    let acc = cols.zeros(e, mr);
                    let acc = self.unrolled_taps(e, (at[0], kernel), x.input, cols, acc);
                    cols.store(e, &acc, at[1], x.other);
                });
                if x.len % mr != 0 {
                    let acc = cols.zeros(e, x.len % mr);
                    let acc = self.unrolled_taps(e, (done[1], kernel), x.input, cols, acc);
                    cols.store(e, &acc, done[2], x.other);
                }
            }
        });
    }

    /// Adds every tap's product to the accumulators of a tile whose first
    /// pixel reads the input at `a` (pixels `step` apart) and whose
    /// channels start at `kernel`.
    fn unrolled_taps(
        &self,
        e: &mut Emitter,
        (a, kernel): (Value, Value),
        step: usize,
        cols: Columns,
        mut acc: Vec<Vec<Value>>,
    ) -> Vec<Vec<Value>> {
        let [t0, t1, t2] = self.taps;
        for i in 0..t0.len {
            for j in 0..t1.len {
                for k in 0..t2.len {
                    let input = i * t0.input + j * t1.input + k * t2.input;
                    let weights = i * t0.other + j * t1.other + k * t2.other;
                    cols.multiply_add(e, &mut acc, (a, input, step), (kernel, weights));
                }
            }
        }
        acc
    }

    /// The `reduction` schedule's parts [start, end): each sums its range
    /// of the contraction's outermost index into its own partial sums (the
    /// output itself when there is one part).
    fn reduce_parts(&self, e: &mut Emitter, ctx: &Context, index: usize, (start, end): (Value, Value)) {
        let Schedule::Reduction { parts } = self.schedule else {
            return;
        };
        let (input, kernel) = self.operands(e, ctx, index);
        let (_, _, partials) = self.scratch_parts(e, ctx, index);
        let out = ctx.address(e, self.out);
        let [outer, middle, inner] = self.taps;
        e.for_range(start, end, 1, |e, part| {
            let sums = if parts == 1 {
                out
            } else {
                let skip = e.b.ins().imul_imm_s(part, self.out_len as i64);
                e.element(partials, skip)
            };
            fill(e, sums, self.out_len, 0.0);
            // This part's share of the outermost index.
            let first = e.b.ins().imul_imm_s(part, outer.len as i64);
            let first = e.b.ins().udiv_imm_s(first, parts as i64);
            let next = e.b.ins().iadd_imm_s(part, 1);
            let last = e.b.ins().imul_imm_s(next, outer.len as i64);
            let last = e.b.ins().udiv_imm_s(last, parts as i64);
            e.for_range(first, last, 1, |e, o| {
                e.for_n(middle.len, |e, m| {
                    let zero = e.int(0);
                    let a = e.mul_add_index(zero, o, outer.input);
                    let a = e.mul_add_index(a, m, middle.input);
                    let w = e.mul_add_index(zero, o, outer.other);
                    let w = e.mul_add_index(w, m, middle.other);
                    let (a, w) = (e.element(input, a), e.element(kernel, w));
                    self.reduce_rows(e, (a, w, sums), inner);
                });
            });
        });
    }

    /// Where row `row` of sample `n` starts in the input at `input` and in
    /// the output (or the sums) at `out`.
    fn row_starts(&self, e: &mut Emitter, (n, row): (Value, Value), (input, out): (Value, Value)) -> (Value, Value) {
        let [b, y, _] = self.rows;
        let zero = e.int(0);
        let a = e.mul_add_index(zero, n, b.input);
        let a = e.mul_add_index(a, row, y.input);
        let c = e.mul_add_index(zero, n, b.other);
        let c = e.mul_add_index(c, row, y.other);
        (e.element(input, a), e.element(out, c))
    }

    /// Every output tile += its products over one run of the innermost
    /// contraction index, the input at `a` and the kernel at `w`.
    fn reduce_rows(&self, e: &mut Emitter, (a, w, sums): (Value, Value, Value), inner: Index) {
        let [b, y, x] = self.rows;
        e.for_n(b.len, |e, n| {
            e.for_n(y.len, |e, row| {
                let (a, c) = self.row_starts(e, (n, row), (a, sums));
                for (first, vectors, singles) in self.column_tiles() {
                    let cols = Columns { vectors, singles };
                    let (w, c) = (e.offset(w, first), e.offset(c, first));
                    let mr = self.pixels(vectors, singles);
                    let zero = e.int(0);
                    let count = e.int((x.len / mr) as i64);
                    let steps = [(a, (4 * mr * x.input) as i64), (c, (4 * mr * x.other) as i64)];
                    let done = e.carry((zero, count, 1), &steps, |e, _, at| {
                        self.reduce_tile(e, (at[0], w, at[1]), x, inner, (cols, mr));
                    });
                    if x.len % mr != 0 {
                        self.reduce_tile(e, (done[1], w, done[2]), x, inner, (cols, x.len % mr));
                    }
                }
            });
        });
    }

    /// One tile's sums += its products over one run of `inner`.
    fn reduce_tile(
        &self,
        e: &mut Emitter,
        (a, w, c): (Value, Value, Value),
        x: Index,
        inner: Index,
        (cols, mr): (Columns, usize),
    ) {
        let acc = cols.load(e, mr, c, x.other);
        let vars: Vec<Vec<_>> = acc
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&v| {
                        let ty = e.b.func.dfg.value_type(v);
                        let var = e.b.declare_var(ty);
                        e.b.def_var(var, v);
                        var
                    })
                    .collect()
            })
            .collect();
        let zero = e.int(0);
        let count = e.int(inner.len as i64);
        let steps = [(a, (4 * inner.input) as i64), (w, (4 * inner.other) as i64)];
        e.carry((zero, count, 1), &steps, |e, _, at| {
            let mut acc: Vec<Vec<Value>> = vars
                .iter()
                .map(|row| row.iter().map(|&v| e.b.use_var(v)).collect())
                .collect();
            cols.multiply_add(e, &mut acc, (at[0], 0, x.input), (at[1], 0));
            for (row, vars) in acc.iter().zip(&vars) {
                for (&v, &var) in row.iter().zip(vars) {
                    e.b.def_var(var, v);
                }
            }
        });
        let acc: Vec<Vec<Value>> = vars
            .iter()
            .map(|row| row.iter().map(|&v| e.b.use_var(v)).collect())
            .collect();
        cols.store(e, &acc, c, x.other);
    }

    /// The output: the partial sums added in order.
    fn add_partials(&self, e: &mut Emitter, ctx: &Context, index: usize, parts: usize) {
        let (_, _, partials) = self.scratch_parts(e, ctx, index);
        let out = ctx.address(e, self.out);
        let mut ptrs = vec![(out, 1)];
        for p in 0..parts {
            ptrs.push((e.offset(partials, p * self.out_len), 1));
        }
        let n = e.int(self.out_len as i64);
        e.run(n, &ptrs, |e, ty, at| {
            let mut sum = e.load(ty, at[1]);
            for &p in &at[2..] {
                let v = e.load(ty, p);
                sum = e.b.ins().fadd(sum, v);
            }
            e.store(sum, at[0]);
        });
    }
}

/// Row-major element strides of `dims`.
fn strides(dims: &[usize; 4]) -> [usize; 4] {
    let mut s = [1; 4];
    for i in (0..3).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// A register tile's channels: `vectors` f32x4 then `singles` lone
/// channels.
#[derive(Clone, Copy)]
struct Columns {
    vectors: usize,
    singles: usize,
}

impl Columns {
    fn types(&self) -> impl Iterator<Item = (usize, Type)> {
        let v = (0..self.vectors).map(|j| (j * LANES, VECTOR));
        let s = (0..self.singles).map(|j| (self.vectors * LANES + j, types::F32));
        v.chain(s)
    }

    fn zeros(&self, e: &mut Emitter, pixels: usize) -> Vec<Vec<Value>> {
        (0..pixels)
            .map(|_| self.types().map(|(_, ty)| e.float(ty, 0.0)).collect())
            .collect()
    }

    /// The tile's values at `c`, pixels `step` elements apart.
    fn load(&self, e: &mut Emitter, pixels: usize, c: Value, step: usize) -> Vec<Vec<Value>> {
        (0..pixels)
            .map(|p| {
                self.types()
                    .map(|(at, ty)| e.b.ins().load(ty, flags(), c, byte_offset(p * step + at)))
                    .collect()
            })
            .collect()
    }

    fn store(&self, e: &mut Emitter, acc: &[Vec<Value>], c: Value, step: usize) {
        for (p, row) in acc.iter().enumerate() {
            for ((at, _), &v) in self.types().zip(row) {
                e.b.ins().store(flags(), v, c, byte_offset(p * step + at));
            }
        }
    }

    /// `acc[p][j] += input(p) * kernel[j]` for one tap: each pixel's input
    /// (at `a + offset + p * step`) broadcast once, each kernel vector (at
    /// `kernel + offset`) loaded once.
    fn multiply_add(
        &self,
        e: &mut Emitter,
        acc: &mut [Vec<Value>],
        (a, offset, step): (Value, usize, usize),
        (kernel, weights): (Value, usize),
    ) {
        let inputs: Vec<(Value, Value)> = (0..acc.len())
            .map(|p| {
                let s = e.b.ins().load(types::F32, flags(), a, byte_offset(offset + p * step));
                let v = if self.vectors > 0 {
                    e.b.ins().splat(VECTOR, s)
                } else {
                    s
                };
                (v, s)
            })
            .collect();
        for (j, (at, ty)) in self.types().enumerate() {
            let w = e.b.ins().load(ty, flags(), kernel, byte_offset(weights + at));
            for (p, &(v, s)) in inputs.iter().enumerate() {
                let x = if ty == VECTOR { v } else { s };
                acc[p][j] = e.mul_add(x, w, acc[p][j]);
            }
        }
    }
}

fn byte_offset(elements: usize) -> i32 {
    (4 * elements) as i32
}

impl Lowering for DirectConv {
    fn name(&self) -> String {
        match self.schedule {
            Schedule::Taps => "direct".into(),
            Schedule::Reduction { .. } => "direct reduction".into(),
        }
    }

    fn scratch(&self) -> usize {
        self.padded_len() + self.pack_len() + self.partials()
    }

    fn flops(&self) -> u64 {
        self.flops
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, index: usize) {
        self.pad(e, ctx, index);
        if let Some((geo, flip)) = &self.pack {
            let (_, packed, _) = self.scratch_parts(e, ctx, index);
            let rhs = ctx.address(e, self.rhs);
            pack_kernel(e, geo, *flip, rhs, packed);
        }
        match (self.schedule, self.split()) {
            (_, Some(n)) => ctx.parallel(e, index, n),
            (Schedule::Taps, None) => {
                let zero = e.int(0);
                let lines = e.int((self.rows[0].len * self.rows[1].len) as i64);
                self.lines(e, ctx, index, (zero, lines));
            }
            (Schedule::Reduction { .. }, None) => {
                let (zero, one) = (e.int(0), e.int(1));
                self.reduce_parts(e, ctx, index, (zero, one));
            }
        }
        if let Schedule::Reduction { parts } = self.schedule
            && parts > 1
        {
            self.add_partials(e, ctx, index, parts);
        }
    }

    fn split(&self) -> Option<usize> {
        match self.schedule {
            Schedule::Taps => self.lines_split.then_some(self.rows[0].len * self.rows[1].len),
            Schedule::Reduction { parts } => (parts > 1).then_some(parts),
        }
    }

    fn emit_range(&self, e: &mut Emitter, ctx: &Context, index: usize, range: (Value, Value)) {
        match self.schedule {
            Schedule::Taps => self.lines(e, ctx, index, range),
            Schedule::Reduction { .. } => self.reduce_parts(e, ctx, index, range),
        }
    }
}
