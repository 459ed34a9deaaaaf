/* bench_conv.c — the convolutional part of the Fashion-MNIST CNN
 * (../shared/bench/fmnist_cnn_torch.py) at batch 64, forward and backward:
 *
 *   x [64,1,28,28] -> conv 3x3 1->32 pad 1 -> ReLU -> max-pool 2
 *                  -> conv 3x3 32->64 pad 1 -> ReLU -> max-pool 2 -> [64,64,7,7]
 *
 * the backward reaching both convolutions' weights and biases (not x, as
 * in training), graph recording and scope cleanup included. Also times the
 * second convolution alone (x [64,32,14,14] requiring grad, so its input
 * gradient is computed too), the heaviest op of the network.
 *
 * Prints conv_stack_fwd_bwd_ms and conv2_fwd_bwd_ms, each the median of 15
 * runs of 10 with its GFLOP/s (2 flops per multiply-add of the convolutions
 * alone). The thread count is argv[1] (default: one per CPU). The PyTorch
 * peer is tests/bench/conv_torch.py.
 */
#define _POSIX_C_SOURCE 200809L

#include "nabla.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { RUNS = 15, REPS = 10 };

static nb_tensor *x, *h, *w1, *b1, *w2, *b2;
static const nb_conv2d_opts pad1 = {.padding = {1, 1}};

static int stack_step(void) {
    nb_scope_begin();
    nb_tensor *a = nb_max_pool2d(nb_relu(nb_conv2d(x, w1, b1, &pad1)), 2, 2, NULL);
    nb_tensor *y = nb_max_pool2d(nb_relu(nb_conv2d(a, w2, b2, &pad1)), 2, 2, NULL);
    nb_tensor *in[4] = {w1, b1, w2, b2}, *g[4];
    int rc = y ? nb_grad(1, &y, (nb_tensor *[]){nb_ones_like(y)}, 4, in, g, NULL) : -1;
    nb_scope_end();
    return rc;
}

static int conv2_step(void) {
    nb_scope_begin();
    nb_tensor *y = nb_conv2d(h, w2, b2, &pad1);
    nb_tensor *in[3] = {h, w2, b2}, *g[3];
    int rc = y ? nb_grad(1, &y, (nb_tensor *[]){nb_ones_like(y)}, 3, in, g, NULL) : -1;
    nb_scope_end();
    return rc;
}

static double median_ms(int (*step)(void)) {
    double t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        double t0 = now();
        for (int k = 0; k < REPS; k++) step();
        t[r] = (now() - t0) / REPS;
    }
    return median(t, RUNS) * 1e3;
}

int main(int argc, char **argv) {
    nb_set_num_threads(argc > 1 ? atoi(argv[1]) : 0);
    nb_manual_seed(1);
    x = nb_keep(nb_rand(NB_SHAPE(64, 1, 28, 28)));
    h = nb_keep(nb_set_requires_grad(nb_rand(NB_SHAPE(64, 32, 14, 14)), true));
    w1 = nb_keep(nb_set_requires_grad(nb_uniform(NULL, -0.3f, 0.3f, NB_SHAPE(32, 1, 3, 3)), true));
    b1 = nb_keep(nb_set_requires_grad(nb_zeros(NB_SHAPE(32)), true));
    w2 = nb_keep(nb_set_requires_grad(nb_uniform(NULL, -0.06f, 0.06f, NB_SHAPE(64, 32, 3, 3)), true));
    b2 = nb_keep(nb_set_requires_grad(nb_zeros(NB_SHAPE(64)), true));
    if (stack_step() != 0 || conv2_step() != 0) {
        fprintf(stderr, "bench_conv: %s\n", nb_error() ? nb_error() : "setup failed");
        return 1;
    }
    /* multiply-adds: conv1 forward and weight gradient; conv2 forward and
     * weight gradient, plus its input gradient in conv2 alone */
    double c1 = 64.0 * 32 * 784 * 9, c2 = 64.0 * 64 * 196 * 288;
    double ms = median_ms(stack_step);
    printf("conv_stack_fwd_bwd_ms %.3f %.1f\n", ms, 2 * (2 * c1 + 3 * c2) / ms / 1e6);
    ms = median_ms(conv2_step);
    printf("conv2_fwd_bwd_ms %.3f %.1f\n", ms, 2 * 3 * c2 / ms / 1e6);
    nb_tensor *all[] = {x, h, w1, b1, w2, b2};
    for (int i = 0; i < 6; i++) nb_release(all[i]);
    return 0;
}
