//! Vectors of f32 for the Rust kernels that generated code calls (the
//! Winograd convolution's transforms and small GEMMs): one trait, [`Simd`],
//! implemented with AVX-512, with AVX2 and FMA, and with plain arrays for
//! other hosts. A kernel is written once, generic over the trait and
//! `#[inline(always)]` (a [`Kernel`]), is compiled once per instruction set
//! inside a function with that set's target features, and [`run`] runs it
//! with the set asked for, if the CPU has it. Cranelift emits 128-bit vectors only, which
//! is why these kernels are Rust: on this project's machines they get 256-
//! or 512-bit vectors.

/// A vector instruction set, and a token that it is present: a value of a
/// type implementing [`Simd`] exists only where its instructions run.
pub trait Simd: Copy + Send + Sync {
    /// f32 lanes of a vector.
    const LANES: usize;
    type V: Copy;
    fn zero(self) -> Self::V;
    fn splat(self, x: f32) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused where the instruction set has it.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// # Safety
    /// `p` points at `LANES` readable floats.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p` points at `LANES` writable floats.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// The first `n` lanes from `p` (`n <= LANES`), the others zero.
    ///
    /// # Safety
    /// `p` points at `n` readable floats.
    unsafe fn load_part(self, p: *const f32, n: usize) -> Self::V;
    /// Writes the first `n` lanes of `v` at `p` (`n <= LANES`).
    ///
    /// # Safety
    /// `p` points at `n` writable floats.
    unsafe fn store_part(self, p: *mut f32, n: usize, v: Self::V);

    /// `n` floats `stride` apart, the other lanes zero: contiguous runs
    /// take one (masked) load.
    ///
    /// # Safety
    /// The `n` floats are readable.
    #[inline(always)]
    unsafe fn gather(self, p: *const f32, stride: isize, n: usize) -> Self::V {
        if stride == 1 {
            // SAFETY: the caller's.
            return unsafe { self.load_part(p, n) };
        }
        let mut lanes = [0.0f32; MAX_LANES];
        for (i, lane) in lanes.iter_mut().enumerate().take(n) {
            // SAFETY: the caller's.
            *lane = unsafe { *p.offset(i as isize * stride) };
        }
        // SAFETY: `lanes` holds MAX_LANES >= LANES floats.
        unsafe { self.load(lanes.as_ptr()) }
    }

    /// Writes the first `n` lanes `stride` apart.
    ///
    /// # Safety
    /// The `n` floats are writable.
    #[inline(always)]
    unsafe fn scatter(self, p: *mut f32, stride: isize, n: usize, v: Self::V) {
        if stride == 1 {
            // SAFETY: the caller's.
            return unsafe { self.store_part(p, n, v) };
        }
        let mut lanes = [0.0f32; MAX_LANES];
        // SAFETY: `lanes` holds MAX_LANES >= LANES floats.
        unsafe { self.store(lanes.as_mut_ptr(), v) };
        for (i, lane) in lanes.iter().enumerate().take(n) {
            // SAFETY: the caller's.
            unsafe { *p.offset(i as isize * stride) = *lane };
        }
    }
}

/// The widest vector, in f32 lanes.
pub const MAX_LANES: usize = 16;

/// The instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// The best this CPU runs.
    pub fn host() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// The set whose vectors have `lanes` lanes.
    pub fn of_lanes(lanes: usize) -> Isa {
        match lanes {
            16 => Isa::Avx512,
            8 => Isa::Avx2,
            _ => Isa::Portable,
        }
    }

    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Portable => Portable::LANES,
        }
    }
}

/// Plain arrays, which the compiler vectorizes as the target allows.
#[derive(Clone, Copy, Debug)]
pub struct Portable;

impl Simd for Portable {
    const LANES: usize = 4;
    type V = [f32; 4];
    #[inline(always)]
    fn zero(self) -> [f32; 4] {
        [0.0; 4]
    }
    #[inline(always)]
    fn splat(self, x: f32) -> [f32; 4] {
        [x; 4]
    }
    #[inline(always)]
    fn add(self, a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn sub(self, a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    fn mul(self, a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn mul_add(self, a: [f32; 4], b: [f32; 4], c: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> [f32; 4] {
        // SAFETY: the caller's.
        unsafe { p.cast::<[f32; 4]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: [f32; 4]) {
        // SAFETY: the caller's.
        unsafe { p.cast::<[f32; 4]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_part(self, p: *const f32, n: usize) -> [f32; 4] {
        let mut v = [0.0; 4];
        for (i, lane) in v.iter_mut().enumerate().take(n) {
            // SAFETY: the caller's.
            *lane = unsafe { *p.add(i) };
        }
        v
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f32, n: usize, v: [f32; 4]) {
        for (i, lane) in v.iter().enumerate().take(n) {
            // SAFETY: the caller's.
            unsafe { *p.add(i) = *lane };
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX2 with FMA: 8 lanes. Constructed only where both are present.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2(());

    impl Avx2 {
        /// # Safety
        /// The CPU has AVX2 and FMA.
        pub unsafe fn new() -> Avx2 {
            Avx2(())
        }
    }

    /// The mask of the first `n` of 8 lanes, for AVX2's masked moves.
    #[inline(always)]
    fn mask8(n: usize) -> __m256i {
        const RAMP: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        // SAFETY: 8 - min(n, 8) + 8 <= 16 ints of RAMP are read.
        unsafe { _mm256_loadu_si256(RAMP.as_ptr().add(8 - n.min(8)).cast()) }
    }

    // SAFETY (every method): an `Avx2` exists only where AVX2 and FMA run;
    // pointers are the caller's.
    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        #[inline(always)]
        fn zero(self) -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_part(self, p: *const f32, n: usize) -> __m256 {
            if n >= 8 {
                return unsafe { _mm256_loadu_ps(p) };
            }
            unsafe { _mm256_maskload_ps(p, mask8(n)) }
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, n: usize, v: __m256) {
            if n >= 8 {
                return unsafe { _mm256_storeu_ps(p, v) };
            }
            unsafe { _mm256_maskstore_ps(p, mask8(n), v) }
        }
    }

    /// AVX-512 (F): 16 lanes. Constructed only where it is present.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512(());

    impl Avx512 {
        /// # Safety
        /// The CPU has AVX-512F.
        pub unsafe fn new() -> Avx512 {
            Avx512(())
        }
    }

    #[inline(always)]
    fn mask16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    // SAFETY (every method): an `Avx512` exists only where AVX-512F runs;
    // pointers are the caller's.
    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        #[inline(always)]
        fn zero(self) -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_part(self, p: *const f32, n: usize) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, n: usize, v: __m512) {
            unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
        }
    }
}

/// A computation written once for every instruction set: `run` is
/// compiled per set, inside a function with the set's target features, so
/// it must be `#[inline(always)]` (as everything it calls on vectors).
pub trait Kernel {
    type Output;
    fn run<S: Simd>(self, simd: S) -> Self::Output;
}

/// Runs `kernel` with the instruction set `isa` if the host has it (it
/// has [`Isa::host`]'s and those below), else with plain arrays, whose
/// vectors divide every other set's.
pub fn run<K: Kernel>(isa: Isa, kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<K: Kernel>(kernel: K) -> K::Output {
            // SAFETY: called only where the host has AVX-512F.
            kernel.run(unsafe { Avx512::new() })
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<K: Kernel>(kernel: K) -> K::Output {
            // SAFETY: called only where the host has AVX2 and FMA.
            kernel.run(unsafe { Avx2::new() })
        }
        match (isa, Isa::host()) {
            // SAFETY: the host has the instruction set.
            (Isa::Avx512, Isa::Avx512) => return unsafe { avx512(kernel) },
            (Isa::Avx2, Isa::Avx512 | Isa::Avx2) => return unsafe { avx2(kernel) },
            _ => {}
        }
    }
    let _ = isa;
    kernel.run(Portable)
}
