/* reduce.c — reductions over any set of axes (sum, mean, max, min, var,
 * logsumexp), the index reductions argmax and argmin, and softmax and
 * log_softmax, which normalise along one axis.
 *
 * Shapes: x (S) -> out (S without the reduced axes, or with them kept as 1
 * under keepdim); naxes == 0 (NB_ALL) reduces every axis, giving a 0-d
 * result. softmax and log_softmax keep S. A 0-d x accepts axis 0 (or -1),
 * as PyTorch does, and reduces its one element.
 *
 * Gradients. g is the output gradient; expand(t) means t reshaped to the
 * keepdim shape and broadcast back to S (nb_expand); n is the number of
 * elements reduced into each output:
 *
 *   sum          expand(g)
 *   mean         expand(g / n)
 *   max, min     expand(g) * [x == expand(y)] / count: split evenly among
 *                tied elements (NaN is selected, so it propagates, and the
 *                NaN elements share the gradient)
 *   var          composed of ops: sum((x - mean(x))^2) / (n - correction)
 *   logsumexp    composed of ops: log(sum(exp(x - m))) + m, m = detached max
 *   softmax      y * (g - sum(g * y, axis))      y = softmax(x)
 *   log_softmax  g - exp(y) * sum(g, axis)       y = log_softmax(x)
 *   argmax/min   none: the result never requires grad
 *
 * max and min save x and their result; the tie mask is a constant, so the
 * gradient of max is linear in g and itself differentiable.
 *
 * Kernels. An axis set is first brought to a canonical form: size-1 axes are
 * dropped and neighbouring axes that are both reduced, or both kept, are
 * merged, so [2,3,4] over axes (1,2) is [2,12] over axis 1. If at most one
 * reduced group remains, the reduction is an (outer, R, inner) loop: inner
 * == 1 covers contiguous trailing axes (one row per output), inner > 1 a
 * single middle axis, walked CHUNK inner positions at a time so that the
 * loads run along memory. Anything else (reduced groups separated by a kept
 * one) takes the general path: an odometer over the kept axes, and for each
 * output one over the reduced axes, the last reduced group as a plain loop.
 * Outputs are independent, so large reductions are split over the thread
 * pool by output.
 *
 * Sums accumulate in double (then round once to float), in a fixed order: a
 * contiguous run in eight interleaved partial sums combined by a fixed tree,
 * a strided one sequentially in increasing index; the general path adds its
 * runs in order. Each output is computed by one thread in the same order
 * however the work is split, so results are bitwise identical from run to
 * run and whatever the thread count. Max and min compare in float; softmax
 * sums its exponentials in double.
 */
#include "ops_internal.h"
#include "vmath_internal.h"
#include "parallel.h"

#define CHUNK 256          /* inner positions walked together by the middle-axis kernels */
#define GRAIN_WORK 32768   /* elements a parallel piece should at least read */

/* ---- the reduction plan ------------------------------------------------------ */

typedef struct rplan {
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    unsigned mask;                     /* bit d set: axis d is reduced */
    int out_ndim;
    int64_t out_shape[NB_MAX_DIMS];    /* the result, keepdim applied */
    int64_t keep_shape[NB_MAX_DIMS];   /* ndim entries, reduced axes as 1 */
    int64_t count;                     /* elements reduced into each output */
    int64_t nout, numel;
    int ng;                            /* canonical form: ng groups of axes */
    int64_t gsize[NB_MAX_DIMS];
    bool gred[NB_MAX_DIMS];
} rplan;

static char *axes_str(int naxes, const int *axes, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < naxes && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%d", i ? ", " : "", axes[i]);
    if (used < size) snprintf(buf + used, size - used, ")");
    return buf;
}

/* The set of reduced axes as a bit mask; false and a message naming who, the
 * axis and the shape when an axis is out of range or repeated. */
static bool axes_mask(const char *who, const nb_tensor *x, int naxes, const int *axes,
                      unsigned *mask) {
    int nd = nb_ndim(x);
    if (naxes < 0 || (naxes > 0 && !axes)) {
        nb_set_error("%s: invalid axis list (%d axes%s) for a tensor of shape %s", who, naxes,
                     naxes > 0 ? " but no array" : "", SHAPE(x));
        return false;
    }
    if (naxes == 0) {
        *mask = nd ? (1u << nd) - 1 : 0;
        return true;
    }
    int span = nd ? nd : 1; /* a 0-d tensor has the one axis 0 */
    unsigned m = 0;
    for (int i = 0; i < naxes; i++) {
        int a = axes[i] < 0 ? axes[i] + span : axes[i];
        if (a < 0 || a >= span) {
            nb_set_error("%s: axis %d is out of range for a tensor of shape %s (valid axes: %d "
                         "to %d)", who, axes[i], SHAPE(x), -span, span - 1);
            return false;
        }
        if (m & (1u << a)) {
            char b[64];
            nb_set_error("%s: axis %d is repeated in axes %s for a tensor of shape %s", who,
                         axes[i], axes_str(naxes, axes, b, sizeof b), SHAPE(x));
            return false;
        }
        m |= 1u << a;
    }
    *mask = nd ? m : 0;
    return true;
}

static void plan_from_mask(const nb_tensor *x, unsigned mask, bool keepdim, rplan *p) {
    p->ndim = nb_ndim(x);
    p->mask = mask;
    p->out_ndim = 0;
    p->count = p->nout = 1;
    p->numel = nb_numel(x);
    p->ng = 0;
    for (int d = 0; d < p->ndim; d++) {
        int64_t s = nb_shape(x)[d];
        bool r = (mask >> d) & 1u;
        p->shape[d] = s;
        p->keep_shape[d] = r ? 1 : s;
        if (r) p->count *= s;
        else p->nout *= s;
        if (!r || keepdim) p->out_shape[p->out_ndim++] = r ? 1 : s;
        if (s == 1) continue;
        if (p->ng > 0 && p->gred[p->ng - 1] == r) {
            p->gsize[p->ng - 1] *= s;
        } else {
            p->gsize[p->ng] = s;
            p->gred[p->ng++] = r;
        }
    }
}

static bool plan_make(const char *who, const nb_tensor *x, int naxes, const int *axes,
                      bool keepdim, rplan *p) {
    unsigned mask;
    if (!axes_mask(who, x, naxes, axes, &mask)) return false;
    plan_from_mask(x, mask, keepdim, p);
    return true;
}

/* ---- kernels ------------------------------------------------------------------ */

typedef enum { RED_SUM, RED_MAX, RED_MIN } red_kind;

typedef struct rkernel {
    red_kind kind;
    const float *x;
    float *vals;     /* the nout results (max/min: optional) */
    float *pos;      /* max/min, optional: its position within the reduction */
    double divisor;  /* sum: each result divided by it (n for mean, else 1) */
    /* (outer, R, inner) form */
    int64_t outer, R, inner, nchunk;
    /* general form: kept and reduced groups, sizes and strides in x */
    int nk, nr;
    int64_t ksize[NB_MAX_DIMS], kstride[NB_MAX_DIMS], rsize[NB_MAX_DIMS], rstride[NB_MAX_DIMS];
} rkernel;

/* Sum of n contiguous floats in double, in the order of
 * NB_SUM_IN_ROW_ORDER. */
static double sum_row(const float *x, int64_t n) {
    double s;
#define ROW_TERM(i) (double)x[i]
    NB_SUM_IN_ROW_ORDER(&s, n, ROW_TERM);
#undef ROW_TERM
    return s;
}

/* Does v replace best as the max (larger) or min? Only a strict win does,
 * so the first of equal elements stays selected; a NaN wins over any number,
 * so it propagates as in PyTorch. */
static inline bool beats(float v, float best, bool larger) {
    if (v != v) return best == best;
    return larger ? v > best : v < best;
}

static void write_selection(const rkernel *k, int64_t o, float v, int64_t pos) {
    if (k->vals) k->vals[o] = v;
    if (k->pos) k->pos[o] = (float)pos;
}

/* (outer, R, inner): x is [outer][R][inner], out is [outer][inner]. Work item
 * t is one outer index and one chunk of CHUNK inner positions. */
static void fast_items(void *ctx, int64_t begin, int64_t end) {
    const rkernel *k = ctx;
    const int64_t R = k->R, inner = k->inner;
    const bool larger = k->kind == RED_MAX;
    for (int64_t t = begin; t < end; t++) {
        int64_t o = t / k->nchunk, i0 = (t % k->nchunk) * CHUNK;
        int64_t ni = inner - i0 < CHUNK ? inner - i0 : CHUNK;
        const float *x = k->x + o * R * inner + i0; /* element (r, i) at x[r * inner + i] */
        int64_t out0 = o * inner + i0;
        if (k->kind == RED_SUM && inner == 1) {
            k->vals[o] = (float)(sum_row(x, R) / k->divisor);
        } else if (k->kind == RED_SUM) {
            double acc[CHUNK];
            for (int64_t i = 0; i < ni; i++) acc[i] = 0;
            for (int64_t r = 0; r < R; r++)
                for (int64_t i = 0; i < ni; i++) acc[i] += (double)x[r * inner + i];
            for (int64_t i = 0; i < ni; i++) k->vals[out0 + i] = (float)(acc[i] / k->divisor);
        } else if (inner == 1) {
            float best = x[0];
            int64_t at = 0;
            for (int64_t r = 1; r < R; r++)
                if (beats(x[r], best, larger)) {
                    best = x[r];
                    at = r;
                }
            write_selection(k, o, best, at);
        } else {
            float best[CHUNK];
            int64_t at[CHUNK];
            for (int64_t i = 0; i < ni; i++) {
                best[i] = x[i];
                at[i] = 0;
            }
            for (int64_t r = 1; r < R; r++)
                for (int64_t i = 0; i < ni; i++)
                    if (beats(x[r * inner + i], best[i], larger)) {
                        best[i] = x[r * inner + i];
                        at[i] = r;
                    }
            for (int64_t i = 0; i < ni; i++)
                write_selection(k, out0 + i, best[i], at[i]);
        }
    }
}

/* General form: output o is one point of the kept axes; its elements are
 * visited in row-major order of the reduced axes, the last reduced group as
 * a plain (strided) loop. */
static void general_items(void *ctx, int64_t begin, int64_t end) {
    const rkernel *k = ctx;
    const bool larger = k->kind == RED_MAX;
    const int nr = k->nr;
    const int64_t last = k->rsize[nr - 1], lstride = k->rstride[nr - 1];
    int64_t kidx[NB_MAX_DIMS] = {0}, base = 0, rem = begin;
    for (int d = k->nk - 1; d >= 0; d--) {
        kidx[d] = rem % k->ksize[d];
        rem /= k->ksize[d];
        base += kidx[d] * k->kstride[d];
    }
    for (int64_t o = begin; o < end; o++) {
        int64_t ridx[NB_MAX_DIMS] = {0}, roff = 0, j = 0, at = 0;
        double acc = 0;
        float best = k->x[base];
        for (;;) {
            const float *row = k->x + base + roff;
            if (k->kind == RED_SUM) {
                if (lstride == 1) {
                    acc += sum_row(row, last);
                } else {
                    for (int64_t q = 0; q < last; q++) acc += (double)row[q * lstride];
                }
            } else {
                for (int64_t q = 0; q < last; q++)
                    if (beats(row[q * lstride], best, larger)) {
                        best = row[q * lstride];
                        at = j + q;
                    }
            }
            j += last;
            int d = nr - 2;
            for (; d >= 0; d--) {
                ridx[d]++;
                roff += k->rstride[d];
                if (ridx[d] < k->rsize[d]) break;
                roff -= ridx[d] * k->rstride[d];
                ridx[d] = 0;
            }
            if (d < 0) break;
        }
        if (k->kind == RED_SUM) k->vals[o] = (float)(acc / k->divisor);
        else write_selection(k, o, best, at);
        for (int d = k->nk - 1; d >= 0; d--) {
            kidx[d]++;
            base += k->kstride[d];
            if (kidx[d] < k->ksize[d]) break;
            base -= kidx[d] * k->kstride[d];
            kidx[d] = 0;
        }
    }
}

static int64_t grain_for(int64_t work_per_item) {
    return work_per_item >= GRAIN_WORK ? 1 : GRAIN_WORK / (work_per_item > 0 ? work_per_item : 1);
}

/* Runs k over p. Needs count > 0 and nout > 0 (so numel > 0). */
static void run_reduce(const rplan *p, rkernel *k) {
    int nred = 0, first = -1;
    for (int g = 0; g < p->ng; g++)
        if (p->gred[g]) {
            if (first < 0) first = g;
            nred++;
        }
    if (nred <= 1) {
        k->outer = k->R = k->inner = 1;
        for (int g = 0; g < p->ng; g++) {
            if (first < 0 || g < first) k->outer *= p->gsize[g];
            else if (g == first) k->R = p->gsize[g];
            else k->inner *= p->gsize[g];
        }
        k->nchunk = (k->inner + CHUNK - 1) / CHUNK;
        int64_t per_item = k->R * (k->inner < CHUNK ? k->inner : CHUNK);
        nb_parallel_for(k->outer * k->nchunk, grain_for(per_item), fast_items, k);
        return;
    }
    int64_t stride = 1;
    int64_t gstride[NB_MAX_DIMS];
    for (int g = p->ng - 1; g >= 0; g--) {
        gstride[g] = stride;
        stride *= p->gsize[g];
    }
    k->nk = k->nr = 0;
    for (int g = 0; g < p->ng; g++) {
        if (p->gred[g]) {
            k->rsize[k->nr] = p->gsize[g];
            k->rstride[k->nr++] = gstride[g];
        } else {
            k->ksize[k->nk] = p->gsize[g];
            k->kstride[k->nk++] = gstride[g];
        }
    }
    nb_parallel_for(p->nout, grain_for(p->count), general_items, k);
}

/* ---- gradient plumbing ------------------------------------------------------------ */

static int64_t reduced_count(const nb_tensor *x, unsigned mask) {
    int64_t n = 1;
    for (int d = 0; d < nb_ndim(x); d++)
        if ((mask >> d) & 1u) n *= nb_shape(x)[d];
    return n;
}

/* g (the reduced shape, keepdim or not) reshaped to the keepdim shape and
 * broadcast back to x's shape. */
static nb_tensor *expand_back(const nb_tensor *x, unsigned mask, nb_tensor *g) {
    if (!g) return NULL;
    int nd = nb_ndim(x);
    int64_t keep[NB_MAX_DIMS];
    for (int d = 0; d < nd; d++) keep[d] = (mask >> d) & 1u ? 1 : nb_shape(x)[d];
    /* Expanding aligns g's axes on the right, so g needs no reshape when it
     * already is keep without some of its leading 1s (a full reduction's
     * scalar, say). */
    int lead = nd - nb_ndim(g);
    bool aligned = lead >= 0 && memcmp(nb_shape(g), keep + lead, sizeof(int64_t) * (size_t)nb_ndim(g)) == 0;
    for (int d = 0; aligned && d < lead; d++) aligned = keep[d] == 1;
    if (!aligned) g = nb_reshape(g, nd, keep);
    return nb_expand(g, nd, nb_shape(x));
}

/* ---- sum and mean ------------------------------------------------------------------
 * Attribute 0 is the mask of reduced axes. */

static void sum_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    gx[0] = expand_back(nb_input(node, 0), (unsigned)nb_attr(node, 0), g);
}
static void mean_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(node, 0);
    unsigned mask = (unsigned)nb_attr(node, 0);
    gx[0] = expand_back(x, mask, nb_div_scalar(g, (float)reduced_count(x, mask)));
}
/* Forward mode: sum and mean are linear, so a tangent is reduced as a value
 * is, keeping the axes and then taking the output's shape (keepdim or not). */
static nb_tensor *reduce_tangent(nb_tensor *node, nb_tensor *t, bool mean) {
    unsigned mask = (unsigned)nb_attr(node, 0);
    int axes[NB_MAX_DIMS], naxes = 0;
    for (int d = 0; d < nb_ndim(t); d++)
        if ((mask >> d) & 1u) axes[naxes++] = d;
    if (naxes == 0) return t; /* a 0-dimensional input: nothing reduced */
    nb_tensor *r = mean ? nb_mean(t, naxes, axes, true) : nb_sum(t, naxes, axes, true);
    return nb_reshape(r, nb_ndim(node), nb_shape(node));
}
static nb_tensor *sum_jvp(nb_tensor *node, nb_tensor *const *t) {
    return t[0] ? reduce_tangent(node, t[0], false) : NULL;
}
static nb_tensor *mean_jvp(nb_tensor *node, nb_tensor *const *t) {
    return t[0] ? reduce_tangent(node, t[0], true) : NULL;
}
static const nb_op sum_op = {"sum", sum_backward, sum_jvp};
static const nb_op mean_op = {"mean", mean_backward, mean_jvp};

static nb_tensor *sum_like(const char *who, const nb_op *op, bool mean, nb_tensor *x, int naxes,
                           const int *axes, bool keepdim) {
    if (!x) return NULL;
    rplan p;
    if (!plan_make(who, x, naxes, axes, keepdim, &p)) return NULL;
    nb_tensor *out = nb__empty_for(who, p.out_ndim, p.out_shape);
    if (!out) return NULL;
    float *po = nb_data_mut(out);
    if (p.count == 0) { /* an empty sum is 0, an empty mean 0/0 */
        for (int64_t o = 0; o < p.nout; o++) po[o] = mean ? NAN : 0.0f;
    } else if (p.nout > 0) {
        rkernel k = {.kind = RED_SUM, .x = nb_data(x), .vals = po,
                     .divisor = mean ? (double)p.count : 1.0};
        run_reduce(&p, &k);
    }
    out = nb_record(out, op, 1, &x);
    nb_set_attr(out, 0, p.mask);
    return out;
}

nb_tensor *nb_sum(nb_tensor *x, int naxes, const int *axes, bool keepdim) {
    return sum_like("nb_sum", &sum_op, false, x, naxes, axes, keepdim);
}

nb_tensor *nb_mean(nb_tensor *x, int naxes, const int *axes, bool keepdim) {
    return sum_like("nb_mean", &mean_op, true, x, naxes, axes, keepdim);
}

/* ---- max and min -----------------------------------------------------------------------
 * nb_max and nb_min give values only, over any set of axes: PyTorch's amax
 * and amin (and max() of a whole tensor), whose gradient is split evenly
 * among the elements equal to the result, not max(dim)'s, which goes to
 * the one index it returns. So:
 *   gx = expand(g) * w,   w = [x == expand(y)] / (number of such x per output)
 * with NaN counted as equal to NaN (a NaN result came from NaN elements,
 * which then share the gradient, as in PyTorch's max()). w is a constant
 * made by a loop, so the backward is linear in g and differentiates again.
 * Saved: x and y; attribute 0 is the mask of reduced axes. */

static nb_tensor *tie_weights(nb_tensor *x, nb_tensor *y, unsigned mask) {
    nb_tensor *ye = expand_back(x, mask, nb_detach(y)), *tie = ye ? nb_empty_like(x) : NULL;
    if (!tie) return NULL;
    const float *px = nb_data(x), *py = nb_data(ye);
    float *pt = nb_data_mut(tie);
    for (int64_t i = 0, n = nb_numel(x); i < n; i++)
        pt[i] = px[i] == py[i] || (px[i] != px[i] && py[i] != py[i]) ? 1.0f : 0.0f;
    int axes[NB_MAX_DIMS], naxes = 0;
    for (int d = 0; d < nb_ndim(x); d++)
        if ((mask >> d) & 1u) axes[naxes++] = d;
    if (naxes == 0) return tie; /* nothing reduced: each element is its own result */
    return nb_div(tie, nb_sum(tie, naxes, axes, true));
}

static void select_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(node, 0), *y = nb_saved(node, 1);
    if (!x || !y) return;
    unsigned mask = (unsigned)nb_attr(node, 0);
    gx[0] = nb_mul(expand_back(x, mask, g), tie_weights(x, y, mask));
}
/* dy = sum(w * dx) over the reduced axes, with backward's weights w. */
static nb_tensor *select_jvp(nb_tensor *node, nb_tensor *const *t) {
    nb_tensor *x = nb_saved(node, 0), *y = nb_saved(node, 1);
    if (!t[0] || !x || !y) return NULL;
    return reduce_tangent(node, nb_mul(t[0], tie_weights(x, y, (unsigned)nb_attr(node, 0))), false);
}
static const nb_op max_op = {"max", select_backward, select_jvp};
static const nb_op min_op = {"min", select_backward, select_jvp};

static bool check_nonempty(const char *who, const nb_tensor *x, const rplan *p) {
    if (p->count > 0) return true;
    nb_set_error("%s: cannot reduce over zero elements: the reduced axes of a tensor of shape %s "
                 "are empty", who, SHAPE(x));
    return false;
}

static nb_tensor *select_reduce(const char *who, const nb_op *op, bool larger, nb_tensor *x,
                                int naxes, const int *axes, bool keepdim) {
    if (!x) return NULL;
    rplan p;
    if (!plan_make(who, x, naxes, axes, keepdim, &p) || !check_nonempty(who, x, &p)) return NULL;
    nb_tensor *out = nb__empty_for(who, p.out_ndim, p.out_shape);
    if (!out) return NULL;
    if (p.nout > 0) {
        rkernel k = {.kind = larger ? RED_MAX : RED_MIN, .x = nb_data(x), .vals = nb_data_mut(out)};
        run_reduce(&p, &k);
    }
    out = nb_record(out, op, 1, &x);
    nb_save(out, x);
    nb_save(out, out);
    nb_set_attr(out, 0, p.mask);
    return out;
}

nb_tensor *nb_max(nb_tensor *x, int naxes, const int *axes, bool keepdim) {
    return select_reduce("nb_max", &max_op, true, x, naxes, axes, keepdim);
}

nb_tensor *nb_min(nb_tensor *x, int naxes, const int *axes, bool keepdim) {
    return select_reduce("nb_min", &min_op, false, x, naxes, axes, keepdim);
}

/* ---- argmax and argmin: positions along one axis, as floats, no gradient ------------- */

static nb_tensor *arg_reduce(const char *who, bool larger, nb_tensor *x, int axis, bool keepdim) {
    if (!x) return NULL;
    rplan p;
    if (!plan_make(who, x, 1, &axis, keepdim, &p) || !check_nonempty(who, x, &p)) return NULL;
    nb_tensor *out = nb__empty_for(who, p.out_ndim, p.out_shape);
    if (!out) return NULL;
    if (p.nout > 0) {
        rkernel k = {.kind = larger ? RED_MAX : RED_MIN, .x = nb_data(x), .pos = nb_data_mut(out)};
        run_reduce(&p, &k);
    }
    return out;
}

nb_tensor *nb_argmax(nb_tensor *x, int axis, bool keepdim) {
    return arg_reduce("nb_argmax", true, x, axis, keepdim);
}

nb_tensor *nb_argmin(nb_tensor *x, int axis, bool keepdim) {
    return arg_reduce("nb_argmin", false, x, axis, keepdim);
}

/* ---- var and logsumexp: compositions of ops, differentiable to any order ------------- */

/* sum((x - mean(x))^2) / (n - correction), which is the mean of the squared
 * deviations times n / (n - correction). No degrees of freedom left
 * (n - correction <= 0) gives NaN, whatever the data. */
nb_tensor *nb_var(nb_tensor *x, int naxes, const int *axes, int correction, bool keepdim) {
    if (!x) return NULL;
    rplan p;
    if (!plan_make("nb_var", x, naxes, axes, keepdim, &p)) return NULL;
    double dof = (double)p.count - (double)correction;
    nb_scope_begin();
    nb_tensor *dev = nb_sub(x, nb_mean(x, naxes, axes, true));
    nb_tensor *ss = nb_sum(nb_square(dev), naxes, axes, keepdim);
    nb_tensor *out = dof > 0 ? nb_div_scalar(ss, (float)dof) : nb_mul_scalar(ss, NAN);
    out = nb_escape(out);
    nb_scope_end();
    return out;
}

/* log(sum(exp(x - m))) + m with m the max over the axes (keepdim), computed
 * by the max kernel without a graph: nb_detach(nb_max(x)) without the saved
 * indices. The exact m does not matter, only that exp(x - m) <= 1: an
 * infinite or NaN m is replaced by 0, so a slice of -inf gives -inf and a
 * slice holding +inf or NaN gives +inf or NaN rather than inf - inf. */
nb_tensor *nb_logsumexp(nb_tensor *x, int naxes, const int *axes, bool keepdim) {
    if (!x) return NULL;
    rplan p;
    if (!plan_make("nb_logsumexp", x, naxes, axes, keepdim, &p)) return NULL;
    nb_scope_begin();
    nb_tensor *m = nb__empty_for("nb_logsumexp", p.ndim, p.keep_shape), *out = NULL;
    if (m) {
        float *pm = nb_data_mut(m);
        memset(pm, 0, sizeof(float) * (size_t)p.nout);
        if (p.count > 0 && p.nout > 0) {
            rkernel k = {.kind = RED_MAX, .x = nb_data(x), .vals = pm};
            run_reduce(&p, &k);
        }
        for (int64_t o = 0; o < p.nout; o++)
            if (!isfinite(pm[o])) pm[o] = 0.0f;
        nb_tensor *s = nb_sum(nb_exp(nb_sub(x, m)), naxes, axes, keepdim);
        nb_tensor *m_out = keepdim ? m : nb_as_shape(m, p.out_ndim, p.out_shape);
        out = nb_escape(nb_add(nb_log(s), m_out));
    }
    nb_scope_end();
    return out;
}

/* ---- softmax and log_softmax -------------------------------------------------------------
 * x (S) -> y (S), normalised along one axis: x seen as [outer][R][inner].
 * Attribute 0 is the axis (normalised); y itself is saved. */

typedef struct smax {
    const float *x;
    float *y;
    int64_t R, inner, nchunk;
    bool log;
} smax;

/* One contiguous row of R elements (inner == 1). */
static void softmax_row(const float *x, float *y, int64_t R, bool log_out) {
    float m = x[0];
    for (int64_t r = 1; r < R; r++) m = x[r] > m ? x[r] : m;
    double acc = 0;
    if (log_out) {
        /* the exponentials a block at a time into e, a loop that vectorises
         * (vmath_internal.h), then summed in order */
        float e[256];
        for (int64_t r0 = 0; r0 < R; r0 += 256) {
            int64_t n = R - r0 < 256 ? R - r0 : 256;
            for (int64_t r = 0; r < n; r++) {
                y[r0 + r] = x[r0 + r] - m;
                e[r] = nb__expf(y[r0 + r]);
            }
            for (int64_t r = 0; r < n; r++) acc += (double)e[r];
        }
        double lz = log(acc);
        for (int64_t r = 0; r < R; r++) y[r] = (float)((double)y[r] - lz);
    } else {
        for (int64_t r = 0; r < R; r++) y[r] = nb__expf(x[r] - m);
        for (int64_t r = 0; r < R; r++) acc += (double)y[r];
        double inv = 1.0 / acc;
        for (int64_t r = 0; r < R; r++) y[r] = (float)((double)y[r] * inv);
    }
}

static void softmax_items(void *ctx, int64_t begin, int64_t end) {
    const smax *s = ctx;
    const int64_t R = s->R, inner = s->inner;
    if (inner == 1) {
        for (int64_t o = begin; o < end; o++) softmax_row(s->x + o * R, s->y + o * R, R, s->log);
        return;
    }
    for (int64_t t = begin; t < end; t++) {
        int64_t o = t / s->nchunk, i0 = (t % s->nchunk) * CHUNK;
        int64_t ni = inner - i0 < CHUNK ? inner - i0 : CHUNK;
        const float *x = s->x + o * R * inner + i0; /* element (r, i) at x[r * inner + i] */
        float *y = s->y + o * R * inner + i0;
        float m[CHUNK];
        double acc[CHUNK];
        for (int64_t i = 0; i < ni; i++) {
            m[i] = x[i];
            acc[i] = 0;
        }
        for (int64_t r = 1; r < R; r++)
            for (int64_t i = 0; i < ni; i++)
                if (x[r * inner + i] > m[i]) m[i] = x[r * inner + i];
        for (int64_t r = 0; r < R; r++)
            for (int64_t i = 0; i < ni; i++) {
                float d = x[r * inner + i] - m[i], e = expf(d);
                y[r * inner + i] = s->log ? d : e;
                acc[i] += (double)e;
            }
        /* softmax: e / sum; log_softmax: (x - m) - log(sum) */
        for (int64_t i = 0; i < ni; i++) acc[i] = s->log ? log(acc[i]) : 1.0 / acc[i];
        for (int64_t r = 0; r < R; r++)
            for (int64_t i = 0; i < ni; i++) {
                double v = (double)y[r * inner + i];
                y[r * inner + i] = (float)(s->log ? v - acc[i] : v * acc[i]);
            }
    }
}

/* softmax: gx = y * (g - sum(g * y, axis)) */
static void softmax_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *y = nb_saved(node, 0);
    int axis = (int)nb_attr(node, 0);
    gx[0] = nb_mul(y, nb_sub(g, nb_sum(nb_mul(g, y), 1, &axis, true)));
}
/* log_softmax: gx = g - exp(y) * sum(g, axis) */
static void log_softmax_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *y = nb_saved(node, 0);
    int axis = (int)nb_attr(node, 0);
    gx[0] = nb_sub(g, nb_mul(nb_exp(y), nb_sum(g, 1, &axis, true)));
}
/* Forward mode. softmax's Jacobian diag(y) - y yᵀ is symmetric, so its rule
 * is its backward applied to the tangent; log_softmax's, I - 1 exp(y)ᵀ, is
 * not: dy = dx - sum(exp(y) * dx, axis). */
static nb_tensor *log_softmax_jvp(nb_tensor *node, nb_tensor *const *t) {
    nb_tensor *y = nb_saved(node, 0);
    int axis = (int)nb_attr(node, 0);
    if (!t[0]) return NULL;
    return nb_sub(t[0], nb_sum(nb_mul(nb_exp(y), t[0]), 1, &axis, true));
}
static const nb_op softmax_op = {"softmax", softmax_backward, nb_symmetric_jvp};
static const nb_op log_softmax_op = {"log_softmax", log_softmax_backward, log_softmax_jvp};

/* log_softmax over the last axis for the fused cross-entropy in loss.c,
 * which must give nb_log_softmax's bits: the same row kernel, split over
 * the thread pool by row as softmax_like splits it. */
void nb__log_softmax_rows(const float *x, float *y, int64_t rows, int64_t c) {
    if (rows <= 0 || c <= 0) return;
    smax s = {.x = x, .y = y, .R = c, .inner = 1, .nchunk = 1, .log = true};
    nb_parallel_for(rows, grain_for(3 * c), softmax_items, &s);
}

static nb_tensor *softmax_like(const char *who, const nb_op *op, bool log, nb_tensor *x,
                               int axis) {
    if (!x) return NULL;
    unsigned mask;
    if (!axes_mask(who, x, 1, &axis, &mask)) return NULL;
    int nd = nb_ndim(x), a = 0;
    while (nd > 0 && !((mask >> a) & 1u)) a++;
    smax s = {.x = nb_data(x), .R = 1, .inner = 1, .log = log};
    int64_t outer = 1;
    for (int d = 0; d < nd; d++) {
        if (d < a) outer *= nb_shape(x)[d];
        else if (d == a) s.R = nb_shape(x)[d];
        else s.inner *= nb_shape(x)[d];
    }
    nb_tensor *y = nb_empty_like(x);
    if (!y) return NULL;
    if (nb_numel(x) > 0) {
        s.y = nb_data_mut(y);
        s.nchunk = (s.inner + CHUNK - 1) / CHUNK;
        int64_t per_item = s.R * (s.inner < CHUNK ? s.inner : CHUNK);
        nb_parallel_for(outer * s.nchunk, grain_for(3 * per_item), softmax_items, &s);
    }
    y = nb_record(y, op, 1, &x);
    nb_save(y, y);
    nb_set_attr(y, 0, a);
    return y;
}

nb_tensor *nb_softmax(nb_tensor *x, int axis) {
    return softmax_like("nb_softmax", &softmax_op, false, x, axis);
}

nb_tensor *nb_log_softmax(nb_tensor *x, int axis) {
    return softmax_like("nb_log_softmax", &log_softmax_op, true, x, axis);
}
