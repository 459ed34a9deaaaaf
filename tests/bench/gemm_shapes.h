/* gemm_shapes.h — the measurement bench_gemm and its OpenBLAS peer
 * (gemm_openblas_shapes.c) share, so that the two time the same products
 * the same way: C = op(A)·op(B) on square n x n matrices, n = 64 ... 1024,
 * the four transpose forms, each figure the median of 9 runs of about
 * 20 ms, printed one line per form:
 *
 *   gemm_gflops NN <n=64> <n=128> <n=256> <n=512> <n=1024>
 *
 * Plain C and libc only: the peer is built by hand without nabla. */
#ifndef NB_GEMM_SHAPES_H
#define NB_GEMM_SHAPES_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"

/* C = op(A)·op(B), all n x n with leading dimension n. */
typedef void (*gemm_shapes_fn)(bool ta, bool tb, int n, const float *a, const float *b,
                               float *c);

/* Times mul over the sizes and forms and prints the lines; 1 when out of
 * memory, else 0. */
static int gemm_shapes(gemm_shapes_fn mul) {
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
            mul(ta, tb, n, a, b, c);
            for (int r = 0; r < 9; r++) {
                double t0 = now();
                for (int k = 0; k < reps; k++)
                    mul(ta, tb, n, a, b, c);
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

#endif
