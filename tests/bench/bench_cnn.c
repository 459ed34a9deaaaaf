/* bench_cnn.c — a training step of the Fashion-MNIST CNN of the PyTorch
 * peer (fmnist_cnn_torch.py): conv 3x3 1->32 pad 1, ReLU, max-pool 2,
 * conv 3x3 32->64 pad 1, ReLU, max-pool 2, Linear 3136->128, ReLU,
 * Linear 128->10, cross-entropy on the logits, Adam lr 1e-3, batch 64.
 * Each run trains one epoch over the first 64·steps training images (the
 * peer's third argument is the same step count) and the benchmark prints
 * the median over the runs of the milliseconds per step, wall clock and
 * CPU time of the process (the second tells little with 2 threads, and is
 * steadier than the first on a busy machine). Needs Debian's
 * dataset-fashion-mnist; says so and exits 0 without it.
 *
 *   usage: bench_cnn [threads] [steps] [runs]          (defaults 1 100 5)
 *   last line: cnn_ms_per_step <wall> <cpu>
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nabla.h"
#include "bench_fmnist.h"
#include "bench_util.h"

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1, steps = argc > 2 ? atoi(argv[2]) : 100;
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    if (threads < 1 || steps < 1 || steps > 843 || runs < 1 || runs > 100) {
        fprintf(stderr, "usage: bench_cnn [threads] [steps 1..843] [runs 1..100]\n");
        return 2;
    }
    nb_set_num_threads(threads);
    nb_manual_seed(0);
    nb_scope_begin();
    nb_tensor *x, *y;
    if (!bench_fmnist("bench_cnn", "train", &x, &y)) {
        nb_scope_end();
        return 0;
    }
    int64_t n = 64 * (int64_t)steps;
    x = nb_reshape(nb_slice(x, 0, 0, n, 1), NB_SHAPE(n, 1, 28, 28));
    y = nb_slice(y, 0, 0, n, 1);

    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_conv2d_layer(32, 3, 3, &(nb_conv2d_layer_opts){
        .padding = {1, 1}, .activation = "relu", .input_shape = {1, 28, 28}}));
    nb_model_add(model, nb_max_pool2d_layer(2, 2, NULL));
    nb_model_add(model, nb_conv2d_layer(64, 3, 3, &(nb_conv2d_layer_opts){
        .padding = {1, 1}, .activation = "relu", .input_shape = {32}}));
    nb_model_add(model, nb_max_pool2d_layer(2, 2, NULL));
    nb_model_add(model, nb_flatten_layer());
    nb_model_add(model, nb_linear(3136, 128));
    nb_model_add(model, nb_relu_layer());
    nb_model_add(model, nb_linear(128, 10));
    nb_model_set_loss(model, "cross_entropy", cross_entropy);
    int count;
    nb_tensor **params = nb_model_parameters(model, &count);
    nb_adam_opts ao = nb_adam_defaults();
    ao.lr = 1e-3f;
    if (nb_model_set_optimizer(model, nb_adam(count, params, &ao)) != 0) {
        fprintf(stderr, "bench_cnn: %s\n", nb_error());
        return 1;
    }
    nb_fit_opts fit = nb_fit_defaults();
    fit.batch_size = 64;
    fit.verbose = 0;
    double wall[100], cpu[100];
    for (int r = 0; r < runs; r++) {
        fit.initial_epoch = r;
        fit.epochs = r + 1;
        double w0 = now(), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
        nb_history *h = nb_model_fit(model, x, y, &fit);
        wall[r] = (now() - w0) / steps * 1e3;
        cpu[r] = (bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0) / steps * 1e3;
        if (!h) {
            fprintf(stderr, "bench_cnn: %s\n", nb_error());
            return 1;
        }
        nb_history_free(h);
    }
    printf("threads=%d steps=%d runs=%d\n", threads, steps, runs);
    printf("cnn_ms_per_step %.2f %.2f\n", median(wall, runs), median(cpu, runs));
    nb_model_free(model);
    nb_scope_end();
    return 0;
}
