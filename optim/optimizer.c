/* optimizer.c — the part of every optimizer that does not depend on its
 * update rule: checking the parameter list, making and releasing the state
 * tensors, the step loop (skip parameters without a .grad, count steps per
 * parameter, check shapes before touching anything), lr, state lookup.
 *
 * The families (sgd.c, adam.c, rmsprop.c, adagrad.c) each supply a kind
 * (optim_internal.h) whose update function sees plain float arrays, so the
 * arithmetic of an optimizer is one loop in one place.
 */
#include "optim_internal.h"

#include "parallel.h"

#include <stdlib.h>

bool nb__optim_check(const char *who, const char *what, float v, float lo, float hi,
                     bool hi_open) {
    /* Written so that NaN fails every comparison and is refused. */
    bool ok = v >= lo && (hi_open ? v < hi : v <= hi);
    if (!ok) {
        if (isinf(hi))
            nb_set_error("%s: %s must be a%s number >= %g, got %g", who, what,
                         hi_open ? " finite" : "", (double)lo, (double)v);
        else
            nb_set_error("%s: %s must be in [%g, %g%c, got %g", who, what, (double)lo, (double)hi,
                         hi_open ? ')' : ']', (double)v);
    }
    return ok;
}

/* Names a parameter in a message: "parameter 1 'w' [2,3]". */
static const char *describe(const nb_tensor *p, int i, char *buf, size_t size) {
    const char *name = nb_name(p);
    char shape[NB_SHAPE_BUF];
    nb_shape_str(nb_ndim(p), nb_shape(p), shape, sizeof shape);
    if (name[0])
        snprintf(buf, size, "parameter %d '%s' %s", i, name, shape);
    else
        snprintf(buf, size, "parameter %d %s", i, shape);
    return buf;
}

static bool check_params(const char *who, int nparams, nb_tensor *const *params) {
    if (nparams <= 0 || !params) {
        nb_set_error("%s: no parameters to optimize (nparams %d%s)", who, nparams,
                     params ? "" : ", params NULL");
        return false;
    }
    char buf[160];
    for (int i = 0; i < nparams; i++) {
        nb_tensor *p = params[i];
        if (!p) {
            nb_set_error("%s: parameter %d of %d is NULL", who, i, nparams);
            return false;
        }
        if (!nb_is_leaf(p)) {
            nb_set_error("%s: %s is not a leaf (it was computed by an op); optimize the "
                         "leaves it came from", who, describe(p, i, buf, sizeof buf));
            return false;
        }
        if (!nb_requires_grad(p)) {
            nb_set_error("%s: %s does not require grad (nb_set_requires_grad(p, true))", who,
                         describe(p, i, buf, sizeof buf));
            return false;
        }
        for (int j = 0; j < i; j++)
            if (params[j] == p) {
                nb_set_error("%s: %s is listed twice (also as parameter %d)", who,
                             describe(p, i, buf, sizeof buf), j);
                return false;
            }
    }
    return true;
}

nb_optimizer *nb__optimizer_new(const char *who, const nb_optim_kind *kind, int nparams,
                                nb_tensor *const *params, float lr, const bool *want_state,
                                const float *state_init) {
    if (!check_params(who, nparams, params)) return NULL;
    if (!nb__optim_check(who, "lr", lr, 0.0f, INFINITY, true)) return NULL;

    nb_optimizer *o = nb_calloc(1, sizeof *o);
    size_t nstate = (size_t)nparams * (size_t)kind->nstate;
    if (o) {
        o->params = nb_malloc((size_t)nparams * sizeof *o->params);
        o->param_steps = nb_calloc((size_t)nparams, sizeof *o->param_steps);
        o->state = nb_calloc(nstate ? nstate : 1, sizeof *o->state);
        o->start = nb_malloc(((size_t)nparams + 1) * sizeof *o->start);
    }
    if (!o || !o->params || !o->param_steps || !o->state || !o->start) {
        nb_set_error("%s: out of memory", who);
        nb_optimizer_free(o);
        return NULL;
    }
    o->kind = kind;
    o->lr = lr;
    o->nparams = nparams;
    memcpy(o->params, params, (size_t)nparams * sizeof *params);

    /* State is made with grad mode off and kept out of the caller's scopes:
     * it belongs to the optimizer until nb_optimizer_free. */
    bool was = nb_set_grad_enabled(false);
    for (int i = 0; i < nparams; i++)
        for (int k = 0; k < kind->nstate; k++) {
            if (!want_state[k]) continue;
            const nb_tensor *p = params[i];
            nb_tensor *s = state_init[k] == 0.0f
                               ? nb_zeros(nb_ndim(p), nb_shape(p))
                               : nb_full(nb_ndim(p), nb_shape(p), state_init[k]);
            if (!s) {
                nb_set_grad_enabled(was);
                nb_optimizer_free(o);
                return NULL;
            }
            o->state[(size_t)i * (size_t)kind->nstate + (size_t)k] = nb_keep(s);
        }
    nb_set_grad_enabled(was);
    return o;
}

/* Enough elements that waking another thread pays: a few microseconds of
 * updates. */
#define OPTIM_GRAIN ((int64_t)32768)

/* The updates of the elements [begin, end) of a step's flat range. */
static void update_range(void *ctx, int64_t begin, int64_t end) {
    const nb_optimizer *o = ctx;
    int lo = 0, hi = o->nparams; /* the first parameter ending after begin */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (o->start[mid + 1] <= begin)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (int i = lo; i < o->nparams && o->start[i] < end; i++) {
        int64_t a = begin > o->start[i] ? begin : o->start[i];
        int64_t b = end < o->start[i + 1] ? end : o->start[i + 1];
        if (a >= b) continue; /* no .grad */
        int64_t off = a - o->start[i];
        float *s[NB_OPTIM_MAX_STATE] = {NULL};
        for (int k = 0; k < o->kind->nstate; k++) {
            nb_tensor *t = o->state[(size_t)i * (size_t)o->kind->nstate + (size_t)k];
            s[k] = t ? nb_data_mut(t) + off : NULL;
        }
        nb_tensor *p = o->params[i];
        o->kind->update(o, nb_data_mut(p) + off, nb_data(nb_grad_of(p)) + off, s, b - a,
                        o->param_steps[i]);
    }
}

int nb_optimizer_step(nb_optimizer *o) {
    if (!o) return -1;
    /* Check every gradient first so that an error leaves all parameters as
     * they were, not half of them updated. */
    for (int i = 0; i < o->nparams; i++) {
        nb_tensor *p = o->params[i], *g = nb_grad_of(p);
        if (g && !nb_same_shape(p, g)) {
            char buf[160];
            nb_set_error("nb_optimizer_step (%s): the gradient of %s has shape %s", o->kind->name,
                         describe(p, i, buf, sizeof buf), SHAPE(g));
            return -1;
        }
    }
    /* One pass over all the parameters at once, as PyTorch's foreach and
     * fused optimizers do: their gradient elements, end to end, make one
     * range, cut over the thread pool in pieces of at least OPTIM_GRAIN
     * elements; a piece may hold several small parameters or part of a
     * large one. The updates are elementwise, so any cut gives the same
     * bits. Parameters without a .grad take no room in the range. */
    int64_t total = 0;
    for (int i = 0; i < o->nparams; i++) {
        o->start[i] = total;
        nb_tensor *p = o->params[i];
        if (nb_grad_of(p)) {
            total += nb_numel(p);
            o->param_steps[i]++;
        }
    }
    o->start[o->nparams] = total;
    nb_parallel_for(total, OPTIM_GRAIN, update_range, o);
    o->steps++;
    return 0;
}

void nb_optimizer_zero_grad(nb_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->nparams; i++) nb_zero_grad(o->params[i]);
}

void nb_optimizer_clear_grad(nb_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->nparams; i++) nb_clear_grad(o->params[i]);
}

float nb_optimizer_lr(const nb_optimizer *o) { return o ? o->lr : NAN; }

void nb_optimizer_set_lr(nb_optimizer *o, float lr) {
    if (!o) return;
    if (!nb__optim_check("nb_optimizer_set_lr", "lr", lr, 0.0f, INFINITY, true)) return;
    o->lr = lr;
}

const char *nb_optimizer_name(const nb_optimizer *o) { return o ? o->kind->name : NULL; }

int64_t nb_optimizer_steps(const nb_optimizer *o) { return o ? o->steps : 0; }

int nb_optimizer_num_params(const nb_optimizer *o) { return o ? o->nparams : 0; }

static bool check_index(const char *who, const nb_optimizer *o, int i) {
    if (i >= 0 && i < o->nparams) return true;
    nb_set_error("%s: parameter index %d out of range for %d parameters", who, i, o->nparams);
    return false;
}

int64_t nb_optimizer_param_steps(const nb_optimizer *o, int i) {
    if (!o) return -1;
    return check_index("nb_optimizer_param_steps", o, i) ? o->param_steps[i] : -1;
}

nb_tensor *nb_optimizer_param(const nb_optimizer *o, int i) {
    if (!o) return NULL;
    return check_index("nb_optimizer_param", o, i) ? o->params[i] : NULL;
}

nb_tensor *nb_optimizer_state(const nb_optimizer *o, int i, const char *name) {
    if (!o || !name) return NULL;
    if (!check_index("nb_optimizer_state", o, i)) return NULL;
    for (int k = 0; k < o->kind->nstate; k++)
        if (strcmp(o->kind->state_names[k], name) == 0)
            return o->state[(size_t)i * (size_t)o->kind->nstate + (size_t)k];
    return NULL;
}

void nb_optimizer_free(nb_optimizer *o) {
    if (!o) return;
    if (o->state && o->kind) {
        size_t n = (size_t)o->nparams * (size_t)o->kind->nstate;
        for (size_t k = 0; k < n; k++) nb_release(o->state[k]);
    }
    nb_free(o->state);
    nb_free(o->start);
    nb_free(o->param_steps);
    nb_free(o->params);
    nb_free(o);
}

/* ---- for checkpoints --------------------------------------------------------------- */

int nb_optimizer_num_states(const nb_optimizer *o) { return o ? o->kind->nstate : 0; }

const char *nb_optimizer_state_name(const nb_optimizer *o, int k) {
    return o && k >= 0 && k < o->kind->nstate ? o->kind->state_names[k] : NULL;
}

int nb_optimizer_set_steps(nb_optimizer *o, int64_t steps) {
    if (!o) return -1;
    if (steps < 0) {
        nb_set_error("nb_optimizer_set_steps: steps must be >= 0, got %lld", (long long)steps);
        return -1;
    }
    o->steps = steps;
    return 0;
}

int nb_optimizer_set_param_steps(nb_optimizer *o, int i, int64_t steps) {
    if (!o) return -1;
    if (!check_index("nb_optimizer_set_param_steps", o, i)) return -1;
    if (steps < 0) {
        nb_set_error("nb_optimizer_set_param_steps: steps must be >= 0, got %lld", (long long)steps);
        return -1;
    }
    o->param_steps[i] = steps;
    return 0;
}
