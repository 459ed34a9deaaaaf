/* bench_optim.c — one optimizer step over the parameters of the
 * Fashion-MNIST MLP 784-512-10 (406,528 floats), for RMSprop, Adam and
 * Adagrad with their default options: the update that dominated that
 * network's epoch when it ran as a scalar loop. Prints the median of 9
 * runs of 50 steps each, in microseconds per step and GB/s of state moved
 * (parameter, gradient and state arrays read, parameter and state written).
 *
 *   usage: bench_optim
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nabla.h"
#include "bench_util.h"

int main(void) {
    nb_manual_seed(0);
    nb_tensor *p[4] = {nb_randn(NB_SHAPE(784, 512)), nb_zeros(NB_SHAPE(512)), nb_randn(NB_SHAPE(512, 10)),
                       nb_zeros(NB_SHAPE(10))};
    int64_t total = 0;
    for (int k = 0; k < 4; k++) {
        nb_keep(nb_set_requires_grad(p[k], true));
        nb_scope_begin();
        nb_backward(nb_sum(nb_square(p[k]), NB_ALL, false)); /* a .grad to step with */
        nb_scope_end();
        total += nb_numel(p[k]);
    }
    const char *names[3] = {"rmsprop", "adam", "adagrad"};
    const int arrays[3] = {5, 7, 5}; /* floats moved per parameter: p, g, state(s) read; p, state(s) written */
    for (int which = 0; which < 3; which++) {
        nb_optimizer *o = which == 0 ? nb_rmsprop(4, p, NULL) : which == 1 ? nb_adam(4, p, NULL) : nb_adagrad(4, p, NULL);
        if (!o) {
            fprintf(stderr, "bench_optim: %s\n", nb_error());
            return 1;
        }
        double t[9];
        for (int r = 0; r < 9; r++) {
            double t0 = now();
            for (int s = 0; s < 50; s++) nb_optimizer_step(o);
            t[r] = (now() - t0) / 50;
        }
        double mid = median(t, 9);
        printf("%-8s step over %lld parameters: %7.1f us median, %.1f GB/s\n", names[which], (long long)total,
               mid * 1e6, (double)total * arrays[which] * sizeof(float) / mid * 1e-9);
        nb_optimizer_free(o);
    }
    for (int k = 0; k < 4; k++) nb_release(p[k]);
    return 0;
}
