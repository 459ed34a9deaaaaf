/* functional.c — whole derivatives of small functions: Jacobians, Hessians,
 * and Hessian-vector products, with the shapes and names of PyTorch's
 * torch.autograd.functional.
 *
 * A Jacobian has two strategies. Reverse mode takes one backward per output
 * element, seeded with that element's one-hot vector: row k of the Jacobian
 * is the gradient of output element k. Forward mode takes one nb_jvp per
 * input element, with that element's one-hot tangent: column k is the
 * tangent of the outputs. Each pass costs about one evaluation of f, so the
 * cheaper strategy is the one with fewer passes, and AUTO picks forward
 * exactly when the inputs have fewer elements in all than the outputs. A
 * Hessian is the Jacobian of the gradient, and has the same two
 * strategies: forward over reverse (the forward Jacobian of a function
 * that runs nb_grad, as torch.func.hessian) and reverse over reverse (the
 * reverse Jacobian of the gradient computed with create_graph, the
 * default). A vector-Hessian product is the gradient of <grad f, v>
 * (reverse over reverse, one backward through the graph of the gradient),
 * and a Hessian-vector product is the tangent of grad f along v (forward
 * over reverse, one nb_jvp of a function that runs nb_grad).
 *
 * The inputs are first replaced by detached copies that require grad, so
 * that the function is differentiated with respect to them alone whatever
 * the caller's graph. With create_graph an input that already requires
 * grad is used as it is, so that the result is a graph reaching back to it
 * (nb_grad then runs only the part of the graph below the inputs; forward
 * mode's rules are ops, so the tangents are such graphs too). Results are
 * built in a scope of this file and escape to the caller's.
 */
#include "nb_ops.h"

#include <stdio.h>
#include <string.h>

#define SHAPE_BUF 128

/* The tensors f is differentiated at: see the top. */
static bool prepare_inputs(int n, nb_tensor *const *inputs, bool create_graph, nb_tensor **xs) {
    for (int i = 0; i < n; i++) {
        if (create_graph && nb_requires_grad(inputs[i])) xs[i] = inputs[i];
        else xs[i] = nb_set_requires_grad(nb_detach(inputs[i]), true);
        if (!xs[i]) return false;
    }
    return true;
}

static bool check_args(const char *who, bool has_f, int ninputs, nb_tensor *const *inputs, void *out) {
    if (!has_f || ninputs < 1 || !inputs || !out) {
        nb_set_error("%s: needs a function, at least one input (%d given) and a result array", who,
                     ninputs);
        return false;
    }
    for (int i = 0; i < ninputs; i++)
        if (!inputs[i]) return false; /* NULL in, NULL out: no second message */
    return true;
}

/* The message for a function that returned NULL without one of its own. */
static void function_failed(const char *who, uint64_t errors) {
    if (nb_error_count() == errors) nb_set_error("%s: the function returned NULL", who);
}

/* Shaped like t, 1 at element k: a backward's seed for output element k, or
 * a JVP's tangent for input element k. */
static nb_tensor *one_hot(const nb_tensor *t, int64_t k) {
    nb_tensor *e = nb_zeros(nb_ndim(t), nb_shape(t));
    if (e) nb_data_mut(e)[k] = 1.0f;
    return e;
}

/* The shape of block (o, i): output o's shape followed by input i's. */
static bool block_shape(const char *who, int o, const nb_tensor *y, int i, const nb_tensor *x,
                        int *ndim, int64_t *shape) {
    int ydim = nb_ndim(y), xdim = nb_ndim(x);
    if (ydim + xdim > NB_MAX_DIMS) {
        char b1[SHAPE_BUF], b2[SHAPE_BUF];
        nb_set_error("%s: output %d of shape %s and input %d of shape %s make a Jacobian of %d "
                     "dimensions; nabla tensors have at most %d",
                     who, o, nb_shape_str(ydim, nb_shape(y), b1, sizeof b1), i,
                     nb_shape_str(xdim, nb_shape(x), b2, sizeof b2), ydim + xdim, NB_MAX_DIMS);
        return false;
    }
    memcpy(shape, nb_shape(y), (size_t)ydim * sizeof *shape);
    memcpy(shape + ydim, nb_shape(x), (size_t)xdim * sizeof *shape);
    *ndim = ydim + xdim;
    return true;
}

/* jac[o·nin + i] = d outs[o] / d xs[i], shaped outs[o].shape + xs[i].shape.
 * An output that does not require grad (or is NULL: an unused gradient, for
 * the Hessian) has a zero Jacobian, as in PyTorch's non-strict mode. */
static bool jacobian_of(const char *who, int nout, nb_tensor *const *outs, int nin,
                        nb_tensor *const *xs, nb_tensor **jac, bool create_graph) {
    nb_tensor *g_inline[16], **g = nin <= 16 ? g_inline : nb_malloc((size_t)nin * sizeof *g);
    if (!g) {
        nb_set_error("%s: out of memory", who);
        return false;
    }
    bool ok = true;
    for (int o = 0; o < nout && ok; o++) {
        nb_tensor *y = outs[o];
        int64_t m = y ? nb_numel(y) : 0;
        /* the shape of each block, and the rows of the create_graph case */
        nb_tensor **rows = NULL;
        for (int i = 0; i < nin && ok; i++) {
            int nd;
            int64_t shape[NB_MAX_DIMS];
            if (!block_shape(who, o, y ? y : xs[o], i, xs[i], &nd, shape)) {
                ok = false;
                break;
            }
            jac[o * nin + i] = nb_zeros(nd, shape);
            ok = jac[o * nin + i] != NULL;
        }
        if (!ok || !y || !nb_requires_grad(y) || m == 0) continue;
        if (create_graph) {
            rows = nb_calloc((size_t)(m * nin), sizeof *rows);
            if (!rows) {
                nb_set_error("%s: out of memory", who);
                ok = false;
                break;
            }
        }
        nb_grad_opts opts = {.retain_graph = true, .create_graph = create_graph,
                             .allow_unused = true, .materialize_grads = true};
        for (int64_t k = 0; k < m && ok; k++) {
            /* without create_graph each row is copied out and its
             * temporaries freed at once */
            if (!create_graph) nb_scope_begin();
            nb_tensor *e = one_hot(y, k);
            ok = e && nb_grad(1, &y, &e, nin, xs, g, &opts) == 0;
            for (int i = 0; ok && i < nin; i++) {
                if (create_graph) {
                    rows[k * nin + i] = g[i];
                    continue;
                }
                int64_t row = nb_numel(xs[i]);
                memcpy(nb_data_mut(jac[o * nin + i]) + k * row, nb_data(g[i]),
                       (size_t)row * sizeof(float));
            }
            if (!create_graph) nb_scope_end();
        }
        /* the rows, stacked and shaped as the zeros made above */
        for (int i = 0; ok && create_graph && i < nin; i++) {
            nb_tensor *col[1];
            nb_tensor **list = nb_malloc((size_t)m * sizeof *list);
            if (!list) {
                nb_set_error("%s: out of memory", who);
                ok = false;
                break;
            }
            for (int64_t k = 0; k < m; k++) list[k] = rows[k * nin + i];
            col[0] = nb_stack((int)m, list, 0);
            nb_free(list);
            nb_tensor *z = jac[o * nin + i];
            jac[o * nin + i] = nb_reshape(col[0], nb_ndim(z), nb_shape(z));
            ok = jac[o * nin + i] != NULL;
        }
        nb_free(rows);
    }
    if (g != g_inline) nb_free(g);
    return ok;
}

/* Ends the scope begun by a public function, handing its n results to the
 * caller's scope, or NULL for all of them on failure. */
static int finish(bool ok, int n, nb_tensor **results) {
    for (int i = 0; i < n; i++) {
        if (!ok) results[i] = NULL;
        else nb_escape(results[i]);
    }
    nb_scope_end();
    return ok ? 0 : -1;
}

static void clear(int n, nb_tensor **t) {
    for (int i = 0; i < n; i++) t[i] = NULL;
}

#define MAX_ARGS 64

static bool check_counts(const char *who, int noutputs, int ninputs) {
    if (noutputs > MAX_ARGS || ninputs > MAX_ARGS || noutputs < 1) {
        nb_set_error("%s: %d outputs and %d inputs; between 1 and %d of each are supported", who,
                     noutputs, ninputs, MAX_ARGS);
        return false;
    }
    return true;
}

/* A failure inside nb_jvp, told under the name the caller used. */
static void blame_jvp(const char *who) {
    const char *m = nb_error();
    if (!m || strncmp(m, "nb_jvp: ", 8) != 0) return;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", m + 8);
    nb_set_error("%s (forward mode): %s", who, buf);
}

/* The user's function as nb_jvp calls it, with the messages of this file. */
typedef struct multi_call {
    const char *who;
    nb_multi_fn f;
    void *ctx;
    int noutputs;
    uint64_t errors;
} multi_call;

static int call_multi(nb_tensor *const *inputs, nb_tensor **outputs, void *ctx) {
    multi_call *c = ctx;
    bool ok = c->f(inputs, outputs, c->ctx) == 0;
    for (int o = 0; ok && o < c->noutputs; o++) ok = outputs[o] != NULL;
    if (!ok) function_failed(c->who, c->errors);
    return ok ? 0 : -1;
}

/* The forward strategy: column k of block (o, i) is the tangent of output o
 * along the one-hot tangent of element k of input i (zero tangents on the
 * other inputs). Block (o, i) is laid out as [numel(y_o), numel(x_i)], so
 * without create_graph each column is copied in with a stride; with it the
 * columns are kept and stacked on a last axis, a graph like the tangents.
 * The outputs' shapes come from the first pass (or, when the inputs have no
 * element at all, from one pass without tangents). */
static bool jacobian_forward(const char *who, multi_call *call, int nin, nb_tensor *const *xs,
                             nb_tensor **jac, bool create_graph) {
    int nout = call->noutputs;
    int64_t total = 0, first[MAX_ARGS];
    for (int i = 0; i < nin; i++) {
        first[i] = total;
        total += nb_numel(xs[i]);
    }
    /* with create_graph, cols[o·total + first[i] + k] is column k of block (o, i) */
    nb_tensor **cols = NULL;
    if (create_graph && total > 0 && !(cols = nb_calloc((size_t)(nout * total), sizeof *cols))) {
        nb_set_error("%s: out of memory", who);
        return false;
    }
    nb_tensor *ys[MAX_ARGS], *dys[MAX_ARGS], *tangents[MAX_ARGS] = {0};
    int64_t m[MAX_ARGS]; /* numel of each output, from the first pass */
    bool ok = true, shaped = false;
    for (int64_t c = 0; ok && (c < total || !shaped); c++) {
        int i = 0;
        while (i + 1 < nin && c >= first[i + 1]) i++;
        int64_t k = c - first[i];
        if (!create_graph) nb_scope_begin(); /* each column's temporaries go at once */
        nb_tensor *e = c < total ? one_hot(xs[i], k) : NULL;
        if (c < total && !e) ok = false;
        tangents[i] = e;
        if (ok && nb_jvp(call_multi, call, nin, xs, tangents, nout, ys, dys) != 0) {
            blame_jvp(who);
            ok = false;
        }
        tangents[i] = NULL;
        for (int o = 0; ok && o < nout; o++) {
            if (!shaped) {
                m[o] = nb_numel(ys[o]);
                for (int j = 0; ok && j < nin; j++) {
                    int nd;
                    int64_t shape[NB_MAX_DIMS];
                    ok = block_shape(who, o, ys[o], j, xs[j], &nd, shape);
                    /* outside the column's scope: the caller's result */
                    if (ok && !create_graph) jac[o * nin + j] = nb_escape(nb_zeros(nd, shape));
                    else if (ok) jac[o * nin + j] = nb_zeros(nd, shape);
                    ok = ok && jac[o * nin + j] != NULL;
                }
                if (!ok) break;
            } else if (nb_numel(ys[o]) != m[o]) {
                char b[SHAPE_BUF];
                nb_set_error("%s: the function's output %d changed size from call to call (now "
                             "shape %s, %lld elements before)",
                             who, o, nb_shape_str(nb_ndim(ys[o]), nb_shape(ys[o]), b, sizeof b),
                             (long long)m[o]);
                ok = false;
                break;
            }
            if (c >= total) continue; /* the pass for the shapes alone */
            if (create_graph) {
                cols[o * total + c] = dys[o];
                continue;
            }
            int64_t n = nb_numel(xs[i]);
            float *dst = nb_data_mut(jac[o * nin + i]) + k;
            const float *src = nb_data(dys[o]);
            for (int64_t r = 0; r < m[o]; r++) dst[r * n] = src[r];
        }
        shaped = true;
        if (!create_graph) nb_scope_end();
    }
    /* the kept columns, stacked on a new last axis and shaped as the blocks */
    for (int o = 0; ok && create_graph && o < nout; o++)
        for (int i = 0; ok && i < nin; i++) {
            nb_tensor *z = jac[o * nin + i];
            if (nb_numel(xs[i]) == 0) continue; /* the zeros are the block */
            nb_tensor *s = nb_stack((int)nb_numel(xs[i]), cols + o * total + first[i], nb_ndim(ys[o]));
            jac[o * nin + i] = nb_reshape(s, nb_ndim(z), nb_shape(z));
            ok = jac[o * nin + i] != NULL;
        }
    nb_free(cols);
    return ok;
}

/* opts, or the defaults for NULL, in *o; false and a message for an
 * unknown strategy. */
static bool read_opts(const char *who, const nb_functional_opts *opts, nb_functional_opts *o) {
    *o = opts ? *opts : (nb_functional_opts){0};
    if (o->strategy == NB_JACOBIAN_AUTO || o->strategy == NB_JACOBIAN_REVERSE ||
        o->strategy == NB_JACOBIAN_FORWARD)
        return true;
    nb_set_error("%s: unknown strategy %d", who, (int)o->strategy);
    return false;
}

int nb_jacobian_multi(nb_multi_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                      int noutputs, nb_tensor **jac, const nb_functional_opts *opts) {
    const char *who = "nb_jacobian";
    if (!check_args(who, f != NULL, ninputs, inputs, jac) || !check_counts(who, noutputs, ninputs))
        return -1;
    clear(noutputs * ninputs, jac);
    nb_functional_opts o;
    if (!read_opts(who, opts, &o)) return -1;
    nb_scope_begin();
    nb_tensor *xs[MAX_ARGS], *ys[MAX_ARGS] = {0};
    bool was = nb_set_grad_enabled(true);
    multi_call call = {who, f, ctx, noutputs, nb_error_count()};
    bool ok = prepare_inputs(ninputs, inputs, o.create_graph, xs);
    nb_jacobian_strategy strategy = o.strategy;
    /* AUTO needs the outputs' sizes: the call made for them is the one the
     * reverse strategy differentiates, and is wasted when forward wins. */
    if (ok && strategy != NB_JACOBIAN_FORWARD) {
        ok = call_multi(xs, ys, &call) == 0;
        int64_t nx = 0, ny = 0;
        for (int i = 0; ok && i < ninputs; i++) nx += nb_numel(xs[i]);
        for (int i = 0; ok && i < noutputs; i++) ny += nb_numel(ys[i]);
        if (strategy == NB_JACOBIAN_AUTO) strategy = nx < ny ? NB_JACOBIAN_FORWARD : NB_JACOBIAN_REVERSE;
    }
    if (ok && strategy == NB_JACOBIAN_FORWARD)
        ok = jacobian_forward(who, &call, ninputs, xs, jac, o.create_graph);
    else
        ok = ok && jacobian_of(who, noutputs, ys, ninputs, xs, jac, o.create_graph);
    nb_set_grad_enabled(was);
    return finish(ok, noutputs * ninputs, jac);
}

/* nb_jacobian's function seen as a function of one output. */
typedef struct single {
    nb_gradcheck_fn f;
    void *ctx;
} single;

static int call_single(nb_tensor *const *inputs, nb_tensor **outputs, void *ctx) {
    single *s = ctx;
    outputs[0] = s->f(inputs, s->ctx);
    return outputs[0] ? 0 : -1;
}

int nb_jacobian(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                nb_tensor **jac, const nb_functional_opts *opts) {
    single s = {f, ctx};
    return nb_jacobian_multi(f ? call_single : NULL, &s, ninputs, inputs, 1, jac, opts);
}

/* y = f(xs), checked to have one element, and its gradient g with a graph.
 * g[i] is NULL for an input f does not use. */
static bool value_and_grad(const char *who, nb_gradcheck_fn f, void *ctx, int n, nb_tensor **xs,
                           nb_tensor **y, nb_tensor **g) {
    uint64_t errors = nb_error_count();
    *y = f(xs, ctx);
    if (!*y) {
        function_failed(who, errors);
        return false;
    }
    if (nb_numel(*y) != 1) {
        char b[SHAPE_BUF];
        nb_set_error("%s: the function must return one value; it returned shape %s", who,
                     nb_shape_str(nb_ndim(*y), nb_shape(*y), b, sizeof b));
        return false;
    }
    clear(n, g);
    if (!nb_requires_grad(*y)) return true; /* constant: every gradient is zero */
    return nb_grad(1, y, NULL, n, xs, g, &(nb_grad_opts){.create_graph = true, .allow_unused = true}) == 0;
}

/* The arguments of nb_vhp and nb_hvp; clears the results. */
static bool check_vector(const char *who, bool has_f, int ninputs, nb_tensor *const *inputs,
                         nb_tensor *const *v, nb_tensor **value, nb_tensor **result) {
    if (!check_args(who, has_f, ninputs, inputs, result) || !check_counts(who, 1, ninputs))
        return false;
    if (!v) {
        nb_set_error("%s: needs the vector v, one tensor per input", who);
        return false;
    }
    clear(ninputs, result);
    if (value) *value = NULL;
    for (int i = 0; i < ninputs; i++) {
        if (!v[i]) return false;
        if (!nb_same_shape(v[i], inputs[i])) {
            char b1[SHAPE_BUF], b2[SHAPE_BUF];
            nb_set_error("%s: v[%d] has shape %s, input %d has shape %s", who, i,
                         nb_shape_str(nb_ndim(v[i]), nb_shape(v[i]), b1, sizeof b1), i,
                         nb_shape_str(nb_ndim(inputs[i]), nb_shape(inputs[i]), b2, sizeof b2));
            return false;
        }
    }
    return true;
}

/* v·H, the gradient of sum_i <g_i, v_i>: the engine computes it as one
 * backward of the outputs g seeded with v. */
static int vector_hessian(const char *who, nb_gradcheck_fn f, void *ctx, int ninputs,
                          nb_tensor *const *inputs, nb_tensor *const *v, nb_tensor **value,
                          nb_tensor **result, const nb_functional_opts *opts) {
    if (!check_vector(who, f != NULL, ninputs, inputs, v, value, result)) return -1;
    nb_functional_opts o = opts ? *opts : (nb_functional_opts){0};
    nb_scope_begin();
    nb_tensor *xs[MAX_ARGS], *y = NULL, *g[MAX_ARGS], *outs[MAX_ARGS], *seeds[MAX_ARGS];
    nb_tensor *res[MAX_ARGS + 1];
    bool was = nb_set_grad_enabled(true);
    bool ok = prepare_inputs(ninputs, inputs, o.create_graph, xs) &&
              value_and_grad(who, f, ctx, ninputs, xs, &y, g);
    int nout = 0;
    for (int i = 0; ok && i < ninputs; i++)
        if (g[i] && nb_requires_grad(g[i])) {
            outs[nout] = g[i];
            seeds[nout++] = v[i];
        }
    /* Gradients that are constants (f at most linear in x) contribute 0. */
    if (ok && nout > 0)
        ok = nb_grad(nout, outs, seeds, ninputs, xs, res,
                     &(nb_grad_opts){.create_graph = o.create_graph, .allow_unused = true,
                                     .materialize_grads = true}) == 0;
    for (int i = 0; ok && i < ninputs; i++) {
        if (nout == 0) res[i] = nb_zeros(nb_ndim(inputs[i]), nb_shape(inputs[i]));
        ok = res[i] != NULL;
    }
    nb_set_grad_enabled(was);
    if (ok && value) {
        res[ninputs] = o.create_graph ? y : nb_detach(y);
        ok = res[ninputs] != NULL;
    }
    int n = ninputs + (value ? 1 : 0);
    int rc = finish(ok, n, res);
    for (int i = 0; i < ninputs; i++) result[i] = res[i];
    if (value) *value = res[ninputs];
    return rc;
}

int nb_vhp(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
           nb_tensor *const *v, nb_tensor **value, nb_tensor **vhp, const nb_functional_opts *opts) {
    return vector_hessian("nb_vhp", f, ctx, ninputs, inputs, v, value, vhp, opts);
}

/* grad f as a function of the inputs, for nb_jvp: outputs[0 .. n) are the
 * gradient (zeros for an input f does not reach), outputs[n] is f. */
typedef struct grad_call {
    const char *who;
    nb_gradcheck_fn f;
    void *ctx;
    int n;
    bool create_graph;
} grad_call;

static int call_grad(nb_tensor *const *inputs, nb_tensor **outputs, void *ctx) {
    grad_call *c = ctx;
    uint64_t errors = nb_error_count();
    nb_tensor *y = c->f(inputs, c->ctx);
    if (!y) {
        function_failed(c->who, errors);
        return -1;
    }
    if (nb_numel(y) != 1) {
        char b[SHAPE_BUF];
        nb_set_error("%s: the function must return one value; it returned shape %s", c->who,
                     nb_shape_str(nb_ndim(y), nb_shape(y), b, sizeof b));
        return -1;
    }
    outputs[c->n] = y;
    if (!nb_requires_grad(y)) { /* constant: every gradient is zero */
        for (int i = 0; i < c->n; i++)
            if (!(outputs[i] = nb_zeros_like(inputs[i]))) return -1;
        return 0;
    }
    /* The backward formulas are ops, so they carry the tangents of the
     * values they saved: the gradient's tangent is H v. */
    return nb_grad(1, &y, NULL, c->n, inputs, outputs,
                   &(nb_grad_opts){.create_graph = c->create_graph, .allow_unused = true,
                                   .materialize_grads = true});
}

int nb_hvp(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
           nb_tensor *const *v, nb_tensor **value, nb_tensor **hvp, const nb_functional_opts *opts) {
    const char *who = "nb_hvp";
    if (!check_vector(who, f != NULL, ninputs, inputs, v, value, hvp)) return -1;
    nb_functional_opts o = opts ? *opts : (nb_functional_opts){0};
    nb_scope_begin();
    nb_tensor *xs[MAX_ARGS], *outs[MAX_ARGS + 1], *res[MAX_ARGS + 1];
    bool was = nb_set_grad_enabled(true);
    grad_call call = {who, f, ctx, ninputs, o.create_graph};
    bool ok = prepare_inputs(ninputs, inputs, o.create_graph, xs);
    if (ok && nb_jvp(call_grad, &call, ninputs, xs, v, ninputs + 1, outs, res) != 0) {
        blame_jvp(who);
        ok = false;
    }
    nb_set_grad_enabled(was);
    /* Without create_graph the results are plain values. */
    for (int i = 0; ok && i < ninputs; i++)
        ok = o.create_graph || (res[i] = nb_detach(res[i])) != NULL;
    if (ok && value) {
        res[ninputs] = o.create_graph ? outs[ninputs] : nb_detach(outs[ninputs]);
        ok = res[ninputs] != NULL;
    }
    int n = ninputs + (value ? 1 : 0);
    int rc = finish(ok, n, res);
    for (int i = 0; i < ninputs; i++) hvp[i] = res[i];
    if (value) *value = res[ninputs];
    return rc;
}

/* The gradient alone, as a function of several outputs, for the forward
 * strategy of nb_hessian: call_grad's outputs but the last (f's value). */
static int call_gradient(nb_tensor *const *inputs, nb_tensor **outputs, void *ctx) {
    grad_call *c = ctx;
    nb_tensor *outs[MAX_ARGS + 1];
    if (call_grad(inputs, outs, ctx) != 0) return -1;
    for (int i = 0; i < c->n; i++) outputs[i] = outs[i];
    return 0;
}

int nb_hessian(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
               nb_tensor **hess, const nb_functional_opts *opts) {
    const char *who = "nb_hessian";
    if (!check_args(who, f != NULL, ninputs, inputs, hess) || !check_counts(who, ninputs, ninputs))
        return -1;
    clear(ninputs * ninputs, hess);
    nb_functional_opts o;
    if (!read_opts(who, opts, &o)) return -1;
    nb_scope_begin();
    nb_tensor *xs[MAX_ARGS], *y = NULL, *g[MAX_ARGS];
    bool was = nb_set_grad_enabled(true);
    bool ok = prepare_inputs(ninputs, inputs, o.create_graph, xs);
    /* Forward over reverse: column (i, k) of the Hessian is the tangent of
     * the gradient along the one-hot tangent of element k of input i, one
     * nb_jvp of f and its backward per input element (torch.func's hessian,
     * jacfwd of jacrev). Reverse over reverse: the Jacobian of the gradient,
     * block (i, j) d g_i / d x_j, shaped x_i.shape + x_j.shape (an unused
     * input's block is zero), one backward through the gradient's graph per
     * element. Without batched columns (torch.func has vmap) a column costs
     * f, its backward and both tangents, about twice a row, so AUTO takes
     * reverse over reverse (bench_jacobian measures the two). */
    if (ok && o.strategy == NB_JACOBIAN_FORWARD) {
        grad_call gc = {who, f, ctx, ninputs, o.create_graph};
        multi_call call = {who, call_gradient, &gc, ninputs, nb_error_count()};
        ok = jacobian_forward(who, &call, ninputs, xs, hess, o.create_graph);
    } else {
        ok = ok && value_and_grad(who, f, ctx, ninputs, xs, &y, g) &&
             jacobian_of(who, ninputs, g, ninputs, xs, hess, o.create_graph);
    }
    nb_set_grad_enabled(was);
    return finish(ok, ninputs * ninputs, hess);
}
