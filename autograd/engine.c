/* engine.c — recording the graph and walking it backward.
 *
 * Recording (nb_record, nb_save, nb_set_attr) fills the node that lives
 * inside every tensor. Backward is micrograd's algorithm made iterative:
 *
 *   1. sort the nodes reachable from the outputs topologically, with an
 *      explicit stack (a chain of 100,000 ops needs no deep recursion);
 *   2. visit them outputs-first; at each node pass the gradient accumulated
 *      so far through the node's hooks (if any), call its op's backward with
 *      it, and add what it returns into the gradients of the node's inputs;
 *   3. leaves (and nodes asked to retain_grad) add their gradient into .grad,
 *      all at the end, so that a backward that fails changes no .grad;
 *      except a leaf with post-accumulate-grad hooks, whose .grad is
 *      written as soon as the traversal reaches it (its gradient is final
 *      then) and its hooks called, so that a caller can start work on it
 *      (sending it to other processes) while backward goes on. Under
 *      grads_when_ready a formula that differentiates a recomputed segment
 *      (checkpoint.c) may write .grad of a leaf only it reaches itself,
 *      as soon as final; nb__grad_final_here tells it which.
 *
 * Backward formulas are ordinary ops, so with create_graph they record a new
 * graph and the gradient can be differentiated again. Each node's formula
 * runs inside its own scope: the temporaries it makes are freed as soon as
 * the node is done, and a gradient is freed as soon as its node is done.
 * The tools for looking inside (trace, anomaly mode, hooks) are in debug.c;
 * the engine calls them only when one is on.
 */
#include "tensor_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- the node API ---------------------------------------------------------- */

nb_tensor *nb_record(nb_tensor *out, const nb_op *op, int ninputs, nb_tensor *const *inputs) {
    if (!out) return NULL;
    /* trace and anomaly mode (debug.c) see every op, with or without grad */
    if (op && nb__debugging() && !nb__debug_record(out, op, ninputs, inputs)) return NULL;
    bool grad = !nb__grad_disabled, forward = nb__forward_on();
    if ((!grad && !forward) || !op) return out;
    /* In forward mode an input with a tangent makes a node too, grad mode
     * or not: its jvp rule needs the inputs and saved values (forward.c). */
    bool any = false, tangent = false;
    for (int i = 0; i < ninputs; i++) {
        if (!inputs[i]) {
            nb_set_error("nb_record: input %d of '%s' is NULL", i, op->name);
            return out;
        }
        any = any || inputs[i]->requires_grad;
        if (forward && nb__has_tangent(inputs[i])) tangent = true;
    }
    any = any && grad;
    if (!any && !tangent) return out;
    if (out->op || out->requires_grad) {
        nb_set_error("nb_record: the output of '%s' is already part of a graph", op->name);
        return out;
    }
    if (ninputs > NB_INLINE_INPUTS) {
        nb_tensor **heap = nb_malloc((size_t)ninputs * sizeof *heap);
        if (!heap) {
            nb_set_error("nb_record: out of memory recording '%s'", op->name);
            return out;
        }
        out->inputs = heap;
    }
    for (int i = 0; i < ninputs; i++) {
        out->inputs[i] = inputs[i];
        nb__tensor_retain(inputs[i]);
    }
    out->ninputs = ninputs;
    out->op = op;
    out->requires_grad = any;
    if (tangent && !nb__forward_mark(out)) nb_set_error("nb_record: out of memory recording '%s'", op->name);
    return out;
}

void nb_save(nb_tensor *out, nb_tensor *t) {
    if (!out || !out->op || !t) return;
    if (out->nsaved == NB_MAX_SAVED) {
        nb_set_error("nb_save: '%s' saves more than %d tensors", out->op->name, NB_MAX_SAVED);
        return;
    }
    /* A saved output is the node itself: no reference, or it would keep
     * itself alive. */
    if (t != out) nb__tensor_retain(t);
    out->saved_version[out->nsaved] = t->storage->version;
    out->saved[out->nsaved++] = t;
}

static void freed_graph_error(const char *who, const char *op) {
    nb_set_error("%s: the graph through '%s' was freed by an earlier backward; pass "
                 "retain_graph to backward through it twice",
                 who, op);
}

/* A tensor just made, taken from whatever scope it landed in, so that the
 * one reference left belongs to the node that stores it (as its .grad). */
static nb_tensor *owned_by_node(nb_tensor *t) {
    if (t) nb_keep(t)->caller_ref = false;
    return t;
}

nb_tensor *nb_saved(nb_tensor *node, int k) {
    if (!node) return NULL;
    const char *op = node->op ? node->op->name : "leaf";
    if (node->graph_freed) {
        freed_graph_error("nb_backward", op);
        return NULL;
    }
    if (k < 0 || k >= node->nsaved) {
        nb_set_error("nb_saved: '%s' saved %d tensors, asked for number %d", op, node->nsaved, k);
        return NULL;
    }
    nb_tensor *t = node->saved[k];
    if (t->storage->version != node->saved_version[k]) {
        char buf[NB_SHAPE_CHARS];
        nb_set_error("nb_backward: a tensor%s%s%s of shape %s saved by '%s' was modified in place "
                     "after it was saved (version %llu, saved at %llu); run the forward again "
                     "after changing it",
                     t->name[0] ? " '" : "", t->name, t->name[0] ? "'" : "",
                     nb_shape_str(t->ndim, t->shape, buf, sizeof buf), op,
                     (unsigned long long)t->storage->version,
                     (unsigned long long)node->saved_version[k]);
        return NULL;
    }
    return t;
}

void nb_set_attr(nb_tensor *node, int k, double value) {
    if (node && k >= 0 && k < NB_MAX_ATTRS) node->attrs[k] = value;
}

double nb_attr(const nb_tensor *node, int k) {
    return node && k >= 0 && k < NB_MAX_ATTRS ? node->attrs[k] : 0.0;
}

int nb_num_inputs(const nb_tensor *node) { return node ? node->ninputs : 0; }

nb_tensor *nb_input(const nb_tensor *node, int i) {
    return node && i >= 0 && i < node->ninputs ? node->inputs[i] : NULL;
}

bool nb_needs_input_grad(const nb_tensor *node, int i) {
    nb_tensor *t = nb_input(node, i);
    return t && t->requires_grad;
}

const nb_op *nb_op_of(const nb_tensor *t) { return t ? t->op : NULL; }

/* ---- leaves and flags --------------------------------------------------------- */

nb_tensor *nb_set_requires_grad(nb_tensor *t, bool requires) {
    if (!t) return NULL;
    if (t->tangent_pending && !t->requires_grad) nb__has_tangent(t); /* a node for forward mode only */
    if (t->op) {
        nb_set_error("nb_set_requires_grad: only leaves can be marked; this tensor is the output "
                     "of '%s' (nb_detach it to make a leaf)", t->op->name);
        return NULL;
    }
    t->requires_grad = requires;
    return t;
}

bool nb_requires_grad(const nb_tensor *t) { return t && t->requires_grad; }
bool nb_is_leaf(const nb_tensor *t) { return t && !t->op; }
nb_tensor *nb_grad_of(const nb_tensor *t) { return t ? t->grad : NULL; }

nb_tensor *nb_retain_grad(nb_tensor *t) {
    if (t && t->op) t->retains_grad = true;
    return t;
}

/* .grad is unlinked before it is dropped: freeing a gradient's graph may
 * reach t, which must not then see a .grad being freed (cycles.c). */
void nb_clear_grad(nb_tensor *t) {
    if (!t || !t->grad) return;
    nb_tensor *g = t->grad;
    t->grad = NULL;
    nb__tensor_decref(g);
}

void nb_zero_grad(nb_tensor *t) {
    if (!t || !t->grad) return;
    /* A gradient that is part of a graph (create_graph) may be used by it:
     * replace it rather than overwrite it. */
    if (t->grad->op || atomic_load(&t->grad->refcount) > 1 ||
        atomic_load(&t->grad->storage->refcount) > 1) {
        nb_clear_grad(t);
        bool was = nb_set_grad_enabled(false);
        t->grad = owned_by_node(nb_zeros(t->ndim, t->shape));
        nb_set_grad_enabled(was);
        return;
    }
    memset(nb_data_mut(t->grad), 0, (size_t)t->numel * sizeof(float));
}

nb_tensor *nb_detach(nb_tensor *t) {
    if (!t) return NULL;
    return nb__tensor_view(t, t->ndim, t->shape);
}

nb_tensor *nb_as_shape(nb_tensor *t, int ndim, const int64_t *shape) {
    if (!t) return NULL;
    int64_t n = 0;
    bool ok = ndim >= 0 && ndim <= NB_MAX_DIMS && (ndim == 0 || shape) &&
              nb__shape_numel(ndim, shape, &n);
    if (!ok || n != t->numel) {
        char b1[NB_SHAPE_CHARS], b2[NB_SHAPE_CHARS];
        const char *want = ndim >= 0 && ndim <= NB_MAX_DIMS && (ndim == 0 || shape)
                               ? nb_shape_str(ndim, shape, b2, sizeof b2) : "no valid shape";
        nb_set_error("nb_as_shape: cannot view %s as %s%s",
                     nb_shape_str(t->ndim, t->shape, b1, sizeof b1), want,
                     ok ? "" : " (a negative dimension, or nonzero dimensions multiplying to more "
                               "than 9223372036854775807)");
        return NULL;
    }
    return nb__tensor_view(t, ndim, shape);
}

/* ---- ops the engine itself needs ----------------------------------------------
 * The engine knows no op of ops/, yet it must add gradients (two paths into
 * one tensor) and, for nb_grad, hand back a user's tensor as a new one. Both
 * are tiny differentiable ops defined here with the public op API. */

static void sum2_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gin) {
    (void)node;
    gin[0] = g;
    gin[1] = g;
}
static nb_tensor *sum2(nb_tensor *a, nb_tensor *b);
static nb_tensor *sum2_jvp(nb_tensor *node, nb_tensor *const *t) {
    (void)node;
    return t[0] && t[1] ? sum2(t[0], t[1]) : t[0] ? t[0] : t[1];
}
static const nb_op sum2_op = {"accumulate_grad", sum2_backward, sum2_jvp};

static nb_tensor *sum2(nb_tensor *a, nb_tensor *b) {
    nb_tensor *out = nb_empty(a->ndim, a->shape);
    if (!out) return NULL;
    const float *pa = nb_data(a), *pb = nb_data(b);
    float *po = nb_data_mut(out);
    for (int64_t i = 0; i < a->numel; i++) po[i] = pa[i] + pb[i];
    nb_tensor *in[2] = {a, b};
    return nb_record(out, &sum2_op, 2, in);
}

static void alias_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gin) {
    (void)node;
    gin[0] = g;
}
static nb_tensor *alias_jvp(nb_tensor *node, nb_tensor *const *t) {
    (void)node;
    return t[0];
}
static const nb_op alias_op = {"alias", alias_backward, alias_jvp};

static nb_tensor *alias(nb_tensor *t) {
    nb_tensor *v = nb__tensor_view(t, t->ndim, t->shape);
    return nb_record(v, &alias_op, 1, &t);
}

/* True when the engine holds the only reference to t and to its memory:
 * no scope, no user, no container, no graph, and no view (reshape shares storage) can see
 * a change made to it in place. */
static bool exclusive(const nb_tensor *t) {
    return atomic_load(&t->refcount) == 1 && atomic_load(&t->storage->refcount) == 1 &&
           !t->caller_ref && !t->container_ref && t->scope_depth == 0;
}

/* A gradient carrying a tangent (forward over reverse) is added by a
 * recorded op, whose forward rule adds the tangents too. */
static bool tangent_free(const nb_tensor *a, const nb_tensor *b) {
    return !a->tangent && !a->tangent_pending && !b->tangent && !b->tangent_pending;
}

/* acc += g, in place when nobody else can see acc, as a recorded op when a
 * graph of the gradient is wanted. Consumes the caller's reference to acc
 * and returns a referenced result. */
static nb_tensor *accumulate(nb_tensor *acc, nb_tensor *g, bool create_graph) {
    if (!create_graph && !acc->op && exclusive(acc) && tangent_free(acc, g)) {
        float *restrict pa = nb_data_mut(acc);
        const float *restrict pg = nb_data(g);
        for (int64_t i = 0; i < acc->numel; i++) pa[i] += pg[i];
        return acc;
    }
    nb_scope_begin();
    nb_tensor *sum = sum2(acc, g);
    if (sum) nb__tensor_retain(sum);
    nb_scope_end();
    nb__tensor_decref(acc);
    return sum;
}

/* ---- the traversal ----------------------------------------------------------------
 * The bookkeeping of one traversal (which nodes it reached, the gradient
 * accumulated at each) lives in arrays of the run, found through a small
 * hash table keyed by node, never in the nodes themselves: two threads may
 * then backward through graphs that share a parameter (nb_grad writes no
 * .grad), and a backward started from inside an op's backward
 * (recomputation, checkpointing) gets bookkeeping of its own. The arrays
 * are cached per thread and reused, so a steady training loop allocates
 * none of them. */

typedef struct frame {
    int64_t node; /* visit index */
    int next;     /* the next input to look at */
} frame;

typedef struct buffers {
    nb_tensor **nodes; /* by visit index */
    nb_tensor **acc;   /* the gradient accumulated so far, by visit index */
    int *capture;      /* nb_grad input index + 1, by visit index */
    bool *runs;        /* nb_grad: a gradient through the node reaches an input */
    int *users;        /* edges from nodes of the run whose formula has not yet run */
    int64_t *order;    /* visit indices in post-order: inputs before users */
    frame *stack;
    int64_t count, cap;
    nb__tensor_map map; /* node -> visit index */
} buffers;

static _Thread_local buffers cached;

static void free_buffers(buffers *b) {
    nb_free(b->nodes);
    nb_free(b->acc);
    nb_free(b->capture);
    nb_free(b->runs);
    nb_free(b->users);
    nb_free(b->order);
    nb_free(b->stack);
    nb__map_free(&b->map);
    memset(b, 0, sizeof *b);
}

void nb__engine_thread_exit(void) {
    free_buffers(&cached);
    nb__forward_thread_exit();
}

static buffers take_buffers(void) {
    buffers b = cached;
    memset(&cached, 0, sizeof cached);
    nb__map_clear(&b.map, b.nodes, b.count);
    b.count = 0;
    return b;
}

static void give_back_buffers(buffers *b) {
    if (cached.cap + cached.map.cap > b->cap + b->map.cap) { /* a nested run's are larger */
        free_buffers(b);
    } else {
        free_buffers(&cached);
        cached = *b;
    }
    nb__thread_cache_used();
}

/* The visit index of t in this run, or -1 if the run has not reached it. */
static int64_t find(const buffers *b, const nb_tensor *t) { return nb__map_find(&b->map, t); }

/* Gives t the next visit index; false when out of memory. */
static bool visit(buffers *b, nb_tensor *t) {
    if (b->count == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 256;
        if (!nb__grow((void **)&b->nodes, cap, sizeof *b->nodes) || !nb__grow((void **)&b->acc, cap, sizeof *b->acc) ||
            !nb__grow((void **)&b->capture, cap, sizeof *b->capture) ||
            !nb__grow((void **)&b->runs, cap, sizeof *b->runs) ||
            !nb__grow((void **)&b->users, cap, sizeof *b->users) ||
            !nb__grow((void **)&b->order, cap, sizeof *b->order) || !nb__grow((void **)&b->stack, cap, sizeof *b->stack))
            return false;
        b->cap = cap;
    }
    if (!nb__map_reserve(&b->map, b->nodes, b->count, 1024)) return false;
    b->nodes[b->count] = t;
    b->acc[b->count] = NULL;
    b->capture[b->count] = 0;
    b->runs[b->count] = false;
    b->users[b->count] = 0;
    nb__map_put(&b->map, t, b->count);
    b->count++;
    return true;
}

/* Depth-first post-order over the nodes that require grad, inputs before
 * the nodes that use them. Returns the number of nodes, or -1. */
static int64_t topo_sort(buffers *b, int nroots, nb_tensor *const *roots) {
    int64_t norder = 0, top = 0;
    for (int r = 0; r < nroots; r++) {
        if (find(b, roots[r]) >= 0) continue;
        if (!visit(b, roots[r])) return -1;
        b->stack[top++] = (frame){b->count - 1, 0};
        while (top > 0) {
            frame *f = &b->stack[top - 1];
            nb_tensor *node = b->nodes[f->node];
            if (f->next < node->ninputs) {
                nb_tensor *c = node->inputs[f->next++];
                if (!c->requires_grad) continue;
                int64_t kc = find(b, c);
                if (kc >= 0) {
                    b->users[kc]++;
                    continue;
                }
                if (!visit(b, c)) return -1;
                b->users[b->count - 1] = 1;
                b->stack[top++] = (frame){b->count - 1, 0};
            } else {
                b->order[norder++] = f->node;
                top--;
            }
        }
    }
    return norder;
}

/* Whether acc += g may be done in place: nobody else can see acc and no
 * graph of the gradient is wanted. */
static bool accumulates_in_place(const nb_tensor *acc, bool create_graph) {
    return !create_graph && !acc->op && exclusive(acc);
}

/* The gradients of leaves (and of nodes asked to retain_grad) reach .grad
 * only once every node's backward has succeeded, in two passes, so that a
 * backward that fails (a bad formula, out of memory) leaves every .grad as
 * it was:
 *   1. make what needs memory: g itself when .grad is empty and g is the
 *      engine's own, a private copy of g when it is visible elsewhere (a
 *      user's grad_output), the new sum when .grad cannot be added to in
 *      place; any failure undoes nothing because nothing was changed;
 *   2. store: add in place where pass 1 left g, swap the new tensors in.
 * b->acc[k] holds the gradient of each such node in [first, end) on entry
 * and is emptied. */
static bool commit_grads(buffers *b, int64_t first, int64_t end, bool create_graph) {
    bool ok = true;
    for (int64_t k = first; k < end && ok; k++) {
        nb_tensor *node = b->nodes[k], *g = b->acc[k], *made = NULL;
        if (!g) continue;
        if (node->grad && accumulates_in_place(node->grad, create_graph)) continue;
        /* the usual first backward of a leaf: the engine's own gradient
         * becomes its .grad, nothing to make (the case of made = g below) */
        if (!node->grad && !create_graph && exclusive(g) && !g->op) continue;
        nb_scope_begin();
        if (node->grad) made = sum2(node->grad, g);
        else if (!create_graph && !(exclusive(g) && !g->op)) {
            bool was = nb_set_grad_enabled(false);
            made = nb_from_array(g->ndim, g->shape, nb_data(g));
            nb_set_grad_enabled(was);
        } else
            made = g;
        if (made && made != g) {
            nb__tensor_retain(made);
            nb__tensor_decref(g);
        }
        nb_scope_end();
        if (made) b->acc[k] = made; /* else g stays, for run_backward to release */
        ok = made != NULL;
    }
    if (!ok) return false; /* run_backward releases what pass 1 made */
    /* The in-place additions first: swapping a .grad can release the last
     * other view of another .grad's memory, which would make a gradient
     * that pass 1 already summed look addable in place. */
    for (int64_t k = first; k < end; k++) {
        nb_tensor *node = b->nodes[k], *g = b->acc[k];
        if (!g || !node->grad || !accumulates_in_place(node->grad, create_graph)) continue;
        b->acc[k] = NULL;
        float *restrict pa = nb_data_mut(node->grad);
        const float *restrict pg = nb_data(g);
        for (int64_t i = 0, n = g->numel; i < n; i++) pa[i] += pg[i];
        nb__tensor_decref(g);
    }
    for (int64_t k = first; k < end; k++) {
        nb_tensor *node = b->nodes[k], *g = b->acc[k];
        if (!g) continue;
        b->acc[k] = NULL;
        nb_tensor *old = node->grad; /* unlinked before it is dropped: see nb_clear_grad */
        node->grad = g;
        g->is_grad = true;           /* see cycles.c */
        if (old) nb__tensor_decref(old);
    }
    return true;
}

typedef struct run {
    int noutputs;
    nb_tensor *const *outputs;
    nb_tensor *const *grad_outputs;
    int ninputs; /* nb_grad: capture these instead of filling .grad */
    nb_tensor *const *inputs;
    nb_tensor **grads;
    bool retain_graph, create_graph, allow_unused, grads_when_ready;
    const char *who;
    struct buffers *b; /* the traversal's bookkeeping */
    /* A checkpoint's recomputation (nb__segment_grad): leaves whose .grad
     * is written as soon as final, besides the inputs captured; and the
     * captured inputs' hooks and the nodes that made them left to the
     * enclosing backward, which carries their whole gradient on. */
    int nready;
    nb_tensor *const *ready;
    bool inner;
} run;

/* The run whose node formula is running on this thread (innermost). */
static _Thread_local const run *running;

/* nb_backward (every leaf's .grad), rather than capturing gradients. */
static bool fills_grads(const run *r) { return r->ninputs == 0 && !r->inner; }

static bool check_outputs(const run *r) {
    char b1[NB_SHAPE_CHARS], b2[NB_SHAPE_CHARS];
    for (int i = 0; i < r->noutputs; i++) {
        nb_tensor *out = r->outputs[i];
        nb_tensor *go = r->grad_outputs ? r->grad_outputs[i] : NULL;
        if (!out) return false; /* an earlier op failed: its message stands */
        if (!out->requires_grad) {
            nb_set_error("%s: output %d%s%s%s does not require grad: no input of its "
                         "computation requires grad (or grad mode was off)",
                         r->who, i, out->name[0] ? " '" : "", out->name, out->name[0] ? "'" : "");
            return false;
        }
        if (!go && out->numel != 1) {
            nb_set_error("%s: output of shape %s has %lld elements; backward without a gradient "
                         "needs a one-element output (pass grad_output)",
                         r->who, nb_shape_str(out->ndim, out->shape, b1, sizeof b1),
                         (long long)out->numel);
            return false;
        }
        if (go && !nb_same_shape(go, out)) {
            nb_set_error("%s: grad_output of shape %s does not match output of shape %s", r->who,
                         nb_shape_str(go->ndim, go->shape, b1, sizeof b1),
                         nb_shape_str(out->ndim, out->shape, b2, sizeof b2));
            return false;
        }
        if (out->graph_freed) {
            freed_graph_error(r->who, out->op ? out->op->name : "leaf");
            return false;
        }
    }
    for (int i = 0; i < r->ninputs; i++) {
        if (!r->inputs[i]) return false;
        if (!r->inputs[i]->requires_grad) {
            nb_set_error("%s: input %d does not require grad", r->who, i);
            return false;
        }
    }
    return true;
}

/* Runs one node's backward formula and adds the results into its inputs'
 * accumulators. Returns false on error (the message is set). */
static bool backprop_node(nb_tensor *node, nb_tensor *g, const run *r) {
    if (node->graph_freed) {
        freed_graph_error(r->who, node->op->name);
        return false;
    }
    nb_tensor *gin_inline[NB_INLINE_INPUTS] = {0};
    nb_tensor **gin = gin_inline;
    if (node->ninputs > NB_INLINE_INPUTS) {
        gin = nb_calloc((size_t)node->ninputs, sizeof *gin);
        if (!gin) {
            nb_set_error("%s: out of memory", r->who);
            return false;
        }
    }
    uint64_t errors = nb_error_count();
    nb_scope_begin();
    bool debugging = nb__debugging();
    double started = debugging ? nb__debug_clock() : 0;
    const nb_tensor *outer = nb__backward_node; /* a backward inside a backward formula */
    const char *outer_who = nb__backward_who;
    const run *outer_run = running;
    nb__backward_node = node;
    nb__backward_who = r->who;
    running = r;
    node->op->backward(node, g, gin);
    running = outer_run;
    bool ok = nb_error_count() == errors;
    if (ok && debugging) ok = nb__debug_backward(node, g, gin, started, r->who);
    for (int i = 0; ok && i < node->ninputs; i++) {
        nb_tensor *in = node->inputs[i];
        if (!in->requires_grad || !gin[i]) continue;
        if (!nb__same_shape(gin[i], in)) {
            char b1[NB_SHAPE_CHARS], b2[NB_SHAPE_CHARS];
            nb_set_error("%s: backward of '%s' returned a gradient of shape %s for input %d of "
                         "shape %s",
                         r->who, node->op->name, nb_shape_str(gin[i]->ndim, gin[i]->shape, b1, sizeof b1),
                         i, nb_shape_str(in->ndim, in->shape, b2, sizeof b2));
            ok = false;
            break;
        }
        nb_tensor **acc = &r->b->acc[find(r->b, in)];
        nb__tensor_retain(gin[i]);
        *acc = *acc ? accumulate(*acc, gin[i], r->create_graph) : gin[i];
        if (*acc != gin[i]) nb__tensor_decref(gin[i]);
        if (!*acc) ok = false;
    }
    nb__backward_node = outer;
    nb__backward_who = outer_who;
    nb_scope_end();
    if (gin != gin_inline) nb_free(gin);
    /* the edges to its inputs are spent (see nb__grad_final_here) */
    if (fills_grads(r) && r->grads_when_ready && !r->create_graph)
        for (int i = 0; i < node->ninputs; i++) {
            int64_t k = node->inputs[i]->requires_grad ? find(r->b, node->inputs[i]) : -1;
            if (k >= 0) r->b->users[k]--;
        }
    return ok;
}

bool nb__grad_final_here(const nb_tensor *leaf) {
    const run *r = running;
    const nb_tensor *node = nb__backward_node;
    if (!r || !node || !leaf || leaf->op || !leaf->requires_grad || !fills_grads(r) ||
        !r->grads_when_ready || r->create_graph)
        return false;
    int64_t k = find(r->b, leaf);
    if (k < 0 || r->b->acc[k]) return false;
    int edges = 0;
    for (int i = 0; i < node->ninputs; i++) edges += node->inputs[i] == leaf;
    return edges > 0 && r->b->users[k] == edges;
}

static int run_backward(run *r) {
    if (!check_outputs(r)) return -1;
    const bool fills = fills_grads(r);
    buffers b = take_buffers();
    r->b = &b;
    int64_t n = topo_sort(&b, r->noutputs, r->outputs);
    if (n < 0) {
        give_back_buffers(&b);
        nb_set_error("%s: out of memory sorting the graph", r->who);
        return -1;
    }
    /* Hold every node until the end: freeing the graph as we go must not
     * free a node still waiting in the order. */
    for (int64_t i = 0; i < n; i++) nb__tensor_retain(b.nodes[i]);
    for (int i = 0; i < r->ninputs; i++) {
        int64_t k = find(&b, r->inputs[i]);
        if (k >= 0) b.capture[k] = i + 1;
    }
    for (int i = 0; i < r->nready; i++) {
        int64_t k = find(&b, r->ready[i]);
        if (k >= 0 && !b.capture[k]) b.capture[k] = -1; /* .grad when final */
    }
    /* nb_grad runs only the nodes through which a gradient reaches one of
     * its inputs, as PyTorch's engine does: the graph above the inputs (the
     * enclosing computation, when a checkpoint recomputes a segment from
     * inside a backward) is sorted but neither run nor freed. The
     * post-order puts a node's inputs before it. */
    for (int64_t i = 0; !fills && i < n; i++) {
        nb_tensor *node = b.nodes[b.order[i]];
        for (int j = 0; j < node->ninputs && !b.runs[b.order[i]]; j++) {
            int64_t c = node->inputs[j]->requires_grad ? find(&b, node->inputs[j]) : -1;
            b.runs[b.order[i]] = c >= 0 && (b.capture[c] != 0 || b.runs[c]);
        }
    }
    bool was = nb_set_grad_enabled(r->create_graph);
    bool ok = true;

    /* seed the outputs */
    for (int i = 0; i < r->noutputs && ok; i++) {
        nb_tensor *out = r->outputs[i], **acc = &b.acc[find(&b, out)];
        nb_tensor *go = r->grad_outputs ? r->grad_outputs[i] : NULL;
        nb_scope_begin();
        nb_tensor *seed = go ? go : nb_ones(out->ndim, out->shape);
        if (seed) nb__tensor_retain(seed);
        nb_scope_end();
        if (!seed) ok = false;
        else if (*acc) {
            *acc = accumulate(*acc, seed, r->create_graph);
            nb__tensor_decref(seed);
            ok = *acc != NULL;
        } else
            *acc = seed;
    }

    /* outputs first: the reverse of the post-order */
    for (int64_t i = n - 1; i >= 0 && ok; i--) {
        int64_t k = b.order[i];
        nb_tensor *node = b.nodes[k], *g = b.acc[k];
        if (!g) continue; /* no gradient reached it */
        b.acc[k] = NULL;
        if (node->hooks && !(r->inner && b.capture[k] > 0) && !(g = nb__run_hooks(node, g, r->who))) {
            ok = false;
            break;
        }
        if (node->op) {
            /* a recomputed segment's gradient stops at the checkpoint's
             * inputs: the enclosing backward carries it on from them */
            if (fills || (b.runs[k] && !(r->inner && b.capture[k] > 0)))
                ok = backprop_node(node, g, r);
        } else if (nb__debugging())
            nb__debug_backward(node, g, NULL, 0, r->who); /* trace a leaf */
        if (ok && b.capture[k] > 0) {
            nb__tensor_retain(g);
            r->grads[b.capture[k] - 1] = g;
        }
        bool post_hooks = !node->op && node->hooks && nb__has_post_hooks(node);
        if (ok && !node->op &&
            ((fills && (post_hooks || r->grads_when_ready)) || b.capture[k] < 0)) {
            /* A leaf's gradient is final once the traversal reaches it:
             * one with post-accumulate-grad hooks (or every leaf, when
             * asked, or a leaf whose gradient a checkpoint's recomputation
             * completes) gets its .grad now, and the hooks see it while
             * the rest of backward still runs. */
            b.acc[k] = g;
            ok = commit_grads(&b, k, k + 1, r->create_graph) && (!post_hooks || nb__run_post_hooks(node));
            continue;
        }
        if (ok && fills && (!node->op || node->retains_grad)) {
            b.acc[k] = g; /* for .grad, once every node has succeeded */
            continue;
        }
        nb__tensor_decref(g);
    }
    if (ok && fills) ok = commit_grads(&b, 0, n, r->create_graph);

    for (int64_t k = 0; k < n; k++)
        if (b.acc[k]) nb__tensor_decref(b.acc[k]);
    /* An input listed twice was captured once, in the slot of its last
     * listing: the other listings share that gradient. */
    for (int i = 0; ok && i < r->ninputs; i++) {
        int64_t k = find(&b, r->inputs[i]);
        int c = k >= 0 ? b.capture[k] - 1 : i;
        if (c != i && r->grads[c]) {
            nb__tensor_retain(r->grads[c]);
            r->grads[i] = r->grads[c];
        }
    }
    for (int i = 0; ok && !r->allow_unused && i < r->ninputs; i++)
        if (!r->grads[i]) {
            nb_tensor *in = r->inputs[i];
            nb_set_error("%s: input %d%s%s%s is not used by the outputs (no gradient reaches "
                         "it); set allow_unused to get NULL for it, and materialize_grads for "
                         "zeros", r->who, i, in->name[0] ? " '" : "", in->name,
                         in->name[0] ? "'" : "");
            ok = false;
        }
    nb_set_grad_enabled(was);
    if (ok && !r->retain_graph && !r->create_graph) {
        for (int64_t k = 0; k < n; k++) {
            nb_tensor *node = b.nodes[k];
            if (!node->op || (!fills && !b.runs[k])) continue;
            nb__forward_settle(node);
            nb__release_graph(node);
            node->graph_freed = true;
        }
    }
    /* release the nodes, outputs first */
    for (int64_t i = n - 1; i >= 0; i--) nb__tensor_decref(b.nodes[b.order[i]]);
    give_back_buffers(&b);
    return ok ? 0 : -1;
}

int nb_backward_ex(nb_tensor *out, nb_tensor *grad_output, const nb_backward_opts *opts) {
    if (!out) return -1;
    nb_backward_opts o = opts ? *opts : (nb_backward_opts){0};
    nb_tensor *gos[1] = {grad_output};
    run r = {1, &out, gos, 0, NULL, NULL, o.retain_graph, o.create_graph, false, o.grads_when_ready,
             "nb_backward", NULL};
    return run_backward(&r);
}

int nb_backward(nb_tensor *loss) { return nb_backward_ex(loss, NULL, NULL); }

/* The end of nb_grad: each gradient handed to the caller's scope, or none
 * on failure. */
static int hand_over(int rc, int ninputs, nb_tensor *const *inputs, nb_tensor **grads,
                     bool create_graph, bool materialize, const char *who) {
    /* Hand each gradient to the caller's scope: a private one directly, one
     * that is visible elsewhere (a grad_output) through a new tensor. */
    for (int i = 0; i < ninputs; i++) {
        nb_tensor *g = grads[i];
        if (rc != 0) {
            if (g) nb__tensor_decref(g);
            grads[i] = NULL;
            continue;
        }
        if (!g) { /* unused: allowed, or run_backward would have failed */
            if (materialize) grads[i] = nb_zeros(inputs[i]->ndim, inputs[i]->shape);
            if (materialize && !grads[i]) rc = -1;
            continue;
        }
        if (atomic_load(&g->refcount) == 1 && !g->caller_ref && !g->container_ref &&
            g->scope_depth == 0) {
            if (nb__scope_adopt(g)) continue;
            nb__tensor_decref(g);
            grads[i] = NULL;
            nb_set_error("%s: out of memory", who);
            rc = -1;
            continue;
        }
        bool was = nb_set_grad_enabled(create_graph);
        grads[i] = alias(g);
        nb_set_grad_enabled(was);
        nb__tensor_decref(g);
        if (!grads[i]) rc = -1;
    }
    /* On failure no gradient is handed out: those already given to the
     * scope are released when it closes. */
    if (rc != 0)
        for (int i = 0; i < ninputs; i++) grads[i] = NULL;
    return rc;
}

int nb_grad(int noutputs, nb_tensor *const *outputs, nb_tensor *const *grad_outputs, int ninputs,
            nb_tensor *const *inputs, nb_tensor **grads, const nb_grad_opts *opts) {
    nb_grad_opts o = opts ? *opts : (nb_grad_opts){0};
    bool create_graph = o.create_graph;
    if (!outputs || !inputs || !grads || noutputs < 1 || ninputs < 1) {
        nb_set_error("nb_grad: needs at least one output, one input and a result array");
        return -1;
    }
    for (int i = 0; i < ninputs; i++) grads[i] = NULL;
    for (int i = 0; i < noutputs; i++)
        if (!outputs[i] || (grad_outputs && !grad_outputs[i] && outputs[i]->numel != 1)) {
            if (outputs[i]) nb_set_error("nb_grad: grad_outputs[%d] is NULL for a non-scalar output", i);
            return -1;
        }
    run r = {noutputs, outputs, grad_outputs, ninputs, inputs, grads, o.retain_graph,
             o.create_graph, o.allow_unused || o.materialize_grads, false, "nb_grad", NULL};
    int rc = run_backward(&r);
    return hand_over(rc, ninputs, inputs, grads, create_graph, o.materialize_grads, r.who);
}

int nb__segment_grad(nb_tensor *y, nb_tensor *gy, int ninputs, nb_tensor *const *inputs,
                     nb_tensor **grads, int nready, nb_tensor *const *ready, bool create_graph) {
    for (int i = 0; i < ninputs; i++) grads[i] = NULL;
    run r = {1, &y, &gy, ninputs, inputs, grads, true, create_graph, true, false,
             nb__backward_who ? nb__backward_who : "nb_backward", NULL, nready, ready, true};
    return hand_over(run_backward(&r), ninputs, inputs, grads, create_graph, false, r.who);
}
