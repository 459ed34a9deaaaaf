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
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    nb_set_num_threads(argc > 1 ? atoi(argv[1]) : 1);
    static const int sizes[] = {64, 128, 256, 512, 1024};
    static const char *forms[] = {"NN", "NT", "TN", "TT"};
    int nmax = 1024;
    float *a = malloc(sizeof(float) * nmax * nmax), *b = malloc(sizeof(float) * nmax * nmax),
          *c = malloc(sizeof(float) * nmax * nmax);
    if (!a || !b || !c)
        return 1;
    srand(1);
    for (int i = 0; i < nmax * nmax; i++) {
        a[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
        b[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
    }
    for (int f = 0; f < 4; f++) {
        bool ta = f >= 2, tb = f % 2 == 1;
        printf("gemm_gflops %s", forms[f]);
        for (int s = 0; s < 5; s++) {
            int n = sizes[s];
            double flops = 2.0 * n * n * n, t[9];
            int reps = (int)(2e9 / flops) + 1; /* about 20 ms at 100 GFLOP/s */
            nb_gemm(ta, tb, n, n, n, a, n, b, n, 0.0f, c, n);
            for (int r = 0; r < 9; r++) {
                double t0 = now();
                for (int k = 0; k < reps; k++)
                    nb_gemm(ta, tb, n, n, n, a, n, b, n, 0.0f, c, n);
                t[r] = (now() - t0) / reps;
            }
            printf(" %.1f", flops / median(t, 9) / 1e9);
            fflush(stdout);
        }
        printf("\n");
    }
    free(a);
    free(b);
    free(c);
    return 0;
}
