/* bench_matmul.c — time of one dense-layer step through nb_matmul: the
 * forward x[64,784]·W[784,512] and the backward to both operands (three
 * products of the same size), as a training step of an MNIST-sized layer
 * runs it, graph recording and scope cleanup included.
 *
 * Prints one line, matmul_fwd_bwd_ms <median of 15 runs> <GFLOP/s>. The
 * thread count is argv[1] (default: one per CPU), passed to
 * nb_set_num_threads.
 */
#define _POSIX_C_SOURCE 200809L

#include "nabla.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { RUNS = 15, REPS = 10 };

/* One forward and backward in its own scope, so every temporary is freed. */
static int step(nb_tensor *x, nb_tensor *w, nb_tensor *g) {
    nb_scope_begin();
    nb_tensor *y = nb_matmul(x, w), *in[2] = {x, w}, *grads[2];
    int rc = y ? nb_grad(1, &y, &g, 2, in, grads, NULL) : -1;
    nb_scope_end();
    return rc;
}

int main(int argc, char **argv) {
    nb_set_num_threads(argc > 1 ? atoi(argv[1]) : 0);
    nb_manual_seed(1);
    nb_tensor *x = nb_keep(nb_set_requires_grad(nb_randn(NB_SHAPE(64, 784)), true));
    nb_tensor *w = nb_keep(nb_set_requires_grad(nb_randn(NB_SHAPE(784, 512)), true));
    nb_tensor *g = nb_keep(nb_ones(NB_SHAPE(64, 512)));
    if (!x || !w || !g || step(x, w, g) != 0) {
        fprintf(stderr, "bench_matmul: %s\n", nb_error() ? nb_error() : "setup failed");
        return 1;
    }
    double t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        double t0 = now();
        for (int k = 0; k < REPS; k++) step(x, w, g);
        t[r] = (now() - t0) / REPS;
    }
    double mid = median(t, RUNS);
    double flops = 3.0 * 2.0 * 64 * 784 * 512;
    printf("matmul_fwd_bwd_ms %.3f %.1f\n", mid * 1e3, flops / mid / 1e9);
    nb_release(x);
    nb_release(w);
    nb_release(g);
    return 0;
}
