/* index.c — ops that pick or place elements by position: index_select and
 * gather read x at positions held in an index tensor, index_add and
 * scatter_add add into a copy of x at such positions. Each pair is the
 * other's adjoint, so the backward of every op here is another op here and
 * all four can be differentiated to any order:
 *
 *   index_select(x, axis, i)       gx = index_add(zeros_like(x), axis, i, g)
 *   gather(x, axis, i)             gx = scatter_add(zeros_like(x), axis, i, g)
 *   index_add(x, axis, i, src)     gx = g,  gsrc = index_select(g, axis, i)
 *   scatter_add(x, axis, i, src)   gx = g,  gsrc = gather(g, axis, i)
 *
 * Indices are float tensors holding integers (exact up to 2^24), checked
 * before anything is read: a fractional, negative or too large value is an
 * error naming the value and where it sits, never an out-of-bounds access.
 * The index is saved for backward, not recorded as an input: it is a
 * position, not a value, and never receives a gradient. Repeated indices
 * accumulate, in index order, so results are the same on every run.
 */
#include "ops_internal.h"

/* Checks that every value of index is an integer in [0, size), where size is
 * x's length along axis; false and a message naming who, the value and its
 * position in index otherwise. */
static bool check_indices(const char *who, const nb_tensor *index, const nb_tensor *x, int axis) {
    int64_t size = nb_shape(x)[axis], n = nb_numel(index);
    const float *pi = nb_data(index);
    for (int64_t k = 0; k < n; k++) {
        float v = pi[k];
        /* in range first (false for NaN), then integral by a truncating
         * conversion, which is exact there: floorf is a library call on
         * baseline x86-64, and this loop runs over every index of every
         * gather and scatter (max-pooling's backward among them) */
        bool in_range = v >= 0 && (double)v < (double)size;
        bool integral = in_range ? (float)(int64_t)v == v : v == floorf(v);
        if (integral && in_range) continue;
        int64_t pos[NB_MAX_DIMS], rest = k;
        for (int d = nb_ndim(index) - 1; d >= 0; d--) {
            pos[d] = rest % nb_shape(index)[d];
            rest /= nb_shape(index)[d];
        }
        char where[NB_SHAPE_BUF];
        nb_shape_str(nb_ndim(index), pos, where, sizeof where);
        if (!integral)
            nb_set_error("%s: index value %g at position %s is not an integer", who, (double)v,
                         where);
        else
            nb_set_error("%s: index value %g at position %s is out of range [0, %lld) for axis %d "
                         "of x %s",
                         who, (double)v, where, (long long)size, axis, SHAPE(x));
        return false;
    }
    return true;
}

/* A 0-d x has one element and accepts axis 0 (or -1), as in PyTorch: each
 * op then works on x seen as [1] and gives a 0-d result where PyTorch does
 * (index_select, gather, index_add, scatter_add of a 0-d x are 0-d). The
 * index must hold one value, 0: checked here, under the caller's name. */
static bool is_scalar_case(const nb_tensor *x, int axis) {
    return nb_ndim(x) == 0 && (axis == 0 || axis == -1);
}

static bool check_scalar_index(const char *who, const nb_tensor *index, bool want_0d) {
    if (nb_numel(index) != 1 || nb_ndim(index) > (want_0d ? 0 : 1)) {
        nb_set_error("%s: a 0-d x takes %s index, got shape %s", who,
                     want_0d ? "a 0-d" : "a one-element", SHAPE(index));
        return false;
    }
    float v = nb_data(index)[0];
    if (v != 0) {
        nb_set_error("%s: index value %g is out of range [0, 1) for a 0-d x", who, (double)v);
        return false;
    }
    return true;
}

static nb_tensor *as_1(nb_tensor *t) { return nb_reshape(t, NB_SHAPE(1)); }
static nb_tensor *as_0d(nb_tensor *t) { return nb_reshape(t, NB_SHAPE()); }

/* The sizes before and after axis: x is then outer x n x inner. */
static void split_at_axis(const nb_tensor *t, int axis, int64_t *outer, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= nb_shape(t)[d];
    for (int d = axis + 1; d < nb_ndim(t); d++) *inner *= nb_shape(t)[d];
}

static nb_tensor *copy_of(nb_tensor *x) {
    nb_tensor *out = nb_empty_like(x);
    if (out && nb_numel(x) > 0)
        memcpy(nb_data_mut(out), nb_data(x), sizeof(float) * (size_t)nb_numel(x));
    return out;
}

/* ---- index_select and index_add: whole slices along axis -----------------------
 * index (m) or 0-d (m = 1)
 * index_select: x (..., n, ...) -> out (..., m, ...), out[..., k, ...] = x[..., index[k], ...]
 * index_add:    x (..., n, ...), src (..., m, ...) -> out (..., n, ...),
 *               out = x; out[..., index[k], ...] += src[..., k, ...] for k in order */

static bool check_index_1d(const char *who, const nb_tensor *x, int axis, const nb_tensor *index) {
    if (nb_ndim(index) > 1) {
        nb_set_error("%s: index must be 0-d or 1-D, got shape %s (x %s)", who, SHAPE(index),
                     SHAPE(x));
        return false;
    }
    return check_indices(who, index, x, axis);
}

static void index_select_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(out, 0), *index = nb_saved(out, 0);
    gx[0] = index ? nb_index_add(nb_zeros_like(x), (int)nb_attr(out, 0), index, g) : NULL;
}
/* The four ops are linear in x and src: each rule applies the op to the
 * tangents (zeros for an absent one), with the same index. */
static nb_tensor *index_select_jvp(nb_tensor *out, nb_tensor *const *t) {
    return t[0] ? nb_index_select(t[0], (int)nb_attr(out, 0), nb_saved(out, 0)) : NULL;
}
static const nb_op index_select_op = {"index_select", index_select_backward, index_select_jvp};

nb_tensor *nb_index_select(nb_tensor *x, int axis, nb_tensor *index) {
    if (!x || !index) return NULL;
    if (is_scalar_case(x, axis)) {
        if (!check_scalar_index("nb_index_select", index, false)) return NULL;
        nb_composite_begin();
        return nb_composite_end(as_0d(nb_index_select(as_1(x), 0, as_1(index))));
    }
    int a;
    if (!nb_norm_axis("nb_index_select", axis, nb_ndim(x), &a)) return NULL;
    if (!check_index_1d("nb_index_select", x, a, index)) return NULL;
    int64_t m = nb_numel(index), n = nb_shape(x)[a], shape[NB_MAX_DIMS], outer, inner;
    memcpy(shape, nb_shape(x), sizeof(int64_t) * (size_t)nb_ndim(x));
    shape[a] = m;
    nb_tensor *out = nb__empty_for("nb_index_select", nb_ndim(x), shape);
    if (!out) return NULL;
    split_at_axis(x, a, &outer, &inner);
    const float *px = nb_data(x), *pi = nb_data(index);
    float *po = nb_data_mut(out);
    if (nb_numel(out) == 0) outer = 0; /* nothing to copy: skip the (maybe huge) walk */
    for (int64_t o = 0; o < outer; o++) {
        const float *row = px + o * n * inner;
        float *dst = po + o * m * inner;
        if (inner == 1)
            for (int64_t k = 0; k < m; k++) dst[k] = row[(int64_t)pi[k]];
        else
            for (int64_t k = 0; k < m; k++)
                memcpy(dst + k * inner, row + (int64_t)pi[k] * inner, sizeof(float) * (size_t)inner);
    }
    out = nb_record(out, &index_select_op, 1, &x);
    nb_save(out, index);
    nb_set_attr(out, 0, a);
    return out;
}

static void index_add_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    if (nb_needs_input_grad(out, 0)) gx[0] = g;
    if (nb_needs_input_grad(out, 1))
        gx[1] = nb_index_select(g, (int)nb_attr(out, 0), nb_saved(out, 0));
}
static nb_tensor *index_add_jvp(nb_tensor *out, nb_tensor *const *t) {
    if (!t[1]) return t[0];
    nb_tensor *base = t[0] ? t[0] : nb_zeros_like(nb_input(out, 0));
    return nb_index_add(base, (int)nb_attr(out, 0), nb_saved(out, 0), t[1]);
}
static const nb_op index_add_op = {"index_add", index_add_backward, index_add_jvp};

nb_tensor *nb_index_add(nb_tensor *x, int axis, nb_tensor *index, nb_tensor *src) {
    if (!x || !index || !src) return NULL;
    if (is_scalar_case(x, axis)) {
        if (!check_scalar_index("nb_index_add", index, false)) return NULL;
        if (nb_ndim(src) != 0) {
            nb_set_error("nb_index_add: src has shape %s, expected [] (x is 0-d)", SHAPE(src));
            return NULL;
        }
        nb_composite_begin();
        return nb_composite_end(as_0d(nb_index_add(as_1(x), 0, as_1(index), as_1(src))));
    }
    if (nb_ndim(x) == 1 && nb_ndim(src) == 0 && nb_numel(index) == 1 && nb_ndim(index) <= 1) {
        /* one slice of a vector is one value: PyTorch takes a 0-d src here */
        nb_composite_begin();
        return nb_composite_end(nb_index_add(x, axis, index, as_1(src)));
    }
    int a;
    if (!nb_norm_axis("nb_index_add", axis, nb_ndim(x), &a)) return NULL;
    if (!check_index_1d("nb_index_add", x, a, index)) return NULL;
    int64_t m = nb_numel(index), n = nb_shape(x)[a], want[NB_MAX_DIMS], outer, inner;
    memcpy(want, nb_shape(x), sizeof(int64_t) * (size_t)nb_ndim(x));
    want[a] = m;
    if (nb_ndim(src) != nb_ndim(x) ||
        memcmp(nb_shape(src), want, sizeof(int64_t) * (size_t)nb_ndim(x)) != 0) {
        char b[NB_SHAPE_BUF];
        nb_set_error("nb_index_add: src has shape %s, expected %s (x %s with one slice along axis "
                     "%d per index of shape %s)",
                     SHAPE(src), nb_shape_str(nb_ndim(x), want, b, sizeof b), SHAPE(x), axis,
                     SHAPE(index));
        return NULL;
    }
    nb_tensor *out = copy_of(x);
    if (!out) return NULL;
    split_at_axis(x, a, &outer, &inner);
    const float *ps = nb_data(src), *pi = nb_data(index);
    float *po = nb_data_mut(out);
    if (nb_numel(src) == 0) outer = 0; /* nothing to add: skip the (maybe huge) walk */
    for (int64_t o = 0; o < outer; o++) {
        float *row = po + o * n * inner;
        const float *s = ps + o * m * inner;
        for (int64_t k = 0; k < m; k++) {
            float *dst = row + (int64_t)pi[k] * inner;
            const float *from = s + k * inner;
            for (int64_t j = 0; j < inner; j++) dst[j] += from[j];
        }
    }
    nb_tensor *in[2] = {x, src};
    out = nb_record(out, &index_add_op, 2, in);
    nb_save(out, index);
    nb_set_attr(out, 0, a);
    return out;
}

/* ---- gather and scatter_add: one element per index -----------------------------
 * index has x's rank and, on every axis but `axis`, no larger a size.
 * gather:      x (S), index (I) -> out (I), out[i][j][k] = x[index[i][j][k]][j][k] (axis 0)
 * scatter_add: x (S), index (I), src (I) -> out (S),
 *              out = x; out[index[i][j][k]][j][k] += src[i][j][k], in index order */

static bool check_index_nd(const char *who, const nb_tensor *x, int axis, const nb_tensor *index) {
    bool fits = nb_ndim(index) == nb_ndim(x);
    for (int d = 0; fits && d < nb_ndim(x); d++)
        fits = d == axis || nb_shape(index)[d] <= nb_shape(x)[d];
    if (!fits) {
        nb_set_error("%s: index of shape %s does not fit x of shape %s along axis %d: it needs "
                     "x's rank and no larger size on the other axes",
                     who, SHAPE(index), SHAPE(x), axis);
        return false;
    }
    return check_indices(who, index, x, axis);
}

/* A walk over index's shape giving, for each index element, the offset in
 * x of the same position with the axis coordinate left at 0; the index
 * value times x's stride along axis completes it. */
static void plan_walk(const nb_tensor *x, int axis, const nb_tensor *index, nb_bcast *p,
                      int64_t *axis_stride) {
    int64_t strides[NB_MAX_DIMS];
    nb_strides(nb_ndim(x), nb_shape(x), strides);
    *axis_stride = strides[axis];
    p->ndim = nb_ndim(index);
    p->numel = nb_numel(index);
    for (int d = 0; d < p->ndim; d++) {
        p->shape[d] = nb_shape(index)[d];
        p->stride_a[d] = d == axis ? 0 : strides[d];
        p->stride_b[d] = 0;
    }
}

static void gather_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(out, 0), *index = nb_saved(out, 0);
    gx[0] = index ? nb_scatter_add(nb_zeros_like(x), (int)nb_attr(out, 0), index, g) : NULL;
}
static nb_tensor *gather_jvp(nb_tensor *out, nb_tensor *const *t) {
    return t[0] ? nb_gather(t[0], (int)nb_attr(out, 0), nb_saved(out, 0)) : NULL;
}
static const nb_op gather_op = {"gather", gather_backward, gather_jvp};

nb_tensor *nb_gather(nb_tensor *x, int axis, nb_tensor *index) {
    if (!x || !index) return NULL;
    if (is_scalar_case(x, axis)) {
        if (!check_scalar_index("nb_gather", index, true)) return NULL;
        nb_composite_begin();
        return nb_composite_end(as_0d(nb_gather(as_1(x), 0, as_1(index))));
    }
    int a;
    if (!nb_norm_axis("nb_gather", axis, nb_ndim(x), &a)) return NULL;
    if (!check_index_nd("nb_gather", x, a, index)) return NULL;
    nb_tensor *out = nb_empty_like(index);
    if (!out) return NULL;
    nb_bcast p;
    int64_t sa;
    plan_walk(x, a, index, &p, &sa);
    const float *px = nb_data(x), *pi = nb_data(index);
    float *po = nb_data_mut(out);
    NB_BCAST_FOR(&p, i, ix, unused, po[i] = px[ix + (int64_t)pi[i] * sa]);
    out = nb_record(out, &gather_op, 1, &x);
    nb_save(out, index);
    nb_set_attr(out, 0, a);
    return out;
}

static void scatter_add_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    if (nb_needs_input_grad(out, 0)) gx[0] = g;
    if (nb_needs_input_grad(out, 1)) gx[1] = nb_gather(g, (int)nb_attr(out, 0), nb_saved(out, 0));
}
static nb_tensor *scatter_add_jvp(nb_tensor *out, nb_tensor *const *t) {
    if (!t[1]) return t[0];
    nb_tensor *base = t[0] ? t[0] : nb_zeros_like(nb_input(out, 0));
    return nb_scatter_add(base, (int)nb_attr(out, 0), nb_saved(out, 0), t[1]);
}
static const nb_op scatter_add_op = {"scatter_add", scatter_add_backward, scatter_add_jvp};

/* src must have index's shape (not merely contain it, as PyTorch allows):
 * then src's gradient, gather(g), has src's shape. */
nb_tensor *nb_scatter_add(nb_tensor *x, int axis, nb_tensor *index, nb_tensor *src) {
    if (!x || !index || !src) return NULL;
    if (is_scalar_case(x, axis)) {
        if (!check_scalar_index("nb_scatter_add", index, true)) return NULL;
        if (nb_ndim(src) != 0) {
            nb_set_error("nb_scatter_add: src has shape %s and index has shape []; they must "
                         "match (x is 0-d)", SHAPE(src));
            return NULL;
        }
        nb_composite_begin();
        return nb_composite_end(as_0d(nb_scatter_add(as_1(x), 0, as_1(index), as_1(src))));
    }
    int a;
    if (!nb_norm_axis("nb_scatter_add", axis, nb_ndim(x), &a)) return NULL;
    if (!nb_same_shape(src, index)) {
        nb_set_error("nb_scatter_add: src has shape %s and index has shape %s; they must match "
                     "(x %s)",
                     SHAPE(src), SHAPE(index), SHAPE(x));
        return NULL;
    }
    if (!check_index_nd("nb_scatter_add", x, a, index)) return NULL;
    nb_tensor *out = copy_of(x);
    if (!out) return NULL;
    nb_bcast p;
    int64_t sa;
    plan_walk(x, a, index, &p, &sa);
    const float *ps = nb_data(src), *pi = nb_data(index);
    float *po = nb_data_mut(out);
    NB_BCAST_FOR(&p, i, ix, unused, po[ix + (int64_t)pi[i] * sa] += ps[i]);
    nb_tensor *in[2] = {x, src};
    out = nb_record(out, &scatter_add_op, 2, in);
    nb_save(out, index);
    nb_set_attr(out, 0, a);
    return out;
}
