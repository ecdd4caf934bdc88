//! `cnnc check FILE`: parse, check shapes, print the summary.

use super::common::{Failure, Format, in_model, load};
use crate::shape::Checked;
use crate::summary;
use std::path::Path;

pub fn run(path: &Path, format: Format) -> Result<String, Failure> {
    summarize(&load(path)?, format)
}

/// The model's summary as `cnnc check` prints it (`GET /model` serves the
/// JSON one).
pub fn summarize(checked: &Checked, format: Format) -> Result<String, Failure> {
    let arena = crate::runtime::jit::arenas(checked).map_err(in_model(checked))?;
    Ok(match format {
        Format::Text => summary::text(checked, Some(&arena)),
        Format::Json => format!("{:#}\n", summary::json(checked, Some(&arena))),
    })
}
