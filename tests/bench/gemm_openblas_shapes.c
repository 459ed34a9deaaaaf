/* gemm_openblas_shapes.c — the peer of bench_gemm: the same products
 * (C = op(A)·op(B), square n x n, n = 64 ... 1024, the four transpose
 * forms, median of 9 runs of about 20 ms: the harness of gemm_shapes.h)
 * through OpenBLAS's cblas_sgemm, printed in the same lines, so the two
 * can be compared side by side. A
 * yardstick only: nabla links none of it, and it is not built by meson.
 *
 *   apt-get install libopenblas-pthread-dev
 *   cc -O2 tests/bench/gemm_openblas_shapes.c -o gemm_openblas_shapes \
 *      $(pkg-config --cflags --libs openblas)
 *   OPENBLAS_NUM_THREADS=1 ./gemm_openblas_shapes
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>

#include "gemm_shapes.h"

static void mul(bool ta, bool tb, int n, const float *a, const float *b, float *c) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, n, n,
                n, 1.0f, a, n, b, n, 0.0f, c, n);
}

int main(void) { return gemm_shapes(mul); }
