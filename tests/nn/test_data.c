/* test_data.c — datasets and loaders (nn/data.c) and fit on a loader.
 *
 * The contract under test: every epoch of a loader gives every sample of
 * its dataset exactly once (in order, or in a permutation when shuffling;
 * the last short batch kept or dropped), a seed gives the same order, the
 * prefetching worker gives exactly the batches the caller would have
 * gathered itself, an epoch after the first allocates nothing (counted with
 * the allocation hook), and nb_model_fit_loader gives nb_model_fit's
 * history bit for bit when its loaders give fit's batches. Bad arguments
 * are refused with a message naming the function.
 *
 * The samples are made so that a batch tells where its rows came from:
 * sample i is x[i] = (i, -i, 0.5 i) and y[i] = 10 i, so a row checks its own
 * consistency (x and y of the same sample) and its index.
 */
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

TestSuite(data, NB_TEST_HOOKS);

/* ---- helpers ------------------------------------------------------------------------- */

static void numbered(int64_t n, nb_tensor **x, nb_tensor **y) {
    *x = nb_empty(NB_SHAPE(n, 3));
    *y = nb_empty(NB_SHAPE(n));
    float *px = nb_data_mut(*x), *py = nb_data_mut(*y);
    for (int64_t i = 0; i < n; i++) {
        px[3 * i] = (float)i;
        px[3 * i + 1] = -(float)i;
        px[3 * i + 2] = 0.5f * (float)i;
        py[i] = 10.0f * (float)i;
    }
}

/* The sample indices of one batch, checking that x and y agree row by row. */
static int64_t batch_indices(nb_tensor *xb, nb_tensor *yb, int64_t *out) {
    cr_assert_not_null(xb);
    cr_assert_not_null(yb);
    cr_assert_eq(nb_ndim(xb), 2);
    cr_assert_eq(nb_dim(xb, 1), 3);
    cr_assert_eq(nb_ndim(yb), 1);
    int64_t b = nb_dim(xb, 0);
    cr_assert_eq(nb_dim(yb, 0), b);
    const float *px = nb_data(xb), *py = nb_data(yb);
    for (int64_t r = 0; r < b; r++) {
        float i = px[3 * r];
        cr_assert(px[3 * r + 1] == -i && px[3 * r + 2] == 0.5f * i && py[r] == 10.0f * i,
                  "row %lld of the batch mixes samples", (long long)r);
        out[r] = (int64_t)i;
    }
    return b;
}

/* One epoch of ld into order[] (sample indices in the order given) and the
 * batch sizes into sizes[]; returns the number of samples. */
static int64_t epoch_order(nb_loader *ld, int64_t *order, int64_t *sizes, int64_t *nbatches) {
    nb_tensor *xb, *yb;
    int64_t seen = 0, k = 0;
    while (nb_loader_next(ld, &xb, &yb)) {
        int64_t b = batch_indices(xb, yb, order + seen);
        if (sizes) sizes[k] = b;
        seen += b;
        k++;
    }
    cr_assert_null(xb, "the end of an epoch gives no batch");
    if (nbatches) *nbatches = k;
    return seen;
}

/* ---- coverage ------------------------------------------------------------------------ */

Test(data, every_sample_once_per_epoch) {
    const int64_t sizes_n[] = {12, 10, 1};
    const int batch_sizes[] = {1, 3, 4, 5, 12, 13};
    for (size_t in = 0; in < sizeof sizes_n / sizeof *sizes_n; in++) {
        int64_t n = sizes_n[in];
        nb_tensor *x, *y;
        numbered(n, &x, &y);
        nb_dataset *ds = nb_dataset_new(x, y);
        cr_assert_not_null(ds, "%s", nb_error());
        cr_assert_eq(nb_dataset_len(ds), n);
        for (size_t ib = 0; ib < sizeof batch_sizes / sizeof *batch_sizes; ib++)
            for (int flags = 0; flags < 8; flags++) {
                int bs = batch_sizes[ib];
                bool shuffle = flags & 1, drop_last = flags & 2, prefetch = flags & 4;
                nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = bs, .shuffle = shuffle,
                                                                    .drop_last = drop_last, .prefetch = prefetch});
                cr_assert_not_null(ld, "%s", nb_error());
                int64_t full = n / bs, tail = drop_last ? 0 : n % bs, want_batches = full + (tail > 0);
                cr_assert_eq(nb_loader_num_batches(ld), want_batches);
                for (int epoch = 0; epoch < 3; epoch++) {
                    if (epoch > 0) nb_loader_reset(ld); /* the first epoch starts by itself */
                    int64_t order[16], sizes[16], nbatches, count[16] = {0};
                    int64_t seen = epoch_order(ld, order, sizes, &nbatches);
                    cr_assert_eq(nbatches, want_batches, "n %lld, batch %d, flags %d", (long long)n, bs, flags);
                    cr_assert_eq(seen, full * bs + tail);
                    for (int64_t k = 0; k < nbatches; k++) cr_assert_eq(sizes[k], k < full ? bs : tail);
                    for (int64_t i = 0; i < seen; i++) {
                        cr_assert(order[i] >= 0 && order[i] < n);
                        cr_assert_eq(++count[order[i]], 1, "sample %lld twice in an epoch", (long long)order[i]);
                        if (!shuffle) cr_assert_eq(order[i], i, "unshuffled batches are in order");
                    }
                    /* and nothing after the end until the next reset */
                    nb_tensor *xb, *yb;
                    cr_assert(!nb_loader_next(ld, &xb, &yb));
                }
                nb_loader_free(ld);
            }
        nb_dataset_free(ds);
    }
}

Test(data, shuffling_permutes_and_changes_every_epoch) {
    nb_tensor *x, *y;
    numbered(40, &x, &y);
    nb_dataset *ds = nb_dataset_new(x, y);
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 7, .shuffle = true});
    int64_t a[40], b[40];
    nb_loader_reset(ld);
    cr_assert_eq(epoch_order(ld, a, NULL, NULL), 40);
    nb_loader_reset(ld);
    cr_assert_eq(epoch_order(ld, b, NULL, NULL), 40);
    bool sorted = true;
    for (int i = 0; i < 40; i++) sorted &= a[i] == i;
    cr_expect(!sorted, "a shuffled epoch is not in order");
    cr_expect(memcmp(a, b, sizeof a) != 0, "each reset draws a new permutation");
    nb_loader_free(ld);
    nb_dataset_free(ds);
}

/* The same seed, the same order: an explicit generator, or the default one
 * after nb_manual_seed; the permutation is drawn by nb_loader_reset, so
 * prefetching does not change which generator draws it. */
Test(data, same_seed_same_order) {
    nb_tensor *x, *y;
    numbered(30, &x, &y);
    nb_dataset *ds = nb_dataset_new(x, y);
    int64_t orders[4][3][30];
    for (int run = 0; run < 4; run++) {
        nb_generator g;
        nb_generator_seed(&g, run == 3 ? 8 : 7);
        nb_manual_seed(7);
        bool own = run != 1;
        nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 4, .shuffle = true,
                                                            .generator = own ? &g : NULL, .prefetch = run == 2});
        for (int epoch = 0; epoch < 3; epoch++) {
            nb_loader_reset(ld);
            cr_assert_eq(epoch_order(ld, orders[run][epoch], NULL, NULL), 30);
        }
        nb_loader_free(ld);
    }
    cr_expect(memcmp(orders[0], orders[2], sizeof orders[0]) == 0, "prefetching changes no order");
    cr_expect(memcmp(orders[0], orders[3], sizeof orders[0]) != 0, "another seed, another order");
    /* the default generator seeded 7 draws what a generator seeded 7 draws */
    cr_expect(memcmp(orders[0], orders[1], sizeof orders[0]) == 0);
    int64_t again[30];
    nb_manual_seed(7);
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 30, .shuffle = true});
    nb_loader_reset(ld);
    epoch_order(ld, again, NULL, NULL);
    cr_expect(memcmp(again, orders[1][0], sizeof again) == 0);
    nb_loader_free(ld);
    nb_dataset_free(ds);
}

/* With and without the worker, the same batches bit for bit, for every
 * batch of several epochs, including the short last one. */
Test(data, prefetch_gives_the_same_batches) {
    nb_tensor *x = nb_randn(NB_SHAPE(37, 2, 3)), *y = nb_rand(NB_SHAPE(37, 2));
    nb_dataset *ds = nb_dataset_new(x, y);
    nb_generator g[2];
    nb_loader *ld[2];
    for (int p = 0; p < 2; p++) {
        nb_generator_seed(&g[p], 3);
        ld[p] = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 5, .shuffle = true, .generator = &g[p],
                                                    .prefetch = p == 1});
        cr_assert_not_null(ld[p], "%s", nb_error());
    }
    for (int epoch = 0; epoch < 4; epoch++) {
        nb_loader_reset(ld[0]);
        nb_loader_reset(ld[1]);
        nb_tensor *xb[2], *yb[2];
        int batches = 0;
        for (;;) {
            bool more0 = nb_loader_next(ld[0], &xb[0], &yb[0]), more1 = nb_loader_next(ld[1], &xb[1], &yb[1]);
            cr_assert_eq(more0, more1);
            if (!more0) break;
            batches++;
            cr_assert(nb_same_shape(xb[0], xb[1]) && nb_same_shape(yb[0], yb[1]));
            cr_assert(memcmp(nb_data(xb[0]), nb_data(xb[1]), sizeof(float) * (size_t)nb_numel(xb[0])) == 0);
            cr_assert(memcmp(nb_data(yb[0]), nb_data(yb[1]), sizeof(float) * (size_t)nb_numel(yb[0])) == 0);
            EXPECT_SHAPE(xb[1], nb_dim(xb[1], 0), 2, 3);
        }
        cr_assert_eq(batches, 8);
    }
    nb_loader_free(ld[0]);
    nb_loader_free(ld[1]);
    nb_dataset_free(ds);
}

/* Freeing a loader whose worker is mid-epoch (a batch in flight) joins it
 * cleanly; so does freeing one that never ran an epoch. */
Test(data, prefetch_loader_freed_mid_epoch) {
    nb_tensor *x = nb_randn(NB_SHAPE(1000, 16)), *y = nb_randn(NB_SHAPE(1000, 1));
    nb_dataset *ds = nb_dataset_new(x, y);
    for (int stop = 0; stop < 4; stop++) {
        nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 100, .shuffle = true, .prefetch = true});
        nb_tensor *xb, *yb;
        if (stop > 0) nb_loader_reset(ld);
        for (int k = 1; k < stop; k++) cr_assert(nb_loader_next(ld, &xb, &yb));
        nb_loader_free(ld);
    }
    nb_dataset_free(ds);
}

/* ---- buffers and allocations --------------------------------------------------------- */

/* The batches are the loader's own tensors, reused: the same ones every
 * epoch, never released by the caller, and an epoch after the first
 * allocates nothing. The loader alone allocates nothing from its first
 * epoch on (its buffers are made by nb_loader_new); with a training step on
 * each batch the step's tensors need a warm-up first: a freed tensor is
 * held back from reuse while 1024 more are freed (the double-release
 * check), about 70 steps of this network (15 tensors a step), so the count
 * starts at epoch 15. */
Test(data, no_allocation_in_a_steady_epoch) {
    nb_tensor *x = nb_randn(NB_SHAPE(50, 4)), *y = nb_randn(NB_SHAPE(50, 1));
    nb_dataset *ds = nb_dataset_new(x, y);
    for (int variant = 0; variant < 4; variant++) {
        bool prefetch = variant & 1, train = variant & 2;
        nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 8, .shuffle = true, .prefetch = prefetch});
        nb_module *net = nb_sequential(2, (nb_module *[]){nb_dense(6, "tanh", 4), nb_dense(1, NULL, 6)});
        int np;
        nb_tensor **params = nb_module_parameters(net, &np);
        nb_optimizer *opt = nb_sgd(np, params, NULL);
        nb_tensor *first_x = NULL, *first_last = NULL;
        enum { EPOCHS = 17 };
        int64_t calls[EPOCHS];
        for (int epoch = 0; epoch < EPOCHS; epoch++) {
            nb_test_alloc c = {0};
            nb_set_alloc_hook(nb_test_alloc_hook, &c);
            nb_loader_reset(ld);
            nb_tensor *xb, *yb;
            int64_t k = 0;
            while (nb_loader_next(ld, &xb, &yb)) {
                if (train) {
                    nb_scope_begin();
                    nb_tensor *loss = nb_mse_loss(nb_module_forward(net, xb), yb, NB_REDUCE_MEAN);
                    nb_optimizer_zero_grad(opt);
                    nb_backward(loss);
                    nb_optimizer_step(opt);
                    nb_scope_end();
                }
                if (k == 0 && epoch == 0) first_x = xb;
                if (k == 0) cr_assert_eq(xb, first_x, "the first batch's tensor is reused");
                if (k == 6 && epoch == 0) first_last = xb;
                if (k == 6) cr_assert_eq(xb, first_last, "the short batch's tensor is reused");
                k++;
            }
            nb_set_alloc_hook(NULL, NULL);
            calls[epoch] = c.calls;
            cr_assert_eq(k, 7);
        }
        for (int epoch = train ? 14 : 0; epoch < EPOCHS; epoch++)
            cr_expect_eq(calls[epoch], 0, "variant %d: %lld allocations in epoch %d", variant, (long long)calls[epoch],
                         epoch + 1);
        EXPECT_SHAPE(first_last, 2, 4);
        /* lent, not given: releasing a batch is refused */
        nb_clear_error();
        nb_release(first_x);
        EXPECT_ERROR("nb_release");
        nb_optimizer_free(opt);
        nb_module_free(net);
        nb_loader_free(ld);
    }
    nb_dataset_free(ds);
}

/* ---- datasets ------------------------------------------------------------------------ */

/* A dataset shares x's storage: x may go with its scope, the dataset still
 * reads its values. */
Test(data, dataset_outlives_the_scope_of_its_tensors) {
    int64_t live = nb_live_tensors();
    nb_scope_begin();
    nb_tensor *x, *y;
    numbered(6, &x, &y);
    nb_dataset *ds = nb_dataset_new(x, y);
    nb_scope_end();
    cr_assert_eq(nb_live_tensors(), live + 2, "the dataset holds two tensors of its own");
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 4});
    int64_t order[6];
    cr_assert_eq(epoch_order(ld, order, NULL, NULL), 6);
    for (int i = 0; i < 6; i++) cr_assert_eq(order[i], i);
    nb_loader_free(ld);
    nb_dataset_free(ds);
    cr_assert_eq(nb_live_tensors(), live);
}

Test(data, split_takes_the_last_fraction) {
    nb_tensor *x, *y;
    numbered(10, &x, &y);
    nb_dataset *ds = nb_dataset_new(x, y), *train, *val;
    cr_assert_eq(nb_dataset_split(ds, 0.2f, &train, &val), 0, "%s", nb_error());
    nb_dataset_free(ds); /* the halves do not need it */
    cr_assert_eq(nb_dataset_len(train), 8);
    cr_assert_eq(nb_dataset_len(val), 2);
    nb_loader *lt = nb_loader_new(train, &(nb_loader_opts){.batch_size = 3, .shuffle = true});
    nb_loader *lv = nb_loader_new(val, &(nb_loader_opts){.batch_size = 3});
    int64_t order[10], count[10] = {0};
    cr_assert_eq(epoch_order(lt, order, NULL, NULL), 8);
    for (int i = 0; i < 8; i++) count[order[i]]++;
    for (int i = 0; i < 8; i++) cr_assert_eq(count[i], 1, "training sample %d", i);
    cr_assert_eq(epoch_order(lv, order, NULL, NULL), 2);
    cr_assert(order[0] == 8 && order[1] == 9, "validation is the last two samples, in order");
    /* a subset of a split maps through it */
    nb_dataset *sub = nb_dataset_subset(train, 3, (const int64_t[]){7, 0, 7});
    nb_loader *ls = nb_loader_new(sub, NULL);
    cr_assert_eq(epoch_order(ls, order, NULL, NULL), 3);
    cr_assert(order[0] == 7 && order[1] == 0 && order[2] == 7);
    nb_loader_free(ls);
    nb_loader_free(lt);
    nb_loader_free(lv);
    nb_dataset_free(sub);
    nb_dataset_free(train);
    nb_dataset_free(val);
}

/* ---- errors -------------------------------------------------------------------------- */

Test(data, bad_arguments_are_refused) {
    nb_tensor *x = nb_zeros(NB_SHAPE(5, 2)), *y = nb_zeros(NB_SHAPE(4));
    nb_clear_error();
    cr_assert_null(nb_dataset_new(x, y));
    EXPECT_ERROR("nb_dataset_new", "[5,2]", "[4]", "same number of rows");
    cr_assert_null(nb_dataset_new(nb_zeros(NB_SHAPE(0, 2)), nb_zeros(NB_SHAPE(0))));
    EXPECT_ERROR("nb_dataset_new", "no samples");

    /* NULL: a pending message stands (the call that made the NULL said
     * why); without one, the function says which argument was NULL */
    nb_clear_error();
    cr_assert_null(nb_dataset_new(NULL, y));
    EXPECT_ERROR("nb_dataset_new", "x is NULL");
    nb_clear_error();
    cr_assert_null(nb_dataset_new(nb_reshape(x, NB_SHAPE(3, 3)), y));
    EXPECT_ERROR("nb_reshape");
    nb_clear_error();
    cr_assert_null(nb_loader_new(NULL, NULL));
    EXPECT_ERROR("nb_loader_new", "NULL");

    nb_dataset *ds = nb_dataset_new(x, nb_zeros(NB_SHAPE(5)));
    cr_assert_not_null(ds);
    cr_assert_null(nb_loader_new(ds, &(nb_loader_opts){.batch_size = 0}));
    EXPECT_ERROR("nb_loader_new", "batch_size must be >= 1", "got 0");
    cr_assert_null(nb_loader_new(ds, &(nb_loader_opts){.batch_size = -3}));
    EXPECT_ERROR("nb_loader_new", "got -3");

    nb_dataset *train = ds, *val = ds;
    cr_assert_eq(nb_dataset_split(ds, 0, &train, &val), -1);
    EXPECT_ERROR("nb_dataset_split", "fraction");
    cr_assert(train == NULL && val == NULL);
    cr_assert_eq(nb_dataset_split(ds, 0.9f, &train, &val), -1); /* int(5 * 0.1) = 0 rows to train */
    EXPECT_ERROR("nb_dataset_split", "no training samples");
    cr_assert_eq(nb_dataset_split(ds, 0.1f, &train, &val), 0); /* int(5 * 0.9) = 4 and 1 */
    cr_assert(nb_dataset_len(train) == 4 && nb_dataset_len(val) == 1);
    nb_dataset_free(train);
    nb_dataset_free(val);
    cr_assert_eq(nb_dataset_split(ds, 0.5f, NULL, &val), -1);
    EXPECT_ERROR("nb_dataset_split", "train and val");
    cr_assert_null(nb_dataset_subset(ds, 1, (const int64_t[]){5}));
    EXPECT_ERROR("nb_dataset_subset", "out of range");

    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 2});
    nb_tensor *xb;
    cr_assert(!nb_loader_next(ld, &xb, NULL));
    EXPECT_ERROR("nb_loader_next", "x and y");
    nb_clear_error();
    cr_assert(!nb_loader_next(NULL, &xb, &xb));
    EXPECT_ERROR("nb_loader_next", "NULL");
    nb_loader_free(ld);
    nb_loader_free(NULL);
    nb_dataset_free(NULL);
    nb_dataset_free(ds);
}

/* ---- fit on loaders ------------------------------------------------------------------ */

/* Dense(8, tanh, input 3) -> Dense(1), adam, mse and mae, from seed 1 */
static nb_model *fit_model(void) {
    nb_manual_seed(1);
    nb_model *m = nb_model_sequential();
    cr_assert_eq(nb_model_add(m, nb_dense(8, "tanh", 3)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(m, nb_dense(1, "linear", 0)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_compile(m, "adam", "mse", "mae"), 0, "%s", nb_error());
    return m;
}

static void expect_same_history(const nb_history *a, const nb_history *b) {
    cr_assert_not_null(a, "%s", nb_error());
    cr_assert_not_null(b, "%s", nb_error());
    cr_assert_eq(nb_history_epochs(a), nb_history_epochs(b));
    cr_assert_eq(nb_history_num_keys(a), nb_history_num_keys(b));
    for (int i = 0; i < nb_history_num_keys(a); i++) {
        const char *key = nb_history_key(a, i);
        cr_assert_str_eq(key, nb_history_key(b, i));
        const float *va = nb_history_get(a, key), *vb = nb_history_get(b, key);
        for (int e = 0; e < nb_history_epochs(a); e++)
            cr_assert(memcmp(&va[e], &vb[e], sizeof(float)) == 0, "%s at epoch %d: %.9g and %.9g", key, e + 1,
                      (double)va[e], (double)vb[e]);
    }
}

/* nb_model_fit_loader runs nb_model_fit's own loop, so loaders giving fit's
 * batches give fit's history bit for bit: 23 samples, validation_split 0.2
 * (18 to train in batches of 5, the last one of 3; the last 5 to validate)
 * against nb_dataset_split(0.2) and loaders of batch 5.
 * Without shuffling both take the rows in order. With shuffling they take
 * the same permutations because they draw them from the same source the
 * same way: fit calls nb_randperm(NULL, 18, ...) on the default generator
 * at the start of every epoch, and so does nb_loader_reset, which fit_loader
 * calls at the start of every epoch, for a loader given no generator; the
 * default generator is seeded alike before each fit. (The validation loader
 * does not shuffle: it draws nothing.) With the worker on, the permutation
 * is still drawn by reset on the calling thread, so nothing changes. */
Test(data, fit_loader_gives_fit_history) {
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(23, 3));
    nb_tensor *y = nb_add_scalar(nb_matmul(x, nb_from_array(NB_SHAPE(3, 1), (const float[]){1, -2, 0.5f})), 0.3f);
    nb_dataset *ds = nb_dataset_new(x, y), *train, *val;
    cr_assert_eq(nb_dataset_split(ds, 0.2f, &train, &val), 0, "%s", nb_error());
    for (int variant = 0; variant < 3; variant++) {
        bool shuffle = variant > 0, prefetch = variant == 2;
        nb_fit_opts o = nb_fit_defaults();
        o.epochs = 4;
        o.batch_size = 5;
        o.verbose = 0;
        o.shuffle = shuffle;
        o.validation_split = 0.2f;
        nb_model *m1 = fit_model();
        nb_manual_seed(9);
        nb_history *h1 = nb_model_fit(m1, x, y, &o);

        nb_model *m2 = fit_model();
        nb_loader *lt = nb_loader_new(train, &(nb_loader_opts){.batch_size = 5, .shuffle = shuffle,
                                                               .prefetch = prefetch});
        nb_loader *lv = nb_loader_new(val, &(nb_loader_opts){.batch_size = 5, .prefetch = prefetch});
        nb_fit_opts ol = nb_fit_defaults();
        ol.epochs = 4;
        ol.verbose = 0;
        nb_manual_seed(9);
        nb_history *h2 = nb_model_fit_loader(m2, lt, lv, &ol);
        expect_same_history(h1, h2);
        cr_assert_not_null(nb_history_get(h2, "val_mae"));
        /* and the weights they end with */
        int n1, n2;
        nb_tensor **p1 = nb_model_parameters(m1, &n1), **p2 = nb_model_parameters(m2, &n2);
        cr_assert_eq(n1, n2);
        for (int i = 0; i < n1; i++)
            cr_assert(memcmp(nb_data(p1[i]), nb_data(p2[i]), sizeof(float) * (size_t)nb_numel(p1[i])) == 0,
                      "variant %d, parameter %d", variant, i);
        nb_history_free(h1);
        nb_history_free(h2);
        nb_loader_free(lt);
        nb_loader_free(lv);
        nb_model_free(m1);
        nb_model_free(m2);
    }
    nb_dataset_free(train);
    nb_dataset_free(val);
    nb_dataset_free(ds);
}

/* Without a validation loader there is no val_ key; evaluate agrees with
 * the last epoch's model. */
Test(data, fit_loader_without_validation) {
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(16, 3)), *y = nb_sum(x, NB_AXES(1), true);
    nb_dataset *ds = nb_dataset_new(x, y);
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 4, .shuffle = true, .prefetch = true});
    nb_model *m = fit_model();
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = 30;
    o.verbose = 0;
    nb_history *h = nb_model_fit_loader(m, ld, NULL, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_assert_eq(nb_history_epochs(h), 30);
    cr_assert_null(nb_history_get(h, "val_loss"));
    const float *loss = nb_history_get(h, "loss");
    cr_expect(loss[29] < loss[0], "training lowers the loss: %g to %g", (double)loss[0], (double)loss[29]);
    nb_history_free(h);
    nb_model_free(m);
    nb_loader_free(ld);
    nb_dataset_free(ds);
}

Test(data, fit_loader_refuses_bad_arguments) {
    nb_tensor *x = nb_zeros(NB_SHAPE(6, 3)), *y = nb_zeros(NB_SHAPE(6, 1));
    nb_dataset *ds = nb_dataset_new(x, y);
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 4});
    nb_loader *none = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 8, .drop_last = true});
    cr_assert_eq(nb_loader_num_batches(none), 0);
    nb_model *m = fit_model();
    nb_fit_opts o = nb_fit_defaults();
    o.verbose = 0;
    o.validation_split = 0.2f;
    cr_assert_null(nb_model_fit_loader(m, ld, NULL, &o));
    EXPECT_ERROR("nb_model_fit_loader", "validation_split");
    o.validation_split = 0;
    nb_clear_error();
    cr_assert_null(nb_model_fit_loader(m, NULL, NULL, &o));
    EXPECT_ERROR("nb_model_fit_loader", "NULL");
    cr_assert_null(nb_model_fit_loader(m, none, NULL, &o));
    EXPECT_ERROR("nb_model_fit_loader", "no batch");
    cr_assert_null(nb_model_fit_loader(m, ld, none, &o));
    EXPECT_ERROR("nb_model_fit_loader", "validation");
    /* data that does not fit the model: x of 2 features for an input of 3 */
    nb_dataset *bad = nb_dataset_new(nb_zeros(NB_SHAPE(6, 2)), y);
    nb_loader *lb = nb_loader_new(bad, NULL);
    cr_assert_null(nb_model_fit_loader(m, lb, NULL, &o));
    EXPECT_ERROR("nb_model_fit_loader", "[6,2]", "does not fit");
    nb_loader_free(lb);
    nb_dataset_free(bad);
    nb_model_free(m);
    nb_loader_free(none);
    nb_loader_free(ld);
    nb_dataset_free(ds);
}

/* ---- out of memory ------------------------------------------------------------------- */

/* Every allocation of nb_dataset_new, nb_dataset_split and nb_loader_new
 * failing in turn: NULL (or -1) with a message naming the function and
 * "out of memory", nothing left behind; and once nothing fails, a loader
 * that works. */
Test(data, out_of_memory_while_making) {
    nb_tensor *x, *y;
    numbered(9, &x, &y);
    bool made = false;
    for (long fail = 1; fail < 200 && !made; fail++) {
        int64_t live = nb_live_tensors();
        nb_test_alloc f = {.fail_at = fail};
        nb_clear_error();
        nb_set_alloc_hook(nb_test_alloc_hook, &f);
        nb_dataset *ds = nb_dataset_new(x, y), *train = NULL, *val = NULL;
        int split = ds ? nb_dataset_split(ds, 0.25f, &train, &val) : -1;
        nb_loader *ld = split == 0 ? nb_loader_new(train, &(nb_loader_opts){.batch_size = 4, .prefetch = true}) : NULL;
        nb_set_alloc_hook(NULL, NULL);
        if (ld) {
            made = true;
            int64_t order[9];
            cr_assert_eq(epoch_order(ld, order, NULL, NULL), 6);
        } else {
            EXPECT_ERROR(!ds ? "nb_dataset_new" : split ? "nb_dataset_split" : "nb_loader_new", "out of memory");
            cr_assert(train == NULL || split == 0);
        }
        nb_loader_free(ld);
        nb_dataset_free(train);
        nb_dataset_free(val);
        nb_dataset_free(ds);
        cr_assert_eq(nb_live_tensors(), live, "allocation %ld: tensors left behind", fail);
    }
    cr_assert(made);
}
