//! Running models: weights and their initial values, the random streams,
//! data, engines, optimizers, the training loop, checkpoints and metrics,
//! and serving a model over HTTP.

pub mod checkpoint;
pub mod comparison;
pub mod data;
pub mod engine;
pub mod file;
pub mod gradcheck;
pub mod init;
pub mod jit;
pub mod machine;
pub mod metrics;
pub mod npy;
pub mod optim;
pub mod plot;
pub mod rng;
pub mod serve;
pub mod show;
pub mod train;

use crate::interp::Float;
use crate::ir::Graph;
use crate::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use rng::Rng;

/// Random purposes, each its own stream of the seed.
pub mod purpose {
    pub const INIT: u64 = 1;
    pub const DROPOUT: u64 = 2;
    pub const SHUFFLE: u64 = 3;
    pub const GRADCHECK: u64 = 4;
    pub const SELECT: u64 = 5;
    pub const AUGMENT: u64 = 6;
}

fn cast<T: Float>(x: f64) -> T {
    T::from_f64(x).unwrap_or_else(T::nan)
}

/// Every weight of the model at its initial value (Keras initializers,
/// literal values where the file gives them), in `Checked::weights` order.
pub fn initial_weights<T: Float>(checked: &Checked, seed: u64) -> Vec<ArrayD<T>> {
    let mut rng = Rng::stream(seed, purpose::INIT);
    checked
        .weights()
        .map(|w| {
            let values = init::initialize(w, &mut rng).into_iter().map(cast).collect();
            ArrayD::from_shape_vec(IxDyn(&w.shape), values).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&w.shape)))
        })
        .collect()
}

/// Fresh dropout masks for one step: each element 0 with probability
/// `rate`, else `1/(1-rate)` (inverted dropout).
pub fn dropout_masks<T: Float>(graph: &Graph, batch: usize, rng: &mut Rng) -> Vec<ArrayD<T>> {
    let mut masks: Vec<(usize, ArrayD<T>)> = graph
        .nodes
        .node_weights()
        .filter_map(|n| match n.op {
            crate::ir::Op::DropoutMask { rate, index } => {
                let shape = n.shape.resolve(batch);
                let keep = cast::<T>(1.0 / (1.0 - rate));
                let mask =
                    ArrayD::from_shape_simple_fn(IxDyn(&shape), || if rng.uniform() < rate { T::zero() } else { keep });
                Some((index, mask))
            }
            _ => None,
        })
        .collect();
    masks.sort_by_key(|(i, _)| *i);
    masks.into_iter().map(|(_, m)| m).collect()
}

macro_rules! errors {
    ($($variant:ident($t:ty)),* $(,)?) => {
        /// Anything that stops a run: the user's data, files or settings, or
        /// a compiler bug surfacing at run time.
        #[derive(Debug)]
        pub enum Error {
            $($variant($t),)*
            /// A user-facing message, with its `help:` if any.
            Message(String),
        }

        $(impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::$variant(e)
            }
        })*

        impl std::fmt::Display for Error {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $(Error::$variant(e) => e.fmt(f),)*
                    Error::Message(m) => f.write_str(m),
                }
            }
        }
    };
}

errors!(
    Data(data::DataError),
    Checkpoint(checkpoint::CheckpointError),
    File(checkpoint::FileError),
    Metrics(metrics::MetricsError),
    Plot(plot::PlotError),
    Interp(crate::interp::Error),
    Ir(crate::ir::IrError),
    Grad(crate::autodiff::Error),
    Codegen(crate::codegen::CodegenError),
);

impl Error {
    /// The error at the model line it belongs to, for errors that have one:
    /// rendered with that line rather than a line number.
    pub fn diagnostic(&self) -> Option<crate::diag::Diagnostic> {
        match self {
            Error::Ir(e) => Some(e.diagnostic()),
            Error::Grad(e) => Some(e.diagnostic()),
            Error::Codegen(e) => e.diagnostic(),
            Error::Data(_)
            | Error::Checkpoint(_)
            | Error::File(_)
            | Error::Metrics(_)
            | Error::Plot(_)
            | Error::Interp(_)
            | Error::Message(_) => None,
        }
    }
}

impl std::error::Error for Error {}
