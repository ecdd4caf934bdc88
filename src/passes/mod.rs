//! Graph-to-graph passes behind one small trait, composable and repeatable
//! until the graph stops changing.

pub mod dce;

use crate::ir::{Graph, IrError};

pub trait Pass {
    fn name(&self) -> &'static str;
    /// Rewrites the graph; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError>;
}
