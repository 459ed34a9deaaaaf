/* activation.c — the nonlinearities of neural networks: tanh, sigmoid, relu,
 * leaky_relu, elu, gelu, softplus and clamp.
 *
 * Shapes: x (any) -> out (same). Each forward is one loop, written so that
 * it cannot overflow for any finite input (sigmoid and softplus never form
 * exp of a large positive number). Each backward is its derivative written
 * with ops, so it can be differentiated again:
 *
 *   tanh        g * (1 - y^2)
 *   sigmoid     g * y * (1 - y)
 *   relu        g * (x > 0)
 *   leaky_relu  g * (x > 0 ? 1 : slope)
 *   elu         g * (x > 0 ? 1 : y + alpha)
 *   gelu        g * (Phi(x) + x * phi(x))   (one fused op, gelu_vjp)
 *   softplus    g * sigmoid(x)
 *   clamp       g * (min <= x <= max)
 *
 * The piecewise-constant factors (relu's, leaky_relu's, clamp's) are masks:
 * constants built by a loop or a comparison, whose own derivative is zero
 * almost everywhere, so second derivatives stay right away from the kinks.
 *
 * Forward mode: each Jacobian is diagonal, hence symmetric, so each op's jvp
 * rule is its backward applied to the tangent (nb_symmetric_jvp): the
 * column above with g read as dx gives dy.
 */
#include "ops_internal.h"
#include "parallel.h"
#include "vmath_internal.h"

#define INV_SQRT_2PI 0.39894228040143267794f

/* ---- tanh: y = tanh(x), dy = (1 - y^2) dx ------------------------------------- */

static void tanh_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_rsub_scalar(nb_square(nb_saved(y, 0)), 1.0f));
}
static const nb_op tanh_op = {"tanh", tanh_backward, nb_symmetric_jvp};

nb_tensor *nb_tanh(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, tanhf(v));
    y = nb_record(y, &tanh_op, 1, &x);
    nb_save(y, y);
    return y;
}

/* ---- sigmoid: y = 1 / (1 + exp(-x)), dy = y (1 - y) dx --------------------------
 * exp is only ever taken of -|x|, so it lies in (0, 1]: no overflow, and
 * sigmoid(-100) is a tiny positive number rather than 1 / inf. */

static inline float sigmoidf(float v) {
    float e = expf(-fabsf(v));
    return v >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

static void sigmoid_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *s = nb_saved(y, 0);
    gx[0] = nb_mul(g, nb_mul(s, nb_rsub_scalar(s, 1.0f)));
}
static const nb_op sigmoid_op = {"sigmoid", sigmoid_backward, nb_symmetric_jvp};

nb_tensor *nb_sigmoid(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, sigmoidf(v));
    y = nb_record(y, &sigmoid_op, 1, &x);
    nb_save(y, y);
    return y;
}

/* ---- relu: y = max(x, 0), dy = (x > 0) dx ----------------------------------------
 * y > 0 exactly where x > 0, so the output is saved instead of the input:
 * x may then be freed before backward. NaN passes through. */

/* relu's gradient as one op (one pass instead of a mask and a product):
 * g where y = relu(x) > 0 or is NaN, 0 where y <= 0 — PyTorch's
 * threshold_backward, which lets g through a NaN and gives 0, not NaN, for
 * an infinite g where x <= 0. Linear in g; y is a constant (its own
 * derivative is 0 almost everywhere), so the op's gradient is itself. */
static nb_tensor *relu_grad(nb_tensor *y, nb_tensor *g);
static void relu_grad_backward(nb_tensor *node, nb_tensor *u, nb_tensor **gx) {
    gx[0] = relu_grad(nb_saved(node, 0), u);
}
static const nb_op relu_grad_op = {"relu_grad", relu_grad_backward, nb_symmetric_jvp};

/* relu and relu_grad are one pass over memory each; on large tensors (a
 * convolution's output) the pass is split over the pool in ranges of
 * RELU_GRAIN elements. Elementwise, so any split gives the same bits. */
#define RELU_GRAIN 32768

typedef struct relu_job {
    const float *x, *g; /* relu: x; relu_grad: y and g */
    float *out;
} relu_job;

/* The pointers are copied into restrict locals: read through the job, the
 * compiler must assume that each store to out may change x and g, and the
 * loops stayed scalar, reloading all three every element. */
static void relu_items(void *ctx, int64_t begin, int64_t end) {
    const relu_job *j = ctx;
    const float *restrict x = j->x;
    float *restrict out = j->out;
    for (int64_t i = begin; i < end; i++) {
        float v = x[i];
        out[i] = v <= 0 ? 0.0f : v;
    }
}

static void relu_grad_items(void *ctx, int64_t begin, int64_t end) {
    const relu_job *j = ctx;
    const float *restrict y = j->x, *restrict g = j->g;
    float *restrict out = j->out;
    /* a bit mask rather than a branch: signs at random would mispredict it
     * half the time, and the mask vectorises */
    for (int64_t i = begin; i < end; i++) {
        uint32_t bits, keep = -(uint32_t)!(y[i] <= 0);
        memcpy(&bits, g + i, 4);
        bits &= keep;
        memcpy(out + i, &bits, 4);
    }
}

/* A pass short enough to be one range runs here, without the pool's
 * bookkeeping: a dense layer's activations are a few hundred elements. */
static void relu_run(int64_t n, nb_parallel_fn fn, relu_job *job) {
    if (n < 2 * RELU_GRAIN) fn(job, 0, n);
    else nb_parallel_for(n, RELU_GRAIN, fn, job);
}

static nb_tensor *relu_grad(nb_tensor *y, nb_tensor *g) {
    if (!y || !g) return NULL;
    nb_tensor *out = nb_empty_like(g);
    if (!out) return NULL;
    relu_job job = {nb_data(y), nb_data(g), nb_data_mut(out)};
    relu_run(nb_numel(g), relu_grad_items, &job);
    out = nb_record(out, &relu_grad_op, 1, &g);
    nb_save(out, y);
    return out;
}

static void relu_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = relu_grad(nb_saved(y, 0), g);
}
static const nb_op relu_op = {"relu", relu_backward, nb_symmetric_jvp};

nb_tensor *nb_relu(nb_tensor *x) {
    if (!x) return NULL;
    nb_tensor *y = nb_empty_like(x);
    if (!y) return NULL;
    relu_job job = {nb_data(x), NULL, nb_data_mut(y)};
    relu_run(nb_numel(x), relu_items, &job);
    y = nb_record(y, &relu_op, 1, &x);
    nb_save(y, y);
    return y;
}

/* ---- leaky_relu: y = x > 0 ? x : slope x, dy = (x > 0 ? 1 : slope) dx --------------
 * The slope is attribute 0. The input is saved, not the output: a negative
 * slope would make the output's sign useless as a mask. */

static void leaky_relu_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0), *m = x ? nb_empty_like(x) : NULL;
    if (m) {
        float slope = (float)nb_attr(y, 0);
        const float *px = nb_data(x);
        float *pm = nb_data_mut(m);
        for (int64_t i = 0, n = nb_numel(x); i < n; i++) pm[i] = px[i] > 0 ? 1.0f : slope;
    }
    gx[0] = nb_mul(g, m);
}
static const nb_op leaky_relu_op = {"leaky_relu", leaky_relu_backward, nb_symmetric_jvp};

nb_tensor *nb_leaky_relu(nb_tensor *x, float negative_slope) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, v > 0 ? v : v * negative_slope);
    y = nb_record(y, &leaky_relu_op, 1, &x);
    nb_save(y, x);
    nb_set_attr(y, 0, negative_slope);
    return y;
}

/* ---- elu: y = x > 0 ? x : alpha (exp(x) - 1), dy = (x > 0 ? 1 : y + alpha) dx --------
 * On the negative side alpha exp(x) = y + alpha, so the derivative reuses
 * the output; taken through where(), it keeps its own derivative (again
 * y + alpha) for the second order. alpha is attribute 0. */

static void elu_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0), *out = nb_saved(y, 1);
    float alpha = (float)nb_attr(y, 0);
    nb_tensor *d = nb_where(nb_gt_scalar(x, 0.0f), nb_scalar(1.0f), nb_add_scalar(out, alpha));
    gx[0] = nb_mul(g, d);
}
static const nb_op elu_op = {"elu", elu_backward, nb_symmetric_jvp};

nb_tensor *nb_elu(nb_tensor *x, float alpha) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, v > 0 ? v : alpha * expm1f(v));
    y = nb_record(y, &elu_op, 1, &x);
    nb_save(y, x);
    nb_save(y, y);
    nb_set_attr(y, 0, alpha);
    return y;
}

/* ---- gelu: y = x Phi(x), dy = (Phi(x) + x phi(x)) dx --------------------------------
 * The exact form, Phi(x) = (1 + erf(x / sqrt 2)) / 2 the normal CDF and
 * phi(x) = exp(-x^2 / 2) / sqrt(2 pi) its density, both computed by the
 * branch-free functions of vmath_internal.h (within a relative 1e-6 of the
 * exact values, against libm's erff, whose 1 + erf cancels to nothing in
 * the negative tail), so that the loops vectorise. */

/* gelu's gradient is an op of its own, gelu_vjp(x, g) = g·(Phi(x) + x phi(x)),
 * one loop, because written as the ten ops it is made of it was the largest
 * cost of a transformer's MLP after the products (and as a derivative op
 * then a product, one pass and one temporary too many). The forward of gelu
 * saves d = Phi(x) + x phi(x), whose parts it computed anyway, so the loop
 * is then a product g·d, with no exp and no erf. Its own derivatives, for
 * second order, with u the gradient arriving:
 *   g: u·(Phi + x phi) = gelu_vjp(x, u)      x: u·g·phi(x)·(2 - x^2)
 * (d/dx (Phi + x phi) = phi (2 - x^2)); both are diagonal, so the forward
 * rule is the same formula read with the tangents dg and dx.
 * Saved: x, g and, when gelu kept it, d (attribute 0 says which). */
static nb_tensor *gelu_vjp(nb_tensor *x, nb_tensor *g, nb_tensor *d);

static void gelu_vjp_adjoint(nb_tensor *node, nb_tensor *dx, nb_tensor *dg, nb_tensor **gx) {
    nb_tensor *x = nb_saved(node, 0), *g = nb_saved(node, 1);
    nb_tensor *d = nb_attr(node, 0) != 0 ? nb_saved(node, 2) : NULL;
    if (dg) gx[1] = gelu_vjp(x, dg, d);
    if (dx) {
        nb_tensor *pdf = nb_mul_scalar(nb_exp(nb_mul_scalar(nb_square(x), -0.5f)), INV_SQRT_2PI);
        gx[0] = nb_mul(nb_mul(dx, g), nb_mul(pdf, nb_rsub_scalar(nb_square(x), 2.0f)));
    }
}
static void gelu_vjp_backward(nb_tensor *node, nb_tensor *u, nb_tensor **gx) {
    gelu_vjp_adjoint(node, nb_needs_input_grad(node, 0) ? u : NULL,
                     nb_needs_input_grad(node, 1) ? u : NULL, gx);
}
static nb_tensor *gelu_vjp_jvp(nb_tensor *node, nb_tensor *const *t) {
    nb_tensor *part[2] = {NULL, NULL};
    gelu_vjp_adjoint(node, t[0], t[1], part);
    return part[0] && part[1] ? nb_add(part[0], part[1]) : part[0] ? part[0] : part[1];
}
static const nb_op gelu_vjp_op = {"gelu_vjp", gelu_vjp_backward, gelu_vjp_jvp};

/* Both loops (gelu and gelu_vjp) are spread over the thread pool: each
 * element on its own, so any split gives the same bits. */
#define GELU_GRAIN 16384
typedef struct gelu_job {
    const float *x, *g; /* g given: gelu_vjp, y = g·d, d = Phi(x) + x phi(x) */
    float *y, *d;       /* d: written by gelu, read by gelu_vjp; NULL: computed */
} gelu_job;

/* One loop per case, each free of calls and branches (vmath_internal.h),
 * so that the compiler vectorises it, as wide as the CPU allows. */
NB_VM_MULTIARCH(gelu_loop, (const gelu_job *j, int64_t begin, int64_t end), (j, begin, end), {
    const float *restrict x = j->x, *restrict g = j->g;
    float *restrict y = j->y, *restrict d = j->d;
    if (g && d) {
        for (int64_t i = begin; i < end; i++) y[i] = g[i] * d[i];
    } else if (g) {
        for (int64_t i = begin; i < end; i++)
            y[i] = g[i] * (nb__normal_cdf(x[i]) + x[i] * nb__normal_pdf(x[i]));
    } else if (d) {
        for (int64_t i = begin; i < end; i++) {
            float pdf, c = nb__normal_cdf_pdf(x[i], &pdf);
            y[i] = x[i] * c;
            d[i] = c + x[i] * pdf;
        }
    } else {
        for (int64_t i = begin; i < end; i++) y[i] = x[i] * nb__normal_cdf(x[i]);
    }
})

static void gelu_items(void *ctx, int64_t begin, int64_t end) { gelu_loop(ctx, begin, end); }

static nb_tensor *gelu_vjp(nb_tensor *x, nb_tensor *g, nb_tensor *d) {
    if (!x || !g) return NULL;
    nb_tensor *y = nb_empty_like(x);
    if (!y) return NULL;
    gelu_job job = {.x = nb_data(x), .g = nb_data(g), .y = nb_data_mut(y),
                    .d = d ? (float *)nb_data(d) : NULL};
    nb_parallel_for(nb_numel(x), GELU_GRAIN, gelu_items, &job);
    nb_tensor *in[2] = {x, g};
    y = nb_record(y, &gelu_vjp_op, 2, in);
    nb_save(y, x);
    nb_save(y, g);
    if (d) nb_save(y, d);
    nb_set_attr(y, 0, d != NULL);
    return y;
}

/* Attribute 0: whether the forward kept the derivative Phi(x) + x phi(x)
 * (saved tensor 1), which it has nearly for free: phi(x) comes out of Phi's
 * tails. The backward is then one product. A node made for forward mode
 * alone keeps none. */
static void gelu_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0), *d = nb_attr(y, 0) != 0 ? nb_saved(y, 1) : NULL;
    if (x && (d || nb_attr(y, 0) == 0)) gx[0] = gelu_vjp(x, g, d);
}
static const nb_op gelu_op = {"gelu", gelu_backward, nb_symmetric_jvp};

nb_tensor *nb_gelu(nb_tensor *x) {
    if (!x) return NULL;
    nb_tensor *y = nb_empty_like(x);
    /* the derivative is kept for the backward only when there will be one */
    bool node = nb_is_grad_enabled() && nb_requires_grad(x);
    nb_tensor *d = node ? nb_empty_like(x) : NULL;
    if (!y || (node && !d)) return NULL; /* out of memory, message set */
    gelu_job job = {.x = nb_data(x), .y = nb_data_mut(y), .d = d ? nb_data_mut(d) : NULL};
    nb_parallel_for(nb_numel(x), GELU_GRAIN, gelu_items, &job);
    y = nb_record(y, &gelu_op, 1, &x);
    nb_save(y, x);
    if (d) nb_save(y, d);
    nb_set_attr(y, 0, d != NULL);
    return y;
}

/* ---- softplus: y = log(1 + exp(x)), dy = sigmoid(x) dx -------------------------------
 * Computed as max(x, 0) + log1p(exp(-|x|)): exp never overflows, and for
 * large negative x the result is the tiny exp(x) instead of log(1) = 0. */

static void softplus_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_sigmoid(nb_saved(y, 0)));
}
static const nb_op softplus_op = {"softplus", softplus_backward, nb_symmetric_jvp};

nb_tensor *nb_softplus(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, (v > 0 ? v : 0.0f) + log1pf(expf(-fabsf(v))));
    y = nb_record(y, &softplus_op, 1, &x);
    nb_save(y, x);
    return y;
}

/* ---- clamp: y = min(max(x, lo), hi), dy = (lo <= x <= hi) dx --------------------------
 * The bounds are attributes 0 and 1. At a bound the gradient passes, as
 * in PyTorch. NaN passes through. */

static void clamp_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0), *m = x ? nb_empty_like(x) : NULL;
    if (m) {
        float lo = (float)nb_attr(y, 0), hi = (float)nb_attr(y, 1);
        const float *px = nb_data(x);
        float *pm = nb_data_mut(m);
        for (int64_t i = 0, n = nb_numel(x); i < n; i++)
            pm[i] = px[i] >= lo && px[i] <= hi ? 1.0f : 0.0f;
    }
    gx[0] = nb_mul(g, m);
}
static const nb_op clamp_op = {"clamp", clamp_backward, nb_symmetric_jvp};

nb_tensor *nb_clamp(nb_tensor *x, float min, float max) {
    if (!x) return NULL;
    if (!(min <= max)) {
        nb_set_error("nb_clamp: min %g must not be greater than max %g (clamping %s)", (double)min,
                     (double)max, SHAPE(x));
        return NULL;
    }
    NB_UNARY_FORWARD(x, y, v < min ? min : v > max ? max : v);
    y = nb_record(y, &clamp_op, 1, &x);
    nb_save(y, x);
    nb_set_attr(y, 0, min);
    nb_set_attr(y, 1, max);
    return y;
}
