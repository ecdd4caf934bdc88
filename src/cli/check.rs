//! `cnnc check FILE`: parse, check shapes, print the summary.

use super::run::fail;
use super::{Failure, Format, read_model};
use crate::runtime::engine::Kind;
use crate::runtime::jit::Compiled;
use crate::{codegen, parse, shape, summary};
use std::path::Path;

pub fn run(path: &Path, format: Format) -> Result<String, Failure> {
    let checked = load(path)?;
    let arena = arena(&checked)?;
    Ok(match format {
        Format::Text => summary::text(&checked, Some(&arena)),
        Format::Json => format!("{:#}\n", summary::json(&checked, Some(&arena))),
    })
}

/// The arenas the compiled engine plans: inference at batch 1, a training
/// step at the training block's batch size (else 32).
fn arena(checked: &shape::Checked) -> Result<summary::Arena, Failure> {
    let routines = super::ir::routines(checked)?;
    let batch = checked.model.train.as_ref().and_then(|t| t.batch_size).unwrap_or(32);
    let bytes = |kind: Kind, batch: usize| -> Result<usize, Failure> {
        let program = Compiled::program(&routines, kind).map_err(fail)?;
        let plan = codegen::plan_for(program, batch).map_err(|e| Failure(e.to_string()))?;
        Ok(plan.arena_bytes())
    };
    Ok(summary::Arena {
        inference: bytes(Kind::Predict, 1)?,
        training: bytes(Kind::Train, batch)?,
        batch,
    })
}

/// Reads, parses and checks a model file: the common first step of every
/// command.
pub fn load(path: &Path) -> Result<shape::Checked, Failure> {
    let (name, source) = read_model(path)?;
    let model = parse::parse(&name, &source)?;
    Ok(shape::check(model, &name, &source)?)
}
