//! What each elementwise op computes on one number: the single definition
//! that constant folding (in f64) and the interpreter (in f32 or f64) call.
//! The compiled code is a third implementation, in Cranelift instructions
//! and polynomials, tested against this one over special values
//! (`tests/jit_math.rs`).
//!
//! NaN goes in, NaN comes out: a diverged run must not hide behind a ReLU
//! or a max.

use super::op::{Binary, Unary};
use num_traits::Float;

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
