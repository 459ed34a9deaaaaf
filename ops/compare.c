/* compare.c — comparisons (eq, ne, lt, le, gt, ge and their scalar forms)
 * and selection (where).
 *
 * A comparison gives a mask of 0.0 and 1.0 with NumPy broadcasting, like
 * nb_add. It is piecewise constant, so its derivative is zero almost
 * everywhere: masks are never recorded and never require grad, which lets
 * backward formulas (relu, clamp, maximum...) build them freely without
 * growing the graph. where() is the differentiable way to use a mask: the
 * gradient of out = cond ? a : b flows to a where cond holds and to b
 * elsewhere, and not at all to cond.
 */
#include "ops_internal.h"

/* ---- comparisons ------------------------------------------------------------------
 * a, b (broadcastable) -> out (broadcast shape) of 0.0 and 1.0; no gradient.
 * NaN compares unequal to everything, as in IEEE: only ne is 1 there. */

typedef enum { EQ, NE, LT, LE, GT, GE } cmpop;

static nb_tensor *compare(const char *who, cmpop kind, nb_tensor *a, nb_tensor *b) {
    if (!a || !b) return NULL;
    nb_bcast p;
    nb_tensor *out = nb_bcast_output(who, a, b, &p);
    if (!out) return NULL;
    const float *pa = nb_data(a), *pb = nb_data(b);
    float *po = nb_data_mut(out);
    switch (kind) {
    case EQ: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] == pb[ib] ? 1.0f : 0.0f); break;
    case NE: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] != pb[ib] ? 1.0f : 0.0f); break;
    case LT: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] < pb[ib] ? 1.0f : 0.0f); break;
    case LE: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] <= pb[ib] ? 1.0f : 0.0f); break;
    case GT: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] > pb[ib] ? 1.0f : 0.0f); break;
    case GE: NB_BCAST_FOR(&p, i, ia, ib, po[i] = pa[ia] >= pb[ib] ? 1.0f : 0.0f); break;
    }
    return out; /* deliberately not recorded: a mask is a constant */
}

nb_tensor *nb_eq(nb_tensor *a, nb_tensor *b) { return compare("nb_eq", EQ, a, b); }
nb_tensor *nb_ne(nb_tensor *a, nb_tensor *b) { return compare("nb_ne", NE, a, b); }
nb_tensor *nb_lt(nb_tensor *a, nb_tensor *b) { return compare("nb_lt", LT, a, b); }
nb_tensor *nb_le(nb_tensor *a, nb_tensor *b) { return compare("nb_le", LE, a, b); }
nb_tensor *nb_gt(nb_tensor *a, nb_tensor *b) { return compare("nb_gt", GT, a, b); }
nb_tensor *nb_ge(nb_tensor *a, nb_tensor *b) { return compare("nb_ge", GE, a, b); }

/* x (any) -> out (same): the masks backward formulas use most, without
 * allocating a tensor for the scalar. */
nb_tensor *nb_gt_scalar(nb_tensor *x, float s) {
    if (!x) return NULL;
    nb_tensor *out = nb_empty_like(x);
    if (!out) return NULL;
    const float *px = nb_data(x);
    float *po = nb_data_mut(out);
    for (int64_t i = 0, n = nb_numel(x); i < n; i++) po[i] = px[i] > s ? 1.0f : 0.0f;
    return out;
}

nb_tensor *nb_lt_scalar(nb_tensor *x, float s) {
    if (!x) return NULL;
    nb_tensor *out = nb_empty_like(x);
    if (!out) return NULL;
    const float *px = nb_data(x);
    float *po = nb_data_mut(out);
    for (int64_t i = 0, n = nb_numel(x); i < n; i++) po[i] = px[i] < s ? 1.0f : 0.0f;
    return out;
}

/* ---- where ----------------------------------------------------------------------------
 * cond, a, b (broadcastable together) -> out (broadcast shape),
 * out = cond != 0 ? a : b.
 *   da = sum_to(g * m, shape of a),  db = sum_to(g * (1 - m), shape of b)
 * with m = (cond != 0), a constant; cond itself gets no gradient. */

/* The shape the three operands broadcast to, or false and a message. */
static bool where_shape(nb_tensor *cond, nb_tensor *a, nb_tensor *b, int *ndim, int64_t *shape) {
    const nb_tensor *t[3] = {cond, a, b};
    int n = 0;
    for (int k = 0; k < 3; k++)
        if (nb_ndim(t[k]) > n) n = nb_ndim(t[k]);
    for (int d = 0; d < n; d++) {
        int64_t size = 1;
        for (int k = 0; k < 3; k++) {
            int dk = d - (n - nb_ndim(t[k]));
            int64_t s = dk >= 0 ? nb_shape(t[k])[dk] : 1;
            if (s == 1) continue;
            if (size != 1 && size != s) {
                nb_set_error("nb_where: shapes %s (cond), %s (a) and %s (b) cannot be broadcast: "
                             "dimension %d is %lld in one and %lld in another",
                             SHAPE(cond), SHAPE(a), SHAPE(b), d, (long long)size, (long long)s);
                return false;
            }
            size = s;
        }
        shape[d] = size;
    }
    int64_t numel;
    if (!nb__shape_numel(n, shape, &numel)) {
        char out[NB_SHAPE_BUF];
        nb_set_error("nb_where: shapes %s (cond), %s (a) and %s (b) broadcast to %s, whose "
                     "nonzero dimensions multiply to more than %lld",
                     SHAPE(cond), SHAPE(a), SHAPE(b), nb_shape_str(n, shape, out, sizeof out),
                     (long long)INT64_MAX);
        return false;
    }
    *ndim = n;
    return true;
}

static void where_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *cond = nb_saved(out, 0);
    nb_tensor *m = nb_ne(cond, nb_scalar(0.0f)); /* NaN counts as true, as in the forward */
    if (nb_needs_input_grad(out, 0)) {
        nb_tensor *a = nb_input(out, 0);
        gx[0] = nb_sum_to(nb_mul(g, m), nb_ndim(a), nb_shape(a));
    }
    if (nb_needs_input_grad(out, 1)) {
        nb_tensor *b = nb_input(out, 1);
        gx[1] = nb_sum_to(nb_mul(g, nb_rsub_scalar(m, 1.0f)), nb_ndim(b), nb_shape(b));
    }
}
/* dy = where(cond, da, db), each tangent standing in its operand's place. */
static nb_tensor *where_jvp(nb_tensor *out, nb_tensor *const *t) {
    nb_tensor *zero = nb_scalar(0.0f);
    nb_tensor *r = nb_where(nb_saved(out, 0), t[0] ? t[0] : zero, t[1] ? t[1] : zero);
    return !r || nb_same_shape(r, out) ? r : nb_expand(r, nb_ndim(out), nb_shape(out));
}
static const nb_op where_op = {"where", where_backward, where_jvp};

nb_tensor *nb_where(nb_tensor *cond, nb_tensor *a, nb_tensor *b) {
    if (!cond || !a || !b) return NULL;
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    if (!where_shape(cond, a, b, &ndim, shape)) return NULL;
    nb_tensor *out = nb__empty_for("nb_where", ndim, shape);
    if (!out) return NULL;
    /* Every operand broadcasts to out, so these plans cannot fail. Two
     * passes of two operands each keep the inner loops branch-free: copy a,
     * then replace by b where cond is 0. */
    nb_bcast pa, pc, pb;
    if (!nb_bcast_plan("nb_where", out, a, &pa) || !nb_bcast_plan("nb_where", out, cond, &pc) ||
        !nb_bcast_plan("nb_where", out, b, &pb))
        return NULL;
    nb_bcast p = pc; /* walks (cond, b) over the output shape */
    memcpy(p.stride_a, pc.stride_b, sizeof p.stride_a);
    memcpy(p.stride_b, pb.stride_b, sizeof p.stride_b);
    const float *xa = nb_data(a), *xb = nb_data(b), *xc = nb_data(cond);
    float *po = nb_data_mut(out);
    NB_BCAST_FOR(&pa, i, io, ia, po[i] = xa[ia]);
    NB_BCAST_FOR(&p, i, ic, ib, po[i] = xc[ic] != 0 ? po[i] : xb[ib]);
    nb_tensor *in[2] = {a, b};
    out = nb_record(out, &where_op, 2, in);
    nb_save(out, cond);
    return out;
}
