/* bench_optim.c — one optimizer step over many parameters, against the
 * memory-bandwidth floor of the same machine. An update is a streaming
 * pass: it reads the parameter, its gradient and its state arrays and
 * writes the parameter and the state, so its time is bounded below by
 * those bytes over the bandwidth. The bandwidth is measured here too, as
 * the median of a plain C loop updating an array in place from another as
 * large as the parameters (a += s·b: 2 reads, 1 write, the pattern of an
 * update), and each optimizer is reported as GB/s of its own traffic and
 * as its time over the floor, its bytes at that bandwidth (1.0 = at the
 * floor).
 *
 *   usage: bench_optim [threads] [parameters]     (defaults 1 10000000)
 *   last line: optim_gbps <sgd> <sgd momentum> <adam> <adamw> <rmsprop> <adagrad> floor <GB/s>
 *
 * The parameters are one tensor (as a large layer's weights) plus three
 * small ones (biases), with the options each optimizer has by default;
 * the median of 9 runs of enough steps for about 50 ms each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nabla.h"
#include "bench_util.h"

static double stream_gbps(int64_t n) {
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    if (!a || !b) return 0;
    for (int64_t i = 0; i < n; i++) a[i] = 0, b[i] = (float)(i & 1023);
    double t[9];
    for (int r = 0; r < 9; r++) {
        double t0 = now();
        for (int64_t i = 0; i < n; i++) a[i] += 0.5f * b[i];
        t[r] = now() - t0;
    }
    double gbps = 3.0 * (double)n * sizeof(float) / median(t, 9) * 1e-9;
    printf("(a[%lld] = %g)\n", (long long)(n / 2), (double)a[n / 2]); /* keeps the loop */
    free(a);
    free(b);
    return gbps;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int64_t n = argc > 2 ? atoll(argv[2]) : 10000000;
    if (threads < 1 || n < 100) {
        fprintf(stderr, "usage: bench_optim [threads] [parameters >= 100]\n");
        return 2;
    }
    nb_set_num_threads(threads);
    nb_manual_seed(0);
    nb_tensor *p[4] = {nb_randn(NB_SHAPE(n - 90)), nb_zeros(NB_SHAPE(64)), nb_randn(NB_SHAPE(16)),
                       nb_zeros(NB_SHAPE(10))};
    for (int k = 0; k < 4; k++) {
        nb_keep(nb_set_requires_grad(p[k], true));
        nb_scope_begin();
        nb_backward(nb_sum(nb_square(p[k]), NB_ALL, false)); /* a .grad to step with */
        nb_scope_end();
    }
    enum { KINDS = 6 };
    const char *names[KINDS] = {"sgd", "sgd momentum", "adam", "adamw", "rmsprop", "adagrad"};
    /* floats moved per parameter: p, g and the states read; p and the states written */
    const int arrays[KINDS] = {3, 5, 7, 7, 5, 5};
    double gbps[KINDS];
    double floor_gbps = stream_gbps(n);
    int steps = (int)(5e6 / (double)n) + 1;
    for (int which = 0; which < KINDS; which++) {
        nb_optimizer *o = which == 0   ? nb_sgd(4, p, NULL)
                          : which == 1 ? nb_sgd(4, p, &(nb_sgd_opts){.lr = 0.01f, .momentum = 0.9f})
                          : which == 2 ? nb_adam(4, p, NULL)
                          : which == 3 ? nb_adamw(4, p, NULL)
                          : which == 4 ? nb_rmsprop(4, p, NULL)
                                       : nb_adagrad(4, p, NULL);
        if (!o) {
            fprintf(stderr, "bench_optim: %s\n", nb_error());
            return 1;
        }
        nb_optimizer_step(o); /* the first step touches the state for the first time */
        double t[9];
        for (int r = 0; r < 9; r++) {
            double t0 = now();
            for (int s = 0; s < steps; s++) nb_optimizer_step(o);
            t[r] = (now() - t0) / steps;
        }
        double mid = median(t, 9);
        gbps[which] = (double)n * arrays[which] * sizeof(float) / mid * 1e-9;
        printf("%-13s step over %lld parameters, %d thread%s: %9.1f us median, %5.1f GB/s, %.2fx the floor\n",
               names[which], (long long)n, threads, threads == 1 ? "" : "s", mid * 1e6, gbps[which],
               floor_gbps / gbps[which]);
        nb_optimizer_free(o);
    }
    printf("floor (a += s·b in place, 1 thread): %.1f GB/s\n", floor_gbps);
    printf("optim_gbps");
    for (int which = 0; which < KINDS; which++) printf(" %.1f", gbps[which]);
    printf(" floor %.1f\n", floor_gbps);
    for (int k = 0; k < 4; k++) nb_release(p[k]);
    return 0;
}
