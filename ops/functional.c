/* functional.c — whole derivatives of small functions: Jacobians, Hessians,
 * and Hessian-vector products, with the shapes and names of PyTorch's
 * torch.autograd.functional.
 *
 * Everything here is reverse mode built on nb_grad. A Jacobian takes one
 * backward per output element, seeded with that element's one-hot vector:
 * row k of the Jacobian is the gradient of output element k. A Hessian is
 * the Jacobian of the gradient (computed with create_graph), and a
 * vector-Hessian product is the gradient of <grad f, v>, one backward
 * through the graph of the gradient. Forward mode (one JVP per input
 * element, cheaper when the inputs are fewer than the outputs) will be a
 * strategy of its own; nb_functional_opts keeps the place for it.
 *
 * The inputs are first replaced by detached copies that require grad, so
 * that the function is differentiated with respect to them alone whatever
 * the caller's graph. With create_graph an input that already requires
 * grad is used as it is, so that the result is a graph reaching back to it
 * (nb_grad then runs only the part of the graph below the inputs). Results
 * are built in a scope of this file and escape to the caller's.
 */
#include "nb_ops.h"

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

/* One-hot seed for output element k. */
static nb_tensor *one_hot(const nb_tensor *y, int64_t k) {
    nb_tensor *e = nb_zeros(nb_ndim(y), nb_shape(y));
    if (e) nb_data_mut(e)[k] = 1.0f;
    return e;
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
            int ydim = y ? nb_ndim(y) : nb_ndim(xs[o]), xdim = nb_ndim(xs[i]);
            if (ydim + xdim > NB_MAX_DIMS) {
                char b1[SHAPE_BUF], b2[SHAPE_BUF];
                nb_set_error("%s: output %d of shape %s and input %d of shape %s make a Jacobian of "
                             "%d dimensions; nabla tensors have at most %d",
                             who, o, nb_shape_str(ydim, y ? nb_shape(y) : nb_shape(xs[o]), b1, sizeof b1),
                             i, nb_shape_str(xdim, nb_shape(xs[i]), b2, sizeof b2), ydim + xdim,
                             NB_MAX_DIMS);
                ok = false;
                break;
            }
            int64_t shape[NB_MAX_DIMS];
            memcpy(shape, y ? nb_shape(y) : nb_shape(xs[o]), (size_t)ydim * sizeof *shape);
            memcpy(shape + ydim, nb_shape(xs[i]), (size_t)xdim * sizeof *shape);
            jac[o * nin + i] = nb_zeros(ydim + xdim, shape);
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

int nb_jacobian_multi(nb_multi_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                      int noutputs, nb_tensor **jac, const nb_functional_opts *opts) {
    const char *who = "nb_jacobian";
    if (!check_args(who, f != NULL, ninputs, inputs, jac) || !check_counts(who, noutputs, ninputs))
        return -1;
    clear(noutputs * ninputs, jac);
    nb_functional_opts o = opts ? *opts : (nb_functional_opts){0};
    if (o.strategy != NB_JACOBIAN_AUTO && o.strategy != NB_JACOBIAN_REVERSE) {
        nb_set_error("%s: unknown strategy %d", who, (int)o.strategy);
        return -1;
    }
    nb_scope_begin();
    nb_tensor *xs[MAX_ARGS], *ys[MAX_ARGS] = {0};
    bool was = nb_set_grad_enabled(true);
    uint64_t errors = nb_error_count();
    bool ok = prepare_inputs(ninputs, inputs, o.create_graph, xs);
    if (ok && f(xs, ys, ctx) != 0) {
        function_failed(who, errors);
        ok = false;
    }
    for (int i = 0; ok && i < noutputs; i++)
        if (!ys[i]) {
            function_failed(who, errors);
            ok = false;
        }
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

int nb_hessian(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
               nb_tensor **hess, const nb_functional_opts *opts) {
    const char *who = "nb_hessian";
    if (!check_args(who, f != NULL, ninputs, inputs, hess) || !check_counts(who, ninputs, ninputs))
        return -1;
    clear(ninputs * ninputs, hess);
    nb_functional_opts o = opts ? *opts : (nb_functional_opts){0};
    nb_scope_begin();
    nb_tensor *xs[MAX_ARGS], *y = NULL, *g[MAX_ARGS];
    bool was = nb_set_grad_enabled(true);
    bool ok = prepare_inputs(ninputs, inputs, o.create_graph, xs) &&
              value_and_grad(who, f, ctx, ninputs, xs, &y, g);
    /* the Jacobian of the gradient: block (i, j) is d g_i / d x_j, shaped
     * x_i.shape + x_j.shape (an unused input's block is zero) */
    ok = ok && jacobian_of(who, ninputs, g, ninputs, xs, hess, o.create_graph);
    nb_set_grad_enabled(was);
    return finish(ok, ninputs * ninputs, hess);
}

/* v·H, the gradient of sum_i <g_i, v_i>: the engine computes it as one
 * backward of the outputs g seeded with v. */
static int vector_hessian(const char *who, nb_gradcheck_fn f, void *ctx, int ninputs,
                          nb_tensor *const *inputs, nb_tensor *const *v, nb_tensor **value,
                          nb_tensor **result, const nb_functional_opts *opts) {
    if (!check_args(who, f != NULL, ninputs, inputs, result) || !check_counts(who, 1, ninputs))
        return -1;
    if (!v) {
        nb_set_error("%s: needs the vector v, one tensor per input", who);
        return -1;
    }
    clear(ninputs, result);
    if (value) *value = NULL;
    for (int i = 0; i < ninputs; i++) {
        if (!v[i]) return -1;
        if (!nb_same_shape(v[i], inputs[i])) {
            char b1[SHAPE_BUF], b2[SHAPE_BUF];
            nb_set_error("%s: v[%d] has shape %s, input %d has shape %s", who, i,
                         nb_shape_str(nb_ndim(v[i]), nb_shape(v[i]), b1, sizeof b1), i,
                         nb_shape_str(nb_ndim(inputs[i]), nb_shape(inputs[i]), b2, sizeof b2));
            return -1;
        }
    }
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

int nb_hvp(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
           nb_tensor *const *v, nb_tensor **value, nb_tensor **hvp, const nb_functional_opts *opts) {
    return vector_hessian("nb_hvp", f, ctx, ninputs, inputs, v, value, hvp, opts);
}
