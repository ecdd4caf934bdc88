//! Matmuls and convolutions: a call to the imported GEMM, around it for a
//! convolution the packing of its kernel and the im2col gather of its
//! input's patches, tile by tile.

use super::super::emit::Emitter;
use super::super::gemm::{Axis, ConvGemm};
use super::Context;
use crate::ir::NodeId;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use std::collections::HashMap;

/// A GEMM's sizes, as values of the generated code.
struct Sizes {
    m: Value,
    k: Value,
    n: Value,
}

/// `c = a . b` (or `c += a . b`) through the imported GEMM.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    e: &mut Emitter,
    ctx: &Context,
    size: Sizes,
    a: Value,
    (rsa, csa): (usize, usize),
    b: Value,
    (rsb, csb): (usize, usize),
    c: Value,
    (rsc, csc): (usize, usize),
    accumulate: Value,
) {
    let mut int = |x: usize| e.int(x as i64);
    let (rsa, csa, rsb, csb, rsc, csc) = (int(rsa), int(csa), int(rsb), int(csb), int(rsc), int(csc));
    let args = [
        size.m, size.k, size.n, a, rsa, csa, b, rsb, csb, c, rsc, csc, accumulate,
    ];
    e.b.ins().call(ctx.sgemm, &args);
}

pub fn matmul(e: &mut Emitter, ctx: &Context, out: NodeId, a: NodeId, b: NodeId, ta: bool, tb: bool) {
    let (sa, sb) = (ctx.shape(a), ctx.shape(b));
    let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let n = if tb { sb[0] } else { sb[1] };
    let a_strides = if ta { (1, sa[1]) } else { (sa[1], 1) };
    let b_strides = if tb { (1, sb[1]) } else { (sb[1], 1) };
    let (pa, pb, pc) = (ctx.address(e, a), ctx.address(e, b), ctx.address(e, out));
    let size = Sizes {
        m: e.int(m as i64),
        k: e.int(k as i64),
        n: e.int(n as i64),
    };
    let no = e.int(0);
    sgemm(e, ctx, size, pa, a_strides, pb, b_strides, pc, (n, 1), no);
}

/// A convolution: pack the kernel if needed, then tile by tile, gather the
/// input's patches (im2col) and multiply.
pub fn conv(e: &mut Emitter, ctx: &Context, kernel: usize, out: NodeId, lhs: NodeId, rhs: NodeId, c: &crate::ir::Conv) {
    let g = &ctx.plan.program.graph;
    let geo = ConvGemm::of(c, g, (lhs, rhs, out), ctx.plan.batch);
    let (a_len, _) = geo.scratch();
    let scratch = ctx.scratch(e, kernel);
    let (lhs_at, rhs_at, out_at) = (ctx.address(e, lhs), ctx.address(e, rhs), ctx.address(e, out));
    let (b_at, b_strides) = match geo.b_direct {
        Some(strides) => (rhs_at, strides),
        None => {
            let packed = e.offset(scratch, a_len);
            pack_kernel(e, &geo, c.flip, rhs_at, packed);
            (packed, (geo.co, 1))
        }
    };
    let (m, k) = (geo.m(), geo.k());
    let outer = geo.len(geo.outer());
    let tile = geo.tile();
    e.for_n(outer.div_ceil(tile), |e, t| {
        let first = e.b.ins().imul_imm_s(t, tile as i64);
        let end = e.b.ins().iadd_imm_s(first, tile as i64);
        let limit = e.int(outer as i64);
        let end = e.b.ins().smin(end, limit);
        im2col(e, &geo, c, lhs_at, scratch, (first, end));
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
            sgemm(
                e,
                ctx,
                size,
                scratch,
                (1, m),
                b_tile,
                b_strides,
                out_at,
                (geo.row_stride, geo.co_stride),
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
            sgemm(
                e,
                ctx,
                size,
                scratch,
                (k, 1),
                b_at,
                b_strides,
                c_tile,
                (geo.row_stride, geo.co_stride),
                no,
            );
        }
    });
}

/// B[(ky, kx, ci), co] = kernel[ky', kx', ci, co], flipped where asked.
fn pack_kernel(e: &mut Emitter, geo: &ConvGemm, flip: bool, rhs: Value, packed: Value) {
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
fn im2col(e: &mut Emitter, geo: &ConvGemm, c: &crate::ir::Conv, lhs: Value, a: Value, (first, end): (Value, Value)) {
    let (m, k) = (geo.m(), geo.k());
    // Loop order: A's memory order, the contiguous run innermost.
    let order: Vec<Axis> = if geo.a_column_major {
        geo.ks.iter().chain(&geo.rows[..2]).copied().collect()
    } else {
        geo.rows.iter().chain(&geo.ks[..2]).copied().collect()
    };
    let run = if geo.a_column_major { Axis::B } else { Axis::Ci };
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
    let run_src_stride = if run == Axis::B { lb } else { lc };
    // The x index next to the run widens it when each step moves one input
    // pixel and the input keeps neighbouring pixels' runs back to back: one
    // copy then covers a row of taps (3 x 32 channels for a 3x3 kernel).
    let x_step = |axis: Axis| match axis {
        Axis::Kx => c.rhs_dilation[1],
        Axis::Ox => c.strides[1],
        _ => 0,
    };
    let last = order[order.len() - 1];
    let wide = x_step(last) == 1 && c.lhs_dilation[1] == 1 && run_src_stride == 1 && lw == run_len;
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
