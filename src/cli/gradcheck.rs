//! `cnnc gradcheck FILE`: the compiler's derived gradients against central
//! differences, in f64, at random weights and a random batch.

use super::common::{ConvArgs, EngineKind, Failure, SetArgs, engine, graphs, in_model, load};
use crate::runtime::gradcheck;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GradcheckArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Seed for the weights, the batch and the dropout masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples in the random batch (2 or more for batch normalization).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    batch: u64,
    /// Elements checked per weight tensor (always including its largest gradient).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    samples: u64,
    /// Engine computing the analytic gradients: the compiled engine in f32
    /// (tolerance 1e-3) or the interpreter in f64 (tolerance 1e-6).
    #[arg(long, value_enum, default_value_t = EngineKind::Jit)]
    engine: EngineKind,
    #[command(flatten)]
    conv: ConvArgs,
}

pub fn run(args: GradcheckArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let mut compiled = match args.engine {
        EngineKind::Jit => Some(engine(EngineKind::Jit, &args.conv, &graphs(&checked)?)),
        EngineKind::Interp => None,
    };
    let report = gradcheck::check_model(
        &checked,
        args.seed,
        args.batch as usize,
        args.samples as usize,
        compiled.as_deref_mut(),
    )
    .map_err(in_model(&checked))?;
    let mut out = format!(
        "gradient check of `{}` ({}): {} elements, batch {}, seed {}\n{report}",
        checked.model.name,
        match args.engine {
            EngineKind::Jit => "compiled engine, f32",
            EngineKind::Interp => "interpreter, f64",
        },
        report.samples.len(),
        args.batch,
        args.seed
    );
    let Some(worst) = report.worst() else {
        return Ok(out + "no trainable weights: nothing to check\n");
    };
    let summary = format!(
        "worst: {}{:?} analytic {:.9e} numeric {:.9e}, relative error {:.2e} (tolerance {:.0e})\n",
        worst.var, worst.index, worst.analytic, worst.numeric, worst.error, report.precision.tolerance
    );
    if report.passed() {
        out += &format!("ok: {summary}");
        Ok(out)
    } else {
        // The table is the evidence: it goes to stdout like a passing one.
        print!("{out}");
        Err(Failure::new(format!("gradient check failed: {summary}")))
    }
}
