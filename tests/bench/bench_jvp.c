/* bench_jvp.c — what forward mode costs on the network of bench_mlp
 * (784-H-10 ReLU MLP, softmax cross-entropy, batch 64): the time of one
 * plain forward against one nb_jvp, which computes the same forward and
 * its directional derivative in one pass. The data are random (the time
 * does not depend on the values), so no data set is needed.
 *
 * Rows printed, each the median over rounds of the mean step of a round:
 *   forward, no grad       the loss alone, grad mode off
 *   forward, recording     the loss with the parameters requiring grad (a training forward)
 *   forward + backward     that and nb_grad of the parameters, for scale
 *   jvp along x            nb_jvp, tangent on the input batch only, nothing requiring grad
 *   jvp along all          nb_jvp, tangents on the input and all four parameters, likewise
 *   hvp                    nb_jvp of nb_grad (forward over reverse): H·v for the parameters
 * The ratios to "forward, no grad" are what the forward-mode rules cost.
 *
 *   usage: bench_jvp [threads] [H] [rounds]        (defaults 1 64 7)
 */
#include <stdio.h>
#include <stdlib.h>

#include "nabla.h"
#include "bench_util.h"

#define BATCH 64
#define ITERS 50

typedef struct net {
    nb_tensor *labels;
} net;

/* inputs: x [B,784], W1 [784,H], b1 [H], W2 [H,10], b2 [10] */
static nb_tensor *loss_of(nb_tensor *const *in, const net *n) {
    nb_tensor *h = nb_relu(nb_add(nb_matmul(in[0], in[1]), in[2]));
    nb_tensor *logits = nb_add(nb_matmul(h, in[3]), in[4]);
    return nb_cross_entropy_loss(logits, n->labels, NB_REDUCE_MEAN);
}

static int f_loss(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    out[0] = loss_of(in, ctx);
    return out[0] ? 0 : -1;
}

/* the gradient of the loss in the four parameters */
static int f_grad(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    nb_tensor *loss = loss_of(in, ctx);
    return nb_grad(1, &loss, NULL, 4, in + 1, out, NULL);
}

typedef enum { PLAIN, RECORDING, BACKWARD, JVP_X, JVP_ALL, HVP, NKINDS } kind;
static const char *names[NKINDS] = {"forward, no grad", "forward, recording", "forward + backward",
                                    "jvp along x", "jvp along all", "hvp (jvp of grad)"};

static int step(kind k, nb_tensor **in, nb_tensor **v, net *n) {
    nb_tensor *out[4], *tan[4];
    int rc = 0;
    nb_scope_begin();
    switch (k) {
    case PLAIN: {
        bool was = nb_set_grad_enabled(false);
        rc = loss_of(in, n) ? 0 : -1;
        nb_set_grad_enabled(was);
        break;
    }
    case RECORDING: rc = loss_of(in, n) ? 0 : -1; break;
    case BACKWARD: {
        nb_tensor *loss = loss_of(in, n);
        rc = nb_grad(1, &loss, NULL, 4, in + 1, out, NULL);
        break;
    }
    case JVP_X:
        rc = nb_jvp(f_loss, n, 5, in, (nb_tensor *[]){v[0], NULL, NULL, NULL, NULL}, 1, out, tan);
        break;
    case JVP_ALL: rc = nb_jvp(f_loss, n, 5, in, v, 1, out, tan); break;
    case HVP:
        rc = nb_jvp(f_grad, n, 5, in, (nb_tensor *[]){NULL, v[1], v[2], v[3], v[4]}, 4, out, tan);
        break;
    default: break;
    }
    nb_scope_end();
    return rc;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1, hidden = argc > 2 ? atoi(argv[2]) : 64;
    int rounds = argc > 3 ? atoi(argv[3]) : 7;
    if (threads < 1 || hidden < 1 || rounds < 1 || rounds > 100) {
        fprintf(stderr, "usage: bench_jvp [threads] [H] [rounds]\n");
        return 2;
    }
    nb_set_num_threads(threads);
    nb_manual_seed(0);
    nb_scope_begin();
    int64_t shapes[5][2] = {{BATCH, 784}, {784, hidden}, {hidden, 1}, {hidden, 10}, {10, 1}};
    int ndims[5] = {2, 2, 1, 2, 1};
    nb_tensor *in[5], *v[5];
    for (int i = 0; i < 5; i++) {
        in[i] = nb_uniform(NULL, -0.1f, 0.1f, ndims[i], shapes[i]);
        v[i] = nb_uniform(NULL, -1, 1, ndims[i], shapes[i]);
    }
    net n = {nb_uniform(NULL, 0, 10, NB_SHAPE(BATCH))};
    float *lab = nb_data_mut(n.labels);
    for (int i = 0; i < BATCH; i++) lab[i] = (float)(int)lab[i];

    /* Rounds interleave the kinds, so that a busy moment of a shared
     * machine weighs on all of them; with one thread, the process's CPU
     * time is steadier than the wall clock. */
    static double t[NKINDS][100];
    for (int r = -1; r < rounds; r++) /* round -1 warms the free lists */
        for (int k = 0; k < NKINDS; k++) {
            /* the jvp rows run without requires_grad, like the plain
             * forward: they measure the tangents alone */
            bool params = k == RECORDING || k == BACKWARD || k == HVP;
            for (int i = 1; i < 5; i++) nb_set_requires_grad(in[i], params);
            double t0 = threads == 1 ? bench_clock(CLOCK_PROCESS_CPUTIME_ID) : now();
            for (int it = 0; it < ITERS; it++)
                if (step(k, in, v, &n) != 0) {
                    fprintf(stderr, "bench_jvp: %s: %s\n", names[k], nb_error());
                    return 1;
                }
            double t1 = threads == 1 ? bench_clock(CLOCK_PROCESS_CPUTIME_ID) : now();
            if (r >= 0) t[k][r] = (t1 - t0) / ITERS;
        }
    printf("bench_jvp: 784-%d-10 MLP, batch %d, %d thread(s), median of %d rounds of %d steps "
           "(%s time)\n", hidden, BATCH, threads, rounds, ITERS, threads == 1 ? "CPU" : "wall");
    double base = median(t[PLAIN], rounds);
    for (int k = 0; k < NKINDS; k++) {
        double m = median(t[k], rounds);
        printf("  %-20s %8.1f us   %.2fx\n", names[k], m * 1e6, m / base);
    }
    nb_scope_end();
    return 0;
}
