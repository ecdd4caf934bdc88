//! Engines run a model's three routines (a training step, evaluation,
//! prediction) on batches. The interpreter is the reference engine; the
//! compiled engine implements the same trait, so training, evaluation and
//! prediction are written once.

use super::Error;
use crate::interp::{self, Feeds};
use crate::ir::{Graph, Hyper, Output};
use crate::lower::{Mode, lower};
use crate::parse::ast::Optimizer;
use crate::shape::Checked;
use ndarray::{ArrayD, ArrayViewD};

/// The graphs of a model: built once, run for every batch.
#[derive(Clone, Debug)]
pub struct Routines {
    /// Forward, backward and optimizer update.
    pub train: Graph,
    /// Inference plus the loss (Keras's `evaluate`).
    pub eval: Graph,
    pub predict: Graph,
}

impl Routines {
    pub fn new(checked: &Checked, optimizer: &Optimizer) -> Result<Routines, Error> {
        let mut train = lower(checked, Mode::Training)?;
        crate::autodiff::differentiate(&mut train)?;
        super::optim::append_update(&mut train, optimizer)?;
        Ok(Routines {
            train,
            eval: lower(checked, Mode::Evaluation)?,
            predict: lower(checked, Mode::Inference)?,
        })
    }
}

/// One batch of a training step.
pub struct Step<'a> {
    pub inputs: ArrayViewD<'a, f32>,
    pub targets: ArrayViewD<'a, f32>,
    pub masks: &'a [ArrayD<f32>],
    pub hyper: &'a dyn Fn(Hyper) -> f64,
}

pub struct Outcome {
    /// Mean loss over the batch.
    pub loss: f32,
    pub prediction: ArrayD<f32>,
}

pub trait Engine {
    /// One training step: updates `state` (weights, moving statistics,
    /// optimizer slots, in `Routines::train`'s variable order) in place.
    fn train_step(&mut self, state: &mut [ArrayD<f32>], step: &Step) -> Result<Outcome, Error>;
    /// Loss and predictions in inference mode.
    fn evaluate(
        &mut self,
        state: &[ArrayD<f32>],
        inputs: ArrayViewD<f32>,
        targets: ArrayViewD<f32>,
    ) -> Result<Outcome, Error>;
    fn predict(&mut self, state: &[ArrayD<f32>], inputs: ArrayViewD<f32>) -> Result<ArrayD<f32>, Error>;
}

/// The reference interpreter as an engine.
pub struct Interpreter {
    routines: Routines,
}

impl Interpreter {
    pub fn new(routines: Routines) -> Interpreter {
        Interpreter { routines }
    }
}

fn no_hyper(_: Hyper) -> f64 {
    0.0
}

fn outcome(outputs: Vec<(Output, ArrayD<f32>)>) -> Result<Outcome, Error> {
    let mut loss = None;
    let mut prediction = None;
    for (o, v) in outputs {
        match o {
            Output::Loss => loss = v.iter().next().copied(),
            Output::Prediction => prediction = Some(v),
            Output::Grad(_) | Output::Assign(_) => {}
        }
    }
    match (loss, prediction) {
        (Some(loss), Some(prediction)) => Ok(Outcome { loss, prediction }),
        _ => Err(Error::Message(
            "the routine did not compute a loss and a prediction".into(),
        )),
    }
}

impl Engine for Interpreter {
    fn train_step(&mut self, state: &mut [ArrayD<f32>], step: &Step) -> Result<Outcome, Error> {
        let outputs = interp::run(
            &self.routines.train,
            &Feeds {
                input: step.inputs.view(),
                label: Some(step.targets.view()),
                vars: state,
                masks: step.masks,
                hyper: step.hyper,
            },
        )?;
        let mut rest = Vec::with_capacity(2);
        for (o, v) in outputs {
            match o {
                Output::Assign(id) => state[id] = v,
                _ => rest.push((o, v)),
            }
        }
        outcome(rest)
    }

    fn evaluate(
        &mut self,
        state: &[ArrayD<f32>],
        inputs: ArrayViewD<f32>,
        targets: ArrayViewD<f32>,
    ) -> Result<Outcome, Error> {
        let feeds = Feeds {
            input: inputs,
            label: Some(targets),
            vars: state,
            masks: &[],
            hyper: &no_hyper,
        };
        outcome(interp::run(&self.routines.eval, &feeds)?)
    }

    fn predict(&mut self, state: &[ArrayD<f32>], inputs: ArrayViewD<f32>) -> Result<ArrayD<f32>, Error> {
        let feeds = Feeds {
            input: inputs,
            label: None,
            vars: state,
            masks: &[],
            hyper: &no_hyper,
        };
        interp::run(&self.routines.predict, &feeds)?
            .into_iter()
            .find(|(o, _)| *o == Output::Prediction)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Message("the routine did not compute a prediction".into()))
    }
}
