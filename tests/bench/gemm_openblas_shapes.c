/* gemm_openblas_shapes.c — the peer of bench_gemm: the same products
 * (C = op(A)·op(B), square n x n, n = 64 ... 1024, the four transpose
 * forms, median of 9 runs of about 20 ms) through OpenBLAS's cblas_sgemm,
 * printed in the same lines, so the two can be compared side by side. A
 * yardstick only: nabla links none of it, and it is not built by meson.
 *
 *   apt-get install libopenblas-pthread-dev
 *   cc -O2 tests/bench/gemm_openblas_shapes.c -o gemm_openblas_shapes \
 *      $(pkg-config --cflags --libs openblas)
 *   OPENBLAS_NUM_THREADS=1 ./gemm_openblas_shapes
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(void) {
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
        enum CBLAS_TRANSPOSE ta = f >= 2 ? CblasTrans : CblasNoTrans;
        enum CBLAS_TRANSPOSE tb = f % 2 ? CblasTrans : CblasNoTrans;
        printf("gemm_gflops %s", forms[f]);
        for (int s = 0; s < 5; s++) {
            int n = sizes[s];
            double flops = 2.0 * n * n * n, t[9];
            int reps = (int)(2e9 / flops) + 1;
            cblas_sgemm(CblasRowMajor, ta, tb, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            for (int r = 0; r < 9; r++) {
                double t0 = now();
                for (int k = 0; k < reps; k++)
                    cblas_sgemm(CblasRowMajor, ta, tb, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
                t[r] = (now() - t0) / reps;
            }
            qsort(t, 9, sizeof *t, cmp);
            printf(" %.1f", flops / t[4] / 1e9);
            fflush(stdout);
        }
        printf("\n");
    }
    free(a);
    free(b);
    free(c);
    return 0;
}
