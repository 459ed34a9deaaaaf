/* bench_gemm.c — single-precision GEMM throughput of nabla on square matrices.
 *
 * Mirrors the OpenBLAS yardstick line for line so the two can be run side by
 * side: C = A·B for n = 256, 512 and 1024, each timed as the median of 9 runs
 * and printed as one line, gemm_gflops <n=256> <n=512> <n=1024>. The thread
 * count is argv[1] (default 1), passed to nb_set_num_threads.
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
    int sizes[] = {256, 512, 1024};
    printf("gemm_gflops");
    for (int s = 0; s < 3; s++) {
        int n = sizes[s];
        float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
              *c = malloc(sizeof(float) * n * n);
        if (!a || !b || !c)
            return 1;
        for (int i = 0; i < n * n; i++) {
            a[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
            b[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
        }
        double t[9];
        nb_gemm(false, false, n, n, n, a, n, b, n, 0.0f, c, n);
        for (int r = 0; r < 9; r++) {
            int reps = n <= 256 ? 20 : n <= 512 ? 5 : 1;
            double t0 = now();
            for (int k = 0; k < reps; k++)
                nb_gemm(false, false, n, n, n, a, n, b, n, 0.0f, c, n);
            t[r] = (now() - t0) / reps;
        }
        printf(" %.1f", 2.0 * n * n * n / median(t, 9) / 1e9);
        fflush(stdout);
        free(a);
        free(b);
        free(c);
    }
    printf("\n");
    return 0;
}
