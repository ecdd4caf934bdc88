//! Convolutions, each computed by one of several algorithms, chosen per
//! convolution and batch size when the routine is compiled (the forward
//! pass and both gradients are convolutions of their own, so each gets its
//! own choice). An algorithm lives in a file of its own: adding one means
//! its file and a line in [`ALGORITHMS`], and no change to the others.
//!
//! The choice is the cost model's ([`seconds`]), never a timing: the same
//! model, batch size and machine always get the same algorithms, so that
//! training stays reproducible bit for bit (and `--resume` gives the
//! uninterrupted run's weights).

mod direct;
mod im2col;
mod view;
mod winograd;

pub use winograd::cnnc_winograd;

use super::Lowering;
use crate::codegen::CodegenError;
use crate::ir::{Conv, Graph, NodeId};
use std::sync::Arc;

/// A way to compute convolutions.
pub trait Algorithm: Sync {
    /// Its name, as `--conv` takes it.
    fn name(&self) -> &'static str;

    /// The algorithm's plan for this convolution at this batch size, or
    /// `None` if it does not apply (a Winograd kernel needs stride 1 and a
    /// 3x3 kernel, say).
    fn plan(&self, g: &Graph, out: NodeId, conv: &Conv, batch: usize) -> Option<Candidate>;

    /// Whether the cost model may choose it (`--conv auto`); one that
    /// rounds too much for training is used only when asked for by name.
    fn automatic(&self) -> bool {
        true
    }
}

/// An algorithm's plan, and what the cost model expects it to cost.
pub struct Candidate {
    pub lowering: Arc<dyn Lowering>,
    /// Estimated seconds: see [`seconds`].
    pub cost: f64,
}

/// Every algorithm, in order of preference between equal costs. The
/// first, im2col + GEMM, computes every convolution.
const ALGORITHMS: [&dyn Algorithm; 6] = [
    &im2col::Im2col,
    &view::View,
    &direct::Direct,
    &winograd::Winograd(4),
    &winograd::Winograd(2),
    &winograd::Winograd(6),
];

/// The algorithms' names, as `--conv` takes them.
pub fn names() -> Vec<&'static str> {
    ALGORITHMS.iter().map(|a| a.name()).collect()
}

/// Which algorithms compute a routine's convolutions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// The cost model's cheapest for each convolution.
    #[default]
    Cheapest,
    /// The named algorithm wherever it applies, the cheapest elsewhere:
    /// `gemm` (im2col + GEMM, which applies everywhere) gives the numbers
    /// cnnc gave before it had other algorithms, bit for bit.
    Only(&'static str),
}

impl Policy {
    /// im2col + GEMM everywhere.
    pub const GEMM: Policy = Policy::Only(im2col::NAME);

    /// The policy `--conv` names: `auto`, or an algorithm's name.
    pub fn named(name: &str) -> Option<Policy> {
        if name == "auto" {
            return Some(Policy::Cheapest);
        }
        ALGORITHMS
            .iter()
            .find(|a| a.name() == name)
            .map(|a| Policy::Only(a.name()))
    }
}

/// The cost model's time for `flops` of GEMM-like arithmetic and `bytes`
/// of memory traffic outside it, at round figures for the two cores this
/// project's machines have (the README's measured GEMM peak and copy
/// bandwidth): what decides between algorithms is their ratio.
pub fn seconds(flops: u64, bytes: u64) -> f64 {
    const FLOPS_PER_SECOND: f64 = 150e9;
    const BYTES_PER_SECOND: f64 = 20e9;
    flops as f64 / FLOPS_PER_SECOND + bytes as f64 / BYTES_PER_SECOND
}

/// The cost model's time for a GEMM of `[m, k, n]` (m x k by k x n) and
/// `bytes` of memory traffic around it. The GEMM reaches its peak only
/// when every dimension fills its register tiles and its packing is paid
/// for by the work on each packed panel: a short dimension costs as if it
/// were [`GEMM_FULL`] long.
pub fn gemm_seconds([m, k, n]: [usize; 3], bytes: u64) -> f64 {
    let [m, k, n] = [m.max(GEMM_FULL[0]), k.max(GEMM_FULL[1]), n.max(GEMM_FULL[2])];
    seconds(2 * (m * k * n) as u64, bytes)
}

/// Below these lengths of m, k and n, the GEMM takes as long as at these
/// lengths.
const GEMM_FULL: [usize; 3] = [16, 16, 16];

/// The GEMM's peak (on every core) over generated f32x4 code's rate on one
/// core: direct algorithms' FLOPs count this many times.
pub const GEMM_PER_DIRECT: u64 = 4;

/// The lowering of the convolution `out` under `policy`.
pub fn choose(
    g: &Graph,
    out: NodeId,
    conv: &Conv,
    batch: usize,
    policy: Policy,
) -> Result<Arc<dyn Lowering>, CodegenError> {
    let mut best: Option<Candidate> = None;
    for algorithm in ALGORITHMS {
        let Some(candidate) = algorithm.plan(g, out, conv, batch) else {
            continue;
        };
        if let Policy::Only(name) = policy
            && name == algorithm.name()
        {
            return Ok(candidate.lowering);
        }
        if algorithm.automatic() && best.as_ref().is_none_or(|b| candidate.cost < b.cost) {
            best = Some(candidate);
        }
    }
    // im2col computes every convolution.
    best.map(|b| b.lowering)
        .ok_or_else(|| CodegenError::new(format!("no algorithm computes the convolution {conv:?}")).at(&g[out].origin))
}
