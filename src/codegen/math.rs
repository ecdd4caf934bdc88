//! exp, log, tanh and sigmoid as inline polynomials, for f32 and f32x4
//! alike: Cranelift has no vector transcendental functions, and a library
//! call per element would dominate the loops. The polynomials are Cephes's
//! single-precision ones; `tests/jit_math.rs` holds them to a few ulps of
//! the ops' one definition (`ir/scalar.rs`) over their input range, and to
//! the same NaN, infinities and signed zeros at its edges.

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
        let p = self.mul_add(p, r2, r);
        let one = self.float(ty, 1.0);
        let p = self.b.ins().fadd(p, one);
        // 2^n as 2^(n/2) 2^(n - n/2): n runs from -150 to 128, beyond one
        // normal float's exponent, and the second product rounds into the
        // subnormals or overflows exactly where e^x does.
        let half = self.b.ins().sshr_imm_s(n_int, 1);
        let rest = self.b.ins().isub(n_int, half);
        let first = self.power_of_two(ty, half);
        let second = self.power_of_two(ty, rest);
        let p = self.b.ins().fmul(p, first);
        self.b.ins().fmul(p, second)
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
}
