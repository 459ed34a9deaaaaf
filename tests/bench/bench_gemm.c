/* bench_gemm.c — single-precision GEMM throughput of nabla, C = op(A)·op(B)
 * on square n x n matrices, for n = 64, 128, 256, 512 and 1024 and the four
 * transpose forms (NN is the forward of a layer; NT and TN its two
 * gradients). Each figure is the median of 9 runs of about 20 ms and is
 * printed as one line per form:
 *
 *   gemm_gflops NN <n=64> <n=128> <n=256> <n=512> <n=1024>
 *
 * The peer tests/bench/gemm_openblas_shapes.c prints the same lines for
 * OpenBLAS (its header says how to build it; nabla links none of it). The
 * thread count is argv[1] (default 1), passed to nb_set_num_threads.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "gemm.h"
#include "parallel.h"
#include "gemm_shapes.h"

static void mul(bool ta, bool tb, int n, const float *a, const float *b, float *c) {
    nb_gemm(ta, tb, n, n, n, a, n, b, n, 0.0f, c, n);
}

int main(int argc, char **argv) {
    nb_set_num_threads(argc > 1 ? atoi(argv[1]) : 1);
    return gemm_shapes(mul);
}
