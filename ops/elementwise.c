/* elementwise.c — binary elementwise ops with NumPy broadcasting (add, sub,
 * mul, div, pow, maximum, minimum), their scalar-operand forms, and the pair
 * that makes broadcasting differentiable: expand and its adjoint sum_to.
 *
 * Shapes: a is (..., n), b is (..., n) or broadcastable; out has the
 * broadcast shape. Every backward ends in nb_sum_to(grad, input shape): the
 * gradient of a broadcast operand is summed over the axes it was stretched
 * along. That one rule is the whole of broadcasting's calculus. Forward
 * rules (jvp) go the other way: a tangent of a broadcast operand is expanded
 * to the output's shape.
 */
#include "ops_internal.h"

/* ---- broadcasting ----------------------------------------------------------- */

bool nb_norm_axis(const char *who, int axis, int ndim, int *out) {
    int a = axis < 0 ? axis + ndim : axis;
    if (a < 0 || a >= ndim) {
        nb_set_error("%s: axis %d is out of range for a tensor of %d dimensions", who, axis, ndim);
        return false;
    }
    *out = a;
    return true;
}

static bool broadcast_shape(const char *who, int na, const int64_t *sa, int nb, const int64_t *sb,
                            int *ndim, int64_t *out) {
    int n = na > nb ? na : nb;
    for (int d = 0; d < n; d++) {
        int64_t x = d - (n - na) >= 0 ? sa[d - (n - na)] : 1;
        int64_t y = d - (n - nb) >= 0 ? sb[d - (n - nb)] : 1;
        if (x != y && x != 1 && y != 1) {
            char b1[NB_SHAPE_BUF], b2[NB_SHAPE_BUF];
            nb_set_error("%s: shapes %s and %s cannot be broadcast: dimension %d is %lld in one "
                         "and %lld in the other",
                         who, nb_shape_str(na, sa, b1, sizeof b1), nb_shape_str(nb, sb, b2, sizeof b2),
                         d, (long long)x, (long long)y);
            return false;
        }
        out[d] = x == 1 ? y : x;
    }
    int64_t numel;
    if (!nb__shape_numel(n, out, &numel)) {
        char b1[NB_SHAPE_BUF], b2[NB_SHAPE_BUF], b3[NB_SHAPE_BUF];
        nb_set_error("%s: shapes %s and %s broadcast to %s, whose nonzero dimensions multiply "
                     "to more than %lld",
                     who, nb_shape_str(na, sa, b1, sizeof b1), nb_shape_str(nb, sb, b2, sizeof b2),
                     nb_shape_str(n, out, b3, sizeof b3), (long long)INT64_MAX);
        return false;
    }
    *ndim = n;
    return true;
}

bool nb_broadcast_shapes(const char *who, const nb_tensor *a, const nb_tensor *b, int *ndim,
                         int64_t *out) {
    if (!a || !b) return false;
    return broadcast_shape(who, nb_ndim(a), nb_shape(a), nb_ndim(b), nb_shape(b), ndim, out);
}

/* Strides of t seen through the broadcast shape: 0 along stretched axes. */
static void bcast_strides(const nb_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    int nt = nb_ndim(t);
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        int dt = d - (ndim - nt);
        int64_t size = dt >= 0 ? nb_shape(t)[dt] : 1;
        strides[d] = size == 1 && shape[d] != 1 ? 0 : s;
        if (dt >= 0) s *= size;
    }
}

bool nb_bcast_plan(const char *who, const nb_tensor *a, const nb_tensor *b, nb_bcast *p) {
    if (!nb_broadcast_shapes(who, a, b, &p->ndim, p->shape)) return false;
    nb__shape_numel(p->ndim, p->shape, &p->numel); /* checked by broadcast_shape */
    bcast_strides(a, p->ndim, p->shape, p->stride_a);
    bcast_strides(b, p->ndim, p->shape, p->stride_b);
    return true;
}

/* ---- expand and sum_to --------------------------------------------------------
 * expand: x (broadcastable to shape) -> out (shape), a copy.
 * sum_to: x (shape S) -> out (shape, which broadcasts to S), summing. */

static void expand_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(out, 0);
    gx[0] = nb_sum_to(g, nb_ndim(x), nb_shape(x));
}
/* expand and sum_to are linear: each maps a tangent as it maps a value. */
static nb_tensor *expand_jvp(nb_tensor *out, nb_tensor *const *t) {
    return t[0] ? nb_expand(t[0], nb_ndim(out), nb_shape(out)) : NULL;
}
static const nb_op expand_op = {"expand", expand_backward, expand_jvp};

nb_tensor *nb_expand(nb_tensor *x, int ndim, const int64_t *shape) {
    if (!x) return NULL;
    int n;
    int64_t bshape[NB_MAX_DIMS];
    if (ndim > 0 && !shape) {
        nb_set_error("nb_expand: %d dimensions requested for %s but no shape given", ndim,
                     SHAPE(x));
        return NULL;
    }
    int64_t numel;
    if (!nb__check_shape("nb_expand", ndim, shape, &numel)) return NULL;
    if (ndim < nb_ndim(x) ||
        !broadcast_shape("nb_expand", nb_ndim(x), nb_shape(x), ndim, shape, &n, bshape) ||
        (ndim > 0 && memcmp(bshape, shape, sizeof(int64_t) * (size_t)ndim) != 0)) {
        char b[NB_SHAPE_BUF];
        nb_set_error("nb_expand: cannot expand %s to %s", SHAPE(x),
                     nb_shape_str(ndim, shape, b, sizeof b));
        return NULL;
    }
    nb_tensor *out = nb__empty_for("nb_expand", ndim, shape);
    if (!out) return NULL;
    nb_bcast p = {.ndim = ndim, .numel = nb_numel(out)};
    memcpy(p.shape, shape, sizeof(int64_t) * (size_t)ndim);
    bcast_strides(x, ndim, shape, p.stride_a);
    const float *px = nb_data(x);
    float *po = nb_data_mut(out);
    NB_BCAST_FOR(&p, i, ia, ib, po[i] = px[ia]);
    return nb_record(out, &expand_op, 1, &x);
}

#define SUM_TO_IN_CACHE 8192 /* floats summed down columns, see nb_sum_to */

static void sum_to_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(out, 0);
    gx[0] = nb_expand(g, nb_ndim(x), nb_shape(x));
}
static nb_tensor *sum_to_jvp(nb_tensor *out, nb_tensor *const *t) {
    return t[0] ? nb_sum_to(t[0], nb_ndim(out), nb_shape(out)) : NULL;
}
static const nb_op sum_to_op = {"sum_to", sum_to_backward, sum_to_jvp};

nb_tensor *nb_sum_to(nb_tensor *x, int ndim, const int64_t *shape) {
    if (!x) return NULL;
    if (ndim < 0 || (ndim > 0 && !shape)) {
        nb_set_error("nb_sum_to: %d dimensions requested for %s%s", ndim, SHAPE(x),
                     ndim < 0 ? "" : " but no shape given");
        return NULL;
    }
    if (ndim == nb_ndim(x) &&
        (ndim == 0 || memcmp(shape, nb_shape(x), sizeof(int64_t) * (size_t)ndim) == 0))
        return x; /* nothing to sum: the common case in backward formulas */
    /* shape is x's trailing axes (a bias's gradient, [rows, n] -> [n]):
     * valid, and only leading axes are summed; else the general check */
    int lead = nb_ndim(x) - ndim;
    bool trailing = lead >= 0 &&
                    (ndim == 0 || memcmp(shape, nb_shape(x) + lead, sizeof(int64_t) * (size_t)ndim) == 0);
    int n;
    int64_t bshape[NB_MAX_DIMS];
    if (!trailing &&
        (ndim > nb_ndim(x) ||
         !broadcast_shape("nb_sum_to", ndim, shape, nb_ndim(x), nb_shape(x), &n, bshape) ||
         memcmp(bshape, nb_shape(x), sizeof(int64_t) * (size_t)n) != 0)) {
        char b[NB_SHAPE_BUF];
        nb_set_error("nb_sum_to: cannot sum %s down to %s", SHAPE(x),
                     nb_shape_str(ndim, shape, b, sizeof b));
        return NULL;
    }
    nb_tensor *out = nb_zeros(ndim, shape);
    if (!out) return NULL;
    const float *px = nb_data(x);
    float *po = nb_data_mut(out);
    /* Only leading axes summed: x is rows of out's size, added in order.
     * The same sums, in the same order, as the general walk below, without
     * its index bookkeeping. */
    if (trailing) {
        int64_t inner = nb_numel(out), rows = inner ? nb_numel(x) / inner : 0;
        /* While x is small, eight columns at a time are summed in registers
         * down all the rows (each from its +0, row by row), then the rest
         * one column at a time: a row at a time through memory cost three
         * times as much for a bias of ten. A large x is read once, a row at
         * a time, as the columns would read it from memory twice. */
        const float *restrict src = px;
        float *restrict dst = po;
        if (nb_numel(x) > SUM_TO_IN_CACHE) {
            for (int64_t r = 0; r < rows; r++, src += inner)
                for (int64_t j = 0; j < inner; j++) dst[j] += src[j];
            return nb_record(out, &sum_to_op, 1, &x);
        }
        int64_t j0 = 0;
        for (; j0 + 8 <= inner; j0 += 8) {
            float acc[8];
            for (int l = 0; l < 8; l++) acc[l] = dst[j0 + l];
            for (int64_t r = 0; r < rows; r++)
                for (int l = 0; l < 8; l++) acc[l] += src[r * inner + j0 + l];
            for (int l = 0; l < 8; l++) dst[j0 + l] = acc[l];
        }
        for (; j0 < inner; j0++) {
            float acc = dst[j0];
            for (int64_t r = 0; r < rows; r++) acc += src[r * inner + j0];
            dst[j0] = acc;
        }
        return nb_record(out, &sum_to_op, 1, &x);
    }
    /* Walk x in order; the output offset uses out's strides seen through
     * x's shape (0 along summed axes). Summation order is fixed, so the
     * result is the same bit for bit on every run. */
    nb_bcast p = {.ndim = nb_ndim(x), .numel = nb_numel(x)};
    memcpy(p.shape, nb_shape(x), sizeof(int64_t) * (size_t)p.ndim);
    bcast_strides(out, p.ndim, p.shape, p.stride_a);
    NB_BCAST_FOR(&p, i, io, ib, po[io] += px[i]);
    return nb_record(out, &sum_to_op, 1, &x);
}

/* ---- binary ops ----------------------------------------------------------------- */

typedef enum { ADD, SUB, MUL, DIV, POW, MAX, MIN } binop;

static nb_tensor *binary(const char *who, binop kind, const nb_op *op, nb_tensor *a, nb_tensor *b) {
    if (!a || !b) return NULL;
    nb_bcast p;
    nb_tensor *out = nb_bcast_output(who, a, b, &p);
    if (!out) return NULL;
    const float *pa = nb_data(a), *pb = nb_data(b);
    float *po = nb_data_mut(out);
    switch (kind) {
    case ADD: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] + pb[ib]); break;
    case SUB: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] - pb[ib]); break;
    case MUL: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] * pb[ib]); break;
    case DIV: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] / pb[ib]); break;
    case POW: NB_BCAST_FOR(&p, i, ia, ib, po[i] = powf(pa[ia], pb[ib])); break;
    case MAX: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] >= pb[ib] || isnan(pa[ia]) ? pa[ia] : pb[ib]); break;
    case MIN: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] <= pb[ib] || isnan(pa[ia]) ? pa[ia] : pb[ib]); break;
    }
    nb_tensor *in[2] = {a, b};
    return nb_record(out, op, 2, in);
}

/* Reduces a gradient computed at the broadcast shape to input i's shape. */
static nb_tensor *to_input(nb_tensor *out, int i, nb_tensor *g) {
    nb_tensor *x = nb_input(out, i);
    return nb_sum_to(g, nb_ndim(x), nb_shape(x));
}

/* Forward mode: the sum of an operand's term and the other's, either of
 * which may be absent (a zero tangent), brought to the output's shape (a
 * lone term has its operand's shape, which may be broadcast). */
static nb_tensor *to_output(nb_tensor *out, nb_tensor *da_term, nb_tensor *db_term) {
    nb_tensor *t = da_term && db_term ? nb_add(da_term, db_term) : da_term ? da_term : db_term;
    if (!t || nb_same_shape(t, out)) return t;
    return nb_expand(t, nb_ndim(out), nb_shape(out));
}

/* d(a+b) = da + db */
static void add_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    if (nb_needs_input_grad(out, 0)) gx[0] = to_input(out, 0, g);
    if (nb_needs_input_grad(out, 1)) gx[1] = to_input(out, 1, g);
}
static nb_tensor *add_jvp(nb_tensor *out, nb_tensor *const *t) { return to_output(out, t[0], t[1]); }
static const nb_op add_op = {"add", add_backward, add_jvp};
nb_tensor *nb_add(nb_tensor *a, nb_tensor *b) { return binary("nb_add", ADD, &add_op, a, b); }

/* d(a-b) = da - db */
static void sub_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    if (nb_needs_input_grad(out, 0)) gx[0] = to_input(out, 0, g);
    if (nb_needs_input_grad(out, 1)) gx[1] = to_input(out, 1, nb_neg(g));
}
static nb_tensor *sub_jvp(nb_tensor *out, nb_tensor *const *t) {
    return to_output(out, t[0], t[1] ? nb_neg(t[1]) : NULL);
}
static const nb_op sub_op = {"sub", sub_backward, sub_jvp};
nb_tensor *nb_sub(nb_tensor *a, nb_tensor *b) { return binary("nb_sub", SUB, &sub_op, a, b); }

/* d(ab) = b da + a db */
static void mul_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1);
    if (nb_needs_input_grad(out, 0)) gx[0] = to_input(out, 0, nb_mul(g, b));
    if (nb_needs_input_grad(out, 1)) gx[1] = to_input(out, 1, nb_mul(g, a));
}
static nb_tensor *mul_jvp(nb_tensor *out, nb_tensor *const *t) {
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1);
    return to_output(out, t[0] ? nb_mul(t[0], b) : NULL, t[1] ? nb_mul(a, t[1]) : NULL);
}
static const nb_op mul_op = {"mul", mul_backward, mul_jvp};
nb_tensor *nb_mul(nb_tensor *a, nb_tensor *b) {
    nb_tensor *out = binary("nb_mul", MUL, &mul_op, a, b);
    nb_save(out, a);
    nb_save(out, b);
    return out;
}

/* d(a/b) = da / b - (a/b) db / b */
static void div_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *b = nb_saved(out, 0), *y = nb_saved(out, 1);
    nb_tensor *g_over_b = nb_div(g, b);
    if (nb_needs_input_grad(out, 0)) gx[0] = to_input(out, 0, g_over_b);
    if (nb_needs_input_grad(out, 1)) gx[1] = to_input(out, 1, nb_neg(nb_mul(g_over_b, y)));
}
static nb_tensor *div_jvp(nb_tensor *out, nb_tensor *const *t) {
    nb_tensor *b = nb_saved(out, 0), *y = nb_saved(out, 1);
    nb_tensor *num = to_output(out, t[0], t[1] ? nb_neg(nb_mul(y, t[1])) : NULL);
    return nb_div(num, b);
}
static const nb_op div_op = {"div", div_backward, div_jvp};
nb_tensor *nb_div(nb_tensor *a, nb_tensor *b) {
    nb_tensor *out = binary("nb_div", DIV, &div_op, a, b);
    nb_save(out, b);
    nb_save(out, out);
    return out;
}

/* d(a^b) = b a^(b-1) da + a^b log(a) db
 * Each product is 0 * inf at an edge where the derivative is in fact 0:
 * b == 0 for da (0 * a^-1 at a = 0), a == 0 with b >= 0 for db (a^b * log 0).
 * Those elements are set to 0 with where(), as PyTorch does. */
static nb_tensor *pow_da(nb_tensor *out) { /* d(a^b)/da */
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1), *zero = nb_scalar(0.0f);
    nb_tensor *d = nb_mul(b, nb_pow(a, nb_sub_scalar(b, 1)));
    return nb_where(nb_eq(b, zero), zero, d);
}
static nb_tensor *pow_db(nb_tensor *out) { /* d(a^b)/db */
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1), *zero = nb_scalar(0.0f);
    nb_tensor *d = nb_mul(nb_saved(out, 2), nb_log(a));
    nb_tensor *edge = nb_mul(nb_eq(a, zero), nb_ge(b, zero));
    return nb_where(edge, zero, d);
}
static void pow_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    if (nb_needs_input_grad(out, 0)) gx[0] = to_input(out, 0, nb_mul(g, pow_da(out)));
    if (nb_needs_input_grad(out, 1)) gx[1] = to_input(out, 1, nb_mul(g, pow_db(out)));
}
static nb_tensor *pow_jvp(nb_tensor *out, nb_tensor *const *t) {
    return to_output(out, t[0] ? nb_mul(t[0], pow_da(out)) : NULL,
                     t[1] ? nb_mul(t[1], pow_db(out)) : NULL);
}
static const nb_op pow_op = {"pow", pow_backward, pow_jvp};
nb_tensor *nb_pow(nb_tensor *a, nb_tensor *b) {
    nb_tensor *out = binary("nb_pow", POW, &pow_op, a, b);
    nb_save(out, a);
    nb_save(out, b);
    nb_save(out, out);
    return out;
}

/* maximum/minimum: the gradient goes to the selected operand, split evenly
 * on ties (the mean of the one-sided derivatives), as PyTorch does: an
 * operand gets g unless the other one wins, g/2 on a tie. A NaN wins and
 * loses nothing (every comparison with it is false), so where either is
 * NaN both operands get g, again as in PyTorch. The masks are constants:
 * their own derivative is zero almost everywhere. */
static inline float select_weight(float mine, float other, bool take_larger) {
    bool loses = take_larger ? mine < other : mine > other;
    return mine == other ? 0.5f : loses ? 0.0f : 1.0f;
}

/* The weight of a's gradient, or of b's when for_b. */
static nb_tensor *select_mask(nb_tensor *a, nb_tensor *b, bool take_larger, bool for_b) {
    nb_bcast p;
    nb_tensor *m = nb_bcast_output(take_larger ? "nb_maximum" : "nb_minimum", a, b, &p);
    if (!m) return NULL;
    const float *pa = nb_data(a), *pb = nb_data(b);
    float *pm = nb_data_mut(m);
    if (for_b) NB_BCAST_FOR(&p, i, ia, ib, pm[i] = select_weight(pb[ib], pa[ia], take_larger));
    else NB_BCAST_FOR(&p, i, ia, ib, pm[i] = select_weight(pa[ia], pb[ib], take_larger));
    return m;
}

static void minmax_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx, bool larger) {
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1);
    if (!a || !b) return;
    if (nb_needs_input_grad(out, 0)) gx[0] = to_input(out, 0, nb_mul(g, select_mask(a, b, larger, false)));
    if (nb_needs_input_grad(out, 1)) gx[1] = to_input(out, 1, nb_mul(g, select_mask(a, b, larger, true)));
}
static void maximum_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    minmax_backward(out, g, gx, true);
}
static void minimum_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    minmax_backward(out, g, gx, false);
}
/* dy = w_a da + w_b db with the same weights: the mean of the one-sided
 * derivatives on a tie, as in backward. */
static nb_tensor *minmax_jvp(nb_tensor *out, nb_tensor *const *t, bool larger) {
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1);
    if (!a || !b) return NULL;
    return to_output(out, t[0] ? nb_mul(t[0], select_mask(a, b, larger, false)) : NULL,
                     t[1] ? nb_mul(t[1], select_mask(a, b, larger, true)) : NULL);
}
static nb_tensor *maximum_jvp(nb_tensor *out, nb_tensor *const *t) { return minmax_jvp(out, t, true); }
static nb_tensor *minimum_jvp(nb_tensor *out, nb_tensor *const *t) { return minmax_jvp(out, t, false); }
static const nb_op maximum_op = {"maximum", maximum_backward, maximum_jvp};
static const nb_op minimum_op = {"minimum", minimum_backward, minimum_jvp};

nb_tensor *nb_maximum(nb_tensor *a, nb_tensor *b) {
    nb_tensor *out = binary("nb_maximum", MAX, &maximum_op, a, b);
    nb_save(out, a);
    nb_save(out, b);
    return out;
}

nb_tensor *nb_minimum(nb_tensor *a, nb_tensor *b) {
    nb_tensor *out = binary("nb_minimum", MIN, &minimum_op, a, b);
    nb_save(out, a);
    nb_save(out, b);
    return out;
}

/* ---- scalar operand ------------------------------------------------------------------
 * x (any shape) -> out (same shape); s is kept as attribute 0. Each Jacobian
 * is diagonal, so the forward rule is the backward applied to the tangent
 * (nb_symmetric_jvp). */

typedef enum { S_ADD, S_MUL, S_RDIV, S_POW, S_RPOW, S_MAX, S_MIN } scalop;

static nb_tensor *scalar_op(scalop kind, const nb_op *op, nb_tensor *x, float s) {
    if (!x) return NULL;
    nb_tensor *out = nb_empty_like(x);
    if (!out) return NULL;
    const float *px = nb_data(x);
    float *po = nb_data_mut(out);
    int64_t n = nb_numel(x);
    switch (kind) {
    case S_ADD: for (int64_t i = 0; i < n; i++) po[i] = px[i] + s; break;
    case S_MUL: for (int64_t i = 0; i < n; i++) po[i] = px[i] * s; break;
    case S_RDIV: for (int64_t i = 0; i < n; i++) po[i] = s / px[i]; break;
    case S_POW:
        if (s == 2.0f) for (int64_t i = 0; i < n; i++) po[i] = px[i] * px[i];
        else for (int64_t i = 0; i < n; i++) po[i] = powf(px[i], s);
        break;
    case S_RPOW: for (int64_t i = 0; i < n; i++) po[i] = powf(s, px[i]); break;
    case S_MAX: for (int64_t i = 0; i < n; i++) po[i] = px[i] >= s || isnan(px[i]) ? px[i] : s; break;
    case S_MIN: for (int64_t i = 0; i < n; i++) po[i] = px[i] <= s || isnan(px[i]) ? px[i] : s; break;
    }
    out = nb_record(out, op, 1, &x);
    nb_set_attr(out, 0, s);
    return out;
}

static float attr_s(nb_tensor *out) { return (float)nb_attr(out, 0); }

/* d(x+s) = dx */
static void add_scalar_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    (void)out;
    gx[0] = g;
}
static const nb_op add_scalar_op = {"add_scalar", add_scalar_backward, nb_symmetric_jvp};
nb_tensor *nb_add_scalar(nb_tensor *x, float s) { return scalar_op(S_ADD, &add_scalar_op, x, s); }
nb_tensor *nb_sub_scalar(nb_tensor *x, float s) { return scalar_op(S_ADD, &add_scalar_op, x, -s); }

/* d(sx) = s dx */
static void mul_scalar_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul_scalar(g, attr_s(out));
}
static const nb_op mul_scalar_op = {"mul_scalar", mul_scalar_backward, nb_symmetric_jvp};
nb_tensor *nb_mul_scalar(nb_tensor *x, float s) { return scalar_op(S_MUL, &mul_scalar_op, x, s); }
nb_tensor *nb_div_scalar(nb_tensor *x, float s) {
    if (!x) return NULL;
    if (s == 0) { /* x * (1/0) would turn 0/0 into 0*inf; divide exactly instead */
        nb_composite_begin();
        return nb_composite_end(nb_div(x, nb_scalar(0.0f)));
    }
    return scalar_op(S_MUL, &mul_scalar_op, x, 1.0f / s);
}

/* s - x: a negation and a shift */
nb_tensor *nb_rsub_scalar(nb_tensor *x, float s) {
    if (!x) return NULL;
    nb_composite_begin();
    return nb_composite_end(nb_add_scalar(nb_neg(x), s));
}

/* d(s/x) = -(s/x) / x dx */
static void rdiv_scalar_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(out, 0), *y = nb_saved(out, 1);
    gx[0] = nb_neg(nb_mul(g, nb_div(y, x)));
}
static const nb_op rdiv_scalar_op = {"rdiv_scalar", rdiv_scalar_backward, nb_symmetric_jvp};
nb_tensor *nb_rdiv_scalar(nb_tensor *x, float s) {
    nb_tensor *out = scalar_op(S_RDIV, &rdiv_scalar_op, x, s);
    nb_save(out, x);
    nb_save(out, out);
    return out;
}

/* d(x^s) = s x^(s-1) dx; x^0 is constant (0 * x^-1 would be nan at x = 0) */
static void pow_scalar_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(out, 0);
    float s = attr_s(out);
    if (s == 0.0f) {
        gx[0] = nb_mul_scalar(g, 0.0f);
        return;
    }
    nb_tensor *d = s == 2.0f ? nb_mul_scalar(x, 2.0f) : nb_mul_scalar(nb_pow_scalar(x, s - 1), s);
    gx[0] = nb_mul(g, d);
}
static const nb_op pow_scalar_op = {"pow_scalar", pow_scalar_backward, nb_symmetric_jvp};
nb_tensor *nb_pow_scalar(nb_tensor *x, float s) {
    nb_tensor *out = scalar_op(S_POW, &pow_scalar_op, x, s);
    nb_save(out, x);
    return out;
}

/* d(s^x) = s^x log(s) dx */
static void rpow_scalar_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *y = nb_saved(out, 0);
    gx[0] = nb_mul(g, nb_mul_scalar(y, logf(attr_s(out))));
}
static const nb_op rpow_scalar_op = {"rpow_scalar", rpow_scalar_backward, nb_symmetric_jvp};
nb_tensor *nb_rpow_scalar(nb_tensor *x, float s) {
    if (x && !(s > 0)) {
        nb_set_error("nb_rpow_scalar: base %g must be positive", (double)s);
        return NULL;
    }
    nb_tensor *out = scalar_op(S_RPOW, &rpow_scalar_op, x, s);
    nb_save(out, out);
    return out;
}

/* max(x, s): the gradient unless s wins (x < s), half of it where x == s;
 * a NaN x gets all of it, as in maximum of two tensors */
static nb_tensor *scalar_mask(nb_tensor *x, float s, bool larger) {
    nb_tensor *m = nb_empty_like(x);
    if (!m) return NULL;
    const float *px = nb_data(x);
    float *pm = nb_data_mut(m);
    for (int64_t i = 0; i < nb_numel(x); i++) pm[i] = select_weight(px[i], s, larger);
    return m;
}
static void maximum_scalar_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(out, 0);
    gx[0] = x ? nb_mul(g, scalar_mask(x, attr_s(out), true)) : NULL;
}
static void minimum_scalar_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(out, 0);
    gx[0] = x ? nb_mul(g, scalar_mask(x, attr_s(out), false)) : NULL;
}
static const nb_op maximum_scalar_op = {"maximum_scalar", maximum_scalar_backward, nb_symmetric_jvp};
static const nb_op minimum_scalar_op = {"minimum_scalar", minimum_scalar_backward, nb_symmetric_jvp};

nb_tensor *nb_maximum_scalar(nb_tensor *x, float s) {
    nb_tensor *out = scalar_op(S_MAX, &maximum_scalar_op, x, s);
    nb_save(out, x);
    return out;
}
nb_tensor *nb_minimum_scalar(nb_tensor *x, float s) {
    nb_tensor *out = scalar_op(S_MIN, &minimum_scalar_op, x, s);
    nb_save(out, x);
    return out;
}
