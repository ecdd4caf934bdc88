//! The contraction at the heart of dense and convolution layers, done by a
//! tuned GEMM (the `gemm` crate, on the machine's cores) called from the
//! generated code through an imported symbol, as XLA's CPU backend calls
//! Eigen: the function itself, and the call the generated code makes.

use super::emit::Emitter;
use super::kernels::Context;
use cranelift_codegen::ir::{InstBuilder, Value};

/// `c = a . b` (or `c += a . b` when `accumulate` is not 0) for matrices
/// given by element strides: `a` is m x k, `b` is k x n, `c` is m x n. The
/// generated code calls it.
///
/// # Safety
/// The pointers must cover the strided extents of their matrices; the
/// memory plan guarantees it for every call the code generator emits.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cnnc_sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    accumulate: usize,
) {
    let accumulate = accumulate != 0;
    // SAFETY: the caller (generated code) passes buffers the memory plan
    // sized for exactly these extents. c = alpha c + 1 a b, alpha 0 or 1.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            csc,
            rsc,
            accumulate,
            a,
            csa,
            rsa,
            b,
            csb,
            rsb,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// A GEMM's sizes, as values of the generated code.
pub struct Sizes {
    pub m: Value,
    pub k: Value,
    pub n: Value,
}

/// A matrix operand of a call: its address and (row, column) element
/// strides.
pub type Matrix = (Value, (usize, usize));

/// Emits `c = a . b` (or `c += a . b` where `accumulate` is not 0) through
/// the imported GEMM.
pub fn call(e: &mut Emitter, ctx: &Context, size: Sizes, a: Matrix, b: Matrix, c: Matrix, accumulate: Value) {
    let mut int = |x: usize| e.int(x as i64);
    let (rsa, csa, rsb, csb, rsc, csc) = (int(a.1.0), int(a.1.1), int(b.1.0), int(b.1.1), int(c.1.0), int(c.1.1));
    let args = [
        size.m, size.k, size.n, a.0, rsa, csa, b.0, rsb, csb, c.0, rsc, csc, accumulate,
    ];
    e.b.ins().call(ctx.sgemm, &args);
}
