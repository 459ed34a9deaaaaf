/* shape.c — ops that rearrange elements without computing new values:
 * reshape and its relatives (flatten, squeeze, unsqueeze), which share the
 * input's storage, and the copying ones (clone, slice, concat, stack).
 *
 * Shapes: reshape x (S) -> out (T) with numel(S) == numel(T); its gradient
 * is the output gradient reshaped back to S.
 */
#include "ops_internal.h"

#include <stdlib.h> /* malloc, for nb_stack of many tensors */

/* ---- reshape family: views of the same storage ------------------------------ */

static void reshape_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(out, 0);
    gx[0] = nb_reshape(g, nb_ndim(x), nb_shape(x));
}
/* Every op of this file is linear: its forward rule applies the op to the
 * tangent, with the same shape, bounds or axis. */
static nb_tensor *reshape_jvp(nb_tensor *out, nb_tensor *const *t) {
    return t[0] ? nb_reshape(t[0], nb_ndim(out), nb_shape(out)) : NULL;
}
static const nb_op reshape_op = {"reshape", reshape_backward, reshape_jvp};

nb_tensor *nb_reshape(nb_tensor *x, int ndim, const int64_t *shape) {
    if (!x) return NULL;
    char want[NB_SHAPE_BUF];
    if (ndim < 0 || ndim > NB_MAX_DIMS || (ndim > 0 && !shape)) {
        nb_set_error("nb_reshape: %d dimensions requested for %s; nabla tensors have 0 to %d",
                     ndim, SHAPE(x), NB_MAX_DIMS);
        return NULL;
    }
    /* known: the product of the given nonzero sizes (the -1 aside), which
     * must fit in int64 whether or not a zero makes the count 0. */
    int64_t resolved[NB_MAX_DIMS], known = 1;
    int infer = -1;
    bool zero = false;
    for (int d = 0; d < ndim; d++) {
        resolved[d] = shape[d];
        if (shape[d] == -1 && infer < 0) infer = d;
        else if (shape[d] < 0) {
            nb_set_error("nb_reshape: invalid shape %s (one -1 at most, no other negative size)",
                         nb_shape_str(ndim, shape, want, sizeof want));
            return NULL;
        } else if (shape[d] == 0) zero = true;
        else if (nb__mul_overflows(known, shape[d], &known)) {
            nb_set_error("nb_reshape: invalid shape %s for %s: the product of its nonzero "
                         "dimensions exceeds %lld",
                         nb_shape_str(ndim, shape, want, sizeof want), SHAPE(x),
                         (long long)INT64_MAX);
            return NULL;
        }
    }
    if (infer >= 0) {
        if (zero || nb_numel(x) % known != 0) {
            nb_set_error("nb_reshape: cannot reshape %s (%lld elements) to %s", SHAPE(x),
                         (long long)nb_numel(x), nb_shape_str(ndim, shape, want, sizeof want));
            return NULL;
        }
        resolved[infer] = nb_numel(x) / known;
        known = resolved[infer] > 0 ? known * resolved[infer] : 0; /* numel(x): fits */
    }
    if (zero) known = 0;
    if (known != nb_numel(x)) {
        nb_set_error("nb_reshape: cannot reshape %s (%lld elements) to %s (%lld elements)",
                     SHAPE(x), (long long)nb_numel(x),
                     nb_shape_str(ndim, shape, want, sizeof want), (long long)known);
        return NULL;
    }
    return nb_record(nb_as_shape(x, ndim, resolved), &reshape_op, 1, &x);
}

nb_tensor *nb_flatten(nb_tensor *x, int start_axis, int end_axis) {
    if (!x) return NULL;
    int n = nb_ndim(x), s, e;
    if (n == 0) return nb_reshape(x, NB_SHAPE(1));
    if (!nb_norm_axis("nb_flatten", start_axis, n, &s) || !nb_norm_axis("nb_flatten", end_axis, n, &e))
        return NULL;
    if (s > e) {
        nb_set_error("nb_flatten: start axis %d comes after end axis %d", start_axis, end_axis);
        return NULL;
    }
    int64_t shape[NB_MAX_DIMS];
    int m = 0;
    for (int d = 0; d < s; d++) shape[m++] = nb_shape(x)[d];
    shape[m] = 1;
    for (int d = s; d <= e; d++)
        if (nb__mul_overflows(shape[m], nb_shape(x)[d], &shape[m])) {
            nb_set_error("nb_flatten: axes %d to %d of %s multiply to more than %lld", start_axis,
                         end_axis, SHAPE(x), (long long)INT64_MAX);
            return NULL;
        }
    m++;
    for (int d = e + 1; d < n; d++) shape[m++] = nb_shape(x)[d];
    return nb_reshape(x, m, shape);
}

nb_tensor *nb_squeeze(nb_tensor *x, int axis) {
    if (!x) return NULL;
    int a;
    if (!nb_norm_axis("nb_squeeze", axis, nb_ndim(x), &a)) return NULL;
    if (nb_shape(x)[a] != 1) {
        nb_set_error("nb_squeeze: axis %d of %s has size %lld, not 1", axis, SHAPE(x),
                     (long long)nb_shape(x)[a]);
        return NULL;
    }
    int64_t shape[NB_MAX_DIMS];
    int m = 0;
    for (int d = 0; d < nb_ndim(x); d++)
        if (d != a) shape[m++] = nb_shape(x)[d];
    return nb_reshape(x, m, shape);
}

nb_tensor *nb_unsqueeze(nb_tensor *x, int axis) {
    if (!x) return NULL;
    int n = nb_ndim(x), a;
    if (n == NB_MAX_DIMS) {
        nb_set_error("nb_unsqueeze: %s already has %d dimensions", SHAPE(x), NB_MAX_DIMS);
        return NULL;
    }
    if (!nb_norm_axis("nb_unsqueeze", axis, n + 1, &a)) return NULL;
    int64_t shape[NB_MAX_DIMS];
    for (int d = 0, m = 0; d <= n; d++) shape[d] = d == a ? 1 : nb_shape(x)[m++];
    return nb_reshape(x, n + 1, shape);
}


/* ---- copies: clone, slice, concat, stack ---------------------------------------
 * These write a new tensor. Their gradients move values back to where they
 * came from without arithmetic, so every backward below is itself one of
 * these ops (or slice_scatter, the adjoint of slice) and can be
 * differentiated again:
 *
 *   clone          g
 *   slice          slice_scatter(g)       (g put back in zeros of x's shape)
 *   slice_scatter  slice(g)
 *   concat         slice(g) per input     (each input's own stretch of axis)
 *   stack          unsqueeze then concat  (its gradient is theirs)
 */

/* clone: x (S) -> out (S), a copy that does not share storage. */
static void clone_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    (void)out;
    gx[0] = g;
}
static nb_tensor *clone_jvp(nb_tensor *out, nb_tensor *const *t) {
    (void)out;
    return t[0];
}
static const nb_op clone_op = {"clone", clone_backward, clone_jvp};

nb_tensor *nb_clone(nb_tensor *x) {
    if (!x) return NULL;
    nb_tensor *out = nb_empty_like(x);
    if (!out) return NULL;
    if (nb_numel(x) > 0) memcpy(nb_data_mut(out), nb_data(x), sizeof(float) * (size_t)nb_numel(x));
    return nb_record(out, &clone_op, 1, &x);
}

/* The sizes before, along and after axis: a row-major tensor is then
 * outer x n x inner, and a slice along axis is a strided walk over n. */
static void split_at_axis(const nb_tensor *t, int axis, int64_t *outer, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= nb_shape(t)[d];
    for (int d = axis + 1; d < nb_ndim(t); d++) *inner *= nb_shape(t)[d];
}

/* Elements a Python slice start:stop:step of a clipped range holds. */
static int64_t slice_len(int64_t start, int64_t stop, int64_t step) {
    return stop > start ? (stop - start - 1) / step + 1 : 0;
}

/* slice and slice_scatter keep the same attributes, each the other's
 * backward: 0 axis, then start, stop and step. These are >= 0 once clipped
 * but may pass 2^53 along a huge axis of an empty tensor, beyond what a
 * double holds exactly, so each is kept as two attributes: its high 32 bits
 * (1, 2, 3) and its low 32 bits (4, 5, 6). */
static void set_bound_attr(nb_tensor *out, int k, int64_t v) {
    nb_set_attr(out, k, (double)(v >> 32));
    nb_set_attr(out, k + 3, (double)(v & 0xffffffff));
}

static int64_t bound_attr(const nb_tensor *out, int k) {
    return (int64_t)nb_attr(out, k) * ((int64_t)1 << 32) + (int64_t)nb_attr(out, k + 3);
}

static nb_tensor *set_slice_attrs(nb_tensor *out, int axis, int64_t start, int64_t stop,
                                  int64_t step) {
    nb_set_attr(out, 0, axis);
    set_bound_attr(out, 1, start);
    set_bound_attr(out, 2, stop);
    set_bound_attr(out, 3, step);
    return out;
}

/* slice_scatter: g (S with S[axis] = len) -> out (shape), zeros everywhere
 * except out[..., start:stop:step, ...] = g. The adjoint of slice, so
 * d(slice_scatter) = slice(g); start and stop are already clipped. */
static nb_tensor *slice_scatter(nb_tensor *g, int ndim, const int64_t *shape, int axis,
                                int64_t start, int64_t stop, int64_t step);

static void slice_scatter_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_slice(g, (int)nb_attr(out, 0), bound_attr(out, 1), bound_attr(out, 2),
                     bound_attr(out, 3));
}
static nb_tensor *slice_scatter_jvp(nb_tensor *out, nb_tensor *const *t) {
    return t[0] ? slice_scatter(t[0], nb_ndim(out), nb_shape(out), (int)nb_attr(out, 0),
                                bound_attr(out, 1), bound_attr(out, 2), bound_attr(out, 3))
                : NULL;
}
static const nb_op slice_scatter_op = {"slice_scatter", slice_scatter_backward, slice_scatter_jvp};

static nb_tensor *slice_scatter(nb_tensor *g, int ndim, const int64_t *shape, int axis,
                                int64_t start, int64_t stop, int64_t step) {
    if (!g) return NULL;
    int64_t len = slice_len(start, stop, step), want[NB_MAX_DIMS];
    for (int d = 0; d < ndim; d++) want[d] = d == axis ? len : shape[d];
    if (nb_ndim(g) != ndim || memcmp(nb_shape(g), want, sizeof(int64_t) * (size_t)ndim) != 0) {
        char b[NB_SHAPE_BUF];
        nb_set_error("nb_slice: the gradient has shape %s, expected %s", SHAPE(g),
                     nb_shape_str(ndim, want, b, sizeof b));
        return NULL;
    }
    nb_tensor *out = nb_zeros(ndim, shape);
    if (!out) return NULL;
    int64_t outer, inner, n = shape[axis];
    split_at_axis(out, axis, &outer, &inner);
    const float *pg = nb_data(g);
    float *po = nb_data_mut(out);
    if (nb_numel(g) == 0) outer = 0; /* nothing to place: skip the (maybe huge) walk */
    for (int64_t o = 0; o < outer; o++) {
        const float *src = pg + o * len * inner;
        float *dst = po + (o * n + start) * inner;
        if (step == 1) memcpy(dst, src, sizeof(float) * (size_t)(len * inner));
        else if (inner == 1)
            for (int64_t k = 0; k < len; k++) dst[k * step] = src[k];
        else
            for (int64_t k = 0; k < len; k++)
                memcpy(dst + k * step * inner, src + k * inner, sizeof(float) * (size_t)inner);
    }
    out = nb_record(out, &slice_scatter_op, 1, &g);
    return set_slice_attrs(out, axis, start, stop, step);
}

/* slice: x (..., n, ...) -> out (..., len, ...) with len the number of
 * indices in start:stop:step once clipped to [0, n]. */
static void slice_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(out, 0);
    gx[0] = slice_scatter(g, nb_ndim(x), nb_shape(x), (int)nb_attr(out, 0), bound_attr(out, 1),
                          bound_attr(out, 2), bound_attr(out, 3));
}
static nb_tensor *slice_jvp(nb_tensor *out, nb_tensor *const *t) {
    return t[0] ? nb_slice(t[0], (int)nb_attr(out, 0), bound_attr(out, 1), bound_attr(out, 2),
                           bound_attr(out, 3))
                : NULL;
}
static const nb_op slice_op = {"slice", slice_backward, slice_jvp};

/* Python's rule: a negative bound counts from the end, then both are
 * clipped to [0, n]. */
static int64_t clip_bound(int64_t b, int64_t n) {
    if (b < 0) b = b < -n ? 0 : b + n;
    return b > n ? n : b;
}

nb_tensor *nb_slice(nb_tensor *x, int axis, int64_t start, int64_t stop, int64_t step) {
    if (!x) return NULL;
    int a;
    if (!nb_norm_axis("nb_slice", axis, nb_ndim(x), &a)) return NULL;
    if (step < 1) {
        nb_set_error("nb_slice: step %lld along axis %d of %s must be at least 1", (long long)step,
                     axis, SHAPE(x));
        return NULL;
    }
    int64_t n = nb_shape(x)[a];
    start = clip_bound(start, n);
    stop = clip_bound(stop, n);
    int64_t len = slice_len(start, stop, step), shape[NB_MAX_DIMS];
    for (int d = 0; d < nb_ndim(x); d++) shape[d] = d == a ? len : nb_shape(x)[d];
    nb_tensor *out = nb__empty_for("nb_slice", nb_ndim(x), shape);
    if (!out) return NULL;
    int64_t outer, inner;
    split_at_axis(x, a, &outer, &inner);
    const float *px = nb_data(x);
    float *po = nb_data_mut(out);
    if (nb_numel(out) == 0) outer = 0; /* nothing to copy: skip the (maybe huge) walk */
    for (int64_t o = 0; o < outer; o++) {
        const float *src = px + (o * n + start) * inner;
        float *dst = po + o * len * inner;
        if (step == 1) memcpy(dst, src, sizeof(float) * (size_t)(len * inner));
        else if (inner == 1)
            for (int64_t k = 0; k < len; k++) dst[k] = src[k * step];
        else
            for (int64_t k = 0; k < len; k++)
                memcpy(dst + k * inner, src + k * step * inner, sizeof(float) * (size_t)inner);
    }
    out = nb_record(out, &slice_op, 1, &x);
    return set_slice_attrs(out, a, start, stop, step);
}

/* concat: xs[i] (..., n_i, ...) -> out (..., sum n_i, ...); every other
 * axis must agree. Input i's gradient is its stretch of g along axis. */
static void concat_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    int axis = (int)nb_attr(out, 0);
    int64_t offset = 0;
    for (int i = 0; i < nb_num_inputs(out); i++) {
        int64_t size = nb_shape(nb_input(out, i))[axis];
        if (nb_needs_input_grad(out, i)) gx[i] = nb_slice(g, axis, offset, offset + size, 1);
        offset += size;
    }
}
/* The inputs' tangents concatenated, zeros standing in for absent ones. */
static nb_tensor *concat_jvp(nb_tensor *out, nb_tensor *const *t) {
    int n = nb_num_inputs(out);
    nb_tensor *inline_parts[8], **parts = n <= 8 ? inline_parts : nb_malloc((size_t)n * sizeof *parts);
    if (!parts) {
        nb_set_error("nb_concat: out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) parts[i] = t[i] ? t[i] : nb_zeros_like(nb_input(out, i));
    nb_tensor *r = nb_concat(n, parts, (int)nb_attr(out, 0));
    if (parts != inline_parts) nb_free(parts);
    return r;
}
static const nb_op concat_op = {"concat", concat_backward, concat_jvp};

/* who: the public function called, nb_concat or nb_stack (whose inputs,
 * checked already, can fail here only for want of memory). */
static nb_tensor *concat_for(const char *who, int n, nb_tensor *const *xs, int axis) {
    if (n <= 0 || !xs) {
        nb_set_error("%s: needs at least one tensor, got %d%s", who, n, xs ? "" : " (xs is NULL)");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) return NULL;
    int a, ndim = nb_ndim(xs[0]);
    if (!nb_norm_axis(who, axis, ndim, &a)) return NULL;
    int64_t shape[NB_MAX_DIMS];
    memcpy(shape, nb_shape(xs[0]), sizeof(int64_t) * (size_t)ndim);
    shape[a] = 0;
    for (int i = 0; i < n; i++) {
        bool ok = nb_ndim(xs[i]) == ndim;
        for (int d = 0; ok && d < ndim; d++)
            ok = d == a || nb_shape(xs[i])[d] == shape[d];
        if (!ok) {
            nb_set_error("%s: input %d has shape %s and input 0 has shape %s; they must "
                         "match except along axis %d",
                         who, i, SHAPE(xs[i]), SHAPE(xs[0]), axis);
            return NULL;
        }
        if (nb__add_overflows(shape[a], nb_shape(xs[i])[a], &shape[a])) {
            nb_set_error("%s: the sizes along axis %d add up to more than %lld at input %d "
                         "(of shape %s)",
                         who, axis, (long long)INT64_MAX, i, SHAPE(xs[i]));
            return NULL;
        }
    }
    nb_tensor *out = nb__empty_for(who, ndim, shape);
    if (!out) return NULL;
    int64_t outer, inner;
    split_at_axis(out, a, &outer, &inner);
    float *po = nb_data_mut(out);
    if (nb_numel(out) == 0) outer = 0; /* nothing to copy: skip the (maybe huge) walk */
    /* Each output row along outer is the inputs' rows laid end to end. */
    for (int64_t o = 0; o < outer; o++)
        for (int i = 0; i < n; i++) {
            int64_t row = nb_shape(xs[i])[a] * inner;
            memcpy(po, nb_data(xs[i]) + o * row, sizeof(float) * (size_t)row);
            po += row;
        }
    out = nb_record(out, &concat_op, n, xs);
    nb_set_attr(out, 0, a);
    return out;
}

nb_tensor *nb_concat(int n, nb_tensor *const *xs, int axis) {
    return concat_for("nb_concat", n, xs, axis);
}

/* stack: n tensors (S) -> out (S with n inserted at axis). Each input gets
 * a new axis of size 1 and the views are concatenated along it, so the
 * graph holds reshape and concat nodes and needs no backward of its own. */
nb_tensor *nb_stack(int n, nb_tensor *const *xs, int axis) {
    if (n <= 0 || !xs) {
        nb_set_error("nb_stack: needs at least one tensor, got %d%s", n, xs ? "" : " (xs is NULL)");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) return NULL;
    int ndim = nb_ndim(xs[0]);
    int a = axis < 0 ? axis + ndim + 1 : axis;
    if (a < 0 || a > ndim) {
        nb_set_error("nb_stack: axis %d is out of range for stacking tensors of shape %s "
                     "(from %d to %d)",
                     axis, SHAPE(xs[0]), -ndim - 1, ndim);
        return NULL;
    }
    if (ndim == NB_MAX_DIMS) {
        nb_set_error("nb_stack: inputs of shape %s already have %d dimensions", SHAPE(xs[0]),
                     NB_MAX_DIMS);
        return NULL;
    }
    for (int i = 1; i < n; i++)
        if (!nb_same_shape(xs[i], xs[0])) {
            nb_set_error("nb_stack: input %d has shape %s and input 0 has shape %s; stacked "
                         "tensors must have the same shape",
                         i, SHAPE(xs[i]), SHAPE(xs[0]));
            return NULL;
        }
    /* The result's shape, checked here so that a refusal names nb_stack. */
    int64_t shape[NB_MAX_DIMS], numel;
    for (int d = 0, k = 0; d <= ndim; d++) shape[d] = d == a ? n : nb_shape(xs[0])[k++];
    if (!nb__shape_numel(ndim + 1, shape, &numel)) {
        char b[NB_SHAPE_BUF];
        nb_set_error("nb_stack: stacking %d tensors of shape %s gives %s, whose nonzero dimensions "
                     "multiply to more than %lld",
                     n, SHAPE(xs[0]), nb_shape_str(ndim + 1, shape, b, sizeof b),
                     (long long)INT64_MAX);
        return NULL;
    }
    nb_tensor *few[16], **views = n <= 16 ? few : nb_malloc(sizeof(nb_tensor *) * (size_t)n);
    if (!views) {
        nb_set_error("nb_stack: out of memory for %d tensors", n);
        return NULL;
    }
    /* The views are temporaries: a scope of our own frees them unless the
     * graph of the result holds them. */
    nb_scope_begin();
    for (int i = 0; i < n; i++) views[i] = nb_unsqueeze(xs[i], a);
    nb_tensor *out = nb_escape(concat_for("nb_stack", n, views, a));
    nb_scope_end();
    if (views != few) nb_free(views);
    return out;
}
