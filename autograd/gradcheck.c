/* gradcheck.c — proof that a backward formula is right: analytic gradients
 * from the engine compared with central finite differences.
 *
 * The output of f is reduced to one number with fixed random weights,
 * L = sum(w * f(x)), accumulated in double; then for every element x_i of
 * every input that requires grad, (L(x_i + h) - L(x_i - h)) / 2h is compared
 * with dL/dx_i from nb_grad. The step is relative, h = eps * max(1, |x_i|),
 * so that it survives rounding at large |x_i|, and the quotient divides by
 * the step actually taken in float (x_i + h is rounded), which removes most
 * of float32's error. The second-order check applies the same comparison to
 * the gradient itself, differentiated with create_graph.
 *
 * The perturbations are written straight into the inputs' storage and
 * undone, without bumping their versions: a graph the caller built from the
 * inputs before the check still sees the values it saved. f runs with grad
 * mode on, so f may itself differentiate (nb_grad with create_graph), which
 * is how third and higher derivatives are checked; its graphs are freed with
 * the scope around each call. At the worst element the one-sided slopes are
 * compared at two step sizes: at a kink (relu at 0) they differ by the same
 * amount however small the step, where a smooth function's difference
 * shrinks with it.
 */
#include "tensor_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GC_MAX_INPUTS 16

typedef struct checker {
    nb_gradcheck_fn f;
    void *ctx;
    int ninputs;
    nb_tensor *const *inputs;
    nb_tensor *out_weights;         /* w, the shape of f's output */
    nb_tensor *in_weights[GC_MAX_INPUTS]; /* v, second order only */
    int nvar;                       /* inputs that require grad */
    nb_tensor *var[GC_MAX_INPUTS];
    int var_index[GC_MAX_INPUTS];
    /* the terms of L (w_j * y_j) at x, x + h and x - h: differences are
     * taken term by term, so that a large term that does not move cannot
     * swallow a small one that does */
    int64_t nterms;
    double *t0, *tp, *tm;
} checker;

static double *weighted_terms(const nb_tensor *t, const nb_tensor *w, double *out) {
    const float *a = nb_data(t), *b = nb_data(w);
    for (int64_t i = 0; i < nb_numel(t); i++) out[i] = (double)a[i] * (double)b[i];
    return out + nb_numel(t);
}

/* sum(a - b), the change of L between two evaluations */
static double change(const checker *c, const double *a, const double *b) {
    double s = 0;
    for (int64_t i = 0; i < c->nterms; i++) s += a[i] - b[i];
    return s;
}

static nb_tensor *weights_like(const nb_tensor *t, nb_generator *g) {
    nb_tensor *w = nb_empty(nb_ndim(t), nb_shape(t));
    if (!w) return NULL;
    float *d = nb_data_mut(w);
    for (int64_t i = 0; i < nb_numel(w); i++) {
        double u = nb_generator_uniform(g);
        d[i] = (float)(u < 0.5 ? -(0.5 + 2 * u) : 0.5 + 2 * (u - 0.5)); /* |w| in [0.5, 1.5) */
    }
    return nb_keep(w);
}

/* An input f does not use has a zero gradient. */
static const nb_grad_opts unused_ok = {.materialize_grads = true};

/* The terms of L. First order: L(x) = sum(w * f(x)). Second order:
 * L(x) = sum_i sum(v_i * dL1/dx_i). */
static bool eval(checker *c, int order, double *terms) {
    nb_scope_begin();
    bool ok = false;
    bool was = nb_set_grad_enabled(true);
    if (order == 1) {
        nb_tensor *y = c->f(c->inputs, c->ctx);
        if (y && nb_same_shape(y, c->out_weights)) {
            weighted_terms(y, c->out_weights, terms);
            ok = true;
        }
    } else {
        nb_tensor *y = c->f(c->inputs, c->ctx), *g[GC_MAX_INPUTS];
        if (y && nb_grad(1, &y, &c->out_weights, c->nvar, c->var, g, &unused_ok) == 0) {
            for (int i = 0; i < c->nvar; i++) terms = weighted_terms(g[i], c->in_weights[i], terms);
            ok = true;
        }
    }
    nb_scope_end();
    nb_set_grad_enabled(was);
    return ok;
}

/* L with element k of variable v set to value (then restored). The value is
 * written to the storage directly: the version stays, see the top. */
static bool eval_at(checker *c, int order, int v, int64_t k, float value, double *terms) {
    float *d = c->var[v]->storage->data, orig = d[k];
    d[k] = value;
    bool ok = eval(c, order, terms);
    d[k] = orig;
    return ok;
}

/* The right and left slopes of L at element k of variable v, with step h,
 * given the terms of L(x) in c->t0. */
static bool one_sided(checker *c, int order, int v, int64_t k, double h, double *right,
                      double *left) {
    float x = c->var[v]->storage->data[k];
    float xp = (float)((double)x + h), xm = (float)((double)x - h);
    if (!(xp > x && xm < x) || !eval_at(c, order, v, k, xp, c->tp) ||
        !eval_at(c, order, v, k, xm, c->tm))
        return false;
    *right = change(c, c->tp, c->t0) / ((double)xp - (double)x);
    *left = change(c, c->t0, c->tm) / ((double)x - (double)xm);
    return true;
}

/* A kink at element k: the one-sided slopes differ by much more than the
 * tolerance, and by about as much with a quarter of the step (a smooth
 * function's difference, about L''h, shrinks fourfold). */
static bool at_kink(checker *c, int order, int v, int64_t k, double h, const nb_gradcheck_opts *o,
                    double *right, double *left) {
    double r2, l2;
    if (!eval(c, order, c->t0) || !one_sided(c, order, v, k, h, right, left) ||
        !one_sided(c, order, v, k, h / 4, &r2, &l2))
        return false;
    double d1 = fabs(*right - *left), d2 = fabs(r2 - l2);
    double tol = o->atol + o->rtol * fmax(fabs(*right), fabs(*left));
    return d1 > 10 * tol && d2 > 0.5 * d1;
}

/* Analytic dL/dx for every variable, copied into caller-owned arrays. */
static bool analytic(checker *c, int order, double **out) {
    nb_scope_begin();
    bool ok = false;
    nb_tensor *y = c->f(c->inputs, c->ctx), *g[GC_MAX_INPUTS], *gg[GC_MAX_INPUTS];
    if (y && nb_grad(1, &y, &c->out_weights, c->nvar, c->var, g,
                                &(nb_grad_opts){.create_graph = order == 2, .materialize_grads = true}) == 0) {
        if (order == 1) {
            memcpy(gg, g, sizeof g);
            ok = true;
        } else {
            /* Gradients that do not depend on x (f linear in x) have no graph:
             * their derivative is zero. */
            nb_tensor *outs[GC_MAX_INPUTS], *ws[GC_MAX_INPUTS];
            int nout = 0;
            for (int i = 0; i < c->nvar; i++)
                if (nb_requires_grad(g[i])) {
                    outs[nout] = g[i];
                    ws[nout++] = c->in_weights[i];
                }
            if (nout == 0) {
                for (int i = 0; i < c->nvar; i++) gg[i] = nb_zeros_like(c->var[i]);
                ok = true;
            } else {
                ok = nb_grad(nout, outs, ws, c->nvar, c->var, gg, &unused_ok) == 0;
            }
        }
    }
    if (ok)
        for (int i = 0; i < c->nvar; i++) {
            const float *d = nb_data(gg[i]);
            for (int64_t k = 0; k < nb_numel(c->var[i]); k++) out[i][k] = d[k];
        }
    nb_scope_end();
    return ok;
}

static bool check(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                  const nb_gradcheck_opts *opts_in, nb_gradcheck_result *res_out, int order) {
    const char *who = order == 1 ? "nb_gradcheck" : "nb_gradgradcheck";
    nb_gradcheck_opts opts = order == 1 ? (nb_gradcheck_opts){1e-3, 1e-3, 1e-2, false}
                                        : (nb_gradcheck_opts){5e-3, 5e-3, 3e-2, false};
    if (opts_in) {
        if (opts_in->eps > 0) opts.eps = opts_in->eps;
        if (opts_in->atol > 0) opts.atol = opts_in->atol;
        if (opts_in->rtol > 0) opts.rtol = opts_in->rtol;
        opts.quiet = opts_in->quiet;
    }
    nb_gradcheck_result res = {.ok = false, .input = -1, .index = -1};
    checker c = {.f = f, .ctx = ctx, .ninputs = ninputs, .inputs = inputs};
    double *grads[GC_MAX_INPUTS] = {0};
    bool ok = false;
    if (!f || ninputs < 1 || ninputs > GC_MAX_INPUTS || !inputs) {
        snprintf(res.message, sizeof res.message, "%s: needs a function and 1 to %d inputs", who,
                 GC_MAX_INPUTS);
        nb_set_error("%s", res.message);
        goto done;
    }
    for (int i = 0; i < ninputs; i++) {
        if (!inputs[i]) goto done;
        if (nb_requires_grad(inputs[i])) {
            c.var_index[c.nvar] = i;
            c.var[c.nvar++] = inputs[i];
        }
    }
    if (c.nvar == 0) {
        snprintf(res.message, sizeof res.message, "%s: no input requires grad", who);
        nb_set_error("%s", res.message);
        goto done;
    }

    nb_generator gen;
    nb_generator_seed(&gen, 1234);
    nb_scope_begin();
    bool was = nb_set_grad_enabled(true);
    nb_tensor *y = f(inputs, ctx);
    nb_set_grad_enabled(was);
    if (y) c.out_weights = weights_like(y, &gen);
    nb_scope_end();
    if (!c.out_weights) {
        snprintf(res.message, sizeof res.message, "%s: the function failed: %s", who,
                 nb_error() ? nb_error() : "returned NULL");
        goto done;
    }
    c.nterms = nb_numel(c.out_weights);
    if (order == 2) c.nterms = 0;
    for (int i = 0; i < c.nvar && order == 2; i++) {
        c.in_weights[i] = weights_like(c.var[i], &gen);
        c.nterms += nb_numel(c.var[i]);
    }
    for (int i = 0; i < c.nvar; i++)
        grads[i] = nb_malloc(sizeof(double) * (size_t)(nb_numel(c.var[i]) + 1));
    c.t0 = nb_malloc(sizeof(double) * (size_t)(c.nterms + 1));
    c.tp = nb_malloc(sizeof(double) * (size_t)(c.nterms + 1));
    c.tm = nb_malloc(sizeof(double) * (size_t)(c.nterms + 1));
    bool have_memory = c.t0 && c.tp && c.tm;
    for (int i = 0; i < c.nvar; i++)
        have_memory = have_memory && grads[i] && (order == 1 || c.in_weights[i]);
    if (!have_memory) {
        snprintf(res.message, sizeof res.message, "%s: out of memory", who);
        nb_set_error("%s", res.message);
        goto done;
    }
    if (!analytic(&c, order, grads)) {
        snprintf(res.message, sizeof res.message, "%s: backward failed: %s", who,
                 nb_error() ? nb_error() : "unknown error");
        goto done;
    }

    double worst = -INFINITY, worst_h = 0;
    int worst_var = -1;
    for (int v = 0; v < c.nvar; v++) {
        nb_tensor *x = c.var[v];
        for (int64_t k = 0; k < nb_numel(x); k++) {
            float orig = nb_data(x)[k];
            double h = opts.eps * fmax(1.0, fabs((double)orig));
            float xp = (float)((double)orig + h), xm = (float)((double)orig - h);
            if (!(xp > xm)) {
                snprintf(res.message, sizeof res.message,
                         "%s: input %d element %lld is %g: no finite step of %g around it", who,
                         c.var_index[v], (long long)k, (double)orig, h);
                nb_set_error("%s", res.message);
                goto done;
            }
            if (!eval_at(&c, order, v, k, xp, c.tp) || !eval_at(&c, order, v, k, xm, c.tm)) {
                snprintf(res.message, sizeof res.message, "%s: the function failed: %s", who,
                         nb_error() ? nb_error() : "returned NULL");
                goto done;
            }
            double numeric = change(&c, c.tp, c.tm) / ((double)xp - (double)xm);
            double a = grads[v][k];
            double err = fabs(a - numeric) - opts.rtol * fabs(numeric);
            if (!(err <= worst) || isnan(a)) {
                worst = isnan(a) || isnan(numeric) ? INFINITY : err;
                worst_var = v;
                worst_h = h;
                res.input = c.var_index[v];
                res.index = k;
                res.analytic = a;
                res.numeric = numeric;
                res.error = worst;
            }
        }
    }
    ok = worst <= opts.atol;
    int n = snprintf(res.message, sizeof res.message,
                     "%s: %s; worst at input %d, element %lld: analytic %.6g, numeric %.6g", who,
                     ok ? "passed" : "FAILED", res.input, (long long)res.index, res.analytic,
                     res.numeric);
    double right, left;
    if (worst_var >= 0 && isfinite(res.numeric) &&
        at_kink(&c, order, worst_var, res.index, worst_h, &opts, &right, &left)) {
        res.at_kink = true;
        snprintf(res.message + n, n < (int)sizeof res.message ? sizeof res.message - (size_t)n : 0,
                 "; input %d element %lld sits at a kink (one-sided slopes %.6g and %.6g "
                 "differ): the analytic value is a subgradient, not a derivative",
                 res.input, (long long)res.index, right, left);
    }
done:
    res.ok = ok;
    if (!ok && !opts.quiet) fprintf(stderr, "%s\n", res.message);
    for (int i = 0; i < GC_MAX_INPUTS; i++) {
        nb_free(grads[i]);
        nb_release(c.in_weights[i]);
    }
    nb_release(c.out_weights);
    nb_free(c.t0);
    nb_free(c.tp);
    nb_free(c.tm);
    if (res_out) *res_out = res;
    return ok;
}

bool nb_gradcheck(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                  const nb_gradcheck_opts *opts, nb_gradcheck_result *result) {
    return check(f, ctx, ninputs, inputs, opts, result, 1);
}

bool nb_gradgradcheck(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                      const nb_gradcheck_opts *opts, nb_gradcheck_result *result) {
    return check(f, ctx, ninputs, inputs, opts, result, 2);
}
