/* test_data_threads.c — the loader's prefetching worker, as a plain program
 * rather than a Criterion test: Criterion cannot start under
 * ThreadSanitizer (its arena fails to map: Snaipe/Criterion#274), and this
 * is the test to run under it (meson setup -Db_sanitize=thread).
 *
 * It drives prefetching loaders the ways that hand buffers between the two
 * threads: whole epochs with a training step on each batch (the caller's
 * ops read one buffer while the worker fills the other), resets in the
 * middle of an epoch (a batch in flight when the permutation is redrawn),
 * loaders freed with a batch in flight, and fit on prefetching loaders.
 * Every batch is compared bit for bit with the same loader without a
 * worker. Exit status 0 when all agree and no tensor leaked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"

static int failures;

#define CHECK(cond, ...)                                                                                 \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                              \
            fprintf(stderr, __VA_ARGS__);                                                                \
            fputc('\n', stderr);                                                                         \
            failures++;                                                                                  \
        }                                                                                                \
    } while (0)

static bool same(nb_tensor *a, nb_tensor *b) {
    return a && b && nb_same_shape(a, b) &&
           memcmp(nb_data(a), nb_data(b), sizeof(float) * (size_t)nb_numel(a)) == 0;
}

static void epochs_with_training_and_early_resets(nb_dataset *ds) {
    nb_generator g[2];
    nb_loader *ld[2];
    for (int p = 0; p < 2; p++) {
        nb_generator_seed(&g[p], 11);
        ld[p] = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 16, .shuffle = true, .generator = &g[p],
                                                    .prefetch = p == 1});
        CHECK(ld[p], "nb_loader_new: %s", nb_error());
    }
    nb_module *net = nb_sequential(2, (nb_module *[]){nb_dense(32, "relu", 24), nb_dense(4, NULL, 32)});
    int np;
    nb_tensor **params = nb_module_parameters(net, &np);
    nb_optimizer *opt = nb_sgd(np, params, NULL);
    for (int epoch = 0; epoch < 12; epoch++) {
        nb_loader_reset(ld[0]);
        nb_loader_reset(ld[1]);
        int stop_after = epoch % 3 == 2 ? epoch % 5 : 1000; /* some epochs end early: reset mid-flight */
        nb_tensor *xb[2], *yb[2];
        for (int k = 0; k < stop_after; k++) {
            bool more0 = nb_loader_next(ld[0], &xb[0], &yb[0]), more1 = nb_loader_next(ld[1], &xb[1], &yb[1]);
            CHECK(more0 == more1, "epoch %d batch %d: one loader ended early", epoch, k);
            if (!more0 || !more1) break;
            CHECK(same(xb[0], xb[1]) && same(yb[0], yb[1]), "epoch %d batch %d differs", epoch, k);
            nb_scope_begin();
            nb_tensor *loss = nb_mse_loss(nb_module_forward(net, xb[1]), yb[1], NB_REDUCE_MEAN);
            nb_optimizer_zero_grad(opt);
            CHECK(nb_backward(loss) == 0, "backward: %s", nb_error());
            nb_optimizer_step(opt);
            nb_scope_end();
        }
    }
    nb_optimizer_free(opt);
    nb_module_free(net);
    nb_loader_free(ld[0]);
    nb_loader_free(ld[1]);
}

static void freed_in_flight(nb_dataset *ds) {
    for (int k = 0; k < 6; k++) {
        nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 8, .shuffle = k % 2, .prefetch = true});
        nb_tensor *xb, *yb;
        if (k > 0) nb_loader_reset(ld);
        for (int i = 1; i < k; i++) CHECK(nb_loader_next(ld, &xb, &yb), "batch %d", i);
        nb_loader_free(ld); /* batch k in flight, or none */
    }
}

static nb_history *fit_on(nb_dataset *train, nb_dataset *val, bool prefetch) {
    nb_manual_seed(5);
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(16, "tanh", 24));
    nb_model_add(m, nb_dense(4, NULL, 0));
    nb_model_compile(m, "adam", "mse", NULL);
    nb_loader *lt = nb_loader_new(train, &(nb_loader_opts){.batch_size = 10, .shuffle = true, .prefetch = prefetch});
    nb_loader *lv = nb_loader_new(val, &(nb_loader_opts){.batch_size = 7, .prefetch = prefetch});
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = 5;
    o.verbose = 0;
    nb_history *h = nb_model_fit_loader(m, lt, lv, &o);
    CHECK(h, "nb_model_fit_loader: %s", nb_error());
    nb_loader_free(lt);
    nb_loader_free(lv);
    nb_model_free(m);
    return h;
}

static void fit_with_prefetch(nb_dataset *ds) {
    nb_dataset *train, *val;
    CHECK(nb_dataset_split(ds, 0.25f, &train, &val) == 0, "split: %s", nb_error());
    nb_history *h[2] = {fit_on(train, val, false), fit_on(train, val, true)};
    for (int i = 0; h[0] && h[1] && i < nb_history_num_keys(h[0]); i++) {
        const char *key = nb_history_key(h[0], i);
        const float *a = nb_history_get(h[0], key), *b = nb_history_get(h[1], key);
        CHECK(b && memcmp(a, b, sizeof(float) * (size_t)nb_history_epochs(h[0])) == 0, "history '%s' differs", key);
    }
    nb_history_free(h[0]);
    nb_history_free(h[1]);
    nb_dataset_free(train);
    nb_dataset_free(val);
}

int main(void) {
    int64_t live = nb_live_tensors();
    nb_manual_seed(1);
    nb_scope_begin();
    nb_tensor *x = nb_randn(NB_SHAPE(203, 4, 6)), *y = nb_randn(NB_SHAPE(203, 4));
    nb_dataset *flat = nb_dataset_new(nb_reshape(x, NB_SHAPE(203, 24)), y);
    nb_scope_end();
    CHECK(flat, "nb_dataset_new: %s", nb_error());
    epochs_with_training_and_early_resets(flat);
    freed_in_flight(flat);
    fit_with_prefetch(flat);
    nb_dataset_free(flat);
    CHECK(nb_live_tensors() == live, "%lld tensors leaked", (long long)(nb_live_tensors() - live));
    if (failures) fprintf(stderr, "%d failures\n", failures);
    else printf("ok\n");
    return failures ? 1 : 0;
}
