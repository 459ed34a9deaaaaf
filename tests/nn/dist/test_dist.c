/* test_dist.c — data-parallel training over MPI (nn/dist), run by meson
 * under mpirun with 1, 2 and 3 ranks.
 *
 * What it proves, on every rank:
 *   - the sampler across processes: each sample is read exactly once per
 *     epoch by exactly one rank, and rank r's batch of step k is the rows
 *     k·N·B + r·B .. of the permutation one loader of batch N·B draws;
 *   - the gradient average: after training, each rank's weights are bit
 *     for bit those of one process (this one, alone, with no MPI) that
 *     splits every batch of N·B into the N micro-batches of B the ranks
 *     take, sums their mean-loss gradients in rank order and divides by N,
 *     written here by hand from that definition. With SGD (momentum),
 *     Adam and RMSprop; in an explicit loop with a reducer of tiny buckets
 *     (one or two parameters each) and through nb_dist_fit with the
 *     default buckets and the optimizers compile names;
 *   - the overlap: with the reducer attached, a bucket has started before
 *     backward reaches the first layer, and the weights are still those
 *     bits; a second backward before the wait is refused;
 *   - resuming: every rank loads rank 0's checkpoint after two epochs and
 *     trains the third; the weights equal an uninterrupted three-epoch run.
 *   - bad arguments are refused with a message naming the function; a
 *     broadcast whose tensors differ on one rank fails on every rank and
 *     leaves the nb_dist usable.
 *
 * A plain program, not Criterion: Criterion runs each test in a forked
 * child, and an MPI process cannot be forked. A failed check prints the
 * rank and the line and ends the whole job (MPI_Abort), so that no rank
 * waits for one that has stopped.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"
#include "nb_dist.h"

static int rank, nranks;

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "rank %d of %d: %s:%d: ", rank, nranks, __FILE__, __LINE__);    \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fprintf(stderr, " [%s]\n", nb_error() ? nb_error() : "no nabla message");      \
            fflush(stderr);                                                                 \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                   \
        }                                                                                   \
    } while (0)

enum { N_ROWS = 53, BATCH = 4, IN = 5, OUT = 3 };

/* x [53, 5] and y [53, 3], the same on every rank (seeded). Kept. */
static void make_data(nb_tensor **x, nb_tensor **y) {
    nb_manual_seed(7);
    *x = nb_keep(nb_uniform(NULL, -1, 1, 2, (int64_t[]){N_ROWS, IN}));
    *y = nb_keep(nb_uniform(NULL, -1, 1, 2, (int64_t[]){N_ROWS, OUT}));
}

static nb_module *make_net(uint64_t seed) {
    nb_manual_seed(seed);
    return nb_sequential(2, (nb_module *[]){nb_dense(8, "tanh", IN), nb_dense(OUT, "linear", 8)});
}

static nb_optimizer *make_optimizer(const char *name, nb_module *net) {
    int n;
    nb_tensor **p = nb_module_parameters(net, &n);
    if (strcmp(name, "sgd") == 0) return nb_sgd(n, p, &(nb_sgd_opts){.lr = 0.1f, .momentum = 0.9f});
    if (strcmp(name, "adam") == 0) return nb_adam(n, p, &(nb_adam_opts){.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f});
    nb_rmsprop_opts o = nb_rmsprop_defaults();
    return nb_rmsprop(n, p, &o);
}

static nb_tensor *mse(nb_module *net, nb_tensor *xb, nb_tensor *yb) {
    return nb_mse_loss(nb_module_forward(net, xb), yb, NB_REDUCE_MEAN);
}

static void expect_same_weights(nb_module *a, nb_module *b, const char *what) {
    int na, nb;
    nb_tensor **pa = nb_module_parameters(a, &na), **pb = nb_module_parameters(b, &nb);
    CHECK(na == nb, "%s: %d and %d parameters", what, na, nb);
    for (int i = 0; i < na; i++) {
        const float *u = nb_data(pa[i]), *v = nb_data(pb[i]);
        for (int64_t j = 0; j < nb_numel(pa[i]); j++)
            CHECK(memcmp(&u[j], &v[j], sizeof(float)) == 0, "%s: parameter %s element %lld is %.9g, expected %.9g",
                  what, nb_module_parameter_name(a, i), (long long)j, (double)u[j], (double)v[j]);
    }
}

static void expect_error(const char *who, const char *fragment) {
    CHECK(nb_error() && strstr(nb_error(), who) && strstr(nb_error(), fragment), "expected an error from %s with "
          "\"%s\"", who, fragment);
    nb_clear_error();
}

/* ---- the sampler across ranks ------------------------------------------------------------ */

static void test_sampler(int64_t n) {
    nb_scope_begin();
    nb_tensor *x = nb_empty(2, (int64_t[]){n, 1}), *y = nb_empty(1, (int64_t[]){n});
    for (int64_t i = 0; i < n; i++) nb_data_mut(x)[i] = nb_data_mut(y)[i] = (float)i;
    nb_dataset *ds = nb_dataset_new(x, y);
    nb_generator g, whole_g;
    nb_generator_seed(&g, 3);
    nb_generator_seed(&whole_g, 3);
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = BATCH, .shuffle = true, .generator = &g,
                                                        .num_shards = nranks, .shard = rank});
    nb_loader *whole = nb_loader_new(ds, &(nb_loader_opts){.batch_size = nranks * BATCH, .shuffle = true,
                                                           .generator = &whole_g});
    CHECK(ld && whole, "loaders");
    int *seen = calloc((size_t)n, sizeof(int)), *total = calloc((size_t)n, sizeof(int));
    int64_t step = (int64_t)nranks * BATCH, left = n % step;
    for (int epoch = 0; epoch < 2; epoch++) {
        memset(seen, 0, sizeof(int) * (size_t)n);
        nb_loader_reset(ld);
        nb_loader_reset(whole);
        nb_tensor *xb, *yb, *wx, *wy;
        for (int64_t k = 0; nb_loader_next(ld, &xb, &yb); k++) {
            CHECK(nb_loader_next(whole, &wx, &wy), "the whole loader ended before step %lld", (long long)k);
            /* rank r's rows start after the r shards before it */
            int64_t start = k < n / step ? rank * BATCH
                                         : rank * (left / nranks) + (rank < left % nranks ? rank : left % nranks);
            for (int64_t i = 0; i < nb_dim(xb, 0); i++) {
                int64_t row = (int64_t)nb_data(xb)[i];
                CHECK(row == (int64_t)nb_data(wx)[start + i], "epoch %d step %lld row %lld", epoch, (long long)k,
                      (long long)i);
                seen[row]++;
            }
        }
        MPI_Allreduce(seen, total, (int)n, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        int64_t unread = 0;
        for (int64_t i = 0; i < n; i++) {
            CHECK(total[i] <= 1, "sample %lld read %d times in epoch %d", (long long)i, total[i], epoch);
            unread += total[i] == 0;
        }
        CHECK(unread == (left >= nranks ? 0 : left), "%lld samples unread of %lld in epoch %d", (long long)unread,
              (long long)n, epoch);
    }
    free(seen);
    free(total);
    nb_loader_free(whole);
    nb_loader_free(ld);
    nb_dataset_free(ds);
    nb_scope_end();
}

/* ---- the reference: one process, N micro-batches, by hand ------------------------------------ */

/* Trains net with opt over ds as N ranks would, in this process alone:
 * each step, the N shards' micro-batches one after the other, their
 * gradients summed in shard order and divided by N. Each shard's loader
 * starts from the generator state gen (what every rank draws from). */
static void train_reference(nb_module *net, nb_optimizer *opt, nb_dataset *ds, int epochs, const nb_generator *gen) {
    int np;
    nb_tensor **p = nb_module_parameters(net, &np);
    nb_generator gens[3];
    nb_loader *ld[3];
    for (int r = 0; r < nranks; r++) {
        gens[r] = *gen;
        ld[r] = nb_loader_new(ds, &(nb_loader_opts){.batch_size = BATCH, .shuffle = true, .generator = &gens[r],
                                                     .num_shards = nranks, .shard = r});
        CHECK(ld[r], "reference loader");
    }
    float *sum[8];
    for (int i = 0; i < np; i++) sum[i] = malloc(sizeof(float) * (size_t)nb_numel(p[i]));
    for (int epoch = 0; epoch < epochs; epoch++) {
        for (int r = 0; r < nranks; r++) nb_loader_reset(ld[r]);
        for (int64_t k = 0; k < nb_loader_num_batches(ld[0]); k++) {
            for (int r = 0; r < nranks; r++) {
                nb_tensor *xb, *yb;
                CHECK(nb_loader_next(ld[r], &xb, &yb), "reference shard %d", r);
                nb_scope_begin();
                nb_optimizer_zero_grad(opt);
                CHECK(nb_backward(mse(net, xb, yb)) == 0, "reference backward");
                for (int i = 0; i < np; i++) {
                    const float *g = nb_data(nb_grad_of(p[i]));
                    for (int64_t j = 0; j < nb_numel(p[i]); j++) sum[i][j] = r == 0 ? g[j] : sum[i][j] + g[j];
                }
                nb_scope_end();
            }
            for (int i = 0; i < np; i++) {
                float *g = nb_data_mut(nb_grad_of(p[i]));
                for (int64_t j = 0; j < nb_numel(p[i]); j++) g[j] = sum[i][j] / (float)nranks;
            }
            CHECK(nb_optimizer_step(opt) == 0, "reference step");
        }
    }
    for (int i = 0; i < np; i++) free(sum[i]);
    for (int r = 0; r < nranks; r++) nb_loader_free(ld[r]);
}

/* ---- the explicit loop --------------------------------------------------------------------------- */

static void test_loop(nb_dist *d, nb_dataset *ds, const char *optimizer) {
    /* rank r starts from another seed: the broadcast makes them equal */
    nb_module *net = make_net(100 + (uint64_t)rank);
    nb_optimizer *opt = make_optimizer(optimizer, net);
    int np;
    nb_tensor **p = nb_module_parameters(net, &np);
    CHECK(nb_dist_broadcast(d, np, p) == 0, "broadcast");
    nb_module *ref = make_net(100); /* rank 0's weights */
    nb_optimizer *ref_opt = make_optimizer(optimizer, ref);
    expect_same_weights(net, ref, "after the broadcast");

    nb_generator gen, start;
    nb_generator_seed(&gen, 9);
    start = gen;
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = BATCH, .shuffle = true, .generator = &gen,
                                                        .num_shards = nranks, .shard = rank});
    nb_dist_reducer *red = nb_dist_reducer_new(d, np, p);
    CHECK(ld && red, "loader and reducer");
    for (int epoch = 0; epoch < 3; epoch++) {
        nb_loader_reset(ld);
        nb_tensor *xb, *yb;
        while (nb_loader_next(ld, &xb, &yb)) {
            nb_scope_begin();
            nb_optimizer_zero_grad(opt);
            CHECK(nb_backward(mse(net, xb, yb)) == 0, "backward");
            /* as a gradient hook would: each parameter once its gradient
             * is final, the last first; wait then finishes the buckets */
            for (int i = np - 1; i >= 0 && strcmp(optimizer, "adam") == 0; i--)
                CHECK(nb_dist_reducer_ready(red, i) == 0, "ready");
            /* in the opposite order: full buckets wait for those before them */
            for (int i = 0; i < np && strcmp(optimizer, "rmsprop") == 0; i++)
                CHECK(nb_dist_reducer_ready(red, i) == 0, "ready");
            CHECK(nb_dist_reducer_wait(red) == 0, "average");
            CHECK(nb_optimizer_step(opt) == 0, "step");
            nb_scope_end();
        }
    }
    train_reference(ref, ref_opt, ds, 3, &start);
    char what[64];
    snprintf(what, sizeof what, "explicit loop with %s", optimizer);
    expect_same_weights(net, ref, what);
    nb_dist_reducer_free(red);
    nb_loader_free(ld);
    nb_optimizer_free(ref_opt);
    nb_optimizer_free(opt);
    nb_module_free(ref);
    nb_module_free(net);
}

/* ---- the explicit loop with the buckets started from backward ------------------------------------- */

/* What a post-accumulate-grad hook on the second layer's weight sees: how
 * many buckets had started when that gradient became final. */
typedef struct probe {
    nb_dist_reducer *red;
    int started;
} probe;

static void read_started(nb_tensor *t, void *user) {
    (void)t;
    probe *pr = user;
    pr->started = nb_dist_reducer_started(pr->red);
}

/* test_loop's training with the reducer attached (its hooks mark each
 * parameter ready during backward) and the same checks of the weights;
 * with 100-byte buckets this net has two: {b2, W2} and {b1, W1}. When W2's
 * gradient is final (its hook, registered after the reducer's, runs), the
 * first bucket has started and backward has yet to reach the first layer. */
static void test_overlap(nb_dist *d, nb_dataset *ds) {
    nb_module *net = make_net(100 + (uint64_t)rank);
    nb_optimizer *opt = make_optimizer("sgd", net);
    int np;
    nb_tensor **p = nb_module_parameters(net, &np);
    CHECK(np == 4 && nb_numel(p[2]) == 24, "the net's parameters are W1, b1, W2, b2");
    CHECK(nb_dist_broadcast(d, np, p) == 0, "broadcast");
    nb_module *ref = make_net(100);
    nb_optimizer *ref_opt = make_optimizer("sgd", ref);

    nb_generator gen, start;
    nb_generator_seed(&gen, 9);
    start = gen;
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = BATCH, .shuffle = true, .generator = &gen,
                                                        .num_shards = nranks, .shard = rank});
    nb_dist_reducer *red = nb_dist_reducer_new(d, np, p);
    CHECK(ld && red && nb_dist_reducer_num_buckets(red) == 2, "loader and reducer of two buckets");
    CHECK(nb_dist_reducer_attach(red) == 0 && nb_dist_reducer_attach(red) == 0, "attach (twice is once)");
    probe pr = {red, -1};
    int handle = nb_register_post_accumulate_grad_hook(p[2], read_started, &pr);
    CHECK(handle > 0, "the probe's hook");
    for (int epoch = 0; epoch < 3; epoch++) {
        nb_loader_reset(ld);
        nb_tensor *xb, *yb;
        while (nb_loader_next(ld, &xb, &yb)) {
            nb_scope_begin();
            nb_optimizer_zero_grad(opt);
            CHECK(nb_dist_reducer_started(red) == 0, "no bucket before backward");
            CHECK(nb_backward(mse(net, xb, yb)) == 0, "backward");
            CHECK(pr.started == 1, "buckets started when W2's gradient was final: %d, expected 1", pr.started);
            CHECK(nb_dist_reducer_started(red) == 2, "both buckets started by the end of backward");
            CHECK(nb_dist_reducer_wait(red) == 0, "average");
            CHECK(nb_optimizer_step(opt) == 0, "step");
            nb_scope_end();
        }
    }
    train_reference(ref, ref_opt, ds, 3, &start);
    expect_same_weights(net, ref, "explicit loop with the reducer attached");

    /* attached, a second backward before the wait fails rather than miss
     * the buckets already sent; detached for it, it accumulates */
    nb_loader_reset(ld);
    nb_tensor *xb, *yb;
    CHECK(nb_loader_next(ld, &xb, &yb), "a batch");
    nb_scope_begin();
    nb_tensor *loss = mse(net, xb, yb);
    CHECK(nb_backward_ex(loss, NULL, &(nb_backward_opts){.retain_graph = true}) == 0, "backward");
    CHECK(nb_backward_ex(loss, NULL, &(nb_backward_opts){.retain_graph = true}) == -1, "a second backward");
    expect_error("nb_backward", "reached the nb_dist_reducer twice");
    CHECK(nb_dist_reducer_wait(red) == 0, "the wait after it");
    nb_dist_reducer_detach(red);
    CHECK(nb_backward_ex(loss, NULL, &(nb_backward_opts){.retain_graph = true}) == 0, "detached");
    CHECK(nb_dist_reducer_attach(red) == 0, "attached again");
    CHECK(nb_backward(loss) == 0 && nb_dist_reducer_wait(red) == 0, "the last backward of the step");
    nb_scope_end();

    CHECK(nb_remove_hook(p[2], handle) == 0, "the probe's hook removed");
    /* freed with both buckets in flight (a loop stopped between backward
     * and wait): it finishes them before freeing their memory */
    nb_scope_begin();
    CHECK(nb_backward(mse(net, xb, yb)) == 0 && nb_dist_reducer_started(red) == 2, "backward, no wait");
    nb_scope_end();
    nb_dist_reducer_free(red); /* removes its hooks: the net can go on without it */
    nb_scope_begin();
    CHECK(nb_backward(mse(net, xb, yb)) == 0, "backward after the reducer is gone");
    nb_scope_end();
    nb_loader_free(ld);
    nb_optimizer_free(ref_opt);
    nb_optimizer_free(opt);
    nb_module_free(ref);
    nb_module_free(net);
}

/* ---- fit ------------------------------------------------------------------------------------------- */

static nb_model *make_model(uint64_t seed, const char *optimizer) {
    nb_model *m = nb_model_from_module(make_net(seed));
    CHECK(m && nb_model_compile(m, optimizer, "mse", NULL) == 0, "compile");
    return m;
}

static nb_fit_opts fit_opts(int epochs) {
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = epochs;
    o.batch_size = BATCH;
    o.verbose = 0;
    o.validation_split = 0.2f;
    return o;
}

static void test_fit(nb_dist *d, nb_tensor *x, nb_tensor *y, const char *optimizer) {
    nb_model *model = make_model(200 + (uint64_t)rank, optimizer);
    nb_fit_opts o = fit_opts(3);
    /* fit draws the permutations from the default generator, rank 0's */
    nb_manual_seed(5);
    nb_generator start = *nb_default_generator();
    nb_history *h = nb_dist_fit(d, model, x, y, &o);
    CHECK(h && nb_history_epochs(h) == 3, "nb_dist_fit");
    /* validation is over all the validation rows on every rank */
    double val = nb_history_get(h, "val_loss")[2], sum = val;
    CHECK(nb_dist_sum(d, 1, &sum) == 0, "sum");
    CHECK(sum == val * nranks, "val_loss differs between ranks");

    nb_model *ref = make_model(200, optimizer);
    nb_dataset *all = nb_dataset_new(x, y), *train, *held;
    CHECK(nb_dataset_split(all, 0.2f, &train, &held) == 0, "split");
    train_reference(nb_model_module(ref), nb_model_optimizer(ref), train, 3, &start);
    char what[64];
    snprintf(what, sizeof what, "nb_dist_fit with %s", optimizer);
    expect_same_weights(nb_model_module(model), nb_model_module(ref), what);
    nb_dataset_free(held);
    nb_dataset_free(train);
    nb_dataset_free(all);
    nb_history_free(h);
    nb_model_free(ref);
    nb_model_free(model);
}

static void test_resume(nb_dist *d, nb_tensor *x, nb_tensor *y) {
    char path[64];
    snprintf(path, sizeof path, "test_dist_resume_%d.safetensors", nranks);
    nb_fit_opts o = fit_opts(2);
    o.checkpoint_path = path;
    nb_model *first = make_model(300, "adam");
    nb_history *h = nb_dist_fit(d, first, x, y, &o);
    CHECK(h, "the first two epochs");
    nb_history_free(h);
    double nothing = 0;
    CHECK(nb_dist_sum(d, 1, &nothing) == 0, "wait for rank 0's checkpoint");

    nb_model *resumed = make_model(301 + (uint64_t)rank, "adam");
    int epoch = -1;
    CHECK(nb_model_load_checkpoint(resumed, path, &epoch) == 0 && epoch == 2, "loading the checkpoint");
    o = fit_opts(3);
    o.initial_epoch = epoch;
    h = nb_dist_fit(d, resumed, x, y, &o);
    CHECK(h && nb_history_epochs(h) == 1, "the third epoch");
    nb_history_free(h);

    nb_model *whole = make_model(300, "adam");
    o = fit_opts(3);
    h = nb_dist_fit(d, whole, x, y, &o);
    CHECK(h, "three epochs at once");
    nb_history_free(h);
    expect_same_weights(nb_model_module(resumed), nb_model_module(whole), "resumed from a checkpoint");
    nb_model_free(whole);
    nb_model_free(resumed);
    nb_model_free(first);
    CHECK(nb_dist_sum(d, 1, &nothing) == 0, "wait for every rank to have read the checkpoint");
    if (rank == 0) remove(path);
}

/* ---- bad arguments ------------------------------------------------------------------------------ */

static int no_change(nb_model *model, void *user) {
    (void)model, (void)user;
    return 0;
}

static void test_errors(nb_dist *d, nb_tensor *x, nb_tensor *y) {
    nb_scope_begin();
    CHECK(!nb_dist_reducer_new(d, 0, NULL), "a reducer of nothing");
    expect_error("nb_dist_reducer_new", "n >= 1");
    nb_module *net = make_net(1);
    int np;
    nb_tensor **p = nb_module_parameters(net, &np);
    nb_dist_reducer *red = nb_dist_reducer_new(d, np, p);
    CHECK(red && nb_dist_reducer_ready(red, np) == -1, "a parameter out of range");
    expect_error("nb_dist_reducer_ready", "parameter 4 is not in [0, 4)");
    nb_dist_reducer_free(red);
    CHECK(nb_dist_set_timeout(d, -1) == -1, "a negative timeout");
    expect_error("nb_dist_set_timeout", "got -1");

    /* a list that differs on one rank fails on every rank, and leaves the
     * nb_dist usable */
    nb_tensor *t = nb_zeros(1, (int64_t[]){rank == nranks - 1 && nranks > 1 ? 4 : 3});
    CHECK(nb_dist_broadcast(d, 1, &t) == (nranks > 1 ? -1 : 0), "broadcasting tensors of different sizes");
    if (nranks > 1) expect_error("nb_dist_broadcast", "different tensors");
    CHECK(!nb_dist_failed(d) && nb_dist_broadcast(d, np, p) == 0, "a broadcast after the refused one");

    nb_model *model = nb_model_from_module(net);
    nb_model_compile(model, "sgd", "mse", NULL);
    nb_fit_opts o = nb_fit_defaults();
    o.on_gradients = no_change;
    CHECK(!nb_dist_fit(d, model, x, y, &o), "fit with on_gradients set");
    expect_error("nb_dist_fit", "on_gradients must be NULL");
    o = nb_fit_defaults();
    o.patience = 2;
    CHECK(!nb_dist_fit(d, model, x, y, &o), "early stopping on each rank's own loss");
    expect_error("nb_dist_fit", "must monitor a validation value");
    CHECK(!nb_dist_fit(d, model, NULL, y, &o), "x NULL");
    expect_error("nb_dist_fit", "x is NULL");
    nb_model_free(model);
    nb_scope_end();
}

int main(int argc, char **argv) {
    /* buckets of 100 bytes: one or two parameters each, so several buckets
     * are in flight at once */
    nb_dist *d = nb_dist_init(&argc, &argv, &(nb_dist_opts){.timeout = 120, .bucket_bytes = 100});
    CHECK(d, "nb_dist_init");
    rank = nb_dist_rank(d);
    nranks = nb_dist_world_size(d);
    CHECK(nranks <= 3, "this test runs on 1 to 3 ranks");
    nb_dist *one_bucket = nb_dist_init(NULL, NULL, NULL); /* the default buckets: one for this model */
    CHECK(one_bucket, "a second nb_dist");
    int64_t live = nb_live_tensors();

    test_sampler(53);
    test_sampler(49);
    test_sampler(48);

    nb_tensor *x, *y;
    make_data(&x, &y);
    nb_dataset *ds = nb_dataset_new(x, y);
    const char *optimizers[] = {"sgd", "adam", "rmsprop"};
    for (int i = 0; i < 3; i++) test_loop(d, ds, optimizers[i]);
    test_overlap(d, ds);
    nb_dataset_free(ds);
    for (int i = 0; i < 3; i++) test_fit(one_bucket, x, y, optimizers[i]);
    test_errors(one_bucket, x, y);
    test_resume(one_bucket, x, y);
    nb_release(x);
    nb_release(y);
    CHECK(nb_live_tensors() == live, "tensors leaked: %lld alive, %lld before", (long long)nb_live_tensors(),
          (long long)live);
    if (rank == 0) printf("test_dist: %d rank%s, all checks passed\n", nranks, nranks == 1 ? "" : "s");
    nb_dist_finalize(one_bucket);
    nb_dist_finalize(d);
    return 0;
}
