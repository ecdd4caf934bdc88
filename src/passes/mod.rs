//! Graph-to-graph passes behind one small trait, composable and repeated
//! until the graph stops changing. Fusion into kernels (`fuse`) follows
//! them.

pub mod cse;
pub mod dce;
pub mod fold;
mod rewrite;
pub mod simplify;

use crate::ir::{Graph, IrError, verify};

pub trait Pass {
    /// Rewrites the graph; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError>;
}

/// The optimization pipeline, run to a fixed point (bounded, in case two
/// passes ever undo each other). Returns how many rounds changed the graph.
pub fn optimize(graph: &mut Graph) -> Result<usize, IrError> {
    let passes: [&dyn Pass; 4] = [
        &fold::ConstantFolding,
        &simplify::Simplify,
        &cse::CommonSubexpressions,
        &dce::DeadCode,
    ];
    let mut rounds = 0;
    for _ in 0..16 {
        let mut changed = false;
        for p in passes {
            changed |= p.run(graph)?;
        }
        verify::verify(graph)?;
        if !changed {
            break;
        }
        rounds += 1;
    }
    Ok(rounds)
}
