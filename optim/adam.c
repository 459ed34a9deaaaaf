/* adam.c — Adam (Kingma & Ba), its amsgrad variant and AdamW (Loshchilov &
 * Hutter's decoupled weight decay): PyTorch's torch.optim.Adam and AdamW.
 *
 * For each parameter p with gradient g, at its step t (1, 2, ...):
 *
 *   p <- p - lr * wd * p                  (AdamW: decay the weights directly)
 *   g <- g + wd * p                       (Adam: decay as an L2 term in g)
 *   m <- beta1 * m + (1 - beta1) * g      ("exp_avg")
 *   v <- beta2 * v + (1 - beta2) * g^2    ("exp_avg_sq")
 *   vmax <- max(vmax, v)                  (amsgrad, "max_exp_avg_sq")
 *   p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v' / (1 - beta2^t)) + eps)
 *
 * with v' = vmax under amsgrad and v otherwise. With eps_hat (Keras's and
 * TensorFlow's form) eps is added before the correction of v:
 *
 *   p <- p - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v') + eps)
 *
 * which equals the line above with eps scaled by 1 / sqrt(1 - beta2^t):
 * the two differ only where sqrt(v') is comparable to eps. The bias corrections
 * undo the pull of the zero initial m and v towards 0 in early steps. They
 * are computed once per parameter in double and folded into two scalars
 * (lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t)), as PyTorch does, so the
 * loop is a few multiplies, one sqrt and one divide.
 */
#include "optim_internal.h"
#include "vmath_internal.h"

enum { EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ };

/* The common case (no amsgrad) as one loop over distinct arrays that the
 * compiler vectorises; the same arithmetic, in the same order, as the
 * general loop below, so the same bits. */
NB_VM_MULTIARCH(adam_plain,
                (float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                 int64_t n, float l2, float shrink, float b1, float b2, float step_size,
                 float inv_bc2_sqrt, float eps_term),
                (p, g, m, v, n, l2, shrink, b1, b2, step_size, inv_bc2_sqrt, eps_term), {
    for (int64_t j = 0; j < n; j++) {
        float pj = shrink == 1.0f ? p[j] : p[j] * shrink; /* AdamW's decay, in the same pass */
        float d = l2 == 0.0f ? g[j] : g[j] + l2 * pj;
        float mj = b1 * m[j] + (1.0f - b1) * d;
        float vj = b2 * v[j] + (1.0f - b2) * d * d;
        m[j] = mj;
        v[j] = vj;
        p[j] = pj - step_size * mj / (nb__vm_sqrt(vj) * inv_bc2_sqrt + eps_term);
    }
})

static void adam_update(const nb_optimizer *o, float *restrict p, const float *restrict g,
                        float *const *s, int64_t n, int64_t step) {
    const nb_adam_opts *op = &o->opts.adam;
    const float lr = o->lr, b1 = op->beta1, b2 = op->beta2, eps = op->eps;
    const float wd = op->weight_decay;
    const float step_size = (float)((double)lr / (1.0 - pow((double)b1, (double)step)));
    const float inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow((double)b2, (double)step)));
    /* eps_hat: Keras's sqrt(1 - beta2^t) m / (sqrt(v) + eps) is
     * m / (sqrt(v) inv + eps inv), with inv = 1 / sqrt(1 - beta2^t) */
    const float eps_term = op->eps_hat ? eps * inv_bc2_sqrt : eps;
    float *restrict m = s[EXP_AVG], *restrict v = s[EXP_AVG_SQ], *restrict vmax = s[MAX_EXP_AVG_SQ];

    const float shrink = o->decoupled_decay && wd != 0.0f ? 1.0f - lr * wd : 1.0f;
    const float l2 = o->decoupled_decay ? 0.0f : wd;
    if (!vmax) {
        adam_plain(p, g, m, v, n, l2, shrink, b1, b2, step_size, inv_bc2_sqrt, eps_term);
        return;
    }
    if (shrink != 1.0f)
        for (int64_t j = 0; j < n; j++) p[j] *= shrink;
    for (int64_t j = 0; j < n; j++) {
        float d = l2 == 0.0f ? g[j] : g[j] + l2 * p[j];
        float mj = b1 * m[j] + (1.0f - b1) * d;
        float vj = b2 * v[j] + (1.0f - b2) * d * d;
        m[j] = mj;
        v[j] = vj;
        /* amsgrad (adam_plain took the rest); fmaxf would hide a NaN in v
         * behind the old maximum. */
        vj = vj > vmax[j] || isnan(vj) ? vj : vmax[j];
        vmax[j] = vj;
        p[j] -= step_size * mj / (nb__vm_sqrt(vj) * inv_bc2_sqrt + eps_term);
    }
}

static const nb_optim_kind adam_kind = {
    "adam", 3, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, adam_update};
static const nb_optim_kind adamw_kind = {
    "adamw", 3, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, adam_update};

nb_adam_opts nb_adam_defaults(void) {
    return (nb_adam_opts){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                          .weight_decay = 0.0f, .amsgrad = false, .eps_hat = false};
}

nb_adam_opts nb_adamw_defaults(void) {
    nb_adam_opts op = nb_adam_defaults();
    op.weight_decay = 1e-2f;
    return op;
}

static nb_optimizer *make(const char *who, const nb_optim_kind *kind, bool decoupled,
                          int nparams, nb_tensor *const *params, const nb_adam_opts *op) {
    if (!nb__optim_check(who, "beta1", op->beta1, 0.0f, 1.0f, true) ||
        !nb__optim_check(who, "beta2", op->beta2, 0.0f, 1.0f, true) ||
        !nb__optim_check(who, "eps", op->eps, 0.0f, INFINITY, true) ||
        !nb__optim_check(who, "weight_decay", op->weight_decay, 0.0f, INFINITY, true))
        return NULL;
    bool want[] = {true, true, op->amsgrad};
    float init[] = {0.0f, 0.0f, 0.0f};
    nb_optimizer *o = nb__optimizer_new(who, kind, nparams, params, op->lr, want, init);
    if (o) {
        o->opts.adam = *op;
        o->decoupled_decay = decoupled;
    }
    return o;
}

nb_optimizer *nb_adam(int nparams, nb_tensor *const *params, const nb_adam_opts *opts) {
    nb_adam_opts op = opts ? *opts : nb_adam_defaults();
    return make("nb_adam", &adam_kind, false, nparams, params, &op);
}

nb_optimizer *nb_adamw(int nparams, nb_tensor *const *params, const nb_adam_opts *opts) {
    nb_adam_opts op = opts ? *opts : nb_adamw_defaults();
    return make("nb_adamw", &adamw_kind, true, nparams, params, &op);
}
