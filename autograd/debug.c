/* debug.c — the tools for looking inside a computation while it runs:
 * gradient hooks on tensors, trace mode (a line per op as forward and
 * backward run), anomaly mode (the first op to make a NaN or an infinity is
 * an error naming it and where the user's code called it) and the source
 * locations that anomaly mode reports.
 *
 * They live here, not in engine.c, so that the engine stays a topological
 * sort and one loop: it calls in at three points (nb_record, around each
 * node's backward formula, and before a node's gradient moves on), and only
 * when a tool is on. With every tool off the cost is two relaxed atomic
 * loads per recorded op and per node of a backward, and a NULL test (the
 * node's hooks) per node of a backward.
 *
 * Locations come from an opt-in macro layer (nb_locations.h, turned on by
 * compiling the user's files with -DNB_LOCATIONS): each op name becomes a
 * macro that pushes its own name, __FILE__ and __LINE__ on a small
 * per-thread stack, calls the real function and pops. A stack rather than
 * one slot, so that in nb_relu(nb_matmul(x, w)) written over two lines the
 * relu is placed on its own line after the matmul's push and pop. The node
 * copies the top of the stack when anomaly mode is on (three stores per
 * op), and not at all when it is off.
 */
#include "tensor_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

atomic_bool nb__anomaly_on;
_Atomic(FILE *) nb__trace_out;
atomic_int nb__trace_what;
_Thread_local const nb_tensor *nb__backward_node;
_Thread_local const char *nb__backward_who;

/* ---- source locations --------------------------------------------------------- */

#define WHERE_DEPTH 64

typedef struct where {
    const char *function, *file;
    int line;
} where;

static _Thread_local where where_stack[WHERE_DEPTH];
static _Thread_local int where_depth; /* may exceed WHERE_DEPTH: then unknown */
/* When the last forward trace line was printed, or the last op was called
 * through the macros: a forward line's time is measured from it. */
static _Thread_local double forward_mark;

static double seconds_now(void);

void nb__where_push(const char *function, const char *file, int line) {
    if (where_depth >= 0 && where_depth < WHERE_DEPTH)
        where_stack[where_depth] = (where){function, file, line};
    where_depth++;
    if (atomic_load_explicit(&nb__trace_out, memory_order_relaxed)) forward_mark = seconds_now();
}

nb_tensor *nb__where_pop(nb_tensor *t) {
    if (where_depth > 0) where_depth--;
    return t;
}

/* " at file.c:12" (" by nb_mse_loss at file.c:12" when by is set and the
 * function is known), or advice when the op was called without the macros. */
static const char *describe_where(const nb_tensor *t, bool by, char *buf, size_t size) {
    if (t && t->where_file && by && t->where_function)
        snprintf(buf, size, " by %s at %s:%d", t->where_function, t->where_file, t->where_line);
    else if (t && t->where_file)
        snprintf(buf, size, " at %s:%d", t->where_file, t->where_line);
    else
        snprintf(buf, size, " (compile with -DNB_LOCATIONS to see where)");
    return buf;
}

/* ---- switches ---------------------------------------------------------------------- */

bool nb_set_detect_anomaly(bool enabled) { return atomic_exchange(&nb__anomaly_on, enabled); }
bool nb_is_anomaly_enabled(void) { return atomic_load_explicit(&nb__anomaly_on, memory_order_relaxed); }

FILE *nb_set_trace(FILE *out, int what) {
    atomic_store(&nb__trace_what, out ? what : 0);
    return atomic_exchange(&nb__trace_out, out);
}

/* ---- helpers ------------------------------------------------------------------------- */

/* The Euclidean norm, summed in double: a large tensor's norm in float
 * would lose the small terms. */
static double norm2(const nb_tensor *t) {
    const float *d = nb_data(t);
    double s = 0;
    for (int64_t i = 0; i < t->numel; i++) s += (double)d[i] * (double)d[i];
    return sqrt(s);
}

/* The index of the first NaN or infinity of t, or -1. */
static int64_t first_nonfinite(const nb_tensor *t) {
    const float *d = nb_data(t);
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(d[i])) return i;
    return -1;
}

static const char *kind_of(float v) { return isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf"; }

/* "[2,3] [3]": the shapes of a node's inputs. */
static char *input_shapes(int n, nb_tensor *const *inputs, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used + 1 < size; i++) {
        char s[NB_SHAPE_CHARS];
        if (inputs[i]) nb_shape_str(inputs[i]->ndim, inputs[i]->shape, s, sizeof s);
        int w = snprintf(buf + used, size - used, "%s%s", i ? " " : "", inputs[i] ? s : "NULL");
        if (w < 0) break;
        used += (size_t)w < size - used ? (size_t)w : size - used - 1;
    }
    return buf;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- called from nb_record ------------------------------------------------------------ */

bool nb__debug_record(nb_tensor *out, const nb_op *op, int ninputs, nb_tensor *const *inputs) {
    bool anomaly = nb_is_anomaly_enabled();
    if (anomaly && where_depth > 0 && where_depth <= WHERE_DEPTH) {
        out->where_function = where_stack[where_depth - 1].function;
        out->where_file = where_stack[where_depth - 1].file;
        out->where_line = where_stack[where_depth - 1].line;
    }
    char shapes[256], at[160], s[NB_SHAPE_CHARS];
    FILE *trace = atomic_load(&nb__trace_out);
    if (trace && (atomic_load(&nb__trace_what) & NB_TRACE_FORWARD) && !nb__backward_node) {
        nb_shape_str(out->ndim, out->shape, s, sizeof s);
        double t = seconds_now(), us = forward_mark > 0 ? 1e6 * (t - forward_mark) : 0;
        fprintf(trace, "forward %s %s |y| %.6g <- %s +%.1f us\n", op->name, s, norm2(out),
                input_shapes(ninputs, inputs, shapes, sizeof shapes), us);
        forward_mark = seconds_now(); /* after the printing, which is not the next op's time */
    }
    if (!anomaly) return true;
    int64_t bad = first_nonfinite(out);
    if (bad < 0) return true;
    nb_shape_str(out->ndim, out->shape, s, sizeof s);
    input_shapes(ninputs, inputs, shapes, sizeof shapes);
    describe_where(out, false, at, sizeof at);
    const nb_tensor *node = nb__backward_node;
    if (node) {
        char at2[160], shapes2[256];
        nb_set_error("%s: anomaly detection: in the backward of '%s' (input shapes %s), created%s: "
                     "op '%s' produced %s at element %lld of its output %s (input shapes %s)",
                     nb__backward_who, node->op->name,
                     input_shapes(node->ninputs, node->inputs, shapes2, sizeof shapes2),
                     describe_where(node, true, at2, sizeof at2), op->name,
                     kind_of(nb_data(out)[bad]), (long long)bad, s, shapes);
    } else {
        /* the message starts with the function the user called, when known */
        const char *fn = out->where_function;
        nb_set_error("%s%sanomaly detection: op '%s' produced %s at element %lld of its output %s "
                     "(input shapes %s)%s",
                     fn ? fn : "", fn ? ": " : "", op->name, kind_of(nb_data(out)[bad]),
                     (long long)bad, s, shapes, at);
    }
    return false;
}

/* ---- called around a node's backward formula ------------------------------------------ */

double nb__debug_clock(void) { return atomic_load(&nb__trace_out) ? seconds_now() : 0; }

bool nb__debug_backward(const nb_tensor *node, const nb_tensor *g, nb_tensor *const *gin,
                        double started, const char *who) {
    FILE *trace = atomic_load(&nb__trace_out);
    if (trace && (atomic_load(&nb__trace_what) & NB_TRACE_BACKWARD)) {
        double us = node->op ? 1e6 * (seconds_now() - started) : 0;
        char s[NB_SHAPE_CHARS];
        nb_shape_str(node->ndim, node->shape, s, sizeof s);
        fprintf(trace, "backward %s %s \"%s\" |grad| %.6g", node->op ? node->op->name : "leaf", s,
                node->name, norm2(g));
        if (node->op) {
            fputs(" ->", trace);
            for (int i = 0; i < node->ninputs; i++) {
                if (gin[i]) fprintf(trace, " %.6g", norm2(gin[i]));
                else fputs(" -", trace);
            }
            fprintf(trace, " %.1f us", us);
        }
        fputc('\n', trace);
    }
    if (!nb_is_anomaly_enabled() || !node->op) return true;
    for (int i = 0; i < node->ninputs; i++) {
        int64_t bad = gin[i] && node->inputs[i]->requires_grad ? first_nonfinite(gin[i]) : -1;
        if (bad < 0) continue;
        char s[NB_SHAPE_CHARS], shapes[256], at[160];
        nb_set_error("%s: anomaly detection: the backward of '%s' (input shapes %s), created%s, "
                     "produced %s at element %lld of the gradient of input %d (shape %s)",
                     who, node->op->name, input_shapes(node->ninputs, node->inputs, shapes, sizeof shapes),
                     describe_where(node, true, at, sizeof at), kind_of(nb_data(gin[i])[bad]),
                     (long long)bad, i, nb_shape_str(gin[i]->ndim, gin[i]->shape, s, sizeof s));
        return false;
    }
    return true;
}

/* ---- gradient hooks ------------------------------------------------------------------- */

/* A tensor's hooks of both kinds share one list, so that handles, removal
 * and free_user work alike: post is NULL for a gradient hook, fn for a
 * post-accumulate-grad hook. */
struct nb__hook {
    int id;
    nb_grad_hook fn;
    nb_post_accumulate_grad_hook post;
    void *user;
    void (*free_user)(void *);
    struct nb__hook *next;
};

static atomic_int next_hook_id = 1;

int nb_register_hook_ex(nb_tensor *t, nb_grad_hook hook, void *user, void (*free_user)(void *)) {
    if (!t) {
        if (free_user) free_user(user);
        return -1;
    }
    if (!hook || !t->requires_grad) {
        nb_set_error("nb_register_hook: %s", hook ? "the tensor does not require grad: no gradient "
                                                    "will pass through it"
                                                  : "the hook is NULL");
        if (free_user) free_user(user);
        return -1;
    }
    struct nb__hook *h = nb_malloc(sizeof *h);
    if (!h) {
        nb_set_error("nb_register_hook: out of memory");
        if (free_user) free_user(user);
        return -1;
    }
    *h = (struct nb__hook){atomic_fetch_add(&next_hook_id, 1), hook, NULL, user, free_user, NULL};
    struct nb__hook **end = &t->hooks; /* hooks fire in the order they were registered */
    while (*end) end = &(*end)->next;
    *end = h;
    return h->id;
}

int nb_register_hook(nb_tensor *t, nb_grad_hook hook, void *user) {
    return nb_register_hook_ex(t, hook, user, NULL);
}

int nb_register_post_accumulate_grad_hook_ex(nb_tensor *t, nb_post_accumulate_grad_hook hook, void *user,
                                             void (*free_user)(void *)) {
    const char *who = "nb_register_post_accumulate_grad_hook";
    if (!t) {
        if (free_user) free_user(user);
        return -1;
    }
    if (!hook || !t->requires_grad || t->op) {
        nb_set_error("%s: %s", who,
                     !hook               ? "the hook is NULL"
                     : !t->requires_grad ? "the tensor does not require grad: no gradient will reach it"
                                         : "the tensor is not a leaf: only a leaf's gradient is "
                                           "accumulated into .grad");
        if (free_user) free_user(user);
        return -1;
    }
    struct nb__hook *h = nb_malloc(sizeof *h);
    if (!h) {
        nb_set_error("%s: out of memory", who);
        if (free_user) free_user(user);
        return -1;
    }
    *h = (struct nb__hook){atomic_fetch_add(&next_hook_id, 1), NULL, hook, user, free_user, NULL};
    struct nb__hook **end = &t->hooks;
    while (*end) end = &(*end)->next;
    *end = h;
    return h->id;
}

int nb_register_post_accumulate_grad_hook(nb_tensor *t, nb_post_accumulate_grad_hook hook, void *user) {
    return nb_register_post_accumulate_grad_hook_ex(t, hook, user, NULL);
}

static void free_hook(struct nb__hook *h) {
    if (h->free_user) h->free_user(h->user);
    nb_free(h);
}

int nb_remove_hook(nb_tensor *t, int handle) {
    if (!t) return -1;
    for (struct nb__hook **p = &t->hooks; *p; p = &(*p)->next)
        if ((*p)->id == handle) {
            struct nb__hook *h = *p;
            *p = h->next;
            free_hook(h);
            return 0;
        }
    nb_set_error("nb_remove_hook: this tensor has no hook %d", handle);
    return -1;
}

void nb__free_hooks(nb_tensor *t) {
    while (t->hooks) {
        struct nb__hook *h = t->hooks;
        t->hooks = h->next;
        free_hook(h);
    }
}

nb_tensor *nb__run_hooks(nb_tensor *t, nb_tensor *g, const char *who) {
    for (struct nb__hook *h = t->hooks; h && g; h = h->next) {
        if (!h->fn) continue; /* a post-accumulate-grad hook: later */
        uint64_t errors = nb_error_count();
        nb_scope_begin();
        nb_tensor *r = h->fn(g, h->user);
        bool ok = nb_error_count() == errors;
        if (ok && r && !nb_same_shape(r, g)) {
            char b1[NB_SHAPE_CHARS], b2[NB_SHAPE_CHARS];
            nb_set_error("%s: a hook on the tensor%s%s%s of shape %s returned a gradient of shape %s",
                         who, t->name[0] ? " '" : "", t->name, t->name[0] ? "'" : "",
                         nb_shape_str(t->ndim, t->shape, b1, sizeof b1),
                         nb_shape_str(r->ndim, r->shape, b2, sizeof b2));
            ok = false;
        }
        if (ok && r && r != g) {
            nb__tensor_retain(r);
            nb__tensor_decref(g);
            g = r;
        }
        nb_scope_end();
        if (!ok) {
            nb__tensor_decref(g);
            g = NULL;
        }
    }
    return g;
}

bool nb__has_post_hooks(const nb_tensor *t) {
    for (const struct nb__hook *h = t->hooks; h; h = h->next)
        if (h->post) return true;
    return false;
}

/* Each hook in a scope of its own: what it makes is freed when it returns
 * (it returns nothing to keep). */
bool nb__run_post_hooks(nb_tensor *t) {
    for (struct nb__hook *h = t->hooks; h; h = h->next) {
        if (!h->post) continue;
        uint64_t errors = nb_error_count();
        nb_scope_begin();
        h->post(t, h->user);
        nb_scope_end();
        if (nb_error_count() != errors) return false;
    }
    return true;
}
