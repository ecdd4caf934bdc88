//! What each elementwise op computes on one number: the single definition
//! that constant folding (in f64) and the interpreter (in f32 or f64) call.
//! The compiled code is a third implementation, in Cranelift instructions
//! and polynomials, tested against this one over special values
//! (`tests/jit_math.rs`).
//!
//! NaN goes in, NaN comes out: a diverged run must not hide behind a ReLU
//! or a max.

use super::op::{Binary, SELU_ALPHA, SELU_SCALE, Unary};
use num_traits::Float;

fn cast<T: Float>(x: f64) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

/// `alpha (e^x - 1)` below or at 0, `x` above: Keras's elu, with `expm1`
/// as JAX computes it, so that small inputs keep their digits.
fn elu<T: Float>(x: T, alpha: T) -> T {
    if x > T::zero() { x } else { alpha * x.exp_m1() }
}

/// The error function and its complement, in f64 whatever `T` (num-traits
/// has neither): libm's, the C library's algorithms.
fn erf<T: Float>(x: T) -> T {
    x.to_f64().map_or_else(T::nan, |x| cast(libm::erf(x)))
}

fn erfc<T: Float>(x: T) -> T {
    x.to_f64().map_or_else(T::nan, |x| cast(libm::erfc(x)))
}

impl Unary {
    pub fn apply<T: Float>(self, x: T) -> T {
        let one = T::one();
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Recip => one / x,
            // A compare and select rather than `max`, as the compiled code
            // does it: NaN stays NaN and -0 stays -0.
            Unary::Relu => {
                if x < T::zero() {
                    T::zero()
                } else {
                    x
                }
            }
            Unary::Sigmoid => one / (one + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::Elu { alpha } => elu(x, cast(alpha)),
            Unary::Selu => cast::<T>(SELU_SCALE) * elu(x, cast(SELU_ALPHA)),
            Unary::LeakyRelu { negative_slope } => {
                if x >= T::zero() {
                    x
                } else {
                    cast::<T>(negative_slope) * x
                }
            }
            // x Φ(x) with Φ(x) = erfc(-x / sqrt 2) / 2: Keras writes Φ as
            // (erf(x / sqrt 2) + 1) / 2, the same number, which cancels to 0
            // in the left tail.
            Unary::Gelu => x * erfc(-x / cast(std::f64::consts::SQRT_2)) / cast(2.0),
            Unary::Erf => erf(x),
            Unary::Silu => x * (one / (one + (-x).exp())),
            // JAX's logaddexp(x, 0): max(x, 0) + log1p(e^-|x|), exact for
            // large |x| either way.
            Unary::Softplus => {
                if x.is_nan() {
                    x
                } else {
                    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
                }
            }
        }
    }
}

impl Binary {
    pub fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            // IEEE 754-2019 `maximum`, as Cranelift's `fmax`: NaN if either
            // is, and +0 above -0.
            Binary::Max => {
                if a.is_nan() || b.is_nan() {
                    T::nan()
                } else if a > b || (a == b && a.is_sign_positive()) {
                    a
                } else {
                    b
                }
            }
            Binary::Greater => {
                if a > b {
                    T::one()
                } else {
                    T::zero()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_propagates_through_relu_and_max() {
        assert!(Unary::Relu.apply(f64::NAN).is_nan());
        assert!(Binary::Max.apply(f64::NAN, 1.0).is_nan());
        assert!(Binary::Max.apply(1.0, f32::NAN).is_nan());
    }

    #[test]
    fn signed_zeros() {
        assert!(Unary::Relu.apply(-0.0f64).is_sign_negative());
        assert!(Binary::Max.apply(-0.0f64, 0.0).is_sign_positive());
        assert!(Binary::Max.apply(0.0f64, -0.0).is_sign_positive());
    }
}
