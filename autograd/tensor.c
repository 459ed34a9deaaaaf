/* tensor.c — tensors and their storage: allocation, creation, queries and
 * printing.
 *
 * Storage blocks are 64-byte aligned and come in power-of-two size classes;
 * a freed block goes back to its class's free list and the next tensor of
 * that size takes it, so a training loop that makes the same shapes every
 * step stops calling malloc after its first step. Tensor structs are pooled
 * the same way, first in first out behind a quarantine: a freed struct is
 * marked dead and handed out again only after NB_QUARANTINE later frees, so
 * that a stale handle (a tensor released twice) finds the dead mark and is
 * reported instead of releasing whichever tensor took the struct over. The
 * quarantine costs its structs' memory once, not an allocation per step.
 * Both pools are returned to the system at exit, so valgrind sees every
 * byte freed.
 */
#include "tensor_internal.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- pools ---------------------------------------------------------------- */

#define NB_ALIGN 64
#define NB_SIZE_CLASSES 48
#define NB_POOL_MAX_BYTES ((int64_t)1 << 30) /* cached beyond this: freed */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static nb_storage *storage_free[NB_SIZE_CLASSES];
static int64_t pool_bytes;
/* Freed tensor structs, oldest first; reused only beyond the quarantine. */
#define NB_QUARANTINE 1024
static nb_tensor *tensor_free, *tensor_free_last;
static int64_t tensor_free_count;
static atomic_llong live_tensors;
static bool atexit_registered;

static int64_t class_floats(int c) { return (int64_t)16 << c; }

/* Frees the shared pools, after the calling thread's cache joined them
 * (other threads' caches stay theirs until they exit). */
static void pool_cleanup(void) {
    nb__pool_thread_exit();
    pthread_mutex_lock(&pool_lock);
    for (int c = 0; c < NB_SIZE_CLASSES; c++) {
        while (storage_free[c]) {
            nb_storage *s = storage_free[c];
            storage_free[c] = *(nb_storage **)s->data;
            nb_free(s);
        }
    }
    while (tensor_free) {
        nb_tensor *t = tensor_free;
        tensor_free = t->next_free;
        nb_free(t);
    }
    tensor_free_last = NULL;
    tensor_free_count = 0;
    pool_bytes = 0;
    pthread_mutex_unlock(&pool_lock);
}

static void register_cleanup_locked(void) {
    if (!atexit_registered) {
        atexit_registered = true;
        atexit(pool_cleanup);
    }
}

/* The class of a block of numel floats, or -1 when none is large enough. */
static int size_class_of(int64_t numel) {
#if defined(__GNUC__) || defined(__clang__)
    /* the smallest c with 16 << c >= numel, from the bit length of numel - 1 */
    if (numel <= 16) return 0;
    int c = 64 - __builtin_clzll((unsigned long long)(numel - 1)) - 4;
    return c < NB_SIZE_CLASSES ? c : -1;
#else
    int c = 0;
    while (c < NB_SIZE_CLASSES - 1 && class_floats(c) < numel) c++;
    return class_floats(c) < numel ? -1 : c;
#endif
}

/* A parked block of class c, or NULL. Under pool_lock. */
static nb_storage *storage_take_locked(int c) {
    nb_storage *s = storage_free[c];
    if (s) {
        storage_free[c] = *(nb_storage **)s->data;
        pool_bytes -= class_floats(c) * (int64_t)sizeof(float);
    }
    return s;
}

/* Parks a block no tensor uses any more; returns it when the pool is full,
 * for the caller to free once the lock is released. Under pool_lock. */
static nb_storage *storage_park_locked(nb_storage *s) {
    int64_t bytes = s->capacity * (int64_t)sizeof(float);
    if (pool_bytes + bytes > NB_POOL_MAX_BYTES) return s;
    *(nb_storage **)s->data = storage_free[s->size_class];
    storage_free[s->size_class] = s;
    pool_bytes += bytes;
    return NULL;
}

/* s (a parked block, or NULL for a new one) made ready as fresh storage of
 * class c; NULL when out of memory. The header sits in the first 64 bytes
 * of the block, the data after it. */
static nb_storage *storage_init(nb_storage *s, int c) {
    if (!s) {
        size_t bytes = NB_ALIGN + (size_t)class_floats(c) * sizeof(float);
        void *block = nb_aligned_alloc(NB_ALIGN, bytes);
        if (!block) return NULL;
        s = block;
        s->data = (float *)((char *)block + NB_ALIGN);
        s->size_class = c;
        s->capacity = class_floats(c);
    }
    atomic_init(&s->refcount, 1);
    s->version = 0;
    return s;
}

/* The oldest parked struct, once it has served its quarantine, or NULL.
 * Under pool_lock. */
static nb_tensor *struct_take_locked(void) {
    if (tensor_free_count <= NB_QUARANTINE) return NULL;
    nb_tensor *t = tensor_free;
    tensor_free = t->next_free;
    if (!tensor_free) tensor_free_last = NULL;
    tensor_free_count--;
    return t;
}

/* t (a parked struct, or NULL for a new one) made ready as a live tensor
 * with no storage yet; NULL when out of memory. */
static nb_tensor *struct_init(nb_tensor *t) {
    if (!t) t = nb_malloc(sizeof *t);
    if (!t) return NULL;
    /* Every field but the trailing arrays, which are read only below counts
     * zeroed here: clearing those too was a quarter of making a tensor. */
    memset(t, 0, offsetof(nb_tensor, shape));
    t->name[0] = '\0';
    t->magic = NB_TENSOR_LIVE;
    atomic_init(&t->refcount, 1);
    t->inputs = t->inputs_inline;
    atomic_fetch_add(&live_tensors, 1);
    return t;
}

/* ---- per-thread caches -----------------------------------------------------
 * A small network's training step makes and frees a few dozen tensors, and
 * taking pool_lock twice for each (struct and storage, both ways) was a
 * tenth of the step. So each thread keeps, in front of the shared pools:
 *   - the blocks of the small classes it freed, up to NB_LOCAL_BLOCKS per
 *     class, for its next tensors of that size;
 *   - the structs it freed, passed to the shared quarantine in batches of
 *     NB_LOCAL_BATCH, and structs taken from its far end in batches.
 * A steady loop then takes the lock twice per NB_LOCAL_BATCH tensors. The
 * quarantine still holds: a freed struct joins the shared queue's tail and
 * leaves it from the head after NB_QUARANTINE later frees, only later than
 * before. A thread's cache returns to the shared pools when it exits (see
 * nb__thread_cache_used), and the calling thread's at nb_empty_cache and at
 * exit. */

#define NB_LOCAL_BATCH 32
#define NB_LOCAL_CLASSES 7 /* blocks of at most 1024 floats */
#define NB_LOCAL_BLOCKS 32

typedef struct local_pool {
    nb_tensor *freed[NB_LOCAL_BATCH]; /* dead, oldest first, not yet queued */
    nb_tensor *ready[NB_LOCAL_BATCH]; /* past the quarantine, to reuse */
    int nfreed, nready;
    nb_storage *blocks[NB_LOCAL_CLASSES][NB_LOCAL_BLOCKS];
    int nblocks[NB_LOCAL_CLASSES];
    bool registered; /* for the flush at thread exit */
} local_pool;

static _Thread_local local_pool local;

static void local_used(void) {
    if (!local.registered) {
        local.registered = true;
        nb__thread_cache_used();
    }
}

/* Appends the batch of freed structs to the shared queue. Under pool_lock. */
static void queue_freed_locked(void) {
    for (int i = 0; i < local.nfreed; i++) {
        nb_tensor *t = local.freed[i];
        if (tensor_free_last) tensor_free_last->next_free = t;
        else tensor_free = t;
        tensor_free_last = t;
        tensor_free_count++;
    }
    local.nfreed = 0;
}

void nb__pool_thread_exit(void) {
    pthread_mutex_lock(&pool_lock);
    queue_freed_locked();
    /* Structs taken but unused were past the quarantine: back to the head,
     * last taken first, so the queue keeps its order. */
    while (local.nready > 0) {
        nb_tensor *t = local.ready[--local.nready];
        t->next_free = tensor_free;
        tensor_free = t;
        if (!tensor_free_last) tensor_free_last = t;
        tensor_free_count++;
    }
    for (int c = 0; c < NB_LOCAL_CLASSES; c++)
        while (local.nblocks[c] > 0) nb_free(storage_park_locked(local.blocks[c][--local.nblocks[c]]));
    local.registered = false;
    pthread_mutex_unlock(&pool_lock);
}

/* Takes a batch of structs past the quarantine; false when there is none. */
static NB_NOINLINE bool struct_refill(void) {
    pthread_mutex_lock(&pool_lock);
    register_cleanup_locked();
    nb_tensor *t;
    while (local.nready < NB_LOCAL_BATCH && (t = struct_take_locked())) local.ready[local.nready++] = t;
    pthread_mutex_unlock(&pool_lock);
    if (local.nready == 0) return false;
    local_used();
    return true;
}

static nb_tensor *struct_take(void) {
    if (local.nready == 0 && !struct_refill()) return NULL;
    return local.ready[--local.nready];
}

static NB_NOINLINE void struct_flush(void) {
    pthread_mutex_lock(&pool_lock);
    queue_freed_locked();
    pthread_mutex_unlock(&pool_lock);
}

static void struct_park(nb_tensor *t) {
    local_used();
    local.freed[local.nfreed++] = t;
    if (local.nfreed == NB_LOCAL_BATCH) struct_flush();
}

static NB_NOINLINE nb_storage *storage_take_shared(int c) {
    pthread_mutex_lock(&pool_lock);
    register_cleanup_locked();
    nb_storage *s = storage_take_locked(c);
    pthread_mutex_unlock(&pool_lock);
    return s;
}

static nb_storage *storage_take(int c) {
    if (c < NB_LOCAL_CLASSES && local.nblocks[c] > 0) return local.blocks[c][--local.nblocks[c]];
    return storage_take_shared(c);
}

static NB_NOINLINE void storage_park_shared(nb_storage *s) {
    pthread_mutex_lock(&pool_lock);
    s = storage_park_locked(s);
    pthread_mutex_unlock(&pool_lock);
    nb_free(s); /* the pool was full */
}

static void storage_park(nb_storage *s) {
    int c = s->size_class;
    if (c < NB_LOCAL_CLASSES && local.nblocks[c] < NB_LOCAL_BLOCKS) {
        local_used();
        local.blocks[c][local.nblocks[c]++] = s;
        return;
    }
    storage_park_shared(s);
}

static nb_tensor *tensor_struct_new(void) { return struct_init(struct_take()); }

int64_t nb_live_tensors(void) { return atomic_load(&live_tensors); }

void nb_empty_cache(void) {
    pool_cleanup();
    nb__engine_thread_exit();
}

/* ---- lifetime --------------------------------------------------------------- */

char *nb_shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
    size_t n = 0;
    if (size == 0) return buf;
    buf[0] = '\0';
    n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "[");
    for (int i = 0; i < ndim; i++)
        n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s%lld", i ? "," : "",
                              (long long)shape[i]);
    snprintf(buf + n, n < size ? size - n : 0, "]");
    return buf;
}

bool nb__check_shape(const char *who, int ndim, const int64_t *shape, int64_t *numel) {
    char buf[NB_SHAPE_CHARS];
    if (ndim < 0 || ndim > NB_MAX_DIMS || (ndim > 0 && !shape)) {
        nb_set_error("%s: %d dimensions requested; nabla tensors have 0 to %d", who, ndim,
                     NB_MAX_DIMS);
        return false;
    }
    if (nb__shape_numel(ndim, shape, numel)) return true;
    nb_shape_str(ndim, shape, buf, sizeof buf);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0) {
            nb_set_error("%s: invalid shape %s: dimension %d is negative", who, buf, d);
            return false;
        }
    nb_set_error("%s: invalid shape %s: the product of its nonzero dimensions exceeds %lld", who,
                 buf, (long long)INT64_MAX);
    return false;
}

nb_tensor *nb__tensor_new(int ndim, const int64_t *shape, const char *who) {
    int64_t numel;
    /* the valid case inline; nb__check_shape again for the message */
    bool valid = ndim >= 0 && ndim <= NB_MAX_DIMS && (ndim == 0 || shape) &&
                 nb__shape_numel(ndim, shape, &numel);
    if (!valid && !nb__check_shape(who, ndim, shape, &numel)) return NULL;
    int c = size_class_of(numel);
    nb_tensor *t = NULL;
    nb_storage *s = NULL;
    if (c >= 0) {
        t = tensor_struct_new();
        s = t ? storage_init(storage_take(c), c) : NULL;
    }
    if (!t || !s) {
        if (t) {
            atomic_fetch_sub(&live_tensors, 1);
            nb_free(t);
        }
        if (s) storage_park(s);
        char buf[NB_SHAPE_CHARS];
        nb_set_error("%s: out of memory for %lld floats (shape %s)", who, (long long)numel,
                     nb_shape_str(ndim, shape, buf, sizeof buf));
        return NULL;
    }
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = numel;
    t->storage = s;
    if (!nb__scope_adopt(t)) {
        nb__tensor_decref(t);
        nb_set_error("%s: out of memory", who);
        return NULL;
    }
    return t;
}

nb_tensor *nb__empty_for(const char *who, int ndim, const int64_t *shape) {
    return nb__tensor_new(ndim, shape, who);
}

nb_tensor *nb__tensor_view(nb_tensor *base, int ndim, const int64_t *shape) {
    nb_tensor *t = tensor_struct_new();
    if (!t) {
        nb_set_error("nb_reshape: out of memory");
        return NULL;
    }
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = base->numel;
    t->storage = base->storage;
    atomic_fetch_add(&t->storage->refcount, 1);
    if (!nb__scope_adopt(t)) {
        nb__tensor_decref(t);
        nb_set_error("nb_reshape: out of memory");
        return NULL;
    }
    return t;
}

void nb__tensor_retain(nb_tensor *t) { atomic_fetch_add(&t->refcount, 1); }

void nb__release_graph(nb_tensor *t) {
    for (int i = 0; i < t->nsaved; i++)
        if (t->saved[i] != t) nb__tensor_decref(t->saved[i]);
    t->nsaved = 0;
    for (int i = 0; i < t->ninputs; i++) nb__tensor_decref(t->inputs[i]);
    if (t->inputs != t->inputs_inline) nb_free(t->inputs);
    t->inputs = t->inputs_inline;
    t->ninputs = 0;
}

/* Freeing a tensor drops references to its inputs, which may free them in
 * turn. A long chain (100,000 ops) would recurse that deep, so the frees run
 * from an explicit work list instead. A tensor that survives losing a
 * reference, with no owner left and a .grad that is a graph, may be held
 * only by that graph: cycles.c checks. The frees are a function apart from
 * nb__tensor_decref (NB_NOINLINE), so that the more common drop of a
 * reference that is not the last pays none of their setup. */
static NB_NOINLINE void free_chain(nb_tensor *t) {
    bool may_cycle;
    nb_tensor *work = t;
    t->next_free = NULL;
    while (work) {
        nb_tensor *cur = work;
        work = cur->next_free;
        nb_tensor *children[NB_MAX_SAVED + 2];
        int nchild = 0;
        for (int i = 0; i < cur->nsaved; i++)
            if (cur->saved[i] != cur) children[nchild++] = cur->saved[i];
        if (cur->grad) children[nchild++] = cur->grad;
        if (cur->tangent) children[nchild++] = cur->tangent;
        for (int i = 0; i < nchild + cur->ninputs; i++) {
            nb_tensor *c = i < nchild ? children[i] : cur->inputs[i - nchild];
            may_cycle = nb__may_hold_cycle(c);
            if (atomic_fetch_sub(&c->refcount, 1) == 1) {
                c->next_free = work;
                work = c;
            } else if (may_cycle) {
                nb__collect_cycle(c);
            }
        }
        if (cur->inputs != cur->inputs_inline) nb_free(cur->inputs);
        if (cur->hooks) nb__free_hooks(cur);
        if (atomic_fetch_sub(&cur->storage->refcount, 1) == 1) storage_park(cur->storage);
        atomic_fetch_sub(&live_tensors, 1);
        cur->magic = NB_TENSOR_DEAD;
        cur->next_free = NULL;
        struct_park(cur);
    }
}

void nb__tensor_decref(nb_tensor *t) {
    if (!t) return;
    bool may_cycle = nb__may_hold_cycle(t);
    if (atomic_fetch_sub(&t->refcount, 1) != 1) {
        if (may_cycle) nb__collect_cycle(t);
        return;
    }
    free_chain(t);
}

/* ---- creation ---------------------------------------------------------------- */

nb_tensor *nb_empty(int ndim, const int64_t *shape) {
    return nb__tensor_new(ndim, shape, "nb_empty");
}

static nb_tensor *filled(int ndim, const int64_t *shape, float value, const char *who) {
    nb_tensor *t = nb__tensor_new(ndim, shape, who);
    if (!t) return NULL;
    float *d = t->storage->data;
    for (int64_t i = 0; i < t->numel; i++) d[i] = value;
    return t;
}

nb_tensor *nb_full(int ndim, const int64_t *shape, float value) {
    return filled(ndim, shape, value, "nb_full");
}

nb_tensor *nb_zeros(int ndim, const int64_t *shape) {
    nb_tensor *t = nb__tensor_new(ndim, shape, "nb_zeros");
    if (t) memset(t->storage->data, 0, (size_t)t->numel * sizeof(float));
    return t;
}

nb_tensor *nb_ones(int ndim, const int64_t *shape) { return filled(ndim, shape, 1.0f, "nb_ones"); }

nb_tensor *nb_from_array(int ndim, const int64_t *shape, const float *data) {
    if (!data) {
        nb_set_error("nb_from_array: data is NULL");
        return NULL;
    }
    nb_tensor *t = nb__tensor_new(ndim, shape, "nb_from_array");
    if (t && t->numel) memcpy(t->storage->data, data, (size_t)t->numel * sizeof(float));
    return t;
}

nb_tensor *nb_scalar(float value) { return filled(0, NULL, value, "nb_scalar"); }

/* The count is ceil((stop - start) / step) computed in double: a count of
 * 2^63 or more (or one that is not a number: a span of inf - inf) cannot be
 * a dimension and is refused before it is converted, which would be
 * undefined; a count that fits but not in memory is "out of memory". */
nb_tensor *nb_arange(double start, double stop, double step) {
    if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step)) {
        nb_set_error("nb_arange: cannot go from %g to %g in steps of %g", start, stop, step);
        return NULL;
    }
    double span = ceil((stop - start) / step);
    if (!(span < 0x1p63)) {
        nb_set_error("nb_arange: %g to %g in steps of %g is too many elements (%g; at most %lld)",
                     start, stop, step, span, (long long)INT64_MAX);
        return NULL;
    }
    int64_t n = span > 0 ? (int64_t)span : 0;
    nb_tensor *t = nb__tensor_new(1, &n, "nb_arange");
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) t->storage->data[i] = (float)(start + (double)i * step);
    return t;
}

/* Values start + i (stop - start) / (steps - 1); when stop - start itself
 * overflows double (from -1e308 to 1e308), the same point is taken as the
 * weighted mean start (1 - w) + stop w, which cannot. */
nb_tensor *nb_linspace(double start, double stop, int64_t steps) {
    if (steps < 0) {
        nb_set_error("nb_linspace: steps must be >= 0, got %lld", (long long)steps);
        return NULL;
    }
    nb_tensor *t = nb__tensor_new(1, &steps, "nb_linspace");
    if (!t) return NULL;
    double h = steps > 1 ? (stop - start) / (double)(steps - 1) : 0;
    bool spread = isfinite(h) || !isfinite(start) || !isfinite(stop);
    for (int64_t i = 0; i < steps; i++) {
        double w = steps > 1 ? (double)i / (double)(steps - 1) : 0;
        double v = spread ? start + (double)i * h : start * (1 - w) + stop * w;
        t->storage->data[i] = (float)(i == steps - 1 && steps > 1 ? stop : v);
    }
    return t;
}

nb_tensor *nb_eye(int64_t n) {
    nb_tensor *t = nb__tensor_new(2, (int64_t[]){n, n}, "nb_eye");
    if (!t) return NULL;
    memset(t->storage->data, 0, (size_t)t->numel * sizeof(float));
    for (int64_t i = 0; i < n; i++) t->storage->data[i * n + i] = 1.0f;
    return t;
}

nb_tensor *nb_empty_like(const nb_tensor *t) { return t ? nb_empty(t->ndim, t->shape) : NULL; }
nb_tensor *nb_zeros_like(const nb_tensor *t) { return t ? nb_zeros(t->ndim, t->shape) : NULL; }
nb_tensor *nb_ones_like(const nb_tensor *t) { return t ? nb_ones(t->ndim, t->shape) : NULL; }

/* ---- queries ------------------------------------------------------------------ */

int nb_ndim(const nb_tensor *t) { return t ? t->ndim : -1; }
const int64_t *nb_shape(const nb_tensor *t) { return t ? t->shape : NULL; }
int64_t nb_numel(const nb_tensor *t) { return t ? t->numel : 0; }
const float *nb_data(const nb_tensor *t) { return t ? t->storage->data : NULL; }

float *nb_data_mut(nb_tensor *t) {
    if (!t) return NULL;
    t->storage->version++;
    return t->storage->data;
}

int64_t nb_dim(const nb_tensor *t, int axis) {
    if (!t) return -1;
    int a = axis < 0 ? axis + t->ndim : axis;
    if (a < 0 || a >= t->ndim) {
        nb_set_error("nb_dim: axis %d out of range for %d dimensions", axis, t->ndim);
        return -1;
    }
    return t->shape[a];
}

float nb_item(const nb_tensor *t) {
    if (!t) return NAN;
    if (t->numel != 1) {
        char buf[NB_SHAPE_CHARS];
        nb_set_error("nb_item: tensor of shape %s has %lld elements, not one",
                     nb_shape_str(t->ndim, t->shape, buf, sizeof buf), (long long)t->numel);
        return NAN;
    }
    return t->storage->data[0];
}

int nb_set_item(nb_tensor *t, int64_t index, float value) {
    if (!t) return -1;
    if (index < 0 || index >= t->numel) {
        nb_set_error("nb_set_item: index %lld out of range for %lld elements", (long long)index,
                     (long long)t->numel);
        return -1;
    }
    nb_data_mut(t)[index] = value;
    return 0;
}

bool nb_same_shape(const nb_tensor *a, const nb_tensor *b) { return nb__same_shape(a, b); }

nb_tensor *nb_set_name(nb_tensor *t, const char *name) {
    if (!t) return NULL;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    return t;
}

const char *nb_name(const nb_tensor *t) { return t ? t->name : ""; }

/* ---- printing ------------------------------------------------------------------
 * The layout of PyTorch's repr: nested brackets aligned under "tensor(", one
 * format for every element (integers as "3.", fixed with four decimals, or
 * scientific when the magnitudes call for it), and at most three leading and
 * three trailing entries per axis once a tensor has more than 1000 elements. */

typedef struct print_fmt {
    int mode; /* 0 integer, 1 fixed, 2 scientific */
    int width;
    bool summarize;
} print_fmt;

static int format_value(char *buf, size_t n, float v, int mode) {
    if (isnan(v)) return snprintf(buf, n, "nan");
    if (isinf(v)) return snprintf(buf, n, v > 0 ? "inf" : "-inf");
    if (mode == 0) return snprintf(buf, n, "%.0f.", (double)v);
    if (mode == 1) return snprintf(buf, n, "%.4f", (double)v);
    return snprintf(buf, n, "%.4e", (double)v);
}

static bool shown(const print_fmt *pf, int64_t i, int64_t n) {
    return !pf->summarize || n <= 6 || i < 3 || i >= n - 3;
}

static void scan_values(const nb_tensor *t, const print_fmt *pf, int axis, int64_t offset,
                        double *maxabs, double *minabs, bool *integral) {
    int64_t n = t->shape[axis], stride = 1;
    for (int d = axis + 1; d < t->ndim; d++) stride *= t->shape[d];
    for (int64_t i = 0; i < n; i++) {
        if (!shown(pf, i, n)) continue;
        if (axis + 1 < t->ndim) {
            scan_values(t, pf, axis + 1, offset + i * stride, maxabs, minabs, integral);
            continue;
        }
        float v = t->storage->data[offset + i];
        if (!isfinite(v)) continue;
        double a = fabs((double)v);
        if (a > *maxabs) *maxabs = a;
        if (a > 0 && a < *minabs) *minabs = a;
        if (v != nearbyintf(v)) *integral = false;
    }
}

static void print_rec(FILE *f, const nb_tensor *t, const print_fmt *pf, int axis,
                      int64_t offset, int indent) {
    int64_t n = t->shape[axis], stride = 1;
    for (int d = axis + 1; d < t->ndim; d++) stride *= t->shape[d];
    fputc('[', f);
    for (int64_t i = 0; i < n; i++) {
        if (!shown(pf, i, n)) {
            if (i == 3) {
                if (axis + 1 == t->ndim) fputs("...,", f);
                else fprintf(f, "\n%*s...,", indent + 1, "");
                if (axis + 1 == t->ndim) fputc(' ', f);
            }
            continue;
        }
        if (axis + 1 < t->ndim) {
            if (i > 0) {
                for (int k = axis + 1; k < t->ndim; k++) fputc('\n', f);
                fprintf(f, "%*s", indent + 1, "");
            }
            print_rec(f, t, pf, axis + 1, offset + i * stride, indent + 1);
        } else {
            char buf[48];
            format_value(buf, sizeof buf, t->storage->data[offset + i], pf->mode);
            fprintf(f, "%*s", pf->width, buf);
        }
        if (i + 1 < n) fputs(axis + 1 == t->ndim ? ", " : ",", f);
    }
    fputc(']', f);
}

void nb_fprint(FILE *f, const nb_tensor *t) {
    if (!t) {
        fputs("tensor(NULL)\n", f);
        return;
    }
    print_fmt pf = {1, 0, t->numel > 1000};
    double maxabs = 0, minabs = INFINITY;
    bool integral = true;
    if (t->ndim > 0 && t->numel > 0) scan_values(t, &pf, 0, 0, &maxabs, &minabs, &integral);
    else if (t->ndim == 0) {
        float v = t->storage->data[0];
        maxabs = minabs = fabs((double)v);
        integral = isfinite(v) && v == nearbyintf(v);
    }
    if (integral && maxabs < 1e8) pf.mode = 0;
    else if (maxabs >= 1e8 || (minabs < 1e-4 && minabs > 0) || maxabs / minabs > 1e3)
        pf.mode = 2;
    if (t->ndim > 0 && t->numel > 0) {
        /* width: the longest element shown */
        for (int64_t i = 0; i < t->numel; i++) {
            char buf[48];
            int w = format_value(buf, sizeof buf, t->storage->data[i], pf.mode);
            if (w > pf.width) pf.width = w;
            if (pf.summarize && i > 2000) break;
        }
    }
    fputs("tensor(", f);
    if (t->ndim == 0) {
        char buf[48];
        format_value(buf, sizeof buf, t->storage->data[0], pf.mode);
        fputs(buf, f);
    } else if (t->numel == 0) {
        char buf[NB_SHAPE_CHARS];
        fprintf(f, "[], size=%s", nb_shape_str(t->ndim, t->shape, buf, sizeof buf));
    } else {
        print_rec(f, t, &pf, 0, 0, 7);
    }
    if (t->name[0]) fprintf(f, ", name='%s'", t->name);
    if (t->op) fprintf(f, ", grad_fn=<%s>", t->op->name);
    else if (t->requires_grad) fputs(", requires_grad=true", f);
    fputs(")\n", f);
}

void nb_print(const nb_tensor *t) { nb_fprint(stdout, t); }
