/* data.c — datasets over in-memory tensors and the loader that cuts them
 * into batches (nb_data.h).
 *
 * A dataset is two tensors sharing the storage of the user's x and y, and
 * the list of their rows it stands for: a split or a subset is another list
 * over the same storage, so nothing is copied until a batch is gathered.
 *
 * The loader is made so that an epoch allocates nothing: every buffer is
 * made by nb_loader_new (a full batch, a second one for the worker, and the
 * short last batch when there is one), and a batch is a row-by-row copy into
 * one of them. The batch's slot follows from its index alone (the last short
 * batch in the tail buffers, the others alternating between the two full
 * ones), so the worker and the caller never need to agree on anything but
 * which batch is next. With shards (the distributed sampler), the batch's
 * first row in the permutation also follows from its index and the shard.
 *
 * The worker thread sees raw float pointers taken at creation and the
 * permutation; it calls no nabla function, so it touches no thread-local
 * state (scopes, errors, the default generator) and no tensor header. One
 * job at most is in flight: nb_loader_next waits for batch k, hands it out,
 * and asks for batch k + 1, which goes into the other slot; nb_loader_reset
 * and nb_loader_free wait for the worker to be idle before they rewrite the
 * permutation or stop it. The mutex orders every hand-over, which is what
 * ThreadSanitizer checks.
 */
#include "nb_data.h"
#include "nn_internal.h"

#include <pthread.h>
#include <string.h>

struct nb_dataset {
    nb_tensor *x, *y; /* share the user's storage; held as a container holds */
    int64_t n;        /* samples */
    int64_t *rows;    /* which rows of x and y, in order */
};

/* A batch's buffers: the tensors lent to the caller and their data. */
typedef struct slot {
    nb_tensor *x, *y;
    float *xd, *yd;
} slot;

struct nb_loader {
    nb_dataset *ds;
    int64_t batch, nfull, tail, nbatches; /* tail: rows of the last short batch, 0 if none */
    int64_t shards, shard;   /* this loader's part of each step (nb_loader_opts) */
    int64_t tail_start;      /* where the last short batch starts in the order */
    bool shuffle, prefetch, started;
    nb_generator *gen;
    int64_t *order;          /* the epoch's rows of x and y */
    const float *xsrc, *ysrc;
    int64_t xrow, yrow;      /* floats per sample */
    slot full[2], last;      /* full[1] only with prefetch */
    int64_t next;            /* the batch nb_loader_next hands out next */
    /* the worker */
    bool threaded, pending, busy, quit;
    int64_t job;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
};

/* A NULL argument: the message of the call that made it stands; without
 * one, this function says which argument was NULL. */
static void null_argument(const char *who, const char *what) {
    if (!nb_error()) nb_set_error("%s: %s is NULL", who, what);
}

/* ---- datasets ---------------------------------------------------------------------- */

/* A dataset over rows[0..n) of x and y (rows NULL: 0..n-1). */
static nb_dataset *dataset_make(const char *who, nb_tensor *x, nb_tensor *y, int64_t n, const int64_t *rows) {
    nb_dataset *ds = nb_calloc(1, sizeof *ds);
    if (ds) ds->rows = nb_malloc(sizeof(int64_t) * (size_t)n);
    if (ds && ds->rows) ds->x = nb_adopt(nb_detach(x), "nb_dataset");
    if (ds && ds->x) ds->y = nb_adopt(nb_detach(y), "nb_dataset");
    if (!ds || !ds->y) {
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "out of memory");
        nb_dataset_free(ds);
        nb_set_error("%s: %s", who, why);
        return NULL;
    }
    ds->n = n;
    for (int64_t i = 0; i < n; i++) ds->rows[i] = rows ? rows[i] : i;
    return ds;
}

bool nb__same_rows(const char *who, const nb_tensor *x, const nb_tensor *y) {
    if (nb_ndim(x) >= 1 && nb_ndim(y) >= 1 && nb_dim(x, 0) == nb_dim(y, 0)) return true;
    char a[96], b[96];
    nb_set_error("%s: x %s and y %s must have the same number of rows", who,
                 nb_shape_str(nb_ndim(x), nb_shape(x), a, sizeof a), nb_shape_str(nb_ndim(y), nb_shape(y), b, sizeof b));
    return false;
}

nb_dataset *nb_dataset_new(nb_tensor *x, nb_tensor *y) {
    const char *who = "nb_dataset_new";
    if (!x || !y) {
        null_argument(who, x ? "y" : "x");
        return NULL;
    }
    if (!nb__same_rows(who, x, y)) return NULL;
    char a[96];
    if (nb_dim(x, 0) == 0) {
        nb_set_error("%s: no samples (x %s)", who, nb_shape_str(nb_ndim(x), nb_shape(x), a, sizeof a));
        return NULL;
    }
    return dataset_make(who, x, y, nb_dim(x, 0), NULL);
}

int nb_dataset_split(nb_dataset *ds, float fraction, nb_dataset **train, nb_dataset **val) {
    const char *who = "nb_dataset_split";
    if (train) *train = NULL;
    if (val) *val = NULL;
    if (!train || !val) {
        nb_set_error("%s: train and val must point to where the two datasets go", who);
        return -1;
    }
    if (!ds) {
        null_argument(who, "ds");
        return -1;
    }
    if (!(fraction > 0 && fraction < 1)) {
        nb_set_error("%s: fraction must be in (0, 1), got %g", who, (double)fraction);
        return -1;
    }
    int64_t n_train = nb__training_rows(ds->n, fraction);
    if (n_train < 1 || n_train >= ds->n) {
        nb_set_error("%s: fraction %g of %lld samples leaves no %s samples", who, (double)fraction,
                     (long long)ds->n, n_train < 1 ? "training" : "validation");
        return -1;
    }
    *train = dataset_make(who, ds->x, ds->y, n_train, ds->rows);
    *val = *train ? dataset_make(who, ds->x, ds->y, ds->n - n_train, ds->rows + n_train) : NULL;
    if (!*val) {
        nb_dataset_free(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}

nb_dataset *nb_dataset_subset(nb_dataset *ds, int64_t n, const int64_t *rows) {
    const char *who = "nb_dataset_subset";
    if (!ds) {
        null_argument(who, "ds");
        return NULL;
    }
    if (n < 1 || !rows) {
        nb_set_error("%s: needs n >= 1 rows (got %lld%s)", who, (long long)n, rows ? "" : " and no list");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        if (rows[i] < 0 || rows[i] >= ds->n) {
            nb_set_error("%s: row %lld (entry %lld) is out of range for %lld samples", who, (long long)rows[i],
                         (long long)i, (long long)ds->n);
            return NULL;
        }
    nb_dataset *sub = dataset_make(who, ds->x, ds->y, n, rows);
    for (int64_t i = 0; sub && i < n; i++) sub->rows[i] = ds->rows[rows[i]];
    return sub;
}

int64_t nb_dataset_len(const nb_dataset *ds) { return ds ? ds->n : 0; }
nb_tensor *nb_dataset_x(const nb_dataset *ds) { return ds ? ds->x : NULL; }
nb_tensor *nb_dataset_y(const nb_dataset *ds) { return ds ? ds->y : NULL; }

void nb_dataset_free(nb_dataset *ds) {
    if (!ds) return;
    if (ds->x) nb_disown(ds->x, "nb_dataset_free");
    if (ds->y) nb_disown(ds->y, "nb_dataset_free");
    nb_free(ds->rows);
    nb_free(ds);
}

/* ---- gathering a batch ------------------------------------------------------------- */

/* Where batch k goes: the tail for a short last batch, else a full slot
 * (alternating when a worker fills one while the caller reads the other). */
static slot *slot_of(nb_loader *ld, int64_t k) {
    if (k == ld->nfull) return &ld->last;
    return &ld->full[ld->prefetch ? k % 2 : 0];
}

/* Copies the rows of batch k into its slot: the worker's whole job, so it
 * reads only fields fixed at creation, the permutation and the slot's data. */
static void gather(nb_loader *ld, int64_t k) {
    slot *s = slot_of(ld, k);
    const int64_t *rows = ld->order + (k == ld->nfull ? ld->tail_start : (k * ld->shards + ld->shard) * ld->batch);
    int64_t b = k == ld->nfull ? ld->tail : ld->batch;
    size_t xbytes = sizeof(float) * (size_t)ld->xrow, ybytes = sizeof(float) * (size_t)ld->yrow;
    for (int64_t i = 0; i < b; i++) {
        memcpy(s->xd + i * ld->xrow, ld->xsrc + rows[i] * ld->xrow, xbytes);
        memcpy(s->yd + i * ld->yrow, ld->ysrc + rows[i] * ld->yrow, ybytes);
    }
}

static void *worker_main(void *arg) {
    nb_loader *ld = arg;
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        while (!ld->pending && !ld->quit) pthread_cond_wait(&ld->wake, &ld->mu);
        if (ld->quit) break;
        int64_t k = ld->job;
        ld->pending = false;
        ld->busy = true;
        pthread_mutex_unlock(&ld->mu);
        gather(ld, k);
        pthread_mutex_lock(&ld->mu);
        ld->busy = false;
        pthread_cond_signal(&ld->done);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

/* Asks the worker for batch k (it is idle: one job at a time). */
static void submit(nb_loader *ld, int64_t k) {
    pthread_mutex_lock(&ld->mu);
    ld->job = k;
    ld->pending = true;
    pthread_cond_signal(&ld->wake);
    pthread_mutex_unlock(&ld->mu);
}

/* Waits until the worker has finished what it was asked. */
static void wait_idle(nb_loader *ld) {
    pthread_mutex_lock(&ld->mu);
    while (ld->pending || ld->busy) pthread_cond_wait(&ld->done, &ld->mu);
    pthread_mutex_unlock(&ld->mu);
}

/* ---- the loader --------------------------------------------------------------------- */

/* Batch buffers [rows, ...] for x and y, held by the loader. */
static bool slot_make(nb_loader *ld, slot *s, int64_t rows) {
    int64_t shape[NB_MAX_DIMS];
    nb_tensor *src[2] = {ld->ds->x, ld->ds->y}, *made[2];
    for (int j = 0; j < 2; j++) {
        memcpy(shape, nb_shape(src[j]), sizeof(int64_t) * (size_t)nb_ndim(src[j]));
        shape[0] = rows;
        made[j] = nb_adopt(nb_empty(nb_ndim(src[j]), shape), "nb_loader");
    }
    s->x = made[0];
    s->y = made[1];
    if (!s->x || !s->y) return false;
    s->xd = nb_data_mut(s->x);
    s->yd = nb_data_mut(s->y);
    return true;
}

static void slot_free(slot *s) {
    if (s->x) nb_disown(s->x, "nb_loader_free");
    if (s->y) nb_disown(s->y, "nb_loader_free");
}

nb_loader *nb_loader_new(nb_dataset *ds, const nb_loader_opts *opts) {
    const char *who = "nb_loader_new";
    if (!ds) {
        null_argument(who, "the dataset");
        return NULL;
    }
    nb_loader_opts o = opts ? *opts : (nb_loader_opts){.batch_size = 32};
    if (o.batch_size < 1) {
        nb_set_error("%s: batch_size must be >= 1, got %d", who, o.batch_size);
        return NULL;
    }
    if (o.num_shards < 0 || o.shard < 0 || o.shard >= (o.num_shards ? o.num_shards : 1)) {
        nb_set_error("%s: shard %d is not in [0, num_shards) with num_shards %d", who, o.shard, o.num_shards);
        return NULL;
    }
    nb_loader *ld = nb_calloc(1, sizeof *ld);
    if (!ld) {
        nb_set_error("%s: out of memory", who);
        return NULL;
    }
    ld->ds = ds;
    ld->batch = o.batch_size;
    ld->shards = o.num_shards ? o.num_shards : 1;
    ld->shard = o.shard;
    /* A step reads shards·batch rows; the rows left after the last full
     * step are dealt out evenly, the first (left mod shards) shards taking
     * one more, when every shard gets at least one. */
    int64_t step = ld->shards * ld->batch, left = ds->n % step;
    ld->nfull = ds->n / step;
    ld->tail = o.drop_last || left < ld->shards ? 0 : left / ld->shards + (ld->shard < left % ld->shards);
    ld->tail_start = ld->nfull * step + ld->shard * (left / ld->shards) +
                     (ld->shard < left % ld->shards ? ld->shard : left % ld->shards);
    ld->nbatches = ld->nfull + (ld->tail > 0);
    ld->shuffle = o.shuffle;
    ld->gen = o.generator;
    ld->prefetch = o.prefetch;
    ld->xsrc = nb_data(ds->x);
    ld->ysrc = nb_data(ds->y);
    ld->xrow = nb_numel(ds->x) / nb_dim(ds->x, 0);
    ld->yrow = nb_numel(ds->y) / nb_dim(ds->y, 0);
    ld->order = nb_malloc(sizeof(int64_t) * (size_t)ds->n);
    bool ok = ld->order != NULL;
    if (ok) memcpy(ld->order, ds->rows, sizeof(int64_t) * (size_t)ds->n);
    if (ok && ld->nfull > 0) ok = slot_make(ld, &ld->full[0], ld->batch);
    if (ok && ld->nfull > 1 && ld->prefetch) ok = slot_make(ld, &ld->full[1], ld->batch);
    if (ok && ld->tail > 0) ok = slot_make(ld, &ld->last, ld->tail);
    if (!ok) {
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "out of memory");
        nb_loader_free(ld);
        nb_set_error("%s: %s", who, why);
        return NULL;
    }
    if (ld->prefetch) {
        int err = pthread_mutex_init(&ld->mu, NULL);
        if (!err && (err = pthread_cond_init(&ld->wake, NULL)) != 0) pthread_mutex_destroy(&ld->mu);
        if (!err && (err = pthread_cond_init(&ld->done, NULL)) != 0) {
            pthread_cond_destroy(&ld->wake);
            pthread_mutex_destroy(&ld->mu);
        }
        if (!err && (err = pthread_create(&ld->thread, NULL, worker_main, ld)) != 0) {
            pthread_cond_destroy(&ld->done);
            pthread_cond_destroy(&ld->wake);
            pthread_mutex_destroy(&ld->mu);
        }
        if (err) {
            nb_loader_free(ld);
            nb_set_error("%s: cannot start the prefetching thread (%s)", who, strerror(err));
            return NULL;
        }
        ld->threaded = true;
    }
    return ld;
}

void nb_loader_reset(nb_loader *ld) {
    if (!ld) return;
    if (ld->threaded) wait_idle(ld); /* the worker may still read the old order */
    if (ld->shuffle) {
        nb_randperm(ld->gen, ld->ds->n, ld->order);
        for (int64_t i = 0; i < ld->ds->n; i++) ld->order[i] = ld->ds->rows[ld->order[i]];
    }
    ld->started = true;
    ld->next = 0;
    if (ld->threaded && ld->nbatches > 0) submit(ld, 0);
}

bool nb_loader_next(nb_loader *ld, nb_tensor **x, nb_tensor **y) {
    if (x) *x = NULL;
    if (y) *y = NULL;
    if (!ld) {
        null_argument("nb_loader_next", "the loader");
        return false;
    }
    if (!x || !y) {
        nb_set_error("nb_loader_next: x and y must point to where the batch goes");
        return false;
    }
    if (!ld->started) nb_loader_reset(ld);
    if (ld->next >= ld->nbatches) return false;
    int64_t k = ld->next++;
    if (ld->threaded) {
        wait_idle(ld); /* batch k is in its slot */
        if (k + 1 < ld->nbatches) submit(ld, k + 1);
    } else {
        gather(ld, k);
    }
    slot *s = slot_of(ld, k);
    /* New values: bump the versions here, on the caller's thread, so that a
     * graph that saved the last batch's values reports the change. */
    (void)nb_data_mut(s->x);
    (void)nb_data_mut(s->y);
    *x = s->x;
    *y = s->y;
    return true;
}

int64_t nb_loader_num_batches(const nb_loader *ld) { return ld ? ld->nbatches : 0; }
nb_dataset *nb_loader_dataset(const nb_loader *ld) { return ld ? ld->ds : NULL; }

void nb_loader_free(nb_loader *ld) {
    if (!ld) return;
    if (ld->threaded) {
        pthread_mutex_lock(&ld->mu);
        ld->quit = true; /* a job in flight finishes first: the worker checks between jobs */
        pthread_cond_signal(&ld->wake);
        pthread_mutex_unlock(&ld->mu);
        pthread_join(ld->thread, NULL);
        pthread_cond_destroy(&ld->done);
        pthread_cond_destroy(&ld->wake);
        pthread_mutex_destroy(&ld->mu);
    }
    slot_free(&ld->full[0]);
    slot_free(&ld->full[1]);
    slot_free(&ld->last);
    nb_free(ld->order);
    nb_free(ld);
}
