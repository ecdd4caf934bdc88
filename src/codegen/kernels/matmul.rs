//! Matmuls: one call to the imported GEMM.

use super::super::emit::Emitter;
use super::super::gemm::{self, Sizes};
use super::{Context, Lowering};
use crate::ir::{Graph, NodeId};

/// `out = op(a) . op(b)`, `op` transposing where asked.
#[derive(Debug)]
pub struct MatMul {
    out: NodeId,
    a: NodeId,
    b: NodeId,
    /// Sizes: `op(a)` is m x k, `op(b)` k x n.
    m: usize,
    k: usize,
    n: usize,
    /// Element strides (row, column) of `op(a)` and `op(b)`.
    a_strides: (usize, usize),
    b_strides: (usize, usize),
}

impl MatMul {
    pub fn new(g: &Graph, out: NodeId, [ta, tb]: [bool; 2], batch: usize) -> MatMul {
        let x = g.operands(out);
        let (sa, sb) = (g[x[0]].shape.resolve(batch), g[x[1]].shape.resolve(batch));
        let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
        MatMul {
            out,
            a: x[0],
            b: x[1],
            m,
            k,
            n: if tb { sb[0] } else { sb[1] },
            a_strides: if ta { (1, sa[1]) } else { (sa[1], 1) },
            b_strides: if tb { (1, sb[1]) } else { (sb[1], 1) },
        }
    }
}

impl Lowering for MatMul {
    fn name(&self) -> String {
        "gemm".into()
    }

    fn flops(&self) -> u64 {
        2 * (self.m * self.k * self.n) as u64
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, _: usize) {
        let (pa, pb, pc) = (ctx.address(e, self.a), ctx.address(e, self.b), ctx.address(e, self.out));
        let size = Sizes {
            m: e.int(self.m as i64),
            k: e.int(self.k as i64),
            n: e.int(self.n as i64),
        };
        let no = e.int(0);
        gemm::call(
            e,
            ctx,
            size,
            (pa, self.a_strides),
            (pb, self.b_strides),
            (pc, (self.n, 1)),
            no,
        );
    }
}
