/* bench_jacobian.c — the two strategies of nb_jacobian on a function with
 * few inputs and many outputs and on one with many inputs and few outputs:
 * y = tanh(A x) with A [m, n] fixed, so that the Jacobian is m × n. Reverse
 * mode takes m backwards (one per output element), forward mode n JVPs (one
 * per input element), and AUTO should pick the cheaper; this measures by
 * how much. The values are random (the time does not depend on them).
 *
 * Rows printed: for each shape, each strategy's time for one whole
 * Jacobian, the median over rounds (CPU time of the process, one thread).
 * A last row times the Hessian of sum(tanh(A x)), x in R^64 and A [256, 64],
 * by forward over reverse (64 JVPs of f and its backward) and by reverse
 * over reverse (one backward with create_graph, then 64 backwards through
 * the gradient's graph).
 *
 *   usage: bench_jacobian [wide] [rounds]        (defaults 1000 21)
 *   shapes: R^2 -> R^wide and R^wide -> R^2
 */
#include <stdio.h>
#include <stdlib.h>

#include "nabla.h"
#include "bench_util.h"

static nb_tensor *f_tanh_affine(nb_tensor *const *in, void *ctx) {
    return nb_tanh(nb_matmul(ctx, in[0]));
}

static const char *names[] = {"auto", "reverse", "forward"};

static nb_tensor *f_sum_tanh_affine(nb_tensor *const *in, void *ctx) {
    return nb_sum(nb_tanh(nb_matmul(ctx, in[0])), NB_ALL, false);
}

/* The median over rounds of the CPU time of one whole Jacobian (hessian
 * false) or Hessian of f at x with strategy s; negative on failure. */
static double median_cpu(bool hessian, nb_gradcheck_fn f, nb_tensor *a, nb_tensor *x, int s,
                         int rounds) {
    nb_functional_opts o = {.strategy = s == 0   ? NB_JACOBIAN_AUTO
                                        : s == 1 ? NB_JACOBIAN_REVERSE
                                                 : NB_JACOBIAN_FORWARD};
    double t[101];
    for (int r = 0; r < rounds; r++) {
        double t0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
        nb_scope_begin();
        nb_tensor *out;
        int rc = hessian ? nb_hessian(f, a, 1, &x, &out, &o) : nb_jacobian(f, a, 1, &x, &out, &o);
        nb_scope_end();
        if (rc != 0) {
            fprintf(stderr, "bench_jacobian: %s\n", nb_error());
            return -1;
        }
        t[r] = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - t0;
    }
    return median(t, rounds);
}

int main(int argc, char **argv) {
    int wide = argc > 1 ? atoi(argv[1]) : 1000, rounds = argc > 2 ? atoi(argv[2]) : 21;
    if (wide < 2 || rounds < 1 || rounds > 101) {
        fprintf(stderr, "usage: bench_jacobian [wide >= 2] [rounds]\n");
        return 1;
    }
    nb_set_num_threads(1);
    nb_manual_seed(1);
    printf("bench_jacobian: y = tanh(A x), median of %d rounds, CPU time, 1 thread\n", rounds);
    for (int shape = 0; shape < 2; shape++) {
        int m = shape == 0 ? wide : 2, n = shape == 0 ? 2 : wide;
        nb_tensor *a = nb_keep(nb_uniform(NULL, -1, 1, NB_SHAPE(m, n)));
        nb_tensor *x = nb_keep(nb_uniform(NULL, -1, 1, NB_SHAPE(n)));
        double med[3];
        for (int s = 0; s < 3; s++)
            if ((med[s] = median_cpu(false, f_tanh_affine, a, x, s, rounds)) < 0) return 1;
        printf("  R^%d -> R^%d:", n, m);
        for (int s = 0; s < 3; s++) printf("  %s %8.1f us", names[s], med[s] * 1e6);
        printf("   reverse/forward %.3g\n", med[1] / med[2]);
        nb_release(a);
        nb_release(x);
    }
    nb_tensor *a = nb_keep(nb_uniform(NULL, -1, 1, NB_SHAPE(256, 64)));
    nb_tensor *x = nb_keep(nb_uniform(NULL, -1, 1, NB_SHAPE(64)));
    double med[3];
    for (int s = 0; s < 3; s++)
        if ((med[s] = median_cpu(true, f_sum_tanh_affine, a, x, s, rounds)) < 0) return 1;
    printf("  Hessian of sum(tanh(A x)), R^64 -> R, A [256, 64]:");
    for (int s = 0; s < 3; s++) printf("  %s %8.1f us", names[s], med[s] * 1e6);
    printf("   reverse/forward %.3g\n", med[1] / med[2]);
    nb_release(a);
    nb_release(x);
    return 0;
}
