//! `cnnc check FILE`: parse, check shapes, print the summary.

use super::common::{Failure, Format, in_model, load};
use crate::summary;
use std::path::Path;

pub fn run(path: &Path, format: Format) -> Result<String, Failure> {
    let checked = load(path)?;
    let arena = crate::runtime::jit::arenas(&checked).map_err(in_model(&checked))?;
    Ok(match format {
        Format::Text => summary::text(&checked, Some(&arena)),
        Format::Json => format!("{:#}\n", summary::json(&checked, Some(&arena))),
    })
}
