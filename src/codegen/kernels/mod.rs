//! Native code for each kind of fused kernel, and the one registry that
//! says how each is lowered ([`lowering`]): strided loop nests for maps and
//! reductions (f32x4 along the innermost axis where it is contiguous)
//! here; a GEMM call for matmuls in `matmul.rs`; convolutions by one of the
//! algorithms in `conv/`; windows for max and average pooling in
//! `pool.rs`; row loops for softmax and the cross-entropies in `loss.rs`.

pub mod conv;
mod loss;
mod matmul;
mod pool;

use super::CodegenError;
use super::emit::{Emitter, VECTOR};
use super::plan::{Plan, Storage};
use crate::fuse::{Expr, Kernel};
use crate::ir::op::{SELU_ALPHA, SELU_SCALE};
use crate::ir::{Binary, Graph, Hyper, NodeId, Op, Shape, Unary};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{FuncRef, InstBuilder, Type, Value, types};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// How one kernel becomes native code, chosen for a batch size before its
/// memory is planned: its name in the fused dump and the profile, the
/// scratch space it needs, the FLOPs of its contraction, and its code.
pub trait Lowering: fmt::Debug + Send + Sync {
    /// `loop`, `gemm`, `im2col + gemm`, ...
    fn name(&self) -> String;

    /// Temporary elements beyond the kernel's inputs and outputs.
    fn scratch(&self) -> usize {
        0
    }

    /// Floating-point operations of the kernel's contraction (2 per
    /// multiply-add), the work a GEMM does; zero for loops around it.
    fn flops(&self) -> u64 {
        0
    }

    /// Emits the kernel; `index` is its position in the program, which
    /// finds its scratch space in the plan.
    fn emit(&self, e: &mut Emitter, ctx: &Context, index: usize);

    /// The length of a loop of the kernel whose ranges may run on all the
    /// cores at once, if the kernel is large enough to be worth it. Its
    /// `emit` then runs that loop with [`Context::parallel`], and
    /// `emit_range` is the code of one range.
    fn split(&self) -> Option<usize> {
        None
    }

    /// The range `[start, end)` of the loop [`Lowering::split`] names.
    fn emit_range(&self, _e: &mut Emitter, _ctx: &Context, _index: usize, _range: (Value, Value)) {}
}

/// The lowering of a kernel at a batch size, its convolutions' algorithms
/// chosen by `conv`.
pub fn lowering(
    kernel: &Kernel,
    g: &Graph,
    batch: usize,
    conv: conv::Policy,
) -> Result<Arc<dyn Lowering>, CodegenError> {
    Ok(match kernel {
        Kernel::Map { shape, outputs } => {
            let extent = map_loop(g, batch, shape, outputs).dims.first().copied().unwrap_or(1);
            Arc::new(Loop {
                shape: shape.clone(),
                outputs: outputs.clone(),
                split: (shape.numel(batch) >= PARALLEL_ELEMENTS).then_some(extent),
            })
        }
        Kernel::Reduce { shape, axes, out, expr } => Arc::new(Reduction {
            shape: shape.clone(),
            axes: axes.clone(),
            out: *out,
            expr: expr.clone(),
        }),
        Kernel::SoftmaxCrossEntropy {
            loss,
            z,
            labels,
            probs,
            grad,
        } => Arc::new(loss::SoftmaxCrossEntropy {
            loss: *loss,
            z: *z,
            labels: *labels,
            probs: *probs,
            grad: grad.clone(),
        }),
        Kernel::PoolGrad { grad, x, dy, outputs } => Arc::new(pool::TiledMaxPoolGrad {
            grad: *grad,
            x: *x,
            dy: dy.clone(),
            outputs: outputs.clone(),
            pool: crate::fuse::tiling_pool_grad(g, *grad)
                .ok_or_else(|| CodegenError::new("a pooling gradient fused as tiling is not").at(&g[*grad].origin))?,
        }),
        Kernel::Node(n) => node(g, *n, batch, conv)?,
    })
}

/// The kernel of each op that has one of its own.
fn node(g: &Graph, n: NodeId, batch: usize, policy: conv::Policy) -> Result<Arc<dyn Lowering>, CodegenError> {
    let x = g.operands(n);
    Ok(match &g[n].op {
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => Arc::new(matmul::MatMul::new(g, n, [*transpose_a, *transpose_b], batch)),
        Op::Transpose { perm } => Arc::new(Transpose {
            out: n,
            x: x[0],
            perm: perm.clone(),
        }),
        Op::Conv2d(c) => conv::choose(g, n, c, batch, policy)?,
        Op::MaxPool2d(p) => Arc::new(pool::MaxPool {
            out: n,
            x: x[0],
            pool: *p,
        }),
        Op::MaxPool2dGrad(p) => Arc::new(pool::MaxPoolGrad {
            out: n,
            x: x[0],
            dy: x[1],
            pool: *p,
        }),
        Op::AvgPool2d(p) => Arc::new(pool::AvgPool {
            out: n,
            x: x[0],
            pool: *p,
        }),
        Op::AvgPool2dGrad(p) => Arc::new(pool::AvgPoolGrad {
            out: n,
            dy: x[0],
            pool: *p,
        }),
        Op::Softmax => Arc::new(loss::Softmax { out: n, z: x[0] }),
        Op::SoftmaxCrossEntropy => Arc::new(loss::SoftmaxCrossEntropy {
            loss: n,
            z: x[0],
            labels: x[1],
            probs: None,
            grad: None,
        }),
        Op::SigmoidCrossEntropy => Arc::new(loss::SigmoidCrossEntropy {
            loss: n,
            z: x[0],
            labels: x[1],
        }),
        // Loops compute these, or they live in memory.
        Op::Input
        | Op::Label
        | Op::Var(_)
        | Op::Const { .. }
        | Op::DropoutMask { .. }
        | Op::Hyper(_)
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Sum { .. }
        | Op::Broadcast
        | Op::Reshape => {
            return Err(CodegenError::new(format!(
                "`{}` has no kernel of its own; fusion puts it in a loop",
                g[n].op.name()
            ))
            .at(&g[n].origin));
        }
    })
}

/// Maps over at least this many elements run on every core.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// An elementwise loop.
#[derive(Debug)]
struct Loop {
    shape: Shape,
    outputs: Vec<(NodeId, Expr)>,
    /// The length of its outermost axis, if it is split across the cores.
    split: Option<usize>,
}

impl Lowering for Loop {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, index: usize) {
        match self.split {
            Some(n) => ctx.parallel(e, index, n),
            None => map(e, ctx, &self.shape, &self.outputs, None),
        }
    }

    fn split(&self) -> Option<usize> {
        self.split
    }

    fn emit_range(&self, e: &mut Emitter, ctx: &Context, _: usize, range: (Value, Value)) {
        map(e, ctx, &self.shape, &self.outputs, Some(range));
    }
}

/// A loop that sums over axes.
#[derive(Debug)]
struct Reduction {
    shape: Shape,
    axes: Vec<usize>,
    out: NodeId,
    expr: Expr,
}

impl Lowering for Reduction {
    fn name(&self) -> String {
        "reduce".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        reduce(e, ctx, &self.shape, &self.axes, self.out, &self.expr);
    }
}

/// A copy walking the operand in the output's order.
#[derive(Debug)]
struct Transpose {
    out: NodeId,
    x: NodeId,
    perm: Vec<usize>,
}

impl Lowering for Transpose {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        let (dims, from) = (ctx.shape(self.out), ctx.shape(self.x));
        let mut from_strides = vec![0; from.len()];
        let mut s = 1;
        for a in (0..from.len()).rev() {
            from_strides[a] = s;
            s *= from[a];
        }
        let mut strides = vec![
            broadcast_strides(&dims, &dims),
            self.perm.iter().map(|&a| from_strides[a]).collect(),
        ];
        let dims = collapse(&dims, &mut strides);
        let bases = [ctx.address(e, self.out), ctx.address(e, self.x)];
        nest(e, &dims, &bases, &strides, None, &mut |e, ty, at| {
            let v = e.load(ty, at[1]);
            e.store(v, at[0]);
        });
    }
}

/// What kernels read while they are emitted: where each value lives and
/// the function-wide values (buffer bases, hyperparameters, the GEMM).
pub struct Context<'p> {
    pub plan: &'p Plan,
    /// Base pointer of each storage slot, loaded once at entry.
    pub bases: HashMap<Storage, Value>,
    pub hypers: HashMap<Hyper, Value>,
    pub sgemm: FuncRef,
    pub winograd: FuncRef,
    pub arena: Value,
    /// The function's own arguments: the pointer table and the scalars.
    pub tables: (Value, Value),
    /// The imported `cnnc_parallel`, and the address of the function
    /// running a range of each split kernel's loop, by kernel index (none
    /// inside those functions themselves).
    pub spread: FuncRef,
    pub ranges: HashMap<usize, Value>,
}

impl Context<'_> {
    fn shape(&self, n: NodeId) -> Vec<usize> {
        self.plan.program.graph[n].shape.resolve(self.plan.batch)
    }

    /// Runs the `n` indices of kernel `index`'s split loop, ranges of them
    /// on every core (its `emit_range` code), returning when all are done.
    pub fn parallel(&self, e: &mut Emitter, index: usize, n: usize) {
        let n = e.int(n as i64);
        let (table, scalars) = self.tables;
        e.b.ins().call(self.spread, &[self.ranges[&index], table, scalars, n]);
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
/// `outer` limits the outermost axis to a range, for a loop split across
/// threads.
fn nest(
    e: &mut Emitter,
    dims: &[usize],
    bases: &[Value],
    strides: &[Vec<usize>],
    outer: Option<(Value, Value)>,
    body: &mut dyn FnMut(&mut Emitter, Type, &[Value]),
) {
    fn level(
        e: &mut Emitter,
        dims: &[usize],
        addrs: Vec<Value>,
        strides: &[Vec<usize>],
        (d, span): (usize, Option<(Value, Value)>),
        body: &mut dyn FnMut(&mut Emitter, Type, &[Value]),
    ) {
        if dims.is_empty() {
            body(e, types::F32, &addrs);
            return;
        }
        let last = d + 1 == dims.len();
        let (start, end) = match span {
            Some(range) => range,
            None => (e.int(0), e.int(dims[d] as i64)),
        };
        // Start each operand at the range's first index.
        let addrs: Vec<Value> = match span {
            None => addrs,
            Some(_) => addrs
                .iter()
                .zip(strides)
                .map(|(&a, s)| {
                    let skip = e.b.ins().imul_imm_s(start, 4 * s[d] as i64);
                    e.b.ins().iadd(a, skip)
                })
                .collect(),
        };
        if last && strides.iter().all(|s| s[d] <= 1) {
            let n = e.b.ins().isub(end, start);
            let ptrs: Vec<(Value, usize)> = addrs.iter().zip(strides).map(|(&a, s)| (a, s[d])).collect();
            e.run(n, &ptrs, |e, ty, at| body(e, ty, at));
            return;
        }
        // Outer axes (and a strided innermost one) carry their addresses.
        let carried: Vec<(Value, i64)> = addrs.iter().zip(strides).map(|(&a, s)| (a, 4 * s[d] as i64)).collect();
        e.carry((start, end, 1), &carried, |e, _, at| {
            if last {
                body(e, types::F32, at);
            } else {
                level(e, dims, at.to_vec(), strides, (d + 1, None), body);
            }
        });
    }
    level(e, dims, bases.to_vec(), strides, (0, outer), body);
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
                    Unary::Elu { alpha } => self.elu(ty, a, *alpha as f32),
                    Unary::Selu => {
                        let elu = self.elu(ty, a, SELU_ALPHA as f32);
                        let scale = self.float(ty, SELU_SCALE as f32);
                        self.b.ins().fmul(scale, elu)
                    }
                    Unary::LeakyRelu { negative_slope } => self.leaky_relu(ty, a, *negative_slope as f32),
                    Unary::Gelu => self.gelu(ty, a),
                    Unary::Erf => self.erf(ty, a),
                    Unary::Silu => self.silu(ty, a),
                    Unary::Softplus => self.softplus(ty, a),
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.eval(ty, a, env, ctx), self.eval(ty, b, env, ctx));
                match op {
                    Binary::Add => self.b.ins().fadd(a, b),
                    Binary::Sub => self.b.ins().fsub(a, b),
                    Binary::Mul => self.b.ins().fmul(a, b),
                    Binary::Div => self.b.ins().fdiv(a, b),
                    // NaN-propagating, as the interpreter's.
                    Binary::Max => self.b.ins().fmax(a, b),
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

/// How a map walks memory: its collapsed axes and every operand's strides
/// (the outputs first, then the values it reads).
struct MapLoop {
    dims: Vec<usize>,
    strides: Vec<Vec<usize>>,
    written: Vec<NodeId>,
    reads: Vec<NodeId>,
}

fn map_loop(g: &Graph, batch: usize, shape: &Shape, outputs: &[(NodeId, Expr)]) -> MapLoop {
    let space = shape.resolve(batch);
    let written: Vec<NodeId> = outputs.iter().map(|(n, _)| *n).collect();
    let mut reads = Vec::new();
    for (_, x) in outputs {
        x.loads(&mut reads);
    }
    reads.sort_unstable();
    reads.dedup();
    reads.retain(|r| !written.contains(r));
    let mut strides: Vec<Vec<usize>> = written.iter().map(|_| broadcast_strides(&space, &space)).collect();
    strides.extend(
        reads
            .iter()
            .map(|&r| broadcast_strides(&g[r].shape.resolve(batch), &space)),
    );
    let dims = collapse(&space, &mut strides);
    MapLoop {
        dims,
        strides,
        written,
        reads,
    }
}

/// `outputs[i] = expr_i` over `shape` (its outermost axis limited to
/// `outer`, if given). All of an index's loads come before its stores, so
/// an output may overwrite an input of its own shape.
fn map(e: &mut Emitter, ctx: &Context, shape: &Shape, outputs: &[(NodeId, Expr)], outer: Option<(Value, Value)>) {
    let MapLoop {
        dims,
        strides,
        written,
        reads,
    } = map_loop(&ctx.plan.program.graph, ctx.plan.batch, shape, outputs);
    let bases: Vec<Value> = written.iter().chain(&reads).map(|&n| ctx.address(e, n)).collect();
    let innermost = dims.len().saturating_sub(1);
    let loads: Vec<(NodeId, bool)> = reads
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, strides[written.len() + i].get(innermost).is_none_or(|&s| s == 0)))
        .collect();
    nest(e, &dims, &bases, &strides, outer, &mut |e, ty, addrs| {
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
        nest(e, outer, &bases, &run_strides, None, &mut |e, _, addrs| {
            let total = sum_run(e, ctx, n, &addrs[1..], &inner[1..], &loads, x);
            let old = e.load(types::F32, addrs[0]);
            let new = e.b.ins().fadd(old, total);
            e.store(new, addrs[0]);
        });
    } else if let ([rows, width @ ..=BLOCKED_WIDTH], true) = (dims.as_slice(), strides[0].first() == Some(&0)) {
        blocked_sum(e, ctx, (*rows, *width), &bases, &strides, &loads, x);
    } else {
        nest(e, &dims, &bases, &strides, None, &mut |e, ty, addrs| {
            let mut env = HashMap::new();
            e.load_all(ty, &loads, &addrs[1..], &mut env);
            let v = e.eval(ty, x, &env, ctx);
            let old = e.load(ty, addrs[0]);
            let new = e.b.ins().fadd(old, v);
            e.store(new, addrs[0]);
        });
    }
}

/// The widest row `blocked_sum` keeps partial sums for on the stack (16 KB;
/// the routine may run on a thread with a small stack). Wider rows are
/// summed straight into their output.
const BLOCKED_WIDTH: usize = 4096;

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

/// `to = from`, elementwise.
pub fn copy(e: &mut Emitter, from: Value, to: Value, n: usize) {
    let count = e.int(n as i64);
    e.run(count, &[(from, 1), (to, 1)], |e, ty, p| {
        let v = e.load(ty, p[0]);
        e.store(v, p[1]);
    });
}
