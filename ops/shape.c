/* shape.c — ops that rearrange elements without computing new values:
 * reshape and its relatives (flatten, squeeze, unsqueeze), which share the
 * input's storage, and the copying ones (clone, slice, concat, stack).
 *
 * Shapes: reshape x (S) -> out (T) with numel(S) == numel(T); its gradient
 * is the output gradient reshaped back to S.
 */
#include "ops_internal.h"

/* ---- reshape family: views of the same storage ------------------------------ */

static void reshape_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(out, 0);
    gx[0] = nb_reshape(g, nb_ndim(x), nb_shape(x));
}
static const nb_op reshape_op = {"reshape", reshape_backward};

nb_tensor *nb_reshape(nb_tensor *x, int ndim, const int64_t *shape) {
    if (!x) return NULL;
    char want[NB_SHAPE_BUF];
    if (ndim < 0 || ndim > NB_MAX_DIMS || (ndim > 0 && !shape)) {
        nb_set_error("nb_reshape: %d dimensions requested for %s; nabla tensors have 0 to %d",
                     ndim, SHAPE(x), NB_MAX_DIMS);
        return NULL;
    }
    int64_t resolved[NB_MAX_DIMS], known = 1;
    int infer = -1;
    for (int d = 0; d < ndim; d++) {
        resolved[d] = shape[d];
        if (shape[d] == -1 && infer < 0) infer = d;
        else if (shape[d] < 0) {
            nb_set_error("nb_reshape: invalid shape %s (one -1 at most, no other negative size)",
                         nb_shape_str(ndim, shape, want, sizeof want));
            return NULL;
        } else known *= shape[d];
    }
    if (infer >= 0) {
        if (known == 0 || nb_numel(x) % known != 0) {
            nb_set_error("nb_reshape: cannot reshape %s (%lld elements) to %s", SHAPE(x),
                         (long long)nb_numel(x), nb_shape_str(ndim, shape, want, sizeof want));
            return NULL;
        }
        resolved[infer] = nb_numel(x) / known;
        known *= resolved[infer];
    }
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
    for (int d = s; d <= e; d++) shape[m] *= nb_shape(x)[d];
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
    if (!nb_norm_axis("nb_unsqueeze", axis < 0 ? axis + n + 1 : axis, n + 1, &a)) return NULL;
    int64_t shape[NB_MAX_DIMS];
    for (int d = 0, m = 0; d <= n; d++) shape[d] = d == a ? 1 : nb_shape(x)[m++];
    return nb_reshape(x, n + 1, shape);
}
