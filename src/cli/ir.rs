//! `cnnc ir FILE --stage ...`: the graph at each stage of the pipeline.

use super::{Failure, check::load};
use crate::ir::{Graph, print};
use crate::lower::{Mode, lower};
use clap::ValueEnum;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// The inference graph: dropout off, batch normalization from moving statistics.
    Inference,
    /// The training forward graph and its loss.
    Forward,
    /// The forward graph with the derived backward graph appended.
    Backward,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IrFormat {
    Text,
    Dot,
}

pub fn run(path: &Path, stage: Stage, format: IrFormat) -> Result<String, Failure> {
    let checked = load(path)?;
    let graph = build(&checked, stage)?;
    Ok(match format {
        IrFormat::Text => print::text(&graph),
        IrFormat::Dot => print::dot(&graph, &checked.model.name),
    })
}

pub fn build(checked: &crate::shape::Checked, stage: Stage) -> Result<Graph, Failure> {
    let fail = |e: &dyn std::fmt::Display| Failure(e.to_string());
    let mode = if stage == Stage::Inference {
        Mode::Inference
    } else {
        Mode::Training
    };
    let mut graph = lower(checked, mode).map_err(|e| fail(&e))?;
    if stage == Stage::Backward {
        crate::autodiff::differentiate(&mut graph).map_err(|e| fail(&e))?;
    }
    Ok(graph)
}
