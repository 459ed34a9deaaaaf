/* tensor_internal.h — the layout of a tensor, shared by the files of
 * autograd/ and by nothing else. ops/ sees tensors only through the public
 * API in nb_autograd.h, exactly as a user's own op does.
 *
 * A tensor is a shape, a reference to storage (which reshape and detach
 * share) and, inline, its graph node: the op that made it, strong references
 * to its inputs, the tensors and scalars its backward needs. Keeping the node
 * inside the tensor means recording an op costs no allocation beyond the
 * tensor itself, and tensors come from a free list, so a training step in
 * steady state does not call malloc.
 */
#ifndef NB_TENSOR_INTERNAL_H
#define NB_TENSOR_INTERNAL_H

#include "nb_autograd.h"
#include "size_internal.h"

#include <stdatomic.h>

#define NB_INLINE_INPUTS 4

/* For the slow paths of the functions every tensor goes through (a lock
 * taken, a list grown, a chain of tensors freed), kept out of line so that
 * the fast paths pay none of their setup. */
#if defined(__GNUC__) || defined(__clang__)
#define NB_NOINLINE __attribute__((noinline))
#else
#define NB_NOINLINE
#endif

typedef struct nb_storage {
    atomic_int refcount;
    uint64_t version;  /* bumped by every write through nb_data_mut */
    int size_class;    /* which free list the block returns to */
    int64_t capacity;  /* floats */
    float *data;       /* 64-byte aligned, inside the same block */
} nb_storage;

/* nb_tensor.magic: live from creation until freed, then dead while the
 * struct waits in the pool's quarantine (see tensor.c). */
#define NB_TENSOR_LIVE 0x6e61626cu /* "nabl" */
#define NB_TENSOR_DEAD 0xdeadbeefu

struct nb_tensor {
    uint32_t magic;
    int ndim;
    int64_t numel;
    nb_storage *storage;
    atomic_int refcount;

    /* ownership: scope_depth > 0 means the scope at that depth of the
     * creating thread holds one reference, in slot scope_slot of its list;
     * caller_ref means the user holds one (kept, or made outside scopes);
     * container_ref means a container (a module's parameters) holds one,
     * given with nb_adopt and dropped with nb_disown. */
    int scope_depth;
    int64_t scope_slot;
    bool caller_ref;
    bool container_ref;

    /* autograd */
    bool requires_grad;
    bool retains_grad;
    bool graph_freed;  /* backward released inputs and saved values */
    nb_tensor *grad;   /* owned */
    bool is_grad;      /* has been stored as some tensor's .grad (cycles.c) */
    const nb_op *op;   /* NULL for leaves */
    int ninputs;
    nb_tensor **inputs; /* inputs_inline (below) or a heap array, strong refs */
    int nsaved;
    double attrs[NB_MAX_ATTRS];

    /* forward mode (forward.c): the tangent, owned (one reference), or a
     * rule still to run once the op has saved what it needs */
    nb_tensor *tangent;
    bool tangent_pending;

    nb_tensor *next_free;

    /* debug.c: gradient hooks (NULL: none, the usual case), and where the
     * user's code called the op that made this node (anomaly mode only) */
    struct nb__hook *hooks;
    const char *where_function; /* the function the user called, or NULL */
    const char *where_file;
    int where_line;

    /* The arrays, last: a new tensor is zeroed only up to here (see
     * struct_init in tensor.c), since each is read only below a count set
     * with it: shape below ndim, inputs_inline below ninputs, saved and
     * saved_version below nsaved, name up to its terminator. */
    int64_t shape[NB_MAX_DIMS];
    nb_tensor *inputs_inline[NB_INLINE_INPUTS];
    nb_tensor *saved[NB_MAX_SAVED]; /* strong refs, except a saved self */
    uint64_t saved_version[NB_MAX_SAVED];
    char name[32];
};

/* tensor.c */
nb_tensor *nb__tensor_new(int ndim, const int64_t *shape, const char *who);
/* nb_same_shape, inline for the engine's check of every gradient a
 * formula returns */
static inline bool nb__same_shape(const nb_tensor *a, const nb_tensor *b) {
    if (!a || !b || a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}
/* Gives the calling thread's cached structs and blocks to the shared pools
 * (at thread exit, nb_empty_cache and exit). */
void nb__pool_thread_exit(void);
nb_tensor *nb__tensor_view(nb_tensor *base, int ndim, const int64_t *shape);
void nb__tensor_retain(nb_tensor *t);
void nb__tensor_decref(nb_tensor *t);
void nb__release_graph(nb_tensor *t); /* drop inputs and saved values */

/* cycles.c: frees the garbage cycles through .grad links that t is on
 * (see there). Called by nb__tensor_decref for a tensor that survives
 * losing a reference when nb__may_hold_cycle says it may be kept alive only
 * by such a cycle: it has no owner left, and either its .grad is a graph or
 * it is a graph stored as some tensor's .grad. */
void nb__collect_cycle(nb_tensor *t);
static inline bool nb__may_hold_cycle(const nb_tensor *t) {
    return ((t->grad && t->grad->requires_grad) || (t->is_grad && t->requires_grad)) &&
           !t->caller_ref && !t->container_ref && t->scope_depth == 0;
}

/* tensor_map.c: tensor -> index, for traversals (engine.c, cycles.c) */
typedef struct nb__tensor_map {
    nb_tensor **keys; /* open addressing on the address */
    int64_t *vals;
    int64_t cap; /* a power of two, more than twice the entries */
} nb__tensor_map;
/* Lookups and insertions are here, inline: a backward makes a few of each
 * per node, and the calls cost more than the probes. */
static inline size_t nb__map_slot(const nb_tensor *t, int64_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ULL;
    return (size_t)((h ^ (h >> 31)) & (uint64_t)(cap - 1));
}
static inline int64_t nb__map_find(const nb__tensor_map *m, const nb_tensor *t) { /* -1: absent */
    if (!m->keys) return -1;
    for (size_t i = nb__map_slot(t, m->cap);; i = (i + 1) & (size_t)(m->cap - 1)) {
        if (!m->keys[i]) return -1;
        if (m->keys[i] == t) return m->vals[i];
    }
}
static inline void nb__map_put(nb__tensor_map *m, nb_tensor *t, int64_t index) {
    size_t i = nb__map_slot(t, m->cap);
    while (m->keys[i]) i = (i + 1) & (size_t)(m->cap - 1);
    m->keys[i] = t;
    m->vals[i] = index;
}
/* Makes room for entry count + 1: a table too small grows (first_cap at
 * first) and takes tensors[0 .. count) again. False when out of memory. */
bool nb__map_grow(nb__tensor_map *m, nb_tensor *const *tensors, int64_t count, int64_t first_cap);
static inline bool nb__map_reserve(nb__tensor_map *m, nb_tensor *const *tensors, int64_t count,
                                   int64_t first_cap) {
    return 2 * (count + 1) < m->cap || nb__map_grow(m, tensors, count, first_cap);
}
/* No entries, memory kept. tensors[0 .. count) are the entries, in the order
 * they were put (as nb__map_reserve takes them back). */
void nb__map_clear(nb__tensor_map *m, nb_tensor *const *tensors, int64_t count);
void nb__map_free(nb__tensor_map *m);
/* *p resized to n elements of size bytes; false (and *p kept) when out of memory. */
bool nb__grow(void **p, int64_t n, size_t size);

/* ownership.c */
/* Grad mode off on this thread (nb_set_grad_enabled); read inline by
 * nb_record, which every op calls. */
extern _Thread_local bool nb__grad_disabled;
/* New tensor: given to the innermost open scope, or to the caller when none is
 * open. False when the scope's list cannot grow: the caller frees t and fails. */
bool nb__scope_adopt(nb_tensor *t);
void nb__thread_cache_used(void);   /* frees thread-local lists at thread exit */

/* engine.c */
void nb__engine_thread_exit(void);
/* For a node formula that differentiates a recomputed segment (checkpoint.c),
 * called while the formula runs: true when the backward running it writes
 * .grad as soon as final (nb_backward with grads_when_ready, without
 * create_graph) and the leaf's gradient will come from this node alone (no
 * other node of the backward has given it one or will), so that the
 * formula may write the leaf's .grad itself instead of returning it. */
bool nb__grad_final_here(const nb_tensor *leaf);
/* nb_grad of y (grad_output gy) for ninputs inputs, with allow_unused and
 * retain_graph, that also writes the .grad of the nready leaves `ready` as
 * soon as each is final, running their hooks, as grads_when_ready does. It
 * stops at the inputs: neither their hooks nor the nodes that made them
 * run (the enclosing backward runs those on the inputs' whole gradient;
 * going on would count a path from one input to another twice). Messages
 * name the enclosing backward. */
int nb__segment_grad(nb_tensor *y, nb_tensor *gy, int ninputs, nb_tensor *const *inputs,
                     nb_tensor **grads, int nready, nb_tensor *const *ready, bool create_graph);

/* forward.c: whether nb_record should look at tangents on this thread (a
 * nb_jvp is running and no forward rule is); whether t carries a tangent,
 * running its pending rule first; marks a node just recorded as owing a
 * tangent (false when out of memory); runs the pending rule of a node whose
 * graph is about to be released by backward. */
extern _Thread_local bool nb__forward_live;
static inline bool nb__forward_on(void) { return nb__forward_live; }
bool nb__has_tangent(nb_tensor *t);
bool nb__forward_mark(nb_tensor *t);
void nb__forward_settle(nb_tensor *t);
void nb__forward_thread_exit(void); /* frees the thread's level list */
/* For nb_checkpoint, which must run f once keeping nothing and then again
 * on dual numbers: sets how many jvp rules hide the tangents (0: nb_record
 * sees them, as when nb_jvp calls f; 1: it ignores them, as inside a rule)
 * and returns the previous count; and gives dst, a detached copy of src
 * made during nb_jvp, src's tangent (false when out of memory). */
int nb__forward_set_hidden(int hidden);
bool nb__forward_share_tangent(nb_tensor *dst, nb_tensor *src);

/* debug.c: the engine's calls into the tools for looking inside. Each is
 * made only when nb__debugging() says a tool is on, or (hooks) when the
 * node has any. */
extern atomic_bool nb__anomaly_on;
extern _Atomic(FILE *) nb__trace_out;
extern _Thread_local const nb_tensor *nb__backward_node; /* whose formula runs */
extern _Thread_local const char *nb__backward_who;        /* nb_backward or nb_grad */
static inline bool nb__debugging(void) {
    return atomic_load_explicit(&nb__anomaly_on, memory_order_relaxed) ||
           atomic_load_explicit(&nb__trace_out, memory_order_relaxed);
}
/* Notes the location, traces the op, checks its output: false (message
 * set) when anomaly mode finds a NaN or infinity in out. */
bool nb__debug_record(nb_tensor *out, const nb_op *op, int ninputs, nb_tensor *const *inputs);
/* The start time of a backward formula, when tracing. */
double nb__debug_clock(void);
/* Traces a node's backward and checks the gradients it made (gin may be
 * NULL for a leaf); false (message set) on an anomaly. */
bool nb__debug_backward(const nb_tensor *node, const nb_tensor *g, nb_tensor *const *gin,
                        double started, const char *who);
/* Passes g (a reference the caller gives up) through t's hooks; returns the
 * gradient to use (a reference), or NULL with a message. */
nb_tensor *nb__run_hooks(nb_tensor *t, nb_tensor *g, const char *who);
void nb__free_hooks(nb_tensor *t);
/* Whether t has a post-accumulate-grad hook, and calling them (in the
 * order registered) once t's .grad is final: false if one set an error. */
bool nb__has_post_hooks(const nb_tensor *t);
bool nb__run_post_hooks(nb_tensor *t);

/* error.c */

#endif
