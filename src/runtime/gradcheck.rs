//! Finite-difference gradient checking in f64: the derived backward graph
//! must agree with central differences of the forward graph.

use super::engine::{Engine, Kind, Step};
use super::rng::Rng;
use super::{Error, dropout_masks, initial_weights, purpose};
use crate::interp::{self, Feeds};
use crate::ir::{Graph, Hyper, Output};
use crate::lower::{Mode, lower};
use crate::parse::ast::Loss;
use crate::shape::Checked;
use ndarray::{ArrayD, IxDyn};
use std::fmt;

/// First step of the central difference. In f64 this balances truncation
/// error (h^2) against rounding (eps/h).
pub const STEP: f64 = 1e-4;

/// How closely analytic gradients computed in a precision must match.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Precision {
    /// The largest relative error that passes.
    pub tolerance: f64,
    /// Relative error is taken against at least this magnitude, so that
    /// gradients that are zero up to rounding compare absolutely, at
    /// `tolerance * floor`.
    pub floor: f64,
}

/// Gradients computed in f64: the rounding of a difference quotient of an
/// O(1) loss is about 1e-11, so gradients below 1e-4 are compared with an
/// absolute 1e-10.
pub const F64: Precision = Precision {
    tolerance: 1e-6,
    floor: 1e-4,
};

/// Gradients computed in f32 (the engines that train): sums over tens of
/// thousands of terms round at about 1e-6 absolute, so gradients below
/// 1e-2 are compared with an absolute 1e-5.
pub const F32: Precision = Precision {
    tolerance: 1e-3,
    floor: 1e-2,
};

/// The largest relative error that passes in f64.
pub const TOLERANCE: f64 = F64.tolerance;

/// One compared element.
#[derive(Clone, Debug)]
pub struct Sample {
    pub var: String,
    pub index: Vec<usize>,
    pub analytic: f64,
    pub numeric: f64,
    pub error: f64,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub precision: Precision,
}

impl Report {
    pub fn worst(&self) -> Option<&Sample> {
        self.samples.iter().max_by(|a, b| a.error.total_cmp(&b.error))
    }

    pub fn passed(&self) -> bool {
        self.worst().is_none_or(|w| w.error <= self.precision.tolerance)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut vars: Vec<&str> = self.samples.iter().map(|s| s.var.as_str()).collect();
        vars.dedup();
        for v in vars {
            let of: Vec<&Sample> = self.samples.iter().filter(|s| s.var == v).collect();
            let worst = of.iter().map(|s| s.error).fold(0.0, f64::max);
            writeln!(f, "  {v:<40} {:>4} elements  max relative error {worst:.2e}", of.len())?;
        }
        Ok(())
    }
}

/// Checks analytic gradients (`Grad` outputs of a differentiated graph,
/// however computed) against central differences of the forward graph at
/// the given point, on up to `per_var` elements of each trainable variable
/// (always including its largest gradient).
pub fn check_graph(
    forward: &Graph,
    analytic: &[(Output, ArrayD<f64>)],
    feeds: &Feeds<f64>,
    (per_var, precision): (usize, Precision),
    rng: &mut Rng,
) -> Result<Report, interp::Error> {
    let loss_at = |vars: &[ArrayD<f64>]| -> Result<f64, interp::Error> {
        let f = Feeds {
            input: feeds.input.view(),
            label: feeds.label.as_ref().map(|l| l.view()),
            vars,
            masks: feeds.masks,
            hyper: feeds.hyper,
        };
        let out = interp::run(forward, &f)?;
        out.iter()
            .find(|(o, _)| *o == Output::Loss)
            .and_then(|(_, v)| v.iter().next().copied())
            .ok_or_else(|| interp::Error("the forward graph has no loss".into()))
    };
    let mut vars = feeds.vars.to_vec();
    let mut report = Report {
        samples: Vec::new(),
        precision,
    };
    for (o, grad) in analytic {
        let Output::Grad(v) = *o else { continue };
        let n = grad.len();
        let mut picks: Vec<usize> = if n <= per_var {
            (0..n).collect()
        } else {
            (0..per_var.saturating_sub(1)).map(|_| rng.below(n)).collect()
        };
        if let Some((largest, _)) = grad.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())) {
            picks.push(largest);
        }
        picks.sort_unstable();
        picks.dedup();
        for flat in picks {
            let Some(original) = vars[v].as_slice_mut().map(|s| s[flat]) else {
                continue;
            };
            let mut at = |x: f64| {
                if let Some(s) = vars[v].as_slice_mut() {
                    s[flat] = x;
                }
                loss_at(&vars)
            };
            let numeric = numeric_derivative(original, &mut at)?;
            at(original)?;
            let analytic = grad.iter().nth(flat).copied().unwrap_or(f64::NAN);
            let error = relative(analytic, numeric, precision.floor);
            report.samples.push(Sample {
                var: forward.vars[v].name.clone(),
                index: unravel(flat, grad.shape()),
                analytic,
                numeric,
                error: if error.is_nan() { f64::INFINITY } else { error },
            });
        }
    }
    Ok(report)
}

fn relative(a: f64, b: f64, floor: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(floor)
}

/// Central differences at steps h and h/2, combined by Richardson
/// extrapolation. When the two disagree, a kink (a ReLU or a max-pool
/// switching) lies within the step: shrink it and try again, and if no step
/// settles it, take the step where the two came closest (the smallest ones
/// lose digits to rounding). A kink may also lie closer to x than any step
/// tried (among the tens of thousands of units of a deep model, one is
/// often within 1e-7 of its kink): the side of x without it then gives
/// one-sided estimates, second-order, that agree from one step to the
/// next, and that side's estimate is taken.
fn numeric_derivative(x: f64, loss: &mut impl FnMut(f64) -> Result<f64, interp::Error>) -> Result<f64, interp::Error> {
    let disagreement = |a: f64, b: f64| relative(a, b, F64.floor);
    let mut h = STEP;
    let mut best = (f64::INFINITY, f64::NAN);
    let mut at_x = None;
    let mut one_sided: Option<(f64, f64)> = None;
    for _ in 0..4 {
        let (plus, minus) = (loss(x + h)?, loss(x - h)?);
        let (half_plus, half_minus) = (loss(x + h / 2.0)?, loss(x - h / 2.0)?);
        let (d1, d2) = ((plus - minus) / (2.0 * h), (half_plus - half_minus) / h);
        let apart = disagreement(d1, d2);
        if apart < best.0 {
            best = (apart, (4.0 * d2 - d1) / 3.0);
        }
        if apart <= F64.tolerance {
            break;
        }
        let f0 = match at_x {
            Some(f0) => f0,
            None => *at_x.insert(loss(x)?),
        };
        let sides = (
            (4.0 * half_plus - plus - 3.0 * f0) / h,
            (3.0 * f0 - 4.0 * half_minus + minus) / h,
        );
        if let Some((forward, backward)) = one_sided {
            if disagreement(forward, sides.0) <= F64.tolerance {
                return Ok(sides.0);
            }
            if disagreement(backward, sides.1) <= F64.tolerance {
                return Ok(sides.1);
            }
        }
        one_sided = Some(sides);
        h /= 10.0;
    }
    Ok(best.1)
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        index[i] = flat % d.max(1);
        flat /= d.max(1);
    }
    index
}

/// Random data a model accepts: inputs in [0, 1) like pixels, labels that
/// suit its loss.
pub fn random_batch(checked: &Checked, batch: usize, rng: &mut Rng) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut in_shape = vec![batch];
    in_shape.extend(&checked.model.input.shape);
    let input = ArrayD::from_shape_simple_fn(IxDyn(&in_shape), || rng.uniform());
    let out = checked.output_shape();
    let mut out_shape = vec![batch];
    out_shape.extend(out);
    let classes = out.last().copied().unwrap_or(1);
    let label = match checked.loss() {
        Loss::CategoricalCrossentropy => {
            let mut l = ArrayD::zeros(IxDyn(&out_shape));
            if let Some(s) = l.as_slice_mut() {
                for row in s.chunks_mut(classes) {
                    row[rng.below(classes)] = 1.0;
                }
            }
            l
        }
        Loss::BinaryCrossentropy => ArrayD::from_shape_simple_fn(IxDyn(&out_shape), || f64::from(rng.uniform() < 0.5)),
        Loss::MeanSquaredError => ArrayD::from_shape_simple_fn(IxDyn(&out_shape), || rng.normal()),
    };
    (input, label)
}

/// `cnnc gradcheck`: the model's derived gradients at random weights and a
/// random batch, against central differences in f64. The analytic
/// gradients come from the f64 interpreter, or from `engine` in f32.
pub fn check_model<E: Engine + ?Sized>(
    checked: &Checked,
    seed: u64,
    batch: usize,
    per_var: usize,
    engine: Option<&mut E>,
) -> Result<Report, Error> {
    let forward = lower(checked, Mode::Training)?;
    let mut backward = forward.clone();
    crate::autodiff::differentiate(&mut backward)?;
    let mut rng = Rng::stream(seed, purpose::GRADCHECK);
    let vars = initial_weights::<f64>(checked, seed);
    let (input, label) = random_batch(checked, batch, &mut rng);
    let masks = dropout_masks::<f64>(&forward, batch, &mut Rng::stream(seed, purpose::DROPOUT));
    let no_hyper = |_: Hyper| 0.0;
    let feeds = Feeds {
        input: input.view(),
        label: Some(label.view()),
        vars: &vars,
        masks: &masks,
        hyper: &no_hyper,
    };
    let (analytic, precision) = match engine {
        None => (interp::run(&backward, &feeds)?, F64),
        Some(engine) => {
            let f32s = |a: &ArrayD<f64>| a.mapv(|v| v as f32);
            let mut state: Vec<ArrayD<f32>> = vars.iter().map(f32s).collect();
            let masks: Vec<ArrayD<f32>> = masks.iter().map(f32s).collect();
            let (input, label) = (f32s(&input), f32s(&label));
            let step = Step {
                inputs: input.view(),
                targets: Some(label.view()),
                masks: &masks,
                hyper: &no_hyper,
            };
            let out = engine.run(Kind::Backward, &mut state, &step)?;
            let out = out.into_iter().map(|(o, a)| (o, a.mapv(f64::from))).collect();
            (out, F32)
        }
    };
    check_graph(&forward, &analytic, &feeds, (per_var, precision), &mut rng).map_err(Error::from)
}
