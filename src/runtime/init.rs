//! Keras's weight initializers, with Keras's fan rules.

use super::rng::Rng;
use crate::parse::ast::Init;
use crate::shape::Weight;

/// Keras's `compute_fans`: a kernel's fans are its input and output sizes
/// times its receptive field; a vector's fans are its length.
fn fans(shape: &[usize]) -> (f64, f64) {
    match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f64, *n as f64),
        [fan_in, fan_out] => (*fan_in as f64, *fan_out as f64),
        _ => {
            let receptive: usize = shape[..shape.len() - 2].iter().product();
            let n = shape.len();
            ((shape[n - 2] * receptive) as f64, (shape[n - 1] * receptive) as f64)
        }
    }
}

/// Keras's truncated-normal initializers scale by this so the truncated
/// distribution keeps the intended variance.
const TRUNCATED_STDDEV: f64 = 0.879_625_661_034_239_8;

/// Initial values of one weight, in row-major order of its shape.
pub fn initialize(weight: &Weight, rng: &mut Rng) -> Vec<f64> {
    let n = weight.numel() as usize;
    let (fan_in, fan_out) = fans(&weight.shape);
    let uniform = |rng: &mut Rng, limit: f64| (0..n).map(|_| (2.0 * rng.uniform() - 1.0) * limit).collect();
    let truncated = |rng: &mut Rng, scale: f64| {
        (0..n)
            .map(|_| rng.truncated_normal() * scale / TRUNCATED_STDDEV)
            .collect()
    };
    match &weight.init {
        Init::GlorotUniform => uniform(rng, (6.0 / (fan_in + fan_out)).sqrt()),
        Init::GlorotNormal => truncated(rng, (2.0 / (fan_in + fan_out)).sqrt()),
        Init::HeUniform => uniform(rng, (6.0 / fan_in).sqrt()),
        Init::HeNormal => truncated(rng, (2.0 / fan_in).sqrt()),
        Init::LecunUniform => uniform(rng, (3.0 / fan_in).sqrt()),
        Init::LecunNormal => truncated(rng, (1.0 / fan_in).sqrt()),
        Init::RandomUniform => uniform(rng, 0.05),
        Init::RandomNormal => (0..n).map(|_| rng.normal() * 0.05).collect(),
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Values { values, .. } => values.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(shape: Vec<usize>, init: Init) -> Weight {
        Weight {
            name: "w".into(),
            role: crate::shape::Role::Kernel,
            shape,
            trainable: true,
            init,
        }
    }

    #[test]
    fn glorot_uniform_respects_keras_limit() {
        // conv 3x3, 1 -> 32: fan_in 9, fan_out 288, limit sqrt(6/297).
        let w = weight(vec![3, 3, 1, 32], Init::GlorotUniform);
        let v = initialize(&w, &mut Rng::new(1));
        let limit = (6.0f64 / 297.0).sqrt();
        assert_eq!(v.len(), 288);
        assert!(v.iter().all(|x| x.abs() <= limit));
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(max > 0.9 * limit, "uniform draws should reach near the limit");
    }

    #[test]
    fn he_normal_has_keras_variance() {
        let w = weight(vec![400, 300], Init::HeNormal);
        let v = initialize(&w, &mut Rng::new(2));
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        let want = 2.0 / 400.0;
        assert!((var / want - 1.0).abs() < 0.05, "variance {var} vs {want}");
    }
}
