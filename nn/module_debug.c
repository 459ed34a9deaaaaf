/* module_debug.c — looking inside a module: forward and backward hooks,
 * the graph drawn with the module's parameter names, and a gradcheck over
 * all of a module's parameters at once.
 *
 * Each is built on the autograd-level tool of the same purpose (gradient
 * hooks, nb_export_dot_ex, nb_gradcheck) and adds only what a module knows:
 * where its forward starts and ends, and the dotted names of its
 * parameters. A module without hooks pays one NULL test per forward.
 */
#include "nn_internal.h"

#include <stdatomic.h>
#include <string.h>

/* ---- hooks ------------------------------------------------------------------------ */

enum { PRE, FORWARD, BACKWARD };

struct nb__module_hook {
    int id, kind;
    nb_forward_pre_hook pre;
    nb_forward_hook forward;
    nb_module_backward_hook backward;
    void *user;
    struct nb__module_hook *next;
};

static atomic_int next_id = 1;

static int add_hook(const char *who, nb_module *m, struct nb__module_hook h) {
    if (!m) return -1;
    if (!h.pre && !h.forward && !h.backward) {
        nb_set_error("%s: the hook is NULL", who);
        return -1;
    }
    struct nb__module_hook *n = nb_malloc(sizeof *n);
    if (!n) {
        nb_set_error("%s: out of memory", who);
        return -1;
    }
    *n = h;
    n->id = atomic_fetch_add(&next_id, 1);
    n->next = NULL;
    struct nb__module_hook **end = &m->hooks;
    while (*end) end = &(*end)->next;
    *end = n;
    return n->id;
}

int nb_module_register_forward_pre_hook(nb_module *m, nb_forward_pre_hook hook, void *user) {
    return add_hook("nb_module_register_forward_pre_hook", m,
                    (struct nb__module_hook){.kind = PRE, .pre = hook, .user = user});
}

int nb_module_register_forward_hook(nb_module *m, nb_forward_hook hook, void *user) {
    return add_hook("nb_module_register_forward_hook", m,
                    (struct nb__module_hook){.kind = FORWARD, .forward = hook, .user = user});
}

int nb_module_register_backward_hook(nb_module *m, nb_module_backward_hook hook, void *user) {
    return add_hook("nb_module_register_backward_hook", m,
                    (struct nb__module_hook){.kind = BACKWARD, .backward = hook, .user = user});
}

int nb_module_remove_hook(nb_module *m, int handle) {
    if (!m) return -1;
    for (struct nb__module_hook **p = &m->hooks; *p; p = &(*p)->next)
        if ((*p)->id == handle) {
            struct nb__module_hook *h = *p;
            *p = h->next;
            nb_free(h);
            return 0;
        }
    nb_set_error("nb_module_remove_hook: this %s has no hook %d", m->type->name, handle);
    return -1;
}

void nb__module_free_hooks(nb_module *m) {
    while (m->hooks) {
        struct nb__module_hook *h = m->hooks;
        m->hooks = h->next;
        nb_free(h);
    }
}

/* A module's backward hook, as a gradient hook on one of its outputs: the
 * closure is a copy, so removing the module hook later leaves it alone, and
 * it is freed with the output. */
typedef struct backward_closure {
    nb_module_backward_hook fn;
    nb_module *m;
    void *user;
} backward_closure;

static nb_tensor *call_backward_hook(nb_tensor *grad, void *user) {
    backward_closure *c = user;
    return c->fn(c->m, grad, c->user);
}

nb_tensor *nb__module_forward_hooked(nb_module *m, nb_tensor *x) {
    uint64_t errors = nb_error_count();
    for (struct nb__module_hook *h = m->hooks; h && x; h = h->next) {
        if (h->kind != PRE) continue;
        nb_tensor *r = h->pre(m, x, h->user);
        if (nb_error_count() != errors) return NULL;
        if (r) x = r;
    }
    nb_tensor *y = m->type->forward(m, x);
    for (struct nb__module_hook *h = m->hooks; h && y; h = h->next) {
        if (h->kind != FORWARD) continue;
        nb_tensor *r = h->forward(m, x, y, h->user);
        if (nb_error_count() != errors) return NULL;
        if (r) y = r;
    }
    /* backward hooks go on the output the forward hooks settled on; the
     * closure is the one allocation per forward, made only with such hooks */
    for (struct nb__module_hook *h = m->hooks; h && y; h = h->next) {
        if (h->kind == BACKWARD && nb_requires_grad(y)) {
            backward_closure *c = nb_malloc(sizeof *c);
            if (!c) {
                nb_set_error("nb_module_forward: out of memory for a backward hook of a %s",
                             m->type->name);
                return NULL;
            }
            *c = (backward_closure){h->backward, m, h->user};
            if (nb_register_hook_ex(y, call_backward_hook, c, nb_free) < 0) return NULL;
        }
    }
    return y;
}

/* ---- the graph with parameter names ------------------------------------------------ */

int nb_module_export_dot(nb_module *m, const nb_tensor *t, FILE *out, const nb_export_opts *opts) {
    if (!m || !t) return -1;
    int n;
    nb_tensor **params = nb__module_parameters("nb_module_export_dot", m, &n);
    if (!params) return -1;
    const char **names = nb_malloc((size_t)(n ? n : 1) * sizeof *names);
    if (!names) {
        nb_set_error("nb_module_export_dot: out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) names[i] = m->param_names[i];
    nb_export_opts o = opts ? *opts : nb_export_defaults();
    o.nnamed = n;
    o.named = (const nb_tensor *const *)params;
    o.names = names;
    int rc = nb_export_dot_ex(t, out, &o);
    nb_free(names);
    return rc;
}

/* ---- gradcheck over every parameter ----------------------------------------------------- */

/* nb_gradcheck takes at most this many inputs: the parameters are checked
 * in groups of it, each group with the module's full forward. */
#define GROUP 16

typedef struct module_input {
    nb_module *m;
    nb_tensor *x;
} module_input;

static nb_tensor *forward_of(nb_tensor *const *inputs, void *ctx) {
    (void)inputs; /* the parameters are perturbed in place: the module reads them */
    module_input *mi = ctx;
    return nb_module_forward(mi->m, mi->x);
}

/* Copies of the buffers' values, so that a forward that updates them
 * (batch norm in training mode) leaves them as they were. */
static float **save_buffers(nb_module *m, int *count) {
    nb_tensor **b = nb__module_buffers("nb_module_gradcheck", m, count);
    if (!b) return NULL;
    float **saved = nb_calloc((size_t)(*count ? *count : 1), sizeof *saved);
    for (int i = 0; saved && i < *count; i++) {
        saved[i] = nb_malloc((size_t)(nb_numel(b[i]) ? nb_numel(b[i]) : 1) * sizeof(float));
        if (!saved[i]) {
            for (int j = 0; j < i; j++) nb_free(saved[j]);
            nb_free(saved);
            saved = NULL;
            break;
        }
        memcpy(saved[i], nb_data(b[i]), (size_t)nb_numel(b[i]) * sizeof(float));
    }
    if (!saved) nb_set_error("nb_module_gradcheck: out of memory");
    return saved;
}

static void restore_buffers(nb_module *m, float **saved, int count) {
    int n;
    nb_tensor **b = nb__module_buffers("nb_module_gradcheck", m, &n);
    for (int i = 0; i < count; i++) {
        if (b && i < n) memcpy(nb_data_mut(b[i]), saved[i], (size_t)nb_numel(b[i]) * sizeof(float));
        nb_free(saved[i]);
    }
    nb_free(saved);
}

bool nb_module_gradcheck(nb_module *m, nb_tensor *x, const nb_gradcheck_opts *opts,
                         nb_gradcheck_result *result) {
    nb_gradcheck_result worst = {.ok = false, .input = -1, .index = -1};
    bool quiet = opts && opts->quiet;
    if (!m || !x) {
        snprintf(worst.message, sizeof worst.message, "nb_module_gradcheck: %s is NULL",
                 m ? "the input" : "the module");
        if (result) *result = worst;
        return false;
    }
    /* Build lazy layers first, so that the parameter list is complete; a
     * buffer that exists already is saved before this forward moves it. */
    int n = 0, nbuf = 0;
    float **saved = save_buffers(m, &nbuf);
    nb_scope_begin();
    nb_tensor *y = saved ? nb_module_forward(m, x) : NULL;
    nb_scope_end();
    int now = 0;
    if (saved && nb__module_buffers("nb_module_gradcheck", m, &now) && now != nbuf) {
        /* a layer built itself: its buffers are saved as that forward left them */
        for (int i = 0; i < nbuf; i++) nb_free(saved[i]);
        nb_free(saved);
        saved = save_buffers(m, &nbuf);
    }
    nb_tensor **params = y && saved ? nb__module_parameters("nb_module_gradcheck", m, &n) : NULL;
    if (!params || n == 0) {
        snprintf(worst.message, sizeof worst.message, "nb_module_gradcheck: %s%s",
                 params ? "the module has no parameters" : !y && saved ? "the forward failed: " : "",
                 params ? "" : nb_error() ? nb_error() : "");
        if (saved) restore_buffers(m, saved, nbuf);
        if (n == 0 && params) nb_set_error("%s", worst.message);
        if (result) *result = worst;
        return false;
    }
    /* The list may be rebuilt by a forward: work on a copy. */
    nb_tensor *list[GROUP];
    nb_gradcheck_opts o = opts ? *opts : (nb_gradcheck_opts){0};
    o.quiet = true;
    module_input mi = {m, x};
    bool ok = true, have = false;
    for (int start = 0; start < n; start += GROUP) {
        int k = n - start < GROUP ? n - start : GROUP;
        int now_n;
        params = nb__module_parameters("nb_module_gradcheck", m, &now_n);
        nb_gradcheck_result r;
        bool passed = false;
        if (!params || now_n != n) {
            snprintf(r.message, sizeof r.message, "nb_gradcheck: %s",
                     params ? "the module's parameters changed during the check" : "out of memory");
            r.input = -1;
        } else {
            memcpy(list, params + start, (size_t)k * sizeof *list);
            passed = nb_gradcheck(forward_of, &mi, k, list, &o, &r);
        }
        /* the check itself could not run (the forward failed, say): its
         * message says why */
        bool ran = strstr(r.message, ": passed;") || strstr(r.message, ": FAILED;");
        if (!ran || r.input < 0) {
            worst = r;
            worst.input = worst.index = -1;
            snprintf(worst.message, sizeof worst.message, "nb_module_gradcheck: %.360s",
                     strncmp(r.message, "nb_gradcheck: ", 14) ? r.message : r.message + 14);
            ok = false;
            have = false;
            break;
        }
        /* a failure beats any pass; between two of the same, the larger error */
        bool worse = !have || (ok && !passed) || (ok == passed && r.error > worst.error);
        if (worse) {
            worst = r;
            worst.input = start + r.input;
            have = true;
        }
        ok = ok && passed;
    }
    restore_buffers(m, saved, nbuf);
    worst.ok = ok;
    if (have) {
        const char *name = nb_module_parameter_name(m, worst.input);
        char shape[128];
        nb_tensor *p = nb_module_parameters(m, &n)[worst.input];
        nb_shape_str(nb_ndim(p), nb_shape(p), shape, sizeof shape);
        snprintf(worst.message, sizeof worst.message,
                 "nb_module_gradcheck: %s; worst at %s[%lld] (parameter %s of shape %s): analytic "
                 "%.6g, numeric %.6g%s",
                 ok ? "passed" : "FAILED", name, (long long)worst.index, name, shape, worst.analytic,
                 worst.numeric, worst.at_kink ? "; it sits at a kink, where the analytic value is a "
                                                "subgradient" : "");
    }
    if (!ok && !quiet) fprintf(stderr, "%s\n", worst.message);
    if (result) *result = worst;
    return ok;
}
