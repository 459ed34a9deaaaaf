/* bench_checkpoint.c — what gradient checkpointing buys and costs: a
 * 64-layer MLP (Dense relu layers, mean squared error, SGD) trained plainly
 * and with nb_sequential_checkpoint at 4, 8 and 16 segments, in two shapes:
 * width 1024 at batch 64, where a layer's weight gradient (4 MiB) dwarfs
 * its activations (256 KiB each), and width 256 at batch 1024, where the
 * activations (1 MiB each) dwarf the weight gradient (256 KiB) and the
 * square-root law of checkpointing shows.
 *
 * Memory is measured through the allocation hook: every step starts from
 * empty caches (nb_empty_cache), and nabla then keeps each freed block for
 * the next tensor of its size, so the bytes it asks the system for during
 * the step are the step's high-water mark of tensors alive at once, the
 * parameters and their .grad (made by an earlier step) left out. The bytes
 * are split by block size: blocks of a weight's size are the new weight
 * gradients (nothing else in the step has that size), the rest are mostly
 * activations. Backward runs with grads_when_ready: each parameter's new
 * gradient is added into its .grad and freed as soon as it is final
 * (without it the engine holds all of them until the backward has
 * succeeded, a model's parameters' worth, 256 MiB at width 1024, with or
 * without checkpointing). Before timing, the gradients of one batch are
 * computed plainly and with 8 segments (backward with and without
 * grads_when_ready) from the same weights and compared bit for bit. Time is
 * the median of a few steps, wall and CPU: the CPU time of the process is
 * steadier on a shared machine. The last line holds the figures in
 * key=value form (act_ for the second shape).
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

typedef struct config {
    int width, batch;
} config;

typedef struct counter {
    int64_t bytes, weight_bytes; /* all, and in blocks of a weight's size */
    size_t weight_block;
} counter;

static bool count_bytes(size_t size, void *user) {
    counter *c = user;
    c->bytes += (int64_t)size;
    /* a weight's storage: its floats and a header of at most 64 bytes */
    if (size >= c->weight_block && size <= c->weight_block + 64) c->weight_bytes += (int64_t)size;
    return true;
}

static nb_tensor *forward(nb_module *net, nb_tensor *x, int segments) {
    return segments ? nb_sequential_checkpoint(net, segments, x) : nb_module_forward(net, x);
}

/* One training step; segments 0 means no checkpointing. */
static int step(nb_module *net, nb_optimizer *opt, nb_tensor *x, nb_tensor *y, int segments) {
    nb_scope_begin();
    int rc = nb_backward_ex(nb_mse_loss(forward(net, x, segments), y, NB_REDUCE_MEAN), NULL,
                            &(nb_backward_opts){.grads_when_ready = true});
    if (rc == 0) {
        nb_optimizer_step(opt);
        nb_optimizer_zero_grad(opt);
    }
    nb_scope_end();
    return rc;
}

/* The parameters' gradients for one batch, copied out. */
static float *gradients(nb_module *net, nb_tensor *x, nb_tensor *y, int segments, bool when_ready,
                        int64_t total) {
    int n;
    nb_tensor **p = nb_module_parameters(net, &n);
    float *out = malloc((size_t)total * sizeof *out);
    nb_scope_begin();
    bool ok = out && nb_backward_ex(nb_mse_loss(forward(net, x, segments), y, NB_REDUCE_MEAN), NULL,
                                    &(nb_backward_opts){.grads_when_ready = when_ready}) == 0;
    nb_scope_end();
    for (int64_t i = 0, off = 0; ok && i < n; off += nb_numel(p[i]), i++) {
        memcpy(out + off, nb_data(nb_grad_of(p[i])), (size_t)nb_numel(p[i]) * sizeof *out);
        nb_zero_grad(p[i]);
    }
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

#define NSETTINGS 4
static const int settings[NSETTINGS] = {0, 4, 8, 16};

typedef struct result {
    bool bitwise;
    double mib[NSETTINGS], weight_mib[NSETTINGS], sec[NSETTINGS], cpu[NSETTINGS];
} result;

static bool measure(config cf, int steps, result *res) {
    nb_manual_seed(0);
    nb_module *layers[LAYERS];
    for (int i = 0; i < LAYERS; i++)
        layers[i] = nb_dense(cf.width, i + 1 < LAYERS ? "relu" : "linear", cf.width);
    nb_module *net = nb_sequential(LAYERS, layers);
    nb_tensor *x = nb_keep(nb_randn(NB_SHAPE(cf.batch, cf.width)));
    nb_tensor *y = nb_keep(nb_randn(NB_SHAPE(cf.batch, cf.width)));
    int n;
    nb_tensor **params = net ? nb_module_parameters(net, &n) : NULL;
    nb_optimizer *opt = params ? nb_sgd(n, params, &(nb_sgd_opts){.lr = 1e-3f}) : NULL;
    bool ok = opt && x && y;
    int64_t total = ok ? nb_module_num_weights(net) : 0;

    /* the same gradients, bit for bit, from the same weights: plain, and
     * with 8 segments at the end of backward and as soon as ready */
    float *g[3] = {0};
    for (int k = 0; k < 3 && ok; k++) ok = (g[k] = gradients(net, x, y, k ? 8 : 0, k == 2, total)) != NULL;
    res->bitwise = ok && memcmp(g[0], g[1], (size_t)total * sizeof(float)) == 0 &&
                   memcmp(g[0], g[2], (size_t)total * sizeof(float)) == 0;
    for (int k = 0; k < 3; k++) free(g[k]);
    if (ok)
        printf("%d Dense(%d) layers, batch %d, %d threads; gradients with 8 segments %s the plain "
               "ones\n", LAYERS, cf.width, cf.batch, nb_get_num_threads(),
               res->bitwise ? "bitwise equal to" : "DIFFERENT from");

    for (int s = 0; s < NSETTINGS && ok; s++) {
        int segments = settings[s];
        ok = step(net, opt, x, y, segments) == 0; /* warm-up */
        double t[50], c[50];
        counter peak = {0};
        for (int k = 0; k < steps && ok; k++) {
            counter bytes = {.weight_block = (size_t)cf.width * (size_t)cf.width * sizeof(float)};
            nb_empty_cache();
            nb_set_alloc_hook(count_bytes, &bytes);
            double t0 = now(), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
            ok = step(net, opt, x, y, segments) == 0;
            t[k] = now() - t0;
            c[k] = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
            nb_set_alloc_hook(NULL, NULL);
            if (bytes.bytes > peak.bytes) peak = bytes;
        }
        if (!ok) break;
        res->mib[s] = (double)peak.bytes / (1 << 20);
        res->weight_mib[s] = (double)peak.weight_bytes / (1 << 20);
        res->sec[s] = median(t, steps);
        res->cpu[s] = median(c, steps);
        char label[24] = "plain";
        if (segments) snprintf(label, sizeof label, "%d segments", segments);
        printf("%-12s step memory %6.1f MiB (%.2fx plain; weight gradients %5.1f, the rest %5.1f); "
               "median of %d: %.3f s (%.2fx plain), CPU %.3f s (%.2fx)\n",
               label, res->mib[s], res->mib[s] / res->mib[0], res->weight_mib[s],
               res->mib[s] - res->weight_mib[s], steps, res->sec[s], res->sec[s] / res->sec[0],
               res->cpu[s], res->cpu[s] / res->cpu[0]);
    }
    if (!ok) fprintf(stderr, "bench_checkpoint: %s\n", nb_error());
    nb_optimizer_free(opt);
    nb_module_free(net);
    nb_release(x);
    nb_release(y);
    return ok;
}

int main(int argc, char **argv) {
    int steps = 3;
    if (argc == 3 && strcmp(argv[1], "--steps") == 0) steps = atoi(argv[2]);
    if (steps < 1 || steps > 50) steps = 3;
    const config configs[2] = {{1024, 64}, {256, 1024}};
    result r[2] = {0};
    for (int c = 0; c < 2; c++)
        if (!measure(configs[c], steps, &r[c])) return 1;
    /* the width-1024 figures under their old keys, then the batch-1024 ones */
    printf("bench_checkpoint layers=%d width=%d batch=%d bitwise=%d plain_mib=%.1f ckpt4_mib=%.1f "
           "ckpt8_mib=%.1f ckpt16_mib=%.1f mem_ratio=%.2f plain_grad_mib=%.1f ckpt8_grad_mib=%.1f "
           "plain_s=%.3f ckpt8_s=%.3f time_ratio=%.2f plain_cpu_s=%.3f ckpt8_cpu_s=%.3f "
           "cpu_ratio=%.2f act_width=%d act_batch=%d act_bitwise=%d act_plain_mib=%.1f "
           "act_ckpt4_mib=%.1f act_ckpt8_mib=%.1f act_ckpt16_mib=%.1f act_mem_ratio=%.2f "
           "act_plain_cpu_s=%.3f act_ckpt8_cpu_s=%.3f act_cpu_ratio=%.2f\n",
           LAYERS, configs[0].width, configs[0].batch, r[0].bitwise, r[0].mib[0], r[0].mib[1],
           r[0].mib[2], r[0].mib[3], r[0].mib[2] / r[0].mib[0], r[0].weight_mib[0],
           r[0].weight_mib[2], r[0].sec[0], r[0].sec[2], r[0].sec[2] / r[0].sec[0], r[0].cpu[0],
           r[0].cpu[2], r[0].cpu[2] / r[0].cpu[0], configs[1].width, configs[1].batch,
           r[1].bitwise, r[1].mib[0], r[1].mib[1], r[1].mib[2], r[1].mib[3],
           r[1].mib[2] / r[1].mib[0], r[1].cpu[0], r[1].cpu[2], r[1].cpu[2] / r[1].cpu[0]);
    return r[0].bitwise && r[1].bitwise ? 0 : 1;
}
