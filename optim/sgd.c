/* sgd.c — stochastic gradient descent with momentum, dampening, Nesterov
 * momentum and L2 weight decay: PyTorch's torch.optim.SGD step for step.
 *
 * For each parameter p with gradient g, at its step t (1, 2, ...):
 *
 *   g <- g + weight_decay * p                      (when weight_decay != 0)
 *   b <- g                                         (t = 1)
 *   b <- momentum * b + (1 - dampening) * g        (t > 1)
 *   g <- nesterov ? g + momentum * b : b           (when momentum != 0)
 *   p <- p - lr * g
 *
 * The first step copies g into the buffer rather than damping it, as
 * PyTorch does, so momentum starts at full speed.
 */
#include "optim_internal.h"
#include "vmath_internal.h"

enum { MOMENTUM_BUFFER };

/* The momentum update as one loop with the cases fixed outside it, so
 * that it vectorises (with first and nesterov tested per element it did
 * not, and ran at a third of the memory bandwidth). */
NB_VM_MULTIARCH(sgd_momentum,
                (float *restrict p, const float *restrict g, float *restrict b, int64_t n,
                 float lr, float wd, float mu, float keep, bool first, bool nesterov),
                (p, g, b, n, lr, wd, mu, keep, first, nesterov), {
    if (first) {
        for (int64_t j = 0; j < n; j++) {
            float d = wd == 0.0f ? g[j] : g[j] + wd * p[j];
            b[j] = d;
            p[j] -= lr * (nesterov ? d + mu * d : d);
        }
    } else if (nesterov) {
        for (int64_t j = 0; j < n; j++) {
            float d = wd == 0.0f ? g[j] : g[j] + wd * p[j];
            float bj = mu * b[j] + keep * d;
            b[j] = bj;
            p[j] -= lr * (d + mu * bj);
        }
    } else {
        for (int64_t j = 0; j < n; j++) {
            float d = wd == 0.0f ? g[j] : g[j] + wd * p[j];
            float bj = mu * b[j] + keep * d;
            b[j] = bj;
            p[j] -= lr * bj;
        }
    }
})

static void sgd_update(const nb_optimizer *o, float *restrict p, const float *restrict g,
                       float *const *s, int64_t n, int64_t step) {
    const nb_sgd_opts *op = &o->opts.sgd;
    const float lr = o->lr, wd = op->weight_decay, mu = op->momentum;
    if (mu == 0.0f) {
        if (wd == 0.0f)
            for (int64_t j = 0; j < n; j++) p[j] -= lr * g[j];
        else
            for (int64_t j = 0; j < n; j++) p[j] -= lr * (g[j] + wd * p[j]);
        return;
    }
    sgd_momentum(p, g, s[MOMENTUM_BUFFER], n, lr, wd, mu, 1.0f - op->dampening, step == 1,
                 op->nesterov);
}

static const nb_optim_kind sgd_kind = {"sgd", 1, {"momentum_buffer"}, sgd_update};

nb_sgd_opts nb_sgd_defaults(void) {
    return (nb_sgd_opts){.lr = 0.01f, .momentum = 0.0f, .dampening = 0.0f,
                         .weight_decay = 0.0f, .nesterov = false};
}

nb_optimizer *nb_sgd(int nparams, nb_tensor *const *params, const nb_sgd_opts *opts) {
    const char *who = "nb_sgd";
    nb_sgd_opts op = opts ? *opts : nb_sgd_defaults();
    if (!nb__optim_check(who, "momentum", op.momentum, 0.0f, INFINITY, true) ||
        !nb__optim_check(who, "dampening", op.dampening, 0.0f, 1.0f, false) ||
        !nb__optim_check(who, "weight_decay", op.weight_decay, 0.0f, INFINITY, true))
        return NULL;
    if (op.nesterov && (op.momentum <= 0.0f || op.dampening != 0.0f)) {
        nb_set_error("%s: nesterov needs a momentum > 0 and zero dampening, got momentum %g, "
                     "dampening %g", who, (double)op.momentum, (double)op.dampening);
        return NULL;
    }
    bool want[] = {op.momentum != 0.0f};
    float init[] = {0.0f};
    nb_optimizer *o = nb__optimizer_new(who, &sgd_kind, nparams, params, op.lr, want, init);
    if (o) o->opts.sgd = op;
    return o;
}
