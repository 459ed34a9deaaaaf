/* norm.c — normalisation and embedding: layer_norm, batch_norm (PyTorch's
 * semantics, biased variance for normalising) and embedding (a row lookup).
 *
 * Both norms rest on one op, normalize: over every axis outside a
 * contiguous range [lo, hi) of kept axes,
 *
 *   xhat = (x - mean) · r,   r = 1 / sqrt(var + eps)   (var biased)
 *
 * layer_norm keeps the leading axes (lo = 0, hi = ndim - k) and batch_norm
 * keeps the channel axis (lo = 1, hi = 2). The forward is one fused loop;
 * so is the backward, normalize_grad, an op of x and g whose own backward
 * is made of ops, so that create_graph gives the second derivative:
 *
 *   dx = r · (g - mean(g) - xhat · mean(g · xhat))    (means over the normalised axes)
 *
 * Measured on [64,128] with weight and bias, one thread, release build:
 * this fused forward takes 14 µs against 16 µs for the same function composed
 * of mean, sub, square, mean, add, pow, mul, and forward plus backward 60 µs
 * against 100 µs (the composed graph has eight nodes to walk back).
 * The affine part (· weight + bias) and batch_norm's eval mode are plain
 * broadcasting ops. Embedding is index_select of the rows, so its gradient
 * is index_add into the used rows.
 */
#include "ops_internal.h"
#include "vmath_internal.h"

/* ---- normalize: the fused op ------------------------------------------------------
 * x viewed as [A, B, C]: A the axes before lo, B the kept axes [lo, hi), C
 * the axes from hi. Statistics per b over the A·C elements, in double. */

typedef struct norm_view {
    int64_t a, b, c;
} norm_view;

static norm_view view_of(const nb_tensor *x, int lo, int hi) {
    norm_view v = {1, 1, 1};
    for (int d = 0; d < nb_ndim(x); d++) {
        int64_t n = nb_shape(x)[d];
        if (d < lo) v.a *= n;
        else if (d < hi) v.b *= n;
        else v.c *= n;
    }
    return v;
}

/* The sums below keep eight float lanes, lane l adding the elements
 * k ≡ l (mod 8), folded into double in lane order. With GCC and clang the
 * lanes are one vector of 8 floats (a generic vector, lowered to whatever
 * the target has): written as a loop over an array of 8, GCC vectorised
 * across iterations instead and spent its time shuffling. Each lane does
 * the same float operations in the same order either way, so the bits are
 * the same. */
#if defined(__GNUC__)
typedef float lanes8 __attribute__((vector_size(32)));
#define NORM_VECTOR_LANES 1
#endif

/* Sum of p[0..n) and of (p[k] - shift)², in eight float lanes folded into
 * double per call. */
static inline void lane_sums(const float *p, int64_t n, float shift, double *s, double *ss) {
    float a[8] = {0}, b[8] = {0};
    int64_t k = 0;
#ifdef NORM_VECTOR_LANES
    lanes8 va = {0}, vb = {0};
    for (; k + 8 <= n; k += 8) {
        lanes8 x, d;
        memcpy(&x, p + k, sizeof x);
        d = x - shift;
        va += x;
        vb += d * d;
    }
    memcpy(a, &va, sizeof a);
    memcpy(b, &vb, sizeof b);
#else
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) {
            float d = p[k + l] - shift;
            a[l] += p[k + l];
            b[l] += d * d;
        }
#endif
    double sa = 0, sb = 0;
    for (int l = 0; l < 8; l++) sa += a[l], sb += b[l];
    for (; k < n; k++) {
        double d = (double)p[k] - shift;
        sa += p[k];
        sb += d * d;
    }
    *s += sa;
    *ss += sb;
}

/* The statistics of slice b = j of x viewed as [A, B, C]: the mean and
 * biased variance in double, and the float mean and r = 1/sqrt(var + eps)
 * that the kernels use. Two passes: the mean, then the squares about it. */
typedef struct norm_stats {
    double mean, var;
    float fm, r;
} norm_stats;

static inline norm_stats stats_of(const float *x, norm_view v, int64_t j, double eps) {
    double n = (double)(v.a * v.c), s = 0, ss = 0, unused = 0;
    for (int64_t i = 0; i < v.a; i++) lane_sums(x + (i * v.b + j) * v.c, v.c, 0, &s, &unused);
    norm_stats st = {.mean = s / n};
    s = 0;
    for (int64_t i = 0; i < v.a; i++) lane_sums(x + (i * v.b + j) * v.c, v.c, (float)st.mean, &s, &ss);
    /* the squares are about the float mean: correct them to the exact one */
    double dm = s / n - (double)(float)st.mean;
    st.var = ss / n - dm * dm;
    st.var = st.var > 0 ? st.var : 0;
    st.fm = (float)st.mean;
    st.r = (float)(1.0 / sqrt(st.var + eps));
    return st;
}

/* y = (x - mean) / sqrt(var + eps); mean and var (biased) written per b
 * when asked for. Compiled for each vector width (NB_VM_MULTIARCH): the
 * eight float lanes of the sums are written out, so every width adds the
 * same numbers in the same order and the bits do not change. */
NB_VM_MULTIARCH(normalize_kernel,
                (const float *x, float *y, norm_view v, double eps, double *mean_out, double *var_out),
                (x, y, v, eps, mean_out, var_out), {
    for (int64_t j = 0; j < v.b; j++) {
        norm_stats st = stats_of(x, v, j, eps);
        float fm = st.fm, r = st.r;
        double mean = st.mean, var = st.var;
        for (int64_t i = 0; i < v.a; i++) {
            const float *p = x + (i * v.b + j) * v.c;
            float *q = y + (i * v.b + j) * v.c;
            for (int64_t k = 0; k < v.c; k++) q[k] = (p[k] - fm) * r;
        }
        if (mean_out) mean_out[j] = mean;
        if (var_out) var_out[j] = var;
    }
})

/* The normalised axes of a node (attributes 0, 1: lo, hi) into axes. */
static int normalized_axes(const nb_tensor *x, int lo, int hi, int *axes) {
    int n = 0;
    for (int d = 0; d < nb_ndim(x); d++)
        if (d < lo || d >= hi) axes[n++] = d;
    return n;
}

/* ---- normalize_grad: normalize's backward, fused --------------------------------------
 * dx = r·P(g), P(v) = v - mean(v) - xhat·mean(v·xhat) (means over the
 * normalised axes), as one op of x and g: written with ops it was fifteen
 * passes over the tensor (mean and r recomputed, then the formula), and a
 * transformer step backs through nine layer norms. Its own backward, for
 * second order, is written with ops. With u the gradient arriving at dx,
 * m = mean(g·xhat), a = mean(u·xhat) and K = mean(u·g) - mean(u)·mean(g) - m·a
 * (P is symmetric, and d xhat/dx = r·P, d r/dx = -r²·xhat/n):
 *   g: r·P(u)        x: -r²·(K·xhat + a·P(g) + m·P(u))
 * Attributes lo, hi, eps as normalize's. */

/* Adds to *sg and *sgx the sum of q[0..n) and of q[k]·xhat[k], xhat[k] =
 * (p[k] - fm)·r, in eight float lanes folded into double, as lane_sums. */
static inline void grad_lane_sums(const float *p, const float *q, int64_t n, float fm, float r,
                                  double *sg, double *sgx) {
    float a8[8] = {0}, b8[8] = {0};
    int64_t k = 0;
#ifdef NORM_VECTOR_LANES
    lanes8 va = {0}, vb = {0};
    for (; k + 8 <= n; k += 8) {
        lanes8 xs, gs;
        memcpy(&xs, p + k, sizeof xs);
        memcpy(&gs, q + k, sizeof gs);
        va += gs;
        vb += gs * ((xs - fm) * r);
    }
    memcpy(a8, &va, sizeof a8);
    memcpy(b8, &vb, sizeof b8);
#else
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) {
            a8[l] += q[k + l];
            b8[l] += q[k + l] * ((p[k + l] - fm) * r);
        }
#endif
    double s = *sg, sx = *sgx; /* added on to the running sums, in this order */
    for (int l = 0; l < 8; l++) s += a8[l], sx += b8[l];
    for (; k < n; k++) {
        s += q[k];
        sx += (double)q[k] * ((p[k] - fm) * r);
    }
    *sg = s;
    *sgx = sx;
}

/* dx for x and g viewed as [A, B, C], statistics per b as normalize_kernel
 * computes them (the same float mean and r, so the same xhat). */
NB_VM_MULTIARCH(normalize_grad_kernel,
                (const float *x, const float *g, float *dx, norm_view v, double eps),
                (x, g, dx, v, eps), {
    double n = (double)(v.a * v.c);
    for (int64_t j = 0; j < v.b; j++) {
        norm_stats st = stats_of(x, v, j, eps);
        float fm = st.fm, r = st.r;
        double sg = 0, sgx = 0;
        for (int64_t i = 0; i < v.a; i++) {
            const float *p = x + (i * v.b + j) * v.c, *q = g + (i * v.b + j) * v.c;
            grad_lane_sums(p, q, v.c, fm, r, &sg, &sgx);
        }
        float gmean = (float)(sg / n), m = (float)(sgx / n);
        for (int64_t i = 0; i < v.a; i++) {
            const float *p = x + (i * v.b + j) * v.c, *q = g + (i * v.b + j) * v.c;
            float *o = dx + (i * v.b + j) * v.c;
            for (int64_t k = 0; k < v.c; k++) o[k] = r * (q[k] - gmean - (p[k] - fm) * r * m);
        }
    }
})

static nb_tensor *normalize_grad(nb_tensor *x, nb_tensor *g, int lo, int hi, float eps);

/* dx = normalize_grad(x, g) is the gradient in x of <xhat(x), g>, so its
 * Jacobian in x is that function's Hessian (symmetric) and its Jacobian in
 * g is xhat's (symmetric too): the adjoint below, applied to a tangent, is
 * also the forward rule. want_x and want_g select the two parts. */
static void normalize_grad_adjoint(nb_tensor *y, nb_tensor *u, bool want_x, bool want_g,
                                   nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0), *g = nb_saved(y, 1);
    if (!x || !g) return;
    int axes[NB_MAX_DIMS];
    int n = normalized_axes(x, (int)nb_attr(y, 0), (int)nb_attr(y, 1), axes);
    float eps = (float)nb_attr(y, 2);
#define MEAN(t) nb_mean((t), n, axes, true)
    nb_tensor *xc = nb_sub(x, MEAN(x));
    nb_tensor *r = nb_pow_scalar(nb_add_scalar(MEAN(nb_square(xc)), eps), -0.5f);
    nb_tensor *xhat = nb_mul(xc, r);
    nb_tensor *a = MEAN(nb_mul(u, xhat));
    nb_tensor *pu = nb_sub(nb_sub(u, MEAN(u)), nb_mul(xhat, a));
    if (want_g) gx[1] = nb_mul(r, pu);
    if (want_x) {
        nb_tensor *m = MEAN(nb_mul(g, xhat));
        nb_tensor *pg = nb_sub(nb_sub(g, MEAN(g)), nb_mul(xhat, m));
        nb_tensor *k = nb_sub(nb_sub(MEAN(nb_mul(u, g)), nb_mul(MEAN(u), MEAN(g))), nb_mul(m, a));
        nb_tensor *sum = nb_add(nb_add(nb_mul(k, xhat), nb_mul(a, pg)), nb_mul(m, pu));
        gx[0] = nb_neg(nb_mul(nb_square(r), sum));
    }
#undef MEAN
}
static void normalize_grad_backward(nb_tensor *y, nb_tensor *u, nb_tensor **gx) {
    normalize_grad_adjoint(y, u, nb_needs_input_grad(y, 0), nb_needs_input_grad(y, 1), gx);
}
static nb_tensor *normalize_grad_jvp(nb_tensor *y, nb_tensor *const *t) {
    nb_tensor *dx[2] = {NULL, NULL}, *dg[2] = {NULL, NULL};
    if (t[0]) normalize_grad_adjoint(y, t[0], true, false, dx);
    if (t[1]) normalize_grad_adjoint(y, t[1], false, true, dg);
    return dx[0] && dg[1] ? nb_add(dx[0], dg[1]) : dx[0] ? dx[0] : dg[1];
}
static const nb_op normalize_grad_op = {"normalize_grad", normalize_grad_backward, normalize_grad_jvp};

static nb_tensor *normalize_grad(nb_tensor *x, nb_tensor *g, int lo, int hi, float eps) {
    if (!x || !g) return NULL;
    nb_tensor *dx = nb_empty_like(x);
    if (!dx) return NULL;
    normalize_grad_kernel(nb_data(x), nb_data(g), nb_data_mut(dx), view_of(x, lo, hi), eps);
    nb_tensor *in[2] = {x, g};
    dx = nb_record(dx, &normalize_grad_op, 2, in);
    nb_save(dx, x);
    nb_save(dx, g);
    nb_set_attr(dx, 0, lo);
    nb_set_attr(dx, 1, hi);
    nb_set_attr(dx, 2, eps);
    return dx;
}

/* x [..] -> xhat [..]; attributes lo, hi, eps. dx = normalize_grad(x, g). */
static void normalize_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0);
    gx[0] = normalize_grad(x, g, (int)nb_attr(y, 0), (int)nb_attr(y, 1), (float)nb_attr(y, 2));
}
/* The Jacobian r·(I - 11ᵀ/n - xhat xhatᵀ/n) (per kept index) is symmetric,
 * so the forward rule is the backward applied to the tangent. */
static const nb_op layer_norm_op = {"layer_norm", normalize_backward, nb_symmetric_jvp};
static const nb_op batch_norm_op = {"batch_norm", normalize_backward, nb_symmetric_jvp};

static nb_tensor *normalize(const char *who, const nb_op *op, nb_tensor *x, int lo, int hi, float eps,
                            double *mean_out, double *var_out) {
    nb_tensor *y = nb__empty_for(who, nb_ndim(x), nb_shape(x));
    if (!y) return NULL;
    normalize_kernel(nb_data(x), nb_data_mut(y), view_of(x, lo, hi), eps, mean_out, var_out);
    y = nb_record(y, op, 1, &x);
    nb_save(y, x);
    nb_set_attr(y, 0, lo);
    nb_set_attr(y, 1, hi);
    nb_set_attr(y, 2, eps);
    return y;
}

/* ---- layer_norm -----------------------------------------------------------------
 * x [..., d1..dk], weight and bias [d1..dk] or NULL -> [..., d1..dk] */

nb_tensor *nb_layer_norm(nb_tensor *x, int normalized_ndim, nb_tensor *weight, nb_tensor *bias,
                         float eps) {
    if (!x) return NULL;
    int nd = nb_ndim(x), k = normalized_ndim;
    bool ok = k >= 1 && k <= nd && eps > 0 && nb_numel(x) > 0;
    nb_tensor *affine[2] = {weight, bias};
    for (int i = 0; i < 2 && ok; i++)
        if (affine[i])
            ok = nb_ndim(affine[i]) == k &&
                 memcmp(nb_shape(affine[i]), nb_shape(x) + nd - k, sizeof(int64_t) * (size_t)k) == 0;
    if (!ok) {
        nb_set_error("nb_layer_norm: x %s, normalized_ndim %d, weight %s, bias %s, eps %g: the last "
                     "normalized_ndim axes of a non-empty x are normalised, weight and bias must have "
                     "their shape and eps must be positive",
                     SHAPE(x), k, weight ? SHAPE(weight) : "NULL", bias ? SHAPE(bias) : "NULL",
                     (double)eps);
        return NULL;
    }
    nb_composite_begin();
    nb_tensor *y = normalize("nb_layer_norm", &layer_norm_op, x, 0, nd - k, eps, NULL, NULL);
    if (weight) y = nb_mul(y, weight);
    if (bias) y = nb_add(y, bias);
    return nb_composite_end(y);
}

/* ---- batch_norm -----------------------------------------------------------------
 * x [N,C,...], running stats, weight and bias [C] (each may be NULL) -> [N,C,...].
 * Training: batch statistics over every axis but 1, and the running stats
 * updated in place without grad, running = (1 - momentum)·running +
 * momentum·batch, with the unbiased variance. Eval: the running stats. */

/* v [C] as [C,1,...,1], to broadcast against x [N,C,...]. */
static nb_tensor *per_channel(nb_tensor *v, int ndim) {
    int64_t shape[NB_MAX_DIMS];
    shape[0] = nb_numel(v);
    for (int d = 1; d < ndim - 1; d++) shape[d] = 1;
    return nb_reshape(v, ndim - 1, shape);
}

nb_tensor *nb_batch_norm(nb_tensor *x, nb_tensor *running_mean, nb_tensor *running_var,
                         nb_tensor *weight, nb_tensor *bias, bool training, float momentum, float eps) {
    if (!x) return NULL;
    int nd = nb_ndim(x);
    int64_t c = nd >= 2 ? nb_shape(x)[1] : 0, n = c ? nb_numel(x) / c : 0;
    nb_tensor *vecs[4] = {running_mean, running_var, weight, bias};
    const char *names[4] = {"running_mean", "running_var", "weight", "bias"};
    for (int i = 0; i < 4; i++)
        if (vecs[i] && (nb_ndim(vecs[i]) != 1 || nb_shape(vecs[i])[0] != c || nd < 2)) {
            nb_set_error("nb_batch_norm: x %s has %lld channels (axis 1) but %s has shape %s", SHAPE(x),
                         (long long)c, names[i], SHAPE(vecs[i]));
            return NULL;
        }
    if (nd < 2 || c == 0 || !(eps > 0) || !(momentum >= 0 && momentum <= 1) ||
        (!running_mean) != (!running_var) || (!training && !running_mean)) {
        nb_set_error("nb_batch_norm: x %s, momentum %g, eps %g: x must be [N,C,...] with C > 0, "
                     "momentum in [0, 1], eps positive, and running_mean and running_var both given "
                     "(or, in training only, both NULL)",
                     SHAPE(x), (double)momentum, (double)eps);
        return NULL;
    }
    if (training && n <= 1) {
        nb_set_error("nb_batch_norm: x %s: training needs more than one value per channel", SHAPE(x));
        return NULL;
    }
    nb_composite_begin();
    nb_tensor *y;
    if (training) {
        double *stats = nb_malloc(2 * (size_t)c * sizeof *stats);
        if (!stats) {
            nb_set_error("nb_batch_norm: out of memory");
            return nb_composite_end(NULL);
        }
        y = normalize("nb_batch_norm", &batch_norm_op, x, 1, 2, eps, stats, stats + c);
        if (y && running_mean) {
            float *rm = nb_data_mut(running_mean), *rv = nb_data_mut(running_var);
            double m = momentum, unbias = (double)n / (double)(n - 1);
            for (int64_t j = 0; j < c; j++) {
                rm[j] = (float)((1 - m) * rm[j] + m * stats[j]);
                rv[j] = (float)((1 - m) * rv[j] + m * stats[c + j] * unbias);
            }
        }
        nb_free(stats);
    } else {
        /* (x - running_mean) / sqrt(running_var + eps): constants, so only
         * x, weight and bias receive gradients */
        nb_tensor *r = nb_pow_scalar(nb_add_scalar(nb_detach(running_var), eps), -0.5f);
        y = nb_mul(nb_sub(x, per_channel(nb_detach(running_mean), nd)), per_channel(r, nd));
    }
    if (weight) y = nb_mul(y, per_channel(weight, nd));
    if (bias) y = nb_add(y, per_channel(bias, nd));
    return nb_composite_end(y);
}

/* ---- embedding --------------------------------------------------------------------
 * weight [V,D], indices [...] of integer values -> [..., D]: the rows of
 * weight, by index_select, whose gradient index_adds g into the used rows. */

nb_tensor *nb_embedding(nb_tensor *weight, nb_tensor *indices) {
    if (!weight || !indices) return NULL;
    if (nb_ndim(weight) != 2 || nb_ndim(indices) >= NB_MAX_DIMS) {
        nb_set_error("nb_embedding: weight %s must be 2-D [V,D] and indices %s have fewer than %d axes",
                     SHAPE(weight), SHAPE(indices), NB_MAX_DIMS);
        return NULL;
    }
    int64_t v = nb_shape(weight)[0], count = nb_numel(indices);
    const float *idx = nb_data(indices);
    for (int64_t i = 0; i < count; i++)
        if (!(idx[i] >= 0 && idx[i] < (float)v && idx[i] == floorf(idx[i]))) {
            nb_set_error("nb_embedding: index %g (element %lld of indices %s) is not an integer in "
                         "[0, %lld) for a weight of %lld rows",
                         (double)idx[i], (long long)i, SHAPE(indices), (long long)v, (long long)v);
            return NULL;
        }
    int64_t shape[NB_MAX_DIMS];
    memcpy(shape, nb_shape(indices), sizeof(int64_t) * (size_t)nb_ndim(indices));
    shape[nb_ndim(indices)] = nb_shape(weight)[1];
    nb_composite_begin();
    nb_tensor *rows = nb_index_select(weight, 0, nb_as_shape(indices, 1, &count));
    return nb_composite_end(nb_reshape(rows, nb_ndim(indices) + 1, shape));
}
