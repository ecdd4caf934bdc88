//! `cnnc bench FILE`: the compiled engine against the interpreter on one
//! model, side by side in one run (these machines are shared and noisy, so
//! only ratios measured together mean much), with compile times, achieved
//! GFLOP/s and, with `--profile`, the time of every kernel.

use super::common::{ConvArgs, Failure, Format, SetArgs, fail, graphs, load};
use super::transfer::{FreezeArgs, frozen};
use crate::codegen::print::kernel_line;
use crate::codegen::{self, Options, profile};
use crate::ir::Hyper;
use crate::runtime::engine::{Engine, Graphs, Interpreter, Kind, Step};
use crate::runtime::jit::Compiled;
use crate::runtime::machine::Machine;
use crate::runtime::rng::Rng;
use crate::runtime::{dropout_masks, gradcheck, initial_weights};
use ndarray::ArrayD;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Samples per step.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Timed steps per measurement (after two warm-up steps); the median is
    /// reported.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    steps: u32,
    /// Leave the interpreter out (it is slow on large models).
    #[arg(long)]
    jit_only: bool,
    /// Time each kernel of the compiled training step.
    #[arg(long, conflicts_with = "format")]
    profile: bool,
    /// `json` for scripts, such as the side-by-side comparison with
    /// PyTorch in benches/peers.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    freeze: FreezeArgs,
    #[command(flatten)]
    conv: ConvArgs,
}

struct Batch {
    input: ArrayD<f32>,
    label: ArrayD<f32>,
    masks: Vec<ArrayD<f32>>,
}

/// The median time of `steps` runs of `f`, after two warm-up runs.
fn median(steps: u32, mut f: impl FnMut() -> Result<(), Failure>) -> Result<Duration, Failure> {
    f()?;
    f()?;
    let mut times = Vec::with_capacity(steps as usize);
    for _ in 0..steps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

fn measure(
    engine: &mut dyn Engine,
    kind: Kind,
    state: &mut [ArrayD<f32>],
    batch: &Batch,
    steps: u32,
) -> Result<Duration, Failure> {
    let hyper = |h: Hyper| match h {
        Hyper::LearningRate => 1e-3,
        Hyper::AdamStepSize => 1e-3,
    };
    let step = Step {
        inputs: batch.input.view(),
        targets: Some(batch.label.view()),
        masks: &batch.masks,
        hyper: &hyper,
    };
    // Updating the weights every step is what training does; a tiny step
    // size keeps them in range for the whole measurement.
    median(steps, || engine.run(kind, state, &step).map(|_| ()).map_err(fail))
}

fn gemm_flops(graphs: &Graphs, kind: Kind, batch: usize, options: Options) -> Result<u64, Failure> {
    let program = Compiled::program(graphs, kind).map_err(fail)?;
    let plan = codegen::plan_for(program, batch, options.conv).map_err(|e| Failure::new(e.to_string()))?;
    Ok(plan.lowerings.iter().map(|l| l.flops()).sum())
}

pub fn run(args: BenchArgs) -> Result<String, Failure> {
    let checked = frozen(load(&args.file, &args.set)?, &args.freeze)?;
    let graphs = graphs(&checked)?;
    let b = args.batch as usize;
    let mut rng = Rng::new(7);
    let (x, y) = gradcheck::random_batch(&checked, b, &mut rng);
    let batch = Batch {
        input: x.mapv(|v| v as f32),
        label: y.mapv(|v| v as f32),
        masks: dropout_masks(&graphs.train, b, &mut rng),
    };
    let mut state = initial_weights::<f32>(&checked, 0);
    let weights = state.len();
    state.extend(
        graphs.train.vars[weights..]
            .iter()
            .map(|v| ArrayD::zeros(ndarray::IxDyn(&v.shape))),
    );

    let machine = Machine::this();
    let options = args.conv.options();
    let mut compile = Vec::new();
    for kind in [Kind::Train, Kind::Predict] {
        let t = Instant::now();
        Compiled::compile(&graphs, kind, b, options).map_err(fail)?;
        compile.push(t.elapsed().as_secs_f64());
    }
    let train_flops = gemm_flops(&graphs, Kind::Train, b, options)? as f64;
    let infer_flops = gemm_flops(&graphs, Kind::Predict, b, options)? as f64;
    let mut engines: Vec<(&str, Box<dyn Engine>)> =
        vec![("jit", Box::new(Compiled::with_options(graphs.clone(), options)))];
    if !args.jit_only {
        engines.push(("interp", Box::new(Interpreter::new(graphs.clone()))));
    }
    let mut times = Vec::new();
    for (name, engine) in &mut engines {
        let mut s = state.clone();
        let train = measure(engine.as_mut(), Kind::Train, &mut s, &batch, args.steps)?;
        let infer = measure(engine.as_mut(), Kind::Predict, &mut s[..weights], &batch, args.steps)?;
        times.push((*name, train.as_secs_f64(), infer.as_secs_f64()));
    }

    if args.format == Format::Json {
        let engines: serde_json::Map<String, serde_json::Value> = times
            .iter()
            .map(|&(name, t, i)| {
                let v = serde_json::json!({
                    "train_step_seconds": t,
                    "train_samples_per_second": b as f64 / t,
                    "inference_seconds": i,
                    "inference_samples_per_second": b as f64 / i,
                });
                (name.to_string(), v)
            })
            .collect();
        let report = serde_json::json!({
            "model": checked.model.name,
            "batch": b,
            "steps": args.steps,
            "machine": {
                "cpu": machine.cpu,
                "vector": machine.gemm_vector,
                "f32_lanes": machine.gemm_lanes,
                "threads": machine.threads,
            },
            "compile_seconds": { "train": compile[0], "inference": compile[1] },
            "flops": { "train_step": train_flops, "inference": infer_flops },
            "engines": engines,
        });
        return Ok(format!("{report:#}\n"));
    }

    let mut out = format!(
        "bench `{}`: batch {b}, median of {} steps\non {machine}\n",
        checked.model.name, args.steps,
    );
    let _ = writeln!(
        out,
        "compile (fuse, plan, Cranelift): training step {:.1} ms, inference {:.1} ms",
        compile[0] * 1e3,
        compile[1] * 1e3
    );
    let _ = writeln!(
        out,
        "{:<10} {:>14} {:>14} {:>10} {:>14} {:>14} {:>10}",
        "engine", "train step", "samples/s", "GFLOP/s", "inference", "samples/s", "GFLOP/s"
    );
    for &(name, t, i) in &times {
        let _ = writeln!(
            out,
            "{name:<10} {:>11.3} ms {:>14.0} {:>10.1} {:>11.3} ms {:>14.0} {:>10.1}",
            t * 1e3,
            b as f64 / t,
            train_flops / t / 1e9,
            i * 1e3,
            b as f64 / i,
            infer_flops / i / 1e9
        );
    }
    if let [(_, jt, ji), (_, it, ii)] = times[..] {
        let _ = writeln!(out, "{:<10} {:>13.1}x {:>39.1}x", "speedup", it / jt, ii / ji);
    }
    let _ = writeln!(
        out,
        "(GFLOP/s counts the matmuls and convolutions: {:.1} MFLOP per training step, {:.1} per inference)",
        train_flops / 1e6,
        infer_flops / 1e6
    );
    if args.profile {
        out += &kernel_profile(&graphs, &batch, &mut state, args.steps, options)?;
    }
    Ok(out)
}

/// The compiled training step with a timer around every kernel.
fn kernel_profile(
    graphs: &Graphs,
    batch: &Batch,
    state: &mut [ArrayD<f32>],
    steps: u32,
    options: Options,
) -> Result<String, Failure> {
    let b = batch.input.shape()[0];
    let options = Options {
        profile: true,
        ..options
    };
    let mut routine = Compiled::compile(graphs, Kind::Train, b, options).map_err(fail)?;
    let g = &routine.plan.program.graph;
    let mut outputs: Vec<ArrayD<f32>> = g
        .outputs
        .iter()
        .map(|&(o, n)| match o {
            crate::ir::Output::Assign(_) => ArrayD::zeros(ndarray::IxDyn(&[0])),
            _ => ArrayD::zeros(ndarray::IxDyn(&g[n].shape.resolve(b))),
        })
        .collect();
    let kernels = routine.plan.program.kernels.len();
    profile::take(kernels);
    for _ in 0..steps {
        let masks: Vec<&[f32]> = batch.masks.iter().filter_map(|m| m.as_slice()).collect();
        let mut vars: Vec<&mut [f32]> = state.iter_mut().filter_map(|v| v.as_slice_mut()).collect();
        let mut outs: Vec<&mut [f32]> = outputs.iter_mut().filter_map(|o| o.as_slice_mut()).collect();
        routine
            .run(codegen::Buffers {
                input: batch.input.as_slice().unwrap_or_default(),
                label: batch.label.as_slice(),
                masks: &masks,
                vars: &mut vars,
                outputs: &mut outs,
                hypers: [1e-3, 1e-3],
            })
            .map_err(|e| Failure::new(e.to_string()))?;
    }
    let times = profile::take(kernels);
    let total: Duration = times.iter().sum();
    let (_, names) = crate::ir::print::names(&routine.plan.program.graph);
    let mut out = format!("\nkernels of the compiled training step (mean of {steps} steps):\n");
    for (i, k) in routine.plan.program.kernels.iter().enumerate() {
        let t = times[i].as_secs_f64() / steps as f64;
        let lowering = &routine.plan.lowerings[i];
        let f = lowering.flops() as f64;
        let rate = if f > 0.0 {
            format!("{:>7.1} GFLOP/s", f / t / 1e9)
        } else {
            String::new()
        };
        let mut line = kernel_line(&routine.plan.program.graph, k, &lowering.name(), &names);
        line.truncate(90);
        let _ = writeln!(
            out,
            "{i:>3} {:>9.3} ms {:>5.1}% {rate:>15}  {line}",
            t * 1e3,
            100.0 * times[i].as_secs_f64() / total.as_secs_f64().max(1e-12)
        );
    }
    let _ = writeln!(out, "total {:.3} ms", total.as_secs_f64() * 1e3 / steps as f64);
    Ok(out)
}
