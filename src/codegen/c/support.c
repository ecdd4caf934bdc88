/*
 * cnnc_support.c: the three functions that routines compiled by `cnnc build`
 * call, for a C program to compile beside them. Any C99 compiler builds it;
 * it needs nothing but the C library.
 *
 * The JIT runs the same calls on the `gemm` crate and a thread pool; here
 * the matrix product is a plain loop nest that the C compiler vectorizes,
 * and everything runs on the calling thread, so a program stays free of
 * any runtime and a call never starts a thread. The product sums in
 * another order than the `gemm` crate does, so results agree with
 * `cnnc predict` to rounding (about 1e-6), not bit for bit. Compile it
 * with -O3 -march=native (or the target's vector extensions): at -O2,
 * gcc 12 leaves the product's inner loop scalar, about 3.5 times slower.
 */
#include <stddef.h>
#include <stdint.h>

/* c = a . b, or c += a . b when `accumulate` is not 0, for matrices given by
 * their element strides: a is m x k, b is k x n, c is m x n. */
void cnnc_sgemm(size_t m, size_t k, size_t n,
                const float *a, ptrdiff_t rsa, ptrdiff_t csa,
                const float *b, ptrdiff_t rsb, ptrdiff_t csb,
                float *c, ptrdiff_t rsc, ptrdiff_t csc, size_t accumulate)
{
    for (size_t i = 0; i < m; i++) {
        float *ci = c + (ptrdiff_t)i * rsc;
        if (!accumulate) {
            for (size_t j = 0; j < n; j++)
                ci[(ptrdiff_t)j * csc] = 0.0f;
        }
        for (size_t p = 0; p < k; p++) {
            const float aip = a[(ptrdiff_t)i * rsa + (ptrdiff_t)p * csa];
            const float *bp = b + (ptrdiff_t)p * rsb;
            if (csb == 1 && csc == 1) {
                /* Rows contiguous: the loop the compiler turns into vectors. */
                for (size_t j = 0; j < n; j++)
                    ci[j] += aip * bp[j];
            } else {
                for (size_t j = 0; j < n; j++)
                    ci[(ptrdiff_t)j * csc] += aip * bp[(ptrdiff_t)j * csb];
            }
        }
    }
}

/* The profiler's mark: built routines are compiled without profiling and
 * never call it; it is defined because the object declares it. */
void cnnc_mark(size_t kernel)
{
    (void)kernel;
}

/* A large loop's chunk: the routine's tables and a range of the loop's
 * outermost axis. */
typedef void (*cnnc_chunk)(float *const *table, const float *scalars, int64_t start, int64_t end);

/* Runs a loop the routine would split across cores, whole, on this thread. */
void cnnc_parallel(cnnc_chunk chunk, float *const *table, const float *scalars, int64_t n)
{
    chunk(table, scalars, 0, n);
}
