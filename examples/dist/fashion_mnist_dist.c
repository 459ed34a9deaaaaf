/* fashion_mnist_dist.c — examples/fashion_mnist's networks trained
 * data-parallel over MPI (nn/dist), and the one-process run it equals bit
 * for bit. Built with meson -Dmpi=enabled.
 *
 *   mpirun -np 2 build/examples/dist/fashion_mnist_dist --cnn --batch 32
 *       two ranks, 32 images each per step: nb_dist_fit
 *   build/examples/dist/fashion_mnist_dist --cnn --batch 32 --micro-batches 2
 *       one process, steps of 64 images taken as the two micro-batches of
 *       32 the ranks take, their gradients summed in order and halved: the
 *       same final weights, bit for bit (compare the checksums)
 *   build/examples/dist/fashion_mnist_dist --cnn --batch 64
 *       one process, plain steps of 64 (for the time per epoch)
 *   options: --epochs N  --limit N (the first N training images)  --threads N
 *            --save FILE (rank 0 writes the final weights)  --data DIR
 *            --time-average K (after training: time K gradient averages
 *            alone, the communication of one step, and print the median)
 *            --bucket-kb N (gradient buckets of N KiB, 0: the default
 *            4 MiB, one bucket for these networks; smaller ones start
 *            while backward still runs)
 *
 * Every rank reads the data itself; only rank 0 prints. The last line is a
 * checksum (FNV-1a over the bytes of every weight) to compare runs with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla.h"
#include "nb_dist.h"

typedef struct options {
    bool cnn;
    int epochs, batch, micro, threads, time_average;
    int64_t limit, bucket_kb;
    const char *data, *save;
} options;

static int parse(int argc, char **argv, options *o) {
    *o = (options){.epochs = 1, .batch = 32, .micro = 0, .data = "/usr/share/datasets/fashion-mnist"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--cnn") == 0) {
            o->cnn = true;
            continue;
        }
        if (!v) break;
        if (strcmp(a, "--epochs") == 0) o->epochs = atoi(v);
        else if (strcmp(a, "--batch") == 0) o->batch = atoi(v);
        else if (strcmp(a, "--micro-batches") == 0) o->micro = atoi(v);
        else if (strcmp(a, "--threads") == 0) o->threads = atoi(v);
        else if (strcmp(a, "--limit") == 0) o->limit = atoll(v);
        else if (strcmp(a, "--data") == 0) o->data = v;
        else if (strcmp(a, "--save") == 0) o->save = v;
        else if (strcmp(a, "--time-average") == 0) o->time_average = atoi(v);
        else if (strcmp(a, "--bucket-kb") == 0) o->bucket_kb = atoll(v);
        else break;
        i++;
        continue;
    }
    if (o->epochs < 1 || o->batch < 1 || o->micro < 0 || o->bucket_kb < 0) {
        fprintf(stderr, "usage: fashion_mnist_dist [--cnn] [--epochs N] [--batch B] [--micro-batches K] "
                        "[--limit N] [--threads N] [--save FILE] [--data DIR] [--time-average K] [--bucket-kb N]\n");
        return 2;
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* examples/fashion_mnist's MLP or CNN, with Keras's Adam built here so
 * that the one-process loop below can step it too. */
static nb_model *build(bool cnn, nb_tensor *x) {
    nb_model *m = nb_model_sequential();
    if (cnn) {
        nb_model_add(m, nb_conv2d_layer(32, 3, 3, &(nb_conv2d_layer_opts){.padding = {1, 1}, .activation = "relu"}));
        nb_model_add(m, nb_max_pool2d_layer(2, 2, NULL));
        nb_model_add(m, nb_conv2d_layer(64, 3, 3, &(nb_conv2d_layer_opts){.padding = {1, 1}, .activation = "relu"}));
        nb_model_add(m, nb_max_pool2d_layer(2, 2, NULL));
        nb_model_add(m, nb_flatten_layer());
        nb_model_add(m, nb_dense(128, "relu", 0));
    } else {
        nb_model_add(m, nb_flatten_layer());
        nb_model_add(m, nb_dense(128, "relu", 784));
    }
    nb_model_add(m, nb_dense(10, "softmax", 0));
    if (nb_model_compile(m, "adam", "sparse_categorical_crossentropy", "accuracy") != 0) goto failed;
    nb_scope_begin(); /* one image through builds the lazy layers */
    bool built = nb_model_predict(m, nb_slice(x, 0, 0, 1, 1), 1) != NULL;
    nb_scope_end();
    if (!built) goto failed;
    int n;
    nb_tensor **p = nb_model_parameters(m, &n);
    nb_adam_opts keras = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-7f, .eps_hat = true};
    nb_optimizer *opt = nb_adam(n, p, &keras);
    if (!opt || nb_model_set_optimizer(m, opt) != 0) {
        nb_optimizer_free(opt);
        goto failed;
    }
    return m;
failed:
    nb_model_free(m);
    return NULL;
}

static uint64_t checksum(nb_model *m) {
    int n;
    nb_tensor **p = nb_model_parameters(m, &n);
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        const unsigned char *b = (const unsigned char *)nb_data(p[i]);
        for (size_t j = 0; j < sizeof(float) * (size_t)nb_numel(p[i]); j++) h = (h ^ b[j]) * 1099511628211ull;
    }
    return h;
}

static double epoch_start;

static bool report_epoch(nb_model *model, int epoch, const nb_history *h, void *user) {
    (void)model;
    if (nb_dist_rank(user) == 0)
        printf("epoch %d: %.2f s, loss %.4f (rank 0's shard)\n", epoch + 1, now_seconds() - epoch_start,
               nb_history_get(h, "loss")[epoch]);
    fflush(stdout);
    epoch_start = now_seconds();
    return true;
}

/* One process, as K ranks: each step the K shards' micro-batches of B,
 * their gradients summed in shard order and divided by K. */
static int train_micro_batches(nb_model *m, nb_tensor *x, nb_tensor *y, const options *o) {
    int k = o->micro, np;
    nb_module *net = nb_model_module(m);
    nb_tensor **p = nb_model_parameters(m, &np);
    nb_optimizer *opt = nb_model_optimizer(m);
    nb_dataset *ds = nb_dataset_new(x, y);
    nb_generator *gen = calloc((size_t)k, sizeof *gen);
    nb_loader **ld = calloc((size_t)k, sizeof *ld);
    float **sum = calloc((size_t)np, sizeof *sum);
    for (int r = 0; r < k; r++) {
        gen[r] = *nb_default_generator(); /* what every rank draws its permutations from */
        ld[r] = nb_loader_new(ds, &(nb_loader_opts){.batch_size = o->batch, .shuffle = true, .generator = &gen[r],
                                                     .num_shards = k, .shard = r});
    }
    for (int i = 0; i < np; i++) sum[i] = malloc(sizeof(float) * (size_t)nb_numel(p[i]));
    int rc = 0;
    for (int epoch = 0; epoch < o->epochs && rc == 0; epoch++) {
        double t0 = now_seconds(), loss_sum = 0;
        int64_t rows0 = 0;
        for (int r = 0; r < k; r++) nb_loader_reset(ld[r]);
        for (int64_t s = 0; s < nb_loader_num_batches(ld[0]) && rc == 0; s++) {
            for (int r = 0; r < k && rc == 0; r++) {
                nb_tensor *xb, *yb;
                nb_loader_next(ld[r], &xb, &yb);
                nb_scope_begin();
                nb_optimizer_zero_grad(opt);
                nb_tensor *loss = nb_sparse_categorical_crossentropy(nb_module_forward(net, xb), yb);
                if (!loss || nb_backward(loss) != 0) rc = -1;
                if (r == 0 && rc == 0) {
                    loss_sum += (double)nb_item(loss) * (double)nb_dim(xb, 0);
                    rows0 += nb_dim(xb, 0);
                }
                for (int i = 0; i < np && rc == 0; i++) {
                    const float *g = nb_data(nb_grad_of(p[i]));
                    for (int64_t j = 0; j < nb_numel(p[i]); j++) sum[i][j] = r == 0 ? g[j] : sum[i][j] + g[j];
                }
                nb_scope_end();
            }
            for (int i = 0; i < np && rc == 0; i++) {
                float *g = nb_data_mut(nb_grad_of(p[i]));
                for (int64_t j = 0; j < nb_numel(p[i]); j++) g[j] = sum[i][j] / (float)k;
            }
            if (rc == 0) rc = nb_optimizer_step(opt);
        }
        printf("epoch %d: %.2f s, loss %.4f (micro-batch 0's rows)\n", epoch + 1, now_seconds() - t0,
               loss_sum / (double)rows0);
        fflush(stdout);
    }
    for (int i = 0; i < np; i++) free(sum[i]);
    for (int r = 0; r < k; r++) nb_loader_free(ld[r]);
    free(sum);
    free(ld);
    free(gen);
    nb_dataset_free(ds);
    return rc;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The gradient average alone, as a step does it after backward: every
 * rank starts together (a collective first), so that the time is the
 * communication's and not one rank waiting for another's compute. */
static int time_average(nb_dist *d, nb_model *model, int k) {
    int np;
    nb_tensor **p = nb_model_parameters(model, &np);
    nb_dist_reducer *r = nb_dist_reducer_new(d, np, p);
    double *t = calloc((size_t)k, sizeof *t), sync = 0;
    int rc = r && t ? 0 : -1;
    for (int i = 0; i < k && rc == 0; i++) {
        rc = nb_dist_sum(d, 1, &sync);
        double t0 = now_seconds();
        if (rc == 0) rc = nb_dist_reducer_wait(r);
        t[i] = now_seconds() - t0;
    }
    if (rc == 0 && nb_dist_rank(d) == 0) {
        qsort(t, (size_t)k, sizeof *t, by_value);
        printf("averaging %.2f MB of gradients over %d rank(s): median %.3f ms, fastest %.3f ms (of %d)\n",
               4e-6 * (double)nb_module_num_weights(nb_model_module(model)), nb_dist_world_size(d), 1e3 * t[k / 2],
               1e3 * t[0], k);
    }
    free(t);
    nb_dist_reducer_free(r);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    if (parse(argc, argv, &o) != 0) return 2;
    nb_dist *d = nb_dist_init(&argc, &argv, &(nb_dist_opts){.bucket_bytes = (size_t)o.bucket_kb * 1024});
    if (!d) {
        fprintf(stderr, "fashion_mnist_dist: %s\n", nb_error());
        return 1;
    }
    int rank = nb_dist_rank(d), ranks = nb_dist_world_size(d);
    if (o.threads > 0) nb_set_num_threads(o.threads);
    if (ranks > 1 && o.micro > 0) {
        if (rank == 0) fprintf(stderr, "fashion_mnist_dist: --micro-batches is for one process\n");
        nb_dist_finalize(d);
        return 2;
    }
    nb_manual_seed(0);
    nb_scope_begin();
    char path[1024];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", o.data);
    nb_tensor *x = nb_read_idx_images(path, false);
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", o.data);
    nb_tensor *y = nb_read_idx_labels(path, 10);
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", o.data);
    nb_tensor *xt = nb_read_idx_images(path, false);
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", o.data);
    nb_tensor *yt = nb_read_idx_labels(path, 10);
    if (!x || !y || !xt || !yt) {
        fprintf(stderr, "fashion_mnist_dist: %s\n(apt-get install dataset-fashion-mnist, or pass --data DIR)\n",
                nb_error());
        nb_dist_finalize(d);
        return 1;
    }
    if (o.limit > 0 && o.limit < nb_dim(x, 0)) {
        x = nb_slice(x, 0, 0, o.limit, 1);
        y = nb_slice(y, 0, 0, o.limit, 1);
    }
    if (o.cnn) {
        x = nb_unsqueeze(x, 1);
        xt = nb_unsqueeze(xt, 1);
    }
    nb_model *model = build(o.cnn, x);
    if (!model) goto failed;
    if (rank == 0) {
        if (ranks > 1)
            printf("%d ranks x %d images per step", ranks, o.batch);
        else if (o.micro > 0)
            printf("one process, %d micro-batches x %d images per step", o.micro, o.batch);
        else
            printf("one process, %d images per step", o.batch);
        printf("; %s, %lld training images, %d epoch(s)\n", o.cnn ? "CNN" : "MLP 784-128-10",
               (long long)nb_dim(x, 0), o.epochs);
        fflush(stdout);
    }

    if (o.micro > 0) {
        if (train_micro_batches(model, x, y, &o) != 0) goto failed;
    } else {
        nb_fit_opts fit = nb_fit_defaults();
        fit.epochs = o.epochs;
        fit.batch_size = o.batch;
        fit.verbose = 0;
        fit.on_epoch_end = report_epoch;
        fit.user = d;
        epoch_start = now_seconds();
        nb_history *h = nb_dist_fit(d, model, x, y, &fit);
        bool ok = h && !nb_history_stop_reason(h)[0];
        nb_history_free(h);
        if (!ok) goto failed;
    }
    if (o.time_average > 0 && time_average(d, model, o.time_average) != 0) goto failed;
    if (rank == 0) {
        float out[2] = {0, 0};
        if (nb_model_evaluate(model, xt, yt, 500, out, 2) != 2) goto failed;
        printf("test accuracy: %.2f%%\n", 100.0 * out[1]);
        if (o.save && nb_save_parameters(nb_model_module(model), o.save, NULL) != 0) goto failed;
        printf("weights checksum: %016llx\n", (unsigned long long)checksum(model));
    }
    nb_model_free(model);
    nb_scope_end();
    nb_dist_finalize(d);
    return 0;

failed:
    fprintf(stderr, "fashion_mnist_dist (rank %d): %s\n", rank, nb_error() ? nb_error() : "training stopped");
    nb_model_free(model);
    nb_dist_finalize(d);
    return 1;
}
