//! `cnnc ir FILE --stage ...`: the graph at each stage of the pipeline.

use super::common::{ConvArgs, Failure, SetArgs, graphs, in_model, load};
use crate::codegen::{self, Options};
use crate::ir::{Graph, print};
use crate::lower::{Mode, lower};
use crate::passes;
use crate::runtime::engine::Kind;
use crate::runtime::jit::Compiled;
use crate::shape::Checked;
use clap::ValueEnum;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// The inference graph: dropout off, batch normalization from moving statistics.
    Inference,
    /// The training forward graph and its loss.
    Forward,
    /// The forward graph with the derived backward graph appended.
    Backward,
    /// A whole routine (see --routine) after folding, simplification, CSE and DCE.
    Optimized,
    /// Its kernels after fusion, and the memory plan for --batch.
    Fused,
    /// Cranelift's IR of the compiled routine for --batch.
    Clif,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IrFormat {
    Text,
    Dot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoutineName {
    /// Forward, backward and the optimizer's update.
    Train,
    /// Inference.
    Predict,
    /// Inference and the gradient of a class's score with respect to the input.
    Saliency,
}

#[derive(clap::Args)]
pub struct IrArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    #[arg(long, value_enum, default_value_t = Stage::Forward)]
    stage: Stage,
    /// The routine the optimized, fused and clif stages show.
    #[arg(long, value_enum, default_value_t = RoutineName::Train)]
    routine: RoutineName,
    /// Batch size of the memory plan and the compiled code [default: the
    /// training block's, else 32]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch: Option<u32>,
    #[arg(long, value_enum, default_value_t = IrFormat::Text)]
    format: IrFormat,
    #[command(flatten)]
    conv: ConvArgs,
}

pub fn run(args: IrArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let batch = args
        .batch
        .map(|b| b as usize)
        .or(checked.model.train.as_ref().and_then(|t| t.batch_size))
        .unwrap_or(32);
    let kind = match args.routine {
        RoutineName::Train => Kind::Train,
        RoutineName::Predict => Kind::Predict,
        RoutineName::Saliency => Kind::Saliency,
    };
    if args.format == IrFormat::Dot && matches!(args.stage, Stage::Fused | Stage::Clif) {
        return Err(Failure::new(
            "`--format dot` draws graphs: the inference, forward, backward and optimized stages",
        ));
    }
    let graph = match args.stage {
        Stage::Inference | Stage::Forward | Stage::Backward => build(&checked, args.stage)?,
        Stage::Optimized | Stage::Fused | Stage::Clif => {
            let graphs = graphs(&checked)?;
            match args.stage {
                Stage::Fused => {
                    let program = Compiled::program(&graphs, kind).map_err(in_model(&checked))?;
                    let plan = codegen::plan_for(program, batch, args.conv.conv).map_err(in_model(&checked))?;
                    return Ok(codegen::print::fused(&plan));
                }
                Stage::Clif => {
                    let options = Options {
                        keep_clif: true,
                        ..args.conv.options()
                    };
                    let routine = Compiled::compile(&graphs, kind, batch, options).map_err(in_model(&checked))?;
                    let mut legend: String = codegen::imports()
                        .iter()
                        .enumerate()
                        .map(|(i, f)| format!("; fn{i} = {}, {}.\n", f.name, f.what))
                        .collect();
                    legend += "; Everything else is code Cranelift generated for the fused kernels.\n";
                    return Ok(format!("{legend}{}", routine.clif.unwrap_or_default()));
                }
                _ => {
                    let mut g = graphs.graph(kind).clone();
                    passes::optimize(&mut g).map_err(in_model(&checked))?;
                    g
                }
            }
        }
    };
    Ok(match args.format {
        IrFormat::Text => print::text(&graph),
        IrFormat::Dot => print::dot(&graph, &checked.model.name),
    })
}

pub fn build(checked: &Checked, stage: Stage) -> Result<Graph, Failure> {
    let mode = if stage == Stage::Inference {
        Mode::Inference
    } else {
        Mode::Training
    };
    let mut graph = lower(checked, mode).map_err(in_model(checked))?;
    if stage == Stage::Backward {
        crate::autodiff::differentiate(&mut graph).map_err(in_model(checked))?;
    }
    Ok(graph)
}
