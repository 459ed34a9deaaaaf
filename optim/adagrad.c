/* adagrad.c — Adagrad (Duchi, Hazan & Singer 2011): PyTorch's
 * torch.optim.Adagrad.
 *
 * For each parameter p with gradient g, at its step t (1, 2, ...):
 *
 *   lr~ <- lr / (1 + (t - 1) * lr_decay)
 *   g <- g + wd * p                          (when weight_decay != 0)
 *   s <- s + g^2                             ("sum", starts at
 *                                              initial_accumulator_value)
 *   p <- p - lr~ * g / (sqrt(s) + eps)       (PyTorch)
 *   p <- p - lr~ * g / sqrt(s + eps)         (eps_inside_sqrt: Keras)
 *
 * Each element's rate shrinks with the gradient it has seen, so rarely
 * updated elements keep large steps.
 */
#include "optim_internal.h"
#include "vmath_internal.h"

enum { SUM };

NB_VM_MULTIARCH(adagrad_loop,
                (float *restrict p, const float *restrict g, float *restrict s, int64_t n,
                 float clr, float eps, float wd, bool inside),
                (p, g, s, n, clr, eps, wd, inside), {
    for (int64_t j = 0; j < n; j++) {
        float d = wd == 0.0f ? g[j] : g[j] + wd * p[j];
        float sj = s[j] + d * d;
        s[j] = sj;
        float root = nb__vm_sqrt(inside ? sj + eps : sj);
        p[j] -= clr * d / (inside ? root : root + eps);
    }
})

static void adagrad_update(const nb_optimizer *o, float *restrict p, const float *restrict g,
                           float *const *s, int64_t n, int64_t step) {
    const nb_adagrad_opts *op = &o->opts.adagrad;
    const float clr = (float)((double)o->lr / (1.0 + (double)(step - 1) * (double)op->lr_decay));
    /* the sum is an array of its own: the loop vectorises */
    adagrad_loop(p, g, s[SUM], n, clr, op->eps, op->weight_decay,
                 op->eps_inside_sqrt);
}

static const nb_optim_kind adagrad_kind = {"adagrad", 1, {"sum"}, adagrad_update};

nb_adagrad_opts nb_adagrad_defaults(void) {
    return (nb_adagrad_opts){.lr = 1e-2f, .lr_decay = 0.0f, .weight_decay = 0.0f, .eps = 1e-10f,
                             .initial_accumulator_value = 0.0f, .eps_inside_sqrt = false};
}

nb_optimizer *nb_adagrad(int nparams, nb_tensor *const *params, const nb_adagrad_opts *opts) {
    const char *who = "nb_adagrad";
    nb_adagrad_opts op = opts ? *opts : nb_adagrad_defaults();
    if (!nb__optim_check(who, "lr_decay", op.lr_decay, 0.0f, INFINITY, true) ||
        !nb__optim_check(who, "weight_decay", op.weight_decay, 0.0f, INFINITY, true) ||
        !nb__optim_check(who, "eps", op.eps, 0.0f, INFINITY, true) ||
        !nb__optim_check(who, "initial_accumulator_value", op.initial_accumulator_value, 0.0f,
                         INFINITY, true))
        return NULL;
    bool want[] = {true};
    float init[] = {op.initial_accumulator_value};
    nb_optimizer *o = nb__optimizer_new(who, &adagrad_kind, nparams, params, op.lr, want, init);
    if (o) o->opts.adagrad = op;
    return o;
}
