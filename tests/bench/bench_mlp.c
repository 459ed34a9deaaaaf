/* bench_mlp.c — the Fashion-MNIST MLP of the PyTorch peer
 * (fmnist_mlp_torch.py): 784-H-10 ReLU MLP, softmax cross-entropy on the
 * logits, RMSprop lr 1e-3 alpha 0.9, batch 64, the first 54,000 training
 * images reshuffled every epoch. Prints the seconds of each epoch, their
 * median, and the test accuracy, as the peer does. Needs Debian's
 * dataset-fashion-mnist; says so and exits 0 without it (a benchmark, not
 * a test).
 *
 *   usage: bench_mlp [threads] [H] [epochs]        (defaults 1 64 3)
 *   last line: mlp_s_per_epoch H=<H> threads=<threads> <median seconds>
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nabla.h"
#include "bench_fmnist.h"
#include "bench_util.h"

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1, hidden = argc > 2 ? atoi(argv[2]) : 64;
    int epochs = argc > 3 ? atoi(argv[3]) : 3;
    if (threads < 1 || hidden < 1 || epochs < 1 || epochs > 100) {
        fprintf(stderr, "usage: bench_mlp [threads] [H] [epochs]\n");
        return 2;
    }
    nb_set_num_threads(threads);
    nb_manual_seed(0);
    nb_scope_begin();
    nb_tensor *x, *y, *xt, *yt;
    if (!bench_fmnist("bench_mlp", "train", &x, &y) || !bench_fmnist("bench_mlp", "t10k", &xt, &yt)) {
        nb_scope_end();
        return 0;
    }
    x = nb_reshape(nb_slice(x, 0, 0, 54000, 1), NB_SHAPE(54000, 784));
    y = nb_slice(y, 0, 0, 54000, 1);
    xt = nb_reshape(xt, NB_SHAPE(10000, 784));

    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_linear(784, hidden));
    nb_model_add(model, nb_relu_layer());
    nb_model_add(model, nb_linear(hidden, 10));
    nb_model_set_loss(model, "cross_entropy", cross_entropy);
    int n;
    nb_tensor **params = nb_model_parameters(model, &n);
    nb_rmsprop_opts ro = nb_rmsprop_defaults();
    ro.lr = 1e-3f;
    ro.alpha = 0.9f;
    if (nb_model_set_optimizer(model, nb_rmsprop(n, params, &ro)) != 0) {
        fprintf(stderr, "bench_mlp: %s\n", nb_error());
        return 1;
    }
    nb_fit_opts fit = nb_fit_defaults();
    fit.batch_size = 64;
    fit.verbose = 0;
    double t[100];
    printf("H=%d threads=%d epoch seconds [", hidden, threads);
    for (int e = 0; e < epochs; e++) {
        fit.initial_epoch = e;
        fit.epochs = e + 1;
        double t0 = now();
        nb_history *h = nb_model_fit(model, x, y, &fit);
        t[e] = now() - t0;
        if (!h) {
            fprintf(stderr, "\nbench_mlp: %s\n", nb_error());
            return 1;
        }
        nb_history_free(h);
        printf("%s'%.3f'", e ? ", " : "", t[e]);
    }
    /* test accuracy: argmax of the logits against the labels */
    nb_tensor *pred = nb_model_predict(model, xt, 1000);
    nb_tensor *hit = nb_eq(nb_argmax(pred, 1, false), yt);
    float acc = nb_item(nb_mean(hit, NB_ALL, false));
    double mid = median(t, epochs);
    printf("] median %.3f; test acc %.2f%%\n", mid, 100.0 * acc);
    printf("mlp_s_per_epoch H=%d threads=%d %.3f\n", hidden, threads, mid);
    nb_model_free(model);
    nb_scope_end();
    return 0;
}
