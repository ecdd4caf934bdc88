//! Row kernels: softmax, and the cross-entropies with their fused pieces.

use super::super::emit::Emitter;
use super::{Context, Lowering};
use crate::fuse::Expr;
use crate::ir::NodeId;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use std::collections::HashMap;

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

fn softmax(e: &mut Emitter, ctx: &Context, out: NodeId, z: NodeId) {
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
fn softmax_cross_entropy(
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
fn sigmoid_cross_entropy(e: &mut Emitter, ctx: &Context, loss: NodeId, z: NodeId, labels: NodeId) {
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

/// Softmax over the last axis.
#[derive(Debug)]
pub struct Softmax {
    pub out: NodeId,
    pub z: NodeId,
}

impl Lowering for Softmax {
    fn name(&self) -> String {
        "rows".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        softmax(e, ctx, self.out, self.z);
    }
}

/// The cross-entropy of softmax(z), with the probabilities and the fused
/// gradient where fusion gave them to it.
#[derive(Debug)]
pub struct SoftmaxCrossEntropy {
    pub loss: NodeId,
    pub z: NodeId,
    pub labels: NodeId,
    pub probs: Option<NodeId>,
    pub grad: Option<(NodeId, Expr)>,
}

impl Lowering for SoftmaxCrossEntropy {
    fn name(&self) -> String {
        "rows".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        softmax_cross_entropy(e, ctx, self.loss, self.z, self.labels, self.probs, self.grad.as_ref());
    }
}

#[derive(Debug)]
pub struct SigmoidCrossEntropy {
    pub loss: NodeId,
    pub z: NodeId,
    pub labels: NodeId,
}

impl Lowering for SigmoidCrossEntropy {
    fn name(&self) -> String {
        "loop".into()
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        sigmoid_cross_entropy(e, ctx, self.loss, self.z, self.labels);
    }
}
