//! `cnnc build FILE --weights W -o DIR`: the model's inference routine
//! compiled ahead of time into an object file, with its weights inside, a
//! C header, the predict function's C source and the support functions the
//! routine calls: what a C program needs to link, and nothing of cnnc.

use super::common::{Failure, SetArgs, Trained, fail, ignored_note, in_model, load, trained_or_initial};
use crate::codegen::c::{self, Interface, SUPPORT, SUPPORT_FILE};
use crate::codegen::{self, object};
use crate::runtime::checkpoint::write_atomic;
use crate::runtime::engine::Kind;
use crate::runtime::jit::Compiled;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Trained weights (safetensors with Keras names), embedded in the
    /// object [default: the model's initial weights, seed 0]
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The folder to write the files to (created if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// The target triple to compile for, x86-64 or aarch64 (such as
    /// aarch64-unknown-linux-gnu) [default: this machine, with every
    /// vector extension it has]
    #[arg(long)]
    target: Option<String>,
}

pub fn run(args: BuildArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let Trained {
        graphs, state, ignored, ..
    } = trained_or_initial(&checked, args.weights.as_deref(), false)?;
    let mut out = match &args.weights {
        Some(w) => ignored_note(w, &ignored),
        None => "note: no --weights given: building with the model's initial weights (seed 0)\n".to_string(),
    };
    let program = Compiled::program(&graphs, Kind::Predict).map_err(in_model(&checked))?;
    let vars = program.graph.vars.len();
    let values = state
        .values
        .get(..vars)
        .ok_or_else(|| Failure::new("the model's state lacks a weight of its inference routine"))?;
    let values = values
        .iter()
        .map(|v| {
            v.as_slice()
                .ok_or_else(|| Failure::new("a weight is not a contiguous array"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One sample per run: the predict function loops over the batch, so one
    // object serves every batch size with the working memory of one sample.
    // cnnc_support.c has the GEMM, not the other algorithms' functions.
    let plan = codegen::plan_for(program, 1, codegen::ConvPolicy::GEMM).map_err(in_model(&checked))?;
    let prefix = c::identifier(&checked.model.name);
    let object = object::object(&plan, &values, &prefix, args.target.as_deref()).map_err(in_model(&checked))?;
    let interface = Interface {
        prefix: &prefix,
        source: &file_name(&args.file),
        input: &checked.model.input.shape,
        output: checked.output_shape(),
    };
    let header = c::header(&interface);
    let wrapper = c::wrapper(&interface, &object).map_err(in_model(&checked))?;
    std::fs::create_dir_all(&args.output)
        .map_err(|e| Failure::new(format!("cannot create the folder `{}`: {e}", args.output.display())))?;
    let files = [
        (format!("{prefix}.o"), object.bytes.as_slice()),
        (format!("{prefix}.h"), header.as_bytes()),
        (format!("{prefix}.c"), wrapper.as_bytes()),
        (SUPPORT_FILE.to_string(), SUPPORT.as_bytes()),
    ];
    for (name, bytes) in &files {
        let path = args.output.join(name);
        write_atomic(&path, bytes).map_err(fail)?;
        out += &format!("wrote {} ({} bytes)\n", path.display(), bytes.len());
    }
    let dir = args.output.display();
    out += &format!(
        "link with: cc your_program.c {dir}/{prefix}.o {dir}/{prefix}.c {dir}/{SUPPORT_FILE} -I{dir} -O3 -march=native -lm\n"
    );
    Ok(out)
}

/// The model file's name alone, for the generated files' comments (a path
/// would differ between machines).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
