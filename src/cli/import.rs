//! `cnnc import FILE -o model.cnn [--weights-out W]`: an ONNX model (as
//! `torch.onnx.export` writes one) or a Keras 3 `.keras` archive, as a
//! `.cnn` file and its weights.

use super::common::{Failure, fail};
use crate::convert::{Imported, finish};
use crate::runtime::checkpoint::{self, Metadata, write_atomic};
use crate::shape::group;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The model to import: `.onnx`, or a Keras 3 `.keras` archive.
    file: PathBuf,
    /// Where to write the model (.cnn).
    #[arg(short, long)]
    output: PathBuf,
    /// Where to write its weights (safetensors with Keras names) [default:
    /// the output's path with the extension .safetensors]
    #[arg(long)]
    weights_out: Option<PathBuf>,
}

pub fn run(args: ImportArgs) -> Result<String, Failure> {
    let source = args.file.display().to_string();
    let failed = |e: String| Failure::new(format!("{source}: {e}"));
    let bytes = std::fs::read(&args.file).map_err(|e| {
        fail(checkpoint::FileError {
            path: args.file.clone(),
            writing: false,
            source: e,
        })
    })?;
    let imported: Imported = if bytes.is_empty() {
        return Err(failed("is empty".into()));
    } else if bytes.starts_with(b"PK\x03\x04") {
        crate::keras::import(&bytes).map_err(failed)?
    } else if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        return Err(failed(
            "is an HDF5 file (a Keras 2 .h5 model or a bare .weights.h5); cnnc imports Keras 3 .keras archives\n  \
             = help: in Keras 3, load it and save it again: keras.models.load_model(path).save(\"model.keras\")"
                .into(),
        ));
    } else {
        crate::onnx::import::import(&bytes).map_err(failed)?
    };
    let Imported {
        stack,
        input,
        origin,
        notes,
    } = imported;
    let file_name = args.output.display().to_string();
    let weights = args
        .weights_out
        .clone()
        .unwrap_or_else(|| args.output.with_extension("safetensors"));
    let mut header = vec![format!(
        "Imported by cnnc from {} ({origin}).",
        args.file
            .file_name()
            .map_or(source.clone(), |n| n.to_string_lossy().into_owned())
    )];
    header.extend(notes.iter().map(|n| format!("Note: {n}.")));
    header.push(format!("Weights: {}", weights.display()));
    let converted = finish(stack, input, &header, &file_name).map_err(failed)?;
    write_atomic(&args.output, converted.text.as_bytes()).map_err(fail)?;
    let metadata = Metadata::from([("imported_from".to_string(), origin)]);
    checkpoint::save(&weights, &converted.tensors, &metadata).map_err(fail)?;

    let params: u64 = converted.checked.weights().map(|w| w.numel()).sum();
    let layers = converted.checked.model.layers.len();
    let mut out = format!(
        "wrote {} ({layers} layer{}, {} parameters) and {}\n",
        args.output.display(),
        if layers == 1 { "" } else { "s" },
        group(params),
        weights.display()
    );
    for note in &notes {
        out += &format!("note: {note}\n");
    }
    out += &format!(
        "check it with `cnnc check {}`, run it with `cnnc predict {} --weights {} INPUT...`\n",
        quoted(&args.output),
        quoted(&args.output),
        quoted(&weights)
    );
    Ok(out)
}

fn quoted(path: &Path) -> String {
    let s = path.display().to_string();
    if s.contains(char::is_whitespace) {
        format!("'{s}'")
    } else {
        s
    }
}
