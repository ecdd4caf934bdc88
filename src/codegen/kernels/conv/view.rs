//! Convolutions whose patch matrix is the input itself: a 1x1 convolution
//! with stride 1 (and its gradients), or a kernel as large as the image.
//! Each output pixel's patch is then one run of the input, consecutive
//! pixels' runs equally far apart, so the GEMM reads the input where it
//! lies through its strides, with no im2col copy.

use super::super::super::emit::Emitter;
use super::super::super::gemm::{self, Sizes};
use super::super::{Context, Lowering};
use super::Candidate;
use super::im2col::{Axis, ConvGemm, pack_kernel};
use crate::ir::{Conv, Graph, NodeId};
use std::sync::Arc;

/// The algorithm.
pub struct View;

impl super::Algorithm for View {
    fn name(&self) -> &'static str {
        "view"
    }

    fn plan(&self, g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Option<Candidate> {
        let lowering = InputGemm::new(g, out, conv, batch)?;
        let geo = &lowering.geo;
        let packed = if geo.b_direct.is_some() { 0 } else { geo.k() * geo.co };
        Some(Candidate {
            cost: super::gemm_seconds([geo.m(), geo.k(), geo.co], 8 * packed as u64),
            lowering: Arc::new(lowering),
        })
    }
}

#[derive(Debug)]
struct InputGemm {
    out: NodeId,
    lhs: NodeId,
    rhs: NodeId,
    flip: bool,
    geo: ConvGemm,
    /// Where the patches start in the input, and their (row, column)
    /// element strides.
    start: usize,
    a_strides: (usize, usize),
}

/// The one stride walking `axes` (outermost first; each its length and
/// stride) as a single index, if there is one.
fn one_stride(axes: &[(usize, usize)]) -> Option<usize> {
    let walked: Vec<(usize, usize)> = axes.iter().copied().filter(|&(len, _)| len > 1).collect();
    let merges = walked.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0);
    merges.then(|| walked.last().map_or(1, |&(_, s)| s))
}

impl InputGemm {
    fn new(g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Option<InputGemm> {
        if conv.feature_groups > 1 || conv.batch_groups > 1 || conv.lhs_dilation != [1, 1] {
            return None;
        }
        let x = g.operands(out);
        let geo = ConvGemm::new(conv, &g[x[0]].shape, &g[x[1]].shape, &g[out].shape, batch);
        let [lb, ly, lx, lc] = geo.lhs_strides;
        // Every tap inside the input (a crop moves the start).
        let mut start = 0;
        for (axis, (n, len)) in [(geo.oh, geo.h), (geo.ow, geo.w)].into_iter().enumerate() {
            let kernel = [geo.kh, geo.kw][axis];
            let lo = conv.padding[axis].0;
            let last = ((n - 1) * conv.strides[axis] + (kernel - 1) * conv.rhs_dilation[axis]) as i64 - lo;
            if lo > 0 || last >= len as i64 {
                return None;
            }
            start += (-lo) as usize * [ly, lx][axis];
        }
        let input_stride = |a: Axis| match a {
            Axis::B => lb,
            Axis::Oy => conv.strides[0] * ly,
            Axis::Ox => conv.strides[1] * lx,
            Axis::Ky => conv.rhs_dilation[0] * ly,
            Axis::Kx => conv.rhs_dilation[1] * lx,
            Axis::Ci => lc,
        };
        let walk = |axes: &[Axis; 3]| one_stride(&axes.map(|a| (geo.len(a), input_stride(a))));
        let a_strides = (walk(&geo.rows)?, walk(&geo.ks)?);
        Some(InputGemm {
            out,
            lhs: x[0],
            rhs: x[1],
            flip: conv.flip,
            geo,
            start,
            a_strides,
        })
    }
}

impl Lowering for InputGemm {
    fn name(&self) -> String {
        "gemm".into()
    }

    fn scratch(&self) -> usize {
        self.geo.scratch().1
    }

    fn flops(&self) -> u64 {
        2 * (self.geo.m() * self.geo.k() * self.geo.co) as u64
    }

    fn emit(&self, e: &mut Emitter, ctx: &Context, index: usize) {
        let geo = &self.geo;
        let lhs = ctx.address(e, self.lhs);
        let a = e.offset(lhs, self.start);
        let b = match geo.b_direct {
            Some(strides) => (ctx.address(e, self.rhs), strides),
            None => {
                let packed = ctx.scratch(e, index);
                let rhs = ctx.address(e, self.rhs);
                pack_kernel(e, geo, self.flip, rhs, packed);
                (packed, (geo.co, 1))
            }
        };
        let size = Sizes {
            m: e.int(geo.m() as i64),
            k: e.int(geo.k() as i64),
            n: e.int(geo.co as i64),
        };
        let out = ctx.address(e, self.out);
        let no = e.int(0);
        gemm::call(
            e,
            ctx,
            size,
            (a, self.a_strides),
            b,
            (out, (geo.row_stride, geo.co_stride)),
            no,
        );
    }
}
