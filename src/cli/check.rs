//! `cnnc check FILE`: parse, check shapes, print the summary.

use super::run::fail;
use super::{Failure, Format, read_model};
use crate::{parse, shape, summary};
use std::path::Path;

pub fn run(path: &Path, format: Format) -> Result<String, Failure> {
    let checked = load(path)?;
    let arena = crate::runtime::jit::arenas(&checked).map_err(fail)?;
    Ok(match format {
        Format::Text => summary::text(&checked, Some(&arena)),
        Format::Json => format!("{:#}\n", summary::json(&checked, Some(&arena))),
    })
}

/// Reads, parses and checks a model file: the common first step of every
/// command.
pub fn load(path: &Path) -> Result<shape::Checked, Failure> {
    let (name, source) = read_model(path)?;
    let model = parse::parse(&name, &source)?;
    Ok(shape::check(model, &name, &source)?)
}
