//! Native code for each kind of fused kernel: strided loop nests for maps
//! and reductions (f32x4 along the innermost axis where it is contiguous),
//! GEMM calls for matmuls and convolutions (after an im2col gather),
//! windows for pooling, and row loops for softmax and the cross-entropies.

use super::emit::{Emitter, LANES, VECTOR};
use super::gemm::{Axis, ConvGemm};
use crate::ir::{Binary, Hyper, NodeId, Pool, Shape, Unary};
use crate::passes::fuse::Expr;
use crate::passes::plan::{Plan, Storage};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{FuncRef, InstBuilder, Type, Value, types};
use std::collections::HashMap;

/// What kernels read while they are emitted: where each value lives and
/// the function-wide values (buffer bases, hyperparameters, the GEMM).
pub struct Context<'p> {
    pub plan: &'p Plan,
    /// Base pointer of each storage slot, loaded once at entry.
    pub bases: HashMap<Storage, Value>,
    pub hypers: HashMap<Hyper, Value>,
    pub sgemm: FuncRef,
    pub arena: Value,
}

impl Context<'_> {
    fn shape(&self, n: NodeId) -> Vec<usize> {
        self.plan.program.graph[n].shape.resolve(self.plan.batch)
    }

    /// Address of a value's first element.
    pub fn address(&self, e: &mut Emitter, n: NodeId) -> Value {
        let buffer = self.plan.buffers[&n];
        match buffer.storage {
            Storage::Arena { offset } => e.offset(self.arena, offset),
            s => self.bases[&s],
        }
    }

    fn scratch(&self, e: &mut Emitter, kernel: usize) -> Value {
        let offset = self.plan.scratch[kernel].map_or(0, |(o, _)| o);
        e.offset(self.arena, offset)
    }
}

/// Element strides of a value of shape `value` read at the indices of a
/// loop over `space` (NumPy broadcasting: stretched axes get stride 0).
fn broadcast_strides(value: &[usize], space: &[usize]) -> Vec<usize> {
    let pad = space.len() - value.len();
    let mut strides = vec![0; space.len()];
    let mut s = 1;
    for i in (0..value.len()).rev() {
        if value[i] != 1 || space[pad + i] == 1 {
            strides[pad + i] = s;
        }
        s *= value[i];
    }
    strides
}

/// Drops unit axes and merges neighbours that every operand walks as one.
fn collapse(dims: &[usize], strides: &mut [Vec<usize>]) -> Vec<usize> {
    let keep: Vec<usize> = (0..dims.len()).filter(|&d| dims[d] != 1).collect();
    let mut out_dims: Vec<usize> = keep.iter().map(|&d| dims[d]).collect();
    let mut out_strides: Vec<Vec<usize>> = strides.iter().map(|s| keep.iter().map(|&d| s[d]).collect()).collect();
    let mut d = out_dims.len();
    while d >= 2 {
        d -= 1;
        let mergeable = out_strides.iter().all(|s| s[d - 1] == s[d] * out_dims[d]);
        if mergeable {
            out_dims[d - 1] *= out_dims[d];
            out_dims.remove(d);
            for s in &mut out_strides {
                s[d - 1] = s[d];
                s.remove(d);
            }
        }
    }
    for (s, o) in strides.iter_mut().zip(out_strides) {
        *s = o;
    }
    out_dims
}

/// Loops over `dims` (outermost first), keeping each operand's address;
/// the innermost axis runs f32x4 at a time when every operand walks it
/// contiguously or not at all. `body(type, addresses)` emits one step.
fn nest(
    e: &mut Emitter,
    dims: &[usize],
    bases: &[Value],
    strides: &[Vec<usize>],
    body: &mut dyn FnMut(&mut Emitter, Type, &[Value]),
) {
    fn level(
        e: &mut Emitter,
        dims: &[usize],
        addrs: Vec<Value>,
        strides: &[Vec<usize>],
        d: usize,
        body: &mut dyn FnMut(&mut Emitter, Type, &[Value]),
    ) {
        if dims.is_empty() {
            body(e, types::F32, &addrs);
            return;
        }
        let last = d + 1 == dims.len();
        let n = e.int(dims[d] as i64);
        if last && strides.iter().all(|s| s[d] <= 1) {
            let ptrs: Vec<(Value, usize)> = addrs.iter().zip(strides).map(|(&a, s)| (a, s[d])).collect();
            e.run(n, &ptrs, |e, ty, at| body(e, ty, at));
            return;
        }
        // Outer axes (and a strided innermost one) carry their addresses.
        let zero = e.int(0);
        let carried: Vec<(Value, i64)> = addrs.iter().zip(strides).map(|(&a, s)| (a, 4 * s[d] as i64)).collect();
        e.carry((zero, n, 1), &carried, |e, _, at| {
            if last {
                body(e, types::F32, at);
            } else {
                level(e, dims, at.to_vec(), strides, d + 1, body);
            }
        });
    }
    level(e, dims, bases.to_vec(), strides, 0, body);
}

impl Emitter<'_> {
    /// The expression's value at one index; `env` holds the values loaded
    /// (or computed) there.
    fn eval(&mut self, ty: Type, x: &Expr, env: &HashMap<NodeId, Value>, ctx: &Context) -> Value {
        match x {
            Expr::Load(n) => env[n],
            Expr::Const { value, per_batch } => {
                let v = if *per_batch {
                    value / ctx.plan.batch as f64
                } else {
                    *value
                };
                self.float(ty, v as f32)
            }
            Expr::Hyper(h) => {
                let s = ctx.hypers[h];
                if ty.is_vector() { self.b.ins().splat(ty, s) } else { s }
            }
            Expr::Unary(u, a) => {
                let a = self.eval(ty, a, env, ctx);
                match u {
                    Unary::Neg => self.b.ins().fneg(a),
                    Unary::Exp => self.exp(ty, a),
                    Unary::Log => self.log(ty, a),
                    Unary::Sqrt => self.b.ins().sqrt(a),
                    Unary::Recip => {
                        let one = self.float(ty, 1.0);
                        self.b.ins().fdiv(one, a)
                    }
                    Unary::Relu => {
                        let zero = self.float(ty, 0.0);
                        self.max(ty, a, zero)
                    }
                    Unary::Sigmoid => self.sigmoid(ty, a),
                    Unary::Tanh => self.tanh(ty, a),
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.eval(ty, a, env, ctx), self.eval(ty, b, env, ctx));
                match op {
                    Binary::Add => self.b.ins().fadd(a, b),
                    Binary::Sub => self.b.ins().fsub(a, b),
                    Binary::Mul => self.b.ins().fmul(a, b),
                    Binary::Div => self.b.ins().fdiv(a, b),
                    Binary::Max => self.max(ty, a, b),
                    Binary::Greater => {
                        let c = self.b.ins().fcmp(FloatCC::GreaterThan, a, b);
                        let (one, zero) = (self.float(ty, 1.0), self.float(ty, 0.0));
                        self.select(ty, c, one, zero)
                    }
                }
            }
        }
    }

    /// Loads every value an expression reads at the current index.
    fn load_all(&mut self, ty: Type, loads: &[(NodeId, bool)], addrs: &[Value], env: &mut HashMap<NodeId, Value>) {
        for (&(n, stretched), &a) in loads.iter().zip(addrs) {
            let v = if stretched {
                self.load_splat(ty, a)
            } else {
                self.load(ty, a)
            };
            env.insert(n, v);
        }
    }
}

/// `outputs[i] = expr_i` over `shape`. All of an index's loads come before
/// its stores, so an output may overwrite an input of its own shape.
pub fn map(e: &mut Emitter, ctx: &Context, shape: &Shape, outputs: &[(NodeId, Expr)]) {
    let space = shape.resolve(ctx.plan.batch);
    let written: Vec<NodeId> = outputs.iter().map(|(n, _)| *n).collect();
    let mut reads = Vec::new();
    for (_, x) in outputs {
        x.loads(&mut reads);
    }
    reads.sort_unstable();
    reads.dedup();
    reads.retain(|r| !written.contains(r));
    let mut strides: Vec<Vec<usize>> = written.iter().map(|_| broadcast_strides(&space, &space)).collect();
    strides.extend(reads.iter().map(|&r| broadcast_strides(&ctx.shape(r), &space)));
    let dims = collapse(&space, &mut strides);
    let bases: Vec<Value> = written.iter().chain(&reads).map(|&n| ctx.address(e, n)).collect();
    let innermost = dims.len().saturating_sub(1);
    let loads: Vec<(NodeId, bool)> = reads
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, strides[written.len() + i].get(innermost).is_none_or(|&s| s == 0)))
        .collect();
    nest(e, &dims, &bases, &strides, &mut |e, ty, addrs| {
        let mut env = HashMap::new();
        e.load_all(ty, &loads, &addrs[written.len()..], &mut env);
        let mut values = Vec::with_capacity(outputs.len());
        for (n, x) in outputs {
            let v = e.eval(ty, x, &env, ctx);
            env.insert(*n, v);
            values.push(v);
        }
        for (v, &a) in values.into_iter().zip(addrs) {
            e.store(v, a);
        }
    });
}

fn fill(e: &mut Emitter, at: Value, n: usize, value: f32) {
    let count = e.int(n as i64);
    e.run(count, &[(at, 1)], |e, ty, p| {
        let v = e.float(ty, value);
        e.store(v, p[0]);
    });
}

/// `out = sum over axes of expr`, accumulated in the output buffer.
pub fn reduce(e: &mut Emitter, ctx: &Context, shape: &Shape, axes: &[usize], out: NodeId, x: &Expr) {
    let space = shape.resolve(ctx.plan.batch);
    let out_shape = ctx.shape(out);
    let out_at = ctx.address(e, out);
    fill(e, out_at, out_shape.iter().product(), 0.0);
    let mut reads = Vec::new();
    x.loads(&mut reads);
    reads.sort_unstable();
    reads.dedup();
    let mut out_strides = broadcast_strides(&out_shape, &space);
    for &a in axes {
        out_strides[a] = 0;
    }
    let mut strides = vec![out_strides];
    strides.extend(reads.iter().map(|&r| broadcast_strides(&ctx.shape(r), &space)));
    let dims = collapse(&space, &mut strides);
    let mut bases = vec![out_at];
    bases.extend(reads.iter().map(|&r| ctx.address(e, r)));
    let innermost = dims.len().saturating_sub(1);
    let loads: Vec<(NodeId, bool)> = reads
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, strides[1 + i].get(innermost).is_none_or(|&s| s == 0)))
        .collect();
    let reduced_innermost = strides[0].get(innermost).is_some_and(|&s| s == 0) && !dims.is_empty();
    if reduced_innermost {
        // Sum each innermost run in registers, then add it to its output.
        let (outer, run) = dims.split_at(innermost);
        let n = run[0];
        let run_strides: Vec<Vec<usize>> = strides.iter().map(|s| s[..innermost].to_vec()).collect();
        let inner: Vec<usize> = strides.iter().map(|s| s[innermost]).collect();
        nest(e, outer, &bases, &run_strides, &mut |e, _, addrs| {
            let total = sum_run(e, ctx, n, &addrs[1..], &inner[1..], &loads, x);
            let old = e.load(types::F32, addrs[0]);
            let new = e.b.ins().fadd(old, total);
            e.store(new, addrs[0]);
        });
    } else if let ([rows, width], true) = (dims.as_slice(), strides[0].first() == Some(&0)) {
        blocked_sum(e, ctx, (*rows, *width), &bases, &strides, &loads, x);
    } else {
        nest(e, &dims, &bases, &strides, &mut |e, ty, addrs| {
            let mut env = HashMap::new();
            e.load_all(ty, &loads, &addrs[1..], &mut env);
            let v = e.eval(ty, x, &env, ctx);
            let old = e.load(ty, addrs[0]);
            let new = e.b.ins().fadd(old, v);
            e.store(new, addrs[0]);
        });
    }
}

/// Rows summed in blocks: `out[c] += sum of a block of rows`, the block's
/// partial sums in a stack buffer, so rounding grows with the block size
/// and the number of blocks rather than with the number of rows (a bias
/// gradient sums N*H*W rows).
fn blocked_sum(
    e: &mut Emitter,
    ctx: &Context,
    (rows, width): (usize, usize),
    bases: &[Value],
    strides: &[Vec<usize>],
    loads: &[(NodeId, bool)],
    x: &Expr,
) {
    const BLOCK: usize = 64;
    let slot = e.b.create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
        cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
        (width * 4) as u32,
        4,
    ));
    let partial = e.b.ins().stack_addr(types::I64, slot, 0);
    let blocks = rows.div_ceil(BLOCK);
    let zero = e.int(0);
    let row_steps: Vec<(Value, i64)> = bases[1..]
        .iter()
        .zip(&strides[1..])
        .map(|(&a, s)| (a, (4 * s[0] * BLOCK) as i64))
        .collect();
    let count = e.int(blocks as i64);
    e.carry((zero, count, 1), &row_steps, |e, block, block_at| {
        fill(e, partial, width, 0.0);
        // This block's rows: BLOCK, or what the last block has left.
        let first = e.b.ins().imul_imm_s(block, BLOCK as i64);
        let total = e.int(rows as i64);
        let left = e.b.ins().isub(total, first);
        let most = e.int(BLOCK as i64);
        let n_rows = e.b.ins().smin(left, most);
        let carried: Vec<(Value, i64)> = block_at
            .iter()
            .zip(&strides[1..])
            .map(|(&a, s)| (a, (4 * s[0]) as i64))
            .collect();
        let zero = e.int(0);
        e.carry((zero, n_rows, 1), &carried, |e, _, at| {
            let mut ptrs = vec![(partial, 1)];
            ptrs.extend(at.iter().zip(&strides[1..]).map(|(&a, s)| (a, s[1])));
            e.walk(width, &ptrs, |e, ty, p| {
                let mut env = HashMap::new();
                e.load_all(ty, loads, &p[1..], &mut env);
                let v = e.eval(ty, x, &env, ctx);
                let old = e.load(ty, p[0]);
                let new = e.b.ins().fadd(old, v);
                e.store(new, p[0]);
            });
        });
        e.walk(width, &[(partial, 1), (bases[0], 1)], |e, ty, p| {
            let v = e.load(ty, p[0]);
            let old = e.load(ty, p[1]);
            let new = e.b.ins().fadd(old, v);
            e.store(new, p[1]);
        });
    });
}

/// The sum of `x` over a run of `n` indices, reading each operand at
/// `stride` per index: f32x4 partial sums when every stride is 0 or 1.
fn sum_run(
    e: &mut Emitter,
    ctx: &Context,
    n: usize,
    bases: &[Value],
    strides: &[usize],
    loads: &[(NodeId, bool)],
    x: &Expr,
) -> Value {
    let acc = e.b.declare_var(VECTOR);
    let zero4 = e.float(VECTOR, 0.0);
    e.b.def_var(acc, zero4);
    let tail = e.b.declare_var(types::F32);
    let zero = e.float(types::F32, 0.0);
    e.b.def_var(tail, zero);
    let ptrs: Vec<(Value, usize)> = bases.iter().copied().zip(strides.iter().copied()).collect();
    e.walk(n, &ptrs, |e, ty, addrs| {
        let mut env = HashMap::new();
        e.load_all(ty, loads, addrs, &mut env);
        let v = e.eval(ty, x, &env, ctx);
        let var = if ty.is_vector() { acc } else { tail };
        let old = e.b.use_var(var);
        let new = e.b.ins().fadd(old, v);
        e.b.def_var(var, new);
    });
    let v = e.b.use_var(acc);
    let lanes = e.sum_lanes(v);
    let t = e.b.use_var(tail);
    e.b.ins().fadd(lanes, t)
}

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
    let geo = ConvGemm::new(c, &g[lhs].shape, &g[rhs].shape, &g[out].shape, ctx.plan.batch);
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

pub fn maxpool(e: &mut Emitter, ctx: &Context, out: NodeId, x: NodeId, p: &Pool) {
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
                    let new = e.max(ty, old, v);
                    e.store(new, q[1]);
                });
            });
        });
    });
}

/// Each window's gradient goes to its first maximum, scanning rows then
/// columns: f32x4 across channels, tracking where each lane's maximum is.
pub fn maxpool_grad(e: &mut Emitter, ctx: &Context, out: NodeId, x: NodeId, dy: NodeId, p: &Pool) {
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

/// Per row of the last axis: its maximum, the sum of exp(z - max), and a
/// callback per element with `exp(z - max)` and the sum's reciprocal.
fn softmax_rows(
    e: &mut Emitter,
    rows: usize,
    k: usize,
    z: Value,
    per_row: &mut dyn FnMut(&mut Emitter, Value, Value, Value),
    per_element: &mut dyn FnMut(&mut Emitter, Value, Value, Value),
) {
    e.for_n(rows, |e, r| {
        let row = e.b.ins().imul_imm_s(r, k as i64);
        let max = e.b.declare_var(types::F32);
        let init = e.float(types::F32, f32::NEG_INFINITY);
        e.b.def_var(max, init);
        e.for_n(k, |e, j| {
            let i = e.b.ins().iadd(row, j);
            let a = e.element(z, i);
            let v = e.load(types::F32, a);
            let old = e.b.use_var(max);
            let new = e.max(types::F32, old, v);
            e.b.def_var(max, new);
        });
        let m = e.b.use_var(max);
        let sum = e.b.declare_var(types::F32);
        let zero = e.float(types::F32, 0.0);
        e.b.def_var(sum, zero);
        e.for_n(k, |e, j| {
            let i = e.b.ins().iadd(row, j);
            let a = e.element(z, i);
            let v = e.load(types::F32, a);
            let d = e.b.ins().fsub(v, m);
            let x = e.exp(types::F32, d);
            let old = e.b.use_var(sum);
            let new = e.b.ins().fadd(old, x);
            e.b.def_var(sum, new);
        });
        let s = e.b.use_var(sum);
        per_row(e, row, m, s);
        let one = e.float(types::F32, 1.0);
        let inv = e.b.ins().fdiv(one, s);
        e.for_n(k, |e, j| {
            let i = e.b.ins().iadd(row, j);
            let a = e.element(z, i);
            let v = e.load(types::F32, a);
            let d = e.b.ins().fsub(v, m);
            let x = e.exp(types::F32, d);
            per_element(e, i, x, inv);
        });
    });
}

pub fn softmax(e: &mut Emitter, ctx: &Context, out: NodeId, z: NodeId) {
    let s = ctx.shape(z);
    let k = s.last().copied().unwrap_or(1);
    let rows = s.iter().product::<usize>() / k.max(1);
    let (za, oa) = (ctx.address(e, z), ctx.address(e, out));
    softmax_rows(e, rows, k, za, &mut |_, _, _, _| {}, &mut |e, i, x, inv| {
        let p = e.b.ins().fmul(x, inv);
        let a = e.element(oa, i);
        e.store(p, a);
    });
}

/// Mean cross-entropy of softmax(z) against the labels; optionally the
/// probabilities and the gradient `(p - y) * scale`, in the same pass.
pub fn softmax_cross_entropy(
    e: &mut Emitter,
    ctx: &Context,
    loss: NodeId,
    z: NodeId,
    labels: NodeId,
    probs: Option<NodeId>,
    grad: Option<&(NodeId, Expr)>,
) {
    let s = ctx.shape(z);
    let k = s.last().copied().unwrap_or(1);
    let rows = s.iter().product::<usize>() / k.max(1);
    let (za, ya, la) = (ctx.address(e, z), ctx.address(e, labels), ctx.address(e, loss));
    let pa = probs.map(|p| ctx.address(e, p));
    let ga = grad.map(|(g, _)| ctx.address(e, *g));
    let scale = grad.map(|(_, x)| e.eval(types::F32, x, &HashMap::new(), ctx));
    let total = e.b.declare_var(types::F32);
    let zero = e.float(types::F32, 0.0);
    e.b.def_var(total, zero);
    softmax_rows(
        e,
        rows,
        k,
        za,
        &mut |e, row, m, sum| {
            // loss_row = log(sum) + m - sum_j y_j z_j
            let lse = e.log(types::F32, sum);
            let lse = e.b.ins().fadd(lse, m);
            let dot = e.b.declare_var(types::F32);
            let zero = e.float(types::F32, 0.0);
            e.b.def_var(dot, zero);
            e.for_n(k, |e, j| {
                let i = e.b.ins().iadd(row, j);
                let (zv, yv) = (e.element(za, i), e.element(ya, i));
                let zv = e.load(types::F32, zv);
                let yv = e.load(types::F32, yv);
                let old = e.b.use_var(dot);
                let new = e.mul_add(zv, yv, old);
                e.b.def_var(dot, new);
            });
            let d = e.b.use_var(dot);
            let l = e.b.ins().fsub(lse, d);
            let old = e.b.use_var(total);
            let new = e.b.ins().fadd(old, l);
            e.b.def_var(total, new);
        },
        &mut |e, i, x, inv| {
            let p = e.b.ins().fmul(x, inv);
            if let Some(pa) = pa {
                let a = e.element(pa, i);
                e.store(p, a);
            }
            if let (Some(ga), Some(scale)) = (ga, scale) {
                let ya_i = e.element(ya, i);
                let y = e.load(types::F32, ya_i);
                let d = e.b.ins().fsub(p, y);
                let g = e.b.ins().fmul(d, scale);
                let a = e.element(ga, i);
                e.store(g, a);
            }
        },
    );
    let t = e.b.use_var(total);
    let mean = e.float(types::F32, 1.0 / rows.max(1) as f32);
    let v = e.b.ins().fmul(t, mean);
    e.store(v, la);
}

/// Mean over every element of `max(z, 0) - z y + log(1 + exp(-|z|))`.
pub fn sigmoid_cross_entropy(e: &mut Emitter, ctx: &Context, loss: NodeId, z: NodeId, labels: NodeId) {
    let n: usize = ctx.shape(z).iter().product();
    let (za, ya, la) = (ctx.address(e, z), ctx.address(e, labels), ctx.address(e, loss));
    let total = e.b.declare_var(types::F32);
    let zero = e.float(types::F32, 0.0);
    e.b.def_var(total, zero);
    e.for_n(n, |e, i| {
        let (zp, yp) = (e.element(za, i), e.element(ya, i));
        let zv = e.load(types::F32, zp);
        let yv = e.load(types::F32, yp);
        let zero = e.float(types::F32, 0.0);
        let pos = e.max(types::F32, zv, zero);
        let zy = e.b.ins().fmul(zv, yv);
        let a = e.b.ins().fabs(zv);
        let na = e.b.ins().fneg(a);
        let ex = e.exp(types::F32, na);
        let one = e.float(types::F32, 1.0);
        let one_plus = e.b.ins().fadd(one, ex);
        let lg = e.log(types::F32, one_plus);
        let t = e.b.ins().fsub(pos, zy);
        let t = e.b.ins().fadd(t, lg);
        let old = e.b.use_var(total);
        let new = e.b.ins().fadd(old, t);
        e.b.def_var(total, new);
    });
    let t = e.b.use_var(total);
    let mean = e.float(types::F32, 1.0 / n.max(1) as f32);
    let v = e.b.ins().fmul(t, mean);
    e.store(v, la);
}

/// `to = from`, elementwise.
pub fn copy(e: &mut Emitter, from: Value, to: Value, n: usize) {
    let count = e.int(n as i64);
    e.run(count, &[(from, 1), (to, 1)], |e, ty, p| {
        let v = e.load(ty, p[0]);
        e.store(v, p[1]);
    });
}
