//! The compiled engine: each routine is optimized and fused once, then
//! compiled to native code once per batch size it meets (the last, partial
//! batch of an epoch gets its own), and run with the model's variables
//! updated in place.

use super::Error;
use super::engine::{Engine, Graphs, Kind, Step};
use crate::codegen::{self, Buffers, ConvPolicy, HYPERS, Options, Routine};
use crate::fuse::{self, Program};
use crate::ir::Output;
use crate::passes;
use crate::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

pub struct Compiled {
    graphs: Graphs,
    options: Options,
    programs: HashMap<Kind, Program>,
    cache: HashMap<(Kind, usize), Entry>,
}

/// A routine compiled for one batch size, with its output buffers.
struct Entry {
    routine: Routine,
    outputs: Vec<ArrayD<f32>>,
}

impl Compiled {
    pub fn new(graphs: Graphs) -> Compiled {
        Compiled::with_options(graphs, Options::default())
    }

    /// An engine whose routines are compiled with `options` (the
    /// convolutions' algorithms, say).
    pub fn with_options(graphs: Graphs, options: Options) -> Compiled {
        Compiled {
            graphs,
            options,
            programs: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// The fused program of a routine: optimized, then fused.
    pub fn program(graphs: &Graphs, kind: Kind) -> Result<Program, Error> {
        let mut graph = graphs.graph(kind).clone();
        passes::optimize(&mut graph)?;
        Ok(fuse::fuse(graph))
    }

    /// Compiles a routine for a batch size, as `cnnc ir --stage clif` and
    /// the benchmarks do.
    pub fn compile(graphs: &Graphs, kind: Kind, batch: usize, options: Options) -> Result<Routine, Error> {
        let program = Compiled::program(graphs, kind)?;
        let plan = codegen::plan_for(program, batch, options.conv)?;
        Ok(codegen::compile(plan, options)?)
    }

    fn entry(&mut self, kind: Kind, batch: usize) -> Result<&mut Entry, Error> {
        if !self.cache.contains_key(&(kind, batch)) {
            if !self.programs.contains_key(&kind) {
                let p = Compiled::program(&self.graphs, kind)?;
                self.programs.insert(kind, p);
            }
            let program = self.programs[&kind].clone();
            let plan = codegen::plan_for(program, batch, self.options.conv)?;
            let routine = codegen::compile(plan, self.options)?;
            let g = self.graphs.graph(kind);
            let outputs = g
                .outputs
                .iter()
                .map(|&(o, n)| match o {
                    Output::Assign(_) => ArrayD::zeros(IxDyn(&[0])),
                    _ => ArrayD::zeros(IxDyn(&g[n].shape.resolve(batch))),
                })
                .collect();
            self.cache.insert((kind, batch), Entry { routine, outputs });
        }
        self.cache
            .get_mut(&(kind, batch))
            .ok_or_else(|| Error::Message("compiled routine missing".into()))
    }
}

/// The arenas the compiled engine plans for a model: inference at batch 1,
/// a training step at the training block's batch size (else 32), with the
/// convolutions' algorithms `conv` chooses.
pub fn arenas(checked: &Checked, conv: ConvPolicy) -> Result<crate::summary::Arena, Error> {
    let graphs = Graphs::of_model(checked)?;
    let batch = checked.model.train.as_ref().and_then(|t| t.batch_size).unwrap_or(32);
    let bytes = |kind: Kind, batch: usize| -> Result<usize, Error> {
        let plan = codegen::plan_for(Compiled::program(&graphs, kind)?, batch, conv)?;
        Ok(plan.arena_bytes())
    };
    Ok(crate::summary::Arena {
        inference: bytes(Kind::Predict, 1)?,
        training: bytes(Kind::Train, batch)?,
        batch,
    })
}

fn contiguous<'a>(a: &'a ArrayD<f32>, what: &str) -> Result<&'a [f32], Error> {
    a.as_slice()
        .ok_or_else(|| Error::Message(format!("{what} is not a contiguous array")))
}

impl Engine for Compiled {
    fn run(&mut self, kind: Kind, state: &mut [ArrayD<f32>], step: &Step) -> Result<Vec<(Output, ArrayD<f32>)>, Error> {
        let batch = step.inputs.shape().first().copied().unwrap_or(1);
        let graph_outputs = self.graphs.graph(kind).outputs.clone();
        let entry = self.entry(kind, batch)?;
        let input = step.inputs.as_standard_layout();
        let targets = step.targets.as_ref().map(|t| t.as_standard_layout());
        let input = input
            .as_slice()
            .ok_or_else(|| Error::Message("the batch is not contiguous".into()))?;
        let label = targets.as_ref().and_then(|t| t.as_slice());
        let masks: Vec<&[f32]> = step
            .masks
            .iter()
            .map(|m| contiguous(m, "a dropout mask"))
            .collect::<Result<_, _>>()?;
        let mut vars: Vec<&mut [f32]> = state
            .iter_mut()
            .map(|v| {
                v.as_slice_mut()
                    .ok_or_else(|| Error::Message("a variable is not a contiguous array".into()))
            })
            .collect::<Result<_, _>>()?;
        let mut outputs: Vec<&mut [f32]> = entry
            .outputs
            .iter_mut()
            .map(|o| o.as_slice_mut().unwrap_or_default())
            .collect();
        entry.routine.run(Buffers {
            input,
            label,
            masks: &masks,
            vars: &mut vars,
            outputs: &mut outputs,
            hypers: HYPERS.map(|h| (step.hyper)(h) as f32),
        })?;
        Ok(graph_outputs
            .iter()
            .zip(&entry.outputs)
            .filter(|((o, _), _)| !matches!(o, Output::Assign(_)))
            .map(|((o, _), v)| (*o, v.clone()))
            .collect())
    }
}
