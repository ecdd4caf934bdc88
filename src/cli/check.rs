//! `cnnc check FILE`: parse, check shapes, print the summary.

use super::common::{ConvArgs, Failure, Format, SetArgs, in_model, load};
use super::transfer::{FreezeArgs, frozen};
use crate::shape::Checked;
use crate::summary;
use std::path::Path;

pub fn run(
    path: &Path,
    set: &SetArgs,
    format: Format,
    freeze: &FreezeArgs,
    conv: &ConvArgs,
) -> Result<String, Failure> {
    summarize(&frozen(load(path, set)?, freeze)?, format, conv)
}

/// The model's summary as `cnnc check` prints it (`GET /model` serves the
/// JSON one), with the arenas of the convolutions' algorithms `conv` says.
pub fn summarize(checked: &Checked, format: Format, conv: &ConvArgs) -> Result<String, Failure> {
    let deep = checked.layers.len() > ARENA_LAYERS;
    let arena = match deep {
        true => None,
        false => Some(crate::runtime::jit::arenas(checked, conv.conv).map_err(in_model(checked))?),
    };
    Ok(match format {
        Format::Text if deep => format!(
            "{} Compiled arena: not planned past {} layers (`cnnc bench` compiles the routines)\n",
            summary::text(checked, None),
            crate::shape::group(ARENA_LAYERS as u64)
        ),
        Format::Text => summary::text(checked, arena.as_ref()),
        Format::Json => format!("{:#}\n", summary::json(checked, arena.as_ref())),
    })
}

/// Planning the compiled arenas runs the middle end over the model's
/// routines, which on a very deep model costs far more than the check
/// itself (tens of seconds at 100,000 layers, whose check takes a fraction
/// of one): past this many layers the summary leaves them out and says so.
const ARENA_LAYERS: usize = 2_000;
