//! Max and average pooling and their gradients: window loops over NHWC,
//! f32x4 across channels; where max pooling's windows tile the input, its
//! gradient with the loop reading it.

use super::super::emit::{Emitter, LANES};
use super::{Context, Lowering, broadcast_strides, fill};
use crate::fuse::Expr;
use crate::ir::{NodeId, Pool};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use std::collections::HashMap;

/// The window of output position `o` along one axis, clipped to the input:
/// `(start, end)` input indices.
fn window(e: &mut Emitter, o: Value, p: &Pool, axis: usize, n: usize) -> (Value, Value) {
    let start = e.b.ins().imul_imm_s(o, p.strides[axis] as i64);
    let start = e.b.ins().iadd_imm_s(start, -(p.padding[axis].0 as i64));
    let end = e.b.ins().iadd_imm_s(start, p.window[axis] as i64);
    if p.padding[axis] == (0, 0) {
        return (start, end);
    }
    let zero = e.int(0);
    let limit = e.int(n as i64);
    (e.b.ins().smax(start, zero), e.b.ins().smin(end, limit))
}

/// A pooling loop's body: batch index, output y and x, and the clipped
/// window (start, end) along y and x.
type PixelBody<'b> = &'b mut dyn FnMut(&mut Emitter, [Value; 3], [(Value, Value); 2]);

/// Loops over the batch and the output pixels of a pooling layer, with the
/// clipped window of each.
fn pool_pixels(e: &mut Emitter, p: &Pool, [b, h, w]: [usize; 3], [oh, ow]: [usize; 2], body: PixelBody) {
    e.for_n(b, |e, n| {
        e.for_n(oh, |e, oy| {
            let wy = window(e, oy, p, 0, h);
            e.for_n(ow, |e, ox| {
                let wx = window(e, ox, p, 1, w);
                body(e, [n, oy, ox], [wy, wx]);
            });
        });
    });
}

fn maxpool(e: &mut Emitter, ctx: &Context, out: NodeId, x: NodeId, p: &Pool) {
    let (xs, os) = (ctx.shape(x), ctx.shape(out));
    let (xa, oa) = (ctx.address(e, x), ctx.address(e, out));
    let ch = xs[3];
    pool_pixels(e, p, [xs[0], xs[1], xs[2]], [os[1], os[2]], &mut |e,
                                                                   [n, oy, ox],
                                                                   [
        (y0, y1),
        (x0, x1),
    ]| {
        let pixel = e.b.ins().imul_imm_s(n, os[1] as i64);
        let pixel = e.b.ins().iadd(pixel, oy);
        let pixel = e.b.ins().imul_imm_s(pixel, os[2] as i64);
        let pixel = e.b.ins().iadd(pixel, ox);
        let out_row = e.b.ins().imul_imm_s(pixel, ch as i64);
        let out_row = e.element(oa, out_row);
        // The output row keeps the running maximum over the window, a
        // channel run at a time.
        fill(e, out_row, ch, f32::NEG_INFINITY);
        e.for_range(y0, y1, 1, |e, y| {
            e.for_range(x0, x1, 1, |e, xx| {
                let at = e.b.ins().imul_imm_s(n, xs[1] as i64);
                let at = e.b.ins().iadd(at, y);
                let at = e.b.ins().imul_imm_s(at, xs[2] as i64);
                let at = e.b.ins().iadd(at, xx);
                let at = e.b.ins().imul_imm_s(at, ch as i64);
                let from = e.element(xa, at);
                e.walk(ch, &[(from, 1), (out_row, 1)], |e, ty, q| {
                    let v = e.load(ty, q[0]);
                    let old = e.load(ty, q[1]);
                    // A NaN in the window makes the maximum NaN.
                    let new = e.b.ins().fmax(old, v);
                    e.store(new, q[1]);
                });
            });
        });
    });
}

/// Each window's gradient goes to its first maximum, scanning rows then
/// columns: f32x4 across channels, tracking where each lane's maximum is.
fn maxpool_grad(e: &mut Emitter, ctx: &Context, out: NodeId, x: NodeId, dy: NodeId, p: &Pool) {
    let (xs, ys) = (ctx.shape(x), ctx.shape(dy));
    let (xa, dya, dxa) = (ctx.address(e, x), ctx.address(e, dy), ctx.address(e, out));
    fill(e, dxa, xs.iter().product(), 0.0);
    let ch = xs[3];
    pool_pixels(e, p, [xs[0], xs[1], xs[2]], [ys[1], ys[2]], &mut |e,
                                                                   [n, oy, ox],
                                                                   [
        (y0, y1),
        (x0, x1),
    ]| {
        let image = e.b.ins().imul_imm_s(n, (xs[1] * xs[2]) as i64);
        let pixel = e.b.ins().imul_imm_s(n, ys[1] as i64);
        let pixel = e.b.ins().iadd(pixel, oy);
        let pixel = e.b.ins().imul_imm_s(pixel, ys[2] as i64);
        let pixel = e.b.ins().iadd(pixel, ox);
        let dy_row = e.b.ins().imul_imm_s(pixel, ch as i64);
        let count = e.int(ch as i64);
        e.run_indexed(count, |e, ty, c| {
            let int_ty = if ty.is_vector() { types::I32X4 } else { types::I32 };
            let best = e.b.declare_var(ty);
            let init = e.float(ty, f32::NEG_INFINITY);
            e.b.def_var(best, init);
            // The window's first position, so a window of NaNs stays in bounds.
            let first = e.b.ins().imul_imm_s(y0, xs[2] as i64);
            let first = e.b.ins().iadd(first, x0);
            let first = e.b.ins().ireduce(types::I32, first);
            let first = if ty.is_vector() {
                e.b.ins().splat(int_ty, first)
            } else {
                first
            };
            let at = e.b.declare_var(int_ty);
            e.b.def_var(at, first);
            e.for_range(y0, y1, 1, |e, y| {
                e.for_range(x0, x1, 1, |e, xx| {
                    let pos = e.b.ins().imul_imm_s(y, xs[2] as i64);
                    let pos = e.b.ins().iadd(pos, xx);
                    let off = e.b.ins().iadd(image, pos);
                    let off = e.b.ins().imul_imm_s(off, ch as i64);
                    let off = e.b.ins().iadd(off, c);
                    let addr = e.element(xa, off);
                    let v = e.load(ty, addr);
                    let old = e.b.use_var(best);
                    let wins = e.b.ins().fcmp(FloatCC::GreaterThan, v, old);
                    let new = e.select(ty, wins, v, old);
                    e.b.def_var(best, new);
                    let pos32 = e.b.ins().ireduce(types::I32, pos);
                    let pos_v = if ty.is_vector() {
                        e.b.ins().splat(int_ty, pos32)
                    } else {
                        pos32
                    };
                    let old_at = e.b.use_var(at);
                    let new_at = e.select(int_ty, wins, pos_v, old_at);
                    e.b.def_var(at, new_at);
                });
            });
            let at = e.b.use_var(at);
            let lanes = if ty.is_vector() { LANES } else { 1 };
            for l in 0..lanes {
                let pos = if ty.is_vector() {
                    e.b.ins().extractlane(at, l as u8)
                } else {
                    at
                };
                let pos = e.b.ins().sextend(types::I64, pos);
                let off = e.b.ins().iadd(image, pos);
                let off = e.b.ins().imul_imm_s(off, ch as i64);
                let off = e.b.ins().iadd(off, c);
                let off = e.b.ins().iadd_imm_s(off, l as i64);
                let d = e.b.ins().iadd(dy_row, c);
                let d = e.b.ins().iadd_imm_s(d, l as i64);
                let dy_addr = e.element(dya, d);
                let g = e.load(types::F32, dy_addr);
                let dx_addr = e.element(dxa, off);
                let old = e.load(types::F32, dx_addr);
                let new = e.b.ins().fadd(old, g);
                e.store(new, dx_addr);
            }
        });
    });
}

/// The number of cells of a clipped window, as an f32.
fn cells(e: &mut Emitter, [(y0, y1), (x0, x1)]: [(Value, Value); 2]) -> Value {
    let rows = e.b.ins().isub(y1, y0);
    let columns = e.b.ins().isub(x1, x0);
    let n = e.b.ins().imul(rows, columns);
    e.b.ins().fcvt_from_sint(types::F32, n)
}

/// A scalar as a value of `ty`.
fn splat(e: &mut Emitter, ty: Type, x: Value) -> Value {
    if ty.is_vector() { e.b.ins().splat(ty, x) } else { x }
}

/// Each window's sum over the cells inside the input, divided by their
/// count, as the interpreter computes it.
fn avgpool(e: &mut Emitter, ctx: &Context, out: NodeId, x: NodeId, p: &Pool) {
    let (xs, os) = (ctx.shape(x), ctx.shape(out));
    let (xa, oa) = (ctx.address(e, x), ctx.address(e, out));
    let ch = xs[3];
    pool_pixels(
        e,
        p,
        [xs[0], xs[1], xs[2]],
        [os[1], os[2]],
        &mut |e, [n, oy, ox], window| {
            let [(y0, y1), (x0, x1)] = window;
            let pixel = e.b.ins().imul_imm_s(n, os[1] as i64);
            let pixel = e.b.ins().iadd(pixel, oy);
            let pixel = e.b.ins().imul_imm_s(pixel, os[2] as i64);
            let pixel = e.b.ins().iadd(pixel, ox);
            let out_row = e.b.ins().imul_imm_s(pixel, ch as i64);
            let out_row = e.element(oa, out_row);
            fill(e, out_row, ch, 0.0);
            e.for_range(y0, y1, 1, |e, y| {
                e.for_range(x0, x1, 1, |e, xx| {
                    let at = e.b.ins().imul_imm_s(n, xs[1] as i64);
                    let at = e.b.ins().iadd(at, y);
                    let at = e.b.ins().imul_imm_s(at, xs[2] as i64);
                    let at = e.b.ins().iadd(at, xx);
                    let at = e.b.ins().imul_imm_s(at, ch as i64);
                    let from = e.element(xa, at);
                    e.walk(ch, &[(from, 1), (out_row, 1)], |e, ty, q| {
                        let v = e.load(ty, q[0]);
                        let old = e.load(ty, q[1]);
                        let new = e.b.ins().fadd(old, v);
                        e.store(new, q[1]);
                    });
                });
            });
            let count = cells(e, window);
            e.walk(ch, &[(out_row, 1)], |e, ty, q| {
                let count = splat(e, ty, count);
                let v = e.load(ty, q[0]);
                let mean = e.b.ins().fdiv(v, count);
                e.store(mean, q[0]);
            });
        },
    );
}

/// Each window's gradient divided by its count, added to every cell it
/// averaged.
fn avgpool_grad(e: &mut Emitter, ctx: &Context, out: NodeId, dy: NodeId, p: &Pool) {
    let (xs, ys) = (ctx.shape(out), ctx.shape(dy));
    let (dya, dxa) = (ctx.address(e, dy), ctx.address(e, out));
    fill(e, dxa, xs.iter().product(), 0.0);
    let ch = xs[3];
    pool_pixels(
        e,
        p,
        [xs[0], xs[1], xs[2]],
        [ys[1], ys[2]],
        &mut |e, [n, oy, ox], window| {
            let [(y0, y1), (x0, x1)] = window;
            let pixel = e.b.ins().imul_imm_s(n, ys[1] as i64);
            let pixel = e.b.ins().iadd(pixel, oy);
            let pixel = e.b.ins().imul_imm_s(pixel, ys[2] as i64);
            let pixel = e.b.ins().iadd(pixel, ox);
            let dy_row = e.b.ins().imul_imm_s(pixel, ch as i64);
            let dy_row = e.element(dya, dy_row);
            let count = cells(e, window);
            e.for_range(y0, y1, 1, |e, y| {
                e.for_range(x0, x1, 1, |e, xx| {
                    let at = e.b.ins().imul_imm_s(n, xs[1] as i64);
                    let at = e.b.ins().iadd(at, y);
                    let at = e.b.ins().imul_imm_s(at, xs[2] as i64);
                    let at = e.b.ins().iadd(at, xx);
                    let at = e.b.ins().imul_imm_s(at, ch as i64);
                    let to = e.element(dxa, at);
                    e.walk(ch, &[(dy_row, 1), (to, 1)], |e, ty, q| {
                        let count = splat(e, ty, count);
                        let g = e.load(ty, q[0]);
                        let share = e.b.ins().fdiv(g, count);
                        let old = e.load(ty, q[1]);
                        let new = e.b.ins().fadd(old, share);
                        e.store(new, q[1]);
                    });
                });
            });
        },
    );
}

#[derive(Debug)]
pub struct AvgPool {
    pub out: NodeId,
    pub x: NodeId,
    pub pool: Pool,
}

impl Lowering for AvgPool {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        avgpool(e, ctx, self.out, self.x, &self.pool);
    }
}

/// Each window's gradient spread over its cells.
#[derive(Debug)]
pub struct AvgPoolGrad {
    pub out: NodeId,
    pub dy: NodeId,
    pub pool: Pool,
}

impl Lowering for AvgPoolGrad {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        avgpool_grad(e, ctx, self.out, self.dy, &self.pool);
    }
}

#[derive(Debug)]
pub struct MaxPool {
    pub out: NodeId,
    pub x: NodeId,
    pub pool: Pool,
}

impl Lowering for MaxPool {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        maxpool(e, ctx, self.out, self.x, &self.pool);
    }
}

/// Each window's gradient to its first maximum.
#[derive(Debug)]
pub struct MaxPoolGrad {
    pub out: NodeId,
    pub x: NodeId,
    pub dy: NodeId,
    pub pool: Pool,
}

impl Lowering for MaxPoolGrad {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        maxpool_grad(e, ctx, self.out, self.x, self.dy, &self.pool);
    }
}

/// Max pooling's gradient where the windows tile the input, with the loop
/// that reads it: per window and channel vector, the position of the first
/// maximum, then at each pixel of the window `dy` or zero as `grad`, and
/// the loop's expressions evaluated there. One pass over the pixels, no
/// zero fill, no scatter, and `grad` never stored unless it is an output.
#[derive(Debug)]
pub struct TiledMaxPoolGrad {
    pub grad: NodeId,
    pub x: NodeId,
    pub dy: Expr,
    pub outputs: Vec<(NodeId, Expr)>,
    pub pool: Pool,
}

/// The distinct values `exprs` load, but `skip`.
fn loads_of<'a>(exprs: impl Iterator<Item = &'a Expr>, skip: &[NodeId]) -> Vec<NodeId> {
    let mut v = Vec::new();
    exprs.for_each(|x| x.loads(&mut v));
    v.sort_unstable();
    v.dedup();
    v.retain(|n| !skip.contains(n));
    v
}

impl Lowering for TiledMaxPoolGrad {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        let xs = ctx.shape(self.x);
        let [wh, ww] = self.pool.window;
        let ys = [xs[0], xs[1] / wh, xs[2] / ww, xs[3]];
        let written: Vec<NodeId> = self.outputs.iter().map(|(n, _)| *n).collect();
        let dy_reads = loads_of(std::iter::once(&self.dy), &[]);
        let mut skip = written.clone();
        skip.push(self.grad);
        let reads = loads_of(self.outputs.iter().map(|(_, x)| x), &skip);
        // Element strides along (batch, y, x, channel) of every value: the
        // pooled gradient's reads over the windows, the rest over the pixels.
        let strides = |n: NodeId, space: &[usize]| broadcast_strides(&ctx.shape(n), space);
        let dy_at: Vec<(Value, Vec<usize>)> = dy_reads.iter().map(|&n| (ctx.address(e, n), strides(n, &ys))).collect();
        let pixel_values: Vec<NodeId> = std::iter::once(self.x)
            .chain(written.iter().copied())
            .chain(reads.iter().copied())
            .collect();
        let pixel_at: Vec<(Value, Vec<usize>)> = pixel_values
            .iter()
            .map(|&n| (ctx.address(e, n), strides(n, &xs)))
            .collect();
        let positions: Vec<(usize, usize)> = (0..wh).flat_map(|y| (0..ww).map(move |x| (y, x))).collect();
        let at = |e: &mut Emitter, (base, s): &(Value, Vec<usize>), [b, y, x]: [Value; 3]| {
            let zero = e.int(0);
            let i = e.mul_add_index(zero, b, s[0]);
            let i = e.mul_add_index(i, y, s[1]);
            let i = e.mul_add_index(i, x, s[2]);
            e.element(*base, i)
        };
        e.for_n(ys[0], |e, b| {
            e.for_n(ys[1], |e, oy| {
                e.for_n(ys[2], |e, ox| {
                    let dy_rows: Vec<Value> = dy_at.iter().map(|v| at(e, v, [b, oy, ox])).collect();
                    let y0 = e.b.ins().imul_imm_s(oy, wh as i64);
                    let x0 = e.b.ins().imul_imm_s(ox, ww as i64);
                    // Each window pixel's row of every value.
                    let rows: Vec<Vec<Value>> = positions
                        .iter()
                        .map(|&(wy, wx)| {
                            let y = e.b.ins().iadd_imm_s(y0, wy as i64);
                            let x = e.b.ins().iadd_imm_s(x0, wx as i64);
                            pixel_at.iter().map(|v| at(e, v, [b, y, x])).collect()
                        })
                        .collect();
                    let count = e.int(xs[3] as i64);
                    e.run_indexed(count, |e, ty, c| {
                        // The value at channel `c` of a row.
                        let load = |e: &mut Emitter, row: Value, channel_stride: usize| {
                            if channel_stride == 0 {
                                e.load_splat(ty, row)
                            } else {
                                let a = e.element(row, c);
                                e.load(ty, a)
                            }
                        };
                        let mut env = HashMap::new();
                        for ((&n, &row), (_, s)) in dy_reads.iter().zip(&dy_rows).zip(&dy_at) {
                            let v = load(e, row, s[3]);
                            env.insert(n, v);
                        }
                        let dy = e.eval(ty, &self.dy, &env, ctx);
                        // The first maximum: NaN never wins, and a window of
                        // NaNs sends its gradient to its first pixel.
                        let int_ty = if ty.is_vector() { types::I32X4 } else { types::I32 };
                        let mut best = e.float(ty, f32::NEG_INFINITY);
                        let mut first = e.b.ins().iconst(types::I32, 0);
                        if ty.is_vector() {
                            first = e.b.ins().splat(int_ty, first);
                        }
                        for (i, row) in rows.iter().enumerate() {
                            let v = load(e, row[0], 1);
                            let wins = e.b.ins().fcmp(FloatCC::GreaterThan, v, best);
                            best = e.select(ty, wins, v, best);
                            let mut here = e.b.ins().iconst(types::I32, i as i64);
                            if ty.is_vector() {
                                here = e.b.ins().splat(int_ty, here);
                            }
                            first = e.select(int_ty, wins, here, first);
                        }
                        let zero = e.float(ty, 0.0);
                        for (i, row) in rows.iter().enumerate() {
                            let mut here = e.b.ins().iconst(types::I32, i as i64);
                            if ty.is_vector() {
                                here = e.b.ins().splat(int_ty, here);
                            }
                            let mine = e.b.ins().icmp(IntCC::Equal, first, here);
                            let g = e.select(ty, mine, dy, zero);
                            let mut env = HashMap::from([(self.grad, g)]);
                            let strides = pixel_at[1 + written.len()..].iter().map(|(_, s)| s[3]);
                            for ((&n, &r), s) in reads.iter().zip(&row[1 + written.len()..]).zip(strides) {
                                let v = load(e, r, s);
                                env.insert(n, v);
                            }
                            let mut values = Vec::with_capacity(self.outputs.len());
                            for (n, x) in &self.outputs {
                                let v = e.eval(ty, x, &env, ctx);
                                env.insert(*n, v);
                                values.push(v);
                            }
                            for (v, &r) in values.into_iter().zip(&row[1..]) {
                                let a = e.element(r, c);
                                e.store(v, a);
                            }
                        }
                    });
                });
            });
        });
    }
}
