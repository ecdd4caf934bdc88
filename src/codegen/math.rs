//! exp, expm1, log, log1p, tanh, sigmoid and erf as inline polynomials, for
//! f32 and f32x4 alike, and the activations made of them: Cranelift has no
//! vector transcendental functions, and a library call per element would
//! dominate the loops. exp, log and tanh use Cephes's single-precision
//! polynomials; erf's are fits of our own (see [`ERF_SMALL`]).
//! `tests/jit_math.rs` holds them to a few ulps of the ops' one definition
//! (`ir/scalar.rs`) over their input range, and to the same NaN,
//! infinities and signed zeros at its edges.

use super::emit::Emitter;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};

fn int_type(ty: Type) -> Type {
    if ty.is_vector() { types::I32X4 } else { types::I32 }
}

impl Emitter<'_> {
    fn int32(&mut self, ty: Type, v: i32) -> Value {
        let s = self.b.ins().iconst(types::I32, i64::from(v));
        if ty.is_vector() {
            self.b.ins().splat(types::I32X4, s)
        } else {
            s
        }
    }

    fn as_bits(&mut self, ty: Type, x: Value) -> Value {
        self.b.ins().bitcast(int_type(ty), MemFlagsData::new(), x)
    }

    fn bits_as(&mut self, ty: Type, x: Value) -> Value {
        self.b.ins().bitcast(ty, MemFlagsData::new(), x)
    }

    /// Horner's rule: `((c0 x + c1) x + c2) ...`.
    fn polynomial(&mut self, ty: Type, x: Value, coefficients: &[f32]) -> Value {
        let mut acc = self.float(ty, coefficients[0]);
        for &c in &coefficients[1..] {
            let c = self.float(ty, c);
            acc = self.mul_add(acc, x, c);
        }
        acc
    }

    /// e^x, to within 2 ulps over the normal range; subnormal results,
    /// overflow to infinity and underflow to 0 as the standard library's.
    pub fn exp(&mut self, ty: Type, x: Value) -> Value {
        // Beyond these, e^x is 0 or infinite in f32 either way; clamping
        // keeps the integer exponent in range. NaN passes the selects.
        let lo = self.float(ty, -104.0);
        let hi = self.float(ty, 89.0);
        let x = self.max(ty, x, lo);
        let x = self.min(ty, x, hi);
        let (p, n) = self.exp_reduced(ty, x);
        let one = self.float(ty, 1.0);
        let p = self.b.ins().fadd(p, one);
        // 2^n as 2^(n/2) 2^(n - n/2): n runs from -150 to 128, beyond one
        // normal float's exponent, and the second product rounds into the
        // subnormals or overflows exactly where e^x does.
        let half = self.b.ins().sshr_imm_s(n, 1);
        let rest = self.b.ins().isub(n, half);
        let first = self.power_of_two(ty, half);
        let second = self.power_of_two(ty, rest);
        let p = self.b.ins().fmul(p, first);
        self.b.ins().fmul(p, second)
    }

    /// `(e^r - 1, n)` with `x = n ln 2 + r`, `|r| <= ln 2 / 2`: e^x is
    /// `2^n (1 + (e^r - 1))`. `n` is an integer (vector).
    fn exp_reduced(&mut self, ty: Type, x: Value) -> (Value, Value) {
        // Round x / ln 2 to the nearest integer n by adding 1.5 * 2^23: the
        // sum's low mantissa bits then hold n itself.
        let magic = self.float(ty, 12_582_912.0);
        let log2e = self.float(ty, std::f32::consts::LOG2_E);
        let t = self.mul_add(x, log2e, magic);
        let n = self.b.ins().fsub(t, magic);
        let t_bits = self.as_bits(ty, t);
        let magic_bits = self.int32(ty, 0x4b40_0000);
        let n_int = self.b.ins().isub(t_bits, magic_bits);
        // r = x - n ln 2, with ln 2 split in two for precision.
        let c1 = self.float(ty, -0.693_359_4);
        let c2 = self.float(ty, 2.121_944_4e-4);
        let r = self.mul_add(n, c1, x);
        let r = self.mul_add(n, c2, r);
        let p = self.polynomial(
            ty,
            r,
            &[
                1.987_569_1e-4,
                1.398_2e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                5.0e-1,
            ],
        );
        let r2 = self.b.ins().fmul(r, r);
        (self.mul_add(p, r2, r), n_int)
    }

    /// e^x - 1, to a few ulps everywhere: `2^n (e^r - 1) + (2^n - 1)` in
    /// one fused step, so that nothing cancels near 0.
    pub fn exp_m1(&mut self, ty: Type, x: Value) -> Value {
        // -87 keeps 2^n normal (and e^x - 1 is -1 below it); above 88,
        // e^x itself is the answer.
        let lo = self.float(ty, -87.0);
        let hi = self.float(ty, 88.0);
        let clamped = self.max(ty, x, lo);
        let clamped = self.min(ty, clamped, hi);
        let (p, n) = self.exp_reduced(ty, clamped);
        let scale = self.power_of_two(ty, n);
        let one = self.float(ty, 1.0);
        let rest = self.b.ins().fsub(scale, one);
        let small = self.mul_add(scale, p, rest);
        let large = self.exp(ty, x);
        let overflows = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let r = self.select(ty, overflows, large, small);
        // Below 2^-24, e^x - 1 rounds to x: signed zeros and subnormals
        // stay as they are.
        let a = self.b.ins().fabs(x);
        let tiny = self.float(ty, 5.960_464_5e-8);
        let is_tiny = self.b.ins().fcmp(FloatCC::LessThan, a, tiny);
        self.select(ty, is_tiny, x, r)
    }

    /// 2^n for an integer n of a normal float's exponent range.
    fn power_of_two(&mut self, ty: Type, n: Value) -> Value {
        let bias = self.int32(ty, 127);
        let e = self.b.ins().iadd(n, bias);
        let e = self.b.ins().ishl_imm_s(e, 23);
        self.bits_as(ty, e)
    }

    /// ln x, to within 2 ulps for every positive x, subnormals included;
    /// -inf at 0, NaN below it, as the standard library's.
    pub fn log(&mut self, ty: Type, input: Value) -> Value {
        // A subnormal x is scaled by 2^23 into the normals first.
        let smallest = self.float(ty, f32::MIN_POSITIVE);
        let subnormal = self.b.ins().fcmp(FloatCC::LessThan, input, smallest);
        let scale = self.float(ty, 8_388_608.0);
        let scaled = self.b.ins().fmul(input, scale);
        let x = self.select(ty, subnormal, scaled, input);
        let bits = self.as_bits(ty, x);
        // x = m 2^e with m in [0.5, 1).
        let e = self.b.ins().ushr_imm_s(bits, 23);
        let bias = self.int32(ty, 126);
        let e = self.b.ins().isub(e, bias);
        let e = self.b.ins().fcvt_from_sint(ty, e);
        let (shift, zero) = (self.float(ty, 23.0), self.float(ty, 0.0));
        let shift = self.select(ty, subnormal, shift, zero);
        let e = self.b.ins().fsub(e, shift);
        let mantissa = self.int32(ty, 0x807f_ffff_u32 as i32);
        let half = self.int32(ty, 0x3f00_0000);
        let m = self.b.ins().band(bits, mantissa);
        let m = self.b.ins().bor(m, half);
        let m = self.bits_as(ty, m);
        // Keep m - 1 small: below sqrt(1/2), double m and borrow from e.
        let sqrt_half = self.float(ty, std::f32::consts::FRAC_1_SQRT_2);
        let low = self.b.ins().fcmp(FloatCC::LessThan, m, sqrt_half);
        let one = self.float(ty, 1.0);
        let borrow = self.select(ty, low, one, zero);
        let e = self.b.ins().fsub(e, borrow);
        let doubled = self.b.ins().fadd(m, m);
        let m = self.select(ty, low, doubled, m);
        let m = self.b.ins().fsub(m, one);
        let z = self.b.ins().fmul(m, m);
        let p = self.polynomial(
            ty,
            m,
            &[
                7.037_683_6e-2,
                -1.151_461e-1,
                1.167_699_9e-1,
                -1.242_014_1e-1,
                1.424_932_3e-1,
                -1.666_805_8e-1,
                2.000_071_4e-1,
                -2.499_999_4e-1,
                3.333_333e-1,
            ],
        );
        let mz = self.b.ins().fmul(m, z);
        let y = self.b.ins().fmul(p, mz);
        let c2 = self.float(ty, -2.121_944_4e-4);
        let y = self.mul_add(e, c2, y);
        let minus_half = self.float(ty, -0.5);
        let y = self.mul_add(z, minus_half, y);
        let c1 = self.float(ty, 0.693_359_4);
        let r = self.b.ins().fadd(m, y);
        let r = self.mul_add(e, c1, r);
        // The edges of the domain, which the bit arithmetic gets wrong.
        let infinity = self.float(ty, f32::INFINITY);
        let at_infinity = self.b.ins().fcmp(FloatCC::Equal, input, infinity);
        let r = self.select(ty, at_infinity, infinity, r);
        let minus_infinity = self.float(ty, f32::NEG_INFINITY);
        let at_zero = self.b.ins().fcmp(FloatCC::Equal, input, zero);
        let r = self.select(ty, at_zero, minus_infinity, r);
        let nan = self.float(ty, f32::NAN);
        let outside = self.b.ins().fcmp(FloatCC::UnorderedOrLessThan, input, zero);
        self.select(ty, outside, nan, r)
    }

    /// 1 / (1 + e^-x).
    pub fn sigmoid(&mut self, ty: Type, x: Value) -> Value {
        let neg = self.b.ins().fneg(x);
        let e = self.exp(ty, neg);
        let one = self.float(ty, 1.0);
        let d = self.b.ins().fadd(one, e);
        self.b.ins().fdiv(one, d)
    }

    /// tanh x: an odd polynomial near 0, where 1 - 2/(e^2x + 1) would
    /// cancel, and that formula elsewhere.
    pub fn tanh(&mut self, ty: Type, x: Value) -> Value {
        let a = self.b.ins().fabs(x);
        let z = self.b.ins().fmul(x, x);
        let p = self.polynomial(
            ty,
            z,
            &[
                -5.704_988_7e-3,
                2.063_909e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328e-1,
            ],
        );
        // x (1 + z p) rather than x + x z p, which would turn -0 into +0.
        let one = self.float(ty, 1.0);
        let slope = self.mul_add(p, z, one);
        let small = self.b.ins().fmul(x, slope);
        let two_a = self.b.ins().fadd(a, a);
        let e = self.exp(ty, two_a);
        let two = self.float(ty, 2.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let large = self.b.ins().fsub(one, q);
        let negative = self.b.ins().fneg(large);
        let zero = self.float(ty, 0.0);
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
        let large = self.select(ty, below, negative, large);
        let limit = self.float(ty, 0.625);
        let near = self.b.ins().fcmp(FloatCC::LessThan, a, limit);
        self.select(ty, near, small, large)
    }

    /// `x` above 0, `alpha (e^x - 1)` elsewhere.
    pub fn elu(&mut self, ty: Type, x: Value, alpha: f32) -> Value {
        let m = self.exp_m1(ty, x);
        let alpha = self.float(ty, alpha);
        let below = self.b.ins().fmul(alpha, m);
        let zero = self.float(ty, 0.0);
        let above = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
        self.select(ty, above, x, below)
    }

    /// `x` from 0 up, `slope x` below (and NaN through the product).
    pub fn leaky_relu(&mut self, ty: Type, x: Value, slope: f32) -> Value {
        let slope = self.float(ty, slope);
        let below = self.b.ins().fmul(slope, x);
        let zero = self.float(ty, 0.0);
        let above = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, zero);
        self.select(ty, above, x, below)
    }

    /// `x sigmoid(x)`, as Keras's silu.
    pub fn silu(&mut self, ty: Type, x: Value) -> Value {
        let s = self.sigmoid(ty, x);
        self.b.ins().fmul(x, s)
    }

    /// `max(x, 0) + log1p(e^-|x|)`, with log1p(e) as `log(u) e / (u - 1)`,
    /// `u = 1 + e` (Goldberg's correction of the rounding of u), and `e`
    /// itself where u rounds to 1.
    pub fn softplus(&mut self, ty: Type, x: Value) -> Value {
        let a = self.b.ins().fabs(x);
        let minus = self.b.ins().fneg(a);
        let e = self.exp(ty, minus);
        let one = self.float(ty, 1.0);
        let u = self.b.ins().fadd(one, e);
        let log = self.log(ty, u);
        let d = self.b.ins().fsub(u, one);
        let scaled = self.b.ins().fmul(log, e);
        let corrected = self.b.ins().fdiv(scaled, d);
        let rounds_to_one = self.b.ins().fcmp(FloatCC::Equal, u, one);
        let log1p = self.select(ty, rounds_to_one, e, corrected);
        let zero = self.float(ty, 0.0);
        let positive = self.max(ty, x, zero);
        self.b.ins().fadd(positive, log1p)
    }

    /// erf x: an odd polynomial below 1, `1 - erfc |x|` from there.
    pub fn erf(&mut self, ty: Type, x: Value) -> Value {
        let small = self.erf_small(ty, x);
        let a = self.b.ins().fabs(x);
        let limit = self.float(ty, 10.0);
        let a = self.min(ty, a, limit);
        let hi = self.b.ins().fmul(a, a);
        let minus_hi = self.b.ins().fneg(hi);
        let lo = self.mul_add(a, a, minus_hi);
        let tail = self.erfc_tail(ty, a, hi, lo);
        let one = self.float(ty, 1.0);
        let large = self.b.ins().fsub(one, tail);
        let negative = self.b.ins().fneg(large);
        let zero = self.float(ty, 0.0);
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
        let large = self.select(ty, below, negative, large);
        let abs = self.b.ins().fabs(x);
        let near = self.b.ins().fcmp(FloatCC::LessThan, abs, one);
        self.select(ty, near, small, large)
    }

    /// `x Φ(x)`, Φ the normal distribution, `erfc(-x / sqrt 2) / 2`:
    /// through erf near 0, and through erfc in each tail, so that neither
    /// tail cancels (where Keras's f32 `x (erf + 1) / 2` does).
    pub fn gelu(&mut self, ty: Type, x: Value) -> Value {
        let half = self.float(ty, 0.5);
        let one = self.float(ty, 1.0);
        let scale = self.float(ty, std::f32::consts::FRAC_1_SQRT_2);
        let t = self.b.ins().fmul(x, scale);
        // Near 0: x (1 + erf(t)) / 2.
        let e = self.erf_small(ty, t);
        let cdf = self.b.ins().fadd(one, e);
        let cdf = self.b.ins().fmul(cdf, half);
        let near = self.b.ins().fmul(x, cdf);
        // The tails: a = |t|, a^2 = x^2 / 2 exactly as hi + lo. Beyond
        // |x| = 15, e^-(a^2) is 0 in f32.
        let bound = self.float(ty, 15.0);
        let xb = self.b.ins().fabs(x);
        let xb = self.min(ty, xb, bound);
        let a = self.b.ins().fmul(xb, scale);
        let xx = self.b.ins().fmul(xb, xb);
        let minus_xx = self.b.ins().fneg(xx);
        let rest = self.mul_add(xb, xb, minus_xx);
        let hi = self.b.ins().fmul(xx, half);
        let lo = self.b.ins().fmul(rest, half);
        let (ratio, small_exp) = self.erfc_parts(ty, a, hi, lo);
        // Left tail: x erfc(a) / 2, the tiny e^-a^2 multiplied last.
        let left = self.b.ins().fmul(x, half);
        let left = self.b.ins().fmul(left, ratio);
        let left = self.b.ins().fmul(left, small_exp);
        // Right tail: x (1 - erfc(a) / 2).
        let tail = self.b.ins().fmul(ratio, small_exp);
        let tail = self.b.ins().fmul(tail, half);
        let cdf = self.b.ins().fsub(one, tail);
        let right = self.b.ins().fmul(x, cdf);
        let minus_one = self.float(ty, -1.0);
        let in_left = self.b.ins().fcmp(FloatCC::LessThanOrEqual, t, minus_one);
        let in_right = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, t, one);
        let r = self.select(ty, in_right, right, near);
        self.select(ty, in_left, left, r)
    }

    /// erf t for |t| <= 1: `t P(t^2)`.
    fn erf_small(&mut self, ty: Type, t: Value) -> Value {
        let z = self.b.ins().fmul(t, t);
        let p = self.polynomial(ty, z, &ERF_SMALL);
        self.b.ins().fmul(t, p)
    }

    /// erfc a for a >= 1, given a^2 as `hi + lo`.
    fn erfc_tail(&mut self, ty: Type, a: Value, hi: Value, lo: Value) -> Value {
        let (ratio, small_exp) = self.erfc_parts(ty, a, hi, lo);
        self.b.ins().fmul(ratio, small_exp)
    }

    /// erfc a for a >= 1 as a product `(e^(a^2) erfc(a), e^-(a^2))`, the
    /// second tiny in the far tail, for a caller to multiply last. `a^2`
    /// comes as `hi + lo`, exactly: its rounding, times a^2, would
    /// otherwise be the error of e^-(a^2).
    fn erfc_parts(&mut self, ty: Type, a: Value, hi: Value, lo: Value) -> (Value, Value) {
        let four = self.float(ty, 4.0);
        let centre = self.float(ty, 2.5);
        let near = self.min(ty, a, four);
        let s = self.b.ins().fsub(near, centre);
        let middle = self.polynomial(ty, s, &ERFCX_MIDDLE);
        let far = self.max(ty, a, four);
        let one = self.float(ty, 1.0);
        let u = self.b.ins().fdiv(one, far);
        let p = self.polynomial(ty, u, &ERFCX_FAR);
        let far = self.b.ins().fmul(u, p);
        let in_middle = self.b.ins().fcmp(FloatCC::LessThan, a, four);
        let ratio = self.select(ty, in_middle, middle, far);
        // e^-(hi + lo) = e^-hi (1 - lo), lo being below hi's last bit.
        let minus_hi = self.b.ins().fneg(hi);
        let e = self.exp(ty, minus_hi);
        let minus_e = self.b.ins().fneg(e);
        let e = self.mul_add(minus_e, lo, e);
        (ratio, e)
    }
}

/// erf(t) / t as a polynomial in t^2 on [0, 1], and erfcx(a) =
/// e^(a^2) erfc(a) as a polynomial in `a - 2.5` on [1, 4] and as `u P(u)`,
/// `u = 1/a`, beyond 4: least-squares fits of the relative error on 6,000
/// Chebyshev nodes, in numpy against Python's `math.erf` and `math.erfc`
/// (`np.linalg.lstsq` of the Vandermonde matrix, rows weighted by
/// 1/value), rounded to f32. In f32 they come within 1.5 ulps of erf and
/// erfcx over their ranges.
// The last coefficient is the fit's, one ulp below 2/sqrt(pi) in f32.
#[allow(clippy::approx_constant)]
const ERF_SMALL: [f32; 6] = [
    -5.625_396e-4,
    4.916_023_5e-3,
    -2.670_995e-2,
    1.128_013_06e-1,
    -3.761_232e-1,
    1.128_379_1,
];

const ERFCX_MIDDLE: [f32; 12] = [
    -3.835_798_7e-7,
    1.658_841_8e-6,
    -4.009_343_2e-6,
    1.442_577_7e-5,
    -5.894_270_7e-5,
    2.128_320_5e-4,
    -7.337_13e-4,
    2.466_092_8e-3,
    -8.001_475e-3,
    2.493_817_4e-2,
    -7.434_736e-2,
    2.108_063_5e-1,
];

const ERFCX_FAR: [f32; 6] = [
    -4.545_398e-1,
    5.097_408e-1,
    -8.362_112e-3,
    -2.817_070_2e-1,
    -6.856_63e-6,
    5.641_896e-1,
];
