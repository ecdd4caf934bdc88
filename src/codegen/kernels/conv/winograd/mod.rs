//! Winograd convolution (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016) for stride-1 3x3 convolutions:
//! the forward pass, the input gradient (the same convolution with the
//! kernel flipped and the feature axes swapped, which the dimension numbers
//! express), and the kernel gradient (a convolution with a 3x3 output).
//!
//! Design notes.
//!
//! - Which F(m x m, 3x3). A tile of m x m outputs costs (m + 2)^2
//!   multiplies instead of 9 m^2: 2.25x fewer for F(2x2), 4x for F(4x4),
//!   5.06x for F(6x6). The price is rounding error, which grows with the
//!   transforms' coefficients (up to 1 for F(2x2), 8 for F(4x4), 32 and
//!   1/32 for F(6x6)), and edge waste: a 26x26 output takes 7x7 tiles of
//!   4, 28x28 outputs' worth. Measured on mnist_cnn's gradients against
//!   the f64 interpreter (relative L2, the worst weight): im2col + GEMM
//!   4.8e-7, F(2x2) 4.4e-7, F(4x4) 1.9e-6, F(6x6) 4.3e-6; F(6x6) ran the
//!   second convolution's forward pass 1.3-1.5x and its kernel gradient
//!   2.2x faster than im2col + GEMM, its input gradient no faster. F(4x4)
//!   is the default of the three (first in `ALGORITHMS`): most of F(6x6)'s
//!   saving at less than half its error, as NNPACK uses it for training.
//!   None is chosen by `--conv auto` yet: see [`Winograd::automatic`].
//! - The transforms are Rust, vectorized along the channel axis (NHWC
//!   keeps a pixel's channels together), compiled for AVX-512, AVX2 or
//!   plain arrays and chosen at run time; the generated code calls one
//!   function per convolution with a descriptor of its geometry, and that
//!   function cuts the work into blocks of tiles that stay in the L2 cache
//!   from the input transform to the output transform (NNPACK and oneDNN
//!   do the same), run on every core. The α² GEMMs per block are small
//!   and their operands already in cache, so a register-blocked kernel of
//!   its own does them, with no packing and no allocation.
//! - The kernel gradient uses the same matrices transposed (see
//!   `matrices.rs`), summing over tiles and samples inside the GEMMs, so
//!   the transforms back to the 3x3 gradient run once per (channel,
//!   feature) pair, not once per tile.
//! - Built objects (`cnnc build`) link only `cnnc_support.c`, whose
//!   functions are C: they compute every convolution with im2col + GEMM.

mod gemm;
mod matrices;
mod tiles;

pub use tiles::cnnc_winograd;

use super::super::super::emit::Emitter;
use super::super::{Context, Lowering};
use super::Candidate;
use crate::codegen::simd::Isa;
use crate::ir::{Conv, Graph, NodeId};
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, types};
use std::sync::Arc;
use tiles::{Geometry, Layout, Role, WORDS};

/// Winograd's algorithm with m x m tiles.
pub struct Winograd(pub usize);

impl super::Algorithm for Winograd {
    fn name(&self) -> &'static str {
        match self.0 {
            2 => "winograd2",
            4 => "winograd4",
            _ => "winograd6",
        }
    }

    /// Only by name (`--conv winograd4`), for now: on celeb8's training
    /// step (64x64x3 images, `same` padding, batch normalization) its
    /// gradients are 1.75e-2 from the f64 interpreter's, against 2.4e-6
    /// for im2col + GEMM, a fault the tests on random models and on
    /// mnist_cnn do not show and that is not found yet.
    fn automatic(&self) -> bool {
        false
    }

    fn plan(&self, g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Option<Candidate> {
        let geometry = geometry(g, out, conv, batch, self.0)?;
        let lowering = WinogradConv {
            out,
            lhs: g.operands(out)[0],
            rhs: g.operands(out)[1],
            layout: Layout::of(&geometry),
            geometry,
        };
        Some(Candidate {
            cost: lowering.cost(),
            lowering: Arc::new(lowering),
        })
    }
}

/// The geometry of `conv` for F(m x m, 3x3), if the algorithm computes it:
/// stride 1, no dilation, no groups, and a 3x3 kernel or a 3x3 output.
fn geometry(g: &Graph, out: NodeId, c: &Conv, batch: usize, m: usize) -> Option<Geometry> {
    let plain = c.strides == [1, 1]
        && c.lhs_dilation == [1, 1]
        && c.rhs_dilation == [1, 1]
        && c.feature_groups == 1
        && c.batch_groups == 1;
    if !plain {
        return None;
    }
    let x = g.operands(out);
    let dims = |n: NodeId| g[n].shape.resolve(batch);
    let (l, r, o) = (dims(x[0]), dims(x[1]), dims(out));
    let strides = |d: &[usize]| {
        let mut s = vec![1isize; d.len()];
        for i in (0..d.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * d[i + 1] as isize;
        }
        s
    };
    let (ls, rs, os) = (strides(&l), strides(&r), strides(&o));
    let lhs_axes = [c.lhs.batch, c.lhs.spatial[0], c.lhs.spatial[1], c.lhs.feature];
    let rhs_axes = [c.rhs.spatial[0], c.rhs.spatial[1], c.rhs.input, c.rhs.output];
    let out_axes = [c.out.batch, c.out.spatial[0], c.out.spatial[1], c.out.feature];
    let (kh, kw) = (r[rhs_axes[0]], r[rhs_axes[1]]);
    let (oh, ow) = (o[out_axes[1]], o[out_axes[2]]);
    let role = if (kh, kw) == (3, 3) {
        Role::Data
    } else if (oh, ow) == (3, 3) && !c.flip {
        Role::Filter
    } else {
        return None;
    };
    Some(Geometry {
        role,
        m,
        batch: l[lhs_axes[0]],
        height: l[lhs_axes[1]],
        width: l[lhs_axes[2]],
        channels: l[lhs_axes[3]],
        features: r[rhs_axes[3]],
        out_height: oh,
        out_width: ow,
        kernel_height: kh,
        kernel_width: kw,
        padding: [c.padding[0].0, c.padding[1].0],
        flip: c.flip,
        lhs: lhs_axes.map(|a| ls[a]),
        rhs: rhs_axes.map(|a| rs[a]),
        out: out_axes.map(|a| os[a]),
        lanes: Isa::host().lanes(),
    })
}

/// A convolution by Winograd's algorithm: one call to `cnnc_winograd`.
#[derive(Debug)]
struct WinogradConv {
    out: NodeId,
    lhs: NodeId,
    rhs: NodeId,
    geometry: Geometry,
    layout: Layout,
}

impl WinogradConv {
    /// The cost model's time: the GEMMs' multiplies, and the transforms'
    /// traffic.
    fn cost(&self) -> f64 {
        let g = &self.geometry;
        let (points, fp, units) = (g.points() as u64, g.padded_features() as u64, g.units() as u64);
        let rows = match g.role {
            Role::Data => g.channels as u64,
            Role::Filter => g.batch as u64,
        };
        let flops = 2 * points * units * rows * fp;
        let transformed = 4 * points * units * (rows + fp);
        super::seconds(flops, transformed)
    }
}

impl Lowering for WinogradConv {
    fn name(&self) -> String {
        let m = self.geometry.m;
        format!("winograd F({m}x{m},3x3)")
    }

    fn scratch(&self) -> usize {
        self.layout.total
    }

    /// The direct convolution's multiply-adds, so that GFLOP/s compare
    /// with other algorithms' ("effective" GFLOP/s: Winograd's own GEMMs
    /// do fewer).
    fn flops(&self) -> u64 {
        let g = &self.geometry;
        let taps = g.kernel_height * g.kernel_width * g.channels * g.features;
        2 * (g.batch * g.out_height * g.out_width * taps) as u64
    }

    /// Stores the descriptor on the stack and calls `cnnc_winograd`.
    fn emit(&self, e: &mut Emitter, ctx: &Context, index: usize) {
        let slot =
            e.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (8 * WORDS) as u32, 3));
        for (i, w) in self.geometry.words().iter().enumerate() {
            let v = e.int(*w);
            e.b.ins().stack_store(types::I64, v, slot, (8 * i) as i32);
        }
        let descriptor = e.b.ins().stack_addr(types::I64, slot, 0);
        let (lhs, rhs, out) = (
            ctx.address(e, self.lhs),
            ctx.address(e, self.rhs),
            ctx.address(e, self.out),
        );
        let scratch = ctx.scratch(e, index);
        e.b.ins().call(ctx.winograd, &[descriptor, lhs, rhs, out, scratch]);
    }
}
