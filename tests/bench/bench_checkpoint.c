/* bench_checkpoint.c — what gradient checkpointing buys and costs: a
 * 64-layer MLP of width 1024 (Dense relu layers, batch 64, mean squared
 * error, SGD) trained plainly and with nb_sequential_checkpoint at several
 * segment counts.
 *
 * Memory is measured through the allocation hook: every step starts from
 * empty caches (nb_empty_cache), and nabla then keeps each freed block for
 * the next tensor of its size, so the bytes it asks the system for during
 * the step are the step's high-water mark of tensors alive at once, the
 * parameters and their .grad (made by an earlier step) left out. Backward
 * runs with grads_when_ready: each parameter's new gradient is added into
 * its .grad and freed as soon as it is final (without it the engine holds
 * all of them until the backward has succeeded, a model's parameters'
 * worth, 256 MiB here, with or without checkpointing). Time is
 * the median wall time of a few steps. Before timing, the gradients of one
 * batch are computed both ways from the same weights and compared bit for
 * bit. Wall and CPU time are both given: the CPU time of the process is
 * steadier on a shared machine. The last line holds the figures in
 * key=value form.
 *
 *     bench_checkpoint [--steps N]     (default 3 timed steps per setting)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "nabla.h"

#define LAYERS 64
#define WIDTH 1024
#define BATCH 64

static bool count_bytes(size_t size, void *user) {
    *(int64_t *)user += (int64_t)size;
    return true;
}

/* One training step; segments 0 means no checkpointing. */
static int step(nb_module *net, nb_optimizer *opt, nb_tensor *x, nb_tensor *y, int segments) {
    nb_scope_begin();
    nb_tensor *pred = segments ? nb_sequential_checkpoint(net, segments, x) : nb_module_forward(net, x);
    int rc = nb_backward_ex(nb_mse_loss(pred, y, NB_REDUCE_MEAN), NULL,
                            &(nb_backward_opts){.grads_when_ready = true});
    if (rc == 0) {
        nb_optimizer_step(opt);
        nb_optimizer_zero_grad(opt);
    }
    nb_scope_end();
    return rc;
}

/* The parameters' gradients for one batch, copied out. */
static float *gradients(nb_module *net, nb_tensor *x, nb_tensor *y, int segments, int64_t total) {
    int n;
    nb_tensor **p = nb_module_parameters(net, &n);
    float *out = malloc((size_t)total * sizeof *out);
    nb_scope_begin();
    nb_tensor *pred = segments ? nb_sequential_checkpoint(net, segments, x) : nb_module_forward(net, x);
    bool ok = out && nb_backward(nb_mse_loss(pred, y, NB_REDUCE_MEAN)) == 0;
    nb_scope_end();
    for (int i = 0, off = 0; ok && i < n; off += (int)nb_numel(p[i]), i++) {
        memcpy(out + off, nb_data(nb_grad_of(p[i])), (size_t)nb_numel(p[i]) * sizeof *out);
        nb_zero_grad(p[i]);
    }
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

int main(int argc, char **argv) {
    int steps = 3;
    if (argc == 3 && strcmp(argv[1], "--steps") == 0) steps = atoi(argv[2]);
    if (steps < 1 || steps > 50) steps = 3;
    nb_manual_seed(0);
    nb_module *layers[LAYERS];
    for (int i = 0; i < LAYERS; i++) layers[i] = nb_dense(WIDTH, i + 1 < LAYERS ? "relu" : "linear", WIDTH);
    nb_module *net = nb_sequential(LAYERS, layers);
    nb_tensor *x = nb_keep(nb_randn(NB_SHAPE(BATCH, WIDTH)));
    nb_tensor *y = nb_keep(nb_randn(NB_SHAPE(BATCH, WIDTH)));
    int n;
    nb_tensor **params = net ? nb_module_parameters(net, &n) : NULL;
    nb_optimizer *opt = params ? nb_sgd(n, params, &(nb_sgd_opts){.lr = 1e-3f}) : NULL;
    if (!opt || !x || !y) {
        fprintf(stderr, "bench_checkpoint: %s\n", nb_error());
        return 1;
    }
    int64_t total = nb_module_num_weights(net);

    /* the same gradients, bit for bit, from the same weights */
    float *plain = gradients(net, x, y, 0, total), *ckpt = gradients(net, x, y, 8, total);
    if (!plain || !ckpt) {
        fprintf(stderr, "bench_checkpoint: %s\n", nb_error());
        return 1;
    }
    bool bitwise = memcmp(plain, ckpt, (size_t)total * sizeof *plain) == 0;
    free(plain);
    free(ckpt);
    printf("%d Dense(%d) layers, batch %d, %d threads; gradients with 8 segments %s the plain ones\n",
           LAYERS, WIDTH, BATCH, nb_get_num_threads(), bitwise ? "bitwise equal to" : "DIFFERENT from");

    const int settings[] = {0, 8, 16};
    double mb[3], sec[3], cpu[3];
    for (int s = 0; s < 3; s++) {
        int segments = settings[s];
        if (step(net, opt, x, y, segments) != 0) { /* warm-up */
            fprintf(stderr, "bench_checkpoint: %s\n", nb_error());
            return 1;
        }
        double t[50], c[50];
        int64_t peak = 0;
        for (int k = 0; k < steps; k++) {
            int64_t bytes = 0;
            nb_empty_cache();
            nb_set_alloc_hook(count_bytes, &bytes);
            double t0 = now(), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
            int rc = step(net, opt, x, y, segments);
            t[k] = now() - t0;
            c[k] = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
            nb_set_alloc_hook(NULL, NULL);
            if (rc != 0) {
                fprintf(stderr, "bench_checkpoint: %s\n", nb_error());
                return 1;
            }
            if (bytes > peak) peak = bytes;
        }
        mb[s] = (double)peak / (1 << 20);
        sec[s] = median(t, steps);
        cpu[s] = median(c, steps);
        char label[24] = "plain";
        if (segments) snprintf(label, sizeof label, "%d segments", segments);
        printf("%-12s step memory %6.1f MiB (%.2fx plain); median of %d: %.3f s (%.2fx plain), "
               "CPU %.3f s (%.2fx)\n",
               label, mb[s], mb[s] / mb[0], steps, sec[s], sec[s] / sec[0], cpu[s], cpu[s] / cpu[0]);
    }
    printf("bench_checkpoint layers=%d width=%d batch=%d bitwise=%d plain_mib=%.1f ckpt8_mib=%.1f "
           "mem_ratio=%.2f plain_s=%.3f ckpt8_s=%.3f "
           "time_ratio=%.2f plain_cpu_s=%.3f ckpt8_cpu_s=%.3f cpu_ratio=%.2f\n",
           LAYERS, WIDTH, BATCH, bitwise, mb[0], mb[1], mb[1] / mb[0], sec[0],
           sec[1], sec[1] / sec[0], cpu[0], cpu[1], cpu[1] / cpu[0]);
    nb_optimizer_free(opt);
    nb_module_free(net);
    nb_release(x);
    nb_release(y);
    return bitwise ? 0 : 1;
}
