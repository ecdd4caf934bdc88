//! Engines run a model's graphs (a training step, its gradients alone,
//! evaluation, prediction) on batches. The interpreter is the reference
//! engine; the compiled engine (`jit.rs`) implements the same trait, so
//! training, evaluation, prediction and gradient checking are written once.

use super::Error;
use crate::interp::{self, Feeds};
use crate::ir::{Graph, Hyper, Op, Output};
use crate::lower::{Mode, lower};
use crate::parse::ast::Optimizer;
use crate::shape::Checked;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// The graphs of a model: built once, run for every batch.
#[derive(Clone, Debug)]
pub struct Graphs {
    /// Forward, backward and optimizer update.
    pub train: Graph,
    /// Forward and backward: the loss and every gradient.
    pub backward: Graph,
    /// Inference plus the loss (Keras's `evaluate`).
    pub eval: Graph,
    pub predict: Graph,
    /// Inference that also returns the layers [`Graphs::probing`] asks for.
    pub probe: Graph,
    /// Inference and the gradient of a class's score with respect to the
    /// input: the saliency of every input value.
    pub saliency: Graph,
}

/// Which routine to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Train,
    Backward,
    Eval,
    Predict,
    Probe,
    Saliency,
}

impl Graphs {
    pub fn new(checked: &Checked, optimizer: &Optimizer) -> Result<Graphs, Error> {
        let mut backward = lower(checked, Mode::Training)?;
        crate::autodiff::differentiate(&mut backward)?;
        let mut train = backward.clone();
        super::optim::append_update(&mut train, optimizer)?;
        let (mut saliency, score) = crate::lower::class_score(checked)?;
        crate::autodiff::differentiate_input(&mut saliency, score)?;
        Ok(Graphs {
            train,
            backward,
            eval: lower(checked, Mode::Evaluation)?,
            predict: lower(checked, Mode::Inference)?,
            probe: crate::lower::probe(checked, &[])?,
            saliency,
        })
    }

    /// The graphs with a probe routine that returns the outputs of `layers`
    /// (indices into the model's layers) beside the prediction.
    pub fn probing(self, checked: &Checked, layers: &[usize]) -> Result<Graphs, Error> {
        Ok(Graphs {
            probe: crate::lower::probe(checked, layers)?,
            ..self
        })
    }

    /// The graphs with the optimizer of the model's training block, else
    /// Keras's default, Adam.
    pub fn of_model(checked: &Checked) -> Result<Graphs, Error> {
        let optimizer = checked.model.train.as_ref().and_then(|t| t.optimizer);
        Graphs::new(checked, &optimizer.unwrap_or(Optimizer::ADAM))
    }

    pub fn graph(&self, kind: Kind) -> &Graph {
        match kind {
            Kind::Train => &self.train,
            Kind::Backward => &self.backward,
            Kind::Eval => &self.eval,
            Kind::Predict => &self.predict,
            Kind::Probe => &self.probe,
            Kind::Saliency => &self.saliency,
        }
    }
}

/// One batch.
pub struct Step<'a> {
    pub inputs: ArrayViewD<'a, f32>,
    pub targets: Option<ArrayViewD<'a, f32>>,
    pub masks: &'a [ArrayD<f32>],
    pub hyper: &'a dyn Fn(Hyper) -> f64,
}

fn no_hyper(_: Hyper) -> f64 {
    0.0
}

impl<'a> Step<'a> {
    /// A batch for a routine without dropout or hyperparameters.
    pub fn plain(inputs: ArrayViewD<'a, f32>, targets: Option<ArrayViewD<'a, f32>>) -> Step<'a> {
        Step {
            inputs,
            targets,
            masks: &[],
            hyper: &no_hyper,
        }
    }
}

pub struct Outcome {
    /// Mean loss over the batch.
    pub loss: f32,
    pub prediction: ArrayD<f32>,
}

pub trait Engine {
    /// Runs a routine on a batch: its `Assign` outputs update `state` (the
    /// variables in the routine's order) in place; its other outputs are
    /// returned in the graph's order.
    fn run(&mut self, kind: Kind, state: &mut [ArrayD<f32>], step: &Step) -> Result<Vec<(Output, ArrayD<f32>)>, Error>;

    /// One training step.
    fn train_step(&mut self, state: &mut [ArrayD<f32>], step: &Step) -> Result<Outcome, Error> {
        outcome(self.run(Kind::Train, state, step)?)
    }

    /// Loss and predictions in inference mode.
    fn evaluate(&mut self, state: &mut [ArrayD<f32>], step: &Step) -> Result<Outcome, Error> {
        outcome(self.run(Kind::Eval, state, step)?)
    }

    fn predict(&mut self, state: &mut [ArrayD<f32>], inputs: ArrayViewD<f32>) -> Result<ArrayD<f32>, Error> {
        self.run(Kind::Predict, state, &Step::plain(inputs, None))?
            .into_iter()
            .find(|(o, _)| *o == Output::Prediction)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Message("the routine did not compute a prediction".into()))
    }

    /// The prediction and the output of every layer the probe routine taps
    /// ([`Graphs::probing`]), by layer index.
    fn probe(&mut self, state: &mut [ArrayD<f32>], inputs: ArrayViewD<f32>) -> Result<Probed, Error> {
        let mut probed = Probed {
            prediction: ArrayD::zeros(IxDyn(&[0])),
            layers: Vec::new(),
        };
        for (o, v) in self.run(Kind::Probe, state, &Step::plain(inputs, None))? {
            match o {
                Output::Prediction => probed.prediction = v,
                Output::Layer(i) => probed.layers.push((i, v)),
                Output::Loss | Output::Grad(_) | Output::Assign(_) | Output::InputGrad => {}
            }
        }
        Ok(probed)
    }

    /// d score / d input for each sample, the score being the one of the
    /// class that each row of `classes` (one-hot, the model's output shape)
    /// selects: the logit of a softmax or sigmoid output, else the output.
    fn saliency(
        &mut self,
        state: &mut [ArrayD<f32>],
        inputs: ArrayViewD<f32>,
        classes: ArrayViewD<f32>,
    ) -> Result<ArrayD<f32>, Error> {
        self.run(Kind::Saliency, state, &Step::plain(inputs, Some(classes)))?
            .into_iter()
            .find(|(o, _)| *o == Output::InputGrad)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Message("the routine did not compute the input's gradient".into()))
    }
}

/// What a probe routine returns.
pub struct Probed {
    pub prediction: ArrayD<f32>,
    /// Each tapped layer's index in the model and its output, in layer order.
    pub layers: Vec<(usize, ArrayD<f32>)>,
}

fn outcome(outputs: Vec<(Output, ArrayD<f32>)>) -> Result<Outcome, Error> {
    let mut loss = None;
    let mut prediction = None;
    for (o, v) in outputs {
        match o {
            Output::Loss => loss = v.iter().next().copied(),
            Output::Prediction => prediction = Some(v),
            Output::Grad(_) | Output::Assign(_) | Output::Layer(_) | Output::InputGrad => {}
        }
    }
    match (loss, prediction) {
        (Some(loss), Some(prediction)) => Ok(Outcome { loss, prediction }),
        _ => Err(Error::Message(
            "the routine did not compute a loss and a prediction".into(),
        )),
    }
}

/// The reference interpreter as an engine.
pub struct Interpreter {
    graphs: Graphs,
}

impl Interpreter {
    pub fn new(graphs: Graphs) -> Interpreter {
        Interpreter { graphs }
    }
}

impl Engine for Interpreter {
    fn run(&mut self, kind: Kind, state: &mut [ArrayD<f32>], step: &Step) -> Result<Vec<(Output, ArrayD<f32>)>, Error> {
        let graph = self.graphs.graph(kind);
        // Targets come as rows, one per sample; a model whose output is an
        // image (a convolution's [1, 1, K]) reads them in its own shape.
        let batch = step.inputs.shape().first().copied().unwrap_or(1);
        let label_shape = graph
            .nodes
            .node_weights()
            .find(|n| n.op == Op::Label)
            .map(|n| n.shape.resolve(batch));
        let targets = match (&step.targets, label_shape) {
            (Some(t), Some(shape)) if t.len() == shape.iter().product::<usize>() => t
                .to_shape(IxDyn(&shape))
                .map_err(|e| Error::Message(format!("labels: {e}")))
                .map(Some)?,
            (t, _) => t.as_ref().map(|t| t.view().into()),
        };
        let outputs = interp::run(
            graph,
            &Feeds {
                input: step.inputs.view(),
                label: targets.as_ref().map(|t| t.view()),
                vars: state,
                masks: step.masks,
                hyper: step.hyper,
            },
        )?;
        let mut rest = Vec::with_capacity(outputs.len());
        for (o, v) in outputs {
            match o {
                Output::Assign(id) => state[id] = v,
                _ => rest.push((o, v)),
            }
        }
        Ok(rest)
    }
}
