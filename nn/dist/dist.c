/* dist.c — the MPI side of data-parallel training (nb_dist.h): starting and
 * ending MPI, broadcasting rank 0's tensors, and the reducer that averages
 * gradients in buckets.
 *
 * Every collective is non-blocking and finished by polling MPI_Test
 * against a deadline (wait_for), so that a rank that stops answering turns
 * into a message on the others rather than a hang; MPI errors are returned
 * to us (MPI_ERRORS_RETURN on a communicator of our own) for the same
 * reason.
 *
 * The gradient average does not use MPI_Allreduce: an MPI library may add
 * the ranks' values in any order (a ring starts each chunk at another
 * rank), which changes the rounding. Instead each rank receives every
 * rank's copy of one slice of the bucket (MPI_Ialltoallv, the scatter half
 * of a reduce-scatter), adds the copies in rank order 0..N-1 itself,
 * divides by N, and the slices are gathered back (MPI_Iallgatherv). The
 * result is bit-identical on every rank and to the same sum done in one
 * process, for the price of a ring all-reduce in bytes.
 */
#include "nb_dist.h"
#include "dist_internal.h"

#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#define DEFAULT_TIMEOUT 300.0
#define DEFAULT_BUCKET_BYTES ((size_t)4 << 20)

struct nb_dist {
    /* Duplicates of MPI_COMM_WORLD: our messages never meet the program's.
     * Every rank must start the collectives of a communicator in the same
     * order, and a bucket's gather may become due before or after the next
     * bucket's scatter depending on timing: scatters (and broadcasts) go on
     * comm, gathers on gather_comm, each in bucket order. */
    MPI_Comm comm, gather_comm;
    int rank, size;
    double timeout;
    size_t bucket_bytes;
    bool started_mpi; /* nb_dist_init called MPI_Init, so finalize calls MPI_Finalize */
    bool failed;
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Between two polls that found nothing to do. Open MPI moves a large
 * message on one fragment per MPI_Test, so while a collective is young the
 * polls come back to back (yielding the core to the other ranks and
 * threads that may share it); a collective still unfinished after a few
 * milliseconds waits for another rank's compute, and polls then sleep a
 * little so as not to take a core from it. */
static void pause_briefly(double waited) {
    if (waited < 5e-3) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
}

static bool usable(const char *who, nb_dist *d) {
    if (!d) {
        if (!nb_error()) nb_set_error("%s: the nb_dist is NULL", who);
        return false;
    }
    if (d->failed) {
        nb_set_error("%s: an earlier collective failed on rank %d of %d; the job must stop (nb_dist_finalize)", who,
                     d->rank, d->size);
        return false;
    }
    return true;
}

static int mpi_failed(nb_dist *d, const char *who, const char *what, int code) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", code);
    d->failed = true;
    nb_set_error("%s: %s failed on rank %d of %d: %s", who, what, d->rank, d->size, text);
    return -1;
}

static int timed_out(nb_dist *d, const char *who, const char *what) {
    d->failed = true;
    nb_set_error("%s: %s did not complete within %g s on rank %d of %d: a rank died or stopped answering; "
                 "the job must stop", who, what, d->timeout, d->rank, d->size);
    return -1;
}

/* Polls req until it completes (0) or the deadline passes (-1, message). */
static int wait_for(nb_dist *d, const char *who, const char *what, MPI_Request *req) {
    double start = now_seconds();
    for (;;) {
        int done = 0, rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_failed(d, who, what, rc);
        if (done) return 0;
        double waited = now_seconds() - start;
        if (waited > d->timeout) return timed_out(d, who, what);
        pause_briefly(waited);
    }
}

/* ---- starting and ending --------------------------------------------------------------- */

nb_dist *nb_dist_init(int *argc, char ***argv, const nb_dist_opts *opts) {
    const char *who = "nb_dist_init";
    nb_dist_opts o = opts ? *opts : (nb_dist_opts){0};
    if (o.timeout < 0 || !isfinite(o.timeout)) {
        nb_set_error("%s: timeout must be a finite number of seconds >= 0 (0: %g), got %g", who, DEFAULT_TIMEOUT,
                     o.timeout);
        return NULL;
    }
    nb_dist *d = nb_calloc(1, sizeof *d);
    if (!d) {
        nb_set_error("%s: out of memory", who);
        return NULL;
    }
    d->timeout = o.timeout > 0 ? o.timeout : DEFAULT_TIMEOUT;
    d->bucket_bytes = o.bucket_bytes ? o.bucket_bytes : DEFAULT_BUCKET_BYTES;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        if (MPI_Init(argc, argv) != MPI_SUCCESS) {
            nb_free(d);
            nb_set_error("%s: MPI_Init failed", who);
            return NULL;
        }
        d->started_mpi = true;
    }
    if (MPI_Comm_dup(MPI_COMM_WORLD, &d->comm) != MPI_SUCCESS ||
        MPI_Comm_dup(MPI_COMM_WORLD, &d->gather_comm) != MPI_SUCCESS) {
        if (d->started_mpi) MPI_Finalize();
        nb_free(d);
        nb_set_error("%s: cannot duplicate MPI_COMM_WORLD", who);
        return NULL;
    }
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(d->gather_comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    return d;
}

int nb_dist_rank(const nb_dist *d) { return d ? d->rank : 0; }
int nb_dist_world_size(const nb_dist *d) { return d ? d->size : 1; }
double nb_dist_timeout(const nb_dist *d) { return d ? d->timeout : NAN; }
bool nb_dist_failed(const nb_dist *d) { return d && d->failed; }

int nb_dist_set_timeout(nb_dist *d, double seconds) {
    if (!d) return -1;
    if (!(seconds > 0) || !isfinite(seconds)) {
        nb_set_error("nb_dist_set_timeout: the timeout must be a finite number of seconds > 0, got %g", seconds);
        return -1;
    }
    d->timeout = seconds;
    return 0;
}

void nb_dist_finalize(nb_dist *d) {
    if (!d) return;
    if (d->failed) {
        /* Requests to the lost rank can never complete, and MPI_Finalize
         * would wait for it: end every rank now. */
        fflush(NULL);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Comm_free(&d->gather_comm);
    MPI_Comm_free(&d->comm);
    if (d->started_mpi) MPI_Finalize();
    nb_free(d);
}

/* ---- broadcasting ------------------------------------------------------------------------- */

/* Whether every rank passed the same sizes: rank 0's list is sent to all,
 * each compares, and the verdicts are combined, so that all ranks go on or
 * all stop together. 1 same, 0 different, -1 a collective failed. */
static int same_everywhere(nb_dist *d, const char *who, int n, const int64_t *sizes) {
    int64_t *theirs = nb_malloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!theirs) {
        nb_set_error("%s: out of memory", who);
        return -1; /* the others wait for us and time out: out of memory here is the end anyway */
    }
    theirs[0] = n;
    memcpy(theirs + 1, sizes, sizeof(int64_t) * (size_t)n);
    int mine = 0, anywrong = 0;
    MPI_Request req;
    /* first the count, so that no rank reads past a shorter list */
    int rc = MPI_Ibcast(theirs, 1, MPI_INT64_T, 0, d->comm, &req);
    if (rc != MPI_SUCCESS || wait_for(d, who, "broadcasting the tensor count", &req) != 0) goto failed;
    mine = theirs[0] != n;
    rc = MPI_Iallreduce(&mine, &anywrong, 1, MPI_INT, MPI_MAX, d->comm, &req);
    if (rc != MPI_SUCCESS || wait_for(d, who, "comparing the tensor counts", &req) != 0) goto failed;
    if (!anywrong) {
        memcpy(theirs + 1, sizes, sizeof(int64_t) * (size_t)n);
        rc = MPI_Ibcast(theirs + 1, n, MPI_INT64_T, 0, d->comm, &req);
        if (rc != MPI_SUCCESS || wait_for(d, who, "broadcasting the tensor sizes", &req) != 0) goto failed;
        mine = memcmp(theirs + 1, sizes, sizeof(int64_t) * (size_t)n) != 0;
        rc = MPI_Iallreduce(&mine, &anywrong, 1, MPI_INT, MPI_MAX, d->comm, &req);
        if (rc != MPI_SUCCESS || wait_for(d, who, "comparing the tensor sizes", &req) != 0) goto failed;
    }
    nb_free(theirs);
    if (anywrong && mine)
        nb_set_error("%s: the ranks passed different tensors (rank %d's differ from rank 0's in number or "
                     "size); every rank must pass the same list", who, d->rank);
    else if (anywrong)
        nb_set_error("%s: the ranks passed different tensors (another rank's differ from rank 0's in number or "
                     "size); every rank must pass the same list", who);
    return !anywrong;
failed:
    nb_free(theirs);
    if (rc != MPI_SUCCESS) return mpi_failed(d, who, "a broadcast", rc);
    return -1;
}

static int broadcast(const char *who, nb_dist *d, int n, nb_tensor *const *tensors) {
    if (!usable(who, d)) return -1;
    if (n < 0 || (n > 0 && !tensors)) {
        nb_set_error("%s: needs n >= 0 tensors (got %d%s)", who, n, tensors ? "" : " and no list");
        return -1;
    }
    int64_t *sizes = nb_malloc(sizeof(int64_t) * (size_t)(n + 1)), total = 0;
    if (!sizes) {
        nb_set_error("%s: out of memory", who);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!tensors[i]) {
            nb_free(sizes);
            nb_set_error("%s: tensor %d is NULL", who, i);
            return -1;
        }
        total += sizes[i] = nb_numel(tensors[i]);
    }
    int same = same_everywhere(d, who, n, sizes);
    nb_free(sizes);
    if (same != 1) return -1;
    /* One message for all: pack, broadcast, unpack. */
    float *buf = nb_malloc(sizeof(float) * (size_t)(total + 1));
    if (!buf) {
        nb_set_error("%s: out of memory", who);
        return -1;
    }
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + at, nb_data(tensors[i]), sizeof(float) * (size_t)nb_numel(tensors[i]));
        at += nb_numel(tensors[i]);
    }
    int rc = MPI_SUCCESS;
    for (int64_t off = 0; off < total && rc == MPI_SUCCESS;) { /* MPI counts are ints */
        int count = total - off > INT32_MAX / 2 ? INT32_MAX / 2 : (int)(total - off);
        MPI_Request req;
        rc = MPI_Ibcast(buf + off, count, MPI_FLOAT, 0, d->comm, &req);
        if (rc == MPI_SUCCESS && wait_for(d, who, "broadcasting rank 0's values", &req) != 0) {
            nb_free(buf);
            return -1;
        }
        off += count;
    }
    if (rc != MPI_SUCCESS) {
        nb_free(buf);
        return mpi_failed(d, who, "broadcasting rank 0's values", rc);
    }
    at = 0;
    for (int i = 0; i < n && d->rank != 0; i++) {
        memcpy(nb_data_mut(tensors[i]), buf + at, sizeof(float) * (size_t)nb_numel(tensors[i]));
        at += nb_numel(tensors[i]);
    }
    nb_free(buf);
    return 0;
}

int nb_dist_broadcast(nb_dist *d, int n, nb_tensor *const *tensors) {
    return broadcast("nb_dist_broadcast", d, n, tensors);
}

/* The default generator as plain integers, the same on every machine. */
static int broadcast_generator(const char *who, nb_dist *d) {
    nb_generator *g = nb_default_generator();
    uint64_t v[4];
    memcpy(&v[2], &g->spare, sizeof(double));
    v[0] = g->state;
    v[1] = g->inc;
    v[3] = g->has_spare;
    MPI_Request req;
    int rc = MPI_Ibcast(v, 4, MPI_UINT64_T, 0, d->comm, &req);
    if (rc != MPI_SUCCESS) return mpi_failed(d, who, "broadcasting the generator", rc);
    if (wait_for(d, who, "broadcasting the generator", &req) != 0) return -1;
    g->state = v[0];
    g->inc = v[1];
    memcpy(&g->spare, &v[2], sizeof(double));
    g->has_spare = v[3] != 0;
    return 0;
}

int nb__dist_broadcast_generator(const char *who, nb_dist *d) {
    if (!usable(who, d)) return -1;
    return broadcast_generator(who, d);
}

int nb_dist_broadcast_model(nb_dist *d, nb_model *model) {
    const char *who = "nb_dist_broadcast_model";
    if (!usable(who, d) || !model) {
        if (!model && !nb_error()) nb_set_error("%s: the model is NULL", who);
        return -1;
    }
    int np = 0, nbuf = 0;
    nb_tensor **p = nb_model_parameters(model, &np);
    nb_tensor **b = nb_module_buffers(nb_model_module(model), &nbuf);
    if ((!p && np) || (!b && nbuf)) return -1;
    nb_tensor **all = nb_malloc(sizeof(nb_tensor *) * (size_t)(np + nbuf + 1));
    if (!all) {
        nb_set_error("%s: out of memory", who);
        return -1;
    }
    if (np) memcpy(all, p, sizeof(nb_tensor *) * (size_t)np);
    if (nbuf) memcpy(all + np, b, sizeof(nb_tensor *) * (size_t)nbuf);
    int rc = broadcast(who, d, np + nbuf, all);
    nb_free(all);
    return rc == 0 ? broadcast_generator(who, d) : -1;
}

int nb_dist_sum(nb_dist *d, int n, double *value) {
    const char *who = "nb_dist_sum";
    if (!usable(who, d)) return -1;
    if (n < 0 || (n > 0 && !value)) {
        nb_set_error("%s: needs n >= 0 values (got %d%s)", who, n, value ? "" : " and no array");
        return -1;
    }
    double *all = nb_malloc(sizeof(double) * (size_t)n * (size_t)d->size + 1);
    if (!all) {
        nb_set_error("%s: out of memory", who);
        return -1;
    }
    MPI_Request req;
    int rc = MPI_Iallgather(value, n, MPI_DOUBLE, all, n, MPI_DOUBLE, d->comm, &req);
    if (rc != MPI_SUCCESS || wait_for(d, who, "gathering the values", &req) != 0) {
        nb_free(all);
        return rc != MPI_SUCCESS ? mpi_failed(d, who, "gathering the values", rc) : -1;
    }
    for (int j = 0; j < n; j++) {
        double s = all[j];
        for (int r = 1; r < d->size; r++) s += all[(size_t)r * (size_t)n + (size_t)j];
        value[j] = s;
    }
    nb_free(all);
    return 0;
}

/* ---- the reducer ---------------------------------------------------------------------------- */

enum { IDLE, SCATTERING, REDUCED, GATHERING, DONE };

/* Consecutive parameters (in reverse order) whose gradients travel
 * together. Slice c of the bucket, counts[c] floats at displs[c], is the
 * part rank c adds up. */
typedef struct bucket {
    int first, count;     /* entries first .. first+count-1 of the reducer's list */
    int64_t numel;
    float *buf;           /* the gradients, then their averages */
    float *recv;          /* every rank's copy of this rank's slice, rank after rank */
    int *counts, *displs; /* per rank: its slice of buf */
    int *rcounts, *rdispls;
    int ready, state;
    MPI_Request req;
} bucket;

/* What a parameter's post-accumulate-grad hook needs: its reducer and its
 * place in the list. */
typedef struct hook_ctx {
    struct nb_dist_reducer *r;
    int k; /* list index */
} hook_ctx;

struct nb_dist_reducer {
    nb_dist *d;
    int n, nbuckets;
    int next_start;     /* buckets start in order: 0 .. next_start-1 have */
    int *handle;        /* by list index: its hook (0: none); NULL until attached */
    hook_ctx *ctx;      /* by list index */
    nb_tensor **list;   /* the parameters, last one first: the order backward finishes them */
    int64_t *offset;    /* list[k]'s place in its bucket */
    int *bucket_of;     /* by list index */
    int *index_of;      /* parameter i -> list index */
    bool *ready;        /* by list index */
    bucket *b;
};

static bool in_flight(const nb_dist_reducer *r) {
    for (int j = 0; r->b && j < r->nbuckets; j++)
        if (r->b[j].state != IDLE) return true;
    return false;
}

void nb_dist_reducer_free(nb_dist_reducer *r) {
    if (!r) return;
    nb_dist_reducer_detach(r);
    /* A backward that failed midway (or a caller that stops between
     * backward and wait) leaves collectives running that write into the
     * buckets: finish them first. If they cannot finish (a rank is lost;
     * the job then ends with MPI_Abort), the buckets are left to MPI, and
     * the message that explains why training stopped is kept. */
    if (in_flight(r)) {
        char why[512];
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "");
        if (r->d->failed || nb_dist_reducer_wait(r) != 0) {
            r->nbuckets = 0;
            if (why[0]) nb_set_error("%s", why);
        }
    }
    for (int k = 0; r->b && k < r->nbuckets; k++) {
        nb_free(r->b[k].buf);
        nb_free(r->b[k].recv);
        nb_free(r->b[k].counts);
        nb_free(r->b[k].displs);
        nb_free(r->b[k].rcounts);
        nb_free(r->b[k].rdispls);
    }
    nb_free(r->b);
    nb_free(r->list);
    nb_free(r->offset);
    nb_free(r->bucket_of);
    nb_free(r->index_of);
    nb_free(r->ready);
    nb_free(r->handle);
    nb_free(r->ctx);
    nb_free(r);
}

static bool bucket_make(bucket *bk, int size, int rank) {
    bk->buf = nb_malloc(sizeof(float) * (size_t)(bk->numel + 1));
    bk->counts = nb_malloc(sizeof(int) * (size_t)size);
    bk->displs = nb_malloc(sizeof(int) * (size_t)size);
    bk->rcounts = nb_malloc(sizeof(int) * (size_t)size);
    bk->rdispls = nb_malloc(sizeof(int) * (size_t)size);
    if (!bk->buf || !bk->counts || !bk->displs || !bk->rcounts || !bk->rdispls) return false;
    int64_t at = 0;
    for (int c = 0; c < size; c++) {
        bk->counts[c] = (int)(bk->numel / size + (c < bk->numel % size));
        bk->displs[c] = (int)at;
        at += bk->counts[c];
    }
    for (int c = 0; c < size; c++) {
        bk->rcounts[c] = bk->counts[rank];
        bk->rdispls[c] = c * bk->counts[rank];
    }
    bk->recv = nb_malloc(sizeof(float) * ((size_t)bk->counts[rank] * (size_t)size + 1));
    return bk->recv != NULL;
}

nb_dist_reducer *nb_dist_reducer_new(nb_dist *d, int n, nb_tensor *const *params) {
    const char *who = "nb_dist_reducer_new";
    if (!usable(who, d)) return NULL;
    if (n < 1 || !params) {
        nb_set_error("%s: needs n >= 1 parameters (got %d%s)", who, n, params ? "" : " and no list");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!params[i]) {
            nb_set_error("%s: parameter %d is NULL", who, i);
            return NULL;
        }
    /* A bucket's slice of it must fit an MPI count (an int): a bucket holds
     * at most INT32_MAX / 2 floats, and a parameter larger than that is
     * refused. */
    const int64_t max_floats = INT32_MAX / 2;
    for (int i = 0; i < n; i++)
        if (nb_numel(params[i]) > max_floats) {
            nb_set_error("%s: parameter %d has %lld elements, more than one bucket can hold (%lld)", who, i,
                         (long long)nb_numel(params[i]), (long long)max_floats);
            return NULL;
        }
    nb_dist_reducer *r = nb_calloc(1, sizeof *r);
    bool ok = r != NULL;
    if (ok) {
        r->d = d;
        r->n = n;
        r->list = nb_malloc(sizeof(nb_tensor *) * (size_t)n);
        r->offset = nb_malloc(sizeof(int64_t) * (size_t)n);
        r->bucket_of = nb_malloc(sizeof(int) * (size_t)n);
        r->index_of = nb_malloc(sizeof(int) * (size_t)n);
        r->ready = nb_calloc((size_t)n, sizeof(bool));
        r->b = nb_calloc((size_t)n, sizeof(bucket)); /* at most one bucket per parameter */
        ok = r->list && r->offset && r->bucket_of && r->index_of && r->ready && r->b;
    }
    if (ok) {
        int64_t cap = (int64_t)(d->bucket_bytes / sizeof(float));
        if (cap < 1) cap = 1;
        bucket *cur = NULL;
        for (int k = 0; k < n; k++) {
            nb_tensor *p = params[n - 1 - k];
            int64_t m = nb_numel(p);
            if (!cur || cur->numel >= cap || cur->numel + m > max_floats) {
                cur = &r->b[r->nbuckets++];
                cur->first = k;
            }
            r->list[k] = p;
            r->index_of[n - 1 - k] = k;
            r->bucket_of[k] = r->nbuckets - 1;
            r->offset[k] = cur->numel;
            cur->numel += m;
            cur->count++;
        }
        for (int k = 0; ok && k < r->nbuckets; k++) ok = bucket_make(&r->b[k], d->size, d->rank);
    }
    if (!ok) {
        nb_dist_reducer_free(r);
        nb_set_error("%s: out of memory", who);
        return NULL;
    }
    return r;
}

/* Copies the bucket's gradients in (zeros for a NULL .grad) and sends each
 * rank its slice. */
static int bucket_start(nb_dist_reducer *r, bucket *bk) {
    for (int k = bk->first; k < bk->first + bk->count; k++) {
        nb_tensor *g = nb_grad_of(r->list[k]);
        size_t bytes = sizeof(float) * (size_t)nb_numel(r->list[k]);
        if (g) memcpy(bk->buf + r->offset[k], nb_data(g), bytes);
        else memset(bk->buf + r->offset[k], 0, bytes);
    }
    int rc = MPI_Ialltoallv(bk->buf, bk->counts, bk->displs, MPI_FLOAT, bk->recv, bk->rcounts, bk->rdispls,
                            MPI_FLOAT, r->d->comm, &bk->req);
    if (rc != MPI_SUCCESS) return mpi_failed(r->d, "nb_dist_reducer", "starting a gradient bucket", rc);
    bk->state = SCATTERING;
    return 0;
}

/* Moves the bucket on if its collective has completed: the slices in,
 * then this rank's sum of them, in rank order, over N; or the averages
 * out, back into the .grads. Returns 1 if it moved, 0 if not, -1 on an MPI
 * error. */
static int bucket_advance(nb_dist_reducer *r, bucket *bk) {
    if (bk->state != SCATTERING && bk->state != GATHERING) return 0;
    int done = 0, rc = MPI_Test(&bk->req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_failed(r->d, "nb_dist_reducer", "a gradient bucket", rc);
    if (!done) return 0;
    nb_dist *d = r->d;
    if (bk->state == SCATTERING) {
        int c = bk->counts[d->rank];
        float *mine = bk->buf + bk->displs[d->rank];
        const float n = (float)d->size;
        for (int j = 0; j < c; j++) {
            float sum = bk->recv[j];
            for (int q = 1; q < d->size; q++) sum += bk->recv[(size_t)q * (size_t)c + (size_t)j];
            mine[j] = sum / n;
        }
        bk->state = REDUCED;
        return 1;
    }
    for (int k = bk->first; k < bk->first + bk->count; k++) {
        nb_tensor *g = nb_grad_of(r->list[k]);
        if (g) memcpy(nb_data_mut(g), bk->buf + r->offset[k], sizeof(float) * (size_t)nb_numel(g));
    }
    bk->state = DONE;
    return 1;
}

/* Polls every bucket in flight, and starts the gathers that are due, in
 * bucket order (see nb_dist.gather_comm). Returns how many moved, or -1. */
static int advance_all(nb_dist_reducer *r) {
    int moved = 0;
    bool earlier_gathering = true; /* every bucket before this one has started its gather */
    for (int j = 0; j < r->nbuckets; j++) {
        bucket *bk = &r->b[j];
        int m = bucket_advance(r, bk);
        if (m < 0) return -1;
        moved += m;
        if (bk->state == REDUCED && earlier_gathering) {
            int rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, bk->buf, bk->counts, bk->displs, MPI_FLOAT,
                                     r->d->gather_comm, &bk->req);
            if (rc != MPI_SUCCESS) return mpi_failed(r->d, "nb_dist_reducer", "gathering a gradient bucket", rc);
            bk->state = GATHERING;
            moved++;
        }
        earlier_gathering = earlier_gathering && (bk->state == GATHERING || bk->state == DONE);
    }
    return moved;
}

static int mark_ready(nb_dist_reducer *r, int k) {
    if (r->ready[k]) return 0;
    r->ready[k] = true;
    r->b[r->bucket_of[k]].ready++;
    /* Every rank must start the scatters in the same order, whatever order
     * its gradients became ready in: a full bucket waits for those before
     * it (in reverse parameter order, the order backward finishes them). */
    while (r->next_start < r->nbuckets && r->b[r->next_start].ready == r->b[r->next_start].count)
        if (bucket_start(r, &r->b[r->next_start++]) != 0) return -1;
    /* Open MPI moves non-blocking collectives on only inside MPI calls:
     * poll the buckets in flight while backward still runs. */
    return advance_all(r) < 0 ? -1 : 0;
}

int nb_dist_reducer_ready(nb_dist_reducer *r, int i) {
    const char *who = "nb_dist_reducer_ready";
    if (!r || !usable(who, r->d)) return -1;
    if (i < 0 || i >= r->n) {
        nb_set_error("%s: parameter %d is not in [0, %d)", who, i, r->n);
        return -1;
    }
    return mark_ready(r, r->index_of[i]);
}

int nb_dist_reducer_wait(nb_dist_reducer *r) {
    const char *who = "nb_dist_reducer_wait";
    if (!r || !usable(who, r->d)) return -1;
    for (int k = 0; k < r->n; k++)
        if (mark_ready(r, k) != 0) return -1;
    double start = now_seconds();
    for (;;) {
        int moved = advance_all(r), left = 0;
        if (moved < 0) return -1;
        for (int j = 0; j < r->nbuckets; j++) left += r->b[j].state != DONE;
        if (!left) break;
        if (moved) continue;
        double waited = now_seconds() - start;
        if (waited > r->d->timeout) {
            return timed_out(r->d, who, "averaging the gradients");
        }
        pause_briefly(waited);
    }
    for (int j = 0; j < r->nbuckets; j++) {
        r->b[j].state = IDLE;
        r->b[j].ready = 0;
    }
    memset(r->ready, 0, sizeof(bool) * (size_t)r->n);
    r->next_start = 0;
    return 0;
}

int nb_dist_reducer_started(const nb_dist_reducer *r) { return r ? r->next_start : 0; }
int nb_dist_reducer_num_buckets(const nb_dist_reducer *r) { return r ? r->nbuckets : 0; }

/* ---- starting buckets from backward ----------------------------------------------------------
 * Each parameter's post-accumulate-grad hook marks it ready the moment the
 * engine has written its final .grad, so a bucket starts while backward
 * still computes the gradients of earlier layers. A hook that finds its
 * parameter already ready sees a second backward before the wait (gradient
 * accumulation, or two losses): the bucket has gone with the first
 * backward's gradient, and the average would silently miss the second, so
 * the backward fails instead. */

static void gradient_final(nb_tensor *t, void *user) {
    (void)t;
    hook_ctx *c = user;
    nb_dist_reducer *r = c->r;
    if (!usable("nb_backward", r->d)) return;
    if (r->ready[c->k]) {
        nb_set_error("nb_backward: a parameter's gradient reached the nb_dist_reducer twice before "
                     "nb_dist_reducer_wait; its bucket has left with the first (detach the reducer, "
                     "nb_dist_reducer_detach, for all but the last backward of an accumulated step)");
        return;
    }
    mark_ready(r, c->k); /* a failure sets the message that fails the backward */
}

int nb_dist_reducer_attach(nb_dist_reducer *r) {
    const char *who = "nb_dist_reducer_attach";
    if (!r || !usable(who, r->d)) return -1;
    if (r->handle) return 0;
    r->handle = nb_calloc((size_t)r->n, sizeof(int));
    r->ctx = nb_malloc(sizeof(hook_ctx) * (size_t)r->n);
    if (!r->handle || !r->ctx) {
        nb_free(r->handle);
        nb_free(r->ctx);
        r->handle = NULL;
        r->ctx = NULL;
        nb_set_error("%s: out of memory", who);
        return -1;
    }
    for (int k = 0; k < r->n; k++) {
        r->ctx[k] = (hook_ctx){r, k};
        /* A frozen parameter gets no gradient and no hook: wait marks it. */
        if (!nb_requires_grad(r->list[k])) continue;
        int h = nb_register_post_accumulate_grad_hook(r->list[k], gradient_final, &r->ctx[k]);
        if (h < 0) {
            char why[300];
            snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "no message");
            nb_dist_reducer_detach(r);
            nb_set_error("%s: %s", who, why);
            return -1;
        }
        r->handle[k] = h;
    }
    return 0;
}

void nb_dist_reducer_detach(nb_dist_reducer *r) {
    if (!r || !r->handle) return;
    for (int k = 0; k < r->n; k++)
        if (r->handle[k] > 0) nb_remove_hook(r->list[k], r->handle[k]);
    nb_free(r->handle);
    nb_free(r->ctx);
    r->handle = NULL;
    r->ctx = NULL;
}
