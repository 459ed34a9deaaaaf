/* dp_sgd.c — differentially private SGD (Abadi et al., "Deep Learning with
 * Differential Privacy", 2016) on the seed problem of examples/seed.c.
 *
 * Each step bounds how much any one example can move the model: the
 * gradient of every example's loss (nb_per_sample_grads) is clipped to norm
 * at most C over all parameters together, the clipped gradients are summed,
 * Gaussian noise of standard deviation sigma·C is added, and the sum is
 * divided by the batch size before the SGD update. The noise multiplier
 * sigma, the sampling rate and the number of steps give the privacy
 * guarantee (epsilon, delta) through a privacy accountant, which this
 * example does not compute: it shows the mechanics, and that the network
 * still learns through clipping and noise.
 *
 *     dp_sgd [--epochs N]       (default 40)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"

#define BATCH 10
#define CLIP 1.0f   /* C: the largest norm an example's gradient may have */
#define SIGMA 0.5f  /* noise multiplier: the noise's std is SIGMA * CLIP */
#define LR 0.05f

/* One DP-SGD step on the batch (x, y); returns the batch's mean loss, or
 * NAN with a message. */
static float dp_step(nb_module *net, nb_tensor *x, nb_tensor *y, nb_generator *noise) {
    int n;
    nb_tensor **params = nb_module_parameters(net, &n);
    nb_tensor *g[8], *losses;
    if (n > 8 || nb_per_sample_grads(net, nb_mse_loss, x, y, g, &losses, NULL) != 0) return NAN;
    /* every example's gradient norm over all parameters: [BATCH] */
    nb_tensor *sq = nb_zeros(NB_SHAPE(BATCH));
    for (int i = 0; i < n; i++)
        sq = nb_add(sq, nb_sum(nb_reshape(nb_square(g[i]), NB_SHAPE(BATCH, -1)), NB_AXES(1), false));
    /* scale_k = min(1, C / ||g_k||): examples within the bound are untouched */
    nb_tensor *scale = nb_minimum_scalar(nb_rdiv_scalar(nb_sqrt(sq), CLIP), 1.0f);
    for (int i = 0; i < n; i++) {
        int64_t shape[NB_MAX_DIMS] = {BATCH};
        for (int d = 1; d < nb_ndim(g[i]); d++) shape[d] = 1;
        nb_tensor *clipped = nb_mul(g[i], nb_reshape(scale, nb_ndim(g[i]), shape));
        nb_tensor *sum = nb_sum(clipped, NB_AXES(0), false);
        nb_tensor *noisy = nb_add(sum, nb_normal(noise, 0.0f, SIGMA * CLIP, nb_ndim(sum), nb_shape(sum)));
        if (!noisy) return NAN;
        /* p -= lr * noisy / BATCH, in place: parameters are leaves */
        float *p = nb_data_mut(params[i]);
        const float *d = nb_data(noisy);
        for (int64_t k = 0; k < nb_numel(noisy); k++) p[k] -= LR * d[k] / BATCH;
    }
    return nb_item(nb_mean(losses, NB_ALL, false));
}

int main(int argc, char **argv) {
    int epochs = 40;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--epochs") == 0 && i + 1 < argc) epochs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: dp_sgd [--epochs N]\n");
            return 2;
        }
    }
    nb_manual_seed(0);
    nb_generator noise; /* a generator of its own, so the data stay those of seed.c */
    nb_generator_seed(&noise, 1);
    nb_scope_begin();
    nb_tensor *X = nb_rand(NB_SHAPE(100, 10));
    nb_tensor *y = nb_add_scalar(nb_matmul(X, nb_rand(NB_SHAPE(10, 1))), 0.5f);
    nb_module *net = nb_sequential(2, (nb_module *[]){nb_dense(10, "relu", 10),
                                                      nb_dense(1, "linear", 10)});
    int64_t order[100];
    float first = 0, last = 0;
    int status = 0;
    for (int epoch = 0; epoch < epochs && status == 0; epoch++) {
        nb_randperm(NULL, 100, order);
        double epoch_loss = 0;
        for (int b = 0; b < 100 / BATCH; b++) {
            nb_scope_begin();
            nb_tensor *idx = nb_empty(NB_SHAPE(BATCH));
            for (int i = 0; i < BATCH; i++) nb_data_mut(idx)[i] = (float)order[BATCH * b + i];
            float loss = dp_step(net, nb_index_select(X, 0, idx), nb_index_select(y, 0, idx), &noise);
            nb_scope_end();
            if (isnan(loss)) {
                fprintf(stderr, "dp_sgd: %s\n", nb_error() ? nb_error() : "loss is NaN");
                status = 1;
                break;
            }
            epoch_loss += loss / (100 / BATCH);
        }
        if (epoch == 0) first = (float)epoch_loss;
        last = (float)epoch_loss;
        if (epoch % 10 == 9) printf("epoch %3d  loss %.4f\n", epoch + 1, epoch_loss);
    }
    printf("DP-SGD (clip %.1f, noise multiplier %.1f): loss first epoch %.4f, last epoch %.4f\n",
           (double)CLIP, (double)SIGMA, (double)first, (double)last);
    nb_module_free(net);
    nb_scope_end();
    return status == 0 && last * 4 <= first ? 0 : 1;
}
