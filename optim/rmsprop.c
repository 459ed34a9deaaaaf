/* rmsprop.c — RMSprop (Hinton's lecture 6e), optionally centered (Graves
 * 2013) and with momentum: PyTorch's torch.optim.RMSprop.
 *
 * For each parameter p with gradient g:
 *
 *   g <- g + wd * p                          (when weight_decay != 0)
 *   v <- alpha * v + (1 - alpha) * g^2       ("square_avg")
 *   a <- alpha * a + (1 - alpha) * g         (centered, "grad_avg")
 *   v~ <- centered ? v - a^2 : v
 *   b <- momentum * b + g / (sqrt(v~) + eps) (momentum > 0, "momentum_buffer")
 *   p <- p - lr * b                          (momentum > 0)
 *   p <- p - lr * g / (sqrt(v~) + eps)       (otherwise)
 *
 * eps is added after the square root, or inside it with eps_inside_sqrt
 * (Keras and TensorFlow: g / sqrt(v~ + eps)). Keras also puts lr inside the
 * momentum buffer (b <- momentum * b + lr * g / ...; p <- p - b), which is
 * the same update while lr stays constant. v - a^2
 * is a variance and never negative in exact arithmetic; rounding can take
 * it a hair below zero, so it is clamped at 0 rather than left to give a
 * NaN square root.
 */
#include "optim_internal.h"
#include "vmath_internal.h"

enum { SQUARE_AVG, MOMENTUM_BUFFER, GRAD_AVG };

/* The common case, plain RMSprop (not centered, no momentum), as one loop
 * over distinct arrays that the compiler vectorises; the same arithmetic, in
 * the same order, as the general loop below, so the same bits. */
NB_VM_MULTIARCH(rmsprop_plain,
                (float *restrict p, const float *restrict g, float *restrict v, int64_t n,
                 float lr, float alpha, float eps, float wd, bool inside),
                (p, g, v, n, lr, alpha, eps, wd, inside), {
    for (int64_t j = 0; j < n; j++) {
        float d = wd == 0.0f ? g[j] : g[j] + wd * p[j];
        float vj = alpha * v[j] + (1.0f - alpha) * d * d;
        v[j] = vj;
        float root = nb__vm_sqrt(inside ? vj + eps : vj);
        float step_dir = d / (inside ? root : root + eps);
        p[j] -= lr * step_dir;
    }
})

static void rmsprop_update(const nb_optimizer *o, float *restrict p, const float *restrict g,
                           float *const *s, int64_t n, int64_t step) {
    (void)step; /* RMSprop has no bias correction and no first-step rule */
    const nb_rmsprop_opts *op = &o->opts.rmsprop;
    const float lr = o->lr, alpha = op->alpha, eps = op->eps, wd = op->weight_decay;
    const float mu = op->momentum;
    const bool inside = op->eps_inside_sqrt;
    float *restrict v = s[SQUARE_AVG], *restrict b = s[MOMENTUM_BUFFER], *restrict a = s[GRAD_AVG];
    if (!a && !b) {
        rmsprop_plain(p, g, v, n, lr, alpha, eps, wd, inside);
        return;
    }
    for (int64_t j = 0; j < n; j++) {
        float d = wd == 0.0f ? g[j] : g[j] + wd * p[j];
        float vj = alpha * v[j] + (1.0f - alpha) * d * d;
        v[j] = vj;
        if (a) {
            float aj = alpha * a[j] + (1.0f - alpha) * d;
            a[j] = aj;
            vj -= aj * aj;
            vj = vj > 0.0f || isnan(vj) ? vj : 0.0f;
        }
        float root = nb__vm_sqrt(inside ? vj + eps : vj);
        float step_dir = d / (inside ? root : root + eps);
        if (b) {
            step_dir += mu * b[j];
            b[j] = step_dir;
        }
        p[j] -= lr * step_dir;
    }
}

static const nb_optim_kind rmsprop_kind = {
    "rmsprop", 3, {"square_avg", "momentum_buffer", "grad_avg"}, rmsprop_update};

nb_rmsprop_opts nb_rmsprop_defaults(void) {
    return (nb_rmsprop_opts){.lr = 1e-2f, .alpha = 0.99f, .eps = 1e-8f, .weight_decay = 0.0f,
                             .momentum = 0.0f, .centered = false, .eps_inside_sqrt = false};
}

nb_optimizer *nb_rmsprop(int nparams, nb_tensor *const *params, const nb_rmsprop_opts *opts) {
    const char *who = "nb_rmsprop";
    nb_rmsprop_opts op = opts ? *opts : nb_rmsprop_defaults();
    if (!nb__optim_check(who, "alpha", op.alpha, 0.0f, 1.0f, false) ||
        !nb__optim_check(who, "eps", op.eps, 0.0f, INFINITY, true) ||
        !nb__optim_check(who, "weight_decay", op.weight_decay, 0.0f, INFINITY, true) ||
        !nb__optim_check(who, "momentum", op.momentum, 0.0f, INFINITY, true))
        return NULL;
    bool want[] = {true, op.momentum > 0.0f, op.centered};
    float init[] = {0.0f, 0.0f, 0.0f};
    nb_optimizer *o = nb__optimizer_new(who, &rmsprop_kind, nparams, params, op.lr, want, init);
    if (o) o->opts.rmsprop = op;
    return o;
}
