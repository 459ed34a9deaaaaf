/* bench_seed.c — the founding network's training speed: X 100x10 uniform,
 * y = X·w + 0.5, Dense(10, relu) -> Dense(1), SGD lr 0.01, MSE, 100 epochs
 * of batch 10 (1000 steps), the same work as the PyTorch peer
 * (seed_torch.py). Two forms: the Keras-style nb_model_fit, and the
 * explicit loop of the README. Prints the median over 7 runs of each, in
 * wall-clock time and in the CPU time of the process: on a shared machine
 * the first also counts the time other processes held the CPU, the second
 * does not.
 *
 *   usage: bench_seed [threads] [anomaly]
 *   last line: seed_us_per_step <fit> <loop>   (wall clock)
 *
 * With "anomaly", the runs are made with anomaly mode on, for its cost:
 * every op's output is scanned for NaN and infinity.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla.h"
#include "bench_util.h"

/* one training run with nb_model_fit; returns wall-clock seconds, *cpu the
 * CPU seconds, *loss the last epoch's loss */
static double run_fit(float *loss, double *cpu) {
    nb_manual_seed(0);
    nb_scope_begin();
    nb_tensor *X = nb_rand(NB_SHAPE(100, 10));
    nb_tensor *y = nb_add_scalar(nb_matmul(X, nb_rand(NB_SHAPE(10, 1))), 0.5f);
    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_dense(10, "relu", 10));
    nb_model_add(model, nb_dense(1, "linear", 0));
    nb_model_compile(model, "sgd", "mean_squared_error", NULL);
    nb_fit_opts fit = nb_fit_defaults();
    fit.epochs = 100;
    fit.batch_size = 10;
    fit.verbose = 0;
    double t0 = now(), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
    nb_history *h = nb_model_fit(model, X, y, &fit);
    double dt = now() - t0;
    *cpu = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
    *loss = h ? nb_history_get(h, "loss")[nb_history_epochs(h) - 1] : -1;
    nb_history_free(h);
    nb_model_free(model);
    nb_scope_end();
    return dt;
}

/* the same with the explicit loop: forward, loss, backward, step, zero_grad */
static double run_loop(float *loss, double *cpu) {
    nb_manual_seed(0);
    nb_scope_begin();
    nb_tensor *X = nb_rand(NB_SHAPE(100, 10));
    nb_tensor *y = nb_add_scalar(nb_matmul(X, nb_rand(NB_SHAPE(10, 1))), 0.5f);
    nb_module *net = nb_sequential(2, (nb_module *[]){nb_dense(10, "relu", 10), nb_dense(1, "linear", 10)});
    int np;
    nb_tensor **params = nb_module_parameters(net, &np);
    nb_optimizer *opt = nb_sgd(np, params, NULL);
    int64_t perm[100];
    double t0 = now(), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
    for (int epoch = 0; epoch < 100; epoch++) {
        nb_randperm(NULL, 100, perm);
        double total = 0;
        for (int b = 0; b < 10; b++) {
            nb_scope_begin();
            nb_tensor *idx = nb_empty(NB_SHAPE(10));
            for (int i = 0; i < 10; i++) nb_data_mut(idx)[i] = (float)perm[b * 10 + i];
            nb_tensor *pred = nb_module_forward(net, nb_index_select(X, 0, idx));
            nb_tensor *l = nb_mse_loss(pred, nb_index_select(y, 0, idx), NB_REDUCE_MEAN);
            nb_backward(l);
            nb_optimizer_step(opt);
            nb_optimizer_zero_grad(opt);
            total += nb_item(l);
            nb_scope_end();
        }
        *loss = (float)(total / 10);
    }
    double dt = now() - t0;
    *cpu = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
    nb_optimizer_free(opt);
    nb_module_free(net);
    nb_scope_end();
    return dt;
}

int main(int argc, char **argv) {
    nb_set_num_threads(argc > 1 ? atoi(argv[1]) : 1);
    bool anomaly = argc > 2 && !strcmp(argv[2], "anomaly");
    nb_set_detect_anomaly(anomaly);
    if (anomaly) printf("anomaly mode on\n");
    double fit[7], loop[7], fit_cpu[7], loop_cpu[7];
    float fit_loss = 0, loop_loss = 0;
    for (int r = 0; r < 7; r++) {
        fit[r] = run_fit(&fit_loss, &fit_cpu[r]);
        loop[r] = run_loop(&loop_loss, &loop_cpu[r]);
    }
    double f = median(fit, 7), l = median(loop, 7), fc = median(fit_cpu, 7), lc = median(loop_cpu, 7);
    printf("seed fit:  final epoch loss %.5f; train %.1f ms; %.1f us/step (CPU time %.1f us/step)\n",
           (double)fit_loss, f * 1e3, f / 1000 * 1e6, fc / 1000 * 1e6);
    printf("seed loop: final epoch loss %.5f; train %.1f ms; %.1f us/step (CPU time %.1f us/step)\n",
           (double)loop_loss, l * 1e3, l / 1000 * 1e6, lc / 1000 * 1e6);
    printf("seed_us_per_step %.2f %.2f\n", f / 1000 * 1e6, l / 1000 * 1e6);
    return 0;
}
