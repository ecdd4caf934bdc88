//! The command line: one subcommand per thing a user does with a model,
//! and its exit codes (`EXIT_CODES`).

mod bench;
mod build;
mod check;
mod common;
mod compare;
mod eval;
mod export;
mod grad;
mod gradcheck;
mod import;
mod ir;
mod predict;
mod run;
mod serve;
mod show;
mod transfer;

use clap::{Parser, Subcommand};
use common::{Failure, Format};
use std::path::PathBuf;
use std::process::ExitCode;

/// What each exit code means, as `--help` shows it.
const EXIT_CODES: &str = "Exit codes:
  0    success
  1    an error in the model, data, files or settings (the message is on stderr)
  2    a usage error: an unknown flag or a bad value
  130  `cnnc run` or `cnnc compare` interrupted (Ctrl-C): the run is saved; `--resume` continues it
       (`compare` continues when given again)";

/// The exit code of an interrupted run, as shells give a command that
/// SIGINT ended.
const INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "cnnc",
    version,
    about = "A compiler for convolutional neural networks written as layer stacks",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a model's shapes and print its Keras-style summary.
    Check {
        /// The model file (.cnn).
        file: PathBuf,
        #[command(flatten)]
        set: common::SetArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        freeze: transfer::FreezeArgs,
        #[command(flatten)]
        conv: common::ConvArgs,
    },
    /// Print the intermediate representation at a stage of the pipeline.
    Ir(ir::IrArgs),
    /// Loss, gradients and one SGD step for a single example.
    Grad(grad::GradArgs),
    /// Check the derived gradients against finite differences.
    Gradcheck(gradcheck::GradcheckArgs),
    /// Train a model on its dataset.
    #[command(after_help = EXIT_CODES)]
    Run(run::RunArgs),
    /// Train variants of a model (a grid of parameter values) or several
    /// models, with several seeds each, and compare them side by side.
    #[command(after_help = EXIT_CODES)]
    Compare(compare::CompareArgs),
    /// Evaluate trained weights on the test split.
    Eval(eval::EvalArgs),
    /// Classify images or a .npy batch with trained weights.
    Predict(predict::PredictArgs),
    /// Draw a model's filters, an image's activation maps or its saliency as a PNG.
    #[command(subcommand)]
    Show(show::ShowArgs),
    /// Serve a model over HTTP: a prediction API and a live demo page.
    Serve(serve::ServeArgs),
    /// Time the compiled engine against the interpreter.
    Bench(bench::BenchArgs),
    /// Compile the model ahead of time into an object file and a C header.
    Build(build::BuildArgs),
    /// Write the model and its weights as ONNX, for onnxruntime, TensorRT and the like.
    Export(export::ExportArgs),
    /// Turn an ONNX model or a Keras 3 .keras archive into a .cnn file and its weights.
    Import(import::ImportArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            file,
            set,
            format,
            freeze,
            conv,
        } => check::run(&file, &set, format, &freeze, &conv),
        Command::Ir(args) => ir::run(args),
        Command::Grad(args) => grad::run(args),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Run(args) => run::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Show(args) => show::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Build(args) => build::run(args),
        Command::Export(args) => export::run(args),
        Command::Import(args) => import::run(args),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            match failure {
                Failure::Message(message) => eprintln!("error: {}", message.trim_end()),
                Failure::Diagnostics(rendered) => eprint!("{rendered}"),
                Failure::Interrupted => return ExitCode::from(INTERRUPTED),
            }
            ExitCode::from(1)
        }
    }
}
